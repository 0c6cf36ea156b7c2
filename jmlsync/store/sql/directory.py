"""SQL of the directory itself: users, groups and their memberships as SCIM reads and
writes them (the planning reads of the same tables are in :mod:`jmlsync.store.sql.policy`).

``{table}`` is ``users`` or ``groups``; ``{where}``, ``{order}`` and ``{window}`` come from the
dialect's filter compiler, sort expression and paging window."""

from __future__ import annotations

PING = "SELECT 1"

COUNT_WHERE = "SELECT count(*) FROM {table} WHERE {where}"
SEARCH = "SELECT * FROM {table} WHERE {where} ORDER BY {order} {window}"
#: ``{lock}``: the dialect's ``FOR UPDATE`` inside a write, else empty.
READ_BY_ID = "SELECT * FROM {table} WHERE id = ?{lock}"
DELETE_BY_ID = "DELETE FROM {table} WHERE id = ?"
FIND_USER = "SELECT * FROM users WHERE user_name_key = ?"

#: Followed by ``(?, ...)`` for a chunk of group ids.
MEMBERS_OF_GROUPS = (
    "SELECT group_id AS owner, user_id AS ref, display FROM memberships WHERE group_id IN"
)
#: Followed by ``(?, ...)`` for a chunk of user ids.
GROUPS_OF_USERS = (
    "SELECT m.user_id AS owner, m.group_id AS ref, g.display_name AS display"
    " FROM memberships m JOIN groups g ON g.id = m.group_id"
    " WHERE m.user_id IN"
)
#: ``{marks}``: ``?, ...`` for a chunk of group ids; ``{limit}``: an int.
GROUPS_LARGER_THAN = (
    "SELECT group_id FROM memberships"
    " WHERE group_id IN ({marks})"
    " GROUP BY group_id HAVING count(*) > {limit}"
)

INSERT_USER = (
    "INSERT INTO users (id, user_name, user_name_key, external_id, display_name,"
    " active, doc, created, last_modified, version)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)"
)
UPDATE_USER = (
    "UPDATE users SET user_name = ?, user_name_key = ?, external_id = ?,"
    " display_name = ?, active = ?, doc = ?, last_modified = ?,"
    " version = version + 1 WHERE id = ?"
)
INSERT_GROUP = (
    "INSERT INTO groups (id, display_name, display_name_key, external_id, doc, created,"
    " last_modified, version) VALUES (?, ?, ?, ?, ?, ?, ?, 1)"
)
UPDATE_GROUP = (
    "UPDATE groups SET display_name = ?, display_name_key = ?, external_id = ?, doc = ?,"
    " last_modified = ?, version = version + 1 WHERE id = ?"
)
#: A deleted user leaves its groups: their version moves so cached ETags go stale.
TOUCH_GROUPS_OF_USER = (
    "UPDATE groups SET version = version + 1 WHERE id IN"
    " (SELECT group_id FROM memberships WHERE user_id = ?)"
)
