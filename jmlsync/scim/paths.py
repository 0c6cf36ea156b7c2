"""PATCH paths (RFC 7644 §3.5.2): `[urn:]attr[.sub]`, `attr[filter]`, `attr[filter].sub`."""

from __future__ import annotations

from dataclasses import dataclass

from jmlsync.domain.filters import Expr
from jmlsync.scim.errors import InvalidPath
from jmlsync.scim.filters import parse_value_filter
from jmlsync.scim.schema import Attribute, ResourceType


class UnknownPath(InvalidPath):
    """The path names an attribute or sub-attribute the schemas do not define.

    ``top_level`` is True when the attribute itself is unknown (its value could be kept
    aside), False for an unknown sub-attribute of a known attribute.
    """

    def __init__(self, detail: str, *, top_level: bool) -> None:
        super().__init__(detail)
        self.top_level = top_level


@dataclass(frozen=True)
class PatchPath:
    """A parsed path ``[urn:]attr[filter][.sub]``; ``attribute`` is None for a whole extension.

    ``urn`` is the extension holding the attribute, None for core and common attributes.
    """

    text: str
    urn: str | None
    attribute: Attribute | None
    filter: Expr | None = None
    sub: Attribute | None = None

    @property
    def read_only(self) -> bool:
        """Whether the path targets a read-only attribute or sub-attribute."""
        if self.attribute is None:
            return False
        return self.attribute.read_only or (self.sub is not None and self.sub.read_only)


def parse_path(resource_type: ResourceType, text: str) -> PatchPath:
    """Parse and resolve a PATCH path against ``resource_type``; raise InvalidPath if unknown."""
    stripped = text.strip()
    extension = resource_type.extension(stripped)
    if extension is not None:
        return PatchPath(text=stripped, urn=extension.id, attribute=None)
    urn, rest = resource_type.split_urn(stripped)
    name, filter_text, sub_name = _split_path(rest, stripped)
    attribute, urn = _resolve(resource_type, name, urn, stripped)
    sub = None
    if sub_name is not None:
        sub = attribute.sub(sub_name) if attribute.is_complex else None
        if sub is None:
            raise UnknownPath(f"unknown sub-attribute in path '{stripped}'", top_level=False)
    expr = None
    if filter_text is not None:
        if not (attribute.multi_valued and attribute.is_complex):
            raise InvalidPath(f"'{stripped}': only multi-valued complex attributes take a filter")
        expr = parse_value_filter(filter_text, attribute)
    return PatchPath(text=stripped, urn=urn, attribute=attribute, filter=expr, sub=sub)


def _split_path(rest: str, text: str) -> tuple[str, str | None, str | None]:
    """Split ``attr[filter].sub`` into its three parts; absent parts are None."""
    start = rest.find("[")
    if start < 0:
        name, dot, sub = rest.partition(".")
        return name, None, sub if dot else None
    end = _closing_bracket(rest, start, text)
    tail = rest[end + 1 :]
    if tail and not tail.startswith("."):
        raise InvalidPath(f"unexpected text after ']' in path '{text}'")
    return rest[:start], rest[start + 1 : end], tail[1:] if tail else None


def _closing_bracket(rest: str, start: int, text: str) -> int:
    """The index of the ``]`` closing ``rest[start]``, skipping brackets inside quoted strings."""
    in_string = escaped = False
    for index in range(start + 1, len(rest)):
        char = rest[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "]":
            return index
    raise InvalidPath(f"unclosed '[' in path '{text}'")


def _resolve(
    resource_type: ResourceType, name: str, urn: str | None, text: str
) -> tuple[Attribute, str | None]:
    attribute = resource_type.attribute(name, urn)
    if attribute is None and urn is None:
        # Entra's older form names `manager` without the enterprise URN; accept a bare name
        # when exactly one extension defines it.
        found = [(e.id, a) for e in resource_type.extensions if (a := e.attribute(name))]
        if len(found) == 1:
            urn, attribute = found[0]
    if attribute is None:
        raise UnknownPath(f"unknown attribute in path '{text}'", top_level=True)
    return attribute, urn
