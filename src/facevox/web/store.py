"""Results of the web app, kept in memory for a while under random ids, then forgotten.

Nothing here touches the filesystem: a result is a dict of bytes, looked up by an id that the server
made with `secrets.token_urlsafe`. Results expire after `ttl_s` seconds; the oldest go first when the
total size passes `max_bytes`. Expired ids are remembered (without their data) for an hour or `ttl_s`,
whichever is longer, so that a late download is told "expired" rather than "unknown".
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field


class ResultMissing(LookupError):
    """No result under this id (never made, or forgotten long ago)."""


class ResultExpired(LookupError):
    """The result existed but has expired or was evicted."""


@dataclass
class Result:
    """One reconstructed photo: a JSON summary and the bytes of every file, by name."""

    summary: dict
    files: dict[str, tuple[bytes, str]]  # name → (bytes, media type)
    id: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    created: float = 0.0

    @property
    def nbytes(self) -> int:
        return sum(len(data) for data, _ in self.files.values())


class ResultStore:
    def __init__(self, ttl_s: float = 1800.0, max_bytes: int = 1 << 30, clock=time.monotonic):
        self.ttl_s = float(ttl_s)
        self.max_bytes = int(max_bytes)
        self.clock = clock
        self._results: OrderedDict[str, Result] = OrderedDict()  # oldest first
        self._gone: OrderedDict[str, float] = OrderedDict()  # id → when it went
        self._bytes = 0
        self._lock = threading.Lock()
        self.remember_s = max(self.ttl_s, 3600.0)

    def __len__(self) -> int:
        return len(self._results)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def put(self, result: Result) -> Result:
        with self._lock:
            self._sweep_locked()
            result.created = self.clock()
            self._results[result.id] = result
            self._bytes += result.nbytes
            while self._bytes > self.max_bytes and len(self._results) > 1:
                self._forget_locked(next(iter(self._results)))
        return result

    def get(self, result_id: str) -> Result:
        with self._lock:
            self._sweep_locked()
            result = self._results.get(result_id)
            if result is not None:
                return result
            if result_id in self._gone:
                raise ResultExpired(result_id)
            raise ResultMissing(result_id)

    def sweep(self) -> None:
        with self._lock:
            self._sweep_locked()

    def clear(self) -> None:
        with self._lock:
            self._results.clear()
            self._gone.clear()
            self._bytes = 0

    def _sweep_locked(self) -> None:
        now = self.clock()
        while self._results:
            oldest = next(iter(self._results.values()))
            if now - oldest.created < self.ttl_s:
                break
            self._forget_locked(oldest.id)
        while self._gone and (now - next(iter(self._gone.values())) >= self.remember_s or len(self._gone) > 100_000):
            self._gone.popitem(last=False)

    def _forget_locked(self, result_id: str) -> None:
        result = self._results.pop(result_id)
        self._bytes -= result.nbytes
        self._gone[result_id] = self.clock()
