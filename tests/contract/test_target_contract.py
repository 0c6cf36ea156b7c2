"""The Target contract, run against every target kind, plus what only the ledger promises.

A new connector joins the suite with one entry in ``FACTORIES``: a coroutine that opens the
target whose state lives under a test's directory (or on a server a fixture started), so that
opening it twice reaches the same state; and one in ``CAPABILITIES``: what the connector, as
the factory configures it, can do. The expected values come from that table, never from what
the target under test reports about itself, so a connector that stops disabling and claims it
cannot fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError, TargetError
from jmlsync.ports import Target
from jmlsync.targets.ledger import LedgerTarget, LedgerTargetSettings
from jmlsync.targets.registry import open_target
from tests.alibaba_fake import alibaba_env, alibaba_fixture, alibaba_server  # noqa: F401
from tests.alibaba_targets import open_cloudsso_target, open_ram_target
from tests.moto_server import (  # noqa: F401 (fixtures the AWS factories ask for)
    aws_env,
    iam_contract,
    identity_center_contract,
    moto_fixture,
    moto_server,
    open_iam_target,
    open_identity_center_target,
)
from tests.scim_server import (  # noqa: F401 (fixtures the scim factory asks for)
    ScimPeer,
    open_scim_target,
    scim_contract_peer,
    scim_peer,
    scim_server,
    scim_settings,
)
from tests.slapd_server import (  # noqa: F401 (fixtures the ldap factory asks for)
    ldap_contract_tree,
    ldap_tree,
    open_ldap_target,
    slapd,
)

#: Small, so a dozen grants already span several pages.
PAGE_SIZE = 3

Factory = Callable[[pytest.FixtureRequest, Path], Awaitable[Target]]
Opener = Callable[[], AbstractAsyncContextManager[Target]]


async def _ledger(request: pytest.FixtureRequest, state: Path) -> Target:
    return await LedgerTarget.open("contract", state / "ledger" / "ledger.db", page_size=PAGE_SIZE)


async def _scim(request: pytest.FixtureRequest, state: Path) -> Target:
    return await open_scim_target(request, state, page_size=PAGE_SIZE)


async def _aws_identity_center(request: pytest.FixtureRequest, state: Path) -> Target:
    return await open_identity_center_target(request, state, page_size=PAGE_SIZE)


async def _aws_iam(request: pytest.FixtureRequest, state: Path) -> Target:
    return await open_iam_target(request, state, page_size=PAGE_SIZE)


async def _alibaba_ram(request: pytest.FixtureRequest, state: Path) -> Target:
    return await open_ram_target(request, state, page_size=PAGE_SIZE)


async def _alibaba_cloudsso(request: pytest.FixtureRequest, state: Path) -> Target:
    return await open_cloudsso_target(request, state, page_size=PAGE_SIZE)


async def _ldap(request: pytest.FixtureRequest, state: Path) -> Target:
    return await open_ldap_target(request, state, page_size=PAGE_SIZE)


FACTORIES: dict[str, Factory] = {
    "ledger": _ledger,
    "scim": _scim,
    "aws-identity-center": _aws_identity_center,
    "aws-iam": _aws_iam,
    "alibaba-ram": _alibaba_ram,
    "alibaba-cloudsso": _alibaba_cloudsso,
    "ldap": _ldap,
}


@dataclass(frozen=True)
class Capabilities:
    """What a connector can do, as its factory above configures it."""

    #: False where the target has no way to disable a principal short of deleting it:
    #: Identity Center without ``delete_users_on_leave``. Such a target keeps a disabled
    #: principal enabled, says ``can_disable=False`` on each, and the plans never ask it to
    #: disable.
    can_disable: bool = True
    #: Whether the target is a real child process the session starts (moto, slapd,
    #: scim2-server), not an in-process file or fake.
    process: bool = False


CAPABILITIES: dict[str, Capabilities] = {
    "ledger": Capabilities(),
    "scim": Capabilities(process=True),
    "aws-identity-center": Capabilities(can_disable=False, process=True),
    "aws-iam": Capabilities(process=True),
    "alibaba-ram": Capabilities(),
    "alibaba-cloudsso": Capabilities(),
    "ldap": Capabilities(process=True),
}


def test_every_factory_declares_its_capabilities() -> None:
    assert set(CAPABILITIES) == set(FACTORIES)


@pytest.fixture(
    params=[
        pytest.param(kind, marks=[pytest.mark.process] if CAPABILITIES[kind].process else [])
        for kind in sorted(FACTORIES)
    ]
)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the parametrised target on this test's state; each opening is closed on exit."""
    factory = FACTORIES[kind]

    @asynccontextmanager
    async def open_() -> AsyncIterator[Target]:
        target = await factory(request, tmp_path)
        try:
            yield target
        finally:
            await target.close()

    return open_


