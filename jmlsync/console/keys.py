"""The keys of the console's application state (aiohttp ``web.AppKey``), in one place.

The console's builder sets them; the pages, the sign-in and the layout read them. The viewer
of a request (``VIEWER_KEY``) stays beside its type in :mod:`jmlsync.console.context`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from jmlsync.console.context import Console

if TYPE_CHECKING:
    from jmlsync.console.pages import Feature

#: The engines and ports the pages read and act through.
CONSOLE: web.AppKey[Console] = web.AppKey("console", Console)
#: The console's base path (``[console].base_path``).
BASE: web.AppKey[str] = web.AppKey("console_base", str)
#: The features routed, in the navigation's order.
FEATURES_KEY: web.AppKey[tuple[Feature, ...]] = web.AppKey("console_features", tuple)
