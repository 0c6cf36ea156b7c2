"""SQL of the directory as planning reads it (groups, memberships, users), of what a
directory write causes, and of the record of applied grants."""

from __future__ import annotations

LIST_GROUPS = "SELECT id, display_name, external_id FROM groups"
#: Followed by ``(?, ...)`` for a chunk of group ids.
MEMBERSHIPS_OF_GROUPS = "SELECT user_id, group_id FROM memberships WHERE group_id IN"
MEMBERS_OF_GROUP = "SELECT user_id FROM memberships WHERE group_id = ?"
#: Followed by ``(?, ...)`` for a chunk of user ids.
USER_NAMES_OF_IDS = "SELECT user_name FROM users WHERE id IN"
#: Followed by ``(?, ...)`` for a chunk of casefolded userNames.
POLICY_USERS_NAMED = "SELECT id, user_name, active, doc FROM users WHERE user_name_key IN"
#: Followed by ``(?, ...)`` for a chunk of user ids.
GROUPS_OF_USERS = (
    "SELECT m.user_id, g.id, g.display_name, g.external_id FROM memberships m"
    " JOIN groups g ON g.id = m.group_id WHERE m.user_id IN"
)

#: Optionally followed by ``WHERE user_name IN (?, ...)``.
APPLIED_GRANTS = "SELECT target, user_name, role FROM applied_grants"
RECORD_APPLIED = (
    "INSERT INTO applied_grants (target, user_name, role, reason, applied_at)"
    " VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (target, user_name, role) DO UPDATE SET reason = excluded.reason"
)
FORGET_APPLIED = "DELETE FROM applied_grants WHERE target = ? AND user_name = ? AND role = ?"
