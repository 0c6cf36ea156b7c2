"""Slowing down token guessing: past a number of refused tokens from one client address in a
window, further refusals from that address answer 429 with ``Retry-After``.

A request with a valid token is never throttled, so an IdP behind the same address as a guesser
keeps working. The number of addresses tracked is capped: the oldest is forgotten first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

#: How many client addresses are remembered at most (about 100 bytes each).
MAX_ADDRESSES = 10_000


class AuthThrottle:
    """Counts refused tokens per client address in fixed windows of ``window_seconds``."""

    def __init__(
        self,
        allowed: int,
        window_seconds: float,
        *,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._allowed = allowed
        self._window = window_seconds
        self._max = max_addresses
        self._clock = clock
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def refused(self, address: str) -> int | None:
        """Record one refused token from ``address``.

        Answers None while the address is within its allowance, else the seconds it should
        wait (for ``Retry-After``).
        """
        now = self._clock()
        started, count = self._seen.pop(address, (now, 0))
        if now - started >= self._window:
            started, count = now, 0
        count += 1
        self._seen[address] = (started, count)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        if count <= self._allowed:
            return None
        return max(1, math.ceil(started + self._window - now))

    def __len__(self) -> int:
        return len(self._seen)
