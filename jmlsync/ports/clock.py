"""The one now()."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    """The one now(): an aware UTC datetime."""

    def __call__(self) -> datetime: ...
