"""What the logs carry: the client and its user agent on each request line, and journald
priorities when stdout is the journal. Through a real ``jmlsync serve`` process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from jmlsync.ops.logs import priority, setup_logging, written_in_background
from tests.conftest import BASE_PATH, TOKENS, start_service, stop_service, write_config

pytestmark = pytest.mark.timeout(60)


def _request_lines(log: list[str], path: str) -> list[dict[str, object]]:
    lines = []
    for text in log:
        start = text.find("{")
        if start < 0:
            continue
        document = json.loads(text[start:])
        if document.get("path") == path:
            lines.append(document)
    return lines


@pytest.mark.process
async def test_request_lines_carry_the_client_and_user_agent(tmp_path: Path) -> None:
    service = await start_service(write_config(tmp_path))
    try:
        headers = {
            "Authorization": f"Bearer {TOKENS[0]}",
            "User-Agent": "Okta SCIM Client 1.0\t" + "x" * 300,
        }
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(service.url.rstrip("/") + "/Users") as reply:
                assert reply.status == 200
            async with http.get(
                service.url.rstrip("/").removesuffix(BASE_PATH) + "/healthz"
            ) as reply:
                assert reply.status == 200
    finally:
        assert await stop_service(service) == 0
    (line,) = _request_lines(service.log, BASE_PATH + "/Users")
    assert line["client"] == "127.0.0.1"
    # A tab escaped, and cut at 200 characters: the client chooses what it sends.
    assert line["user_agent"] == ("Okta SCIM Client 1.0\\t" + "x" * 300)[:197] + "..."
    assert line["status"] == 200


async def _journal_run(tmp_path: Path, *, matching: bool) -> list[str]:
    """Start serve with stdout in a file that JOURNAL_STREAM names (or not); its lines."""
    config = write_config(tmp_path)
    out = tmp_path / "journal.log"
    with out.open("wb") as handle:
        status = os.fstat(handle.fileno())
        stream = f"{status.st_dev}:{status.st_ino}" if matching else f"{status.st_dev}:0"
        env = {**os.environ, "JOURNAL_STREAM": stream, "PYTHONUNBUFFERED": "1"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jmlsync",
            "serve",
            "--config",
            str(config),
            stdout=handle,
            stderr=handle,
            env=env,
        )
    try:
        async with asyncio.timeout(30):
            while "serving SCIM on" not in out.read_text():
                assert process.returncode is None, out.read_text()
                await asyncio.sleep(0.05)  # a file has nothing to await: poll, bounded
    finally:
        process.terminate()
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    return out.read_text().splitlines()


async def test_journal_lines_start_with_their_priority(tmp_path: Path) -> None:
    lines = await _journal_run(tmp_path, matching=True)
    serving = next(line for line in lines if "serving SCIM on" in line)
    assert serving.startswith("<6>{")
    assert json.loads(serving.removeprefix("<6>"))["level"] == "info"
    assert all(line.startswith("<") for line in lines), lines


async def test_no_priority_when_stdout_is_not_the_journal(tmp_path: Path) -> None:
    lines = await _journal_run(tmp_path, matching=False)
    serving = next(line for line in lines if "serving SCIM on" in line)
    assert serving.startswith("{")


@pytest.mark.parametrize(
    ("level", "prio"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
        (logging.WARNING + 5, 4),
    ],
)
def test_priorities_follow_sd_daemon(level: int, prio: int) -> None:
    assert priority(level) == prio


def test_every_line_of_a_record_is_prefixed(tmp_path: Path) -> None:
    path = tmp_path / "out"
    with path.open("w") as stream:
        status = os.fstat(stream.fileno())
        setup_logging(
            stream=stream,
            json_lines=False,
            environ={"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"},
        )
        try:
            logging.getLogger("jmlsync.test").warning("first\nsecond")
        finally:
            logging.getLogger().handlers.clear()
    lines = path.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<4>", "<4>"]
    assert lines[1] == "<4>second"


def test_lines_written_in_the_background_are_the_same_lines(tmp_path: Path) -> None:
    path = tmp_path / "out"
    with path.open("w") as stream:
        setup_logging(stream=stream, json_lines=True, environ={})
        try:
            with written_in_background():
                log = logging.getLogger("jmlsync.test")
                fields = {"request_id": "abc", "status": 201}
                log.info("%s %s", "POST", "/Users", extra={"fields": fields})
                try:
                    raise ValueError("boom")
                except ValueError:
                    log.exception("failed %d", 7)
            assert isinstance(logging.getLogger().handlers[0], logging.StreamHandler)
        finally:
            logging.getLogger().handlers.clear()
    first, second = (json.loads(line) for line in path.read_text().splitlines()[:2])
    assert first["msg"] == "POST /Users"
    assert (first["request_id"], first["status"], first["level"]) == ("abc", 201, "info")
    assert second["msg"] == "failed 7"
    assert "ValueError: boom" in second["exc"]
