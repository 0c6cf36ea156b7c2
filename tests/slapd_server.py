"""A real LDAP peer for the LDAP connector: OpenLDAP's ``slapd`` as a child process on loopback.

One server runs per test session, from a temporary ``slapd.conf`` with an mdb database and the
ppolicy overlay (a default policy with lockout, so a locked account really cannot bind). The
connector binds as ``cn=jmlsync,dc=example,dc=org``, which has only the rights the
least-privilege ACL of docs/targets/ldap.md gives it. Each test gets its own subtree (a fresh
``ou=t<hex>``, with ``ou=people`` and ``ou=groups`` below it), much faster than a server per
test. Tests skip when slapd is not installed. Import the fixtures into a test module to use them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from jmlsync.targets.ldap_settings import LdapTargetSettings
from tests.conftest import starts_process

if TYPE_CHECKING:
    from jmlsync.targets.ldap import LdapTarget

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret"
BIND_DN = f"cn=jmlsync,{SUFFIX}"
BIND_PASSWORD = "jmlsync-" + "p" * 24
SLAPD = shutil.which("slapd") or ("/usr/sbin/slapd" if Path("/usr/sbin/slapd").exists() else None)
SCHEMA = Path("/etc/ldap/schema")

#: The test copy of the ACL docs/targets/ldap.md recommends; the tests prove it is enough.
ACL = f"""
access to attrs=userPassword
    by anonymous auth
    by self write
    by * none
access to dn.regex="^.+,ou=groups,(ou=[^,]+,)?{SUFFIX}$" attrs=member,uniqueMember,memberUid
    by dn.exact="{BIND_DN}" write
    by users read
access to dn.regex="^.+,ou=people,(ou=[^,]+,)?{SUFFIX}$" attrs=pwdAccountLockedTime
    by dn.exact="{BIND_DN}" manage
    by users read
access to dn.regex="^ou=people,(ou=[^,]+,)?{SUFFIX}$" attrs=children
    by dn.exact="{BIND_DN}" write
    by users read
access to dn.regex="^[^,]+,ou=people,(ou=[^,]+,)?{SUFFIX}$" attrs=entry,@inetOrgPerson
    by dn.exact="{BIND_DN}" write
    by users read
access to *
    by users read
"""

CONFIG = """
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {schema}/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy
pidfile {state}/slapd.pid
argsfile {state}/slapd.args

database mdb
suffix "{suffix}"
rootdn "{root}"
rootpw {password}
directory {state}/db
maxsize 268435456
overlay ppolicy
ppolicy_default "cn=default,ou=policies,{suffix}"
# A search that is not paged stops at 5 entries for the connector, so listings must page.
limits dn.exact="{bind}" size.soft=5 size.hard=5 size.prtotal=unlimited
{acl}
"""

BASE_LDIF = f"""
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=policies,{SUFFIX}
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,{SUFFIX}
objectClass: organizationalRole
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdLockout: TRUE

