#!/usr/bin/env bash
# What the test suite needs from Debian's packages, installed when missing (as root). Each
# line is idempotent: on a machine that has everything it installs nothing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
updated=""
install() {
  [ -n "$updated" ] || { apt-get update -qq; updated=1; }
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# promtool (the prometheus package) checks and unit-tests deploy/prometheus/.
command -v promtool >/dev/null 2>&1 || install prometheus

# Chromium (headless) opens the console and the access-review summary page in the tests.
command -v chromium >/dev/null 2>&1 || install chromium

# slapd and ldap-utils for the LDAP connector's tests, and the libldap and SASL headers that
# bonsai (the ldap extra, in the test extra) compiles against. A system slapd the package may
# start listens on port 389; the tests run their own on a free loopback port.
if ! command -v slapd >/dev/null 2>&1 || [ ! -e /usr/include/ldap.h ] \
  || [ ! -e /usr/include/sasl/sasl.h ]; then
  install slapd ldap-utils libldap2-dev libsasl2-dev
fi
