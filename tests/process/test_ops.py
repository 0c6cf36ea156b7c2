"""Running it like infrastructure: health, readiness, metrics, logs, systemd notifications,
environment overrides."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import socket
from pathlib import Path

import aiohttp
import pytest

from jmlsync.config import load_settings
from jmlsync.ops.logs import setup_logging
from tests.conftest import TOKENS, ScimClient, start_service, stop_service, write_config


async def test_health_and_readiness_are_open(anonymous: ScimClient, server_url: str) -> None:
    root = server_url.rstrip("/")
    async with anonymous.session.get(f"{root}/healthz") as reply:
        assert reply.status == 200
    async with anonymous.session.get(f"{root}/readyz") as reply:
        assert reply.status == 200
        body = await reply.json()
    assert body == {"status": "ready", "checks": ["scheduler", "store", "workers"], "targets": {}}


async def test_readiness_fails_with_a_reason_when_workers_stop(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestServer

    from jmlsync.service import RUNTIME, build_app

    app = await build_app(load_settings(write_config(tmp_path)))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        runtime = app[RUNTIME]
        runtime.pipeline.stop()
        await runtime.tasks["pipeline"]
        async with aiohttp.ClientSession() as http, http.get(server.make_url("/readyz")) as reply:
            assert reply.status == 503
            body = await reply.json()
        # Without a token, only which checks failed; with one, why.
        assert body == {"status": "not ready", "problems": {"workers": "failed"}, "targets": {}}
        headers = {"Authorization": f"Bearer {TOKENS[0]}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.get(server.make_url("/readyz")) as reply,
        ):
            assert reply.status == 503
            body = await reply.json()
        assert body == {
            "status": "not ready",
            "problems": {"workers": "workers are not running"},
            "targets": {},
        }
    finally:
        await server.close()


async def test_metrics_need_a_token_and_count_requests(
    scim: ScimClient, anonymous: ScimClient, server_url: str
) -> None:
    root = server_url.rstrip("/")
    await scim.create_user("mia@x.io")
    await scim.get("/Users/nope")
    async with anonymous.session.get(f"{root}/metrics") as reply:
        assert reply.status == 401
    async with scim.session.get(f"{root}/metrics") as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = await reply.text()
    assert 'jmlsync_scim_requests_total{method="POST",resource="Users",status="201"} 1.0' in text
    assert 'jmlsync_scim_requests_total{method="GET",resource="Users",status="404"} 1.0' in text
    assert "jmlsync_scim_request_duration_seconds_bucket" in text
    assert "jmlsync_queue_depth" in text
    assert "jmlsync_dead_letters 0.0" in text
    assert "jmlsync_leaver_time_to_clear_seconds_bucket" in text


async def test_a_separate_metrics_token(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestServer

    from jmlsync.service import build_app

    (tmp_path / "metrics-token").write_text("m" * 40 + "\n")
    (tmp_path / "metrics-token").chmod(0o600)
    config = write_config(tmp_path, extra="")
    config.write_text(
        config.read_text().replace(
            'tokens_file = "tokens"', 'tokens_file = "tokens"\nmetrics_token_file = "metrics-token"'
        )
    )
    server = TestServer(await build_app(load_settings(config)), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer " + "m" * 40}) as http:
            async with http.get(server.make_url("/metrics")) as reply:
                assert reply.status == 200
            async with http.get(server.make_url("/scim/v2/Users")) as reply:
                assert reply.status == 401
    finally:
        await server.close()


async def test_request_ids_are_echoed(scim: ScimClient) -> None:
    reply = await scim.get("/Users", headers={"X-Request-Id": "abc-123"})
    assert reply.headers["X-Request-Id"] == "abc-123"
    reply = await scim.get("/Users", headers={"X-Request-Id": "bad id; with spaces"})
    assert reply.headers["X-Request-Id"] != "bad id; with spaces"


def test_logs_are_json_lines_off_a_terminal() -> None:
    stream = io.StringIO()
    setup_logging(stream=stream)
    try:
        logging.getLogger("jmlsync.test").info(
            "granted", extra={"fields": {"user": "a@x.io", "target": "t", "duration_ms": 1.5}}
        )
    finally:
        logging.getLogger().handlers.clear()
    line = json.loads(stream.getvalue())
    assert line["msg"] == "granted"
    assert line["level"] == "info"
    assert line["user"] == "a@x.io"
    assert line["duration_ms"] == 1.5


def test_logs_are_readable_on_a_terminal() -> None:
    stream = io.StringIO()
    setup_logging(stream=stream, json_lines=False)
    try:
        logging.getLogger("jmlsync.test").info("granted", extra={"fields": {"user": "a@x.io"}})
    finally:
        logging.getLogger().handlers.clear()
    assert stream.getvalue().rstrip().endswith("granted user=a@x.io")


@pytest.mark.process
@pytest.mark.timeout(60)
async def test_real_process_logs_never_carry_a_token(tmp_path: Path) -> None:
    wrong = "wrong-" + "z" * 40
    service = await start_service(write_config(tmp_path))
    async with aiohttp.ClientSession() as http:
        for header in (f"Bearer {TOKENS[0]}", f"Bearer {wrong}", "Basic dXNlcjpzM2NyM3Q="):
            async with http.get(f"{service.url}/Users", headers={"Authorization": header}):
                pass
    assert await stop_service(service) == 0
    output = "".join(service.log)
    requests = [json.loads(line) for line in service.log if '"request_id"' in line]
    assert len(requests) == 3
    assert {r["status"] for r in requests} == {200, 401}
    for secret in (TOKENS[0], TOKENS[1], wrong, "dXNlcjpzM2NyM3Q="):
        assert secret not in output


@pytest.mark.process
@pytest.mark.timeout(60)
async def test_systemd_notifications(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    loop = asyncio.get_running_loop()
    try:
        service = await start_service(write_config(tmp_path))
        ready = await asyncio.wait_for(loop.sock_recv(sock, 256), 10)
        assert ready == b"READY=1"
        service.process.send_signal(signal.SIGTERM)
        stopping = await asyncio.wait_for(loop.sock_recv(sock, 256), 10)
        assert stopping == b"STOPPING=1"
        assert await stop_service(service) == 0
    finally:
        sock.close()


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    env = {
        "JMLSYNC_SERVER__LISTEN": "0.0.0.0:9100",
        "JMLSYNC_PIPELINE__WORKERS": "7",
        "JMLSYNC_SERVER__MAX_BODY_BYTES": "4096",
        "OTHER": "x",
    }
    settings = load_settings(config, env)
    assert settings.server.listen == "0.0.0.0:9100"
    assert settings.pipeline.workers == 7
    assert settings.server.max_body_bytes == 4096
    from jmlsync.config import ConfigError

    with pytest.raises(ConfigError, match=r"pipeline\.workers"):
        load_settings(config, {"JMLSYNC_PIPELINE__WORKERS": "lots"})
    assert os.environ.get("JMLSYNC_SERVER__LISTEN") is None


#: A ledger the service can reach, and a SCIM target on a port nothing listens on.
ONE_TARGET_DOWN = """
[reconcile]
schedule = ""

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[targets.downstream]
kind = "scim"
url = "http://127.0.0.1:{port}/scim/v2"
token_file = "downstream-token"
timeout_seconds = 2
"""


@pytest.mark.process
@pytest.mark.timeout(60)
async def test_a_down_target_is_reported_and_the_service_stays_ready(tmp_path: Path) -> None:
    token = tmp_path / "downstream-token"
    token.write_text("d" * 40 + "\n")
    token.chmod(0o600)
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound for the test, never listening: refused at once
        port = closed.getsockname()[1]
        config = write_config(tmp_path, extra=ONE_TARGET_DOWN.format(port=port))
        service = await start_service(config)
        try:
            root = service.url.removesuffix("/scim/v2")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{root}/readyz") as reply:
                    anonymous = reply.status, await reply.json()
                async with http.get(f"{root}/readyz", headers=headers) as reply:
                    status, body = reply.status, await reply.json()
                async with http.get(f"{root}/metrics", headers=headers) as reply:
                    assert reply.status == 200
                    metrics = await reply.text()
                # Still in the load balancer: the IdP's changes are taken and queued.
                user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]}
                async with http.post(
                    f"{service.url}/Users", json=user | {"userName": "ada@x.io"}, headers=headers
                ) as reply:
                    assert reply.status == 201
        finally:
            assert await stop_service(service) == 0
    assert anonymous == (
        200,
        {
            "status": "ready",
            "checks": ["scheduler", "store", "workers"],
            "targets": {"downstream": "failed", "sandbox": "ok"},
        },
    )
    assert status == 200, body
    assert body["targets"]["sandbox"] == "ok"
    assert body["targets"]["downstream"].startswith("scim target 'downstream': GET /Users:")
    assert f"127.0.0.1:{port}" in body["targets"]["downstream"]
    assert 'jmlsync_target_up{target="downstream"} 0.0' in metrics
    assert 'jmlsync_target_up{target="sandbox"} 1.0' in metrics
    # Three rounds of pings, one log line: the target going down, not each probe.
    down = [line for line in service.log if "is down" in line]
    assert len(down) == 1, down
    assert json.loads(down[0])["target"] == "downstream"