@pytest.fixture
async def target(opener: Opener) -> AsyncIterator[Target]:
    async with opener() as opened:
        yield opened


async def _with_principals(target: Target, *users: str) -> None:
    for user in users:
        await target.ensure_principal(PrincipalSpec(user=user))


async def _all_grants(target: Target) -> list[Grant]:
    return [grant async for grant in target.list_grants()]


async def _all_principals(target: Target) -> list[Principal]:
    return [principal async for principal in target.list_principals()]


def _as_reported(kind: str, user: str, enabled: bool) -> Principal:
    """``Principal(user, enabled)`` as a target of ``kind`` must report it, by its declared
    capabilities: one that cannot disable keeps a disabled principal enabled and says so."""
    if not CAPABILITIES[kind].can_disable:
        return Principal(user, enabled=True, can_disable=False)
    return Principal(user, enabled=enabled)


class TestPrincipals:
    async def test_ensure_creates_an_enabled_principal(self, kind: str, target: Target) -> None:
        await target.ensure_principal(
            PrincipalSpec(user="ada", display_name="Ada L", email="ada@example.org")
        )
        found = await target.principal("ada")
        assert found == _as_reported(kind, "ada", True)

    async def test_ensure_is_idempotent(self, kind: str, target: Target) -> None:
        await _with_principals(target, "ada", "ada")
        listed = await _all_principals(target)
        assert listed == [_as_reported(kind, "ada", True)]

    async def test_ensure_reenables_a_disabled_principal(self, kind: str, target: Target) -> None:
        await _with_principals(target, "ada")
        await target.disable_principal("ada")
        await _with_principals(target, "ada")
        found = await target.principal("ada")
        assert found == _as_reported(kind, "ada", True)

    async def test_disable_disables_and_is_idempotent(self, kind: str, target: Target) -> None:
        await _with_principals(target, "ada")
        await target.disable_principal("ada")
        found = await target.principal("ada")
        assert found == _as_reported(kind, "ada", False)
        await target.disable_principal("ada")
        found = await target.principal("ada")
        assert found == _as_reported(kind, "ada", False)

    async def test_disable_of_unknown_principal_succeeds(self, target: Target) -> None:
        await target.disable_principal("nobody")
        assert await target.principal("nobody") is None

    async def test_unknown_principal_is_none(self, target: Target) -> None:
        assert await target.principal("nobody") is None

    @pytest.mark.parametrize("count", [0, 1, PAGE_SIZE, 10])
    async def test_list_principals_streams_each_once(
        self, kind: str, target: Target, count: int
    ) -> None:
        users = [f"user-{i:02}" for i in range(count)]
        await _with_principals(target, *users)
        for user in users[::2]:
            await target.disable_principal(user)
        listed = sorted(await _all_principals(target), key=lambda p: p.user)
        expected = [_as_reported(kind, u, i % 2 == 1) for i, u in enumerate(users)]
        assert listed == expected


