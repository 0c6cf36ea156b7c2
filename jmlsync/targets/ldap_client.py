"""Plumbing of the LDAP connector: a small pool of bonsai connections, the one error translator,
RFC 4515 filter values, DNs, and the few operations the connector sends.

bonsai speaks asyncio natively over libldap. Its own pool connects while holding its lock and
hands broken connections out again, so this one is kept here: connections are opened lazily,
at most ``size`` at once, and a connection that failed in transit (server down, timeout, a
cancelled operation whose answer is still on the wire) is closed and never reused; the next
call opens a fresh one, under the engine's retry policy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import bonsai
from bonsai import errors as ldap_errors

from jmlsync.domain.errors import (
    ConfigError,
    PermanentTargetError,
    TargetError,
    TransientTargetError,
)

#: Result codes (RFC 4511 §4.1.9) that mean "try again later".
BUSY = 51
UNAVAILABLE = 52

ModOp = Literal["add", "delete", "replace"]
_MOD_OPS = {
    "add": bonsai.LDAPModOp.ADD,
    "delete": bonsai.LDAPModOp.DELETE,
    "replace": bonsai.LDAPModOp.REPLACE,
}

#: A search result entry, as plain values: attribute name (lower-cased) -> its values.
Attributes = dict[str, list[str]]


@dataclass(frozen=True)
class Change:
    """One modification of one attribute; ``delete`` without values removes the attribute."""

    op: ModOp
    attribute: str
    values: tuple[str, ...] = ()


def escape_filter_value(value: str) -> str:
    """``value`` as an assertion value of an LDAP filter (RFC 4515 §3): ``*``, ``(``, ``)``,
    ``\\`` and NUL as ``\\XX``, so a userName cannot widen or end the filter."""
    # bonsai's escape_filter_exp writes NUL as "\0", which RFC 4515 does not allow.
    return "".join(f"\\{ord(c):02x}" if c in "\\*()\0" else c for c in value)


def user_filter(template: str, user: str) -> str:
    """The filter finding ``user``: ``{userName}`` and ``{local}`` (before the last ``@``)
    replaced by their escaped values."""
    local = user.rpartition("@")[0] or user
    return template.replace("{userName}", escape_filter_value(user)).replace(
        "{local}", escape_filter_value(local)
    )


def escape_rdn_value(value: str) -> str:
    """``value`` as the value of an RDN (RFC 4514 §2.4)."""
    if not value:
        raise PermanentTargetError("an RDN value cannot be empty")
    return bonsai.escape_attribute_value(value)


def dn_key(dn: str) -> str:
    """A comparable form of a DN: attribute types and values case-folded, spaces around the
    separators dropped (member values rarely keep the spelling of the entry's own DN)."""
    try:
        rdns = bonsai.LDAPDN(dn).rdns
    except (ldap_errors.InvalidDN, TypeError, ValueError):
        return dn.casefold()
    return ",".join(
        "+".join(f"{name.strip().casefold()}={value.strip().casefold()}" for name, value in rdn)
        for rdn in rdns
    )


def parent_and_rdn(dn: str) -> tuple[str, tuple[str, str]] | None:
    """(the parent's dn_key, the first RDN's (type, unescaped value)), or None when ``dn`` has
    no single-valued first RDN."""
    try:
        parsed = bonsai.LDAPDN(dn)
    except (ldap_errors.InvalidDN, TypeError, ValueError):
        return None
    rdns = parsed.rdns
    if not rdns or len(rdns[0]) != 1:
        return None
    parent = str(parsed[1:]) if len(rdns) > 1 else ""
    name, value = rdns[0][0]
    return dn_key(parent), (name, value)


def translate(error: BaseException, what: str) -> TargetError:
    """The target error for a failure of an LDAP call; ``what`` names the call and its DN."""
    if isinstance(error, TargetError):
        return error
    if isinstance(
        error,
        ldap_errors.ConnectionError
        | ldap_errors.TimeoutError
        | ldap_errors.ClosedConnection
        | ldap_errors.ProtocolError
        | TimeoutError
        | OSError,
    ):
        return TransientTargetError(f"{what}: server unreachable or too slow: {_text(error)}")
    if isinstance(error, ldap_errors.LDAPError) and error.code in (BUSY, UNAVAILABLE):
        return TransientTargetError(f"{what}: {_text(error)}")
    if isinstance(error, ldap_errors.AuthenticationError):
        return PermanentTargetError(f"{what}: bind refused (check bind_dn and the password file)")
    if isinstance(error, ldap_errors.InsufficientAccess):
        return PermanentTargetError(f"{what}: insufficient access for the bind DN")
    return PermanentTargetError(f"{what}: {_text(error)}")


def _text(error: BaseException) -> str:
    return str(error) or type(error).__name__


class LdapPool:
    """At most ``size`` bound connections of one client, opened when first needed."""

    def __init__(
        self,
        client: bonsai.LDAPClient,
        *,
        size: int,
        connect_timeout: float,
        timeout: float,
        label: str,
    ) -> None:
        self._client = client
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Any] = []
        self._connect_timeout = connect_timeout
        self.timeout = timeout
        self._label = label
        self._closed = False

    @asynccontextmanager
    async def connection(self, what: str) -> AsyncIterator[Session]:
        """A bound connection for one or more calls; any failure inside is translated, and a
        failure of the transport (or a cancellation) discards the connection."""
        async with self._slots:
            if self._closed:
                raise PermanentTargetError(f"{self._label}: {what}: the target is closed")
            conn = self._idle.pop() if self._idle else None
            try:
                if conn is None:
                    conn = await self._connect(what)
                yield Session(conn, self.timeout)
            except BaseException as exc:
                if conn is not None and not _keeps_connection(exc):
                    _discard(conn)
                    conn = None
                if isinstance(exc, Exception):
                    raise translate(exc, f"{self._label}: {what}") from exc
                raise
            finally:
                if conn is not None:
                    self._idle.append(conn)

    async def _connect(self, what: str) -> Any:
        try:
            async with asyncio.timeout(self._connect_timeout):
                return await self._client.connect(is_async=True, timeout=self._connect_timeout)
        except Exception as exc:
            raise translate(exc, f"{self._label}: connect for {what}") from exc

    async def close(self) -> None:
        """Close every idle connection; connections in use are closed as they come back."""
        self._closed = True
        while self._idle:
            _discard(self._idle.pop())


