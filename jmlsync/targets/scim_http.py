"""The HTTP side of the SCIM connector: one authenticated request, its errors, and paging.

Every failure leaves here as a TargetError: throttling, 5xx, timeouts and broken connections as
TransientTargetError, every other refusal as :class:`ScimRefused`. The bearer token is sent in
one header and appears in no message, log line or repr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp

from jmlsync.domain.errors import ConfigError, PermanentTargetError, TransientTargetError
from jmlsync.ports import LISTING_READ_RETRY

log = logging.getLogger("jmlsync.targets.scim")

SCIM_JSON = "application/scim+json"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

Json = dict[str, Any]


class ScimRefused(PermanentTargetError):
    """The service provider answered a 4xx other than 429; ``status`` and ``scim_type`` tell
    which, so callers can treat a 404 or an ``invalidFilter`` as an answer."""

    def __init__(self, message: str, *, status: int, scim_type: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.scim_type = scim_type


def read_token(name: str, path: Path) -> str:
    """The bearer token: the first line of ``path`` that is neither blank nor a ``#`` comment."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"target {name!r}: cannot read token_file {str(path)!r}: {exc.strerror}"
        ) from None
    for line in text.splitlines():
        token = line.strip()
        if token and not token.startswith("#"):
            return token
    raise ConfigError(f"target {name!r}: token_file {str(path)!r} holds no token")


def quote(value: str) -> str:
    """``value`` as a SCIM filter literal: a JSON string (RFC 7644 §3.4.2.2), so quotes and
    backslashes in a userName cannot end the literal early."""
    return json.dumps(value, ensure_ascii=False)


def retry_after(header: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not header:
        return None
    text = header.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class ScimClient:
    """Requests to one SCIM service provider under ``base_url``, ``concurrency`` at a time."""

    def __init__(
        self,
        target: str,
        base_url: str,
        token: str,
        *,
        http: aiohttp.ClientSession,
        owns_http: bool,
        timeout_seconds: float,
        concurrency: int,
    ) -> None:
        self.target = target
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": SCIM_JSON}
        self._token = token
        self._http = http
        self._owns_http = owns_http
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._slots = asyncio.Semaphore(concurrency)
        # None until the server answered a cursor request: then whether it pages by cursor.
        self._cursors: bool | None = None

    def __repr__(self) -> str:
        return f"ScimClient({self.target!r}, {self.base_url!r})"

    async def close(self) -> None:
        """Close the HTTP session when this client opened it; a shared one stays open."""
        if self._owns_http:
            await self._http.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Json | None = None,
    ) -> Json | None:
        """Send one request; the JSON answer, or None when it has no body (204).

        A GET inside a listing runs under the listing's retry (see ``LISTING_READ_RETRY``).
        """
        retry = LISTING_READ_RETRY.get()
        if retry is None or method != "GET":
            return await self._send(method, path, params, body)
        return await retry(
            self._where(method, path, "read"), lambda: self._send(method, path, params, body)
        )

    async def _send(
        self, method: str, path: str, params: Mapping[str, str] | None, body: Json | None
    ) -> Json | None:
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers["Content-Type"] = SCIM_JSON
            data = json.dumps(body).encode()
        started = time.perf_counter()
        async with self._slots:
            try:
                async with self._http.request(
                    method,
                    self.base_url + path,
                    params=params,
                    data=data,
                    headers=headers,
                    timeout=self._timeout,
                    # A redirect could carry the bearer token elsewhere; SCIM APIs need none.
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    raw = await response.read()
                    wait = retry_after(response.headers.get("Retry-After"))
            except TimeoutError:
                raise TransientTargetError(self._where(method, path, "timed out")) from None
            except aiohttp.ClientError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                raise TransientTargetError(self._where(method, path, reason)) from None
        log.debug(
            "scim %s %s status=%d duration_ms=%.1f",
            method,
            path,
            status,
            (time.perf_counter() - started) * 1000,
            extra={"target": self.target},
        )
        decoded = _decode(raw)
        if status >= 300:
            raise self._error(method, path, status, decoded, wait)
        if isinstance(decoded, str):
            # A 2xx that is not JSON (a proxy's page) must not read as "nothing found".
            text = f"HTTP {status} with a body that is not JSON"
            raise TransientTargetError(self._where(method, path, text))
        return decoded if isinstance(decoded, dict) else None

    async def pages(
        self, path: str, params: Mapping[str, str], *, page_size: int
    ) -> AsyncIterator[list[Json]]:
        """The resources of a list request, one page at a time.

        Cursor paging (RFC 9865) is tried first, as IAM Identity Center pages no other way and
        ignores ``startIndex``; a server that refuses cursors is paged by ``startIndex`` from
        then on. A page may hold fewer than ``count`` resources without being the last.
        """
        count = str(page_size)
        answer = await self._first_page(path, params, count)
        start, cursor = 1, ""
        while True:
            resources = [r for r in answer.get("Resources") or [] if isinstance(r, dict)]
            if resources:
                yield resources
            after = answer.get("nextCursor")
            if isinstance(after, str) and after:
                if after == cursor:
                    raise PermanentTargetError(self._where("GET", path, "the cursor repeats"))
                cursor = after
                query = {**params, "cursor": cursor, "count": count}
            else:
                start += len(resources)
                total = answer.get("totalResults")
                if not resources or not isinstance(total, int) or start > total:
                    return
                query = {**params, "startIndex": str(start), "count": count}
            answer = await self.request("GET", path, params=query) or {}

    async def _first_page(self, path: str, params: Mapping[str, str], count: str) -> Json:
        if self._cursors is not False:
            query = {**params, "cursor": "", "count": count}
            try:
                answer = await self.request("GET", path, params=query) or {}
            except ScimRefused as exc:
                if self._cursors or exc.status not in {400, 501}:
                    raise
            else:
                self._cursors = True
                return answer
        # Refused with a cursor: the index request tells whether the cursor or the query was
        # at fault; only its success proves the server pages by index alone.
        query = {**params, "startIndex": "1", "count": count}
        by_index = await self.request("GET", path, params=query) or {}
        if self._cursors is None:
            log.info("scim target %r refuses cursor paging: paging by index", self.target)
            self._cursors = False
        return by_index

    def _where(self, method: str, path: str, what: str) -> str:
        return f"scim target {self.target!r}: {method} {path}: {what}"

    def _error(
        self, method: str, path: str, status: int, decoded: object, wait: float | None
    ) -> Exception:
        detail, scim_type = _detail(decoded)
        # A server may echo the Authorization header back in its detail; never pass it on.
        detail = detail.replace(self._token, "[token]")
        text = f"HTTP {status}" + (f" {scim_type}" if scim_type else "") + f": {detail}"
        message = self._where(method, path, text)
        # 501 and 505 say the server lacks a feature: asking again will not grow it.
        if status == 429 or (status >= 500 and status not in {501, 505}):
            return TransientTargetError(message, retry_after=wait)
        return ScimRefused(message, status=status, scim_type=scim_type)


def _decode(raw: bytes) -> object:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", "replace")


def _detail(decoded: object) -> tuple[str, str | None]:
    """The SCIM error's ``detail`` and ``scimType``, or the start of a non-SCIM body."""
    if isinstance(decoded, dict):
        detail = decoded.get("detail")
        scim_type = decoded.get("scimType")
        return (
            str(detail) if detail is not None else "no detail",
            str(scim_type) if scim_type else None,
        )
    return (str(decoded).strip() or "empty body") if decoded else "empty body", None
