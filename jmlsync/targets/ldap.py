"""An LDAP directory or Active Directory as a target: roles are groups, grants are memberships.

A principal is the one entry under ``users_base`` that ``user_filter`` finds for a userName.
A role is a group under ``groups_base``: a bare name is ``cn=NAME,<groups_base>``, a DN names any
group below it. Grant and revoke are one modification of the group's membership attribute
(``member``, ``uniqueMember`` or ``memberUid``): the server adds a value atomically and refuses a
duplicate, so no check is needed before the write and a retried grant can never store a value
twice. A leaver is disabled by one modification chosen by ``disable`` (see ``disable_changes``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence

import bonsai
from bonsai import errors as ldap_errors

from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.domain.errors import ConfigError, PermanentTargetError
from jmlsync.targets.ldap_client import (
    Attributes,
    Change,
    LdapPool,
    Session,
    dn_key,
    escape_filter_value,
    escape_rdn_value,
    parent_and_rdn,
    read_password,
    user_filter,
)
from jmlsync.targets.ldap_entries import (
    DISABLE_ATTRIBUTES,
    disable_changes,
    enable_changes,
    is_disabled,
    new_entry,
)
from jmlsync.targets.ldap_settings import LdapTargetSettings

SUBTREE = bonsai.LDAPSearchScope.SUBTREE
BASE = bonsai.LDAPSearchScope.BASE


class LdapTarget:
    """The Target port on an LDAP directory, through one :class:`LdapPool`."""

    kind = "ldap"

    def __init__(self, name: str, settings: LdapTargetSettings, pool: LdapPool) -> None:
        self.name = name
        self._settings = settings
        self._pool = pool
        self._name_attr = settings.name_attribute
        self._member_attr = settings.membership_attribute
        self._groups_key = dn_key(settings.groups_base)
        self._bases_seen: set[str] = set()
        # A user's ensure and disable read, then write: one at a time per user in this process.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @classmethod
    async def open(
        cls, name: str, settings: LdapTargetSettings, *, page_size: int | None = None
    ) -> LdapTarget:
        """Open the target; no connection is made until the first call.

        Raises ConfigError, naming the file, when the password or CA file is unreadable.
        """
        password = read_password(name, settings.bind_password_file)
        tls = settings.url.startswith("ldap://") and settings.start_tls
        client = bonsai.LDAPClient(settings.url, tls=tls)
        client.set_credentials("SIMPLE", user=settings.bind_dn, password=password)
        client.set_auto_page_acquire(False)
        client.set_ignore_referrals(True)
        if settings.ca_file is not None:
            if not settings.ca_file.is_file():
                raise ConfigError(f"target {name!r}: cannot read ca_file {str(settings.ca_file)!r}")
            client.set_ca_cert(str(settings.ca_file))
        if tls or settings.url.startswith("ldaps://"):
            client.set_cert_policy("demand")
        pool = LdapPool(
            client,
            size=settings.pool_size,
            connect_timeout=settings.connect_timeout_seconds,
            timeout=settings.timeout_seconds,
            label=f"ldap target {name!r}",
        )
        if page_size is not None:
            settings = settings.model_copy(update={"page_size": page_size})
        return cls(name, settings, pool)

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> None:
        # A bound connection (the bind checks the credentials), then the users' base entry:
        # one base-scope read that the bind DN must be allowed.
        async with self._pool.connection("ping") as conn:
            await self._read_base(conn, self._settings.users_base)

    async def list_grants(self) -> AsyncIterator[Grant]:
        members: dict[str, str] = {}
        async for dn, attributes in self._users(self._member_key_attributes()):
            user = _first(attributes, self._name_attr)
            key = self._member_key(dn, attributes)
            if user is not None and key is not None:
                members[key] = user
        groups = f"(objectClass={escape_filter_value(self._settings.group_object_class)})"
        async with self._pool.connection("list grants") as conn:
            pages = conn.paged_search(
                self._settings.groups_base,
                SUBTREE,
                groups,
                [self._member_attr],
                self._settings.page_size,
            )
            async for page in self._on_base(conn, pages, self._settings.groups_base):
                for dn, attributes in page:
                    role = self._role_of(dn)
                    held = {
                        self._value_key(v) for v in attributes.get(self._member_attr.lower(), [])
                    }
                    for user in sorted({members[k] for k in held if k in members}):
                        yield Grant(self.name, user, role)

    async def list_principals(self) -> AsyncIterator[Principal]:
        attributes = [self._name_attr, *self._disable_attributes()]
        async for _, found in self._users(attributes):
            user = _first(found, self._name_attr)
            if user is not None:
                yield self._principal(user, found)

    async def grants_of(self, user: str) -> frozenset[str]:
        entry = await self._find(user, self._member_key_attributes())
        if entry is None:
            return frozenset()
        value = self._member_value(*entry)
        filter_ = (
            f"(&(objectClass={escape_filter_value(self._settings.group_object_class)})"
            f"({self._member_attr}={escape_filter_value(value)}))"
        )
        async with self._pool.connection(f"read groups of {user!r}") as conn:
            found = await self._searched(conn, self._settings.groups_base, filter_, ["1.1"])
        return frozenset(self._role_of(dn) for dn, _ in found)

    async def principal(self, user: str) -> Principal | None:
        entry = await self._find(user, self._disable_attributes())
        return None if entry is None else self._principal(user, entry[1])

    async def ensure_principal(self, spec: PrincipalSpec) -> None:
        async with self._lock(spec.user):
            entry = await self._find(spec.user, self._disable_attributes())
            if entry is None:
                entry = await self._create(spec)
            dn, attributes = entry
            if self._settings.disable != "none" and is_disabled(self._settings.disable, attributes):
                await self._modify(
                    dn, enable_changes(self._settings.disable, attributes), spec.user
                )

    async def grant(self, user: str, role: str) -> None:
        group = self._group_dn(role)
        entry = await self._find(user, self._member_key_attributes())
        if entry is None:
            raise PermanentTargetError(
                f"ldap target {self.name!r} has no principal {user!r}"
                f" ({user_filter(self._settings.user_filter, user)} under"
                f" {self._settings.users_base})"
            )
        change = [Change("add", self._member_attr, (self._member_value(*entry),))]
        what = f"grant {role!r} to {user!r} (add to {group})"
        try:
            async with self._pool.connection(what) as conn:
                await conn.modify(group, change)
        except PermanentTargetError as exc:
            cause = exc.__cause__
            # Active Directory answers ENTRY_EXISTS where RFC 4511 says TYPE_OR_VALUE_EXISTS.
            if isinstance(cause, ldap_errors.TypeOrValueExists | ldap_errors.AlreadyExists):
                return
            if isinstance(cause, ldap_errors.NoSuchObjectError):
                raise PermanentTargetError(
                    f"ldap target {self.name!r} has no group {group!r} for role {role!r};"
                    " create it there first"
                ) from cause
            raise

    async def revoke(self, user: str, role: str) -> None:
        group = self._group_dn(role)
        entry = await self._find(user, self._member_key_attributes())
        if entry is None:
            return
        value = self._member_value(*entry)
        what = f"revoke {role!r} from {user!r} (delete from {group})"
        change = [Change("delete", self._member_attr, (value,))]
        try:
            async with self._pool.connection(what) as conn:
                await conn.modify(group, change)
        except PermanentTargetError as exc:
            cause = exc.__cause__
            if isinstance(cause, ldap_errors.NoSuchAttribute | ldap_errors.NoSuchObjectError):
                return
            if isinstance(cause, ldap_errors.ObjectClassViolation):
                raise PermanentTargetError(
                    f"{what}: the group would have no {self._member_attr} left, which its object"
                    " class forbids; give it a placeholder member jmlsync does not manage"
                ) from cause
            # Active Directory refuses to delete a value it does not hold with
            # UNWILLING_TO_PERFORM: gone is gone.
            if isinstance(cause, ldap_errors.UnwillingToPerform) and role not in (
                await self.grants_of(user)
            ):
                return
            raise

    async def disable_principal(self, user: str) -> None:
        if self._settings.disable == "none":
            return
        async with self._lock(user):
            entry = await self._find(user, self._disable_attributes())
            if entry is None:
                return
            dn, attributes = entry
            if not is_disabled(self._settings.disable, attributes):
                await self._modify(dn, disable_changes(self._settings.disable, attributes), user)

    def _lock(self, user: str) -> asyncio.Lock:
        lock = self._locks.get(user)
        if lock is None:
            lock = self._locks[user] = asyncio.Lock()
        return lock

    async def _find(self, user: str, attributes: Sequence[str]) -> tuple[str, Attributes] | None:
        """The entry of ``user`` (DN, the attributes asked for), or None; several is an error."""
        filter_ = user_filter(self._settings.user_filter, user)
        async with self._pool.connection(f"find {user!r}") as conn:
            found = await self._searched(conn, self._settings.users_base, filter_, attributes)
        if len(found) > 1:
            dns = ", ".join(dn for dn, _ in found[:3])
            raise PermanentTargetError(
                f"ldap target {self.name!r}: {filter_} finds {len(found)} entries under"
                f" {self._settings.users_base} ({dns}); make user_filter unique"
            )
        return found[0] if found else None

    async def _create(self, spec: PrincipalSpec) -> tuple[str, Attributes]:
        if not self._settings.provision_users:
            raise PermanentTargetError(
                f"ldap target {self.name!r} has no principal {spec.user!r}"
                f" ({user_filter(self._settings.user_filter, spec.user)} under"
                f" {self._settings.users_base}) and provision_users is off"
            )
        template = self._settings.user_template
        attributes = new_entry(template, spec)
        rdn = attributes[template.rdn_attribute][0]
        dn = f"{template.rdn_attribute}={escape_rdn_value(rdn)},{self._settings.users_base}"
        try:
            async with self._pool.connection(f"create {dn}") as conn:
                await conn.add(dn, attributes)
        except PermanentTargetError as exc:
            if not isinstance(exc.__cause__, ldap_errors.AlreadyExists):
                raise
        # Read back: created now or by a concurrent ensure, it must be what user_filter finds.
        found = await self._find(spec.user, self._disable_attributes())
        if found is None:
            raise PermanentTargetError(
                f"ldap target {self.name!r}: {dn} exists but"
                f" {user_filter(self._settings.user_filter, spec.user)} does not find it;"
                " make user_template and user_filter agree"
            )
        return found

    async def _modify(self, dn: str, changes: Sequence[Change], user: str) -> None:
        async with self._pool.connection(f"update {user!r} ({dn})") as conn:
            await conn.modify(dn, changes)

    async def _users(self, attributes: Sequence[str]) -> AsyncIterator[tuple[str, Attributes]]:
        filter_ = f"(&{self._settings.users_filter}({self._name_attr}=*))"
        async with self._pool.connection("list users") as conn:
            pages = conn.paged_search(
                self._settings.users_base,
                SUBTREE,
                filter_,
                list(attributes),
                self._settings.page_size,
            )
            async for page in self._on_base(conn, pages, self._settings.users_base):
                for entry in page:
                    yield entry

    async def _searched(
        self, conn: Session, base: str, filter_: str, attributes: Sequence[str]
    ) -> list[tuple[str, Attributes]]:
        try:
            found = await conn.search(base, SUBTREE, filter_, attributes)
        except ldap_errors.NoSuchObjectError as exc:
            raise self._missing_base(base) from exc
        if not found:
            await self._check_base(conn, base)
        return found

    async def _on_base(
        self, conn: Session, pages: AsyncIterator[list[tuple[str, Attributes]]], base: str
    ) -> AsyncIterator[list[tuple[str, Attributes]]]:
        empty = True
        try:
            async for page in pages:
                empty = empty and not page
                yield page
        except ldap_errors.NoSuchObjectError as exc:
            raise self._missing_base(base) from exc
        if empty:
            await self._check_base(conn, base)

    async def _check_base(self, conn: Session, base: str) -> None:
        """Raise unless ``base`` exists and is readable. bonsai answers a search under a
        missing base with no entries rather than NO_SUCH_OBJECT, and a wrong users_base would
        otherwise make every user missing: revokes and disables would succeed doing nothing.
        A base seen once is trusted for the life of the target."""
        if base in self._bases_seen:
            return
        await self._read_base(conn, base)
        self._bases_seen.add(base)

    async def _read_base(self, conn: Session, base: str) -> None:
        """One base-scope read of ``base``; raise unless it exists and is readable."""
        try:
            found = await conn.search(base, BASE, "(objectClass=*)", ["1.1"])
        except ldap_errors.NoSuchObjectError as exc:
            raise self._missing_base(base) from exc
        if not found:
            raise self._missing_base(base)

    def _missing_base(self, base: str) -> PermanentTargetError:
        return PermanentTargetError(
            f"ldap target {self.name!r}: no entry {base!r}, or the bind DN cannot read it"
            " (a configured base)"
        )

    def _principal(self, user: str, attributes: Attributes) -> Principal:
        if self._settings.disable == "none":
            return Principal(user=user, enabled=True, can_disable=False)
        return Principal(user=user, enabled=not is_disabled(self._settings.disable, attributes))

    def _disable_attributes(self) -> list[str]:
        return DISABLE_ATTRIBUTES[self._settings.disable]

    def _member_key_attributes(self) -> list[str]:
        names = [self._name_attr]
        if self._member_attr == "memberUid":
            names.append(self._settings.member_uid_attribute)
        return names

    def _member_value(self, dn: str, attributes: Attributes) -> str:
        """The value that stands for this user in a group's membership attribute."""
        if self._member_attr != "memberUid":
            return dn
        value = _first(attributes, self._settings.member_uid_attribute)
        if value is None:
            raise PermanentTargetError(
                f"ldap target {self.name!r}: {dn} has no {self._settings.member_uid_attribute}"
                " for memberUid"
            )
        return value

    def _member_key(self, dn: str, attributes: Attributes) -> str | None:
        if self._member_attr != "memberUid":
            return dn_key(dn)
        value = _first(attributes, self._settings.member_uid_attribute)
        return None if value is None else value.casefold()

    def _value_key(self, value: str) -> str:
        if self._member_attr == "uniqueMember":
            # RFC 4517 nameAndOptionalUID: a "#'...'B" suffix may follow the DN.
            value = value.split("#'", 1)[0]
        return value.casefold() if self._member_attr == "memberUid" else dn_key(value)

    def _group_dn(self, role: str) -> str:
        """The DN of the role's group; a role that names a DN outside groups_base is refused."""
        if "=" not in role:
            return f"cn={escape_rdn_value(role)},{self._settings.groups_base}"
        key = dn_key(role)
        if not key.endswith("," + self._groups_key):
            raise PermanentTargetError(
                f"ldap target {self.name!r}: role {role!r} is not under groups_base"
                f" {self._settings.groups_base!r}"
            )
        return role

    def _role_of(self, dn: str) -> str:
        """The role a group stands for: its cn when it sits right under groups_base, else its
        DN."""
        split = parent_and_rdn(dn)
        if split is not None and split[0] == self._groups_key and split[1][0].lower() == "cn":
            return split[1][1]
        return dn


def _first(attributes: Attributes, name: str) -> str | None:
    values = attributes.get(name.lower())
    return values[0] if values else None
