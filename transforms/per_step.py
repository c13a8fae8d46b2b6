"""Objects one Beam step shares across its DoFn instances in this process.

A runner may run several bundles of one step at once, each on its own DoFn instance (Prism
does, and splits a running bundle of a stateful step into two that run side by side). What
must outlive one instance, or be seen by all of them, lives here, keyed by a uid the step
draws when it is built (``uuid.uuid4().hex`` in ``__init__``, kept through pickling).
Pipelines built one after another in one process (a streaming pipeline restarted after a
broker outage) draw new uids, so each has its own; the oldest steps' objects are dropped
past ``max_steps``.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class PerStep(Generic[T]):
    """uid of a step -> its object in this process, made by ``make`` on first use."""

    def __init__(self, make: Callable[[], T], max_steps: int = 8) -> None:
        self.make = make
        self.max_steps = max_steps
        self._lock = threading.Lock()
        self._by_uid: dict[str, T] = {}

    def get(self, uid: str) -> T:
        with self._lock:
            obj = self._by_uid.get(uid)
            if obj is None:
                while len(self._by_uid) >= self.max_steps:
                    self._by_uid.pop(next(iter(self._by_uid)))
                obj = self._by_uid[uid] = self.make()
            return obj
