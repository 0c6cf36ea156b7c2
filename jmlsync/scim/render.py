"""Stored resources as SCIM JSON, and the ``attributes``/``excludedAttributes`` projection."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jmlsync.domain.directory import StoredResource
from jmlsync.scim.schema import Attribute, ResourceType
from jmlsync.scim.unknown import UNRECOGNISED


def etag(version: int) -> str:
    """The weak entity tag of a resource version, as ``meta.version`` and ``ETag`` show it."""
    return f'W/"{version}"'


def parse_etags(header: str) -> list[int | None]:
    """Versions named by an If-Match header; None stands for ``*`` or an unknown tag."""
    versions: list[int | None] = []
    for part in header.split(","):
        tag = part.strip()
        if tag == "*":
            versions.append(None)
            continue
        tag = tag.removeprefix("W/").strip('"')
        versions.append(int(tag) if tag.isdigit() else -1)
    return versions


def to_scim(resource: StoredResource, resource_type: ResourceType, base_url: str) -> dict[str, Any]:
    """The full SCIM representation of a stored resource (before projection)."""
    location = f"{base_url}{resource_type.endpoint}/{resource.id}"
    # A shallow copy: projection builds new containers and never changes the document's own.
    body: dict[str, Any] = {"id": resource.id, **resource.doc}
    body.setdefault("schemas", [resource_type.schema.id])
    if resource.members is not None:
        body["members"] = [
            _ref(m.value, m.display, f"{base_url}/Users/{m.value}", "User")
            for m in resource.members
        ]
    if resource.groups is not None and resource.groups:
        body["groups"] = [
            _ref(g.value, g.display, f"{base_url}/Groups/{g.value}", "direct")
            for g in resource.groups
        ]
    body["meta"] = {
        "resourceType": resource_type.name,
        "created": resource.created,
        "lastModified": resource.last_modified,
        "location": location,
        "version": etag(resource.version),
    }
    return body


def _ref(value: str, display: str | None, location: str, kind: str) -> dict[str, Any]:
    item: dict[str, Any] = {"value": value, "$ref": location, "type": kind}
    if display is not None:
        item["display"] = display
    return item


@dataclass(frozen=True)
class _Path:
    """A requested attribute: the key it lives under (a URN for extensions), name and sub."""

    container: str | None
    attribute: Attribute | None
    sub: str | None


@dataclass(frozen=True)
class Projection:
    """Which attributes a response carries (RFC 7644 §3.9)."""

    resource_type: ResourceType
    attributes: tuple[_Path, ...] = ()
    excluded: tuple[_Path, ...] = ()

    @classmethod
    def parse(
        cls,
        resource_type: ResourceType,
        attributes: Iterable[str] = (),
        excluded: Iterable[str] = (),
    ) -> Projection:
        """Build from the comma-separated parameters; unknown names are ignored."""
        return cls(
            resource_type,
            tuple(p for p in (_resolve(resource_type, a) for a in attributes) if p),
            tuple(p for p in (_resolve(resource_type, a) for a in excluded) if p),
        )

    def wants(self, name: str) -> bool:
        """Whether the top-level core attribute ``name`` will be in the response."""
        attribute = self.resource_type.attribute(name)
        if attribute is None:
            return False
        if self.attributes:
            return any(p.container is None and p.attribute == attribute for p in self.attributes)
        return not any(
            p.container is None and p.attribute == attribute and p.sub is None
            for p in self.excluded
        )

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The response body: ``body`` narrowed as asked, ``returned`` rules enforced."""
        result: dict[str, Any] = {}
        aside: dict[str, Any] = {}
        for key, value in body.items():
            if key in ("id", "schemas"):
                result[key] = value
                continue
            if key.startswith("urn:") and self.resource_type.schema_for(key) is None:
                # Kept verbatim in `store` mode: undeclared, so returned only by default.
                if not self.attributes and isinstance(value, dict):
                    aside.update(value if key == UNRECOGNISED else {key: value})
                continue
            extension = self.resource_type.extension(key)
            if extension is not None and isinstance(value, dict):
                narrowed = {
                    name: sub
                    for name, sub in value.items()
                    if (attribute := extension.attribute(name)) is not None
                    for sub in [self._narrow(extension.id, attribute, sub)]
                    if sub is not None
                }
                if narrowed:
                    result[key] = narrowed
                continue
            attribute = self.resource_type.attribute(key)
            if attribute is None:
                continue
            narrowed_value = self._narrow(None, attribute, value)
            if narrowed_value is not None:
                result[key] = narrowed_value
        for key, value in aside.items():
            result.setdefault(key, value)
        return result

    def _narrow(self, container: str | None, attribute: Attribute, value: Any) -> Any:
        if attribute.returned == "never":
            return None
        if attribute.returned == "always":
            return value
        here = [p for p in self.attributes if _same(p, container, attribute)]
        if self.attributes:
            whole_extension = any(
                p.container == container and p.attribute is None for p in self.attributes
            )
            if not here and not whole_extension:
                return None
            subs = {p.sub for p in here}
            if None in subs or whole_extension or not attribute.is_complex:
                return value
            return _keep_subs(value, {s for s in subs if s})
        if attribute.returned == "request":
            return None
        gone = [p for p in self.excluded if _same(p, container, attribute)]
        if any(p.sub is None for p in gone):
            return None
        if gone and attribute.is_complex:
            return _drop_subs(value, {p.sub for p in gone if p.sub})
        return value


def _same(path: _Path, container: str | None, attribute: Attribute) -> bool:
    return path.container == container and path.attribute == attribute


def _keep_subs(value: Any, subs: set[str]) -> Any:
    def keep(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        return {k: v for k, v in item.items() if k in subs}

    if isinstance(value, list):
        kept = [keep(item) for item in value]
        return [item for item in kept if item] or None
    return keep(value) or None


def _drop_subs(value: Any, subs: set[str]) -> Any:
    def drop(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        return {k: v for k, v in item.items() if k not in subs}

    if isinstance(value, list):
        return [drop(item) for item in value]
    return drop(value)


def _resolve(resource_type: ResourceType, text: str) -> _Path | None:
    text = text.strip()
    if not text:
        return None
    extension = resource_type.extension(text)
    if extension is not None:
        return _Path(container=extension.id, attribute=None, sub=None)
    urn, rest = resource_type.split_urn(text)
    name, _, sub = rest.partition(".")
    attribute = resource_type.attribute(name, urn)
    if attribute is None:
        return None
    canonical_sub = None
    if sub:
        sub_attribute = attribute.sub(sub)
        if sub_attribute is None:
            return None
        canonical_sub = sub_attribute.name
    return _Path(container=urn, attribute=attribute, sub=canonical_sub)
