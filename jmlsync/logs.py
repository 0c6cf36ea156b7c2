"""Logging: one configuration point. JSON lines on stdout when stdout is not a terminal (for
journald, container runtimes and log shippers), readable lines when it is.

Structured fields travel as ``extra={"fields": {...}}``; nothing here ever formats a token or
secret, and the SCIM layer logs paths without query strings or headers.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A readable line: time, level, logger, message, then key=value fields."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return line


def setup_logging(*, stream: TextIO | None = None, json_lines: bool | None = None) -> None:
    """Send every log record to ``stream`` (stdout by default) in the right format."""
    target = stream or sys.stdout
    as_json = (not target.isatty()) if json_lines is None else json_lines
    handler = logging.StreamHandler(target)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # aiohttp's access log would repeat our request lines without our fields, and the
    # scheduler's per-run chatter repeats our own line per scheduled run.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def redacted_url(url: str) -> str:
    """The URL with its password, if any, replaced by ``***``: fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None and "password=" not in parts.query.lower():
        return url  # untouched: urlunsplit would not give back sqlite:////path
    # libpq also takes the password as a query parameter.
    parts = parts._replace(query=re.sub(r"(?i)\b(password=)[^&]*", r"\1***", parts.query))
    if parts.password is not None:
        user = f"{parts.username}:***@" if parts.username else ":***@"
        parts = parts._replace(netloc=user + parts.netloc.rpartition("@")[2])
    return urlunsplit(parts)
