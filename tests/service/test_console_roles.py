"""The console's roles, worked out from the directory in the store (SQLite and PostgreSQL):
admin, approver, requester, reviewer; unknown and inactive people have none at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jmlsync.config import load_settings
from jmlsync.console.authz import ADMIN, APPROVER, REQUESTER, assigned_items, roles_of
from jmlsync.domain.directory import Change, Member, MemberOp
from jmlsync.runtime import Runtime, open_runtime
from jmlsync.store.reviews import SqlReviews

pytestmark = pytest.mark.timeout(60)

CONFIG = """
[console]
admin_groups = ["Console-Admins"]

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[eligibility]]
name = "admin"
groups = ["oncall"]
grants = [{ target = "sandbox", role = "admin" }]
max_duration = "1h"
approvers = ["approvers"]

[[eligibility]]
name = "viewer"
users = ["Ned@x.io"]
grants = [{ target = "sandbox", role = "viewer" }]
max_duration = "1h"
approvals = 0

[[reviews]]
name = "everything"
scope = "all"
reviewers = ["group:approvers"]
"""


def _doc(kind: str, **attrs: Any) -> dict[str, Any]:
    return {"schemas": [f"urn:ietf:params:scim:schemas:core:2.0:{kind}"], **attrs}


@pytest.fixture
async def runtime(config_path: Path) -> AsyncIterator[Runtime]:
    with config_path.open("a") as handle:
        handle.write(CONFIG)
    async with open_runtime(load_settings(config_path)) as opened:
        store, now = opened.store, datetime.now(UTC)
        ids = {}
        for name, active in (
            ("ada@x.io", True),
            ("bob@x.io", True),
            ("cy@x.io", True),
            ("ned@x.io", True),
            ("dee@x.io", True),
            ("eve@x.io", False),
        ):
            doc = _doc("User", userName=name, active=active)
            ids[name] = (await store.create("User", Change(doc), now)).id
        for group, members in (
            ("oncall", ["ada@x.io", "eve@x.io"]),
            ("approvers", ["bob@x.io", "eve@x.io"]),
            ("console-admins", ["cy@x.io"]),
        ):
            change = Change(
                _doc("Group", displayName=group),
                (MemberOp("replace", items=tuple(Member(ids[m]) for m in members)),),
            )
            await store.create("Group", change, now)
        yield opened


async def _roles(runtime: Runtime, user_name: str) -> frozenset[str] | None:
    return await roles_of(
        runtime.store,
        user_name,
        runtime.settings,
        timebound=runtime.timebound,
        reviews=runtime.reviews,
        assignments=SqlReviews(runtime.store.db),
    )


async def test_roles_come_from_groups_and_eligibilities(runtime: Runtime) -> None:
    assert await _roles(runtime, "ada@x.io") == frozenset({REQUESTER})  # in an eligible group
    assert await _roles(runtime, "ned@x.io") == frozenset({REQUESTER})  # named (as Ned@x.io)
    assert await _roles(runtime, "bob@x.io") == frozenset(
        {APPROVER}
    )  # no campaign: no reviewer yet
    assert await _roles(runtime, "cy@x.io") == frozenset({ADMIN})  # admin group, caselessly
    assert await _roles(runtime, "dee@x.io") == frozenset()  # signed in, nothing to open
    assert await _roles(runtime, "eve@x.io") is None  # inactive: in every group, no console
    assert await _roles(runtime, "zed@x.io") is None  # unknown


async def test_without_the_engines_only_admins_have_a_role(runtime: Runtime) -> None:
    settings = runtime.settings
    assert await roles_of(runtime.store, "ada@x.io", settings) == frozenset()
    assert await roles_of(runtime.store, "cy@x.io", settings) == frozenset({ADMIN})


async def test_no_open_campaign_assigns_nobody(runtime: Runtime) -> None:
    assert await assigned_items(SqlReviews(runtime.store.db), "bob@x.io", ["approvers"]) == []
