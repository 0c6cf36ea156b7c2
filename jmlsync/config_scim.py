"""``[scim]`` of the configuration: declared extension schemas, and what the SCIM endpoint
does with attributes and members its schemas do not know. A leaf module, like config.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _SchemaSection(BaseModel):
    # SCIM's own spellings (multiValued, caseExact, subAttributes) and snake_case both work.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _attribute_document(
    name: str, type_: str, multi_valued: bool, case_exact: bool, description: str
) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "multiValued": multi_valued,
        "description": description,
        "required": False,
        "caseExact": case_exact,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    }


_ATTRIBUTE_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
# The characters the stores allow in JSON paths, so every declared attribute can be filtered.
_URN = r"^urn:[A-Za-z0-9][A-Za-z0-9._:-]{0,200}$"
_RESERVED_URNS = frozenset(
    {
        "urn:ietf:params:scim:schemas:core:2.0:user",
        "urn:ietf:params:scim:schemas:core:2.0:group",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user",
    }
)
SimpleType = Literal["string", "boolean", "decimal", "integer", "dateTime", "reference", "binary"]


class ExtensionSubAttributeSettings(_SchemaSection):
    """A sub-attribute of a complex extension attribute: simple and single-valued."""

    name: Annotated[str, Field(pattern=_ATTRIBUTE_NAME)]
    type: SimpleType = "string"
    case_exact: bool = Field(default=False, alias="caseExact")
    description: str = ""

    def document(self) -> dict[str, Any]:
        """The attribute as RFC 7643 §7 describes it in /Schemas."""
        return _attribute_document(self.name, self.type, False, self.case_exact, self.description)


class ExtensionAttributeSettings(_SchemaSection):
    """``[[scim.extensions.attributes]]``: one attribute of a declared extension schema."""

    name: Annotated[str, Field(pattern=_ATTRIBUTE_NAME)]
    type: SimpleType | Literal["complex"] = "string"
    multi_valued: bool = Field(default=False, alias="multiValued")
    case_exact: bool = Field(default=False, alias="caseExact")
    description: str = ""
    sub_attributes: list[ExtensionSubAttributeSettings] = Field(default=[], alias="subAttributes")

    @model_validator(mode="after")
    def _complex_has_sub_attributes(self) -> ExtensionAttributeSettings:
        if self.type == "complex" and not self.sub_attributes:
            raise ValueError(f"{self.name}: a complex attribute needs subAttributes")
        if self.type != "complex" and self.sub_attributes:
            raise ValueError(f"{self.name}: only a complex attribute takes subAttributes")
        _check_unique([sub.name for sub in self.sub_attributes], f"{self.name}.subAttributes")
        return self

    def document(self) -> dict[str, Any]:
        """The attribute as RFC 7643 §7 describes it in /Schemas."""
        document = _attribute_document(
            self.name, self.type, self.multi_valued, self.case_exact, self.description
        )
        if self.sub_attributes:
            document["subAttributes"] = [sub.document() for sub in self.sub_attributes]
        return document


def _check_unique(names: list[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise ValueError(f"{where}: {name!r} is declared twice (names ignore case)")
        seen.add(name.lower())


class ExtensionSettings(_SchemaSection):
    """``[[scim.extensions]]``: an extension schema of User or Group that jmlsync publishes,
    validates, stores, returns, filters and sorts on, and rules may match on."""

    urn: Annotated[str, Field(pattern=_URN)]
    resource: Literal["User", "Group"]
    name: str | None = None
    description: str = ""
    attributes: Annotated[list[ExtensionAttributeSettings], Field(min_length=1)]

    @model_validator(mode="after")
    def _sound(self) -> ExtensionSettings:
        if self.urn.lower() in _RESERVED_URNS or self.urn.lower().startswith(
            "urn:ietf:params:scim:api:"
        ):
            raise ValueError(f"{self.urn} is a schema jmlsync already defines")
        _check_unique([a.name for a in self.attributes], "attributes")
        return self

    def document(self) -> dict[str, Any]:
        """The schema as /Schemas publishes it (RFC 7643 §7), without ``meta``."""
        return {
            "id": self.urn,
            "name": self.name or self.urn.rsplit(":", 2)[-2],
            "description": self.description,
            "attributes": [attribute.document() for attribute in self.attributes],
        }


class ScimSettings(_SchemaSection):
    """``[scim]``: declared extension schemas, and what the SCIM endpoint does with what its
    schemas do not define."""

    unknown_attributes: Literal["ignore", "store", "reject"] = "ignore"
    unknown_members: Literal["skip", "reject"] = "skip"
    extensions: list[ExtensionSettings] = []

    @field_validator("extensions")
    @classmethod
    def _distinct_urns(cls, value: list[ExtensionSettings]) -> list[ExtensionSettings]:
        _check_unique([extension.urn for extension in value], "urn")
        return value

    def extension_documents(self) -> list[tuple[str, dict[str, Any]]]:
        """(resource type name, schema document) of every declared extension."""
        return [(extension.resource, extension.document()) for extension in self.extensions]
