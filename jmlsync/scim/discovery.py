"""The discovery documents: /ServiceProviderConfig, /ResourceTypes and /Schemas (RFC 7644 §4)."""

from __future__ import annotations

import copy
from typing import Any

from jmlsync.scim.schema import BUILT_IN, LIST_RESPONSE_SCHEMA, SchemaSet


def service_provider_config(
    base_url: str, max_results: int, *, basic: bool = False
) -> dict[str, Any]:
    """What this service provider supports, exactly (HTTP Basic when ``basic``)."""
    schemes: list[dict[str, Any]] = [
        {
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A static bearer token from the server's tokens file",
            "primary": True,
        }
    ]
    if basic:
        schemes.append(
            {
                "type": "httpbasic",
                "name": "HTTP Basic",
                "description": "A username and password from the server's tokens file",
            }
        )
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": max_results},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "authenticationSchemes": schemes,
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{base_url}/ServiceProviderConfig",
        },
    }


def schema_document(
    schema_id: str, base_url: str, served: SchemaSet = BUILT_IN
) -> dict[str, Any] | None:
    """The /Schemas/{id} representation, or None for an unknown schema."""
    schema = served.schemas.get(schema_id)
    if schema is None:
        return None
    doc = copy.deepcopy(schema.document)
    doc["schemas"] = ["urn:ietf:params:scim:schemas:core:2.0:Schema"]
    doc["meta"] = {"resourceType": "Schema", "location": f"{base_url}/Schemas/{schema.id}"}
    return doc


def schema_list(base_url: str, served: SchemaSet = BUILT_IN) -> dict[str, Any]:
    docs = [schema_document(schema_id, base_url, served) for schema_id in served.schemas]
    return list_response([d for d in docs if d is not None])


def resource_type_document(
    name: str, base_url: str, served: SchemaSet = BUILT_IN
) -> dict[str, Any] | None:
    resource_type = served.resource_types.get(name)
    return resource_type.document(base_url) if resource_type is not None else None


def resource_type_list(base_url: str, served: SchemaSet = BUILT_IN) -> dict[str, Any]:
    return list_response([rt.document(base_url) for rt in served.resource_types.values()])


def list_response(
    resources: list[dict[str, Any]], *, total: int | None = None, start_index: int = 1
) -> dict[str, Any]:
    """A ListResponse; counts are integers, as Okta insists."""
    return {
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": len(resources) if total is None else total,
        "startIndex": start_index,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }
