"""Tables: wrapped to the terminal on a terminal, plain and one row per line when piped."""

from __future__ import annotations

import re

import pytest

from jmlsync.domain.access import Operation
from jmlsync.report import tables
from jmlsync.report.plan import RunReport, plan_table

LONG = "a-very-long-user-name-" * 12 + "@example.com"
ROWS = [("1", LONG, "dead", "kaput " * 30), ("22", "bob@x.io", "pending", "")]
HEADERS = ("ID", "USER", "STATE", "LAST ERROR")
ESCAPE = re.compile("\x1b")
BOX = re.compile("[\u2500-\u257f]")


def test_piped_tables_are_plain_and_never_wrapped() -> None:
    lines = tables.render(HEADERS, ROWS, right=(0,), terminal=False)
    assert len(lines) == 3  # header and one line per row, however long
    assert lines[0].split() == ["ID", "USER", "STATE", "LAST", "ERROR"]
    assert lines[1].startswith(" 1  " + LONG + "  dead")
    assert lines[2].startswith("22  bob@x.io")
    assert max(len(line) for line in lines) > 300
    text = "\n".join(lines)
    assert not ESCAPE.search(text)
    assert not BOX.search(text)
    assert all(line == line.rstrip() for line in lines)


def test_brackets_are_text_not_markup() -> None:
    (line,) = tables.render(None, [("admin [privileged]", "[bold]x[/bold]")], terminal=False)
    assert line == "admin [privileged]  [bold]x[/bold]"


def test_terminal_tables_wrap_to_its_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    lines = tables.render(HEADERS, ROWS, terminal=True, indent=2)
    plain = [ESCAPE.sub("", re.sub("\x1b\\[[0-9;]*m", "", line)) for line in lines]
    assert len(plain) > 4  # the long cells wrapped onto more lines
    assert max(len(line) for line in plain) <= 80
    assert all(line.startswith("  ") for line in plain if line)
    joined = "".join(part.strip() for part in plain)
    assert "a-very-long-user-name-" in joined


def test_a_piped_plan_has_one_line_per_operation() -> None:
    operations = [
        Operation("grant", "sandbox", LONG, "developer", "rule 1: group engineering"),
        Operation("revoke", "sandbox", "bob@x.io", "admin", "mover", privileged=True),
    ]
    text = plan_table(RunReport(dry_run=True, operations=operations))
    (grant,) = [line for line in text.splitlines() if "+ grant" in line]
    assert LONG in grant
    assert grant.endswith("(rule 1: group engineering)")
    (revoke,) = [line for line in text.splitlines() if "- revoke" in line]
    assert "admin [privileged]" in revoke
    assert revoke.endswith("(mover)")


@pytest.mark.parametrize("headers", [HEADERS, None])
def test_the_piped_layout_is_richs(headers: tuple[str, ...] | None) -> None:
    rows = [*ROWS, ("333", "山田太郎@example.jp", "", "x"), ("4", "", "leased*", "")]
    assert tables.plain(headers, rows, right=(0,), indent=2) == tables.wrapped(
        headers, rows, right=(0,), indent=2, tty=False
    )


def test_a_long_table_is_plain_even_on_a_terminal() -> None:
    rows = [(str(i), f"user{i}@x.io") for i in range(tables.MAX_WRAPPED_ROWS + 1)]
    assert tables.render(None, rows, terminal=True) == tables.plain(None, rows)
