"""A webhook receiver on loopback for alert tests: refuses or accepts posts on demand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

#: A part of the webhook's path standing for the credential Slack and Teams put in theirs:
#: tests check that it is never logged or stored.
SECRET = "T000-secret-B000"


class Receiver:
    """Answers each post with the next of ``statuses``, else ``status``; keeps the bodies it
    accepted (2xx) and those it refused. With ``hang`` set, it never answers (until
    :meth:`release`) and keeps the bodies in ``hung``."""

    def __init__(self) -> None:
        self.url = ""
        self.status = 200
        self.statuses: list[int] = []
        self.accepted: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self.hang = False
        #: Sent with every refusal, when set (a throttling hook's ``Retry-After``).
        self.retry_after: str | None = None
        self.hung: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._released = asyncio.Event()
        self._release_status = 503

    def release(self, status: int = 503) -> None:
        """Stop hanging; the posts held so far are answered ``status`` (503)."""
        self.hang = False
        self._release_status = status
        self._released.set()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.hang:
            self.hung.append(body)
            self._changed.set()
            await self._released.wait()
            if self._release_status < 300:
                self.accepted.append(body)
                self._changed.set()
            return web.Response(status=self._release_status)
        status = self.statuses.pop(0) if self.statuses else self.status
        (self.refused if status >= 300 else self.accepted).append(body)
        self._changed.set()
        headers = {"Retry-After": self.retry_after} if self.retry_after and status >= 300 else {}
        return web.Response(status=status, headers=headers)

    async def wait_until(self, condition: Callable[[], bool], seconds: float = 30) -> None:
        """Return once ``condition()`` holds after a post (TimeoutError after ``seconds``)."""
        async with asyncio.timeout(seconds):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post(f"/services/{SECRET}", receiver.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    receiver.url = str(server.make_url(f"/services/{SECRET}"))
    try:
        yield receiver
    finally:
        receiver.release()
        await server.close()
