"""``python -m celeriac.worker_runtime`` is the same as ``celeriac worker``."""

import sys

from celeriac.worker_runtime.cli import main

sys.exit(main(sys.argv[1:]))
