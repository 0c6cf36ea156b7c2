"""The values of access: rules, grants, principals and the operations of a plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from jmlsync.domain.filters import Expr

Action = Literal["grant", "revoke", "disable"]


class Grant(NamedTuple):
    """``role`` on ``target`` held by the principal named ``user`` (a userName).

    A named tuple rather than a dataclass: plans hold hundreds of thousands of grants in sets
    and dictionaries, and a tuple is made, hashed and compared in C (about twice as fast as
    a frozen dataclass at 200k grants). Ordered by (target, user, role).
    """

    target: str
    user: str
    role: str


@dataclass(frozen=True)
class RoleGrant:
    """One entry of a rule's ``grants``: a role on a target."""

    target: str
    role: str


@dataclass(frozen=True)
class Rule:
    """Members of ``group`` (matched by displayName, or by externalId when given) get ``grants``.

    ``user_filter``, when set, narrows the rule to the users it matches. ``index`` is the
    rule's position in the configuration, used to name it in reasons (``rule 3``).
    """

    index: int
    group: str
    grants: tuple[RoleGrant, ...]
    privileged: bool = False
    group_external_id: str | None = None
    user_filter: Expr | None = field(default=None, compare=False)
    user_filter_text: str | None = None

    @property
    def label(self) -> str:
        return f"rule {self.index} (group {self.group!r})"


@dataclass(frozen=True)
class GroupInfo:
    """A group as the policy sees it: its displayName and externalId."""

    id: str
    display_name: str
    external_id: str | None = None


@dataclass(frozen=True)
class UserState:
    """A user as the policy sees it.

    ``resource`` is the full SCIM representation; it is needed only by rules with a
    ``user_filter`` and may be empty otherwise. ``groups`` are the ids of its groups.
    """

    id: str
    user_name: str
    active: bool
    groups: frozenset[str] = frozenset()
    resource: dict[str, object] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Reason:
    """Why a grant is desired: the rule and the group that cause it, or (``request`` set,
    ``rule`` 0) an active time-bound grant, described by ``note``."""

    rule: int
    group: str
    privileged: bool
    request: int | None = None
    note: str | None = None

    def __str__(self) -> str:
        if self.request is not None:
            return self.note or f"time-bound request #{self.request}"
        return f"rule {self.rule}: group {self.group}"


@dataclass(frozen=True)
class Principal:
    """A principal in a target: the userName it stands for, and whether it is enabled.

    ``can_disable`` is False where the target has no way to disable a principal short of
    deleting it (AWS IAM Identity Center without ``delete_users_on_leave``): there a leaver's
    access ends with its last grant, and plans never ask to disable it.
    """

    user: str
    enabled: bool = True
    can_disable: bool = True

    @property
    def disableable(self) -> bool:
        """Whether a leaver's plan should disable this principal."""
        return self.enabled and self.can_disable


class Operation(NamedTuple):
    """One step of a plan. ``role`` is None for ``disable``. A named tuple, as
    :class:`Grant` is: a 100k-user plan makes one per change."""

    action: Action
    target: str
    user: str
    role: str | None
    reason: str
    privileged: bool = False


@dataclass(frozen=True)
class PrincipalSpec:
    """What a target needs to create the principal of a user."""

    user: str
    display_name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    email: str | None = None
    external_id: str | None = None
