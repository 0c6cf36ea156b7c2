"""End to end: SCIM pushes to a real ``jmlsync serve`` change group memberships in a real slapd,
read back with ``ldapsearch``; and a slapd stopped and restarted in the middle of a burst."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TOKENS, start_service, stop_service, write_config
from tests.scim_samples import PATCH_OP
from tests.slapd_server import (  # noqa: F401 (fixtures)
    BIND_DN,
    BIND_PASSWORD,
    LdapTree,
    ldap_tree,
    own_slapd,
    slapd,
)

pytestmark = pytest.mark.process

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
HEADERS = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/scim+json"}


def _targets(tree: LdapTree, state: Path, *, pipeline: str = "") -> str:
    (state / "ldap-password").write_text(BIND_PASSWORD + "\n")
    return f"""
[pipeline]
poll_seconds = 0.1
{pipeline}

[reconcile]
schedule = ""

[targets.directory]
kind = "ldap"
url = "{tree.slapd.url}"
start_tls = false
bind_dn = "{BIND_DN}"
bind_password_file = "ldap-password"
users_base = "{tree.users_base}"
groups_base = "{tree.groups_base}"
user_filter = "(mail={{userName}})"
provision_users = true
disable = "ppolicy"

[targets.directory.user_template]
rdn_attribute = "uid"

[targets.directory.user_template.attributes]
uid = "{{local}}"
cn = "{{displayName|userName}}"
sn = "{{familyName|userName}}"
mail = "{{userName}}"

[[rules]]
group = "engineering"
grants = [{{ target = "directory", role = "developers" }}]

[[rules]]
group = "operations"
grants = [{{ target = "directory", role = "operators" }}]
"""


def _holders(tree: LdapTree, group: str) -> list[str]:
    """The mails of a group's members, one per member value (duplicates kept), via ldapsearch."""
    mails = {}
    for entry in tree.slapd.search(tree.users_base, "(mail=*)", "mail"):
        mails[entry["dn"][0].lower()] = entry["mail"][0]
    return sorted(mails[dn.lower()] for dn in tree.members(group) if dn.lower() in mails)


def _locked(tree: LdapTree, mail: str) -> bool:
    (entry,) = tree.slapd.search(tree.users_base, f"(mail={mail})", "pwdAccountLockedTime")
    return entry.get("pwdaccountlockedtime") == ["000001010000Z"]


async def _until(check: Callable[[], bool], limit: float = 30) -> float:
    """Seconds until ``check`` holds (reading a server in another process)."""
    started = time.perf_counter()
    async with asyncio.timeout(limit):
        while not await asyncio.to_thread(check):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> str:
    async with http.post(url, json=body) as reply:
        assert reply.status == 201, await reply.text()
        return str((await reply.json())["id"])


async def _user(http: aiohttp.ClientSession, root: str, name: str) -> str:
    body = {"schemas": [USER], "userName": name, "active": True, "displayName": name.upper()}
    return await _post(http, f"{root}/Users", body)


