"""The HTTP server under the application: aiohttp's, with a deadline on request headers and
quiet logs for malformed requests.

aiohttp bounds an idle connection (``keepalive_timeout``) but not one that trickles a request's
headers a byte at a time: without a deadline, a few hundred such sockets hold the service's
connections for as long as the keep-alive lasts. The body has its own deadline, applied where it
is read (:mod:`jmlsync.scim.intake`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger("jmlsync.http")

#: Stands in for aiohttp's logger while it answers a malformed request, which it would log
#: at ERROR with a traceback: a malformed request is the client's problem, logged at info.
_SILENT = logging.getLogger("jmlsync.http.silenced")
_SILENT.disabled = True


class _DeadlineHandler(RequestHandler):
    """One connection: closed when a request's headers are not all in ``header_timeout``
    seconds after the connection opened or the request's first bytes arrived."""

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._deadline: asyncio.TimerHandle | None = None

    def _waiting_for_headers(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self._loop.call_later(self._header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self._waiting_for_headers():
            return
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log.info(
            "closing a connection from %s: request headers not received within %ss",
            peer[0] if peer else "unknown",
            self._header_timeout,
        )
        self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages:
            self._disarm()
        elif self._waiting_for_headers():
            self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        log.info("malformed HTTP request from %s: %s", request.remote, exc.message)
        logger, self.logger = self.logger, _SILENT
        try:
            return super().handle_error(request, status, exc, message)
        finally:
            self.logger = logger


class _DeadlineServer(web.Server):
    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return _DeadlineHandler(
            self, loop=self._loop, header_timeout=self._header_timeout, **self._kwargs
        )


class DeadlineAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections get a deadline on request headers."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return _DeadlineServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            header_timeout=self._header_timeout,
            **self._kwargs,
        )
