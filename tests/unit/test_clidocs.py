"""docs/cli.md is generated from the live command tree, and must be current."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import click
import pytest

from jmlsync.cli import docs as clidocs
from jmlsync.cli import main
from tests.service.test_cli_walk import COMMANDS


def test_docs_cli_md_is_current() -> None:
    current = clidocs.DOCUMENT.read_text("utf-8")
    assert clidocs.rendered(current, main) == current, (
        "docs/cli.md is stale: run python -m jmlsync.cli.docs"
    )


def test_every_command_has_a_section() -> None:
    text = clidocs.reference(main)
    for path in COMMANDS:
        assert f"### jmlsync {' '.join(path)}\n" in text
        assert f"Usage: jmlsync {' '.join(path)} " in text


def test_a_group_added_later_is_documented_without_changes_here() -> None:
    @click.group()
    def root() -> None:
        """Root."""

    @root.group("access")
    def access() -> None:
        """Time-bound access."""

    @access.command("request")
    @click.option("--role", required=True, help="The role to ask for.")
    def request(role: str) -> None:
        """Ask for a role."""

    text = clidocs.reference(root)
    assert "### jmlsync access request\n" in text
    assert "--role TEXT  The role to ask for." in text


def test_the_width_does_not_follow_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    wide = clidocs.reference(main)
    monkeypatch.setenv("COLUMNS", "40")
    assert clidocs.reference(main) == wide


def test_a_stale_page_is_told_apart_and_the_check_passes_on_this_one() -> None:
    stale = clidocs.rendered(clidocs.DOCUMENT.read_text("utf-8"), main).replace(
        "Usage: jmlsync status", "Usage: jmlsync statut"
    )
    assert clidocs.rendered(stale, main) != stale
    done = subprocess.run(
        [sys.executable, "-m", "jmlsync.cli.docs", "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_markers_are_required() -> None:
    with pytest.raises(ValueError, match="markers"):
        clidocs.rendered("# no markers\n", main)


def test_the_man_page_is_current_and_covers_every_command() -> None:
    page = clidocs.MAN_PAGE.read_text("utf-8")
    assert clidocs.man_page(main) == page, "docs/jmlsync.1 is stale: run python -m jmlsync.cli.docs"
    for path in COMMANDS:
        assert f'.SS "jmlsync {" ".join(path)}"\n' in page
    assert ".SH EXIT STATUS" in page
    assert "\n.B 64\n" in page


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
def test_the_man_page_renders_without_warnings() -> None:
    done = subprocess.run(
        ["man", "--warnings", "-l", str(clidocs.MAN_PAGE)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "MANWIDTH": "100", "MANPAGER": "cat", "PAGER": "cat"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "--detailed-exitcode" in done.stdout  # a minus sign, not a hyphen
