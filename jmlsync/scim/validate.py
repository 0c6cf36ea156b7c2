"""Checking SCIM request bodies against the schemas (RFC 7643) and turning them into docs.

A *doc* is how a resource is stored: canonical attribute names, extension attributes nested under
their URN, ``schemas`` and ``externalId`` included, and neither ``id``, ``meta``, ``User.groups``
nor ``Group.members`` (members are membership rows, kept apart).

Detail messages name the attribute path and the expected type but never echo a value: a body may
carry a password.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jmlsync.scim.errors import InvalidSyntax, InvalidValue
from jmlsync.scim.schema import GROUP, Attribute, ResourceType
from jmlsync.scim.unknown import UNRECOGNISED, Unknowns, store_unknown


def _members_attribute() -> Attribute:
    attribute = GROUP.schema.attribute("members")
    if attribute is None:
        raise RuntimeError("the Group schema has no members attribute")
    return attribute


_MEMBERS = _members_attribute()

_EXPECTED = {
    "string": "a string",
    "reference": "a string",
    "binary": "a string",
    "boolean": "a boolean",
    "integer": "an integer",
    "decimal": "a number",
    "dateTime": "a date-time string",
    "complex": "an object",
}


def is_membership(attribute: Attribute) -> bool:
    """Whether ``attribute`` is ``Group.members``, which lives in membership rows, not the doc."""
    return attribute is _MEMBERS


def normalize_resource(
    resource_type: ResourceType, body: Any, unknowns: Unknowns | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """Validate a POST or PUT body; answer its doc and, for a Group, its members.

    ``members`` is a list of ``{"value": id, "display"?: text}``, or None when the body has no
    ``members``. Read-only attributes (``id``, ``meta``, ``groups``...) are dropped silently.
    Attributes the schemas do not define are refused, unless ``unknowns`` says to ignore or
    store them (it records their names). Raises InvalidSyntax when the body is not an object,
    InvalidValue for any schema violation.
    """
    if not isinstance(body, dict):
        raise InvalidSyntax("the request body must be a JSON object")
    unknowns = unknowns or Unknowns()
    _check_schemas(resource_type, body, unknowns)
    doc: dict[str, Any] = {}
    members: list[dict[str, Any]] | None = None
    for key, value in body.items():
        if key.lower() == "schemas":
            continue
        extension = resource_type.extension(key)
        if extension is not None:
            _put_extension_object(resource_type, doc, extension.id, value, key, unknowns)
            continue
        urn, name = resource_type.split_urn(key)
        attribute = resource_type.attribute(name, urn)
        if attribute is None:
            error = InvalidValue(f"unknown attribute '{key}'")
            if unknowns.meet(key, error, storable=True):
                keep_unknown(resource_type, doc, key, value)
            continue
        if attribute.read_only:
            continue
        if is_membership(attribute):
            members = (
                None
                if value is None
                else normalize_members(value, path=attribute.name, unknowns=unknowns)
            )
            continue
        normalized = normalize_attribute_value(attribute, value, path=key, unknowns=unknowns)
        _put(doc, urn, attribute, normalized)
    finalize_doc(resource_type, doc)
    return doc, members


def keep_unknown(
    resource_type: ResourceType, doc: dict[str, Any], name: str, value: Any, *, remove: bool = False
) -> None:
    """Store (or remove) the undeclared ``name`` verbatim in ``doc`` (``store`` mode).

    Under its URN when the URN is undeclared too; in the unrecognised bag otherwise, so a
    declared schema's object never holds what its definition does not.
    """
    urn, _ = resource_type.split_urn(name)
    declared_prefix = urn is not None or name.lower().startswith(resource_type.schema.id.lower())
    if declared_prefix or not name.lower().startswith("urn:"):
        bag = doc.setdefault(UNRECOGNISED, {})
        if remove or value is None:
            bag.pop(name, None)
        else:
            bag[name] = value
        if not bag:
            del doc[UNRECOGNISED]
        return
    store_unknown(doc, name, value, remove=remove)


def normalize_attribute_value(
    attribute: Attribute, value: Any, *, path: str, unknowns: Unknowns | None = None
) -> Any:
    """Check one attribute's value against its definition and answer its stored form.

    None stands for "absent" (JSON null, an empty list, or an object left empty once read-only
    sub-attributes are dropped). ``path`` names the attribute in error details. Unknown
    sub-attributes are refused unless ``unknowns`` says to ignore them.
    """
    if value is None:
        return None
    unknowns = unknowns or Unknowns()
    if not attribute.multi_valued:
        return _normalize_single(attribute, value, path, unknowns)
    if not isinstance(value, list):
        raise InvalidValue(f"attribute '{path}' must be a list")
    items = [
        _normalize_single(attribute, item, f"{path}[{i}]", unknowns, name=path)
        for i, item in enumerate(value)
    ]
    kept = [item for item in items if item is not None]
    check_primary(attribute, kept, path=path)
    return kept or None


def normalize_members(
    value: Any, *, path: str, unknowns: Unknowns | None = None
) -> list[dict[str, Any]]:
    """Check a list of group members; answer ``{"value", "display"?}`` items, duplicates dropped.

    ``$ref`` and ``type`` are dropped: a member is a user id, and the store checks it exists.
    """
    if not isinstance(value, list):
        raise InvalidValue(f"attribute '{path}' must be a list")
    unknowns = unknowns or Unknowns()
    members: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(value):
        member = _normalize_member(item, f"{path}[{index}]", unknowns)
        members.setdefault(member["value"], member)
    return list(members.values())


def check_primary(attribute: Attribute, items: list[Any], *, path: str) -> None:
    """Raise InvalidValue when more than one value of ``attribute`` is marked primary."""
    if attribute.sub("primary") is None:
        return
    if sum(1 for item in items if isinstance(item, dict) and item.get("primary") is True) > 1:
        raise InvalidValue(f"at most one value of '{path}' may be primary")


def finalize_doc(resource_type: ResourceType, doc: dict[str, Any]) -> None:
    """Drop empty extension objects, check required attributes, and recompute ``schemas``."""
    for extension in resource_type.extensions:
        if extension.id in doc and not doc[extension.id]:
            del doc[extension.id]
    declared = {urn.lower() for urn in resource_type.schema_ids}
    kept_aside = [
        key
        for key, value in doc.items()
        if key.startswith("urn:") and key.lower() not in declared and key != UNRECOGNISED
        if isinstance(value, dict)
    ]
    for schema in (resource_type.schema, *resource_type.extensions):
        holder = doc if schema is resource_type.schema else doc.get(schema.id, {})
        for attribute in schema.attributes:
            if attribute.required and _is_blank(holder.get(attribute.name)):
                raise InvalidValue(f"attribute '{attribute.name}' is required")
    doc["schemas"] = [
        resource_type.schema.id,
        *(extension.id for extension in resource_type.extensions if extension.id in doc),
        *kept_aside,
    ]


def _is_blank(value: Any) -> bool:
    return value is None or value == [] or (isinstance(value, str) and not value.strip())


def _check_schemas(resource_type: ResourceType, body: dict[str, Any], unknowns: Unknowns) -> None:
    schemas = next((v for k, v in body.items() if k.lower() == "schemas"), None)
    # Some IdPs omit `schemas`; the endpoint already says which resource type is meant.
    if schemas is None:
        return
    if not isinstance(schemas, list) or not all(isinstance(s, str) for s in schemas):
        raise InvalidValue("'schemas' must be a list of schema URNs")
    known = {urn.lower() for urn in resource_type.schema_ids}
    for urn in schemas:
        if urn.lower() not in known:
            error = InvalidValue(
                f"'schemas' lists '{urn}', which {resource_type.name} does not have"
            )
            # Stored mode keeps the URN with its attributes; the list itself is recomputed.
            if unknowns.mode != "store":
                unknowns.meet(urn, error)
    if resource_type.schema.id.lower() not in {urn.lower() for urn in schemas}:
        raise InvalidValue(f"'schemas' must contain '{resource_type.schema.id}'")


def _put_extension_object(
    resource_type: ResourceType,
    doc: dict[str, Any],
    urn: str,
    value: Any,
    key: str,
    unknowns: Unknowns,
) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise InvalidValue(f"'{key}' must be an object")
    for name, item in value.items():
        # scim2-models serialises an extension object with its own `schemas`: not an attribute.
        if name.lower() == "schemas":
            continue
        attribute = resource_type.attribute(name, urn)
        if attribute is None:
            full = f"{urn}:{name}"
            if unknowns.meet(full, InvalidValue(f"unknown attribute '{full}'"), storable=True):
                keep_unknown(resource_type, doc, full, item)
            continue
        if attribute.read_only:
            continue
        path = f"{urn}:{attribute.name}"
        normalized = normalize_attribute_value(attribute, item, path=path, unknowns=unknowns)
        _put(doc, urn, attribute, normalized)


def _put(doc: dict[str, Any], urn: str | None, attribute: Attribute, value: Any) -> None:
    holder = doc if urn is None else doc.setdefault(urn, {})
    if attribute.name in holder:
        raise InvalidValue(f"attribute '{attribute.name}' is given more than once")
    if value is not None:
        holder[attribute.name] = value


def _normalize_single(
    attribute: Attribute, value: Any, path: str, unknowns: Unknowns, *, name: str | None = None
) -> Any:
    if value is None:
        return None
    if attribute.is_complex:
        return _normalize_complex(attribute, value, path, unknowns, name or path)
    return _normalize_simple(attribute, value, path)


def _normalize_complex(
    attribute: Attribute, value: Any, path: str, unknowns: Unknowns, name_path: str
) -> dict[str, Any] | None:
    value = _coerce_reference(attribute, value)
    if not isinstance(value, dict):
        raise InvalidValue(f"attribute '{path}' must be an object")
    result: dict[str, Any] = {}
    for name, item in value.items():
        sub = attribute.sub(name)
        if sub is None:
            # Named without the item index: one name per attribute, whatever the position.
            unknowns.meet(f"{name_path}.{name}", InvalidValue(f"unknown attribute '{path}.{name}'"))
            continue
        if sub.read_only or item is None:
            continue
        if sub.name in result:
            raise InvalidValue(f"attribute '{path}.{sub.name}' is given more than once")
        result[sub.name] = _normalize_simple(sub, item, f"{path}.{sub.name}")
    return result or None


def _coerce_reference(attribute: Attribute, value: Any) -> Any:
    """Accept Entra's shorthands for a singular reference-like complex attribute (``manager``).

    Entra sends ``"manager": "<id>"`` (a bare id) and, in its older PATCH form,
    ``[{"$ref": ..., "value": "<id>"}]`` (a one-item list). Both mean ``{"value": "<id>"}``;
    rejecting them stops manager updates for every user, so they are read as that.
    """
    if attribute.multi_valued or attribute.sub("value") is None:
        return value
    if isinstance(value, str):
        return {"value": value}
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        return value[0]
    return value


def _normalize_simple(attribute: Attribute, value: Any, path: str) -> Any:
    kind = attribute.type
    if kind == "boolean":
        # Entra sends booleans as the strings "True" / "False" unless a feature flag is set.
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        ok = isinstance(value, bool)
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "decimal":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "dateTime":
        ok = isinstance(value, str) and _is_datetime(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        expected = _EXPECTED.get(kind, f"of type {kind}")
        raise InvalidValue(f"attribute '{path}' must be {expected}")
    return value


def _is_datetime(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


def _normalize_member(item: Any, path: str, unknowns: Unknowns) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidValue(f"'{path}' must be an object")
    member: dict[str, Any] = {}
    for name, value in item.items():
        sub = _MEMBERS.sub(name)
        if sub is None:
            unknowns.meet(f"members.{name}", InvalidValue(f"unknown attribute '{path}.{name}'"))
            continue
        if sub.name in ("value", "display") and value is not None:
            member[sub.name] = _normalize_simple(sub, value, f"{path}.{sub.name}")
    if not member.get("value"):
        raise InvalidValue(f"'{path}.value' is required")
    return member
