"""Plumbing shared by the Alibaba Cloud connectors: the SDK client, the one error translator,
and the listing retry of read calls.

The clients are the official SDKs (``alibabacloud-ram20150501``, ``alibabacloud-cloudsso20210515``)
on ``alibabacloud-tea-openapi``, called through their ``*_async`` methods. Credentials come from
the standard Alibaba Cloud credential chain (``alibabacloud-credentials``: environment, profile
files, ECS RAM role), never from the configuration. The SDK's own retries are off: jmlsync's
retry policy wraps every target call, and two nested retry loops would multiply attempts and
hide throttling from it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias, TypeVar

import aiohttp
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.exceptions import CredentialException
from alibabacloud_tea_openapi.exceptions import ThrottlingException
from alibabacloud_tea_openapi.utils_models import Config
from darabonba.exceptions import DaraException, ResponseException, UnretryableException
from darabonba.policy.retry import RetryOptions
from darabonba.runtime import RuntimeOptions

from jmlsync.domain.errors import PermanentTargetError, TargetError, TransientTargetError
from jmlsync.ports import LISTING_READ_RETRY
from jmlsync.targets.alibaba_settings import AlibabaCloudSsoTargetSettings, AlibabaRamTargetSettings

#: A response body of an Alibaba Cloud API call, as the SDK's model maps it.
Body: TypeAlias = dict[str, Any]

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 5.0

#: Error codes Alibaba Cloud uses for throttling and for its own failures, across products.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "Throttling.User",
        "Throttling.Api",
        "Throttling.Concurrency",
        "ServiceUnavailable",
        "InternalError",
        "UnknownError",
    }
)

#: The first word of every "no such thing" code: RAM says ``EntityNotExist.User``,
#: CloudSSO ``EntityNotExists.User``.
ABSENT = ("EntityNotExist",)
#: The first word of every "already there" code (``EntityAlreadyExists.User.Group``).
EXISTS = ("EntityAlreadyExists",)

#: Operation names that only read, whatever the product.
_READS = ("list_", "get_")


def _code(error: ResponseException) -> str:
    return str(getattr(error, "code", "") or "")


def _status(error: ResponseException) -> int:
    try:
        return int(getattr(error, "status_code", 0) or 0)
    except (TypeError, ValueError):
        return 0


def _retry_after(error: ResponseException) -> float | None:
    # The SDK reads ``x-acs-retry-after`` (milliseconds) off a throttled answer.
    waited = getattr(error, "retry_after", None)
    if isinstance(waited, int | float) and waited > 0:
        return waited / 1000
    return None


def translate(
    error: ResponseException, what: str, transient_codes: Collection[str] = ()
) -> TargetError:
    """The target error for an Alibaba Cloud error answer: throttling and 5xx are transient."""
    code, status = _code(error), _status(error)
    data = getattr(error, "data", None) or {}
    message = (data.get("Message") if isinstance(data, dict) else None) or str(error)
    request_id = getattr(error, "request_id", None)
    text = f"{what}: {code or status}: {message}" + (
        f" (request {request_id})" if request_id else ""
    )
    throttled = isinstance(error, ThrottlingException) or code.startswith("Throttling")
    if (
        throttled
        or code in TRANSIENT_CODES
        or code in transient_codes
        or status == 429
        or status >= 500
    ):
        return TransientTargetError(text, retry_after=_retry_after(error))
    return PermanentTargetError(text)


@contextmanager
def translated(what: str, transient_codes: Collection[str] = ()) -> Iterator[None]:
    """Translate every SDK failure raised inside into TransientTargetError or
    PermanentTargetError whose message starts with ``what`` was attempted."""
    try:
        yield
    except ResponseException as exc:
        raise translate(exc, what, transient_codes) from exc
    except UnretryableException as exc:
        # The SDK wraps what went wrong before an answer was read: a refused or reset
        # connection, a timeout, a body that is not JSON (a proxy in trouble), or the
        # credential chain.
        inner = getattr(exc, "inner_exception", None)
        if isinstance(inner, CredentialException):
            raise PermanentTargetError(f"{what}: credentials: {inner}") from exc
        raise TransientTargetError(f"{what}: {type(inner).__name__}: {inner}") from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise TransientTargetError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except CredentialException as exc:
        raise PermanentTargetError(f"{what}: credentials: {exc}") from exc
    except DaraException as exc:
        # Parameters the SDK refused before sending: a configuration or role problem.
        raise PermanentTargetError(f"{what}: {exc}") from exc


@functools.cache
def credentials() -> CredentialClient:
    """The process's one client of the default credential chain. One, because the chain's
    ECS RAM role provider starts a thread that refreshes its credentials: a client per target
    opened would start a thread each."""
    return CredentialClient()


def sdk_config(settings: AlibabaRamTargetSettings | AlibabaCloudSsoTargetSettings) -> Config:
    """The SDK's client configuration: the endpoint, the credential chain, no SDK retries."""
    return Config(
        credential=credentials(),
        region_id=settings.region,
        endpoint=settings.endpoint,
        protocol=settings.protocol.upper(),
        connect_timeout=int(CONNECT_TIMEOUT_SECONDS * 1000),
        read_timeout=int(settings.timeout_seconds * 1000),
        retry_options=RetryOptions({"retryable": False}),
    )


class AlibabaApi:
    """One SDK client of a target; every call goes through :meth:`call` or
    :meth:`call_or_none`, so every failure reaches the engine translated."""

    def __init__(
        self,
        product: str,
        client: Any,
        settings: AlibabaRamTargetSettings | AlibabaCloudSsoTargetSettings,
        transient_codes: Collection[str] = (),
    ) -> None:
        self._product = product
        self._client = client
        self._transient = frozenset(transient_codes)
        self._runtime = RuntimeOptions(
            autoretry=False,
            read_timeout=int(settings.timeout_seconds * 1000),
            connect_timeout=int(CONNECT_TIMEOUT_SECONDS * 1000),
        )

    async def call(self, operation: str, request: Any) -> Body:
        """Call ``operation`` once (a read inside a listing: under the listing's retry);
        the response body as a mapping; failures translated."""

        async def once() -> Body:
            return await self._send(operation, request)

        return await self._read(operation, once)

    async def call_or_none(
        self, operation: str, request: Any, *, absent: Collection[str] = ABSENT
    ) -> Body | None:
        """Like :meth:`call`, but None when the answer's code starts with one of ``absent``:
        what is looked for (or removed) is not there."""

        async def once() -> Body | None:
            try:
                return await self._send(operation, request)
            except TargetError as exc:
                cause = exc.__cause__
                if isinstance(cause, ResponseException) and _code(cause).startswith(tuple(absent)):
                    return None
                raise

        return await self._read(operation, once)

    async def _send(self, operation: str, request: Any) -> Body:
        method: Callable[..., Awaitable[Any]] = getattr(
            self._client, f"{operation}_with_options_async"
        )
        # Operations without parameters (ListDirectories) take the runtime options alone.
        arguments = (self._runtime,) if request is None else (request, self._runtime)
        with translated(self._what(operation), self._transient):
            response = await method(*arguments)
        body: Body = response.body.to_map() if response.body is not None else {}
        return body

    def _what(self, operation: str) -> str:
        return f"{self._product} {operation}"

    async def _read(self, operation: str, once: Callable[[], Awaitable[T]]) -> T:
        retry = LISTING_READ_RETRY.get()
        if retry is None or not operation.startswith(_READS):
            return await once()
        return await retry(self._what(operation), once)
