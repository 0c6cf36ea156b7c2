"""``kind = "ldap"`` in the configuration: what ``jmlsync config check`` refuses, in one line
per problem naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.config import ConfigError, load_settings
from jmlsync.targets.ldap_settings import LdapTargetSettings
from jmlsync.targets.registry import open_target
from tests.conftest import write_config

pytestmark = pytest.mark.timeout(30)

BASE = """
[targets.directory]
kind = "ldap"
url = "ldap://ldap.example.com"
bind_dn = "cn=jmlsync,dc=example,dc=com"
bind_password_file = "ldap.password"
users_base = "ou=people,dc=example,dc=com"
groups_base = "ou=groups,dc=example,dc=com"
"""


def _check(tmp_path: Path, extra: str) -> tuple[int, str]:
    """``config check`` of BASE with ``extra``, which may set a key BASE sets."""
    key = extra.split("=", 1)[0].strip()
    kept = [line for line in BASE.splitlines() if not key or not line.startswith(f"{key} =")]
    config = write_config(tmp_path, extra="\n".join(kept) + "\n" + extra)
    done = CliRunner().invoke(main, ["config", "check", "--config", str(config)])
    return done.exit_code, done.output


def test_defaults_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, extra=BASE), {})
    target = settings.targets["directory"]
    assert isinstance(target, LdapTargetSettings)
    assert target.bind_password_file == tmp_path / "ldap.password"
    assert (target.start_tls, target.provision_users, target.disable) == (True, False, "none")
    assert (target.name_attribute, target.membership_attribute) == ("uid", "member")
    code, output = _check(tmp_path, "")
    assert code == 0, output
    assert "directory: kind ldap" in output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('url = "http://ldap.example.com"', "targets.directory.url: String should match"),
        ('user_filter = "(mail=ada)"', "targets.directory.user_filter: expected placeholders"),
        ('user_filter = "(mail={email})"', "targets.directory.user_filter: expected placeholders"),
        ('user_filter = "mail={userName}"', "is not a parenthesised LDAP filter"),
        (
            'user_filter = "(sAMAccountName={local})"',
            "user_name_attribute is required unless user_filter is (ATTRIBUTE={userName})",
        ),
        ('group_object_class = "team"', "member_attribute is required for group_object_class"),
        ('member_attribute = "owner"', "targets.directory.member_attribute: Input should be"),
        ('disable = "lock"', "targets.directory.disable: Input should be"),
        ("pool_size = 0", "targets.directory.pool_size: Input should be greater than"),
        (
            'user_template = { attributes = { uid = "{nickName}" } }',
            "unknown field 'nickName'",
        ),
        (
            'user_template = { rdn_attribute = "cn", attributes = { uid = "{userName}" } }',
            "rdn_attribute 'cn' has no template in attributes",
        ),
        ("bind_password = 'secret'", "targets.directory.bind_password: unknown key"),
    ],
)
def test_config_check_refuses(tmp_path: Path, extra: str, message: str) -> None:
    code, output = _check(tmp_path, extra)
    assert code == 1
    assert message in output
    assert "Traceback" not in output


def test_serve_names_an_unreadable_password_file_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra=BASE)
    done = subprocess.run(
        [sys.executable, "-m", "jmlsync", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"jmlsync: target 'directory': cannot read bind_password_file"
        f" '{tmp_path / 'ldap.password'}': No such file or directory (in {config})"
    ]


async def test_without_bonsai_the_kind_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ldap.password").write_text("secret\n")
    settings = load_settings(write_config(tmp_path, extra=BASE), {})
    # None in sys.modules makes the import fail as if bonsai were not installed.
    monkeypatch.setitem(sys.modules, "bonsai", None)
    for module in [m for m in sys.modules if m.startswith("jmlsync.targets.ldap")]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(ConfigError, match=r"pip install 'jmlsync\[ldap\]'"):
        await open_target("directory", settings.targets["directory"])


async def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "ldap.password").write_text("secret\n")
    config = write_config(tmp_path, extra=BASE + 'ca_file = "missing-ca.pem"\n')
    settings = load_settings(config, {})
    with pytest.raises(ConfigError, match="cannot read ca_file"):
        await open_target("directory", settings.targets["directory"])
