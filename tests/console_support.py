"""The console under test: a Canaille OIDC provider (pytest-iam) on loopback, a real
``jmlsync serve`` with the console enabled, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import datetime
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import portpicker
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import TOKENS, ScimClient

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Screenshots of each page, for people to look at (not asserted on).
SCREENSHOTS = Path(tempfile.gettempdir()) / "jmlsync-console-screenshots"
SECRET = "console-client-secret"
ADMINS = "console-admins"


def console_config(
    config: Path, iam_url: str, client_id: str, port: int, *, idle: int = 1800, extra: str = ""
) -> None:
    """Turn the test configuration into one serving the console on ``port`` (``extra``:
    more configuration, appended)."""
    secret = config.parent / "oidc-secret"
    secret.write_text(SECRET + "\n")
    text = config.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"')
    text += f"""
[sla]
verify_every_seconds = 3600

[console]
enabled = true
insecure_http = true
admin_groups = ["{ADMINS}"]
idle_timeout_seconds = {idle}

[console.oidc]
issuer = "{iam_url.rstrip("/")}"
client_id = "{client_id}"
client_secret_file = "oidc-secret"
scopes = ["openid", "email", "profile", "groups"]
groups_claim = "groups"

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "eng"
grants = [{{ target = "sandbox", role = "deployer" }}]
"""
    text += extra
    config.write_text(text)


def register_client(iam_server: Any, port: int) -> Any:
    """jmlsync as a confidential client of the provider, redirected back to ``port``."""
    client = iam_server.models.Client(
        client_id=f"jmlsync-{uuid.uuid4().hex[:8]}",
        client_secret=SECRET,
        client_name="jmlsync console",
        client_id_issued_at=datetime.datetime.now(datetime.UTC),
        redirect_uris=[f"http://127.0.0.1:{port}/console/callback"],
        grant_types=["authorization_code"],
        response_types=["code"],
        token_endpoint_auth_method="client_secret_basic",
        scope=["openid", "email", "profile", "groups"],
    )
    iam_server.backend.save(client)
    client.audience = [client]  # the ID token's aud: this client
    iam_server.backend.save(client)
    return client


def provider_user(iam_server: Any, client: Any, email: str) -> Any:
    """A person at the provider, who has consented to the console."""
    local = email.split("@")[0]
    user = iam_server.random_user(user_name=local, emails=[email])
    iam_server.consent(user, client)
    return user


def free_port() -> int:
    return int(portpicker.pick_unused_port())


@asynccontextmanager
async def scim_client(url: str) -> AsyncIterator[ScimClient]:
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield ScimClient(session, url.rstrip("/"))


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless; never a downloaded browser."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def chromium_missing() -> bool:
    return not (CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK))
