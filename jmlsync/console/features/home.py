"""The landing page every signed-in person may open: who they are, what they may open."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from jmlsync.console.context import Viewer
from jmlsync.console.pages import Feature, Page


async def home(_request: web.Request, viewer: Viewer) -> dict[str, Any]:
    return {"roles": sorted(viewer.roles)}


FEATURE = Feature("home", (Page("/", "Home", "home.html", home, frozenset()),))
