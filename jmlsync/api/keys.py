"""The keys of the HTTP API's application state (aiohttp ``web.AppKey``), in one place.

Each part of the API sets its key when the service mounts it; the handlers read them. The
acting user of a request (``API_USER``) stays beside its type in :mod:`jmlsync.api.tokens`.
"""

from __future__ import annotations

from aiohttp import web

from jmlsync.engine.reviews import Reviews
from jmlsync.engine.timebound import TimeboundAccess

#: The time-bound access engine, for ``/api/v1/access-requests``.
TIMEBOUND: web.AppKey[TimeboundAccess] = web.AppKey("timebound", TimeboundAccess)
#: The access-review engine, for ``/api/v1/reviews``.
REVIEWS: web.AppKey[Reviews] = web.AppKey("reviews", Reviews)
