"""``python -m celeriac`` is the ``celeriac`` command."""

import sys

from celeriac.cli import main

sys.exit(main())