async def _group(http: aiohttp.ClientSession, root: str, name: str, members: list[str]) -> str:
    body = {"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]}
    return await _post(http, f"{root}/Groups", body)


async def _patch(http: aiohttp.ClientSession, url: str, *operations: dict[str, Any]) -> None:
    async with http.patch(url, json={"schemas": [PATCH_OP], "Operations": list(operations)}) as r:
        assert r.status in (200, 204), await r.text()


async def _reconcile(config: Path) -> tuple[int, list[tuple[str, str, str | None]]]:
    """``jmlsync reconcile --dry-run --detailed-exitcode``: its exit code and the plan."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "jmlsync", "reconcile", "--config", str(config)),
        *("--dry-run", "--detailed-exitcode", "--format", "json"),
        stdout=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    plan = json.loads(out)["operations"]
    code = process.returncode
    assert code is not None
    return code, [(op["action"], op["user"], op.get("role")) for op in plan]


@pytest.mark.timeout(120)
async def test_joiner_mover_leaver_reach_slapd(
    config_path: Path,
    ldap_tree: LdapTree,  # noqa: F811
) -> None:
    ldap_tree.add_groups(["developers", "operators", "break-glass"])
    with config_path.open("a") as config:
        config.write(_targets(ldap_tree, config_path.parent))
    service = await start_service(config_path)
    try:
        async with aiohttp.ClientSession(headers=HEADERS) as http:
            root = service.url
            ada = await _user(http, root, "ada@x.io")
            bo = await _user(http, root, "bo@x.io")
            engineering = await _group(http, root, "engineering", [ada, bo])
            await _until(lambda: _holders(ldap_tree, "developers") == ["ada@x.io", "bo@x.io"])
            # Mover: bo leaves engineering for operations.
            await _group(http, root, "operations", [bo])
            await _patch(
                http,
                f"{root}/Groups/{engineering}",
                {"op": "remove", "path": f'members[value eq "{bo}"]'},
            )
            await _until(
                lambda: (
                    _holders(ldap_tree, "developers") == ["ada@x.io"]
                    and _holders(ldap_tree, "operators") == ["bo@x.io"]
                )
            )
            # Leaver: ada is deactivated, after a hand-made membership of a managed group
            # and of a group no rule names.
            ada_dn = ldap_tree.slapd.search(ldap_tree.users_base, "(mail=ada@x.io)")[0]["dn"][0]
            for group in ("operators", "break-glass"):
                ldap_tree.slapd.modify(
                    f"dn: {ldap_tree.group_dn(group)}\nchangetype: modify\nadd: member\n"
                    f"member: {ada_dn}\n"
                )
            await _patch(
                http, f"{root}/Users/{ada}", {"op": "replace", "path": "active", "value": False}
            )
            await _until(
                lambda: (
                    _holders(ldap_tree, "developers") == []
                    and _holders(ldap_tree, "operators") == ["bo@x.io"]
                    and _locked(ldap_tree, "ada@x.io")
                )
            )
    finally:
        assert await stop_service(service) == 0
    assert not _locked(ldap_tree, "bo@x.io")
    assert _holders(ldap_tree, "break-glass") == ["ada@x.io"]
    # Reconcile reads every grant back (paged searches) and finds nothing to do, until a
    # membership of a managed group is added by hand.
    assert await _reconcile(config_path) == (0, [])
    bo_dn = ldap_tree.slapd.search(ldap_tree.users_base, "(mail=bo@x.io)")[0]["dn"][0]
    ldap_tree.slapd.modify(
        f"dn: {ldap_tree.group_dn('developers')}\nchangetype: modify\nadd: member\n"
        f"member: {bo_dn}\n"
    )
    assert await _reconcile(config_path) == (2, [("revoke", "bo@x.io", "developers")])
    entries = ldap_tree.slapd.search(ldap_tree.users_base, "(mail=*)", "uid", "cn")
    assert sorted(e["uid"][0] for e in entries) == ["ada", "bo"]
    assert sorted(e["cn"][0] for e in entries) == ["ADA@X.IO", "BO@X.IO"]
    assert BIND_PASSWORD not in "".join(service.log)


@pytest.mark.timeout(120)
async def test_slapd_restarted_mid_burst_converges_without_duplicates(tmp_path: Path) -> None:
    server, tree = own_slapd(tmp_path / "slapd")
    try:
        tree.add_groups(["developers"])
        pipeline = (
            "workers = 2\ncall_attempts = 2\ncall_initial_wait_seconds = 0.05\n"
            "call_max_wait_seconds = 0.1\nretry_base_seconds = 0.2\nretry_max_seconds = 0.5\n"
            "max_attempts = 100"
        )
        config = write_config(tmp_path, extra=_targets(tree, tmp_path, pipeline=pipeline))
        service = await start_service(config)
        names = [f"user-{i:02}@x.io" for i in range(40)]
        try:
            async with aiohttp.ClientSession(headers=HEADERS) as http:
                ids = [await _user(http, service.url, name) for name in names]
                await _group(http, service.url, "engineering", ids)
                await _until(lambda: len(_holders(tree, "developers")) >= 3)
                landed = len(_holders(tree, "developers"))
                server.stop()
                # The service must notice the outage before the server comes back.
                await _until(lambda: any("unreachable" in line for line in service.log))
                server.start()
                await _until(lambda: _holders(tree, "developers") == sorted(names), limit=60)
        finally:
            assert await stop_service(service) == 0
        members = tree.members("developers")
        assert len(members) == len(set(members)) == len(names) + 1  # and the placeholder
        entries = tree.slapd.search(tree.users_base, "(mail=*)", "mail")
        assert sorted(e["mail"][0] for e in entries) == sorted(names)
        assert landed < len(names), "the burst was over before the server stopped"
    finally:
        server.stop()
