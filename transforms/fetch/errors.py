"""The one exception type of the fetch stage: a failure that already knows its reason code.

Every helper of the fetch stage (address guard, body reader, charset decoder, robots
cache) raises :class:`FetchFailure` with a code from the closed list in
:mod:`copydesk.schemas.reasons`, so the fetcher turns failures into dead letters in one
place and can never invent a reason that consumers do not know about.
"""

from __future__ import annotations

from typing import Any

from copydesk.schemas.reasons import Reason


class FetchFailure(Exception):
    """A fetch failed for a known reason; ``detail`` goes onto the dead letter."""

    def __init__(self, reason: Reason, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.reason = Reason(reason)  # raises ValueError on a code outside the closed list
        self.detail: dict[str, Any] = {k: v for k, v in detail.items() if v is not None}
