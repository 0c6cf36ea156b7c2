"""The SCIM schemas jmlsync serves (RFC 7643 §8.7) and lookups over them.

Attribute names are case-insensitive in SCIM (RFC 7643 §2.1): every lookup here takes any
spelling and answers with the canonical definition, whose ``name`` is the spelling we store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources
from typing import Any

from jmlsync.domain.directory import ResourceKind

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_REQUEST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


@dataclass(frozen=True)
class Attribute:
    """One attribute definition of a schema (RFC 7643 §7)."""

    name: str
    type: str
    multi_valued: bool = False
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    sub_attributes: tuple[Attribute, ...] = ()
    canonical_values: tuple[str, ...] = ()
    schema: str = ""

    @cached_property
    def _subs(self) -> dict[str, Attribute]:
        return {sub.name.lower(): sub for sub in self.sub_attributes}

    def sub(self, name: str) -> Attribute | None:
        """The sub-attribute called ``name`` (any case), or None."""
        return self._subs.get(name.lower())

    @property
    def is_complex(self) -> bool:
        return self.type == "complex"

    @property
    def read_only(self) -> bool:
        return self.mutability == "readOnly"


def _attribute(raw: dict[str, Any], schema: str) -> Attribute:
    return Attribute(
        name=raw["name"],
        type=raw["type"],
        multi_valued=bool(raw.get("multiValued", False)),
        required=bool(raw.get("required", False)),
        case_exact=bool(raw.get("caseExact", False)),
        mutability=raw.get("mutability", "readWrite"),
        returned=raw.get("returned", "default"),
        uniqueness=raw.get("uniqueness", "none"),
        sub_attributes=tuple(_attribute(s, schema) for s in raw.get("subAttributes", ())),
        canonical_values=tuple(raw.get("canonicalValues", ())),
        schema=schema,
    )


@dataclass(frozen=True)
class Schema:
    """A schema: its URN, its attributes and the document /Schemas publishes."""

    id: str
    name: str
    attributes: tuple[Attribute, ...]
    document: dict[str, Any] = field(compare=False, repr=False)

    @cached_property
    def _by_name(self) -> dict[str, Attribute]:
        return {a.name.lower(): a for a in self.attributes}

    def attribute(self, name: str) -> Attribute | None:
        return self._by_name.get(name.lower())


_META = Attribute(
    name="meta",
    type="complex",
    mutability="readOnly",
    sub_attributes=tuple(
        Attribute(name=n, type=t, mutability="readOnly", case_exact=True)
        for n, t in (
            ("resourceType", "string"),
            ("created", "dateTime"),
            ("lastModified", "dateTime"),
            ("location", "reference"),
            ("version", "string"),
        )
    ),
)

#: Attributes every resource has (RFC 7643 §3.1); not part of any published schema.
COMMON_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(name="id", type="string", mutability="readOnly", returned="always", case_exact=True),
    Attribute(name="externalId", type="string", case_exact=True),
    _META,
)
_COMMON_BY_NAME = {a.name.lower(): a for a in COMMON_ATTRIBUTES}


@dataclass(frozen=True)
class ResourceType:
    """A resource type (User, Group) with its core schema and extensions."""

    name: str
    endpoint: str
    description: str
    schema: Schema
    extensions: tuple[Schema, ...] = ()

    @property
    def kind(self) -> ResourceKind:
        """The name as the store knows resource kinds."""
        return "User" if self.name == "User" else "Group"

    @property
    def schema_ids(self) -> tuple[str, ...]:
        return (self.schema.id, *(e.id for e in self.extensions))

    def extension(self, urn: str) -> Schema | None:
        """The extension schema with this URN (any case), or None."""
        for ext in self.extensions:
            if ext.id.lower() == urn.lower():
                return ext
        return None

    def schema_for(self, urn: str | None) -> Schema | None:
        """The core schema for ``None`` or its URN, an extension for its URN, else None."""
        if urn is None or urn.lower() == self.schema.id.lower():
            return self.schema
        return self.extension(urn)

    def attribute(self, name: str, urn: str | None = None) -> Attribute | None:
        """Resolve a top-level attribute, common attributes included, in the schema ``urn``."""
        if urn is None:
            common = _COMMON_BY_NAME.get(name.lower())
            if common is not None:
                return common
        schema = self.schema_for(urn)
        return schema.attribute(name) if schema is not None else None

    def split_urn(self, path: str) -> tuple[str | None, str]:
        """Split ``urn:...:User:department`` into (extension URN, rest); (None, path) otherwise.

        The core schema URN is accepted as a prefix too and answers ``None``.
        """
        lowered = path.lower()
        for schema in (*self.extensions, self.schema):
            prefix = schema.id.lower() + ":"
            if lowered.startswith(prefix):
                urn = None if schema is self.schema else schema.id
                return urn, path[len(prefix) :]
        return None, path

    def document(self, base_url: str) -> dict[str, Any]:
        """The /ResourceTypes representation."""
        doc: dict[str, Any] = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.description,
            "schema": self.schema.id,
            "meta": {
                "resourceType": "ResourceType",
                "location": f"{base_url}/ResourceTypes/{self.name}",
            },
        }
        if self.extensions:
            doc["schemaExtensions"] = [{"schema": e.id, "required": False} for e in self.extensions]
        return doc


def schema_from_document(doc: dict[str, Any]) -> Schema:
    """A schema from its RFC 7643 §7 representation (as /Schemas publishes it)."""
    return Schema(
        id=doc["id"],
        name=doc["name"],
        attributes=tuple(_attribute(a, doc["id"]) for a in doc["attributes"]),
        document=doc,
    )


def _load_schemas() -> dict[str, Schema]:
    raw = json.loads(resources.files("jmlsync.scim").joinpath("schemas.json").read_text("utf-8"))
    return {doc["id"]: schema_from_document(doc) for doc in raw}


SCHEMAS: dict[str, Schema] = _load_schemas()

USER = ResourceType(
    name="User",
    endpoint="/Users",
    description="User Account",
    schema=SCHEMAS[USER_SCHEMA],
    extensions=(SCHEMAS[ENTERPRISE_USER_SCHEMA],),
)
GROUP = ResourceType(
    name="Group",
    endpoint="/Groups",
    description="Group",
    schema=SCHEMAS[GROUP_SCHEMA],
)
RESOURCE_TYPES: dict[str, ResourceType] = {USER.name: USER, GROUP.name: GROUP}


@dataclass(frozen=True)
class SchemaSet:
    """The resource types and schemas one service serves: the built-in ones plus the
    extension schemas its configuration declares (``[[scim.extensions]]``)."""

    resource_types: dict[str, ResourceType]
    schemas: dict[str, Schema]


def schema_set(extensions: Iterable[tuple[str, dict[str, Any]]] = ()) -> SchemaSet:
    """The built-in resource types with the declared ``(resource type name, schema document)``
    extensions added; the core schemas stay the very same objects."""
    added: dict[str, list[Schema]] = {USER.name: [], GROUP.name: []}
    for resource, document in extensions:
        added[resource].append(schema_from_document(document))
    types = {
        name: replace(base, extensions=(*base.extensions, *added[name]))
        for name, base in RESOURCE_TYPES.items()
    }
    schemas = {**SCHEMAS, **{s.id: s for extra in added.values() for s in extra}}
    return SchemaSet(resource_types=types, schemas=schemas)


#: What a service without declared extensions serves.
BUILT_IN = SchemaSet(resource_types=RESOURCE_TYPES, schemas=SCHEMAS)
