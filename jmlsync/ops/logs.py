"""Logging: one configuration point. JSON lines on stdout when stdout is not a terminal (for
journald, container runtimes and log shippers), readable lines when it is. When stdout is the
journal (systemd sets ``JOURNAL_STREAM`` to its device and inode), each line starts with the
``<N>`` syslog priority of its level, which journald reads (``SyslogLevelPrefix=``, on by
default) so ``journalctl -p warning`` shows warnings and errors only.

Structured fields travel as ``extra={"fields": {...}}``; nothing here ever formats a token or
secret, and the SCIM layer logs paths without query strings or headers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import queue
import re
import sys
from collections.abc import Iterator, Mapping
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


#: sd-daemon(3) priorities (syslog's) of the logging levels; a level in between takes the
#: priority of the level below it.
PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
DEBUG_PRIORITY = 7


def priority(level: int) -> int:
    """The syslog priority of a logging level: error 3, warning 4, info 6, debug 7."""
    return next((prio for floor, prio in PRIORITIES if level >= floor), DEBUG_PRIORITY)


class JournalFormatter(logging.Formatter):
    """Another formatter's lines, each prefixed with ``<N>``, the record's syslog priority."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when ``stream`` is the journal's: ``JOURNAL_STREAM`` names its device and inode.

    The variable is inherited by children whose output goes elsewhere, so it is compared
    with the stream itself, as sd-daemon(3) advises.
    """
    expected = environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # a StringIO, a closed stream
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


def setup_logging(
    *,
    stream: TextIO | None = None,
    json_lines: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Send every log record to ``stream`` (stdout by default) in the right format, with
    journald priorities when the stream is the journal."""
    target = stream or sys.stdout
    as_json = (not target.isatty()) if json_lines is None else json_lines
    handler = logging.StreamHandler(target)
    formatter: logging.Formatter = JsonFormatter() if as_json else TextFormatter()
    if is_journal(target, os.environ if environ is None else environ):
        formatter = JournalFormatter(formatter)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # aiohttp's access log would repeat our request lines without our fields, and the
    # scheduler's per-run chatter repeats our own line per scheduled run.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


class _Enqueue(logging.handlers.QueueHandler):
    """Hands records to the writing thread as they are: message merged, fields and exception
    kept for that thread's formatter (the standard QueueHandler would format them here)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg = record.getMessage()  # merged now, while its arguments are as logged
        record.args = None
        return record


@contextlib.contextmanager
def written_in_background() -> Iterator[None]:
    """While inside, a log call only queues its record; one thread formats and writes them,
    in order, with the handlers :func:`setup_logging` installed. Leaving writes what is still
    queued. For ``serve``, whose request line per request would otherwise be formatted and
    written on the event loop.
    """
    root = logging.getLogger()
    handlers = root.handlers[:]
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    # No record is formatted with its caller's file and line: skip finding them (the
    # logging HOWTO's "Optimization" section).
    source, logging._srcfile = logging._srcfile, None
    root.handlers[:] = [_Enqueue(records)]
    listener.start()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        listener.stop()
        logging._srcfile = source


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