class TestGrants:
    async def test_grant_shows_in_grants_of_and_list_grants(self, target: Target) -> None:
        await _with_principals(target, "ada")
        await target.grant("ada", "admin")
        assert await target.grants_of("ada") == frozenset({"admin"})
        assert await _all_grants(target) == [Grant(target.name, "ada", "admin")]

    async def test_granting_twice_holds_one_grant(self, target: Target) -> None:
        await _with_principals(target, "ada")
        await target.grant("ada", "admin")
        await target.grant("ada", "admin")
        assert await _all_grants(target) == [Grant(target.name, "ada", "admin")]

    async def test_revoke_removes_only_that_role(self, target: Target) -> None:
        await _with_principals(target, "ada")
        await target.grant("ada", "admin")
        await target.grant("ada", "reader")
        await target.revoke("ada", "admin")
        assert await target.grants_of("ada") == frozenset({"reader"})

    async def test_revoke_of_absent_grant_succeeds(self, target: Target) -> None:
        await _with_principals(target, "ada")
        await target.revoke("ada", "admin")
        assert await target.grants_of("ada") == frozenset()

    async def test_revoke_for_unknown_principal_succeeds(self, target: Target) -> None:
        await target.revoke("nobody", "admin")
        assert await target.principal("nobody") is None

    async def test_grants_of_unknown_user_is_empty(self, target: Target) -> None:
        assert await target.grants_of("nobody") == frozenset()

    async def test_grant_to_missing_principal_is_permanent(self, target: Target) -> None:
        with pytest.raises(PermanentTargetError):
            await target.grant("nobody", "admin")
        assert await _all_grants(target) == []

    async def test_grants_survive_disable(self, target: Target) -> None:
        await _with_principals(target, "ada")
        await target.grant("ada", "admin")
        await target.disable_principal("ada")
        assert await target.grants_of("ada") == frozenset({"admin"})

    @pytest.mark.parametrize("count", [0, 1, PAGE_SIZE, 3 * PAGE_SIZE, 10])
    async def test_list_grants_streams_each_once(self, target: Target, count: int) -> None:
        # Four users holding several roles each, so pages break inside one user's roles.
        pairs = [(f"user-{i % 4}", f"role-{i:02}") for i in range(count)]
        await _with_principals(target, *sorted({user for user, _ in pairs}))
        for user, role in pairs:
            await target.grant(user, role)
        listed = await _all_grants(target)
        assert len(listed) == len(set(listed)) == count
        assert set(listed) == {Grant(target.name, user, role) for user, role in pairs}

    async def test_concurrent_grants_all_land(self, target: Target) -> None:
        pairs = [(f"user-{i:02}", f"role-{i % 7}") for i in range(50)]
        await asyncio.gather(*(target.ensure_principal(PrincipalSpec(u)) for u, _ in pairs))
        await asyncio.gather(*(target.grant(user, role) for user, role in pairs))
        assert set(await _all_grants(target)) == {Grant(target.name, u, r) for u, r in pairs}

    async def test_grants_persist_across_reopening(self, kind: str, opener: Opener) -> None:
        async with opener() as first:
            await _with_principals(first, "ada", "bob")
            await first.grant("ada", "admin")
            await first.grant("bob", "reader")
            await first.disable_principal("bob")
            before = sorted(await _all_grants(first))
        async with opener() as second:
            assert sorted(await _all_grants(second)) == before
            found = await second.principal("bob")
            assert found == _as_reported(kind, "bob", False)


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port bound for the test and never listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _secret(state: Path, name: str) -> Path:
    path = state / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s" * 40 + "\n")
    path.chmod(0o600)
    return path


async def _ledger_gone(request: pytest.FixtureRequest, state: Path, port: int) -> Target:
    target = await _ledger(request, state)
    for path in (state / "ledger").iterdir():
        path.unlink()  # the file (and its WAL) removed under the open connections
    return target


async def _scim_down(request: pytest.FixtureRequest, state: Path, port: int) -> Target:
    from jmlsync.targets.scim import ScimTarget, ScimTargetSettings

    settings = ScimTargetSettings(
        kind="scim", url=f"http://127.0.0.1:{port}/v2", token_file=_secret(state, "token")
    )
    return await ScimTarget.open("contract", settings)


