"""The example shop's Django project.

The Celeriac app is imported here, so ``celeriac worker -A shopsite`` finds it and
every process that loads the settings has it.
"""

from shopsite.celeriac import app

__all__ = ["app"]
