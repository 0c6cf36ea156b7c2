"""``[[reviews]]``: access-review campaigns (who reviews what, when, and what silence means).

A leaf of :mod:`jmlsync.config`, kept apart because a campaign has many keys of its own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from jmlsync.config_checks import check_cron

__all__ = ["ReviewOwnerSettings", "ReviewScopeEntry", "ReviewSettings", "RuleScope"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_reviewers(value: list[str]) -> list[str]:
    for reviewer in value:
        if reviewer != "manager" and not (
            reviewer.startswith("group:") and reviewer.removeprefix("group:").strip()
        ):
            raise ValueError(f'expected "manager" or "group:NAME", got {reviewer!r}')
    return value


class ReviewScopeEntry(_Section):
    """One entry of a list ``scope``: every role of ``target``, or one ``role`` on it."""

    target: Annotated[str, Field(min_length=1)]
    role: Annotated[str, Field(min_length=1)] | None = None


class RuleScope(_Section):
    """``scope = { rules = [1, 3] }``: the grants the rules with these numbers give."""

    rules: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]


class ReviewOwnerSettings(_Section):
    """``[[reviews.owners]]``: who reviews one role (or every role of a target), before the
    campaign's own ``reviewers``."""

    target: Annotated[str, Field(min_length=1)]
    role: Annotated[str, Field(min_length=1)] | None = None
    reviewers: Annotated[list[str], Field(min_length=1)]

    _reviewers = field_validator("reviewers")(_check_reviewers)


class ReviewSettings(_Section):
    """``[[reviews]]``: one access-review campaign definition."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    scope: Literal["privileged", "all"] | list[ReviewScopeEntry] | RuleScope = "privileged"
    reviewers: Annotated[list[str], Field(min_length=1)] = ["manager"]
    owners: list[ReviewOwnerSettings] = []
    #: When a campaign starts by itself (cron); none: only by ``jmlsync review start``.
    schedule: str | None = None
    #: How long reviewers have: the deadline is the start plus this (ISO 8601, e.g. "P14D").
    duration: timedelta = timedelta(days=14)
    #: How long before the deadline reviewers are reminded of undecided items.
    remind_before: timedelta = timedelta(days=2)
    #: What an item nobody decided by the deadline becomes (alerted either way).
    on_no_decision: Literal["keep", "revoke"] = "keep"
    #: Who may import decisions after the deadline (``--late``): userNames or OS users.
    #: Over the API, they see every item of the campaign.
    admins: list[str] = []

    _reviewers = field_validator("reviewers")(_check_reviewers)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None, info: ValidationInfo) -> str | None:
        check_cron(value, info)
        return value or None

    @model_validator(mode="after")
    def _positive_duration(self) -> ReviewSettings:
        if self.duration <= timedelta(0):
            raise ValueError("duration must be positive")
        if self.remind_before < timedelta(0):
            raise ValueError("remind_before must not be negative")
        return self


def review_problems(reviews: list[ReviewSettings], targets: set[str], rule_count: int) -> list[str]:
    """What one campaign cannot check alone: unique names, known targets and rule numbers."""
    problems = []
    seen: set[str] = set()
    for index, review in enumerate(reviews, 1):
        where = f"reviews[{index}]"
        if review.name in seen:
            problems.append(f"  {where}.name: duplicate campaign name {review.name!r}")
        seen.add(review.name)
        entries: list[tuple[str, str]] = []
        if isinstance(review.scope, list):
            entries += [(f"scope[{n}]", e.target) for n, e in enumerate(review.scope, 1)]
        elif isinstance(review.scope, RuleScope):
            problems += [
                f"  {where}.scope.rules: no rule {number} (configured: {rule_count})"
                for number in review.scope.rules
                if number > rule_count
            ]
        entries += [(f"owners[{n}]", o.target) for n, o in enumerate(review.owners, 1)]
        problems += [
            f"  {where}.{key}.target: unknown target {target!r}"
            f" (configured: {', '.join(sorted(targets)) or 'none'})"
            for key, target in entries
            if target not in targets
        ]
    return problems
