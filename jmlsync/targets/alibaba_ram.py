"""Alibaba Cloud RAM: RAM users, their group memberships and the policies attached to them.

A role is ``group:NAME`` (the user is a member of the RAM user group) or ``policy:TYPE/NAME``
for a policy attached directly to the user (TYPE is ``System`` or ``Custom``).

Names. The principal of the userName ``U`` is the RAM user named :func:`ram_user_name` ``(U)``:

- with ``domain_alias`` set (the account's domain alias, ``example.org``), ``ada@example.org``
  is the RAM user ``ada``, who signs in as ``ada@example.org``: that is what a domain alias does;
- then ``U`` itself when RAM accepts it: ASCII letters, digits and ``._-``, at most 64 characters;
- otherwise ``U`` with every other character replaced by ``-``, cut to 55 characters, then ``-``
  and the first 8 hex digits of the SHA-256 of ``U`` (UTF-8).

RAM users carry no tags, so jmlsync keeps what it must remember in the user's ``Comments``:
``jmlsync:userName=U``, or ``jmlsync:disabled:userName=U`` once disabled. jmlsync owns the
Comments of the users it manages.

Leavers. RAM has no disabled state: :meth:`RamTarget.disable_principal` deletes the login
profile (no console sign-in), sets every access key ``Inactive`` (no API calls), then marks the
Comments. The engine revokes every group and policy the rules gave before it disables.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from alibabacloud_ram20150501 import models as ram
from alibabacloud_ram20150501.client import Client

from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError, TransientTargetError
from jmlsync.targets.alibaba_common import EXISTS, AlibabaApi, Body, sdk_config
from jmlsync.targets.alibaba_settings import RAM_ROLE, RAM_ROLE_SYNTAX, AlibabaRamTargetSettings
from jmlsync.targets.aws_common import KeyedLocks, gather_limited

GROUP_PREFIX = "group:"
POLICY_PREFIX = "policy:"
MAX_NAME = 64
MAX_COMMENTS = 128
MARKER = "jmlsync:"
DISABLED = "disabled:"
#: Users whose roles a listing reads at once.
BATCH = 50
#: RAM's largest page (``MaxItems``) for ListUsers.
PAGE = 1000

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_COMMENT = re.compile(r"jmlsync:(?P<disabled>disabled:)?userName=(?P<user>.*)", re.DOTALL)


def ram_user_name(user: str, domain_alias: str | None = None) -> str:
    """The RAM user name of the userName ``user`` (see the module's documentation)."""
    if domain_alias and user.lower().endswith("@" + domain_alias.lower()):
        local = user[: -len(domain_alias) - 1]
        if local and not _UNSAFE.search(local) and len(local) <= MAX_NAME:
            return local
    if not _UNSAFE.search(user) and 0 < len(user) <= MAX_NAME:
        return user
    digest = hashlib.sha256(user.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('-', user)[: MAX_NAME - 9]}-{digest}"


def comments(user: str, *, disabled: bool) -> str:
    """The Comments jmlsync writes on the RAM user of ``user``."""
    text = f"{MARKER}{DISABLED if disabled else ''}userName={user}"
    if len(text) > MAX_COMMENTS:
        raise PermanentTargetError(f"userName {user[:40]!r}... is too long to mark a RAM user")
    return text


def parse_role(role: str) -> tuple[Literal["group", "policy"], str, str]:
    """``("group", name, "")`` or ``("policy", name, type)``; PermanentTargetError when
    malformed."""
    match = RAM_ROLE.fullmatch(role)
    if match is None:
        raise PermanentTargetError(f"role {role!r} is not {RAM_ROLE_SYNTAX}")
    if match["group"]:
        return "group", match["group"], ""
    return "policy", match["policy"], match["type"]


@dataclass(frozen=True)
class _RamUser:
    name: str
    user: str
    disabled: bool
    marked: bool


def _as_ram_user(name: str, user: str, found: Body) -> _RamUser:
    marker = _COMMENT.fullmatch(str(found.get("Comments") or ""))
    owner = marker["user"] if marker else None
    return _RamUser(name, owner or user, bool(marker and marker["disabled"]), marker is not None)


def _items(body: Body, outer: str, inner: str) -> list[Any]:
    """RAM's lists sit two levels down: ``{"Users": {"User": [...]}}``."""
    return list((body.get(outer) or {}).get(inner) or ())


class RamTarget:
    """The Target port on the RAM users, groups and policies of one Alibaba Cloud account."""

    kind = "alibaba-ram"

    def __init__(
        self, name: str, settings: AlibabaRamTargetSettings, api: AlibabaApi, page: int = PAGE
    ) -> None:
        self.name = name
        self._settings = settings
        self._api = api
        self._locks = KeyedLocks()
        self._page = page

    @classmethod
    async def open(
        cls, name: str, settings: AlibabaRamTargetSettings, *, page_size: int | None = None
    ) -> RamTarget:
        """Make the RAM client (no call yet); ``page_size`` overrides RAM's page size (tests
        make pages small)."""
        api = AlibabaApi("ram", Client(sdk_config(settings)), settings)
        return cls(name, settings, api, page_size or PAGE)

    async def close(self) -> None:
        """Nothing to release: the SDK opens a connection per call."""

    async def ping(self) -> None:
        await self._api.call("list_users", ram.ListUsersRequest(max_items=1))

    async def list_grants(self) -> AsyncIterator[Grant]:
        async for batch in self._user_batches():
            held = await gather_limited(
                [partial(self._grants, user) for user in batch], self._settings.max_concurrency
            )
            for grants in held:
                for grant in grants:
                    yield grant

    async def list_principals(self) -> AsyncIterator[Principal]:
        async for batch in self._user_batches():
            for ram_user in batch:
                yield Principal(ram_user.user, enabled=not ram_user.disabled)

    async def grants_of(self, user: str) -> frozenset[str]:
        found = await self._lookup(user)
        roles = await self._roles(found.name) if found is not None else None
        return roles or frozenset()

    async def principal(self, user: str) -> Principal | None:
        found = await self._lookup(user)
        return Principal(user, enabled=not found.disabled) if found is not None else None

    async def ensure_principal(self, spec: PrincipalSpec) -> None:
        async with self._locks.hold(self._ram_name(spec.user)):
            found = await self._lookup(spec.user)
            if found is None:
                if await self._create(spec):
                    return  # created enabled and marked
                found = await self._lookup(spec.user)  # created meanwhile, elsewhere
            if found is None:
                raise TransientTargetError(f"{self.name}: RAM user of {spec.user!r} came and went")
            if found.disabled or not found.marked:
                await self._mark(found.name, spec.user, disabled=False)

    async def grant(self, user: str, role: str) -> None:
        kind, value, policy_type = parse_role(role)
        async with self._locks.hold(self._ram_name(user)):
            found = await self._lookup(user)
            roles = await self._roles(found.name, only=kind) if found is not None else None
            if found is None or roles is None:
                raise PermanentTargetError(f"{self.name}: no RAM user for {user!r}")
            if role in roles:
                return
            # "Already there" is a grant made meanwhile by another process: done.
            if kind == "group":
                request: Any = ram.AddUserToGroupRequest(group_name=value, user_name=found.name)
                await self._api.call_or_none("add_user_to_group", request, absent=EXISTS)
            else:
                request = ram.AttachPolicyToUserRequest(
                    policy_type=policy_type, policy_name=value, user_name=found.name
                )
                await self._api.call_or_none("attach_policy_to_user", request, absent=EXISTS)

    async def revoke(self, user: str, role: str) -> None:
        kind, value, policy_type = parse_role(role)
        async with self._locks.hold(self._ram_name(user)):
            found = await self._lookup(user)
            roles = await self._roles(found.name, only=kind) if found is not None else None
            if found is None or roles is None or role not in roles:
                return
            # EntityNotExist.* (the user, the group, the attachment gone since): a success.
            if kind == "group":
                await self._api.call_or_none(
                    "remove_user_from_group",
                    ram.RemoveUserFromGroupRequest(group_name=value, user_name=found.name),
                )
            else:
                await self._api.call_or_none(
                    "detach_policy_from_user",
                    ram.DetachPolicyFromUserRequest(
                        policy_type=policy_type, policy_name=value, user_name=found.name
                    ),
                )

    async def disable_principal(self, user: str) -> None:
        async with self._locks.hold(self._ram_name(user)):
            found = await self._lookup(user)
            if found is None:
                return
            await self._api.call_or_none(
                "delete_login_profile", ram.DeleteLoginProfileRequest(user_name=found.name)
            )
            keys = await self._api.call_or_none(
                "list_access_keys", ram.ListAccessKeysRequest(user_name=found.name)
            )
            for key in _items(keys or {}, "AccessKeys", "AccessKey"):
                if key.get("Status") == "Active":
                    await self._api.call_or_none(
                        "update_access_key",
                        ram.UpdateAccessKeyRequest(
                            user_name=found.name,
                            user_access_key_id=key["AccessKeyId"],
                            status="Inactive",
                        ),
                    )
            # Marked last: a disable cut short is redone whole, since the user still reads
            # as enabled.
            if not found.disabled:
                await self._mark(found.name, user, disabled=True)

    def _ram_name(self, user: str) -> str:
        return ram_user_name(user, self._settings.domain_alias)

    async def _lookup(self, user: str) -> _RamUser | None:
        """The RAM user of ``user``; PermanentTargetError when it belongs to another userName."""
        name = self._ram_name(user)
        found = await self._api.call_or_none("get_user", ram.GetUserRequest(user_name=name))
        if found is None:
            return None
        ram_user = _as_ram_user(str(found["User"]["UserName"]), user, found["User"])
        if ram_user.user != user:
            raise PermanentTargetError(
                f"{self.name}: RAM user {ram_user.name!r} belongs to userName"
                f" {ram_user.user!r}, not {user!r}"
            )
        return ram_user

    async def _create(self, spec: PrincipalSpec) -> bool:
        """Create the RAM user of ``spec.user``; False when it already exists."""
        if not self._settings.provision_users:
            raise PermanentTargetError(
                f"{self.name}: no RAM user for {spec.user!r} (provision_users is off)"
            )
        named = " ".join(n for n in (spec.given_name, spec.family_name) if n)
        request = ram.CreateUserRequest(
            user_name=self._ram_name(spec.user),
            display_name=(spec.display_name or named or spec.user)[:MAX_COMMENTS],
            comments=comments(spec.user, disabled=False),
        )
        created = await self._api.call_or_none("create_user", request, absent=EXISTS)
        return created is not None

    async def _mark(self, name: str, user: str, *, disabled: bool) -> None:
        request = ram.UpdateUserRequest(
            user_name=name, new_comments=comments(user, disabled=disabled)
        )
        await self._api.call("update_user", request)

    async def _roles(
        self, name: str, *, only: Literal["group", "policy"] | None = None
    ) -> frozenset[str] | None:
        """The roles of the RAM user ``name`` (those of one kind, when ``only``); None when the
        user is gone. Neither listing pages: a user is in at most a few groups and policies."""
        roles: set[str] = set()
        if only != "policy":
            groups = await self._api.call_or_none(
                "list_groups_for_user", ram.ListGroupsForUserRequest(user_name=name)
            )
            if groups is None:
                return None
            roles |= {GROUP_PREFIX + str(g["GroupName"]) for g in _items(groups, "Groups", "Group")}
        if only != "group":
            policies = await self._api.call_or_none(
                "list_policies_for_user", ram.ListPoliciesForUserRequest(user_name=name)
            )
            if policies is None:
                return None
            roles |= {
                f"{POLICY_PREFIX}{p['PolicyType']}/{p['PolicyName']}"
                for p in _items(policies, "Policies", "Policy")
            }
        return frozenset(roles)

    async def _grants(self, ram_user: _RamUser) -> list[Grant]:
        roles = await self._roles(ram_user.name)
        if roles is None:
            return []  # deleted since it was listed
        return [Grant(self.name, ram_user.user, role) for role in sorted(roles)]

    async def _user_batches(self) -> AsyncIterator[list[_RamUser]]:
        """Every RAM user, a batch at a time, paged with Marker while IsTruncated."""
        marker: str | None = None
        batch: list[_RamUser] = []
        while True:
            page = await self._api.call(
                "list_users", ram.ListUsersRequest(marker=marker, max_items=self._page)
            )
            for listed in _items(page, "Users", "User"):
                name = str(listed["UserName"])
                batch.append(_as_ram_user(name, name, listed))
                if len(batch) == BATCH:
                    yield batch
                    batch = []
            marker = page.get("Marker")
            if not page.get("IsTruncated") or not marker:
                break
        if batch:
            yield batch
