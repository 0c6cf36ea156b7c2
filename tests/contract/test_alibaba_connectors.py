"""What the Alibaba Cloud connectors promise beyond the Target contract: role syntax, RAM names,
leavers, CloudSSO's tasks, the error translation table, and that the requests are signed as
Alibaba Cloud checks them.

The peer is the wire-contract fake of tests/alibaba_fake.py: no emulator of Alibaba Cloud exists.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import pytest
from alibabacloud_credentials.exceptions import CredentialException
from alibabacloud_credentials.utils import auth_util
from alibabacloud_tea_openapi.exceptions import (
    ClientException,
    ServerException,
    ThrottlingException,
)
from click.testing import CliRunner
from darabonba.exceptions import UnretryableException
from darabonba.policy.retry import RetryPolicyContext

from jmlsync.cli import main
from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError, TargetError, TransientTargetError
from jmlsync.targets import alibaba_cloudsso, alibaba_ram
from jmlsync.targets.alibaba_cloudsso import CloudSsoTarget
from jmlsync.targets.alibaba_common import translated
from jmlsync.targets.alibaba_ram import RamTarget, ram_user_name
from jmlsync.targets.registry import open_target
from tests.alibaba_fake import (  # noqa: F401 (fixtures)
    ACCOUNT,
    AlibabaFake,
    alibaba_env,
    alibaba_fixture,
    alibaba_server,
)
from tests.alibaba_targets import cloudsso_settings, ram_settings
from tests.conftest import write_config

ADA = "ada@example.org"

# Role syntax and names


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("group:developers", ("group", "developers", "")),
        ("group:a.b-c_d", ("group", "a.b-c_d", "")),
        ("policy:System/AliyunOSSReadOnlyAccess", ("policy", "AliyunOSSReadOnlyAccess", "System")),
        ("policy:Custom/team-read", ("policy", "team-read", "Custom")),
    ],
)
def test_ram_roles_name_groups_and_policies(role: str, expected: tuple[str, str, str]) -> None:
    assert alibaba_ram.parse_role(role) == expected


@pytest.mark.parametrize(
    "role",
    ["developers", "group:", "group:a b", "policy:Other/x", "policy:System/", "policy:x", "acs:x"],
)
def test_ram_refuses_malformed_roles(role: str) -> None:
    with pytest.raises(PermanentTargetError, match="'group:' and a RAM group name"):
        alibaba_ram.parse_role(role)


@pytest.mark.parametrize("role", ["admin", "x/admin", f"{ACCOUNT}/", f"{ACCOUNT}/a b", "1/a/b"])
def test_cloudsso_refuses_malformed_roles(role: str) -> None:
    with pytest.raises(PermanentTargetError, match="ACCOUNT_ID/ACCESS_CONFIGURATION_NAME"):
        alibaba_cloudsso.parse_role(role)


def test_cloudsso_role_names_account_and_access_configuration() -> None:
    assert alibaba_cloudsso.parse_role(f"{ACCOUNT}/Admin") == (ACCOUNT, "Admin")


def test_ram_user_names() -> None:
    assert ram_user_name("ada.l_x-1") == "ada.l_x-1"
    digest = hashlib.sha256(ADA.encode()).hexdigest()[:8]
    assert ram_user_name(ADA) == f"ada-example.org-{digest}"
    assert ram_user_name(ADA, "example.org") == "ada"
    assert ram_user_name("Ada@Example.ORG", "example.org") == "Ada"
    assert ram_user_name("ada@other.org", "example.org") == ram_user_name("ada@other.org")
    long = "x" * 70
    assert len(ram_user_name(long)) == 64
    assert ram_user_name(long) != ram_user_name("x" * 71)


# RAM against the fake


@pytest.fixture
async def ram(alibaba: AlibabaFake) -> RamTarget:
    alibaba.make_groups("developers", "ops")
    target = await RamTarget.open("ram", ram_settings(alibaba))
    await target.ensure_principal(PrincipalSpec(ADA, display_name="Ada L"))
    return target


async def test_a_ram_leaver_loses_console_and_keys(alibaba: AlibabaFake, ram: RamTarget) -> None:
    name = ram_user_name(ADA)
    alibaba.give_credentials(name, keys=2)
    await ram.grant(ADA, "group:developers")
    await ram.disable_principal(ADA)
    assert name not in alibaba.login_profiles
    assert [k["Status"] for k in alibaba.access_keys[name]] == ["Inactive", "Inactive"]
    assert alibaba.ram_users[name]["Comments"] == f"jmlsync:disabled:userName={ADA}"
    assert await ram.principal(ADA) == Principal(ADA, enabled=False)
    # Listings report the userName, not the RAM name.
    assert [p async for p in ram.list_principals()] == [Principal(ADA, enabled=False)]
    assert [g async for g in ram.list_grants()] == [Grant("ram", ADA, "group:developers")]
    writes = alibaba.writes.total()
    await ram.disable_principal(ADA)
    assert alibaba.writes.total() == writes, "a second disable changed something"
    await ram.ensure_principal(PrincipalSpec(ADA))
    assert await ram.principal(ADA) == Principal(ADA, enabled=True)
    # Re-enabling gives no credential back: keys stay inactive, the password is gone.
    assert [k["Status"] for k in alibaba.access_keys[name]] == ["Inactive", "Inactive"]


async def test_ram_policies_attach_and_detach(alibaba: AlibabaFake, ram: RamTarget) -> None:
    alibaba.make_custom_policy("team-read")
    await ram.grant(ADA, "policy:System/AliyunOSSReadOnlyAccess")
    await ram.grant(ADA, "policy:Custom/team-read")
    await ram.grant(ADA, "policy:Custom/team-read")
    name = ram_user_name(ADA)
    assert alibaba.ram_attached[name] == [
        ("System", "AliyunOSSReadOnlyAccess"),
        ("Custom", "team-read"),
    ]
    await ram.revoke(ADA, "policy:System/AliyunOSSReadOnlyAccess")
    assert await ram.grants_of(ADA) == frozenset({"policy:Custom/team-read"})
    assert alibaba.writes[("AttachPolicyToUser", _params(alibaba, "AttachPolicyToUser"))] == 1


def _params(alibaba: AlibabaFake, action: str) -> str:
    return next(params for written, params in alibaba.writes if written == action)


async def test_ram_unknown_group_or_policy_is_permanent(
    alibaba: AlibabaFake, ram: RamTarget
) -> None:
    with pytest.raises(PermanentTargetError, match=r"EntityNotExist\.Group"):
        await ram.grant(ADA, "group:nobody-made-it")
    with pytest.raises(PermanentTargetError, match=r"EntityNotExist\.Policy"):
        await ram.grant(ADA, "policy:Custom/missing")
    await ram.revoke(ADA, "group:nobody-made-it")  # nobody can hold it: done


async def test_a_malformed_role_is_refused_before_any_call(
    alibaba: AlibabaFake, ram: RamTarget
) -> None:
    before = alibaba.requests
    with pytest.raises(PermanentTargetError):
        await ram.grant(ADA, "developers")
    assert alibaba.requests == before


async def test_ram_user_of_another_username_is_refused(alibaba: AlibabaFake) -> None:
    target = await RamTarget.open("ram", ram_settings(alibaba, domain_alias="example.org"))
    await target.ensure_principal(PrincipalSpec("ada@example.org"))
    assert "ada" in alibaba.ram_users
    alibaba.ram_users["ada"]["Comments"] = "jmlsync:userName=ada@elsewhere.org"
    with pytest.raises(PermanentTargetError, match=r"belongs to userName 'ada@elsewhere\.org'"):
        await target.principal("ada@example.org")


async def test_ram_without_provisioning_creates_no_user(alibaba: AlibabaFake) -> None:
    target = await RamTarget.open("ram", ram_settings(alibaba, provision_users=False))
    with pytest.raises(PermanentTargetError, match="provision_users is off"):
        await target.ensure_principal(PrincipalSpec(ADA))
    assert alibaba.ram_users == {}


# CloudSSO against the fake


@pytest.fixture
async def cloudsso(alibaba: AlibabaFake) -> CloudSsoTarget:
    alibaba.make_configurations("Admin", "ReadOnly")
    target = await CloudSsoTarget.open("sso", cloudsso_settings(alibaba))
    await target.ensure_principal(PrincipalSpec(ADA, given_name="Ada", family_name="L"))
    return target


async def test_cloudsso_tasks_in_progress_are_followed(
    alibaba: AlibabaFake, cloudsso: CloudSsoTarget
) -> None:
    alibaba.task_polls = 2
    await cloudsso.grant(ADA, f"{ACCOUNT}/Admin")
    assert alibaba.held() == [(ADA, ACCOUNT, "Admin")]
    assert alibaba.actions["GetTaskStatus"] == 3
    await cloudsso.revoke(ADA, f"{ACCOUNT}/Admin")
    assert alibaba.held() == []
    assert alibaba.actions["GetTaskStatus"] == 6


async def test_a_failed_cloudsso_task_is_permanent(
    alibaba: AlibabaFake, cloudsso: CloudSsoTarget
) -> None:
    alibaba.fail_tasks = True
    with pytest.raises(PermanentTargetError, match="cannot be provisioned"):
        await cloudsso.grant(ADA, f"{ACCOUNT}/Admin")


async def test_cloudsso_unknown_access_configuration_is_permanent(
    alibaba: AlibabaFake, cloudsso: CloudSsoTarget
) -> None:
    with pytest.raises(PermanentTargetError, match="no access configuration named 'Nope'"):
        await cloudsso.grant(ADA, f"{ACCOUNT}/Nope")
    await cloudsso.revoke(ADA, f"{ACCOUNT}/Nope")


async def test_a_cloudsso_leaver_is_disabled(
    alibaba: AlibabaFake, cloudsso: CloudSsoTarget
) -> None:
    await cloudsso.grant(ADA, f"{ACCOUNT}/ReadOnly")
    await cloudsso.disable_principal(ADA)
    found = alibaba.sso_user(ADA)
    assert found is not None
    assert found["Status"] == "Disabled"
    assert found["FirstName"] == "Ada"
    assert found["LastName"] == "L"
    assert alibaba.actions["UpdateUserStatus"] == 1


async def test_a_username_cloudsso_refuses_is_permanent(
    alibaba: AlibabaFake, cloudsso: CloudSsoTarget
) -> None:
    with pytest.raises(PermanentTargetError, match=r"InvalidParameter\.UserName"):
        await cloudsso.ensure_principal(PrincipalSpec("bo+ops@example.org"))


async def test_cloudsso_wrong_directory_is_permanent(alibaba: AlibabaFake) -> None:
    settings = cloudsso_settings(alibaba, directory_id="d-doesnotexist")
    target = await CloudSsoTarget.open("sso", settings)
    with pytest.raises(PermanentTargetError, match=r"EntityNotExists\.Directory"):
        await target.principal(ADA)


# Signatures and credentials


async def test_a_wrong_secret_is_refused_by_the_signature_check(
    alibaba: AlibabaFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_util, "environment_access_key_secret", "not-the-secret")
    target = await RamTarget.open("ram", ram_settings(alibaba))
    with pytest.raises(PermanentTargetError, match="SignatureDoesNotMatch"):
        await target.principal(ADA)
    assert alibaba.rejected == {"SignatureDoesNotMatch": 1}


async def test_the_fake_refuses_unsigned_and_replayed_requests(alibaba: AlibabaFake) -> None:
    url = f"http://{alibaba.endpoint}/?UserName=ada"
    headers = {"x-acs-action": "GetUser", "x-acs-version": "2015-05-01"}
    async with aiohttp.ClientSession() as http, http.post(url, headers=headers) as reply:
        assert reply.status == 400
        assert (await reply.json())["Code"] == "IncompleteSignature"
    target = await RamTarget.open("ram", ram_settings(alibaba))
    assert await target.principal(ADA) is None
    assert alibaba.rejected == {"IncompleteSignature": 1}


async def test_missing_credentials_are_permanent(
    alibaba: AlibabaFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_util, "environment_access_key_id", None)
    monkeypatch.setattr(auth_util, "environment_access_key_secret", None)
    monkeypatch.setattr(auth_util, "environment_ecs_metadata_disabled", "true")
    monkeypatch.setattr(auth_util, "environment_cli_profile_disabled", "true")
    target = await RamTarget.open("ram", ram_settings(alibaba))
    with pytest.raises(PermanentTargetError, match="credentials"):
        await target.principal(ADA)
    assert alibaba.requests == 0


# The error translation table


def _unretryable(inner: Exception) -> UnretryableException:
    return UnretryableException(RetryPolicyContext(exception=inner))


@pytest.mark.parametrize(
    ("error", "expected", "retry_after"),
    [
        (
            ThrottlingException(code="Throttling.User", status_code=400, retry_after=1500),
            TransientTargetError,
            1.5,
        ),
        (ClientException(code="Throttling", status_code=400), TransientTargetError, None),
        (ClientException(code="Throttling.Api", status_code=400), TransientTargetError, None),
        (ServerException(code="ServiceUnavailable", status_code=503), TransientTargetError, None),
        (ServerException(code="InternalError", status_code=500), TransientTargetError, None),
        (ClientException(code="Whatever", status_code=429), TransientTargetError, None),
        (ClientException(code="NoPermission", status_code=403), PermanentTargetError, None),
        (ClientException(code="EntityNotExist.Group", status_code=404), PermanentTargetError, None),
        (ClientException(code="InvalidParameter", status_code=400), PermanentTargetError, None),
        (_unretryable(aiohttp.ServerDisconnectedError()), TransientTargetError, None),
        (_unretryable(TimeoutError()), TransientTargetError, None),
        (
            _unretryable(RuntimeError("Failed to parse the value as json")),
            TransientTargetError,
            None,
        ),
        (_unretryable(CredentialException("no chain")), PermanentTargetError, None),
    ],
)
def test_errors_are_translated(
    error: Exception, expected: type[TargetError], retry_after: float | None
) -> None:
    with pytest.raises(TargetError) as raised, translated("ram GetUser"):
        raise error
    assert type(raised.value) is expected
    assert str(raised.value).startswith("ram GetUser: ")
    if isinstance(raised.value, TransientTargetError):
        assert raised.value.retry_after == retry_after


def test_a_product_can_add_transient_codes() -> None:
    error = ClientException(code="OperationConflict.Task", status_code=409)
    with pytest.raises(TransientTargetError), translated("cloudsso", {"OperationConflict.Task"}):
        raise error


# Registration and configuration


async def test_the_registry_opens_both_kinds(alibaba: AlibabaFake) -> None:
    ram_target = await open_target("r", ram_settings(alibaba))
    sso_target = await open_target("s", cloudsso_settings(alibaba))
    try:
        assert isinstance(ram_target, RamTarget)
        assert isinstance(sso_target, CloudSsoTarget)
        assert await ram_target.principal(ADA) is None
        assert await sso_target.principal(ADA) is None
    finally:
        await ram_target.close()
        await sso_target.close()


def _check(tmp_path: Path, extra: str) -> tuple[int, str]:
    config = write_config(tmp_path, extra=extra)
    result = CliRunner().invoke(main, ["config", "check", "--config", str(config)])
    return result.exit_code, result.output


def test_config_check_accepts_alibaba_targets(tmp_path: Path) -> None:
    code, out = _check(
        tmp_path,
        f"""
