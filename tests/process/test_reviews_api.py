"""The HTTP API of access reviews through a real `jmlsync serve`, on both store backends: a
campaign started with the CLI, reviewers deciding their own items with personal tokens
(scope ``reviews``), revocations read back from the ledger, the refusals (another reviewer's
item, unknown items, past the deadline, the wrong token) and a bounded schemathesis run."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TOKENS, start_service, stop_service
from tests.process.test_access_api import Api, _problem
from tests.process.test_reviews_service import acli, configure, held, until, world

pytestmark = pytest.mark.process

QUICK = """
[[reviews]]
name = "quick"
scope = "privileged"
reviewers = ["manager", "group:security"]
duration = "PT1S"
"""


async def _token(config: Path, user: str, scope: str = "reviews") -> str:
    code, out, err = await acli(config, "token", "generate", "--user", user, "--scope", scope)
    assert code == 0, err
    return out.strip()


async def _start(config: Path, name: str) -> dict[str, Any]:
    code, out, err = await acli(config, "review", "start", name, "--format", "json")
    assert code == 0, err
    started: dict[str, Any] = json.loads(out)
    return started


def _by_user(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["user"]: item for item in body["items"]}


@pytest.mark.timeout(240)
async def test_reviewers_decide_over_http(config_path: Path) -> None:
    config = configure(config_path)
    config.write_text(config.read_text() + QUICK)
    service = await start_service(config)
    root = service.url.removesuffix("/scim/v2")
    try:
        scim, http, _ids = await world(service, config)
        async with http:
            await scim.user("auditor")  # the campaign's admin
            campaign = (await _start(config, "privileged"))["id"]
            path = f"/reviews/{campaign}"
            boss, sec, auditor = [
                await _token(config, u) for u in ("boss@x.io", "sec@x.io", "auditor")
            ]
            boss_access = await _token(config, "boss@x.io", "access")
        async with aiohttp.ClientSession() as client:
            api = Api(client, root)

            # Who may call at all: a personal token of scope reviews, nothing else.
            _problem(await api.call("GET", "/reviews", TOKENS[0]), 401, "token")
            _problem(await api.call("GET", path, None), 401, "token")
            _problem(await api.call("GET", path, boss_access), 403, "'reviews'")
            decide_bob: list[dict[str, Any]] = []

            # Each reviewer sees the items assigned to them; the admin sees all.
            code, listed, _ = await api.call("GET", "/reviews", boss)
            assert code == 200, listed
            [summary] = [c for c in listed["campaigns"] if c["id"] == campaign]
            assert summary["items"] == 3
            assert summary["assigned"] == 1
            assert not summary["admin"]
            code, mine, _ = await api.call("GET", path, boss)
            assert code == 200, mine
            assert set(_by_user(mine)) == {"alice@x.io"}, mine
            code, secs, _ = await api.call("GET", path, sec)
            assert set(_by_user(secs)) == {"bob@x.io", "mallory@x.io"}, secs
            code, everything, _ = await api.call("GET", path, auditor)
            assert set(_by_user(everything)) == {"alice@x.io", "bob@x.io", "mallory@x.io"}
            assert everything["campaign"]["admin"] is True
            items = {u: i["item_id"] for u, i in _by_user(everything).items()}
            alice, bob, mallory = items["alice@x.io"], items["bob@x.io"], items["mallory@x.io"]
            decide_bob = [{"item_id": bob, "decision": "revoke", "comment": "not mine"}]

            # Refusals change nothing: another reviewer's item, an unknown one, bad bodies.
            decisions = f"{path}/decisions"
            mixed = [{"item_id": alice, "decision": "keep"}, *decide_bob]
            _problem(await api.call("POST", decisions, boss, mixed), 403, "not the reviewer")
            _problem(await api.call("POST", decisions, auditor, decide_bob), 403, "reviewer")
            unknown = [{"item_id": alice, "decision": "keep"}, {"item_id": 999, "decision": "keep"}]
            _problem(await api.call("POST", decisions, boss, unknown), 422, "unknown item_id 999")
            twice = [{"item_id": alice, "decision": "keep"}] * 2
            _problem(await api.call("POST", decisions, boss, twice), 422, "decided again")
            spoof = [{"item_id": alice, "decision": "keep", "reviewer": "sec@x.io"}]
            _problem(await api.call("POST", decisions, boss, spoof), 403, "token's user")
            _problem(await api.call("POST", decisions, boss, {"item_id": alice}), 400, "list")
            _problem(await api.call("POST", decisions, boss, raw=b"["), 400, "JSON")
            odd = [{"item_id": alice, "decision": "maybe"}]
            _problem(await api.call("POST", decisions, boss, odd), 400, "decision")
            _problem(await api.call("POST", decisions, boss_access, mixed), 403, "'reviews'")
            _problem(
                await api.call("POST", "/reviews/nope-1/decisions", boss, mixed), 404, "nope-1"
            )
            _problem(await api.call("GET", "/reviews/a%20b", boss), 404, "campaign")
            code, unchanged, _ = await api.call("GET", path, auditor)
            assert all(i["decision"] is None for i in unchanged["items"]), unchanged

            # The reviewer's own items: recorded, revocation applied and read back.
            code, done, _ = await api.call(
                "POST",
                decisions,
                sec,
                [
                    {"item_id": mallory, "decision": "revoke", "comment": "unknown account"},
                    {"item_id": bob, "decision": "keep", "comment": "on call"},
                ],
            )
            assert code == 200, done
            assert done["recorded"] == 2, done
            assert done["jobs"] == 1, done
            assert {i["item_id"]: i["decision"] for i in done["items"]} == {
                mallory: "revoke",
                bob: "keep",
            }
            code, done, _ = await api.call(
                "POST", decisions, boss, [{"item_id": alice, "decision": "keep"}]
            )
            assert code == 200, done
            assert done["recorded"] == 1, done
            assert done["jobs"] == 0, done

            async def revoked() -> bool:
                return "admin" not in await held(config, "mallory@x.io")

            await until(revoked)

            async def verified() -> bool:
                _code, body, _ = await api.call("GET", path, sec)
                return bool(_by_user(body)["mallory@x.io"]["verified_at"])

            await until(verified)
            assert "admin" in await held(config, "alice@x.io")
            assert "admin" in await held(config, "bob@x.io")
            code, after, _ = await api.call("GET", path, sec)
            row = _by_user(after)["mallory@x.io"]
            assert row["decided_by"] == "sec@x.io"
            assert row["comment"] == "unknown account"
            assert row["imported_by"].startswith("sec@x.io (token #")

            # Every decision is an audit row with the token's user as actor.
            code, out, err = await acli(config, "audit", "tail", "-n", "50", "--format", "json")
            assert code == 0, err
            rows = [json.loads(line) for line in out.splitlines()]
            actors = sorted(
                r["actor"].split(" ")[0] for r in rows if r["action"] == "review.decide"
            )
            assert actors == ["boss@x.io", "sec@x.io", "sec@x.io"], rows
            code, out, err = await acli(config, "audit", "verify")
            assert code == 0, out + err

            # After the deadline: refused, nothing recorded.
            quick = await _start(config, "quick")
            deadline = datetime.fromisoformat(quick["deadline"].replace("Z", "+00:00"))

            async def past() -> bool:
                return datetime.now(UTC) > deadline

            await until(past, 10)
            code, late_items, _ = await api.call("GET", f"/reviews/{quick['id']}", boss)
            [late] = late_items["items"]
            _problem(
                await api.call(
                    "POST",
                    f"/reviews/{quick['id']}/decisions",
                    boss,
                    [{"item_id": late["item_id"], "decision": "revoke"}],
                ),
                422,
                "deadline",
            )
            code, late_items, _ = await api.call("GET", f"/reviews/{quick['id']}", boss)
            assert late_items["items"][0]["decision"] is None

            # The served document, fuzzed within bounds: no answer is a 5xx.
            code, spec, _ = await api.call("GET", "/openapi.json", None)
            reviews_ops = [
                op["operationId"]
                for key, item in spec["paths"].items()
                if key.startswith("/api/v1/reviews")
                for op in item.values()
            ]
            assert sorted(reviews_ops) == [
                "decideReviewItems",
                "getReviewCampaign",
                "listReviewCampaigns",
            ]
            schemathesis = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{root}/api/v1/openapi.json",
                "--checks",
                "not_a_server_error",
                "--header",
                f"Authorization: Bearer {boss}",
                "--include-tag",
                "reviews",
                "--max-examples",
                "20",
                "--seed",
                "23",
                "--workers",
                "1",
                "--generation-database",
                "none",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=config.parent,
            )
            output, _ = await schemathesis.communicate()
            text = output.decode()
            assert schemathesis.returncode == 0, text[-4000:]
            assert "Tested: 3" in text, text[-4000:]
    finally:
        assert await stop_service(service) == 0
