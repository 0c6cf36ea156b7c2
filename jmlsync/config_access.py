"""``[access]`` and ``[[eligibility]]`` of the configuration: time-bound access. A leaf
module, like config.py (durations are checked with the domain's own parser)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jmlsync.domain.timebound import parse_duration


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccessGrantSettings(_Section):
    """One grant an eligibility offers: a role on a target, as in rules."""

    target: Annotated[str, Field(min_length=1)]
    role: Annotated[str, Field(min_length=1)]


def _duration(value: str) -> str:
    parse_duration(value)
    return value


class EligibilitySettings(_Section):
    """``[[eligibility]]``: who may request which grants for a while, and who approves."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    #: IdP group displayNames whose members may request.
    groups: list[Annotated[str, Field(min_length=1)]] = []
    #: userNames who may request, besides the groups' members.
    users: list[Annotated[str, Field(min_length=1)]] = []
    grants: Annotated[list[AccessGrantSettings], Field(min_length=1)]
    max_duration: str = "4h"
    #: Distinct approvers needed; 0 is self-service (refused for privileged grants).
    approvals: Annotated[int, Field(ge=0, le=10)] = 1
    #: IdP group displayNames whose active members may approve.
    approvers: list[Annotated[str, Field(min_length=1)]] = []
    require_reason: bool = True
    #: A regex the whole ticket id must match; a ticket is then required.
    ticket_pattern: str | None = None
    approval_timeout: str = "24h"
    #: Grants of this eligibility are privileged (alerts; no self-service).
    privileged: bool = False

    @field_validator("max_duration", "approval_timeout")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _duration(value)

    @field_validator("ticket_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return value


class AccessSettings(_Section):
    """``[access]``: how the scheduler enforces time-bound grants."""

    #: How often the scheduler looks for expired grants, lost eligibility and ends to verify.
    expiry_check_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: The SLA of an end: from expiry (or early end) to verified absent in the target.
    end_seconds: Annotated[int, Field(gt=0)] = 300
    #: userNames that may end any grant (through the CLI's --as or the API).
    admins: list[str] = []
    #: How long a personal API token is valid when generated without --expires.
    token_days: Annotated[int, Field(ge=1, le=366)] = 30
