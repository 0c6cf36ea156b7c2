"""The Prometheus alerting rules in deploy/prometheus, checked and unit-tested by promtool.

promtool comes with Debian's ``prometheus`` package; ``.ci/run`` installs it when missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        shutil.which("promtool") is None,
        reason="promtool is not installed (apt-get install prometheus; .ci/run does)",
    ),
]

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = PROMETHEUS / "jmlsync.rules.yml"
RULE_TESTS = PROMETHEUS / "jmlsync.rules.test.yml"


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool is not None
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=30, cwd=cwd, check=False
    )


def test_rules_check() -> None:
    done = _promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rules_unit_tests_pass() -> None:
    done = _promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_unit_tested() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == tested


def test_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """A rule changed under the tests makes them fail: they test the rules, not themselves."""
    (tmp_path / RULES.name).write_text(
        RULES.read_text().replace("(jmlsync_dead_letters) > 0", "(jmlsync_dead_letters) > 5")
    )
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = _promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "JmlsyncDeadLetters" in done.stdout + done.stderr
