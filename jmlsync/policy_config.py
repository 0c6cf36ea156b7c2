"""The configured rules, eligibilities and review campaigns as the engine's values.

Part of the composition root: it reads :class:`~jmlsync.config.Settings` and parses rules'
filters with the SCIM filter parser, so the engine is given values and never the
configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from jmlsync.config import Settings, load_settings
from jmlsync.config_checks import SyntaxChecks
from jmlsync.config_reviews import ReviewSettings, RuleScope
from jmlsync.domain.access import RoleGrant, Rule
from jmlsync.domain.reviews import Owner, ReviewScope
from jmlsync.domain.timebound import Eligibility, parse_duration
from jmlsync.engine.reviews import Definition
from jmlsync.scheduling import check_cron
from jmlsync.scim.errors import ScimError
from jmlsync.scim.filters import parse_filter
from jmlsync.scim.schema import schema_set


def rules_from_settings(settings: Settings) -> list[Rule]:
    """The ``[[rules]]`` of the configuration, numbered from 1, filters parsed against the
    User schemas (declared extensions included)."""
    user = schema_set(settings.scim.extension_documents()).resource_types["User"]
    return [
        Rule(
            index=index,
            group=rule.group,
            grants=tuple(RoleGrant(target=g.target, role=g.role) for g in rule.grants),
            privileged=rule.privileged,
            group_external_id=rule.group_external_id,
            user_filter=parse_filter(rule.user_filter, user) if rule.user_filter else None,
            user_filter_text=rule.user_filter,
        )
        for index, rule in enumerate(settings.rules, 1)
    ]


def eligibilities_from_settings(settings: Settings) -> list[Eligibility]:
    """The ``[[eligibility]]`` entries as domain values. An eligibility offering a role some
    privileged rule names is privileged too."""
    privileged = {(g.target, g.role) for r in settings.rules if r.privileged for g in r.grants}
    return [
        Eligibility(
            name=item.name,
            grants=tuple(RoleGrant(target=g.target, role=g.role) for g in item.grants),
            max_duration=parse_duration(item.max_duration),
            groups=frozenset(item.groups),
            users=frozenset(item.users),
            approvals=item.approvals,
            approvers=frozenset(item.approvers),
            require_reason=item.require_reason,
            ticket_pattern=item.ticket_pattern,
            approval_timeout=parse_duration(item.approval_timeout),
            privileged=item.privileged
            or any((g.target, g.role) in privileged for g in item.grants),
        )
        for item in settings.eligibility
    ]


def definition_of(settings: ReviewSettings) -> Definition:
    """The engine's view of one configured campaign."""
    scope: ReviewScope
    if isinstance(settings.scope, str):
        scope = ReviewScope("all" if settings.scope == "all" else "privileged")
    elif isinstance(settings.scope, RuleScope):
        scope = ReviewScope("rules", rules=frozenset(settings.scope.rules))
    else:
        scope = ReviewScope("roles", roles=frozenset((e.target, e.role) for e in settings.scope))
    return Definition(
        name=settings.name,
        scope=scope,
        reviewers=tuple(settings.reviewers),
        owners=tuple(Owner(o.target, o.role, tuple(o.reviewers)) for o in settings.owners),
        duration=settings.duration,
        remind_before=settings.remind_before,
        on_no_decision=settings.on_no_decision,
        admins=frozenset(name.casefold() for name in settings.admins),
    )


def review_definitions(settings: Settings) -> list[Definition]:
    """The ``[[reviews]]`` campaign definitions as the engine's values."""
    return [definition_of(review) for review in settings.reviews]


def filter_problems(settings: Settings) -> list[str]:
    """Rules' user_filter must parse against the User schemas, declared extensions included."""
    filtered = [(r, rule) for r, rule in enumerate(settings.rules, 1) if rule.user_filter]
    if not filtered:
        return []
    user = schema_set(settings.scim.extension_documents()).resource_types["User"]
    problems = []
    for index, rule in filtered:
        try:
            parse_filter(rule.user_filter or "", user)
        except ScimError as exc:
            problems.append(f"  rules[{index}].user_filter: {exc.detail}")
    return problems


#: The syntax checks the configuration is loaded with: cron (the scheduler's parser) and
#: rules' filters (the SCIM filter parser).
SYNTAX_CHECKS = SyntaxChecks(cron=check_cron, user_filters=filter_problems)


def load_checked_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """:func:`~jmlsync.config.load_settings` with every syntax check: what the CLI loads."""
    return load_settings(path, environ, checks=SYNTAX_CHECKS)