[targets.ram]
kind = "alibaba-ram"
domain_alias = "example.org"

[targets.sso]
kind = "alibaba-cloudsso"
region = "ap-southeast-1"
directory_id = "d-00fc2p61"

[[rules]]
group = "engineering"
grants = [
  {{ target = "ram", role = "group:developers" }},
  {{ target = "ram", role = "policy:System/AliyunOSSReadOnlyAccess" }},
  {{ target = "sso", role = "{ACCOUNT}/Developer" }},
]
""",
    )
    assert code == 0, out
    assert "ram: kind alibaba-ram" in out
    assert "sso: kind alibaba-cloudsso" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[targets.ram]\nkind = "alibaba-ram"\nendpoint = "https://ram.aliyuncs.com"\n',
            "targets.ram.endpoint: expected HOST or HOST:PORT without a scheme",
        ),
        (
            '[targets.ram]\nkind = "alibaba-ram"\nprotocol = "ftp"\n',
            "targets.ram.protocol:",
        ),
        (
            '[targets.ram]\nkind = "alibaba-ram"\naccess_key_secret = "x"\n',
            "targets.ram.access_key_secret: unknown key",
        ),
        (
            '[targets.ram]\nkind = "alibaba-ram"\n\n[[rules]]\ngroup = "g"\n'
            'grants = [{ target = "ram", role = "developers" }]\n',
            "rules[1].grants[1].role: 'developers' is not 'group:' and a RAM group name",
        ),
        (
            '[targets.sso]\nkind = "alibaba-cloudsso"\n\n[[rules]]\ngroup = "g"\n'
            'grants = [{ target = "sso", role = "Developer" }]\n',
            "rules[1].grants[1].role: 'Developer' is not ACCOUNT_ID/ACCESS_CONFIGURATION_NAME",
        ),
    ],
)
def test_config_check_names_the_bad_key(tmp_path: Path, extra: str, message: str) -> None:
    code, out = _check(tmp_path, extra)
    assert code == 1
    assert message in out
    assert "Traceback" not in out
