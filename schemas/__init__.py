"""Record schemas and codecs of copydesk.

The article record and the dead-letter record are each defined once: a versioned JSON
Schema file beside this module (the contract for consumers) and a typed dataclass here
(what the pipeline builds); :mod:`copydesk.schemas.codec` writes both with orjson.
"""

from copydesk.schemas.records import (
    SCHEMA_VERSION,
    ArticleRecord,
    DeadLetter,
    Envelope,
    FetchedPage,
    InputMessage,
    SourceRef,
    WireInfo,
)
from copydesk.schemas.reasons import Reason, Stage

__all__ = [
    "SCHEMA_VERSION",
    "ArticleRecord",
    "DeadLetter",
    "Envelope",
    "FetchedPage",
    "InputMessage",
    "Reason",
    "SourceRef",
    "Stage",
    "WireInfo",
]
