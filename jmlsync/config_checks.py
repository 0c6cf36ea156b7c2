"""Syntax the configuration does not check itself: cron expressions and rules' SCIM filters.

The configuration depends only on domain/ and the targets' settings models; the parsers of
these two syntaxes live with their users (the scheduler, the SCIM adapter). The composition
root passes them in as :class:`SyntaxChecks` (see ``policy_config.load_checked_settings``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationInfo


@dataclass(frozen=True)
class SyntaxChecks:
    """``cron`` raises ValueError for an expression it refuses; ``user_filters`` takes the
    validated Settings and returns one problem line per rule filter that does not parse."""

    cron: Callable[[str], None] | None = None
    user_filters: Callable[[Any], list[str]] | None = None


def check_cron(value: str | None, info: ValidationInfo) -> None:
    """Check ``value`` with the cron check the validation was given, if any."""
    checks = info.context.get("checks") if isinstance(info.context, dict) else None
    if value and isinstance(checks, SyntaxChecks) and checks.cron is not None:
        checks.cron(value)