async def _identity_center_down(request: pytest.FixtureRequest, state: Path, port: int) -> Target:
    from jmlsync.targets.aws_identity_center import IdentityCenterTarget
    from tests.moto_server import identity_center_settings

    request.getfixturevalue("aws_env")
    settings = identity_center_settings(f"http://127.0.0.1:{port}")
    return await IdentityCenterTarget.open("contract", settings)


async def _iam_down(request: pytest.FixtureRequest, state: Path, port: int) -> Target:
    from jmlsync.targets.aws_iam import IamTarget
    from tests.moto_server import iam_settings

    request.getfixturevalue("aws_env")
    return await IamTarget.open("contract", iam_settings(f"http://127.0.0.1:{port}"))


async def _ram_down(request: pytest.FixtureRequest, state: Path, port: int) -> Target:
    from jmlsync.targets.alibaba_ram import RamTarget
    from jmlsync.targets.alibaba_settings import AlibabaRamTargetSettings

    request.getfixturevalue("alibaba_env")
    settings = AlibabaRamTargetSettings(
        kind="alibaba-ram", endpoint=f"127.0.0.1:{port}", protocol="http"
    )
    return await RamTarget.open("contract", settings)


async def _cloudsso_down(request: pytest.FixtureRequest, state: Path, port: int) -> Target:
    from jmlsync.targets.alibaba_cloudsso import CloudSsoTarget
    from jmlsync.targets.alibaba_settings import AlibabaCloudSsoTargetSettings

    request.getfixturevalue("alibaba_env")
    settings = AlibabaCloudSsoTargetSettings(
        kind="alibaba-cloudsso", endpoint=f"127.0.0.1:{port}", protocol="http"
    )
    return await CloudSsoTarget.open("contract", settings)


async def _ldap_down(request: pytest.FixtureRequest, state: Path, port: int) -> Target:
    pytest.importorskip("bonsai")
    from jmlsync.targets.ldap import LdapTarget
    from jmlsync.targets.ldap_settings import LdapTargetSettings

    settings = LdapTargetSettings.model_validate(
        {
            "kind": "ldap",
            "url": f"ldap://127.0.0.1:{port}",
            "bind_dn": "cn=jmlsync,dc=example,dc=org",
            "bind_password_file": _secret(state, "password"),
            "users_base": "ou=people,dc=example,dc=org",
            "groups_base": "ou=groups,dc=example,dc=org",
            "user_filter": "(uid={userName})",
            "start_tls": False,
        }
    )
    return await LdapTarget.open("contract", settings)


#: Each kind opened where it cannot be reached: on a loopback port nothing listens on, or (the
#: ledger) with its file removed.
UNREACHABLE: dict[str, Callable[[pytest.FixtureRequest, Path, int], Awaitable[Target]]] = {
    "ledger": _ledger_gone,
    "scim": _scim_down,
    "aws-identity-center": _identity_center_down,
    "aws-iam": _iam_down,
    "alibaba-ram": _ram_down,
    "alibaba-cloudsso": _cloudsso_down,
    "ldap": _ldap_down,
}


def test_every_factory_has_an_unreachable_twin() -> None:
    assert set(UNREACHABLE) == set(FACTORIES)


class TestPing:
    async def test_ping_passes_on_a_reachable_target_and_changes_nothing(
        self, target: Target
    ) -> None:
        await _with_principals(target, "ada")
        await target.grant("ada", "admin")
        await target.ping()
        await target.ping()
        assert await _all_grants(target) == [Grant("contract", "ada", "admin")]

    async def test_ping_passes_on_an_empty_target(self, target: Target) -> None:
        await target.ping()

    @pytest.mark.parametrize("unreachable", sorted(UNREACHABLE))
    @pytest.mark.timeout(30)
    async def test_ping_raises_on_an_unreachable_target(
        self, unreachable: str, request: pytest.FixtureRequest, tmp_path: Path
    ) -> None:
        with _closed_port() as port:
            target = await UNREACHABLE[unreachable](request, tmp_path, port)
            try:
                with pytest.raises(TargetError):
                    await target.ping()
            finally:
                await target.close()


