"""The SCIM requests' handlers: /Users and /Groups (create, read, list, search, replace, patch,
delete), the discovery endpoints and /healthz."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from jmlsync import __version__
from jmlsync.codec import compact_json
from jmlsync.domain.directory import Change, Member, MemberOp, StoredResource
from jmlsync.domain.errors import DuplicateUserName, UnknownMembers
from jmlsync.ports import Query
from jmlsync.scim import discovery
from jmlsync.scim.discovery import list_response
from jmlsync.scim.errors import (
    InvalidFilter,
    InvalidSyntax,
    InvalidValue,
    NotFound,
    PreconditionFailed,
    ScimError,
)
from jmlsync.scim.filters import parse_filter
from jmlsync.scim.intake import read_json
from jmlsync.scim.keys import (
    AUTH,
    BASE_PATH,
    CLOCK,
    LENIENCY,
    PAGE_LIMITS,
    PUBLIC_URL,
    SERVED,
    STORE,
)
from jmlsync.scim.patch import apply_patch
from jmlsync.scim.render import Projection, etag, parse_etags, to_scim
from jmlsync.scim.schema import BUILT_IN, SEARCH_REQUEST_SCHEMA, ResourceType
from jmlsync.scim.unknown import Unknowns
from jmlsync.scim.validate import normalize_resource
from jmlsync.scim.writes import Write, salvage, salvageable, write_leniently

log = logging.getLogger("jmlsync.scim")

SCIM_CONTENT_TYPE = "application/scim+json"


def scim_response(body: dict[str, Any] | None, status: int = 200, **headers: str) -> web.Response:
    """A response with the SCIM media type; ``body`` None answers without content."""
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.Response(
        status=status,
        # A lone surrogate (refused on input, so never expected here) is written as its JSON
        # escape instead of failing the answer with a 500.
        body=compact_json(body),
        content_type=SCIM_CONTENT_TYPE,
        charset="utf-8",
        headers=headers,
    )


def base_url(request: web.Request) -> str:
    """The absolute URL of the SCIM root, for ``meta.location`` and ``$ref``."""
    configured = request.app[PUBLIC_URL]
    if configured:
        return configured
    return f"{request.scheme}://{request.host}{request.app[BASE_PATH]}"


def _now(request: web.Request) -> datetime:
    clock: Callable[[], datetime] = request.app[CLOCK]
    return clock()


def _csv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [part for part in str(value).split(",") if part.strip()]


def _projection(resource_type: ResourceType, params: Any) -> Projection:
    return Projection.parse(
        resource_type, _csv(params.get("attributes")), _csv(params.get("excludedAttributes"))
    )


def _single(
    request: web.Request,
    resource_type: ResourceType,
    stored: StoredResource,
    projection: Projection,
    status: int = 200,
) -> web.Response:
    body = projection.apply(to_scim(stored, resource_type, base_url(request)))
    headers = {"ETag": etag(stored.version)}
    if status == 201:
        headers["Location"] = body.get("meta", {}).get("location") or ""
    return scim_response(body, status, **headers)


def _expected_version(request: web.Request) -> int | None:
    header = request.headers.get("If-Match")
    if header is None:
        return None
    versions = parse_etags(header)
    if None in versions:
        return None
    if len(versions) != 1 or versions[0] is None or versions[0] < 0:
        raise PreconditionFailed(f"If-Match {header!r} names no current version")
    return versions[0]


def _members_change(members: list[dict[str, Any]] | None) -> tuple[MemberOp, ...]:
    if members is None:
        return ()
    items = tuple(Member(value=m["value"], display=m.get("display")) for m in members)
    return (MemberOp("replace", items=items),)


def _wants_relations(resource_type: ResourceType, projection: Projection) -> bool:
    return projection.wants("members" if resource_type.name == "Group" else "groups")


def _int_param(params: Any, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        raise InvalidValue(f"{name} must be an integer")
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidValue(f"{name} must be an integer, got {raw!r}") from exc


def _query(request: web.Request, resource_type: ResourceType, params: Any) -> Query:
    default_count, max_count = request.app[PAGE_LIMITS]
    count = min(max(_int_param(params, "count", default_count), 0), max_count)
    start_index = max(_int_param(params, "startIndex", 1), 1)
    filter_text = params.get("filter")
    if filter_text is not None and not isinstance(filter_text, str):
        raise InvalidFilter("filter must be a string")
    sort_order = str(params.get("sortOrder") or "ascending").lower()
    if sort_order not in ("ascending", "descending"):
        raise InvalidValue(f"sortOrder must be 'ascending' or 'descending', got {sort_order!r}")
    sort_by = params.get("sortBy")
    return Query(
        filter=parse_filter(filter_text, resource_type) if filter_text else None,
        sort_by=_sort_attr(sort_by, resource_type) if sort_by else None,
        descending=sort_order == "descending",
        start_index=start_index,
        count=count,
        with_members=_wants_relations(resource_type, _projection(resource_type, params)),
        member_limit=None if _asks_for_members(params) else max(count, 1),
    )


def _asks_for_members(params: Any) -> bool:
    """True when ``attributes`` names ``members`` (or a sub-attribute, or URN-qualified)."""
    names = _csv(params.get("attributes"))
    return any(name.strip().rsplit(":", 1)[-1].split(".")[0].lower() == "members" for name in names)


def _sort_attr(text: Any, resource_type: ResourceType) -> Any:
    expr = parse_filter(f"{text} pr", resource_type)
    return getattr(expr, "attr", None)


async def _list(
    request: web.Request, resource_types: list[ResourceType], params: Any
) -> web.Response:
    queries = []
    for resource_type in resource_types:
        try:
            queries.append((resource_type, _query(request, resource_type, params)))
        except InvalidFilter:
            if len(resource_types) == 1:
                raise
    if not queries:
        raise InvalidFilter(f"filter {params.get('filter')!r} applies to no resource type")
    store = request.app[STORE]
    url = base_url(request)
    resources: list[dict[str, Any]] = []
    total = 0
    for resource_type, query in queries:
        offset = max(query.start_index - total, 1)
        room = query.count - len(resources)
        page = await store.search(
            resource_type.kind,
            Query(
                filter=query.filter,
                sort_by=query.sort_by,
                descending=query.descending,
                start_index=offset,
                count=room,
                with_members=query.with_members,
                member_limit=query.member_limit,
            ),
        )
        projection = _projection(resource_type, params)
        resources.extend(projection.apply(to_scim(r, resource_type, url)) for r in page.resources)
        total += page.total
    start_index = queries[0][1].start_index
    return scim_response(list_response(resources, total=total, start_index=start_index))


async def search_root(request: web.Request) -> web.Response:
    served = request.app.get(SERVED, BUILT_IN)
    return await _list(request, list(served.resource_types.values()), await _search_body(request))


async def _search_body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidSyntax("a SearchRequest must be a JSON object")
    schemas = body.get("schemas")
    if schemas is not None and SEARCH_REQUEST_SCHEMA not in (schemas or []):
        raise InvalidSyntax(f"schemas must contain {SEARCH_REQUEST_SCHEMA}")
    return body


class ResourceEndpoints:
    """The handlers of one resource type's endpoint (/Users or /Groups)."""

    def __init__(self, resource_type: ResourceType) -> None:
        self.resource_type = resource_type

    async def _write(
        self, request: web.Request, write: Write, build: Callable[[Unknowns], Change]
    ) -> StoredResource:
        kind = self.resource_type.endpoint.strip("/")
        return await write_leniently(request.app[LENIENCY], kind, write, build)

    async def _salvage(
        self, request: web.Request, body: Any, error: Exception, *, put: bool
    ) -> None:
        await salvage(
            request.app[STORE],
            self.resource_type,
            request.match_info["id"],
            body,
            error,
            _now(request),
            put=put,
        )

    async def create(self, request: web.Request) -> web.Response:
        resource_type = self.resource_type
        body = await read_json(request)

        def build(unknowns: Unknowns) -> Change:
            doc, members = normalize_resource(resource_type, body, unknowns)
            return Change(doc=doc, members=_members_change(members))

        store, now = request.app[STORE], _now(request)

        async def write(change: Callable[[], Change]) -> StoredResource:
            return await store.create(resource_type.kind, change(), now)

        stored = await self._write(request, write, build)
        return _single(
            request, resource_type, stored, _projection(resource_type, request.query), 201
        )

    async def get(self, request: web.Request) -> web.Response:
        resource_type = self.resource_type
        projection = _projection(resource_type, request.query)
        stored = await request.app[STORE].get(
            resource_type.kind,
            request.match_info["id"],
            with_members=_wants_relations(resource_type, projection),
        )
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match and stored.version in parse_etags(if_none_match):
            return web.Response(status=304, headers={"ETag": etag(stored.version)})
        return _single(request, resource_type, stored, projection)

    async def _update(
        self,
        request: web.Request,
        body: Any,
        build: Callable[[StoredResource, Unknowns], Change],
        *,
        put: bool,
        with_members: bool,
    ) -> StoredResource:
        resource_type = self.resource_type
        store, now, expected = request.app[STORE], _now(request), _expected_version(request)
        current_of: list[StoredResource] = []

        async def write(change: Callable[[], Change]) -> StoredResource:
            def mutate(current: StoredResource) -> Change:
                current_of[:] = [current]
                return change()

            return await store.update(
                resource_type.kind,
                request.match_info["id"],
                mutate,
                now,
                expected_version=expected,
                with_members=with_members,
            )

        def build_current(unknowns: Unknowns) -> Change:
            return build(current_of[0], unknowns)

        try:
            return await self._write(request, write, build_current)
        except (ScimError, UnknownMembers, DuplicateUserName) as exc:
            if salvageable(exc):
                await self._salvage(request, body, exc, put=put)
            raise

    async def replace(self, request: web.Request) -> web.Response:
        resource_type = self.resource_type
        body = await read_json(request)
        projection = _projection(resource_type, request.query)

        def build(_current: StoredResource, unknowns: Unknowns) -> Change:
            doc, members = normalize_resource(resource_type, body, unknowns)
            return Change(doc=doc, members=_members_change(members))

        stored = await self._update(
            request,
            body,
            build,
            put=True,
            with_members=_wants_relations(resource_type, projection),
        )
        return _single(request, resource_type, stored, projection)

    async def patch(self, request: web.Request) -> web.Response:
        resource_type = self.resource_type
        body = await read_json(request)

        def build(current: StoredResource, unknowns: Unknowns) -> Change:
            result = apply_patch(resource_type, current.doc, body, unknowns)
            return Change(doc=result.doc, members=result.members)

        asked = "attributes" in request.query or "excludedAttributes" in request.query
        projection = _projection(resource_type, request.query)
        # A group may have 100k members: unless asked, answer 204 rather than list them all.
        quiet = resource_type.name == "Group" and not asked
        stored = await self._update(
            request,
            body,
            build,
            put=False,
            with_members=not quiet and _wants_relations(resource_type, projection),
        )
        if quiet:
            return web.Response(status=204, headers={"ETag": etag(stored.version)})
        return _single(request, resource_type, stored, projection)

    async def delete(self, request: web.Request) -> web.Response:
        resource_type = self.resource_type
        await request.app[STORE].delete(
            resource_type.kind,
            request.match_info["id"],
            _now(request),
            expected_version=_expected_version(request),
        )
        return web.Response(status=204)

    async def list_resources(self, request: web.Request) -> web.Response:
        return await _list(request, [self.resource_type], request.query)

    async def search_resources(self, request: web.Request) -> web.Response:
        return await _list(request, [self.resource_type], await _search_body(request))


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def service_provider_config(request: web.Request) -> web.Response:
    limit = request.app[PAGE_LIMITS][1]
    basic = request.app[AUTH].basic_enabled
    return scim_response(discovery.service_provider_config(base_url(request), limit, basic=basic))


async def resource_types(request: web.Request) -> web.Response:
    return scim_response(discovery.resource_type_list(base_url(request), request.app[SERVED]))


async def resource_type(request: web.Request) -> web.Response:
    doc = discovery.resource_type_document(
        request.match_info["id"], base_url(request), request.app[SERVED]
    )
    if doc is None:
        raise NotFound(f"no resource type {request.match_info['id']!r}")
    return scim_response(doc)


async def schemas(request: web.Request) -> web.Response:
    return scim_response(discovery.schema_list(base_url(request), request.app[SERVED]))


async def schema(request: web.Request) -> web.Response:
    doc = discovery.schema_document(
        request.match_info["id"], base_url(request), request.app[SERVED]
    )
    if doc is None:
        raise NotFound(f"no schema {request.match_info['id']!r}")
    return scim_response(doc)
