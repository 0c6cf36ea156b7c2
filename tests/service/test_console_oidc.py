"""The console's ID token checks against a locally made issuer (discovery and JWKS served
in-process): the signature, the issuer, the audience, the times with clock skew, the nonce."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc import jwt
from joserfc.jwk import RSAKey

from jmlsync.config_console import ConsoleOidcSettings
from jmlsync.console.oidc import OidcClient, SignInError, code_challenge

pytestmark = pytest.mark.timeout(30)

KEY = RSAKey.generate_key(2048, parameters={"kid": "good"})
OTHER = RSAKey.generate_key(2048, parameters={"kid": "good"})


@pytest.fixture
async def issuer() -> AsyncIterator[str]:
    """An issuer serving its discovery document and the public half of KEY."""
    urls: dict[str, str] = {}

    async def discovery(_request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": urls["issuer"],
                "authorization_endpoint": urls["issuer"] + "/authorize",
                "token_endpoint": urls["issuer"] + "/token",
                "jwks_uri": urls["issuer"] + "/jwks",
            }
        )

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response({"keys": [KEY.as_dict(private=False)]})

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    urls["issuer"] = str(server.make_url("")).rstrip("/")
    try:
        yield urls["issuer"]
    finally:
        await server.close()


@pytest.fixture
async def client(issuer: str) -> AsyncIterator[OidcClient]:
    settings = ConsoleOidcSettings(issuer=issuer, client_id="jmlsync", clock_skew_seconds=30)
    oidc = OidcClient(settings, None)
    await oidc.open()
    try:
        yield oidc
    finally:
        await oidc.close()


def _token(issuer: str, key: RSAKey = KEY, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": issuer, "aud": "jmlsync", "sub": "s1", "iat": now, "exp": now + 300}
    body |= {"nonce": "n1", "email": "alice@example.org"}
    body.update(claims)
    return jwt.encode({"alg": "RS256", "kid": key.kid}, body, key)


async def test_a_token_signed_by_the_issuer_is_accepted(client: OidcClient, issuer: str) -> None:
    claims = await client.verify_id_token(_token(issuer), "n1")
    assert claims["email"] == "alice@example.org"


async def test_a_token_signed_with_another_key_is_refused(client: OidcClient, issuer: str) -> None:
    with pytest.raises(SignInError, match="not valid"):
        await client.verify_id_token(_token(issuer, OTHER), "n1")


@pytest.mark.parametrize(
    ("claims", "nonce"),
    [
        ({"aud": "someone-else"}, "n1"),
        ({"iss": "https://evil.example"}, "n1"),
        ({"exp": int(time.time()) - 120}, "n1"),
        ({}, "another-nonce"),
        ({"nonce": None}, "n1"),
    ],
    ids=["audience", "issuer", "expired-beyond-skew", "nonce", "no-nonce"],
)
async def test_claims_that_do_not_hold_are_refused(
    client: OidcClient, issuer: str, claims: dict[str, Any], nonce: str
) -> None:
    token_claims = {k: v for k, v in claims.items() if v is not None}
    token = _token(issuer, **token_claims)
    if "nonce" in claims and claims["nonce"] is None:
        now = int(time.time())
        body = {"iss": issuer, "aud": "jmlsync", "sub": "s1", "iat": now, "exp": now + 300}
        token = jwt.encode({"alg": "RS256", "kid": "good"}, body, KEY)
    with pytest.raises(SignInError):
        await client.verify_id_token(token, nonce)


async def test_an_expiry_within_the_clock_skew_is_accepted(client: OidcClient, issuer: str) -> None:
    token = _token(issuer, exp=int(time.time()) - 10)
    assert (await client.verify_id_token(token, "n1"))["sub"] == "s1"


async def test_an_unsigned_token_is_refused(client: OidcClient, issuer: str) -> None:
    header = "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    body = _token(issuer).split(".")[1]
    with pytest.raises(SignInError):
        await client.verify_id_token(f"{header}.{body}.", "n1")


async def test_the_authorization_url_carries_state_nonce_and_pkce(client: OidcClient) -> None:
    from jmlsync.console.oidc import new_pending

    pending = new_pending()
    url = await client.authorization_url(pending, "https://jml.example/console/callback")
    assert f"state={pending.state}" in url
    assert f"nonce={pending.nonce}" in url
    assert f"code_challenge={code_challenge(pending.verifier)}" in url
    assert "code_challenge_method=S256" in url
    assert pending.verifier not in url