@pytest.mark.process
async def test_scim_ping_raises_when_the_token_is_refused(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from jmlsync.targets.scim import ScimTarget

    peer: ScimPeer = request.getfixturevalue("scim_contract_peer")
    refused = replace(peer, token="not-" + peer.token)
    target = await ScimTarget.open("contract", scim_settings(refused, tmp_path))
    try:
        with pytest.raises(PermanentTargetError, match="401"):
            await target.ping()
    finally:
        await target.close()


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerTarget]:
    opened = await LedgerTarget.open("ledger", tmp_path / "ledger.db", page_size=PAGE_SIZE)
    yield opened
    await opened.close()


class TestLedger:
    async def test_each_change_is_logged_once(self, ledger: LedgerTarget) -> None:
        await _with_principals(ledger, "ada")
        await ledger.grant("ada", "admin")
        await ledger.revoke("ada", "admin")
        await ledger.disable_principal("ada")
        await _with_principals(ledger, "ada")
        assert await ledger.writes() == [
            ("create_principal", "ada", None),
            ("grant", "ada", "admin"),
            ("revoke", "ada", "admin"),
            ("disable_principal", "ada", None),
            ("enable_principal", "ada", None),
        ]

    async def test_idempotent_writes_append_nothing(self, ledger: LedgerTarget) -> None:
        await _with_principals(ledger, "ada", "ada")
        await ledger.grant("ada", "admin")
        await ledger.grant("ada", "admin")
        await ledger.revoke("ada", "reader")
        await ledger.revoke("nobody", "admin")
        await ledger.disable_principal("nobody")
        await ledger.disable_principal("ada")
        await ledger.disable_principal("ada")
        assert await ledger.write_count() == 3
        assert await ledger.write_count("grant") == 1
        assert await ledger.write_count("revoke") == 0

    async def test_concurrent_identical_grants_write_once(self, ledger: LedgerTarget) -> None:
        await _with_principals(ledger, "ada")
        await asyncio.gather(*(ledger.grant("ada", "admin") for _ in range(20)))
        assert await ledger.write_count("grant") == 1

    async def test_refused_grant_writes_nothing(self, ledger: LedgerTarget) -> None:
        with pytest.raises(PermanentTargetError):
            await ledger.grant("nobody", "admin")
        assert await ledger.writes() == []

    async def test_timestamps_are_utc_iso(self, ledger: LedgerTarget, tmp_path: Path) -> None:
        await _with_principals(ledger, "ada")
        await ledger.grant("ada", "admin")
        async with aiosqlite.connect(tmp_path / "ledger.db") as conn:
            rows = await conn.execute_fetchall(
                "SELECT at FROM writes UNION ALL SELECT granted_at FROM grants"
                " UNION ALL SELECT created_at FROM principals"
            )
        stamps = [datetime.fromisoformat(row[0]) for row in rows]
        assert len(stamps) == 4
        assert all(stamp.utcoffset() == UTC.utcoffset(None) for stamp in stamps)

    async def test_cancelled_writes_leave_the_ledger_usable(self, ledger: LedgerTarget) -> None:
        await _with_principals(ledger, "ada")
        # Cancel grants ever later, so some stop before BEGIN, some inside it and some after
        # COMMIT: each lands whole or not at all, and the next write still finds no transaction.
        for step in range(0, 100, 4):
            task = asyncio.create_task(ledger.grant("ada", f"role-{step:03}"))
            for _ in range(step):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await ledger.grant("ada", "after")
        roles = await ledger.grants_of("ada")
        assert "after" in roles
        assert await ledger.write_count("grant") == len(roles)


async def test_registry_opens_a_ledger(tmp_path: Path) -> None:
    settings = LedgerTargetSettings(kind="ledger", path=tmp_path / "new" / "dir" / "ledger.db")
    target = await open_target("books", settings)
    try:
        assert isinstance(target, LedgerTarget)
        assert target.name == "books"
        assert settings.path.exists()
    finally:
        await target.close()


