"""A bounded fuzzer over request bodies and filters, on both backends: never a 5xx, and a 4xx
changes nothing (every user and group reads the same before and after), except what a
refused request's leaving part does alone (a deactivation, a member removal: see
docs/scim.md), which may only remove members and deactivate."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jmlsync.scim.salvage import leaving_patch, leaving_put
from jmlsync.scim.schema import GROUP as GROUP_TYPE
from jmlsync.scim.schema import USER as USER_TYPE
from tests.conftest import ScimClient
from tests.scim_samples import PATCH_OP
from tests.service.test_hostile import snapshot

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"

BUDGET = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HOSTILE_TEXT = ["\x00", "\ud800", "a\udfffb", "'", '"', "\\", "(", "]", "%00", "é", "\U0001d518"]
texts = st.text(max_size=12) | st.sampled_from(HOSTILE_TEXT)
ATTRIBUTES = [
    "userName",
    "displayName",
    "active",
    "externalId",
    "name",
    "emails",
    "groups",
    "members",
    "meta",
    "id",
    "password",
    "title",
    ENTERPRISE,
    f"{ENTERPRISE}:manager",
]
KEYS = [*ATTRIBUTES, "value", "type", "primary", "display"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from([*ATTRIBUTES, "value", "type", "primary"]) | texts, inner, max_size=3
        )
    ),
    max_leaves=12,
)
resource_bodies = st.dictionaries(st.sampled_from(ATTRIBUTES) | texts, json_values, max_size=5).map(
    lambda body: {"schemas": [USER], "userName": "fuzz", **body}
)
FILTER_WORDS = [
    "userName", "displayName", "active", "emails", "emails[", "]", "value", "type",
    "name.givenName", "meta.created", f"{ENTERPRISE}:department", "eq", "ne", "co", "sw",
    "ew", "gt", "ge", "lt",
    "le", "pr", "and", "or", "not", "(", ")", '"x"', '"seed"', "true", "false", "null", "42",
    '"2024-01-01T00:00:00Z"', '"\\u0000"', '"\\ud800"', '"', "[", ".", "'", "\\",
]  # fmt: skip
filters = st.lists(st.sampled_from(FILTER_WORDS), min_size=1, max_size=25).map(" ".join) | texts
patch_bodies = st.fixed_dictionaries(
    {
        "schemas": st.just([PATCH_OP]),
        "Operations": st.lists(
            st.fixed_dictionaries(
                {"op": st.sampled_from(["add", "replace", "remove", "Replace", "bogus"])},
                optional={
                    "path": st.sampled_from(ATTRIBUTES) | filters.map(lambda f: f"emails[{f}]"),
                    "value": json_values,
                },
            ),
            max_size=3,
        ),
    }
)
raw_bodies = (
    st.binary(max_size=64)
    | json_values.map(lambda v: json.dumps(v).encode())
    | resource_bodies.map(lambda b: json.dumps(b).encode()[: len(json.dumps(b)) // 2])
)


async def _seed(scim: ScimClient) -> tuple[str, str]:
    """The ids of a user and a group to aim writes at (recreated if a write renamed them)."""
    found = await scim.get("/Users", params={"filter": 'userName eq "seed"'})
    if found.body["Resources"]:
        user = found.body["Resources"][0]["id"]
    else:
        user = (await scim.create_user("seed"))["id"]
    found = await scim.get("/Groups", params={"filter": 'displayName eq "seeds"'})
    if found.body["Resources"]:
        group = found.body["Resources"][0]["id"]
    else:
        group = (await scim.create_group("seeds", [user]))["id"]
    return user, group


async def _no_5xx_and_4xx_change_nothing(
    scim: ScimClient, method: str, path: str, raw: bytes | None, params: Any = None
) -> None:
    before = await snapshot(scim)
    reply = await scim.request(method, path, raw=raw, params=params)
    assert reply.status < 500, (method, path, raw, params, reply.body)
    if reply.status >= 400:
        assert reply.body["status"] == str(reply.status)
        after = await snapshot(scim)
        if _has_leaving_part(method, path, raw):
            assert _only_left(before, after), (method, path, raw, reply.body)
        else:
            assert after == before, (method, path, raw, reply.body)


def _has_leaving_part(method: str, path: str, raw: bytes | None) -> bool:
    """Whether the service applies part of this request alone even when it refuses the rest."""
    if method not in ("PATCH", "PUT") or raw is None:
        return False
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    kind = GROUP_TYPE if path.startswith("/Groups/") else USER_TYPE
    if method == "PUT":
        return leaving_put(kind, body) is not None
    return leaving_patch(kind, body) is not None


def _only_left(before: Any, after: Any) -> bool:
    """``after`` is ``before`` with, at most, members removed (and so users' groups) and
    users deactivated, and the changed resources' meta.lastModified and version moved on."""

    def keyed(listing: Any) -> dict[str, Any]:
        return {resource["id"]: resource for resource in listing["Resources"]}

    for old_list, new_list in zip(before, after, strict=True):
        old, new = keyed(old_list), keyed(new_list)
        if old.keys() != new.keys():
            return False
        for rid, was in old.items():
            now = new[rid]
            if now == was:
                continue
            for listed in ("members", "groups"):  # a user's groups shrink with the members
                old_values = {m["value"] for m in was.get(listed, [])}
                if not {m["value"] for m in now.get(listed, [])} <= old_values:
                    return False
            if now.get("active") and not was.get("active"):
                return False
            rest = {"members", "groups", "active", "meta"}
            if {k: v for k, v in was.items() if k not in rest} != {
                k: v for k, v in now.items() if k not in rest
            }:
                return False
            if {**was["meta"], "lastModified": 0, "version": 0} != {
                **now["meta"],
                "lastModified": 0,
                "version": 0,
            }:
                return False
    return True


@BUDGET
@given(body=resource_bodies | json_values, kind=st.sampled_from(["create", "replace", "group"]))
async def test_fuzzed_resource_bodies(scim: ScimClient, body: Any, kind: str) -> None:
    user, _ = await _seed(scim)
    raw = json.dumps(body).encode()
    if kind == "create":
        await _no_5xx_and_4xx_change_nothing(scim, "POST", "/Users", raw)
    elif kind == "replace":
        await _no_5xx_and_4xx_change_nothing(scim, "PUT", f"/Users/{user}", raw)
    else:
        if isinstance(body, dict):
            body = {**body, "schemas": [GROUP], "displayName": "fuzzed"}
        await _no_5xx_and_4xx_change_nothing(scim, "POST", "/Groups", json.dumps(body).encode())


@BUDGET
@given(body=patch_bodies, on_group=st.booleans())
async def test_fuzzed_patches(scim: ScimClient, body: Any, on_group: bool) -> None:
    user, group = await _seed(scim)
    path = f"/Groups/{group}" if on_group else f"/Users/{user}"
    await _no_5xx_and_4xx_change_nothing(scim, "PATCH", path, json.dumps(body).encode())


@BUDGET
@given(text=filters, by_search=st.booleans(), raw=raw_bodies)
async def test_fuzzed_filters_and_raw_bodies(
    scim: ScimClient, text: str, by_search: bool, raw: bytes
) -> None:
    await _seed(scim)
    if by_search:
        body = json.dumps({"schemas": [SEARCH], "filter": text}).encode()
        await _no_5xx_and_4xx_change_nothing(scim, "POST", "/Users/.search", body)
    else:
        # A URL cannot carry a lone surrogate: the client would refuse to send it.
        sendable = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        await _no_5xx_and_4xx_change_nothing(scim, "GET", "/Users", None, {"filter": sendable})
    await _no_5xx_and_4xx_change_nothing(scim, "POST", "/Users", raw)
