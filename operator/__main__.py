"""``python -m celeriac.operator`` is ``celeriac operator``."""

import sys

from celeriac.operator.cli import main

sys.exit(main(sys.argv[1:]))