@pytest.mark.process
async def test_identity_center_reads_a_user_in_one_lookup(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """``read_user`` is ``grants_of`` and ``principal`` together, with one id lookup: a user
    the Identity Store does not hold costs one call."""
    from jmlsync.ports import UserReadTarget
    from tests.moto_server import open_identity_center_target

    wrapped = await open_identity_center_target(request, tmp_path, page_size=PAGE_SIZE)
    try:
        await _with_principals(wrapped, "ada", "bob")
        await wrapped.grant("ada", "admin")
        inner = wrapped.inner  # type: ignore[attr-defined]
        assert isinstance(inner, UserReadTarget)
        for user in ("ada", "bob", "nobody"):
            assert await inner.read_user(user) == (
                await inner.grants_of(user),
                await inner.principal(user),
            )
        calls = _count_aws_calls(inner._clients)
        assert await inner.read_user("nobody") == (frozenset(), None)
        assert calls == ["get_user_id"]
    finally:
        await wrapped.close()


def _count_aws_calls(clients: Any, fail: set[str] | None = None) -> list[str]:
    """The operations ``clients`` (an AwsClients) is asked for from now on, in order (a
    listing once, however many pages); an operation in ``fail`` raises TransientTargetError
    once instead of being sent."""
    from jmlsync.domain.errors import TransientTargetError

    calls: list[str] = []
    for method in ("call", "call_or_none"):
        original = getattr(clients, method)

        async def counted(
            service: str, operation: str, _original: Any = original, **kwargs: Any
        ) -> Any:
            calls.append(operation)
            if fail and operation in fail:
                fail.discard(operation)
                raise TransientTargetError(f"{operation}: made to fail")
            return await _original(service, operation, **kwargs)

        setattr(clients, method, counted)
    listing = clients.items

    def listed(service: str, operation: str, key: str, **params: Any) -> Any:
        calls.append(operation)
        return listing(service, operation, key, **params)

    clients.items = listed
    return calls


@pytest.mark.process
async def test_identity_center_writes_reuse_the_jobs_read(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Within one job (JOB_READS set) a revocation or grant planned from ``read_user`` is the
    one write call, a write that fails forgets the read (its retry looks again), and outside
    a job every write looks for itself."""
    from jmlsync.domain.errors import TransientTargetError
    from jmlsync.ports import JOB_READS
    from tests.moto_server import ACCOUNT, open_identity_center_target

    wrapped = await open_identity_center_target(request, tmp_path, page_size=PAGE_SIZE)
    admin, viewer = f"{ACCOUNT}/admin", f"{ACCOUNT}/viewer"
    try:
        await _with_principals(wrapped, "ada")
        await wrapped.grant("ada", "admin")
        await wrapped.grant("ada", "viewer")  # makes the permission set, then revoked below
        await wrapped.revoke("ada", "viewer")
        inner = wrapped.inner  # type: ignore[attr-defined]
        fail: set[str] = set()
        calls = _count_aws_calls(inner._clients, fail)

        async def job() -> None:
            JOB_READS.set({})
            assert (await inner.read_user("ada"))[0] == {admin}
            assert calls == ["get_user_id", "list_account_assignments_for_principal"]
            calls.clear()
            await inner.revoke("ada", admin)
            await inner.revoke("ada", admin)  # the job knows it is gone now: no call
            await inner.grant("ada", viewer)  # not held when read: created straight away
            assert calls == ["delete_account_assignment", "create_account_assignment"]
            calls.clear()
            fail.add("delete_account_assignment")
            with pytest.raises(TransientTargetError):
                await inner.revoke("ada", viewer)
            await inner.revoke("ada", viewer)  # the retry looks again
            assert calls == [
                "delete_account_assignment",
                "get_user_id",
                "list_account_assignments_for_principal",
                "delete_account_assignment",
            ]

        await asyncio.create_task(job())
        assert JOB_READS.get() is None  # the job's task kept its reads to itself
        assert await wrapped.grants_of("ada") == frozenset()
        calls.clear()
        await wrapped.grant("ada", "admin")
        assert calls[0] == "get_user_id"  # outside a job: looked up afresh
        assert await wrapped.grants_of("ada") == {"admin"}
    finally:
        await wrapped.close()
