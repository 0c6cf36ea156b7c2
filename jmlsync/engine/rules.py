"""The configured rules as domain values."""

from __future__ import annotations

from jmlsync.config import Settings
from jmlsync.domain.grants import RoleGrant, Rule
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
