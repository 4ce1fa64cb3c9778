"""The test settings plus an app whose tasks module fails to import."""

from shop_test_settings import *  # noqa: F403 - extended below
from shop_test_settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "brokenapp"]
