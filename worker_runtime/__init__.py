"""The worker runtime: pulls tasks from JetStream queues, runs them, acks, retries, dead-letters.

``celeriac worker`` and ``python -m celeriac.worker_runtime`` start it; :mod:`.cli`
parses the command line and :mod:`.worker` runs the consume loop.
"""

from celeriac.extras import require

require("worker", "celeriac.worker_runtime")
