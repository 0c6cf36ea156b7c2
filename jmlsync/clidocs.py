"""docs/cli.md's command reference, generated from the commands' own help.

``python -m jmlsync.clidocs`` rewrites the part of docs/cli.md between its two markers from the
live command tree (a command group added later appears with nothing to change here);
``python -m jmlsync.clidocs --check`` exits 1 when the file is stale. The test suite checks it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

BEGIN = "<!-- BEGIN GENERATED: python -m jmlsync.clidocs -->"
END = "<!-- END GENERATED -->"

#: Help is wrapped at this width whatever the terminal, so the document is reproducible.
WIDTH = 100

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def _walk(
    command: click.Command, ctx: click.Context
) -> Iterator[tuple[click.Context, click.Command]]:
    yield ctx, command
    if isinstance(command, click.Group):
        for name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx))


def reference(root: click.Command, name: str = "jmlsync") -> str:
    """One section per command, its help text as ``jmlsync ... --help`` prints it."""
    top = click.Context(root, info_name=name, terminal_width=WIDTH, max_content_width=WIDTH)
    sections = []
    for ctx, command in _walk(root, top):
        help_text = command.get_help(ctx).rstrip()
        sections.append(f"### {ctx.command_path}\n\n```\n{help_text}\n```\n")
    return "\n".join(sections)


def rendered(document: str, root: click.Command) -> str:
    """``document`` with the text between the markers replaced by the reference."""
    head, begin, rest = document.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"docs/cli.md must hold the markers {BEGIN!r} and {END!r}")
    return f"{head}{BEGIN}\n\n{reference(root)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite docs/cli.md, or with ``--check`` report whether it is current (exit 0 or 1)."""
    from jmlsync.cli import main as root

    args = sys.argv[1:] if argv is None else argv
    current = DOCUMENT.read_text("utf-8")
    wanted = rendered(current, root)
    if "--check" in args:
        if wanted != current:
            print(f"{DOCUMENT} is stale: run python -m jmlsync.clidocs", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        DOCUMENT.write_text(wanted, "utf-8")
        print(f"wrote {DOCUMENT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
