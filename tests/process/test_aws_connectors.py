"""What the AWS connectors promise beyond the Target contract: role syntax, IAM names, leavers,
error classification and the following of Identity Center's asynchronous requests.

The connectors run against moto on loopback (tests/moto_server.py); only the status polling is
driven by a stub sequence, named ``_fake``, since moto answers SUCCEEDED at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError, TargetError, TransientTargetError
from jmlsync.targets import aws_iam, aws_identity_center
from jmlsync.targets.aws_common import (
    TRANSIENT_CODES,
    follow_request,
    gather_limited,
    translated,
)
from jmlsync.targets.aws_iam import IamTarget, iam_user_name, tag_value, user_from_tag
from jmlsync.targets.aws_identity_center import IdentityCenterTarget
from jmlsync.targets.registry import open_target
from tests.moto_server import (  # noqa: F401 (fixtures)
    ACCOUNT,
    Moto,
    aws_env,
    iam_settings,
    identity_center_settings,
    moto_fixture,
    moto_server,
)

ROLE = f"{ACCOUNT}/admin"
POLICY = """{"Version": "2012-10-17",
  "Statement": [{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}]}"""


# Role syntax


@pytest.mark.parametrize(
    "role",
    ["admin", "12345/admin", f"{ACCOUNT}/", f"{ACCOUNT}/bad name", f"{ACCOUNT}/a/b", "x" * 12],
)
def test_identity_center_refuses_malformed_roles(role: str) -> None:
    with pytest.raises(PermanentTargetError, match="ACCOUNT_ID/PERMISSION_SET_NAME"):
        aws_identity_center.parse_role(role)


def test_identity_center_role_names_account_and_permission_set() -> None:
    assert aws_identity_center.parse_role(ROLE) == (ACCOUNT, "admin")


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("developers", ("group", "developers")),
        ("a+b=c,d.e@f-g_h", ("group", "a+b=c,d.e@f-g_h")),
        (
            "policy:arn:aws:iam::aws:policy/ReadOnlyAccess",
            ("policy", "arn:aws:iam::aws:policy/ReadOnlyAccess"),
        ),
        (
            f"policy:arn:aws:iam::{ACCOUNT}:policy/team/Deploy",
            ("policy", f"arn:aws:iam::{ACCOUNT}:policy/team/Deploy"),
        ),
    ],
)
def test_iam_roles_are_groups_or_policies(role: str, expected: tuple[str, str]) -> None:
    assert aws_iam.parse_role(role) == expected


@pytest.mark.parametrize(
    "role", ["", "two words", "g/h", "x" * 129, "policy:ReadOnlyAccess", "policy:arn:aws:s3:::b"]
)
def test_iam_refuses_malformed_roles(role: str) -> None:
    with pytest.raises(PermanentTargetError, match="role"):
        aws_iam.parse_role(role)


# IAM user names

IAM_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{1,64}")


def _digest(user: str) -> str:
    return hashlib.sha256(user.encode()).hexdigest()[:8]


@pytest.mark.parametrize("user", ["ada", "ada@example.org", "a_b+c=d,e.f@g-h", "x" * 64])
def test_valid_iam_names_are_kept(user: str) -> None:
    assert iam_user_name(user) == user


def test_unsafe_characters_become_dashes_and_a_digest() -> None:
    user = "Zoë O'Neil/ops"
    assert iam_user_name(user) == f"Zo--O-Neil-ops-{_digest(user)}"


def test_long_names_are_cut_and_digested() -> None:
    user = "x" * 65
    assert iam_user_name(user) == "x" * 55 + "-" + _digest(user)


def test_mapped_names_never_collide_and_are_valid() -> None:
    users = ["o'neil", "o-neil", "o neil", "o/neil", "o\u2019neil", "O'Neil"]
    users += [f"{'p' * 60}{i}" for i in range(20)] + [f"{'q' * 55}-{_digest('x')}", "x" * 65]
    names = [iam_user_name(user) for user in users]
    assert len(set(names)) == len(users)
    assert all(IAM_NAME.fullmatch(name) for name in names)
    assert names == [iam_user_name(user) for user in users]  # deterministic


@pytest.mark.parametrize(
    "user", ["ada@example.org", "Zoë O'Neil", "b64:not-encoded", "日本語", "a#b!c", "x" * 190]
)
def test_tag_values_round_trip_within_iam_rules(user: str) -> None:
    value = tag_value(user)
    assert re.fullmatch(r"[\w .:/=+@-]{0,256}", value)
    assert user_from_tag(value) == user


def test_a_user_name_too_long_for_a_tag_is_refused() -> None:
    with pytest.raises(PermanentTargetError, match="too long"):
        tag_value("é" * 200)


# Error classification


def _client_error(code: str, status: int, headers: Mapping[str, str] | None = None) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": "said AWS"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": dict(headers or {})},
    }
    return ClientError(response, "SomeOperation")


def _translate(error: BaseException, transient_codes: frozenset[str] = frozenset()) -> TargetError:
    with pytest.raises(TargetError) as raised, translated("op", transient_codes):
        raise error
    assert raised.value.__cause__ is error
    return raised.value


@pytest.mark.parametrize("code", sorted(TRANSIENT_CODES))
def test_throttling_and_aws_failures_are_transient(code: str) -> None:
    translated_error = _translate(_client_error(code, 400))
    assert isinstance(translated_error, TransientTargetError)
    assert translated_error.retry_after is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_429_and_5xx_are_transient_whatever_the_code(status: int) -> None:
    assert isinstance(_translate(_client_error(str(status), status)), TransientTargetError)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDenied", 403),
        ("AccessDeniedException", 400),
        ("ValidationException", 400),
        ("ResourceNotFoundException", 400),
        ("NoSuchEntity", 404),
        ("ConflictException", 400),
        ("LimitExceeded", 409),
    ],
)
def test_other_errors_are_permanent(code: str, status: int) -> None:
    error = _translate(_client_error(code, status))
    assert isinstance(error, PermanentTargetError)
    assert code in str(error)
    assert "said AWS" in str(error)


def test_a_service_can_name_more_transient_codes() -> None:
    error = _translate(_client_error("ConflictException", 400), frozenset({"ConflictException"}))
    assert isinstance(error, TransientTargetError)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_in_seconds(headers: dict[str, str], expected: float | None) -> None:
    error = _translate(_client_error("ThrottlingException", 400, headers))
    assert isinstance(error, TransientTargetError)
    assert error.retry_after == expected


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="https://sso.example"),
        ConnectTimeoutError(endpoint_url="https://sso.example"),
        ReadTimeoutError(endpoint_url="https://sso.example"),
        ConnectionClosedError(endpoint_url="https://sso.example"),
        aiohttp.ClientConnectionError("reset by peer"),
        TimeoutError(),
    ],
    ids=type,
)
def test_connection_failures_are_transient(error: BaseException) -> None:
    assert isinstance(_translate(error), TransientTargetError)


@pytest.mark.parametrize(
    "error", [ParamValidationError(report="bad parameter"), NoCredentialsError()], ids=type
)
def test_client_side_errors_are_permanent(error: BaseException) -> None:
    assert isinstance(_translate(error), PermanentTargetError)


# Following Identity Center's asynchronous requests


class _StatusesFake:
    """Answers a describe call with each status of a script in turn (the last one forever),
    on a clock that only the waits move."""

    def __init__(self, *statuses: Mapping[str, Any]) -> None:
        self.statuses = list(statuses)
        self.describes = 0
        self.waits: list[float] = []
        self.now = 0.0

    async def describe(self) -> Mapping[str, Any]:
        self.describes += 1
        return self.statuses[min(self.describes, len(self.statuses) - 1)]

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now

    async def follow(self) -> None:
        await follow_request(
            self.describe, self.statuses[0], what="grant", sleep=self.sleep, clock=self.clock
        )


IN_PROGRESS = {"Status": "IN_PROGRESS", "RequestId": "r-1"}


async def test_an_immediate_success_is_not_polled() -> None:
    fake = _StatusesFake({"Status": "SUCCEEDED"})
    await fake.follow()
    assert fake.describes == 0


async def test_in_progress_is_polled_with_doubling_waits_until_success() -> None:
    fake = _StatusesFake(IN_PROGRESS, IN_PROGRESS, IN_PROGRESS, {"Status": "SUCCEEDED"})
    await fake.follow()
    assert fake.waits == [0.2, 0.4, 0.8]


async def test_a_failed_request_is_permanent_with_its_reason() -> None:
    failed = {"Status": "FAILED", "FailureReason": "Permission set is not provisioned"}
    fake = _StatusesFake(IN_PROGRESS, IN_PROGRESS, failed)
    with pytest.raises(PermanentTargetError, match="Permission set is not provisioned"):
        await fake.follow()
    assert fake.describes == 2


async def test_a_request_in_progress_too_long_is_transient() -> None:
    fake = _StatusesFake(IN_PROGRESS)
    with pytest.raises(TransientTargetError, match="still IN_PROGRESS"):
        await fake.follow()
    assert fake.waits[:6] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert set(fake.waits[4:]) == {2.0}
    assert 60.0 <= fake.now < 62.0


@pytest.mark.parametrize("settle", [False, True])
async def test_gather_limited_cancels_the_others_unless_asked_to_settle(settle: bool) -> None:
    """A failure cancels the calls still running; with ``settle`` they finish first (what a
    cache learns from them is kept for the retry), and the permanent error is the one raised."""
    finished: list[int] = []
    failed = asyncio.Event()

    async def slow(number: int) -> int:
        await failed.wait()
        await asyncio.sleep(0)
        finished.append(number)
        return number

    async def fails(error: TargetError) -> int:
        failed.set()
        raise error

    calls: list[Callable[[], Awaitable[int]]] = [
        partial(slow, 1),
        partial(fails, TransientTargetError("throttled")),
        partial(slow, 2),
        partial(fails, PermanentTargetError("refused")),
    ]
    with pytest.raises(PermanentTargetError, match="refused"):
        await gather_limited(calls, 4, settle=settle)
    assert sorted(finished) == ([1, 2] if settle else [])
    assert await gather_limited([partial(slow, 3)], 1, settle=settle) == [3]


# Identity Center on moto


@pytest.fixture
def permission_sets(moto: Moto) -> dict[str, str]:
    return moto.permission_sets(["admin", "reader"])


@pytest.fixture
async def identity_center(
    moto: Moto, permission_sets: dict[str, str]
) -> AsyncIterator[IdentityCenterTarget]:
    target = await IdentityCenterTarget.open("ic", identity_center_settings(moto.url))
    yield target
    await target.close()


async def _open_identity_center(moto: Moto, **overrides: Any) -> IdentityCenterTarget:
    return await IdentityCenterTarget.open("ic", identity_center_settings(moto.url, **overrides))


async def test_an_unknown_permission_set_is_permanent_and_named(
    identity_center: IdentityCenterTarget,
) -> None:
    await identity_center.ensure_principal(PrincipalSpec("ada"))
    with pytest.raises(PermanentTargetError, match="no permission set named 'Deployer'"):
        await identity_center.grant("ada", f"{ACCOUNT}/Deployer")
    # Nobody can hold it, so there is nothing to revoke.
    await identity_center.revoke("ada", f"{ACCOUNT}/Deployer")


@pytest.mark.parametrize("role", ["admin", "123/admin", f"{ACCOUNT}/no such name"])
async def test_a_malformed_role_is_permanent_on_every_write(
    identity_center: IdentityCenterTarget, role: str
) -> None:
    await identity_center.ensure_principal(PrincipalSpec("ada"))
    for write in (identity_center.grant, identity_center.revoke):
        with pytest.raises(PermanentTargetError, match=re.escape(repr(role))):
            await write("ada", role)


async def test_granting_twice_creates_one_assignment(
    identity_center: IdentityCenterTarget, moto: Moto, permission_sets: dict[str, str]
) -> None:
    await identity_center.ensure_principal(PrincipalSpec("ada"))
    await asyncio.gather(*(identity_center.grant("ada", ROLE) for _ in range(5)))
    await identity_center.grant("ada", ROLE)
    # moto records every CreateAccountAssignment, duplicates included.
    assert len(moto.assignments(permission_sets.values())) == 1
    await identity_center.revoke("ada", ROLE)
    await identity_center.revoke("ada", ROLE)
    assert moto.assignments(permission_sets.values()) == []


async def test_assignments_on_other_accounts_and_through_groups(
    identity_center: IdentityCenterTarget, moto: Moto, permission_sets: dict[str, str]
) -> None:
    await identity_center.ensure_principal(PrincipalSpec("ada"))
    await identity_center.grant("ada", "111111111111/reader")
    instance, store = moto.instance()
    group = moto.client("identitystore").create_group(IdentityStoreId=store, DisplayName="ops")
    moto.client("sso-admin").create_account_assignment(
        InstanceArn=instance,
        TargetId=ACCOUNT,
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=permission_sets["admin"],
        PrincipalType="GROUP",
        PrincipalId=group["GroupId"],
    )
    assert await identity_center.grants_of("ada") == {"111111111111/reader"}
    # The group's assignment is not a user's grant.
    assert [grant async for grant in identity_center.list_grants()] == []


async def test_users_are_created_with_the_names_the_store_requires(
    identity_center: IdentityCenterTarget, moto: Moto
) -> None:
    await identity_center.ensure_principal(PrincipalSpec("ada@example.org"))
    await identity_center.ensure_principal(
        PrincipalSpec("bob", given_name="Bob", family_name="Builder", email="bob@example.org")
    )
    _, store = moto.instance()
    client = moto.client("identitystore")
    users = {}
    for user_id in moto.identity_store_users():
        user = client.describe_user(IdentityStoreId=store, UserId=user_id)
        users[user["UserName"]] = user
    assert users["ada@example.org"]["DisplayName"] == "ada@example.org"
    assert users["ada@example.org"]["Name"] == {"GivenName": "ada", "FamilyName": "ada"}
    assert users["bob"]["DisplayName"] == "Bob Builder"
    assert users["bob"]["Emails"][0]["Value"] == "bob@example.org"


async def test_identity_center_without_provisioning_only_finds_users(moto: Moto) -> None:
    target = await _open_identity_center(moto, provision_users=False)
    try:
        with pytest.raises(PermanentTargetError, match="not found"):
            await target.ensure_principal(PrincipalSpec("ada"))
        _, store = moto.instance()
        moto.client("identitystore").create_user(
            IdentityStoreId=store,
            UserName="ada",
            DisplayName="Ada",
            Name={"GivenName": "Ada", "FamilyName": "L"},
        )
        await target.ensure_principal(PrincipalSpec("ada"))
        assert await target.principal("ada") == Principal("ada", enabled=True, can_disable=False)
    finally:
        await target.close()


async def test_identity_center_cannot_disable_so_leaves_the_user(
    identity_center: IdentityCenterTarget, moto: Moto
) -> None:
    await identity_center.ensure_principal(PrincipalSpec("ada"))
    await identity_center.disable_principal("ada")
    assert list(moto.identity_store_users().values()) == ["ada"]
    found = await identity_center.principal("ada")
    assert found == Principal("ada", enabled=True, can_disable=False)
    assert not found.disableable


async def test_identity_center_deletes_leavers_when_configured(
    moto: Moto, permission_sets: dict[str, str]
) -> None:
    target = await _open_identity_center(moto, delete_users_on_leave=True)
    try:
        await target.ensure_principal(PrincipalSpec("ada"))
        assert await target.principal("ada") == Principal("ada", enabled=True, can_disable=True)
        await target.grant("ada", ROLE)
        await target.revoke("ada", ROLE)
        await target.disable_principal("ada")
        assert moto.identity_store_users() == {}
        assert await target.principal("ada") is None
        await target.disable_principal("ada")
    finally:
        await target.close()


async def test_identity_center_needs_exactly_one_instance(moto: Moto) -> None:
    target = await _open_identity_center(moto, instance_arn="arn:aws:sso:::instance/ssoins-none")
    try:
        with pytest.raises(PermanentTargetError, match="exactly one Identity Center instance"):
            await target.principal("ada")
    finally:
        await target.close()


async def test_identity_center_uses_the_configured_instance(
    moto: Moto, permission_sets: dict[str, str]
) -> None:
    instance, store = moto.instance()
    target = await _open_identity_center(moto, instance_arn=instance, identity_store_id=store)
    try:
        await target.ensure_principal(PrincipalSpec("ada"))
        await target.grant("ada", ROLE)
        assert [g async for g in target.list_grants()] == [Grant("ic", "ada", ROLE)]
    finally:
        await target.close()


# IAM on moto


@pytest.fixture
async def iam(moto: Moto) -> AsyncIterator[IamTarget]:
    moto.iam_groups(["developers", "admins"])
    target = await IamTarget.open("iam", iam_settings(moto.url, user_path="/jmlsync/"))
    yield target
    await target.close()


def _tags(moto: Moto, name: str) -> dict[str, str]:
    tags = moto.client("iam").list_user_tags(UserName=name)["Tags"]
    return {tag["Key"]: tag["Value"] for tag in tags}


async def test_iam_names_round_trip_through_the_tag(iam: IamTarget, moto: Moto) -> None:
    user = "Zoë O'Neil"
    await iam.ensure_principal(PrincipalSpec(user))
    await iam.grant(user, "developers")
    name = iam_user_name(user)
    created = moto.client("iam").get_user(UserName=name)["User"]
    assert created["Path"] == "/jmlsync/"
    assert user_from_tag(_tags(moto, name)["jmlsync:userName"]) == user
    assert [p async for p in iam.list_principals()] == [Principal(user)]
    assert [g async for g in iam.list_grants()] == [Grant("iam", user, "developers")]
    assert await iam.grants_of(user) == {"developers"}


async def test_iam_lists_only_its_path_and_adopts_untagged_users(
    iam: IamTarget, moto: Moto
) -> None:
    client = moto.client("iam")
    client.create_user(UserName="elsewhere", Path="/humans/")
    client.create_user(UserName="ada", Path="/jmlsync/")
    assert [p async for p in iam.list_principals()] == [Principal("ada")]
    await iam.ensure_principal(PrincipalSpec("ada"))
    assert _tags(moto, "ada") == {"jmlsync:userName": "ada"}


async def test_an_iam_user_of_another_user_name_is_refused(iam: IamTarget, moto: Moto) -> None:
    moto.client("iam").create_user(
        UserName="ada", Path="/jmlsync/", Tags=[{"Key": "jmlsync:userName", "Value": "Ada"}]
    )
    for read in (iam.principal, iam.grants_of):
        with pytest.raises(PermanentTargetError, match="belongs to userName 'Ada'"):
            await read("ada")
    assert [p async for p in iam.list_principals()] == [Principal("Ada")]


async def test_iam_policies_attach_to_the_user(iam: IamTarget, moto: Moto) -> None:
    arn = moto.client("iam").create_policy(
        PolicyName="Deploy",
        PolicyDocument=POLICY,
    )["Policy"]["Arn"]
    role = f"policy:{arn}"
    await iam.ensure_principal(PrincipalSpec("ada"))
    await iam.grant("ada", role)
    await iam.grant("ada", role)
    await iam.grant("ada", "admins")
    assert await iam.grants_of("ada") == {role, "admins"}
    attached = moto.client("iam").list_attached_user_policies(UserName="ada")
    assert [p["PolicyArn"] for p in attached["AttachedPolicies"]] == [arn]
    await iam.revoke("ada", role)
    await iam.revoke("ada", role)
    assert await iam.grants_of("ada") == {"admins"}


async def test_iam_refuses_an_unknown_group_and_missing_users(iam: IamTarget) -> None:
    await iam.ensure_principal(PrincipalSpec("ada"))
    with pytest.raises(PermanentTargetError, match="NoSuchEntity"):
        await iam.grant("ada", "no-such-group")
    with pytest.raises(PermanentTargetError, match="no IAM user"):
        await iam.grant("nobody", "admins")


async def test_iam_without_provisioning_only_finds_users(moto: Moto) -> None:
    target = await IamTarget.open("iam", iam_settings(moto.url, provision_users=False))
    try:
        with pytest.raises(PermanentTargetError, match="provision_users is off"):
            await target.ensure_principal(PrincipalSpec("ada"))
    finally:
        await target.close()


def _self_signed_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ada")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(Encoding.PEM).decode()


def _give_credentials(moto: Moto, name: str) -> None:
    client = moto.client("iam")
    client.create_login_profile(UserName=name, Password="correct-horse-battery-staple")
    for _ in range(2):
        client.create_access_key(UserName=name)
    client.upload_ssh_public_key(UserName=name, SSHPublicKeyBody="ssh-ed25519 AAAAC3Nz ada")
    client.upload_signing_certificate(UserName=name, CertificateBody=_self_signed_pem())


def _statuses(moto: Moto, name: str) -> set[str]:
    client = moto.client("iam")
    keys = client.list_access_keys(UserName=name)["AccessKeyMetadata"]
    ssh = client.list_ssh_public_keys(UserName=name)["SSHPublicKeys"]
    certificates = client.list_signing_certificates(UserName=name)["Certificates"]
    return {item["Status"] for item in [*keys, *ssh, *certificates]}


async def test_iam_leavers_lose_every_credential(iam: IamTarget, moto: Moto) -> None:
    await iam.ensure_principal(PrincipalSpec("ada"))
    await iam.grant("ada", "developers")
    _give_credentials(moto, "ada")
    assert _statuses(moto, "ada") == {"Active"}
    await iam.disable_principal("ada")
    await iam.disable_principal("ada")
    client = moto.client("iam")
    with pytest.raises(client.exceptions.NoSuchEntityException):
        client.get_login_profile(UserName="ada")
    assert _statuses(moto, "ada") == {"Inactive"}
    assert _tags(moto, "ada")["jmlsync:disabled"] == "true"
    assert await iam.principal("ada") == Principal("ada", enabled=False)
    assert await iam.grants_of("ada") == {"developers"}
    # Re-enabling lifts the mark and nothing else: the owner needs new credentials.
    await iam.ensure_principal(PrincipalSpec("ada"))
    assert await iam.principal("ada") == Principal("ada", enabled=True)
    assert "jmlsync:disabled" not in _tags(moto, "ada")
    assert _statuses(moto, "ada") == {"Inactive"}


async def test_iam_deletes_leavers_when_configured(moto: Moto) -> None:
    client = moto.client("iam")
    client.create_group(GroupName="developers")
    arn = client.create_policy(PolicyName="Deploy", PolicyDocument=POLICY)["Policy"]["Arn"]
    target = await IamTarget.open("iam", iam_settings(moto.url, delete_users_on_leave=True))
    try:
        await target.ensure_principal(PrincipalSpec("ada"))
        await target.grant("ada", "developers")
        await target.grant("ada", f"policy:{arn}")
        _give_credentials(moto, "ada")
        client.put_user_policy(
            UserName="ada",
            PolicyName="inline",
            PolicyDocument=POLICY,
        )
        serial = client.create_virtual_mfa_device(VirtualMFADeviceName="ada")["VirtualMFADevice"][
            "SerialNumber"
        ]
        client.enable_mfa_device(
            UserName="ada",
            SerialNumber=serial,
            AuthenticationCode1="123456",
            AuthenticationCode2="654321",
        )
        await target.disable_principal("ada")
        assert await target.principal("ada") is None
        assert client.list_users()["Users"] == []
        assert client.get_group(GroupName="developers")["Users"] == []
        assert client.list_virtual_mfa_devices()["VirtualMFADevices"] == []
        await target.disable_principal("ada")
    finally:
        await target.close()


async def test_the_registry_opens_both_aws_kinds(moto: Moto) -> None:
    for settings, kind in (
        (identity_center_settings(moto.url), IdentityCenterTarget),
        (iam_settings(moto.url), IamTarget),
    ):
        target = await open_target("aws", settings)
        try:
            assert isinstance(target, kind)
            assert target.name == "aws"
            assert await target.principal("nobody") is None
        finally:
            await target.close()
