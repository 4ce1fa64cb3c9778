"""Settings of the example shop: SQLite, one app (orders), and Celeriac's settings.

The database file lives in the temporary folder unless ``SHOP_DATABASE`` names
another; web server and worker must use the same one.
"""

import os
import tempfile
from pathlib import Path

SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("SHOP_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    # Applies CELERIAC (below) and finds the tasks.py of every app, once Django has loaded.
    "celeriac.contrib.django",
    "orders",
]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "shopsite.urls"
WSGI_APPLICATION = "shopsite.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DATABASE")
        or str(Path(tempfile.gettempdir()) / "django-shop.sqlite3"),
        # The web server and the worker write to one file: wait for each other's locks.
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# Celeriac: the keys are Celeriac() arguments (docs/django.md lists them).
CELERIAC = {
    "nats_url": os.environ.get("CELERIAC_NATS_URL", "nats://127.0.0.1:4222"),
    "default_queue": os.environ.get("SHOP_QUEUE", "shop-orders"),
    "result_ttl": 3600,
}
