"""The example shop's settings, plus what the tests need: a second database and an app
whose tasks module nothing imports but discovery."""

import os

from shopsite.settings import *  # noqa: F403 - the shop's settings, extended below
from shopsite.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "giftcards"]
DATABASES = {
    **DATABASES,
    "audit": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["SHOP_AUDIT_DATABASE"],
    },
}
