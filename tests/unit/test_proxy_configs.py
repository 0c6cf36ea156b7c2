"""The nginx and Caddy configurations of docs/deploy-tls.md, checked by nginx and Caddy.

Each tool's own configuration test runs where the tool is installed (``nginx -t``,
``caddy validate``); the certificate paths point at a certificate made for the test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy-tls.md"
CERTIFICATE = "/etc/letsencrypt/live/jmlsync.example.com/fullchain.pem"
KEY = "/etc/letsencrypt/live/jmlsync.example.com/privkey.pem"
ALLOW = "/etc/nginx/jmlsync-idp-allow.conf"


def _block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, f"expected one {language} block in {DOC.name}"
    return blocks[0]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    certificate, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-keyout", str(key), "-out", str(certificate)),
            *("-subj", "/CN=jmlsync.example.com", "-days", "1"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return certificate, key


def test_the_page_has_both_configurations() -> None:
    nginx, caddy = _block("nginx"), _block("caddyfile")
    for config in (nginx, caddy):
        assert "/scim/v2/" in config
        assert "1m" in config.lower() or "1mb" in config.lower()  # [server].max_body_bytes
    assert "X-Forwarded-For $remote_addr" in nginx
    assert "X-Forwarded-Proto $scheme" in nginx
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in nginx
    assert "protocols tls1.2 tls1.3" in caddy


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    certificate, key = _self_signed(tmp_path)
    allow = tmp_path / "allow.conf"
    allow.write_text("allow 192.0.2.0/24;\n")
    site = _block("nginx").replace(CERTIFICATE, str(certificate)).replace(KEY, str(key))
    (tmp_path / "site.conf").write_text(site.replace(ALLOW, str(allow)))
    temp = tmp_path / "temp"
    temp.mkdir()
    paths = "\n".join(
        f"    {kind}_temp_path {temp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log off;\n{paths}\n    include {tmp_path}/site.conf;\n}}\n"
    )
    nginx = shutil.which("nginx")
    assert nginx is not None
    done = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(main)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


@pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")
def test_caddy_accepts_the_configuration(tmp_path: Path) -> None:
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(_block("caddyfile"))
    caddy = shutil.which("caddy")
    assert caddy is not None
    done = subprocess.run(
        [caddy, "validate", "--adapter", "caddyfile", "--config", str(caddyfile)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Valid configuration" in done.stdout + done.stderr
    assert "not formatted" not in done.stdout + done.stderr
