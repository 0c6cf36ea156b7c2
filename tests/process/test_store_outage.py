"""Store outages under a real ``jmlsync serve`` in the middle of a burst of SCIM changes:

- SQLite on a real full disk: the store lives on a small tmpfs the test mounts, filled to the
  last byte and then freed (the test is skipped where it cannot mount, e.g. without root);
- PostgreSQL: a private cluster the test starts, stopped for a few seconds and started again.

Both: 503 with Retry-After while the store refuses writes, /readyz 503 during the outage and
200 after, every acknowledged change and a later leaver on the ledger, with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import start_service, stop_service, write_config
from tests.outage_burst import (
    HEADERS,
    SETTINGS,
    USER,
    assert_outage_logged_once,
    run_outage,
    status,
)
from tests.pg_cluster import pg_cluster

pytestmark = pytest.mark.process

DISK_BYTES = 16 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of its own: a disk the test can fill."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(path: Path) -> None:
    """Write ``path`` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1024 * 1024, 4096, 512):
            block = b"\0" * chunk
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
    finally:
        os.close(fd)
    assert os.statvfs(path.parent).f_bavail == 0, "the disk is not full"


@pytest.mark.timeout(120)
async def test_sqlite_disk_full_mid_burst(tmp_path: Path, small_disk: Path) -> None:
    config = write_config(tmp_path, extra=SETTINGS)
    config.write_text(
        config.read_text().replace(
            'url = "sqlite:///state/jmlsync.db"', f'url = "sqlite:///{small_disk}/jmlsync.db"'
        )
    )
    filler = small_disk / "filler"

    async def refuses_writes() -> None:
        code, out = await status(config)
        assert code == 1, out
        assert "REFUSES WRITES: SQLite: database or disk is full" in out, out
        assert "Traceback" not in out

    async def fine() -> None:
        code, out = await status(config)
        assert code == 0, out
        assert "REFUSES" not in out

    service = await start_service(config)
    try:
        burst = await run_outage(
            service,
            tmp_path / "ledger.db",
            go_down=lambda: asyncio.to_thread(_fill, filler),
            come_back=lambda: asyncio.to_thread(filler.unlink),
            min_outage_seconds=2,
            while_down=refuses_writes,
            after=fine,
        )
    finally:
        code = await stop_service(service)
    assert code == 0, "".join(service.log[-40:])
    assert_outage_logged_once(service.log, burst)


@pytest.mark.postgresql
@pytest.mark.timeout(120)
async def test_postgres_stopped_mid_burst(tmp_path: Path) -> None:
    async with pg_cluster() as cluster:
        config = write_config(
            tmp_path,
            extra=SETTINGS.replace(
                "[pipeline]",
                "connect_timeout_seconds = 2\ncommand_timeout_seconds = 5\n"
                "acquire_timeout_seconds = 2\n\n[pipeline]",
            ),
        )
        config.write_text(
            config.read_text().replace(
                'url = "sqlite:///state/jmlsync.db"', f'url = "{cluster.url}"'
            )
        )

        async def unreachable() -> None:
            code, out = await status(config)
            assert code == 1, out
            assert out.startswith("jmlsync: the store is unreachable: PostgreSQL"), out
            assert len(out.strip().splitlines()) == 1, out

        async def fine() -> None:
            code, out = await status(config)
            assert code == 0, out

        service = await start_service(config)
        try:
            burst = await run_outage(
                service,
                tmp_path / "ledger.db",
                go_down=cluster.stop,
                come_back=cluster.start,
                min_outage_seconds=3,
                while_down=unreachable,
                after=fine,
            )
        finally:
            code = await stop_service(service)
        assert code == 0, "".join(service.log[-40:]) + cluster.log_tail()
        assert_outage_logged_once(service.log, burst)


@pytest.mark.postgresql
@pytest.mark.timeout(90)
async def test_postgres_frozen_answers_503_in_time_and_readyz_does_not_hang(
    tmp_path: Path,
) -> None:
    async with pg_cluster() as cluster:
        config = write_config(
            tmp_path,
            extra="connect_timeout_seconds = 1\ncommand_timeout_seconds = 1\n"
            "acquire_timeout_seconds = 1\n",
        )
        config.write_text(
            config.read_text().replace(
                'url = "sqlite:///state/jmlsync.db"', f'url = "{cluster.url}"'
            )
        )
        service = await start_service(config)
        root = service.url.split("/scim/")[0]
        counter = iter(range(1000))
        try:
            async with aiohttp.ClientSession(headers=HEADERS) as http:

                async def create() -> tuple[int, dict[str, str], float]:
                    body = {"schemas": [USER], "userName": f"u{next(counter)}@x.io"}
                    started = time.monotonic()
                    async with http.post(f"{service.url}/Users", json=body) as reply:
                        return reply.status, dict(reply.headers), time.monotonic() - started

                async def readyz() -> tuple[int, float]:
                    started = time.monotonic()
                    async with http.get(f"{root}/readyz") as reply:
                        return reply.status, time.monotonic() - started

                assert (await create())[0] == 201
                cluster.freeze()
                try:
                    status, headers, took = await create()
                    assert status == 503, status
                    assert headers["Retry-After"].isdigit()
                    assert took < 5, f"a frozen database held a request {took:.1f}s"
                    status, took = await readyz()
                    assert status == 503
                    assert took < 5, f"a frozen database held /readyz {took:.1f}s"
                finally:
                    cluster.thaw()
                async with asyncio.timeout(30):
                    while (await create())[0] != 201 or (await readyz())[0] != 200:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
        finally:
            assert await stop_service(service) == 0, "".join(service.log[-30:])
        crashes = [line for line in service.log if "Traceback" in line]
        assert crashes == [], crashes[:2]
