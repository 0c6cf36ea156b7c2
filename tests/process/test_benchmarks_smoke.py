"""Every outside-the-process benchmark runs at a tiny size, exits 0 and prints its JSON.

They measure nothing here (timings are not asserted); they run so the benchmark code cannot
rot while the product changes under it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, module: str, *args: str, limit: float) -> dict[str, Any]:
    out = tmp_path / "result.json"
    finished = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--rounds", "1", "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        timeout=limit,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr.decode()[-3000:]
    printed = json.loads(finished.stdout)
    assert printed == json.loads(out.read_text())
    assert printed["benchmark"] == module
    return printed


@pytest.mark.timeout(180)
def test_mixed_jml_runs_against_every_server(tmp_path: Path) -> None:
    result = _run(tmp_path, "mixed_jml", "--users", "30", "--groups", "2", limit=170)
    sqlite = result["servers"]["jmlsync-sqlite"]
    assert sqlite["errors_total"] == 0
    assert sqlite["verify_clean_rounds"] == 1
    # 30 creates, 2 groups, 15 members each in PATCHes of 10 and 5, 9 leavers, 3 deletes,
    # then 30 users and 2 groups read back
    assert sqlite["requests_per_round"] == 30 + 2 + 4 + 9 + 3 + 32
    assert "scim2-server" in result["servers"]
    assert {t["target"].split()[0] for t in result["targets"]} >= {"jmlsync-sqlite"}


@pytest.mark.timeout(120)
def test_post_ceiling_runs_against_the_three_servers(tmp_path: Path) -> None:
    result = _run(tmp_path, "post_ceiling", "--requests", "60", "--warmup", "5", limit=110)
    for server in ("jmlsync", "bare-aiohttp", "aiohttp-sqlite"):
        assert result["servers"][server]["errors_total"] == 0
    assert result["ratios"]["jmlsync_vs_aiohttp_sqlite"] > 0


@pytest.mark.timeout(180)
def test_leaver_latency_runs_every_scenario_on_the_ledger(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        "leaver_latency",
        *("--users", "12", "--leavers", "6", "--rate", "100", "--warm", "0.2"),
        *("--mix-users", "20", "--mix-groups", "2", "--burst", "30"),
        limit=170,
    )
    scenarios = result["scenarios"]
    assert scenarios["idle"]["rounds"][0]["response_to_cleared_in_target"]["count"] == 6
    assert scenarios["loaded"]["rounds"][0]["background"]["errors"] == 0
    assert scenarios["pipeline"]["rounds"][0]["operations_each_way"] == 60


@pytest.mark.timeout(240)
def test_leaver_latency_runs_on_identity_center_in_moto(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        "leaver_latency",
        *("--target", "identity-center", "--scenarios", "loaded,pipeline"),
        *("--users", "6", "--leavers", "3", "--rate", "100", "--warm", "0.2"),
        *("--mix-users", "20", "--mix-groups", "2", "--burst", "10"),
        limit=230,
    )
    loaded = result["scenarios"]["loaded"]["rounds"][0]
    assert loaded["response_to_cleared_in_target"]["count"] == 3
    assert result["scenarios"]["pipeline"]["rounds"][0]["operations_each_way"] == 20


@pytest.mark.timeout(120)
def test_cli_reconcile_runs_the_real_command(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        "cli_reconcile",
        *("--users", "200", "--groups", "20", "--memberships", "400", "--rules", "10"),
        *("--cache", str(tmp_path / "cache")),
        limit=110,
    )
    (only,) = result["per_round"]
    assert only["exit_code"] == 0
    assert only["operations"] > 0
    assert only["peak_rss_mib"] > 0
