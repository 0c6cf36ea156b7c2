"""OpenID Connect sign-in: the authorization code flow with PKCE, against one issuer.

The issuer's discovery document names its endpoints; its JWKS verifies the ID token's
signature (joserfc). ``iss``, ``aud``, ``exp``, ``iat`` and ``nonce`` are checked with the
configured clock skew. Discovery and keys are cached; an unknown ``kid`` fetches the keys again
once, so a key rotation at the issuer needs no restart.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from jmlsync.config_console import ConsoleOidcSettings

#: Signature algorithms accepted on ID tokens (never ``none``, never HMAC with the secret).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
_DISCOVERY_TTL = 3600.0
#: A token no cached key verifies fetches the keys again, at most this often.
_KEYS_REFETCH_SECONDS = 60.0


class SignInError(Exception):
    """A sign-in that cannot complete; the message is safe to show and to log."""


@dataclass(frozen=True)
class Pending:
    """What the browser's round trip to the issuer must bring back to: kept server-side."""

    state: str
    nonce: str
    verifier: str


def _reason(exc: Exception) -> str:
    if isinstance(exc, JoseError):
        return " ".join(part for part in (exc.error, exc.description) if part)
    return str(exc)


def new_pending() -> Pending:
    """Fresh ``state``, ``nonce`` and PKCE code verifier (RFC 7636: 43 to 128 characters)."""
    return Pending(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64))


def code_challenge(verifier: str) -> str:
    """The S256 challenge of a PKCE verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OidcClient:
    """One relying party of one issuer."""

    def __init__(
        self,
        settings: ConsoleOidcSettings,
        client_secret: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._http: aiohttp.ClientSession | None = None
        self._secret = client_secret
        self._clock = clock
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._keys: KeySet | None = None
        self._keys_fetched_at = 0.0

    async def open(self) -> None:
        """Open the HTTP client the issuer is reached with."""
        self._http = aiohttp.ClientSession()

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise SignInError("the console's HTTP client is not open")
        return self._http

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._client().get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                if response.status != 200:
                    raise SignInError(f"the identity provider answered {response.status} on {url}")
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SignInError(f"cannot reach the identity provider at {url}: {exc}") from exc
        if not isinstance(document, dict):
            raise SignInError(f"the identity provider's {url} is not a JSON object")
        return document

    async def discovery(self) -> dict[str, Any]:
        """The issuer's ``/.well-known/openid-configuration`` (cached for an hour)."""
        now = self._clock()
        if self._discovery is None or now - self._discovered_at > _DISCOVERY_TTL:
            issuer = self.settings.issuer.rstrip("/")
            document = await self._get_json(f"{issuer}/.well-known/openid-configuration")
            if str(document.get("issuer", "")).rstrip("/") != issuer:
                raise SignInError(
                    f"the discovery document names issuer {document.get('issuer')!r},"
                    f" not {self.settings.issuer!r}"
                )
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(document.get(key), str):
                    raise SignInError(f"the discovery document has no {key}")
            self._discovery, self._discovered_at, self._keys = document, now, None
        return self._discovery

    async def _key_set(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            document = await self._get_json((await self.discovery())["jwks_uri"])
            try:
                self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
                self._keys_fetched_at = self._clock()
            except (JoseError, ValueError, KeyError, TypeError) as exc:
                raise SignInError(f"the identity provider's JWKS is not usable: {exc}") from exc
        return self._keys

    async def authorization_url(self, pending: Pending, redirect_uri: str) -> str:
        """Where to send the browser to sign in."""
        endpoint = (await self.discovery())["authorization_endpoint"]
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(self.settings.scopes),
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": code_challenge(pending.verifier),
                "code_challenge_method": "S256",
            }
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def exchange(self, code: str, pending: Pending, redirect_uri: str) -> dict[str, Any]:
        """Trade the authorization code for tokens; the verified ID token's claims."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": pending.verifier,
        }
        headers = {"Accept": "application/json"}
        if self._secret is None:
            form["client_id"] = self.settings.client_id
        else:
            # client_secret_basic: both parts form-encoded first (RFC 6749 §2.3.1).
            pair = f"{quote(self.settings.client_id, safe='')}:{quote(self._secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        endpoint = (await self.discovery())["token_endpoint"]
        try:
            async with self._client().post(
                endpoint, data=form, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SignInError(f"cannot reach the token endpoint: {exc}") from exc
        if status != 200 or not isinstance(body, dict) or "id_token" not in body:
            error = body.get("error") if isinstance(body, dict) else None
            raise SignInError(f"the token endpoint refused the code ({status}, {error})")
        return await self.verify_id_token(str(body["id_token"]), pending.nonce)

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The claims of an ID token whose signature, issuer, audience, times and nonce hold."""
        try:
            token = jwt.decode(id_token, await self._key_set(), algorithms=ALGORITHMS)
        except (JoseError, ValueError) as exc:
            if self._clock() - self._keys_fetched_at < _KEYS_REFETCH_SECONDS:
                raise SignInError(f"the ID token is not valid: {_reason(exc)}") from exc
            try:  # the issuer may have rotated its keys since they were fetched
                token = jwt.decode(id_token, await self._key_set(True), algorithms=ALGORITHMS)
            except (JoseError, ValueError) as again:
                raise SignInError(f"the ID token is not valid: {_reason(again)}") from again
        issuer = (await self.discovery())["issuer"]
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=self.settings.clock_skew_seconds,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": self.settings.client_id},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(token.claims)
        except JoseError as exc:
            raise SignInError(f"the ID token is not valid: {_reason(exc)}") from exc
        audience = token.claims["aud"]
        several = isinstance(audience, list) and len(audience) > 1
        if several and token.claims.get("azp") != self.settings.client_id:
            raise SignInError("the ID token is for several audiences and not authorized to us")
        return dict(token.claims)
