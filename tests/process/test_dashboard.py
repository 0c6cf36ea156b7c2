"""The Grafana dashboard and the alert rules name only metrics a running jmlsync exposes.

A real ``jmlsync serve`` (on each store) takes a few SCIM requests and applies a grant; its
``/metrics`` is then scraped and every metric named by a dashboard query or an alert rule must
be among the samples. promtool, where installed, parses every dashboard query as PromQL.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    BASE_PATH,
    TOKENS,
    ScimClient,
    ServiceProcess,
    start_service,
    stop_service,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "jmlsync.json"
RULES = ROOT / "deploy" / "prometheus" / "jmlsync.rules.yml"
METRIC = re.compile(r"\b(jmlsync_[a-z0-9_]+)\b")
#: Grafana's variables, as Prometheus would see them after Grafana substituted them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".+", "${datasource}": ""}
LEDGER = """
[targets.ledger]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "engineering"
grants = [{ target = "ledger", role = "developer" }]
"""


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _queries() -> list[str]:
    return [t["expr"] for p in _panels() for t in p.get("targets", [])]


def _substituted(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def _rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_every_panel_queries_jmlsync_metrics() -> None:
    panels = _panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 10
    for panel in graphs:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert METRIC.search(target["expr"]), f"{panel['title']!r}: {target['expr']}"
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    titles = " ".join(p["title"].lower() for p in graphs)
    for subject in ("queue depth", "oldest", "dead letters", "time to clear", "drift", "status"):
        assert subject in titles


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_every_dashboard_query_is_promql(tmp_path: Path) -> None:
    """promtool parses each query, as the expression of a recording rule."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{n}", "expr": _substituted(expr)}
                    for n, expr in enumerate(_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool")
    assert promtool is not None
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- against a real service ---------------------------------------------------------------------


@pytest.fixture
async def granting_service(config_path: Path) -> AsyncIterator[ServiceProcess]:
    """A real ``jmlsync serve`` with a ledger target and a rule, so grants are applied."""
    with config_path.open("a") as config:
        config.write(LEDGER)
    running = await start_service(config_path)
    try:
        yield running
    finally:
        await stop_service(running)


async def _scrape(session: aiohttp.ClientSession, url: str) -> set[str]:
    async with session.get(url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.process
async def test_every_named_metric_is_exposed(granting_service: ServiceProcess) -> None:
    url = granting_service.url.removesuffix(BASE_PATH).rstrip("/")
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        scim = ScimClient(session, url + BASE_PATH)
        user = await scim.create_user("ada@example.com", active=True)
        await scim.create_group("engineering", [user["id"]])
        assert (await scim.get("/Users", params={"filter": 'userName eq "nobody"'})).status == 200
        assert (await scim.get("/Users/no-such-id")).status == 404
        async with asyncio.timeout(30):
            # Another process applies the grant: poll its /metrics within the deadline.
            while "jmlsync_operations_total" not in (exposed := await _scrape(session, url)):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    named = {m for expr in _queries() + _rule_expressions() for m in METRIC.findall(expr)}
    assert named, "no metric named"
    assert named <= exposed, f"named but not exposed: {sorted(named - exposed)}"


def test_the_metric_check_catches_an_unknown_name() -> None:
    """The name check is not vacuous: a misspelt metric is not among the real ones."""
    exposed = {"jmlsync_queue_depth", "jmlsync_dead_letters"}
    named = set(METRIC.findall("max(jmlsync_dead_letter) + jmlsync_queue_depth"))
    assert named - exposed == {"jmlsync_dead_letter"}
