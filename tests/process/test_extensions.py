"""Declared extension schemas (`[[scim.extensions]]`): checked in the configuration, published,
validated, stored, returned, filtered and sorted on, and matched by rules' user_filter."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.config import ConfigError, Settings, load_settings
from jmlsync.policy_config import load_checked_settings
from tests.conftest import TOKENS, ScimClient, start_service, stop_service, write_config
from tests.scim_samples import PATCH_OP

CUSTOM = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
TEAMS = "urn:example:params:scim:schemas:extension:teams:2.0:Group"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"

EXTENSIONS = f"""
[[scim.extensions]]
urn = "{CUSTOM}"
resource = "User"
description = "What our Entra tenant adds"

[[scim.extensions.attributes]]
name = "costCenter"
description = "Where the salary is booked"

[[scim.extensions.attributes]]
name = "level"
type = "integer"

[[scim.extensions.attributes]]
name = "badges"
type = "complex"
multiValued = true

[[scim.extensions.attributes.subAttributes]]
name = "kind"

[[scim.extensions.attributes.subAttributes]]
name = "code"
caseExact = true

[[scim.extensions]]
urn = "{TEAMS}"
resource = "Group"

[[scim.extensions.attributes]]
name = "owner"
"""
PIPELINE = f"""
[pipeline]
workers = 2
poll_seconds = 0.05

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "engineering"
user_filter = '{CUSTOM}:costCenter eq "7"'
grants = [{{ target = "sandbox", role = "developer" }}]
"""


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (
            '[[scim.extensions]]\nurn = "urn:x:y:z"\nresource = "User"\n'
            '[[scim.extensions.attributes]]\nname = "a"\ntype = "complex"\n',
            "scim.extensions[1].attributes[1]",
            "needs subAttributes",
        ),
        (
            '[[scim.extensions]]\nurn = "urn:x:y:z"\nresource = "User"\n'
            '[[scim.extensions.attributes]]\nname = "a"\n'
            '[[scim.extensions.attributes]]\nname = "A"\n',
            "scim.extensions[1]",
            "declared twice",
        ),
        (
            '[[scim.extensions]]\nurn = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:'
            'User"\nresource = "User"\n[[scim.extensions.attributes]]\nname = "a"\n',
            "scim.extensions[1]",
            "already defines",
        ),
        (
            '[[scim.extensions]]\nurn = "not a urn"\nresource = "User"\n'
            '[[scim.extensions.attributes]]\nname = "a"\n',
            "scim.extensions[1].urn",
            "should match pattern",
        ),
        (
            '[[scim.extensions]]\nurn = "urn:x:y:z"\nresource = "Role"\n'
            '[[scim.extensions.attributes]]\nname = "a"\n',
            "scim.extensions[1].resource",
            "'User' or 'Group'",
        ),
        (
            '[[scim.extensions]]\nurn = "urn:x:y:z"\nresource = "User"\n'
            '[[scim.extensions.attributes]]\nname = "a"\ntype = "date"\n',
            "scim.extensions[1].attributes[1].type",
            "Input should be",
        ),
        (
            '[[scim.extensions]]\nurn = "urn:x:y:z"\nresource = "User"\n'
            '[[scim.extensions.attributes]]\nname = "a"\nmultivalued = true\n',
            "scim.extensions[1].attributes[1].multivalued",
            "unknown key",
        ),
        ('[scim]\nunknown_attributes = "drop"\n', "scim.unknown_attributes", "'ignore'"),
        ('[scim]\nunknown_members = "drop"\n', "scim.unknown_members", "'skip'"),
    ],
)
def test_extension_errors_name_the_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    config = write_config(tmp_path, extra=text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert key in str(caught.value)
    assert reason in str(caught.value)


def test_rule_filters_see_declared_extensions(tmp_path: Path) -> None:
    rules = (
        '[targets.sandbox]\nkind = "ledger"\npath = "l.db"\n[[rules]]\ngroup = "g"\n'
        'user_filter = \'{}\'\ngrants = [{{ target = "sandbox", role = "r" }}]\n'
    )
    # What the CLI (and so `jmlsync serve`) loads: the settings with every syntax check.
    declared = write_config(tmp_path, extra=EXTENSIONS + rules.format(f"{CUSTOM}:level gt 2"))
    assert load_checked_settings(declared).rules[0].user_filter == f"{CUSTOM}:level gt 2"
    undeclared = write_config(tmp_path, extra=rules.format(f"{CUSTOM}:level gt 2"))
    with pytest.raises(ConfigError) as caught:
        load_checked_settings(undeclared)
    assert "rules[1].user_filter" in str(caught.value)
    assert "unknown attribute" in str(caught.value)
    mistyped = write_config(tmp_path, extra=EXTENSIONS + rules.format(f'{CUSTOM}:level eq "2"'))
    with pytest.raises(ConfigError, match="not a valid integer"):
        load_checked_settings(mistyped)


def test_config_check_lists_extensions_and_schema_covers_them(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra=EXTENSIONS)
    result = CliRunner().invoke(main, ["config", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert f"{CUSTOM} (User): costCenter, level, badges" in result.stdout
    assert f"{TEAMS} (Group): owner" in result.stdout
    bad = write_config(tmp_path, extra=EXTENSIONS.replace('type = "integer"', 'type = "int"'))
    result = CliRunner().invoke(main, ["config", "check", "--config", str(bad)])
    assert result.exit_code == 1
    assert "scim.extensions[1].attributes[2].type" in result.stderr
    schema = json.loads(CliRunner().invoke(main, ["config", "schema"]).stdout)
    attribute = schema["$defs"]["ExtensionAttributeSettings"]["properties"]
    assert {"name", "type", "multiValued", "caseExact", "description", "subAttributes"} <= set(
        attribute
    )
    assert schema["$defs"]["ExtensionSettings"]["properties"]["resource"]["enum"] == [
        "User",
        "Group",
    ]
    assert Settings.model_json_schema()["properties"]["scim"]


def holders(ledger: Path) -> set[str]:
    if not ledger.exists():
        return set()
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as conn:
        try:
            return {r[0] for r in conn.execute("SELECT user FROM grants WHERE role = 'developer'")}
        except sqlite3.OperationalError:  # the target has not created its tables yet
            return set()


async def until_holders(ledger: Path, wanted: set[str]) -> None:
    async with asyncio.timeout(30):
        # The ledger is another process's file: there is no event to await across processes.
        while holders(ledger) != wanted:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


@pytest.mark.process
@pytest.mark.timeout(120)
async def test_declared_extensions_end_to_end(config_path: Path) -> None:
    with config_path.open("a") as file:
        file.write(EXTENSIONS + PIPELINE)
    service = await start_service(config_path)
    ledger = config_path.parent / "ledger.db"
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            scim = ScimClient(session, service.url)
            schemas = await scim.get("/Schemas")
            published = {s["id"]: s for s in schemas.body["Resources"]}
            assert [a["name"] for a in published[CUSTOM]["attributes"]] == [
                "costCenter",
                "level",
                "badges",
            ]
            badges = published[CUSTOM]["attributes"][2]
            assert badges["multiValued"] is True
            assert [s["name"] for s in badges["subAttributes"]] == ["kind", "code"]
            assert (await scim.get(f"/Schemas/{CUSTOM}")).body["id"] == CUSTOM
            user_type = (await scim.get("/ResourceTypes/User")).body
            assert {"schema": CUSTOM, "required": False} in user_type["schemaExtensions"]
            group_type = (await scim.get("/ResourceTypes/Group")).body
            assert group_type["schemaExtensions"] == [{"schema": TEAMS, "required": False}]

            async def create(name: str, extension: dict[str, Any]) -> dict[str, Any]:
                reply = await scim.post(
                    "/Users",
                    {"schemas": [USER, CUSTOM], "userName": name, CUSTOM: extension},
                )
                assert reply.status == 201, reply.body
                return reply.body  # type: ignore[no-any-return]

            ann = await create(
                "ann@x.io",
                {"costCenter": "7", "level": 3, "badges": [{"kind": "door", "code": "A1"}]},
            )
            assert ann[CUSTOM] == {
                "costCenter": "7",
                "level": 3,
                "badges": [{"kind": "door", "code": "A1"}],
            }
            assert ann["schemas"] == [USER, CUSTOM]
            bob = await create("bob@x.io", {"costCenter": "8", "level": 5})
            got = await scim.get(f"/Users/{ann['id']}")
            assert got.body[CUSTOM]["badges"] == [{"kind": "door", "code": "A1"}]

            # Validated like any attribute.
            bad = await scim.post(
                "/Users",
                {"schemas": [USER, CUSTOM], "userName": "c@x.io", CUSTOM: {"level": "high"}},
            )
            assert (bad.status, bad.body["scimType"]) == (400, "invalidValue")

            async def ids(**params: str) -> list[str]:
                reply = await scim.get("/Users", params=params)
                assert reply.status == 200, reply.body
                return [r["id"] for r in reply.body["Resources"]]

            assert await ids(filter=f'{CUSTOM}:costCenter eq "7"') == [ann["id"]]
            assert await ids(filter=f"{CUSTOM}:level ge 4") == [bob["id"]]
            assert await ids(filter=f'{CUSTOM}:badges[kind eq "DOOR"]') == [ann["id"]]
            assert await ids(filter=f'{CUSTOM}:badges.code eq "a1"') == []
            assert await ids(sortBy=f"{CUSTOM}:level", sortOrder="descending") == [
                bob["id"],
                ann["id"],
            ]
            assert await ids(sortBy=f"{CUSTOM}:costCenter") == [ann["id"], bob["id"]]
            narrowed = await scim.get(
                f"/Users/{ann['id']}", params={"attributes": f"{CUSTOM}:level"}
            )
            assert narrowed.body[CUSTOM] == {"level": 3}

            reply = await scim.post(
                "/Groups",
                {"schemas": [GROUP, TEAMS], "displayName": "engineering", TEAMS: {"owner": "x"}},
            )
            assert reply.status == 201, reply.body
            group = reply.body
            assert group[TEAMS] == {"owner": "x"}
            reply = await scim.get("/Groups", params={"filter": f'{TEAMS}:owner eq "X"'})
            assert [r["id"] for r in reply.body["Resources"]] == [group["id"]]

            # The rule's user_filter matches on the declared attribute: only ann is granted.
            reply = await scim.patch(
                f"/Groups/{group['id']}",
                patch(
                    {
                        "op": "add",
                        "path": "members",
                        "value": [{"value": ann["id"]}, {"value": bob["id"]}],
                    }
                ),
            )
            assert reply.status == 204, reply.body
            await until_holders(ledger, {"ann@x.io"})
            # A mover: bob's cost center changes to the rule's, ann's away from it.
            for user, centre in ((bob, "7"), (ann, "9")):
                reply = await scim.patch(
                    f"/Users/{user['id']}",
                    patch({"op": "replace", "path": f"{CUSTOM}:costCenter", "value": centre}),
                )
                assert reply.status == 200, reply.body
            await until_holders(ledger, {"bob@x.io"})
    finally:
        assert await stop_service(service) == 0
