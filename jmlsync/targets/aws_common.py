"""Plumbing shared by the AWS connectors: clients, the one error translator, pagination,
bounded concurrency, per-principal locks, and the following of asynchronous requests.

Clients come from the standard credential chain (environment, shared config and credentials
files, SSO, container and instance roles); the configuration never holds a secret. botocore's
own retries are off (``total_max_attempts=1``): jmlsync's retry policy wraps every target call,
and two nested retry loops would multiply attempts and hide throttling from it.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, TypeAlias, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    MetadataRetrievalError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.loaders import create_loader
from botocore.parsers import ResponseParserError

from jmlsync.domain.errors import PermanentTargetError, TargetError, TransientTargetError
from jmlsync.ports import LISTING_READ_RETRY

#: A response of an AWS API call, as botocore parses it (botocore is untyped).
Response: TypeAlias = dict[str, Any]

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 30.0
#: Following an asynchronous request (see follow_request).
POLL_FIRST_SECONDS = 0.2
POLL_MAX_SECONDS = 2.0
POLL_TIMEOUT_SECONDS = 60.0

#: Error codes AWS uses for throttling and for its own failures, across protocols.
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerException",
        "InternalFailure",
        "InternalError",
    }
)

#: Failures of the connection or of the response, never of the request itself: a garbled body
#: (ResponseParserError) comes from a proxy or load balancer in trouble, and fetching
#: credentials from instance metadata fails for the same reasons any request does.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    BotoConnectionError,
    HTTPClientError,
    IncompleteReadError,
    ResponseParserError,
    CredentialRetrievalError,
    MetadataRetrievalError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
)


def error_code(error: ClientError) -> str:
    """The AWS error code of ``error`` (``""`` when the response had none)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def _retry_after(error: ClientError) -> float | None:
    headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders") or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        # An HTTP date: rare from AWS; the retry policy's own backoff applies instead.
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def translate(error: ClientError, what: str, transient_codes: Collection[str] = ()) -> TargetError:
    """The target error for an AWS error answer: throttling and 5xx are worth retrying."""
    code = error_code(error)
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = error.response.get("Error", {}).get("Message") or str(error)
    text = f"{what}: {code or status}: {message}"
    if code in TRANSIENT_CODES or code in transient_codes or status == 429 or status >= 500:
        return TransientTargetError(text, retry_after=_retry_after(error))
    return PermanentTargetError(text)


@contextmanager
def translated(what: str, transient_codes: Collection[str] = ()) -> Iterator[None]:
    """Translate every AWS failure raised inside into TransientTargetError or
    PermanentTargetError whose message starts with ``what`` was attempted.

    ``transient_codes`` adds codes that are worth retrying for one service (Identity Center
    answers ConflictException while another operation on the same permission set runs).
    """
    try:
        yield
    except ClientError as exc:
        raise translate(exc, what, transient_codes) from exc
    except _TRANSPORT_ERRORS as exc:
        raise TransientTargetError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except BotoCoreError as exc:
        # Invalid parameters, missing credentials, unknown region: a configuration problem.
        raise PermanentTargetError(f"{what}: {exc}") from exc


async def _read(operation: str, what: str, once: Callable[[], Awaitable[T]]) -> T:
    """``once()``, retried by the engine's listing retry when a listing is being drained and
    ``operation`` only reads (never a write: those are retried whole by the engine)."""
    retry = LISTING_READ_RETRY.get()
    if retry is None or not operation.startswith(_READS):
        return await once()
    return await retry(what, once)


#: Items per chunk of a listing (``MaxItems``; see :meth:`AwsClients.items`).
LISTING_CHUNK = 100
#: Operation names that only read, whatever the service.
_READS = ("list_", "get_", "describe_")


@functools.cache
def _service_models() -> Any:
    """One loader of service models for the process: each model is a large JSON file, read
    once here instead of once per client (a session's own loader reads them anew)."""
    return create_loader()


