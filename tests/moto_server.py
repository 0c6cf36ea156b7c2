"""A real AWS peer for the AWS connectors: ``moto`` in server mode as a child process on loopback.

One server runs per test session; every test that asks for ``moto`` starts from an empty
server (``POST /moto-api/reset``). moto is lenient where AWS is not (it records duplicate
assignments, answers SUCCEEDED at once): the connectors never rely on that, and the tests read
moto's state to prove it. Import the fixtures into a test module to use them there.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.ports import Target
from jmlsync.targets.aws_iam import IamTarget
from jmlsync.targets.aws_identity_center import IdentityCenterTarget
from jmlsync.targets.aws_settings import AwsIamTargetSettings, AwsIdentityCenterTargetSettings
from tests.conftest import starts_process

REGION = "us-east-1"
#: moto's account. moto's ListAccountsForProvisionedPermissionSet only ever reports the
#: caller's account (and only once ProvisionPermissionSet ran), so assignments live there.
ACCOUNT = "123456789012"


class Moto:
    """The running moto server; blocking clients for set-up and reads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        """A boto3 client straight to moto (never through a test's proxy), made once: they
        outlive a reset, and making one costs as much as a dozen calls."""
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service,
                region_name=REGION,
                endpoint_url=self.url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return self._clients[service]

    def reset(self) -> None:
        """Empty every service."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def instance(self) -> tuple[str, str]:
        """(instance ARN, identity store id) of moto's one Identity Center instance."""
        (found,) = self.client("sso-admin").list_instances()["Instances"]
        return found["InstanceArn"], found["IdentityStoreId"]

    def permission_sets(self, names: Iterable[str]) -> dict[str, str]:
        """Create and provision a permission set per name on ACCOUNT; name -> ARN."""
        sso = self.client("sso-admin")
        instance, _ = self.instance()
        arns = {}
        for name in names:
            arn = sso.create_permission_set(InstanceArn=instance, Name=name)["PermissionSet"][
                "PermissionSetArn"
            ]
            sso.provision_permission_set(
                InstanceArn=instance, PermissionSetArn=arn, TargetType="AWS_ACCOUNT"
            )
            arns[name] = arn
        return arns

    def assignments(self, arns: Iterable[str]) -> list[tuple[str, str]]:
        """Every (permission set ARN, principal id) assigned on ACCOUNT, duplicates kept."""
        sso = self.client("sso-admin")
        instance, _ = self.instance()
        found = []
        for arn in arns:
            pages = sso.get_paginator("list_account_assignments").paginate(
                InstanceArn=instance, AccountId=ACCOUNT, PermissionSetArn=arn
            )
            for page in pages:
                found += [(arn, a["PrincipalId"]) for a in page["AccountAssignments"]]
        return found

    def identity_store_users(self) -> dict[str, str]:
        """Every Identity Store user: id -> userName."""
        _, store = self.instance()
        users = self.client("identitystore").list_users(IdentityStoreId=store)["Users"]
        return {user["UserId"]: user["UserName"] for user in users}

    def iam_groups(self, names: Iterable[str]) -> None:
        iam = self.client("iam")
        for name in names:
            iam.create_group(GroupName=name)


def _wait_for_url(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text("utf-8", "replace")
        found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", text)
        if found:
            return found.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"moto exited with status {process.returncode}: {text}")
        time.sleep(0.05)
    raise RuntimeError("moto did not start within 30 s")


@pytest.fixture(scope="session")
@starts_process
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """A moto server on loopback, for the whole session."""
    # stderr goes to a file, not a pipe: moto logs every request there, and a pipe nobody
    # drains would fill and stall the server.
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        yield Moto(_wait_for_url(process, log))
    finally:
        # Killed outright: it keeps nothing, and on SIGTERM it lingers for a second.
        process.kill()
        process.wait()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials in the environment, and no shared config or profile to find others."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(name="moto")
def moto_fixture(moto_server: Moto, aws_env: None) -> Moto:
    """``moto``: the session's moto server, emptied for this test."""
    moto_server.reset()
    return moto_server


