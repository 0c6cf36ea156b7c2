"""Tables for people, drawn by rich: wrapped to the terminal's width on a terminal, plain text
when piped (no colour, no escape sequence, no box-drawing, one row per line, never wrapped).

Every table of every command goes through :func:`render`, so they all behave alike. Piped
tables are laid out here, as rich lays out a table without a box (columns two spaces apart,
widths in terminal cells), because rich takes seconds for the tens of thousands of rows a
large plan has; a test holds the two layouts equal.
"""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

#: Above this many rows even a terminal gets the plain layout: wrapping them all would keep
#: a person waiting for seconds, and nobody reads that many rows without a pager.
MAX_WRAPPED_ROWS = 2000

#: Between two columns of a plain table.
GAP = "  "


def on_terminal() -> bool:
    """True when stdout is a terminal: tables then wrap to its width."""
    return sys.stdout.isatty()


def render(
    headers: Sequence[str] | None,
    rows: Iterable[Sequence[str]],
    *,
    right: Iterable[int] = (),
    indent: int = 0,
    terminal: bool | None = None,
) -> list[str]:
    """The table's lines (without trailing spaces). ``headers`` None: no header row.
    ``right``: the indexes of right-aligned (numeric) columns. ``indent``: spaces before
    each line. ``terminal``: force either rendering (default: whether stdout is a terminal)."""
    materialised = [tuple(row) for row in rows]
    tty = on_terminal() if terminal is None else terminal
    if not tty or len(materialised) > MAX_WRAPPED_ROWS:
        return plain(headers, materialised, right=right, indent=indent)
    return wrapped(headers, materialised, right=right, indent=indent)


def plain(
    headers: Sequence[str] | None,
    rows: Sequence[Sequence[str]],
    *,
    right: Iterable[int] = (),
    indent: int = 0,
) -> list[str]:
    """The piped layout: every row on one line, columns two spaces apart."""
    aligned = set(right)
    body = [tuple(headers)] if headers is not None else []
    body += [tuple(row) for row in rows]
    if not body:
        return []
    count = max(len(row) for row in body)
    body = [row + ("",) * (count - len(row)) for row in body]
    widths = [max(cell_len(row[i]) for row in body) for i in range(count)]
    pad = " " * indent
    lines = []
    for row in body:
        cells = [
            " " * (width - cell_len(cell)) + cell
            if i in aligned
            else cell + " " * (width - cell_len(cell))
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        line = GAP.join(cells).rstrip()
        lines.append(pad + line if line else "")
    return lines


def streamed(rows: Callable[[], Iterable[Sequence[str]]], *, indent: int = 0) -> Iterator[str]:
    """:func:`render` of a header-less table, line by line, never holding its rows: ``rows``
    makes them anew for each of two passes (the widths, then the lines). A table short
    enough to wrap on a terminal is rendered by :func:`render`."""
    count = 0
    widths: list[int] = []
    for row in rows():
        count += 1
        if len(row) > len(widths):
            widths.extend([0] * (len(row) - len(widths)))
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], cell_len(cell))
    if count <= MAX_WRAPPED_ROWS:
        yield from render(None, rows(), indent=indent)
        return
    pad = " " * indent
    for row in rows():
        cells = [*row, *([""] * (len(widths) - len(row)))]
        line = GAP.join(
            cell + " " * (width - cell_len(cell)) for cell, width in zip(cells, widths, strict=True)
        ).rstrip()
        yield pad + line if line else ""


def wrapped(
    headers: Sequence[str] | None,
    rows: Sequence[Sequence[str]],
    *,
    right: Iterable[int] = (),
    indent: int = 0,
    tty: bool = True,
) -> list[str]:
    """The terminal's layout, by rich: long cells wrap to the terminal's width. With ``tty``
    false, rich's own plain rendering (what :func:`plain` reproduces)."""
    aligned = set(right)
    table = Table(
        box=box.SIMPLE_HEAD if tty else None,
        show_header=headers is not None,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        header_style="bold" if tty else "",
        highlight=False,
    )
    count = max((len(row) for row in rows), default=0)
    if headers is not None:
        count = max(count, len(headers))
    if count == 0:
        return []
    for index in range(count):
        table.add_column(
            headers[index] if headers is not None and index < len(headers) else "",
            justify="right" if index in aligned else "left",
            overflow="fold",
        )
    for row in rows:
        table.add_row(*row)
    # Piped, rich gets all the width it can use, so that nothing wraps.
    columns = shutil.get_terminal_size().columns - indent if tty else 100_000
    console = Console(
        file=io.StringIO(),
        width=max(columns, 20),
        force_terminal=tty,
        color_system="standard" if tty else None,
        no_color=not tty,
        markup=False,
        emoji=False,
        highlight=False,
        soft_wrap=False,
        legacy_windows=False,
    )
    with console.capture() as capture:
        console.print(table)
    pad = " " * indent
    return [pad + line.rstrip() if line.strip() else "" for line in capture.get().splitlines()]
