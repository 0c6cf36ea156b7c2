"""The LDAP connector against a real slapd: what the contract suite does not cover (filters,
membership attributes, the leaver's lock, provisioning, errors), and the modification each
``disable`` variant sends."""

from __future__ import annotations

import gc
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bonsai import errors as ldap_errors

from jmlsync.config import ConfigError
from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError, TargetError, TransientTargetError
from jmlsync.targets.ldap import LdapTarget
from jmlsync.targets.ldap_client import (
    Change,
    dn_key,
    escape_filter_value,
    translate,
    user_filter,
)
from jmlsync.targets.ldap_entries import disable_changes, enable_changes, is_disabled
from jmlsync.targets.ldap_settings import LdapTargetSettings
from jmlsync.targets.registry import open_target
from tests.slapd_server import (  # noqa: F401 (fixtures)
    BIND_PASSWORD,
    LdapTree,
    ldap_settings,
    ldap_tree,
    make_tls_files,
    own_slapd,
    slapd,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tree(ldap_tree: LdapTree) -> LdapTree:  # noqa: F811
    ldap_tree.add_groups(["admin", "reader"])
    return ldap_tree


async def _opened(tree: LdapTree, tmp_path: Path, **overrides: Any) -> LdapTarget:
    return await LdapTarget.open("dir", ldap_settings(tree, tmp_path, **overrides))


@pytest.fixture
async def target(tree: LdapTree, tmp_path: Path) -> AsyncIterator[LdapTarget]:
    opened = await _opened(tree, tmp_path)
    yield opened
    await opened.close()


class TestFilters:
    def test_values_are_escaped_per_rfc_4515(self) -> None:
        assert escape_filter_value("a*b(c)d\\e\0") == "a\\2ab\\28c\\29d\\5ce\\00"
        assert user_filter("(mail={userName})", "x)(uid=*") == "(mail=x\\29\\28uid=\\2a)"
        assert user_filter("(sAMAccountName={local})", "ada@corp.example") == (
            "(sAMAccountName=ada)"
        )

    async def test_a_crafted_user_name_matches_nobody(
        self, target: LdapTarget, tree: LdapTree
    ) -> None:
        tree.add_user("ada")
        tree.add_user("bob")
        assert await target.principal("*") is None
        assert await target.principal("ada)(uid=*") is None
        assert await target.principal("ada") == Principal("ada")

    async def test_local_part_filter_with_the_user_name_in_another_attribute(
        self, tree: LdapTree, tmp_path: Path
    ) -> None:
        tree.add_user("ada", mail="ada@corp.example")
        target = await _opened(
            tree, tmp_path, user_filter="(uid={local})", user_name_attribute="mail"
        )
        try:
            await target.grant("ada@corp.example", "admin")
            assert await target.grants_of("ada@corp.example") == {"admin"}
            assert [g async for g in target.list_grants()] == [
                Grant("dir", "ada@corp.example", "admin")
            ]
            assert [p.user async for p in target.list_principals()] == ["ada@corp.example"]
        finally:
            await target.close()

    async def test_two_entries_for_one_user_are_refused(
        self, tree: LdapTree, tmp_path: Path
    ) -> None:
        tree.add_user("ada", mail="same@corp.example")
        tree.add_user("ada2", mail="same@corp.example")
        target = await _opened(tree, tmp_path, user_filter="(mail={userName})")
        try:
            with pytest.raises(PermanentTargetError, match="finds 2 entries"):
                await target.principal("same@corp.example")
        finally:
            await target.close()


class TestMembership:
    async def test_grant_adds_one_member_value_and_revoke_removes_it(
        self, target: LdapTarget, tree: LdapTree
    ) -> None:
        dn = tree.add_user("ada")
        await target.grant("ada", "admin")
        await target.grant("ada", "admin")
        assert tree.members("admin") == [tree.base, dn]
        await target.revoke("ada", "admin")
        await target.revoke("ada", "admin")
        assert tree.members("admin") == [tree.base]

    @pytest.mark.parametrize(
        ("object_class", "attribute"),
        [("groupOfUniqueNames", "uniqueMember"), ("posixGroup", "memberUid")],
    )
    async def test_other_group_classes(
        self,
        ldap_tree: LdapTree,  # noqa: F811
        tmp_path: Path,
        object_class: str,
        attribute: str,
    ) -> None:
        ldap_tree.add_groups(["ops", "dev"], object_class)
        dn = ldap_tree.add_user("ada")
        ldap_tree.add_user("bob")
        target = await _opened(ldap_tree, tmp_path, group_object_class=object_class)
        try:
            await target.grant("ada", "ops")
            await target.grant("ada", "ops")
            await target.grant("bob", "dev")
            held = ldap_tree.members("ops", attribute)
            assert held[-1] == ("ada" if attribute == "memberUid" else dn)
            assert len(held) == len(set(held))
            assert await target.grants_of("ada") == {"ops"}
            assert sorted([g async for g in target.list_grants()]) == [
                Grant("dir", "ada", "ops"),
                Grant("dir", "bob", "dev"),
            ]
            await target.revoke("ada", "ops")
            assert await target.grants_of("ada") == frozenset()
        finally:
            await target.close()

    async def test_a_group_below_groups_base_is_named_by_its_dn(
        self, target: LdapTarget, tree: LdapTree
    ) -> None:
        tree.slapd.add(
            f"dn: ou=apps,{tree.groups_base}\nobjectClass: organizationalUnit\nou: apps\n\n"
            f"dn: cn=jenkins,ou=apps,{tree.groups_base}\nobjectClass: groupOfNames\n"
            f"cn: jenkins\nmember: {tree.base}\n"
        )
        tree.add_user("ada")
        role = f"cn=jenkins,ou=apps,{tree.groups_base}"
        await target.grant("ada", role)
        assert await target.grants_of("ada") == {role}
        with pytest.raises(PermanentTargetError, match="not under groups_base"):
            await target.grant("ada", "cn=elsewhere,dc=example,dc=org")

    async def test_missing_group(self, target: LdapTarget, tree: LdapTree) -> None:
        tree.add_user("ada")
        with pytest.raises(PermanentTargetError, match=r"no group 'cn=ghost,ou=groups"):
            await target.grant("ada", "ghost")
        await target.revoke("ada", "ghost")

    async def test_removing_the_last_member_the_class_requires_is_explained(
        self, target: LdapTarget, tree: LdapTree
    ) -> None:
        dn = tree.add_user("ada")
        tree.slapd.add(f"dn: {tree.group_dn('solo')}\nobjectClass: groupOfNames\nmember: {dn}\n")
        with pytest.raises(PermanentTargetError, match="placeholder member"):
            await target.revoke("ada", "solo")

    def test_member_dns_compare_loosely(self) -> None:
        assert dn_key("UID=Ada, OU=People,dc=Example,DC=org") == dn_key(
            "uid=ada,ou=people,dc=example,dc=org"
        )


class TestLeaver:
    async def test_a_disabled_user_cannot_bind_until_enabled(
        self, target: LdapTarget, tree: LdapTree
    ) -> None:
        dn = tree.add_user("ada", password="ada-secret")
        assert tree.slapd.can_bind(dn, "ada-secret")
        await target.disable_principal("ada")
        (entry,) = tree.slapd.search(dn, "(objectClass=*)", "pwdAccountLockedTime")
        assert entry["pwdaccountlockedtime"] == ["000001010000Z"]
        assert not tree.slapd.can_bind(dn, "ada-secret")
        await target.ensure_principal(PrincipalSpec("ada"))
        assert tree.slapd.can_bind(dn, "ada-secret")

    async def test_a_lock_after_failed_binds_is_not_a_disable(
        self, target: LdapTarget, tree: LdapTree
    ) -> None:
        dn = tree.add_user("ada")
        tree.slapd.modify(
            f"dn: {dn}\nchangetype: modify\nreplace: pwdAccountLockedTime\n"
            "pwdAccountLockedTime: 20260101000000Z\n"
        )
        assert await target.principal("ada") == Principal("ada", enabled=True)
        await target.disable_principal("ada")
        assert await target.principal("ada") == Principal("ada", enabled=False)

    async def test_without_a_disable_variant_nothing_is_written(
        self, tree: LdapTree, tmp_path: Path
    ) -> None:
        dn = tree.add_user("ada")
        target = await _opened(tree, tmp_path, disable="none")
        try:
            await target.disable_principal("ada")
            assert await target.principal("ada") == Principal("ada", can_disable=False)
        finally:
            await target.close()
        (entry,) = tree.slapd.search(dn, "(objectClass=*)", "pwdAccountLockedTime")
        assert "pwdaccountlockedtime" not in entry

    def test_389ds_sets_and_removes_ns_account_lock(self) -> None:
        assert disable_changes("389ds", {}) == [Change("replace", "nsAccountLock", ("TRUE",))]
        assert enable_changes("389ds", {}) == [Change("delete", "nsAccountLock")]
        assert is_disabled("389ds", {"nsaccountlock": ["true"]})
        assert not is_disabled("389ds", {})

    def test_active_directory_flips_bit_2_of_user_account_control(self) -> None:
        # 66048 = NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD: the other bits must stay.
        enabled = {"useraccountcontrol": ["66048"]}
        assert disable_changes("ad", enabled) == [
            Change("replace", "userAccountControl", ("66050",))
        ]
        disabled = {"useraccountcontrol": ["66050"]}
        assert is_disabled("ad", disabled)
        assert not is_disabled("ad", enabled)
        assert enable_changes("ad", disabled) == [
            Change("replace", "userAccountControl", ("66048",))
        ]
        assert disable_changes("ad", {}) == [Change("replace", "userAccountControl", ("514",))]


class TestProvisioning:
    async def test_off_by_default_a_missing_user_is_permanent(
        self, tree: LdapTree, tmp_path: Path
    ) -> None:
        values = ldap_settings(tree, tmp_path).model_dump(exclude={"provision_users"})
        settings = LdapTargetSettings.model_validate(values)
        assert not settings.provision_users
        target = await LdapTarget.open("dir", settings)
        try:
            with pytest.raises(PermanentTargetError, match="provision_users is off"):
                await target.ensure_principal(PrincipalSpec("ada"))
        finally:
            await target.close()
        assert tree.slapd.search(tree.users_base, "(uid=ada)") == []

    async def test_entry_from_the_template(self, target: LdapTarget, tree: LdapTree) -> None:
        spec = PrincipalSpec(
            "ada", display_name="Ada Lovelace", given_name="Ada", email="ada@corp.example"
        )
        await target.ensure_principal(spec)
        await target.ensure_principal(spec)
        (entry,) = tree.slapd.search(tree.users_base, "(uid=ada)", "*")
        assert entry["dn"] == [f"uid=ada,{tree.users_base}"]
        assert entry["cn"] == ["Ada Lovelace"]
        assert entry["sn"] == ["ada"]
        assert entry["mail"] == ["ada@corp.example"]
        assert entry["givenname"] == ["Ada"]
        assert "inetOrgPerson" in entry["objectclass"]


class TestErrors:
    @pytest.mark.parametrize(
        ("error", "kind"),
        [
            (ldap_errors.ConnectionError("Can't contact LDAP server."), TransientTargetError),
            (ldap_errors.TimeoutError("timed out"), TransientTargetError),
            (TimeoutError(), TransientTargetError),
            (ldap_errors.InsufficientAccess("no write"), PermanentTargetError),
            (ldap_errors.NoSuchObjectError("no such object"), PermanentTargetError),
            (ldap_errors.AuthenticationError("invalid credentials"), PermanentTargetError),
        ],
    )
    def test_translation(self, error: Exception, kind: type[Exception]) -> None:
        assert type(translate(error, "grant")) is kind

    @pytest.mark.parametrize(("code", "transient"), [(51, True), (52, True), (53, False)])
    def test_busy_and_unavailable_are_transient(self, code: int, transient: bool) -> None:
        error = ldap_errors.LDAPError("answer")
        error.code = code
        translated = translate(error, "grant")
        assert isinstance(translated, TransientTargetError) is transient

    async def test_a_missing_base_is_permanent_and_named(
        self, tree: LdapTree, tmp_path: Path
    ) -> None:
        base = f"ou=nowhere,{tree.base}"
        target = await _opened(tree, tmp_path, users_base=base)
        try:
            with pytest.raises(PermanentTargetError, match=base):
                await target.principal("ada")
            with pytest.raises(PermanentTargetError, match=base):
                _ = [p async for p in target.list_principals()]
        finally:
            await target.close()

    async def test_insufficient_access_is_permanent_and_names_the_dn(
        self, tree: LdapTree, tmp_path: Path
    ) -> None:
        tree.add_user("ada")
        reader = tree.add_user("reader", password="reader-secret")
        (tmp_path / "reader-password").write_text("reader-secret\n")
        target = await _opened(
            tree, tmp_path / "r", bind_dn=reader, bind_password_file=tmp_path / "reader-password"
        )
        try:
            with pytest.raises(PermanentTargetError, match="insufficient access") as raised:
                await target.grant("ada", "admin")
            assert tree.group_dn("admin") in str(raised.value)
        finally:
            await target.close()

    async def test_a_wrong_password_is_permanent_and_never_shown(
        self, tree: LdapTree, tmp_path: Path
    ) -> None:
        (tmp_path / "wrong").write_text("not-the-password-123\n")
        target = await _opened(tree, tmp_path / "w", bind_password_file=tmp_path / "wrong")
        try:
            with pytest.raises(PermanentTargetError, match="bind refused") as raised:
                await target.principal("ada")
            assert "not-the-password-123" not in str(raised.value)
            assert BIND_PASSWORD not in str(raised.value)
        finally:
            await target.close()

    async def test_an_unreadable_password_file_is_a_config_error(
        self, tree: LdapTree, tmp_path: Path
    ) -> None:
        settings = ldap_settings(tree, tmp_path, bind_password_file=tmp_path / "absent")
        with pytest.raises(ConfigError, match="bind_password_file"):
            await open_target("dir", settings)


@pytest.mark.process
async def test_a_restarted_server_is_reached_again(tmp_path: Path) -> None:
    """Server down is transient; once it is back, the next call opens a fresh connection."""
    server, tree = own_slapd(tmp_path / "slapd")
    try:
        tree.add_user("ada")
        target = await _opened(tree, tmp_path)
        try:
            assert await target.principal("ada") == Principal("ada")
            server.stop()
            with pytest.raises(TransientTargetError, match="unreachable"):
                await target.principal("ada")
            server.start()
            assert await target.principal("ada") == Principal("ada")
        finally:
            await target.close()
    finally:
        server.stop()


@pytest.mark.process
async def test_start_tls_and_ldaps_verify_the_server_with_ca_file(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls")
    stranger = make_tls_files(tmp_path / "stranger")
    server, tree = own_slapd(tmp_path / "slapd", tls=files)
    try:
        tree.add_user("ada")
        assert server.ldaps_url is not None
        start_tls = server.url.replace("127.0.0.1", "localhost")
        for url, starts in ((start_tls, True), (server.ldaps_url, False)):
            target = await _opened(tree, tmp_path, url=url, start_tls=starts, ca_file=files.ca)
            try:
                assert await target.principal("ada") == Principal("ada")
            finally:
                await target.close()
            # A server whose certificate the configured CA did not sign is never spoken to.
            assert await _refused(tree, tmp_path, url=url, start_tls=starts, ca_file=stranger.ca)
    finally:
        server.stop()


async def _refused(tree: LdapTree, state: Path, **overrides: Any) -> bool:
    """Whether a call through a target opened with ``overrides`` fails."""
    target = await _opened(tree, state, **overrides)
    try:
        await target.principal("ada")
    except TargetError:
        refused = True
    else:
        refused = False
    finally:
        await target.close()
    # bonsai leaves the socket pair of a failed TLS connect to the garbage collector.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    return refused
