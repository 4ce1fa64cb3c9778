"""The shop's Celeriac app: ``celeriac worker -A shopsite`` runs its tasks.

``setup`` makes tasks ``DjangoTask``s (``delay_on_commit``), applies
``settings.CELERIAC`` and imports the ``tasks`` module of every installed app: at once
in a worker, where it sets Django up first; in the web server once Django has loaded
its apps (the ``celeriac.contrib.django`` entry of INSTALLED_APPS does it then).
"""

import os

import celeriac.contrib.django
from celeriac import Celeriac

# A worker started without DJANGO_SETTINGS_MODULE uses the shop's settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shopsite.settings")

app = Celeriac("shop")
celeriac.contrib.django.setup(app)
