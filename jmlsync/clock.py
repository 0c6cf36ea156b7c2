"""The one reading of the wall clock: everything that needs "now" is handed this function."""

from __future__ import annotations

from datetime import UTC, datetime


def now_utc() -> datetime:
    return datetime.now(UTC)
