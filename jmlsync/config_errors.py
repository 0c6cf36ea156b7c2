"""Configuration errors for people: the TOML key (or the environment variable) and the reason,
with a "did you mean" for a misspelt key, target kind or choice."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

#: Where each environment override landed: its key path (lower case) and the variable's name.
EnvOrigins = Mapping[tuple[str, ...], str]

ENV_PREFIX = "JMLSYNC_"


def env_name(keys: Iterable[str]) -> str:
    """The variable that sets ``keys``: ``("server", "listen")`` is ``JMLSYNC_SERVER__LISTEN``."""
    return ENV_PREFIX + "__".join(key.upper() for key in keys)


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold, through Optional, list, dict and unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models(arg)
    return found


def _tag(model: type[BaseModel]) -> str | None:
    """The ``kind`` a target's settings class is chosen by, if it is one."""
    field = model.model_fields.get("kind")
    values = typing.get_args(field.annotation) if field is not None else ()
    return str(values[0]) if len(values) == 1 else None


def _walk(root: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, list[str], list[str]]:
    """What ``loc`` names: the TOML key (list items numbered from 1), its key path (without
    list indexes and target kinds), and the keys the table holding its last part may have."""
    models, keys, key = [root], [], ""
    for position, part in enumerate(loc):
        if isinstance(part, int):
            key += f"[{part + 1}]"
            continue
        last = position == len(loc) - 1
        tagged = [m for m in models if _tag(m) == part]
        if tagged and not last:  # the kind pydantic chose a target's settings class by
            models = tagged
            continue
        keys.append(part)
        key += f".{part}" if key else part
        if last:
            break
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if fields:
            models = [m for f in fields for m in _models(f.annotation)]
        # else: a dict key (a target's name); the models are the dict's values already.
    allowed = sorted({name for m in models for name, f in m.model_fields.items() if not f.exclude})
    return key or "(top level)", keys, allowed


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _origin(keys: list[str], env: EnvOrigins) -> str | None:
    """The variable that set this key (or a table under it), if one did."""
    path = tuple(key.lower() for key in keys)
    for origin, name in env.items():
        if origin[: len(path)] == path:
            return name
    return None


def _line(item: Any, root: type[BaseModel], env: EnvOrigins) -> str:
    loc = tuple(p for p in item["loc"] if not str(p).startswith("function-after"))
    where, keys, allowed = _walk(root, loc)
    ctx = item.get("ctx", {})
    reason = str(item["msg"]).removeprefix("Value error, ")
    variable = _origin(keys, env)
    if item["type"] == "extra_forbidden":
        if variable is not None:
            depth = len(keys) - 1
            origin = next(o for o, n in env.items() if n == variable)
            fixed = [
                (*origin[:depth], choice, *origin[depth + 1 :])
                for choice in get_close_matches(keys[-1], allowed, n=1, cutoff=0.6)
            ]
            hint = f" (did you mean {env_name(fixed[0])}?)" if fixed else ""
            return f"  unknown key: environment variable {variable}{hint}"
        reason = "unknown key" + _suggest(keys[-1], allowed)
    elif item["type"] == "union_tag_invalid":
        kinds = _quoted(str(ctx.get("expected_tags", "")))
        tag = str(ctx.get("tag"))
        reason = f"unknown kind {tag!r}{_suggest(tag, kinds)} (known: {ctx.get('expected_tags')})"
        where, keys = f"{where}.kind", [*keys, "kind"]
    elif item["type"] == "literal_error":
        reason += _suggest(str(item.get("input")), _quoted(str(ctx.get("expected", ""))))
    if variable is not None:
        where += f" (environment variable {variable})"
    return f"  {where}: {reason}"


def describe(
    error: ValidationError, source: Path, root: type[BaseModel], env: EnvOrigins | None = None
) -> str:
    """The message of a :class:`ValidationError` of ``root`` read from ``source``."""
    lines = [f"{source}: invalid configuration"]
    lines += [_line(item, root, env or {}) for item in error.errors()]
    return "\n".join(lines)
