"""Imported first by the extraction pool's forkserver (transforms/extract/pool.py), before the
extraction code it preloads: Beam and trafilatura log at import time, so logging is set up
here as the job set it up (``COPYDESK_LOG_FORMAT``/``COPYDESK_LOG_LEVEL``, which
``copydesk run`` puts in the environment), or ``--log-format json`` would get plain-text lines
from that process. A spawned worker does the same through ``transforms/logs.py:spawned_child_logging``."""

import os

if os.environ.get("COPYDESK_LOG_FORMAT") in ("text", "json"):
    from copydesk.transforms.logs import setup_logging

    setup_logging(os.environ.get("COPYDESK_LOG_LEVEL") or "info", os.environ["COPYDESK_LOG_FORMAT"])
