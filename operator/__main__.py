"""``python -m celeriac.operator`` is ``celeriac operator``."""

import sys

from celeriac.extras import MissingExtraError, require

try:
    require("operator", "celeriac.operator")
except MissingExtraError as exc:
    sys.exit(f"celeriac: {exc}")

# Imported only once the extra is known to be present.
from celeriac.operator.cli import main

sys.exit(main(sys.argv[1:]))
