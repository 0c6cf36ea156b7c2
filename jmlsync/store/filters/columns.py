"""How the directory tables hold each SCIM attribute: the map both filter compilers read.

An attribute is a column of ``users`` or ``groups`` (:class:`Column`), rows of
``memberships`` (:class:`Membership`), or a member of the JSON column ``doc`` under its
canonical name; a few may not be filtered on at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    """An SQL expression that holds one attribute's value for the current row."""

    sql: str
    folded: bool = False
    """The column holds ``str.casefold()`` of the value, so operands are folded in Python."""


@dataclass(frozen=True)
class Membership:
    """A multi-valued attribute kept as ``memberships`` rows (alias ``m``), not in ``doc``."""

    owner: str
    """The ``memberships`` column naming the current row: ``user_id`` or ``group_id``."""
    subs: Mapping[str, Column]
    """Sub-attribute name to an expression over ``m``."""


@dataclass(frozen=True)
class Table:
    """How one resource table stores its attributes."""

    name: str
    columns: Mapping[str, Column]
    """Attribute key (``userName``, ``meta.created``) to the column that holds it."""
    memberships: Mapping[str, Membership] = field(default_factory=dict)
    """Top-level attribute name (``groups``, ``members``) to its ``memberships`` rows."""
    unfilterable: frozenset[str] = frozenset()
    """Attribute keys neither a column nor in ``doc``: filtering on them is refused."""
    doc: str = "doc"
    """The JSON column holding every other attribute under its canonical name."""


def _meta_columns(table: str, resource_type: str) -> dict[str, Column]:
    return {
        "id": Column(f"{table}.id"),
        "externalId": Column(f"{table}.external_id"),
        "meta.created": Column(f"{table}.created"),
        "meta.lastModified": Column(f"{table}.last_modified"),
        "meta.resourceType": Column(f"'{resource_type}'"),
        "meta.version": Column(f"'W/\"' || {table}.version || '\"'"),
    }


_UNFILTERABLE = frozenset({"meta", "meta.location"})

USERS_TABLE = Table(
    name="users",
    columns={
        **_meta_columns("users", "User"),
        "userName": Column("users.user_name_key", folded=True),
        "displayName": Column("users.display_name"),
        "active": Column("users.active"),
    },
    memberships={
        "groups": Membership(
            owner="user_id",
            subs={
                "value": Column("m.group_id"),
                "display": Column(
                    "(SELECT g.display_name FROM groups AS g WHERE g.id = m.group_id)"
                ),
            },
        )
    },
    unfilterable=_UNFILTERABLE | {"password"},
)
GROUPS_TABLE = Table(
    name="groups",
    columns={
        **_meta_columns("groups", "Group"),
        "displayName": Column("groups.display_name_key", folded=True),
    },
    memberships={
        "members": Membership(
            owner="group_id", subs={"value": Column("m.user_id"), "display": Column("m.display")}
        )
    },
    unfilterable=_UNFILTERABLE,
)

BOOLEAN_COLUMNS: frozenset[str] = frozenset({"users.active"})
"""The :attr:`Column.sql` expressions of type ``boolean`` on PostgreSQL; every other column
is ``text`` there (SQLite keeps ``active`` as 0/1)."""
