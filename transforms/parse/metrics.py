"""Names of the parse stage's Beam metrics (the one home of each; the exporter,
``pipelines/metrics.py``, imports them). A leaf module: no Beam import.

``copydesk.parse``
    ``messages_parsed`` (messages that became a URL), ``messages_rejected`` (dead letters of
    the parse stage, both parsers), ``raw_pages_read`` (``--raw-pages-input``: archive entries
    that became a page).
"""

from __future__ import annotations

from copydesk.transforms.stage_metrics import Declared

PARSE_NS = "copydesk.parse"
MESSAGES_PARSED = "messages_parsed"
MESSAGES_REJECTED = "messages_rejected"
RAW_PAGES_READ = "raw_pages_read"

DECLARED = Declared(PARSE_NS, counters=(MESSAGES_PARSED, MESSAGES_REJECTED, RAW_PAGES_READ))
