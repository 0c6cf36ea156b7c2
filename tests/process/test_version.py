"""The version of the running service: /healthz, jmlsync_build_info and the start log line."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jmlsync import __version__
from jmlsync.ops.logs import redacted_url
from tests.conftest import (
    BASE_PATH,
    TOKENS,
    ServiceProcess,
    start_service,
    stop_service,
    write_config,
)
from tests.postgres import fresh_database

pytestmark = pytest.mark.timeout(60)


async def test_the_running_service_says_its_version(service: ServiceProcess) -> None:
    root = service.url.removesuffix(BASE_PATH)
    async with aiohttp.ClientSession() as session:
        async with session.get(root + "/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok", "version": __version__}
        headers = {"Authorization": f"Bearer {TOKENS[0]}"}
        async with session.get(root + "/metrics", headers=headers) as response:
            text = await response.text()
    samples = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "jmlsync_build_info"
    ]
    assert [(s.labels, s.value) for s in samples] == [({"version": __version__}, 1.0)]
    start = next(line for line in service.log if "serving SCIM on" in line)
    assert json.loads(start)["msg"].startswith(f"jmlsync {__version__} serving SCIM on ")
    assert json.loads(start)["version"] == __version__


def _config_with_password(tmp_path: Path, url: str) -> Path:
    config = write_config(tmp_path)
    with_password = url.replace("postgresql://postgres@", "postgresql://postgres:s3cr3t-pw@")
    assert with_password != url
    config.write_text(
        config.read_text().replace('"sqlite:///state/jmlsync.db"', f'"{with_password}"')
    )
    return config


@pytest.mark.postgresql
@pytest.mark.process
async def test_the_start_line_hides_the_database_password(tmp_path: Path) -> None:
    async with fresh_database() as url:
        # Trust authentication on the test server ignores the password; the log must not.
        running = await start_service(_config_with_password(tmp_path, url))
        await stop_service(running)
    assert not [line for line in running.log if "s3cr3t-pw" in line]
    assert any("postgres:***@127.0.0.1" in line for line in running.log)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://u:pw@db:5432/j?sslmode=require",
            "postgresql://u:***@db:5432/j?sslmode=require",
        ),
        (
            "postgresql://u@db/j?password=pw&sslmode=require",
            "postgresql://u@db/j?password=***&sslmode=require",
        ),
        ("postgresql://u@db/j", "postgresql://u@db/j"),
        ("sqlite:////var/lib/jmlsync/jmlsync.db", "sqlite:////var/lib/jmlsync/jmlsync.db"),
    ],
)
def test_redacted_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
