"""Start a real `jmlsync serve` for a benchmark, on a loopback port, with a fresh state folder."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

TOKEN = "bench-" + "y" * 40
_SERVING = re.compile(r"serving SCIM on (http://\S+)")


def write_config(folder: Path, extra: str = "", store_url: str = "sqlite:///jmlsync.db") -> Path:
    (folder / "tokens").write_text(TOKEN + "\n")
    (folder / "tokens").chmod(0o600)
    config = folder / "jmlsync.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\ntokens_file = "tokens"\n'
        '[store]\nurl = "' + store_url + '"\n' + extra
    )
    return config


@asynccontextmanager
async def running(config: Path) -> AsyncIterator[str]:
    """Yield the SCIM base URL of a `jmlsync serve` child process; SIGTERM it afterwards."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jmlsync",
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    url = None
    async with asyncio.timeout(30):
        while url is None:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise RuntimeError("jmlsync serve exited before serving")
            if match := _SERVING.search(line):
                url = match.group(1)

    async def drain() -> None:
        assert process.stdout is not None
        async for _ in process.stdout:
            pass

    drained = asyncio.create_task(drain())
    try:
        yield url
    finally:
        process.terminate()
        await process.wait()
        await drained
