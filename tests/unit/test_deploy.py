"""Deployment artefacts: the systemd unit, the container image and the example configurations.

The unit is checked by systemd itself (``systemd-analyze verify`` and ``security --offline``);
the Dockerfile statically, since no image is built by the tests.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from jmlsync.config import load_settings
from jmlsync.targets.aws_settings import AwsIamTargetSettings, AwsIdentityCenterTargetSettings
from jmlsync.targets.ldap_settings import LdapTargetSettings
from jmlsync.targets.ledger import LedgerTargetSettings
from jmlsync.targets.scim import ScimTargetSettings

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "jmlsync.service"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONFIGS = sorted((ROOT / "config").glob("*.toml"))
PRODUCTION = ROOT / "config" / "jmlsync.production.toml"

INSTALLED = Path("/opt/jmlsync/bin/jmlsync")
CONFIG_FILE = "/etc/jmlsync/jmlsync.toml"
STATE_DIR = "/var/lib/jmlsync"
CONFIG_DIR = "/etc/jmlsync"
MAX_EXPOSURE = 2.0
TIMEOUT = 30

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed on this machine"
)

KINDS: dict[str, type[Any]] = {
    "ledger": LedgerTargetSettings,
    "aws-identity-center": AwsIdentityCenterTargetSettings,
    "aws-iam": AwsIamTargetSettings,
    "scim": ScimTargetSettings,
    "ldap": LdapTargetSettings,
}


def _clean_env() -> dict[str, str]:
    """The environment without JMLSYNC_ overrides, so the files alone are checked."""
    return {k: v for k, v in os.environ.items() if not k.startswith("JMLSYNC_")}


# --- the systemd unit ----------------------------------------------------------------------------


def _unit_directives(text: str) -> dict[tuple[str, str], list[str]]:
    """Every ``Key=value`` of a unit file by (section, key), in order; keys may repeat."""
    directives: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {raw!r}"
        directives.setdefault((section, key.strip()), []).append(value.strip())
    return directives


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", value)
    assert match, f"unexpected time span {value!r}"
    return float(match[1]) * (60 if match[2] == "min" else 1)


def _verifiable_copy(directory: Path, text: str, program: str | None = None) -> Path:
    """The unit under its own name in ``directory``, ExecStart's program replaced by one that
    exists on this machine (verify checks it is executable); nothing else changes."""
    needle = f"ExecStart={INSTALLED} "
    assert text.count(needle) == 1, f"the unit must start {INSTALLED} exactly once"
    real = program or shutil.which("jmlsync", path=str(Path(sys.executable).parent))
    copy = directory / UNIT.name
    copy.write_text(text.replace(needle, f"ExecStart={real or sys.executable} "))
    return copy


def _verify(unit: Path) -> tuple[int, list[str]]:
    """systemd-analyze verify: its exit status and every line it printed about the unit."""
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=unit.parent,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "cat"},
    )
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode, [line for line in lines if unit.name in line]


@needs_systemd_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    code, complaints = _verify(_verifiable_copy(tmp_path, UNIT.read_text()))
    assert complaints == []
    assert code == 0


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("unknown key", "Unknown key"),
        ("bad value", "Failed to parse"),
        ("missing program", "is not executable"),
    ],
)
def test_verify_catches_a_broken_unit(tmp_path: Path, breakage: str, expected: str) -> None:
    """The check above would notice: each breakage of the unit makes verify complain."""
    text = UNIT.read_text()
    program = None
    if breakage == "unknown key":
        text = re.sub(
            r"^\[Service\]$", "[Service]\nHardenEverything=yes", text, count=1, flags=re.M
        )
    elif breakage == "bad value":
        text = re.sub(r"^Type=notify$", "Type=notfy", text, count=1, flags=re.M)
    else:
        program = str(tmp_path / "nowhere" / "jmlsync")
    assert text != UNIT.read_text() or program
    _code, complaints = _verify(_verifiable_copy(tmp_path, text, program))
    assert any(expected in line for line in complaints), complaints


@needs_systemd_analyze
def test_unit_exposure_is_low(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    unit = _verifiable_copy(tmp_path, UNIT.read_text())
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0"},
    )
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if UNIT.name in line] == []
    match = re.search(r"Overall exposure level for jmlsync\.service: (\d+\.\d+)", done.stdout)
    assert match, done.stdout
    weak = [line for line in done.stdout.splitlines() if line.startswith("✗")]
    exposure = float(match[1])
    assert exposure <= MAX_EXPOSURE, "\n".join([f"exposure {exposure} > {MAX_EXPOSURE}:", *weak])


def test_unit_runs_the_installed_service() -> None:
    unit = _unit_directives(UNIT.read_text())

    def one(key: str) -> str:
        values = unit.get(("Service", key), [])
        assert len(values) == 1, f"{key}= must be set once, found {values}"
        return values[0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("ExecStart") == f"{INSTALLED} serve --config {CONFIG_FILE}"
    assert one("StateDirectory") == "jmlsync"
    assert one("StateDirectoryMode") == "0700"
    assert one("ConfigurationDirectory") == "jmlsync"
    assert one("Restart") == "on-failure"
    assert one("UMask") == "0077"
    assert one("CapabilityBoundingSet") == ""
    assert one("MemoryDenyWriteExecute") == "yes"
    assert one("RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    dynamic = unit.get(("Service", "DynamicUser")) == ["yes"]
    assert dynamic or one("User") not in {"", "root", "0"}
    # It must still listen and reach the cloud APIs: no blanket IP deny without an allow list.
    if "any" in " ".join(unit.get(("Service", "IPAddressDeny"), [])).split():
        assert unit.get(("Service", "IPAddressAllow"))
    # Jobs in flight may finish after SIGTERM before systemd sends SIGKILL.
    grace = load_settings(PRODUCTION, {}).pipeline.shutdown_grace_seconds
    assert _seconds(one("TimeoutStopSec")) >= grace + 10
    assert _seconds(one("WatchdogSec")) >= 10
    assert ("Install", "WantedBy") in unit


# --- the container image -------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a continuation"
    return result


def _stages(text: str) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(text):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _copy_sources(arguments: str) -> tuple[list[str], str | None]:
    """The sources of a COPY or ADD (flags dropped) and the stage it copies from, if any."""
    words = _words(arguments)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    stage = next((f.partition("=")[2] for f in flags if f.startswith("--from=")), None)
    return paths[:-1], stage


def _words(arguments: str) -> list[str]:
    """The arguments of an instruction in exec (JSON) or shell form, as words."""
    if arguments.startswith("["):
        words = json.loads(arguments)
        assert isinstance(words, list)
        return [str(word) for word in words]
    return arguments.split()


def _final(key: str) -> list[str]:
    return [args for word, args in _stages(DOCKERFILE.read_text())[-1] if word == key]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` (relative to the context) out of the build."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        candidates = prefixes
        if pattern.startswith("**/"):
            pattern = pattern[3:]
            candidates = [
                "/".join(parts[i : j + 1]) for i in range(len(parts)) for j in range(i, len(parts))
            ]
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            excluded = not negate
    return excluded


def _dockerignore() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_image_is_multi_stage_and_runs_unprivileged() -> None:
    stages = _stages(DOCKERFILE.read_text())
    assert len(stages) >= 2
    users = _final("USER")
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    # Numeric, so that an orchestrator's runAsNonRoot can check it without /etc/passwd.
    assert user.isdigit()
    assert user != "0"
    assert [_words(v) for v in _final("ENTRYPOINT")][-1:] == [[str(INSTALLED)]]
    assert [_words(v) for v in _final("CMD")][-1:] == [["serve", "--config", CONFIG_FILE]]
    assert any(STATE_DIR in _words(v) for v in _final("VOLUME"))
    assert _final("STOPSIGNAL") == ["SIGTERM"]
    assert "8080" in " ".join(_final("EXPOSE")).split()
    env = " ".join(_final("ENV"))
    assert "JMLSYNC_SERVER__LISTEN=0.0.0.0:8080" in env.split()
    assert "PYTHONUNBUFFERED=1" in env.split()


def test_image_holds_no_tests_and_only_built_wheels() -> None:
    stages = _stages(DOCKERFILE.read_text())
    patterns = _dockerignore()
    for index, stage in enumerate(stages):
        for word, arguments in stage:
            if word not in {"COPY", "ADD"}:
                continue
            sources, from_stage = _copy_sources(arguments)
            if from_stage is not None:
                continue
            for source in sources:
                assert not source.strip("./").startswith("tests"), arguments
                if index == len(stages) - 1:
                    # The runtime copies the configuration, never the source tree.
                    assert source.strip("/") not in {".", "jmlsync", "tests"}, arguments
                # Whatever the build copies from the context is there and not ignored.
                assert (ROOT / source).exists(), source
                assert not _ignored(source.strip("/"), patterns), source
    for path in (".venv/bin/python", ".git/HEAD", "tests/unit/test_deploy.py", "var/jmlsync.db"):
        assert _ignored(path, patterns), f".dockerignore lets {path} into the build context"
    # The runtime installs the wheels of the builder stage, and nothing from an index.
    installs = [
        args for word, args in stages[-1] if word == "RUN" and "pip" in args and " install " in args
    ]
    assert installs
    assert all("--no-index" in args and "/wheels" in args for args in installs)


def test_image_healthcheck_probes_healthz() -> None:
    (check,) = _final("HEALTHCHECK")
    assert "/healthz" in check
    assert "curl" not in check
    command = json.loads(check[check.index("CMD") + 3 :].strip())
    assert command[1] == "-c"
    code = command[2]
    compile(code, "HEALTHCHECK", "exec")

    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with _http_server(Handler) as port:
        env = {**_clean_env(), "JMLSYNC_SERVER__LISTEN": f"0.0.0.0:{port}"}

        def probe() -> int:
            run = [sys.executable, "-c", code]
            return subprocess.run(run, env=env, capture_output=True, timeout=TIMEOUT).returncode

        assert probe() == 0
        status["code"] = 503
        assert probe() != 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@contextmanager
def _http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- the example configurations ------------------------------------------------------------------


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jmlsync", "config", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_clean_env(),
    )


def _uncommented(text: str) -> str:
    """The file with its commented-out ``# [targets.x]`` / ``# [[rules]]`` blocks enabled."""
    lines, inside = [], False
    for line in text.splitlines():
        if re.fullmatch(r"# \[\[?[\w.-]+\]\]?\s*", line):
            inside = True
        elif not line.startswith("#"):
            inside = False
        lines.append(line[2:] if inside else line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_configuration_checks(path: Path) -> None:
    done = _check(path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_commented_examples_are_valid(path: Path, tmp_path: Path) -> None:
    """Uncommenting an example target or section gives a valid configuration too."""
    # Nothing is opened: the copy elsewhere validates as the original would.
    copy = tmp_path / path.name
    copy.write_text(_uncommented(path.read_text()))
    load_settings(copy, {})


def test_production_example_shows_every_target_kind() -> None:
    text = _uncommented(PRODUCTION.read_text())
    targets = tomllib.loads(text)["targets"]
    by_kind = {table["kind"]: name for name, table in targets.items()}
    assert set(by_kind) == set(KINDS)
    for kind, name in by_kind.items():
        block = text.split(f"[targets.{name}]", 1)[1].split("\n\n", 1)[0]
        mentioned = set(re.findall(r"^[#\s]*(\w+)\s*=", block, re.MULTILINE))
        missing = set(KINDS[kind].model_fields) - mentioned
        assert not missing, f"[targets.{name}] ({kind}) does not show {sorted(missing)}"


def test_production_example_keeps_state_and_config_in_place(tmp_path: Path) -> None:
    copy = tmp_path / PRODUCTION.name
    copy.write_text(_uncommented(PRODUCTION.read_text()))
    settings = load_settings(copy, {})
    paths = [settings.server.tokens_file, settings.store.sqlite_path]
    if settings.alerts.webhook_url_file is not None:
        paths.append(settings.alerts.webhook_url_file)
    for target in settings.targets.values():
        paths.extend(getattr(target, key) for key in ("path", "token_file") if hasattr(target, key))
    for path in paths:
        assert path.is_absolute()
        assert path.is_relative_to(STATE_DIR) or path.is_relative_to(CONFIG_DIR), path
