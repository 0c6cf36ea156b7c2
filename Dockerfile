# syntax=docker/dockerfile:1
# jmlsync container image (docs/deploy-container.md).
#
#   docker build -t jmlsync .
#   docker run --rm -v jmlsync-state:/var/lib/jmlsync jmlsync token generate \
#       --config /etc/jmlsync/jmlsync.toml --if-missing --label okta
#   docker run -d --name jmlsync -p 8080:8080 --stop-timeout 30 \
#       -v jmlsync-state:/var/lib/jmlsync jmlsync
#
# The image runs as uid 10001, keeps its state in the /var/lib/jmlsync volume and reads
# /etc/jmlsync/jmlsync.toml (a copy of config/jmlsync.production.toml; mount your own over it)
# with JMLSYNC_<SECTION>__<KEY> environment overrides on top. JMLSYNC_CONFIG names that file
# for every command, so `docker exec jmlsync jmlsync status` needs no --config.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the wheel of the package and of every dependency ---------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jmlsync ./jmlsync
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels /wheels/jmlsync-*.whl

# --- runtime: a virtual environment at /opt/jmlsync, installed from those wheels only ----------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="jmlsync" \
      org.opencontainers.image.description="Joiner-mover-leaver sync: a SCIM 2.0 service provider that grants and revokes cloud access" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/jmlsync/bin:$PATH \
    JMLSYNC_CONFIG=/etc/jmlsync/jmlsync.toml \
    JMLSYNC_SERVER__LISTEN=0.0.0.0:8080

RUN groupadd --system --gid 10001 jmlsync \
 && useradd --system --uid 10001 --gid jmlsync --home-dir /var/lib/jmlsync --no-create-home \
        --shell /usr/sbin/nologin jmlsync

# No network and no index here: only the wheels built above are installed. The venv has no pip.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/jmlsync \
 && pip --python /opt/jmlsync/bin/python install --no-index --find-links /wheels \
        /wheels/jmlsync-*.whl \
 && /opt/jmlsync/bin/jmlsync --version

COPY --chown=root:root --chmod=0644 config/jmlsync.production.toml /etc/jmlsync/jmlsync.toml

# The store, the tokens file and the ledger. Created owned by the service user so that a new
# named volume starts with that owner.
RUN install -d -o 10001 -g 10001 -m 0700 /var/lib/jmlsync
VOLUME ["/var/lib/jmlsync"]

USER 10001:10001
WORKDIR /var/lib/jmlsync
EXPOSE 8080

# SIGTERM: stop taking requests, let jobs in flight finish ([pipeline].shutdown_grace_seconds,
# 10 s by default), exit 0. Give the container a stop timeout above that (--stop-timeout 30).
STOPSIGNAL SIGTERM

# Liveness of the process through the open /healthz, on the port JMLSYNC_SERVER__LISTEN names
# (no curl in the slim image; proxies from the environment are not used).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/jmlsync/bin/python", "-c", "import os, urllib.request as u; port = os.environ.get('JMLSYNC_SERVER__LISTEN', '0.0.0.0:8080').rpartition(':')[2]; u.build_opener(u.ProxyHandler({})).open(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

ENTRYPOINT ["/opt/jmlsync/bin/jmlsync"]
CMD ["serve", "--config", "/etc/jmlsync/jmlsync.toml"]