class ContractRoles:
    """The roles of one contract test, made in moto when first granted: the suite grants bare
    names (``admin``), each an IAM group, or a permission set on ACCOUNT.

    Made on demand because most tests grant one or two of the suite's nineteen roles, and
    making them all took more time than the tests themselves.
    """

    def __init__(self, moto: Moto, make: Callable[[Moto, str], object]) -> None:
        self.moto = moto
        self._make = make
        self._made: set[str] = set()
        self._lock = asyncio.Lock()

    async def ready(self, role: str) -> None:
        async with self._lock:
            if role not in self._made:
                await asyncio.to_thread(self._make, self.moto, role)
                self._made.add(role)


@pytest.fixture
def identity_center_contract(moto: Moto) -> ContractRoles:
    return ContractRoles(moto, lambda moto, role: moto.permission_sets([role]))


@pytest.fixture
def iam_contract(moto: Moto) -> ContractRoles:
    return ContractRoles(moto, lambda moto, role: moto.iam_groups([role]))


def identity_center_settings(url: str, **overrides: Any) -> AwsIdentityCenterTargetSettings:
    values: dict[str, Any] = {"kind": "aws-identity-center", "region": REGION, "endpoint_url": url}
    return AwsIdentityCenterTargetSettings(**(values | overrides))


def iam_settings(url: str, **overrides: Any) -> AwsIamTargetSettings:
    values: dict[str, Any] = {"kind": "aws-iam", "region": REGION, "endpoint_url": url}
    return AwsIamTargetSettings(**(values | overrides))


class UnderContract:
    """An AWS connector under the contract suite, every call passed to it.

    A role is made in moto before its first grant (see ContractRoles). For Identity Center the
    suite's bare role names are qualified with ACCOUNT (``admin`` is ``123456789012/admin``)
    on the way in and stripped on the way out.
    """

    def __init__(self, inner: Target, roles: ContractRoles, prefix: str = "") -> None:
        self.inner = inner
        self.name = inner.name
        self._roles = roles
        self._prefix = prefix

    def _bare(self, role: str) -> str:
        return role.removeprefix(self._prefix)

    async def list_grants(self) -> AsyncIterator[Grant]:
        async for grant in self.inner.list_grants():
            yield grant._replace(role=self._bare(grant.role))

    def list_principals(self) -> AsyncIterator[Principal]:
        return self.inner.list_principals()

    async def grants_of(self, user: str) -> frozenset[str]:
        return frozenset(self._bare(role) for role in await self.inner.grants_of(user))

    async def principal(self, user: str) -> Principal | None:
        return await self.inner.principal(user)

    async def ensure_principal(self, spec: PrincipalSpec) -> None:
        await self.inner.ensure_principal(spec)

    async def grant(self, user: str, role: str) -> None:
        await self._roles.ready(role)
        await self.inner.grant(user, self._prefix + role)

    async def revoke(self, user: str, role: str) -> None:
        await self.inner.revoke(user, self._prefix + role)

    async def disable_principal(self, user: str) -> None:
        await self.inner.disable_principal(user)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


async def open_identity_center_target(
    request: pytest.FixtureRequest, state: Path, *, page_size: int
) -> Target:
    """The contract suite's factory: Identity Center on moto, a permission set per role."""
    roles: ContractRoles = request.getfixturevalue("identity_center_contract")
    settings = identity_center_settings(roles.moto.url)
    target = await IdentityCenterTarget.open("contract", settings, page_size=page_size)
    return UnderContract(target, roles, prefix=f"{ACCOUNT}/")


async def open_iam_target(request: pytest.FixtureRequest, state: Path, *, page_size: int) -> Target:
    """The contract suite's factory: IAM on moto, an IAM group per role."""
    roles: ContractRoles = request.getfixturevalue("iam_contract")
    target = await IamTarget.open("contract", iam_settings(roles.moto.url), page_size=page_size)
    return UnderContract(target, roles)
