"""The LDAP connector under faults: a loopback TCP proxy in front of slapd reads the LDAP
messages going by, drops connections before some requests reach slapd, and loses the answer
to some writes after slapd applied them. Driven by the Applier and its retry policy, the
connector still converges on exactly the state asked for, each membership value stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from jmlsync.clock import now_utc
from jmlsync.domain.access import Grant, Operation, PrincipalSpec
from jmlsync.domain.errors import TransientTargetError
from jmlsync.engine.apply import Applier
from jmlsync.engine.retry import RetryPolicy
from jmlsync.store.directory import SqlStore
from jmlsync.targets.ldap import LdapTarget
from tests.slapd_server import LdapTree, ldap_settings, ldap_tree, slapd  # noqa: F401

pytestmark = pytest.mark.timeout(60)

#: Every DROP_EVERY-th request never reaches slapd (its connection is closed instead); the
#: answer to every LOSE_EVERY-th write is lost after slapd applied it.
DROP_EVERY = 5
LOSE_EVERY = 3
BIND, UNBIND = 0x60, 0x42
WRITES = {0x66: "modify", 0x68: "add", 0x4A: "delete"}
USERS = [f"user-{i:02}" for i in range(16)]
ROLES = ("admin", "reader", "ops")


async def _message(reader: asyncio.StreamReader) -> bytes:
    """One BER-encoded LDAPMessage (a SEQUENCE), whole."""
    head = await reader.readexactly(2)
    length = head[1]
    extra = b""
    if length & 0x80:
        extra = await reader.readexactly(length & 0x7F)
        length = int.from_bytes(extra, "big")
    return head + extra + await reader.readexactly(length)


def _operation(message: bytes) -> int:
    """The protocolOp tag of an LDAPMessage: what comes after the messageID."""
    start = 2 + (message[1] & 0x7F if message[1] & 0x80 else 0)
    assert message[start] == 0x02, "messageID is an INTEGER"
    return message[start + 2 + message[start + 1]]


class LdapFaultProxy:
    """Counts requests and injects the faults; ``faults`` and ``writes`` tell what happened."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests = 0
        self.faults: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()
        #: While set, answers to everything but binds are swallowed: a server gone quiet.
        self.silent = False
        self.inject = True
        self.connections = 0

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:  # noqa: C901 - one proxy loop
        self.connections += 1
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        losing = asyncio.Event()
        last = [BIND]

        async def answers() -> None:
            while data := await server_r.read(65536):
                if losing.is_set():
                    self.faults["answer-lost"] += 1
                    return
                if self.silent and last[0] != BIND:
                    self.faults["silenced"] += 1
                    continue
                client_w.write(data)
                await client_w.drain()

        pump = asyncio.create_task(answers())
        try:
            while not pump.done():
                message = await _message(client_r)
                operation = last[0] = _operation(message)
                if self.inject and operation not in (BIND, UNBIND):
                    self.requests += 1
                    if self.requests % DROP_EVERY == 0:
                        self.faults["dropped"] += 1
                        return
                if operation in WRITES:
                    self.writes[WRITES[operation]] += 1
                    if self.writes.total() % LOSE_EVERY == 0:
                        losing.set()
                server_w.write(message)
                await server_w.drain()
                if losing.is_set():
                    await pump
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
            for writer in (client_w, server_w):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


@asynccontextmanager
async def fault_proxy(upstream_port: int) -> AsyncIterator[tuple[str, LdapFaultProxy]]:
    """An LdapFaultProxy on loopback in front of slapd: its URL and itself."""
    proxy = LdapFaultProxy(upstream_port)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ldap://127.0.0.1:{port}", proxy
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def store(sql_store: SqlStore) -> SqlStore:
    return sql_store


async def test_grants_and_revokes_converge_through_faults(
    ldap_tree: LdapTree,  # noqa: F811
    store: SqlStore,
    tmp_path: Path,
) -> None:
    ldap_tree.add_groups(ROLES)
    roles = {user: ROLES[i % len(ROLES)] for i, user in enumerate(USERS)}
    async with fault_proxy(ldap_tree.slapd.port) as (url, proxy):
        target = await LdapTarget.open("dir", ldap_settings(ldap_tree, tmp_path, url=url))
        try:
            applier = Applier(
                store,
                None,
                {"dir": target},
                clock=now_utc,
                # Faults land by request count, so with four lanes one operation can meet
                # several in a row: enough attempts that only a real bug exhausts them.
                retry=RetryPolicy(attempts=30, initial_wait=0, max_wait=0),
            )
            specs = {user: PrincipalSpec(user) for user in USERS}
            grants = [Operation("grant", "dir", u, r, "test") for u, r in roles.items()]
            outcomes = await applier.apply(grants, actor="test", specs=specs, parallel=4)
            revoked = USERS[::2]
            revokes = [Operation("revoke", "dir", u, roles[u], "test") for u in revoked]
            leavers = [Operation("disable", "dir", u, None, "test") for u in revoked]
            outcomes += await applier.apply(revokes + leavers, actor="test", parallel=4)
        finally:
            await target.close()
    assert [o for o in outcomes if not o.ok] == []
    kept = {user: role for user, role in roles.items() if user not in revoked}
    assert await store.applied_grants() == {Grant("dir", u, r) for u, r in kept.items()}
    # Straight from slapd: every value once, exactly the memberships kept, one entry a user.
    for role in ROLES:
        values = ldap_tree.members(role)
        assert len(values) == len(set(values))
        users = [v for v in values if v.startswith("uid=")]  # not the placeholder
        held = sorted(v.split(",")[0].removeprefix("uid=") for v in users)
        assert held == sorted(u for u, r in kept.items() if r == role)
    entries = ldap_tree.slapd.search(ldap_tree.users_base, "(uid=*)", "pwdAccountLockedTime")
    assert len(entries) == len(USERS)
    locked = sorted(e["dn"][0].split(",")[0][4:] for e in entries if "pwdaccountlockedtime" in e)
    assert locked == sorted(revoked)
    assert proxy.faults["dropped"] == proxy.requests // DROP_EVERY > 5
    assert proxy.faults["answer-lost"] >= 5
    # A lost answer to an add is followed by a search that finds the entry, never a second
    # add; a lost answer to a modify is followed by the same modify, which slapd refuses as
    # TYPE_OR_VALUE_EXISTS or NO_SUCH_ATTRIBUTE, both success.
    assert proxy.writes["add"] == len(USERS)
    assert proxy.writes["modify"] > len(USERS) + 2 * len(revoked)


async def test_a_server_gone_quiet_times_out_and_its_connection_is_replaced(
    ldap_tree: LdapTree,  # noqa: F811
    tmp_path: Path,
) -> None:
    ldap_tree.add_user("ada")
    async with fault_proxy(ldap_tree.slapd.port) as (url, proxy):
        proxy.inject = False
        settings = ldap_settings(ldap_tree, tmp_path, url=url, timeout_seconds=0.3, pool_size=1)
        target = await LdapTarget.open("dir", settings)
        try:
            assert await target.principal("ada") is not None
            proxy.silent = True
            started = asyncio.get_running_loop().time()
            with pytest.raises(TransientTargetError, match="too slow"):
                await target.principal("ada")
            assert asyncio.get_running_loop().time() - started < 2
            proxy.silent = False
            # The connection whose answer never came is gone: a fresh one is opened and bound.
            assert await target.principal("ada") is not None
        finally:
            await target.close()
    assert proxy.faults["silenced"] >= 1
    assert proxy.connections == 2
