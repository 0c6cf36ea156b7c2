"""A private PostgreSQL cluster for one test: initdb in a temporary directory, its own free
port, stopped and started at will (the shared server on 5432 must never be stopped).

initdb and the server refuse to run as root: as root they run as the ``postgres`` OS user
(``runuser``), in a directory that user owns. Tests are skipped when no initdb is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One cluster: ``url`` names its ``postgres`` database; ``stop`` and ``start`` it."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    async def _run(self, *args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *self._as_postgres,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(60):
            out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({process.returncode}):\n{out.decode()}")

    async def init(self) -> None:
        await self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )

    async def start(self) -> None:
        """Start the server and return once it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
            " -c fsync=off -c max_connections=50"
        )
        await self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    async def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: sessions are ended with an admin shutdown)."""
        await self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"
        )

    def _pids(self) -> list[int]:
        """The postmaster, then every process it started."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        """SIGSTOP the server and its backends: connections stay open, nothing answers."""
        for pid in reversed(self._pids()):
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def log_tail(self, lines: int = 30) -> str:
        path = self.root / "server.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""


@asynccontextmanager
async def pg_cluster() -> AsyncIterator[PgCluster]:
    """A running private cluster, removed on exit (the test is skipped without initdb)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("no initdb installed: the private PostgreSQL cluster cannot be created")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses to run as root")
    root = Path(tempfile.mkdtemp(prefix="jmlsync-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = PgCluster(bin_dir, root)
    try:
        await cluster.init()
        await cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(RuntimeError):  # already stopped
            await cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