class AwsClients:
    """The aiobotocore clients of one target, open for the target's lifetime.

    Every call goes through :meth:`call`, :meth:`call_or_none` or :meth:`items`, so every AWS
    failure reaches the engine translated.
    """

    def __init__(
        self,
        stack: AsyncExitStack,
        clients: Mapping[str, Any],
        transient_codes: Mapping[str, Collection[str]] | None = None,
        page_size: int | None = None,
    ) -> None:
        self._stack = stack
        self._clients = dict(clients)
        self._transient = dict(transient_codes or {})
        self.page_size = page_size

    @classmethod
    async def open(
        cls,
        services: Iterable[str],
        *,
        region: str,
        endpoint_url: str | None = None,
        max_pool_connections: int = 10,
        transient_codes: Mapping[str, Collection[str]] | None = None,
        page_size: int | None = None,
    ) -> AwsClients:
        """Create one client per service from the standard credential chain.

        ``page_size`` overrides the services' page sizes (tests make pages small).
        """
        config = AioConfig(
            retries={"total_max_attempts": 1},
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            max_pool_connections=max_pool_connections,
        )
        session = get_session()
        session.register_component("data_loader", _service_models())
        stack = AsyncExitStack()
        clients: dict[str, Any] = {}
        try:
            for service in services:
                client = session.create_client(
                    service, region_name=region, endpoint_url=endpoint_url, config=config
                )
                clients[service] = await stack.enter_async_context(client)
        except BaseException:
            await stack.aclose()
            raise
        return cls(stack, clients, transient_codes, page_size)

    async def close(self) -> None:
        """Close every client and its connection pool."""
        await self._stack.aclose()

    def _what(self, service: str, operation: str) -> str:
        return f"{service} {operation}"

    async def call(self, service: str, operation: str, **params: Any) -> Response:
        """Call ``operation`` of ``service`` once (a read inside a listing: under the listing's
        retry); failures translated."""

        async def once() -> Response:
            with translated(self._what(service, operation), self._transient.get(service, ())):
                response: Response = await getattr(self._clients[service], operation)(**params)
            return response

        return await _read(operation, self._what(service, operation), once)

    async def call_or_none(
        self, service: str, operation: str, *, absent: Collection[str], **params: Any
    ) -> Response | None:
        """Like :meth:`call`, but None when AWS answers one of the ``absent`` error codes
        (``NoSuchEntity``, ``ResourceNotFoundException``): what is looked for is not there."""

        async def once() -> Response | None:
            with translated(self._what(service, operation), self._transient.get(service, ())):
                try:
                    response: Response = await getattr(self._clients[service], operation)(**params)
                except ClientError as exc:
                    if error_code(exc) in absent:
                        return None
                    raise
            return response

        return await _read(operation, self._what(service, operation), once)

    async def items(
        self, service: str, operation: str, key: str, **params: Any
    ) -> AsyncIterator[Any]:
        """Every item under ``key`` of every page of ``operation``, a page at a time.

        Items are fetched in chunks (``MaxItems``, about a page) continued from the
        paginator's resume token, so inside a listing each chunk is retried on its own by the
        listing's retry, never the chunks before it.
        """
        paginator = self._clients[service].get_paginator(operation)
        what = self._what(service, operation)
        transient = self._transient.get(service, ())
        size = self.page_size or LISTING_CHUNK
        token: str | None = None
        while True:

            async def chunk(start: str | None = token) -> tuple[list[Any], str | None]:
                # MaxItems cuts client-side (the service's page size stays its default, which
                # each operation bounds differently): a chunk is a page or a few.
                config: dict[str, Any] = {"MaxItems": size}
                if self.page_size:
                    config["PageSize"] = self.page_size
                if start is not None:
                    config["StartingToken"] = start
                with translated(what, transient):
                    pages = paginator.paginate(**params, PaginationConfig=config)
                    found = [item async for page in pages for item in page.get(key) or ()]
                return found, pages.resume_token

            found, token = await _read(operation, what, chunk)
            for item in found:
                yield item
            if token is None:
                return

    async def all_items(self, service: str, operation: str, key: str, **params: Any) -> list[Any]:
        """:meth:`items` gathered in a list, for the short ones (a user's groups)."""
        return [item async for item in self.items(service, operation, key, **params)]


async def gather_limited(
    calls: Iterable[Callable[[], Awaitable[T]]], limit: int, *, settle: bool = False
) -> list[T]:
    """Run every call, at most ``limit`` at once; their results in order.

    On failure the others are cancelled and one error is raised (not an ExceptionGroup, which
    the retry policy would not recognise): a permanent one when there is one, since retrying
    cannot help then. With ``settle`` the others run to their end first, so calls that keep
    what they learn (a cache) make progress for the retry even when one of them fails.
    """
    slots = asyncio.Semaphore(limit)

    async def limited(call: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await call()

    if settle:
        settled = await asyncio.gather(*(limited(call) for call in calls), return_exceptions=True)
        failures = [e for e in settled if isinstance(e, BaseException)]
        if failures:
            raise next((e for e in failures if isinstance(e, PermanentTargetError)), failures[0])
        return [result for result in settled if not isinstance(result, BaseException)]

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(limited(call)) for call in calls]
    except ExceptionGroup as failed:
        errors = failed.exceptions
        raise next((e for e in errors if isinstance(e, PermanentTargetError)), errors[0]) from None
    return [task.result() for task in tasks]


class KeyedLocks:
    """One asyncio.Lock per key (a principal), dropped when nobody holds or awaits it.

    The connectors check before they write (AWS, or moto, may accept a duplicate); the lock
    keeps two concurrent calls for the same principal from both passing the check.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock of ``key`` for the duration of the block."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


async def follow_request(
    describe: Callable[[], Awaitable[Mapping[str, Any]]],
    first: Mapping[str, Any],
    *,
    what: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    give_up_after: float = POLL_TIMEOUT_SECONDS,
) -> None:
    """Follow an asynchronous AWS request (an Identity Center assignment) from its ``first``
    status until it SUCCEEDED.

    IN_PROGRESS is polled with ``describe`` after waits of 0.2 s doubling to 2 s; FAILED raises
    PermanentTargetError with AWS's FailureReason; still in progress after ``give_up_after``
    raises TransientTargetError, and the retried call finds the result if AWS completed it since.
    """
    status, wait, started = first, POLL_FIRST_SECONDS, clock()
    while True:
        state = status.get("Status")
        if state == "SUCCEEDED":
            return
        if state == "FAILED":
            reason = status.get("FailureReason") or "no reason given"
            raise PermanentTargetError(f"{what}: failed: {reason}")
        if clock() - started >= give_up_after:
            raise TransientTargetError(f"{what}: still {state} after {give_up_after:.0f} s")
        await sleep(wait)
        wait = min(wait * 2, POLL_MAX_SECONDS)
        status = await describe()
