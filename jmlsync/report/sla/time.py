"""Times, durations and percentages of the SLA report: parsing a window's ends, the fixed
ISO form of instants, and the figures as people read them."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from jmlsync.domain.directory import format_timestamp

_DURATION = re.compile(r"(\d+)([smhdw])", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def percentile(ordered: Sequence[float], rank: float) -> float | None:
    """The ``rank``-th percentile of sorted values, interpolating linearly between neighbours.

    The same method as numpy's default and ``statistics.quantiles(method="inclusive")``; None
    for no values.
    """
    if not ordered:
        return None
    position = (len(ordered) - 1) * rank / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def parse_since(text: str, now: datetime, what: str = "window start") -> datetime:
    """The window start (or end: ``what``) ``text`` names: a duration back from ``now`` or an
    ISO 8601 instant.

    Durations are a whole number and a unit: ``3600s``, ``90m``, ``12h``, ``30d``, ``2w``. An ISO
    date means its midnight UTC; a naive ISO datetime is taken as UTC. Raises ValueError, with a
    message fit for a command line, for anything else.
    """
    cleaned = text.strip()
    match = _DURATION.fullmatch(cleaned)
    try:
        if match is not None:
            amount = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
            return utc(now) - timedelta(seconds=amount)
        return utc(datetime.fromisoformat(cleaned))
    except OverflowError:
        raise ValueError(f"{what} {text!r} is out of range") from None
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a {what}: give a duration such as 30d, 12h, 90m,"
            " 3600s or 2w, or an ISO 8601 date or datetime such as 2024-05-01 or"
            " 2024-05-01T09:30:00Z"
        ) from None


def iso_z(moment: datetime) -> str:
    """An instant as ISO 8601 UTC with a trailing ``Z``, in the store's fixed-width form."""
    return format_timestamp(utc(moment))


def human_time(moment: datetime | None) -> str:
    """An instant for people, to the second in UTC; ``-`` for none."""
    return "-" if moment is None else utc(moment).strftime("%Y-%m-%d %H:%M:%SZ")


def format_seconds(seconds: float | None) -> str:
    """Seconds for people, up to milliseconds without trailing zeros; ``-`` for none."""
    if seconds is None:
        return "-"
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def format_percent(percent: float | None) -> str:
    """A compliance percentage for people, with two decimals; ``n/a`` when none."""
    return "n/a" if percent is None else f"{percent:.2f} %"


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