dn: {BIND_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: jmlsync
userPassword: {BIND_PASSWORD}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class TlsFiles:
    """A test CA and a server certificate for "localhost" it signed, as PEM files."""

    ca: Path
    certificate: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Make a CA and a "localhost" server certificate with the openssl command line."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    extensions = directory / "server.ext"
    # libldap checks a loopback connection against the machine's own name, not "localhost".
    names = sorted({"localhost", socket.gethostname(), socket.getfqdn()})
    extensions.write_text(
        f"subjectAltName={','.join(f'DNS:{n}' for n in names)},IP:127.0.0.1\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    ca_key, request = str(directory / "ca.key"), str(directory / "server.csr")
    commands = [
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", str(files.ca), "-days", "2"],
        [openssl, "req", *ec, "-keyout", str(files.key), "-out", request],
        [openssl, "x509", "-req", "-in", request, "-CA", str(files.ca), "-CAkey", ca_key],
    ]
    commands[0] += ["-subj", "/CN=jmlsync test CA"]
    commands[1] += ["-subj", "/CN=localhost"]
    commands[2] += ["-CAcreateserial", "-days", "2", "-extfile", str(extensions)]
    commands[2] += ["-out", str(files.certificate)]
    for command in commands:
        subprocess.run(command, check=True, capture_output=True, timeout=30)
    return files


class Slapd:
    """The session's slapd: its URL, its process (stoppable and restartable on the same port
    and database, for fault tests), and blocking ``ldapsearch``/``ldapmodify`` helpers."""

    def __init__(self, state: Path, tls: TlsFiles | None = None) -> None:
        self.state = state
        self.port = _free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        #: With ``tls``: StartTLS on ``url`` too, and LDAPS here; both named "localhost", as
        #: the server's certificate is.
        self.ldaps_url: str | None = None
        self._listen = self.url
        self._process: subprocess.Popen[bytes] | None = None
        (state / "db").mkdir(parents=True)
        tls_config = ""
        if tls is not None:
            self.ldaps_url = f"ldaps://localhost:{_free_port()}"
            self._listen = f"{self.url} {self.ldaps_url.replace('localhost', '127.0.0.1')}"
            tls_config = (
                f"TLSCACertificateFile {tls.ca}\nTLSCertificateFile {tls.certificate}\n"
                f"TLSCertificateKeyFile {tls.key}\n"
            )
        conf = tls_config + CONFIG.format(
            schema=SCHEMA,
            state=state,
            suffix=SUFFIX,
            root=ROOT_DN,
            password=ROOT_PASSWORD,
            bind=BIND_DN,
            acl=ACL,
        )
        (state / "slapd.conf").write_text(conf)

    def start(self) -> None:
        """Start slapd and return once it answers."""
        assert SLAPD is not None
        log = (self.state / "slapd.log").open("ab")
        with log:
            # -d keeps it in the foreground as our child; its log goes to a file nobody must drain.
            self._process = subprocess.Popen(
                [SLAPD, "-f", str(self.state / "slapd.conf"), "-h", self._listen, "-d", "0"],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                text = (self.state / "slapd.log").read_text("utf-8", "replace")
                raise RuntimeError(f"slapd exited with {self._process.returncode}: {text}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("slapd did not listen within 15 s")

    def stop(self) -> None:
        """Stop slapd (SIGTERM: it syncs its database) and wait for it."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def _tool(self, tool: str, args: Iterable[str], text: str | None = None) -> str:
        command = [tool, "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, *args]
        done = subprocess.run(command, input=text, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def add(self, ldif: str) -> None:
        """Add the entries of ``ldif`` as the root DN."""
        self._tool("ldapadd", [], ldif)

    def modify(self, ldif: str) -> None:
        """Apply an LDIF change as the root DN."""
        self._tool("ldapmodify", [], ldif)

    def search(self, base: str, filter_: str, *attributes: str) -> list[dict[str, list[str]]]:
        """Entries found by ``ldapsearch`` under ``base``, each attribute's values in order, the
        entry's DN under the key ``dn``; operational attributes are read when named."""
        out = self._tool(
            "ldapsearch", ["-LLL", "-o", "ldif-wrap=no", "-b", base, filter_, *attributes]
        )
        entries: list[dict[str, list[str]]] = []
        for block in out.strip().split("\n\n"):
            if not block.strip():
                continue
            entry: dict[str, list[str]] = {}
            for line in block.splitlines():
                key, _, value = line.partition(": ")
                entry.setdefault(key.rstrip(":").lower(), []).append(value)
            entries.append(entry)
        return entries

    def can_bind(self, dn: str, password: str) -> bool:
        """Whether a simple bind as ``dn`` succeeds (``ldapwhoami``)."""
        command = ["ldapwhoami", "-x", "-H", self.url, "-D", dn, "-w", password]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        return done.returncode == 0


@dataclass(frozen=True)
class LdapTree:
    """One test's subtree of the session's slapd: where its users and groups live."""

    slapd: Slapd
    base: str

    @property
    def users_base(self) -> str:
        return f"ou=people,{self.base}"

    @property
    def groups_base(self) -> str:
        return f"ou=groups,{self.base}"

    def group_dn(self, name: str) -> str:
        return f"cn={name},{self.groups_base}"

    def add_groups(self, names: Iterable[str], object_class: str = "groupOfNames") -> None:
        """Create groups; a groupOfNames or groupOfUniqueNames must have a member, so each
        gets a placeholder the connector never manages."""
        ldif = []
        for name in names:
            lines = [f"dn: {self.group_dn(name)}", f"objectClass: {object_class}", f"cn: {name}"]
            if object_class == "groupOfNames":
                lines.append(f"member: {self.base}")
            elif object_class == "groupOfUniqueNames":
                lines.append(f"uniqueMember: {self.base}")
            else:
                lines.append(f"gidNumber: {10000 + len(ldif)}")
            ldif.append("\n".join(lines))
        if ldif:
            self.slapd.add("\n\n".join(ldif) + "\n")

    def add_user(self, uid: str, *, mail: str | None = None, password: str | None = None) -> str:
        """Create an inetOrgPerson under ``users_base``; returns its DN."""
        dn = f"uid={uid},{self.users_base}"
        lines = [
            f"dn: {dn}",
            "objectClass: inetOrgPerson",
            f"uid: {uid}",
            f"cn: {uid}",
            f"sn: {uid}",
        ]
        if mail:
            lines.append(f"mail: {mail}")
        if password:
            lines.append(f"userPassword: {password}")
        self.slapd.add("\n".join(lines) + "\n")
        return dn

    def members(self, name: str, attribute: str = "member") -> list[str]:
        """The values of a group's membership attribute, straight from slapd, duplicates kept."""
        (entry,) = self.slapd.search(self.group_dn(name), "(objectClass=*)", attribute)
        return entry.get(attribute.lower(), [])


@pytest.fixture(scope="session")
@starts_process
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """The session's slapd, or a skip where it is not installed."""
    if SLAPD is None or not SCHEMA.is_dir():
        pytest.skip("slapd is not installed (Debian: apt-get install slapd ldap-utils)")
    pytest.importorskip("bonsai", reason="the ldap extra is not installed")
    server = Slapd(tmp_path_factory.mktemp("slapd"))
    server.start()
    try:
        server.add(BASE_LDIF)
        yield server
    finally:
        server.stop()


@pytest.fixture
def ldap_tree(slapd: Slapd) -> LdapTree:
    """A fresh subtree with empty ``ou=people`` and ``ou=groups``, for this test alone."""
    base = f"ou=t{uuid.uuid4().hex},{SUFFIX}"
    slapd.add(
        f"dn: {base}\nobjectClass: organizationalUnit\nou: {base[3:].split(',')[0]}\n\n"
        f"dn: ou=people,{base}\nobjectClass: organizationalUnit\nou: people\n\n"
        f"dn: ou=groups,{base}\nobjectClass: organizationalUnit\nou: groups\n"
    )
    return LdapTree(slapd, base)


def ldap_settings(tree: LdapTree, state: Path, **overrides: Any) -> LdapTargetSettings:
    """Settings for a connector on ``tree``, bound as the least-privileged DN, its password
    in a file under ``state``; users provisioned as inetOrgPerson named by ``uid``."""
    password_file = state / "ldap-password"
    password_file.parent.mkdir(parents=True, exist_ok=True)
    password_file.write_text(BIND_PASSWORD + "\n")
    values: dict[str, Any] = {
        "kind": "ldap",
        "url": tree.slapd.url,
        "bind_dn": BIND_DN,
        "bind_password_file": password_file,
        "users_base": tree.users_base,
        "groups_base": tree.groups_base,
        "user_filter": "(uid={userName})",
        "provision_users": True,
        "disable": "ppolicy",
        "start_tls": False,
    }
    return LdapTargetSettings.model_validate(values | overrides)


#: Every role the contract suite grants, created as groups before a test runs.
CONTRACT_ROLES = ("admin", "reader", *(f"role-{i}" for i in range(7)))
CONTRACT_ROLES += tuple(f"role-{i:02}" for i in range(10))


@pytest.fixture
def ldap_contract_tree(ldap_tree: LdapTree) -> LdapTree:
    """A fresh subtree holding a group for every role the contract suite uses."""
    ldap_tree.add_groups(CONTRACT_ROLES)
    return ldap_tree


async def open_ldap_target(
    request: pytest.FixtureRequest, state: Path, *, page_size: int
) -> LdapTarget:
    """The contract suite's factory: a connector on this test's subtree, groups created."""
    from jmlsync.targets.ldap import LdapTarget

    tree: LdapTree = request.getfixturevalue("ldap_contract_tree")
    return await LdapTarget.open("contract", ldap_settings(tree, state), page_size=page_size)


def own_slapd(state: Path, tls: TlsFiles | None = None) -> tuple[Slapd, LdapTree]:
    """A started slapd of one test's own (the caller stops it), for tests that stop and
    restart the server or speak TLS; its tree is the suffix, with ``ou=people`` and
    ``ou=groups``."""
    if SLAPD is None or not SCHEMA.is_dir():
        pytest.skip("slapd is not installed (Debian: apt-get install slapd ldap-utils)")
    server = Slapd(state, tls)
    server.start()
    try:
        server.add(BASE_LDIF)
        server.add(
            f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n"
            f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n"
        )
    except BaseException:
        server.stop()
        raise
    return server, LdapTree(server, SUFFIX)
