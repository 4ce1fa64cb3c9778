"""Imports a module that does not exist: discovery must say which tasks module failed."""

import no_such_module_for_celeriac_tests  # noqa: F401
