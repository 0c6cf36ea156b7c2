"""A console session, as a value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Session:
    """One signed-in person."""

    user_name: str
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    claims: dict[str, Any]


@dataclass(frozen=True)
class Timeouts:
    """How long a session lasts unused (idle) and at all (absolute)."""

    idle: timedelta
    absolute: timedelta
