"""A downstream SCIM 2.0 service provider as a target: AWS IAM Identity Center, CloudSSO, any
RFC 7644 server.

A principal is a SCIM User matched by userName; a role is an existing Group named by its
displayName, and holding it is being a member. The connector keeps to what IAM Identity Center
accepts: filters use only ``eq`` and ``and``, a PATCH changes at most 100 members, members are
added and removed one by one (never replaced), and group reads are not trusted to list members
(IAM Identity Center always answers an empty list): membership is asked with filters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import aiohttp
from pydantic import Field

from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError
from jmlsync.targets.scim_http import PATCH_OP, Json, ScimClient, ScimRefused, quote, read_token
from jmlsync.targets.scim_resources import is_active, new_user, user_members
from jmlsync.targets.settings import TargetSection

log = logging.getLogger("jmlsync.targets.scim")

#: IAM Identity Center refuses a PATCH that changes more members than this.
MAX_MEMBER_CHANGES = 100

#: From this many principals, a membership check first reads the group once: whoever it lists
#: is a member, and only the others are asked about one by one.
BULK_READ_AT = 10

#: How long a role's group id is trusted: a group deleted and recreated under the same
#: displayName gets a new id, and a stale one would make membership checks miss.
GROUP_CACHE_SECONDS = 300.0

MemberOp = Literal["add", "remove"]
FilterKind = Literal["roles of a member", "membership"]

T = TypeVar("T")


class ScimTargetSettings(TargetSection):
    """``kind = "scim"``: a downstream SCIM 2.0 service provider."""

    kind: Literal["scim"]
    url: Annotated[str, Field(pattern=r"^https?://")]
    token_file: Path
    delete_users_on_leave: bool = False
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0


class ScimTarget:
    """The Target port on a SCIM service provider, through one :class:`ScimClient`."""

    kind = "scim"

    def __init__(
        self,
        name: str,
        client: ScimClient,
        *,
        delete_users_on_leave: bool = False,
        page_size: int = 100,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        self.name = name
        self._client = client
        self._delete_users = delete_users_on_leave
        self._page_size = page_size
        self._group_ids: dict[str, tuple[str, float]] = {}
        self._group_locks: dict[str, asyncio.Lock] = {}
        # Which membership filters the server accepts, learnt from its first answer to each.
        self._filters: dict[FilterKind, bool] = {}

    @classmethod
    async def open(
        cls,
        name: str,
        settings: ScimTargetSettings,
        *,
        http: aiohttp.ClientSession | None = None,
        page_size: int = 100,
    ) -> ScimTarget:
        """Open the target; ``http`` is a shared session, else the target opens and owns one.

        Raises ConfigError, naming the file, when ``token_file`` is unreadable or holds no token.
        """
        token = read_token(name, settings.token_file)
        client = ScimClient(
            name,
            settings.url,
            token,
            http=http or aiohttp.ClientSession(),
            owns_http=http is None,
            timeout_seconds=settings.timeout_seconds,
            concurrency=settings.max_concurrency,
        )
        return cls(
            name, client, delete_users_on_leave=settings.delete_users_on_leave, page_size=page_size
        )

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> None:
        # Authenticated, unlike the discovery endpoints a provider may serve to anyone.
        await self._client.request("GET", "/Users", params={"startIndex": "1", "count": "1"})

    async def list_grants(self) -> AsyncIterator[Grant]:
        names: dict[str, str] | None = None
        any_group = any_member = False
        async for gid, role, listed in self._groups():
            any_group = True
            members = listed if listed is not None else await self._member_ids_of(gid)
            if not members:
                continue
            any_member = True
            if names is None:
                names = {uid: user async for uid, user, _ in self._users()}
            for uid in sorted(members & names.keys()):
                yield Grant(self.name, names[uid], role)
        if any_group and not any_member:
            # Either nobody holds a role, or the server hides members (IAM Identity Center):
            # only asking user by user tells which.
            async for uid, user, _ in self._users():
                for role in sorted(await self._roles_of(uid)):
                    yield Grant(self.name, user, role)

    async def list_principals(self) -> AsyncIterator[Principal]:
        async for _, user, active in self._users():
            yield Principal(user=user, enabled=active)

    async def grants_of(self, user: str) -> frozenset[str]:
        found = await self._find_user(user)
        return frozenset() if found is None else await self._roles_of(str(found["id"]))

    async def principal(self, user: str) -> Principal | None:
        found = await self._find_user(user)
        return None if found is None else Principal(user=user, enabled=is_active(found))

    async def ensure_principal(self, spec: PrincipalSpec) -> None:
        found = await self._find_user(spec.user)
        if found is None:
            try:
                await self._client.request("POST", "/Users", body=new_user(spec))
                return
            except ScimRefused as exc:
                # A concurrent ensure created it first: then enable it like any found one.
                if exc.status != 409:
                    raise
                found = await self._find_user(spec.user)
                if found is None:
                    raise
        if not is_active(found):
            await self._set_active(str(found["id"]), True)

    async def grant(self, user: str, role: str) -> None:
        await self.grant_many(role, [user])

    async def revoke(self, user: str, role: str) -> None:
        await self.revoke_many(role, [user])

    async def disable_principal(self, user: str) -> None:
        found = await self._find_user(user)
        if found is None:
            return
        uid = str(found["id"])
        try:
            if self._delete_users:
                # Some servers leave a deleted user in Group.members: leave every group first.
                for role in sorted(await self._roles_of(uid)):
                    await self._revoke_ids(role, [uid])
                await self._client.request("DELETE", f"/Users/{uid}")
            elif is_active(found):
                await self._set_active(uid, False)
        except ScimRefused as exc:
            if exc.status != 404:
                raise

    async def grant_many(self, role: str, users: Iterable[str]) -> None:
        """Give ``role`` to every principal of ``users``, in PATCHes of at most 100 members.

        Raises PermanentTargetError, before any change, when a principal or the role's group
        does not exist.
        """
        ids = await self._user_ids(users)
        missing = sorted(user for user, uid in ids.items() if uid is None)
        if missing:
            shown = ", ".join(repr(u) for u in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise PermanentTargetError(f"scim target {self.name!r} has no principal {shown}")
        await self._in_group(role, "add", [uid for uid in ids.values() if uid is not None])

    async def revoke_many(self, role: str, users: Iterable[str]) -> None:
        """Take ``role`` from every principal of ``users``, in PATCHes of at most 100 members;
        missing principals, missing grants and a missing group are successes."""
        ids = [uid for uid in (await self._user_ids(users)).values() if uid is not None]
        if ids:
            await self._revoke_ids(role, ids)

    async def _find_user(self, user: str) -> Json | None:
        query = {"filter": f"userName eq {quote(user)}"}
        answer = await self._client.request("GET", "/Users", params=query) or {}
        found = [r for r in answer.get("Resources") or [] if isinstance(r, dict) and "id" in r]
        # userName is case-insensitive in SCIM: prefer the exact spelling when both exist.
        exact = [r for r in found if r.get("userName") == user]
        return (exact or found)[0] if found else None

    async def _user_ids(self, users: Iterable[str]) -> dict[str, str | None]:
        names = sorted(set(users))
        found = await _gather(self._find_user(user) for user in names)
        return {u: None if f is None else str(f["id"]) for u, f in zip(names, found, strict=True)}

    async def _users(self) -> AsyncIterator[tuple[str, str, bool]]:
        """Every user as (id, userName, active)."""
        async for users in self._client.pages("/Users", {}, page_size=self._page_size):
            for user in users:
                if "id" in user and isinstance(user.get("userName"), str):
                    yield str(user["id"]), user["userName"], is_active(user)

    async def _groups(self) -> AsyncIterator[tuple[str, str, set[str] | None]]:
        """Every group as (id, displayName, members listed), members None when left out."""
        async for groups in self._client.pages("/Groups", {}, page_size=self._page_size):
            for group in groups:
                if "id" in group:
                    listed = user_members(group) if "members" in group else None
                    yield str(group["id"]), str(group.get("displayName", "")), listed

    async def _group_id(self, role: str) -> str:
        cached = self._group_ids.get(role)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        query = {"filter": f"displayName eq {quote(role)}"}
        answer = await self._client.request("GET", "/Groups", params=query) or {}
        found = [r for r in answer.get("Resources") or [] if isinstance(r, dict) and "id" in r]
        exact = [r for r in found if r.get("displayName") == role]
        if not found:
            raise _UnknownGroup(
                f"scim target {self.name!r} has no group {role!r}; create it there first"
            )
        gid = str((exact or found)[0]["id"])
        self._group_ids[role] = (gid, time.monotonic() + GROUP_CACHE_SECONDS)
        return gid

    async def _roles_of(self, uid: str) -> frozenset[str]:
        """The displayNames of the groups the user ``uid`` is a member of."""
        try:
            roles = await self._filtered("roles of a member", lambda: self._roles_by_filter(uid))
        except ScimRefused as exc:
            # IAM Identity Center answers 404 for a member it does not know.
            if exc.status == 404:
                return frozenset()
            raise
        if roles is not None:
            return roles
        found = set()
        async for gid, role, _ in self._groups():
            if await self._members_among(gid, [uid]):
                found.add(role)
        return frozenset(found)

    async def _roles_by_filter(self, uid: str) -> frozenset[str]:
        params = {"filter": f"members.value eq {quote(uid)}"}
        pages = self._client.pages("/Groups", params, page_size=self._page_size)
        return frozenset([str(g.get("displayName", "")) async for page in pages for g in page])

    async def _members_among(self, gid: str, uids: Sequence[str]) -> set[str]:
        """Which of ``uids`` are members of the group ``gid`` now."""
        # A listed member is a member; an unlisted one may be hidden or on a later page.
        known = await self._member_ids_of(gid) & set(uids) if len(uids) >= BULK_READ_AT else set()
        rest = [uid for uid in uids if uid not in known]
        if not rest:
            return known
        checks = await self._filtered(
            "membership", lambda: _gather(self._is_member(gid, uid) for uid in rest)
        )
        if checks is None:
            return known | (await self._member_ids_of(gid) & set(rest))
        return known | {uid for uid, member in zip(rest, checks, strict=True) if member}

    async def _is_member(self, gid: str, uid: str) -> bool:
        query = {"filter": f"id eq {quote(gid)} and members eq {quote(uid)}"}
        try:
            answer = await self._client.request("GET", "/Groups", params=query) or {}
        except ScimRefused as exc:
            # IAM Identity Center answers 404 for a member it does not know.
            if exc.status == 404:
                return False
            raise
        return any(
            isinstance(r, dict) and r.get("id") == gid for r in answer.get("Resources") or []
        )

    async def _member_ids_of(self, gid: str) -> set[str]:
        return user_members(await self._client.request("GET", f"/Groups/{gid}") or {})

    async def _filtered(self, kind: FilterKind, query: Callable[[], Awaitable[T]]) -> T | None:
        """The answer of a membership filter query, or None when the server refuses this kind
        of filter: it is then never sent again and the caller reads group members instead."""
        if self._filters.get(kind) is False:
            return None
        try:
            answer = await query()
        except ScimRefused as exc:
            if not (exc.status == 400 and exc.scim_type in {None, "invalidFilter"}):
                raise
            log.info("scim target %r refuses %s filters: reading members", self.name, kind)
            self._filters[kind] = False
            return None
        self._filters[kind] = True
        return answer

    async def _revoke_ids(self, role: str, uids: Sequence[str]) -> None:
        try:
            await self._in_group(role, "remove", uids)
        except _UnknownGroup:
            # No group, so nobody holds the role: there is nothing to take away.
            log.warning("scim target %r: revoke of unknown role %r ignored", self.name, role)

    async def _in_group(self, role: str, op: MemberOp, uids: Sequence[str]) -> None:
        """Change the members of the role's group. On a 404 the cached group id may be stale
        (the group deleted, perhaps recreated): the role is resolved again, once."""
        gid = await self._group_id(role)
        try:
            await self._change_members(gid, op, uids)
        except ScimRefused as exc:
            if exc.status != 404:
                raise
            self._group_ids.pop(role, None)
            fresh = await self._group_id(role)
            if fresh != gid:
                await self._change_members(fresh, op, uids)
            elif op == "add":
                raise
            # A removal the group does not know of has nothing to remove.

    async def _change_members(self, gid: str, op: MemberOp, uids: Sequence[str]) -> None:
        """Add or remove ``uids`` where that changes something, at most 100 per PATCH.

        The check and the write hold the group's lock, so two grants racing in this process
        cannot both find the member missing and add it twice.
        """
        async with self._group_locks.setdefault(gid, asyncio.Lock()):
            present = await self._members_among(gid, uids)
            todo = sorted(set(uids) - present if op == "add" else present)
            for start in range(0, len(todo), MAX_MEMBER_CHANGES):
                await self._patch_members(gid, op, todo[start : start + MAX_MEMBER_CHANGES])

    async def _patch_members(self, gid: str, op: MemberOp, uids: Sequence[str]) -> None:
        if op == "add":
            operations: list[Json] = [
                {"op": "add", "path": "members", "value": [{"value": uid} for uid in uids]}
            ]
        else:
            operations = [
                {"op": "remove", "path": f"members[value eq {quote(uid)}]"} for uid in uids
            ]
        body = {"schemas": [PATCH_OP], "Operations": operations}
        try:
            await self._client.request("PATCH", f"/Groups/{gid}", body=body)
        except ScimRefused as exc:
            # A member removed meanwhile: RFC 7644 lets a server refuse the whole PATCH with
            # noTarget, so the others are removed one by one.
            if op != "remove" or exc.scim_type != "noTarget":
                raise
            if len(uids) > 1:
                for uid in uids:
                    await self._patch_members(gid, op, [uid])

    async def _set_active(self, uid: str, active: bool) -> None:
        operation = {"op": "replace", "path": "active", "value": active}
        body = {"schemas": [PATCH_OP], "Operations": [operation]}
        await self._client.request("PATCH", f"/Users/{uid}", body=body)


class _UnknownGroup(PermanentTargetError):
    """No downstream group has the role's displayName."""


async def _gather(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await every call; when some fail, raise the first failure once all have finished."""
    values: list[T] = []
    for result in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result
        values.append(result)
    return values
