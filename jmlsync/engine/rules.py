"""The configured rules and eligibilities as domain values."""

from __future__ import annotations

from jmlsync.config import Settings
from jmlsync.domain.access import RoleGrant, Rule
from jmlsync.domain.timebound import Eligibility, parse_duration
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