def _keeps_connection(error: BaseException) -> bool:
    """Whether the connection is still sound after ``error``: an LDAP answer (a refusal) is;
    a transport failure, a timeout or a cancellation (its answer still due) is not."""
    if isinstance(error, TargetError):
        return not isinstance(error, TransientTargetError)
    return isinstance(error, ldap_errors.LDAPError) and not isinstance(
        translate(error, ""), TransientTargetError
    )


def _discard(conn: Any) -> None:
    """Close a connection, first taking its socket off the event loop: bonsai leaves a
    cancelled operation's reader registered, and it would fire on a cancelled future."""
    with contextlib.suppress(Exception):
        fileno = conn.fileno()
        if fileno > -1:
            loop = asyncio.get_running_loop()
            loop.remove_reader(fileno)
            loop.remove_writer(fileno)
    with contextlib.suppress(Exception):
        conn.close()


def plain(entry: Any) -> Attributes:
    """A bonsai entry's attributes as lower-cased names and text values."""
    found: Attributes = {}
    for name, values in entry.items(exclude_dn=True):
        found[str(name).lower()] = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values
        ]
    return found


class Session:
    """One pooled connection with the operation timeout every request of it is bounded by."""

    def __init__(self, conn: Any, limit: float) -> None:
        self.conn = conn
        self._limit = limit

    async def search(
        self, base: str, scope: int, filter_: str, attributes: Sequence[str]
    ) -> list[tuple[str, Attributes]]:
        """Every entry found, as (DN, attributes)."""
        async with asyncio.timeout(self._limit):
            found = await self.conn.search(base, scope, filter_, attrlist=list(attributes))
        return [(str(entry.dn), plain(entry)) for entry in found]

    async def paged_search(
        self, base: str, scope: int, filter_: str, attributes: Sequence[str], page_size: int
    ) -> AsyncIterator[list[tuple[str, Attributes]]]:
        """The entries found, one page (RFC 2696 simple paged results) at a time, each page's
        request bounded by the timeout."""
        async with asyncio.timeout(self._limit):
            page = await self.conn.paged_search(
                base, scope, filter_, attrlist=list(attributes), page_size=page_size
            )
        while True:
            yield [(str(entry.dn), plain(entry)) for entry in page]
            message = page.acquire_next_page()
            if message is None:
                return
            async with asyncio.timeout(self._limit):
                page = await self.conn.get_result(message)

    async def modify(self, dn: str, changes: Sequence[Change]) -> None:
        """Apply ``changes`` to the entry ``dn`` in one modify request."""
        entry = bonsai.LDAPEntry(dn, self.conn)
        for change in changes:
            # bonsai annotates each value as a tuple; they are plain values.
            values: list[Any] = list(change.values)
            entry.change_attribute(change.attribute, _MOD_OPS[change.op], *values)
        async with asyncio.timeout(self._limit):
            await entry.modify()

    async def add(self, dn: str, attributes: Mapping[str, Sequence[str]]) -> None:
        """Add the entry ``dn`` with ``attributes``."""
        entry = bonsai.LDAPEntry(dn)
        for name, values in attributes.items():
            entry[name] = list(values)
        async with asyncio.timeout(self._limit):
            await self.conn.add(entry)


def read_password(name: str, path: Path) -> str:
    """The bind password: the file's first line, without its line ending."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"target {name!r}: cannot read bind_password_file {str(path)!r}: {exc.strerror}"
        ) from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise ConfigError(f"target {name!r}: bind_password_file {str(path)!r} is empty")
    return password
