"""The configuration: TOML validated by pydantic into one frozen :class:`Settings`.

Relative paths in the file (``tokens_file``, ``sqlite:///`` store URLs) are relative to the
directory of the configuration file, so a service finds its files whatever its working directory.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_BASE_PATH = "/scim/v2"


class ConfigError(Exception):
    """A configuration problem, with the file, the key and the reason in its message."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    listen: str = "127.0.0.1:8080"
    base_path: str = DEFAULT_BASE_PATH
    tokens_file: Path = Path("tokens")
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    max_page_size: Annotated[int, Field(ge=1, le=10_000)] = 1000
    default_page_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    public_url: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @field_validator("base_path")
    @classmethod
    def _base_path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        return value.rstrip("/")

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class StoreSettings(_Section):
    url: str = "sqlite:///jmlsync.db"
    synchronous: str = "full"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith("sqlite:///"):
            raise ValueError(f"unsupported store URL {value!r}: expected sqlite:///PATH")
        return value

    @field_validator("synchronous")
    @classmethod
    def _sync_mode(cls, value: str) -> str:
        if value.lower() not in {"full", "normal", "extra"}:
            raise ValueError("expected 'full', 'normal' or 'extra'")
        return value.lower()

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))


class Settings(_Section):
    """Everything jmlsync reads from its configuration file."""

    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    source: Path | None = Field(default=None, exclude=True)


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else Path(os.path.normpath(base / path))


def _anchor_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative file paths relative to the configuration file's directory."""
    server = raw.get("server")
    if isinstance(server, dict) and isinstance(server.get("tokens_file"), str):
        server["tokens_file"] = str(_resolve(base, Path(server["tokens_file"])))
    store = raw.get("store")
    if isinstance(store, dict) and isinstance(store.get("url"), str):
        url = store["url"]
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            store["url"] = "sqlite:///" + str(_resolve(base, path))
    return raw


def _describe(error: ValidationError, source: Path) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        reason = item["msg"]
        if item["type"] == "extra_forbidden":
            reason = "unknown key"
        lines.append(f"  {key}: {reason}")
    return "\n".join(lines)


def load_settings(path: Path) -> Settings:
    """Read and validate the configuration file at ``path``; raise ConfigError on any problem."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    raw = _anchor_paths(raw, path.resolve().parent)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc
    return settings.model_copy(update={"source": path})
