"""The Kubernetes manifests in deploy/kubernetes: schema-valid, complete and consistent.

Each file is validated against the schema of a current Kubernetes release with
kubernetes-validate; the kustomizations are rendered with ``kubectl kustomize`` where kubectl
is installed and the rendered objects validated and checked as a whole. The configuration each
overlay ships as its ConfigMap passes the real ``jmlsync config check``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml

from tests.conftest import start_service, stop_service
from tests.postgres import fresh_database

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("sqlite", "postgresql")
KUSTOMIZATIONS = sorted(KUBERNETES.glob("*/kustomization.yaml"))
#: The newest Kubernetes release whose schemas kubernetes-validate ships.
KUBERNETES_VERSION = kubernetes_validate.latest_version()
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed: the kustomizations are not rendered"
)
UID = 10001


def _load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document


def _kustomization_files(kustomization: Path) -> Iterator[tuple[str, Path]]:
    """(role, path) of every file or directory a kustomization names."""
    spec = _load(kustomization)
    here = kustomization.parent
    for resource in spec.get("resources", []):
        yield "resource", here / resource
    for patch in spec.get("patches", []):
        if "path" in patch:
            yield "patch", here / patch["path"]
    for generator in spec.get("configMapGenerator", []) + spec.get("secretGenerator", []):
        for entry in generator.get("files", []):
            yield "generated", here / entry.rpartition("=")[2]


def _resource_files() -> list[Path]:
    """Every file that is a whole Kubernetes object (not a patch, not a kustomization)."""
    files = []
    for kustomization in KUSTOMIZATIONS:
        for role, path in _kustomization_files(kustomization):
            if role == "resource" and path.is_file():
                files.append(path)
    return sorted(files)


def _render(overlay: str) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(KUBERNETES / overlay)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _validate(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


# --- the files ------------------------------------------------------------------------------------


def test_every_overlay_and_the_base_have_a_kustomization() -> None:
    assert {k.parent.name for k in KUSTOMIZATIONS} == {"base", *OVERLAYS}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.parent.name)
def test_everything_a_kustomization_names_exists(kustomization: Path) -> None:
    named = list(_kustomization_files(kustomization))
    assert named, f"{kustomization} names nothing"
    for role, path in named:
        if path.is_dir():
            assert (path / "kustomization.yaml").is_file(), f"{role} {path}: no kustomization"
        else:
            assert path.is_file(), f"{kustomization}: the {role} {path} does not exist"


@pytest.mark.parametrize("path", _resource_files(), ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_each_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        _validate(document)


def test_the_schema_check_catches_a_mistake() -> None:
    deployment = _load(KUBERNETES / "base" / "deployment.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["httpGet"]["pathh"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)
    container["livenessProbe"]["httpGet"].pop("pathh")
    container["resources"]["requests"]["cpu"] = ["100m"]
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)


# --- the rendered deployments -------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_is_valid_and_consistent(overlay: str) -> None:
    objects = _render(overlay)
    for document in objects:
        _validate(document)
    deployment = _one(objects, "Deployment")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _one(objects, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == UID
    assert spec["securityContext"]["fsGroup"] == UID
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == _one(objects, "ServiceAccount")["metadata"]["name"]
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    assert spec["terminationGracePeriodSeconds"] > 10  # [pipeline].shutdown_grace_seconds

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert volumes.keys() == mounts.keys()
    # The tokens: the Secret's directory (a subPath is never updated in place), owner-only
    # bits (the kubelet adds group read for fsGroup; the file stays unreadable to others).
    assert volumes["tokens"]["secret"]["defaultMode"] == 0o400
    assert "subPath" not in mounts["tokens"]
    assert mounts["tokens"]["readOnly"] is True
    assert mounts["state"]["mountPath"] == "/var/lib/jmlsync"
    configmap = _one(objects, "ConfigMap")
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert "subPath" not in mounts["config"]
    assert "jmlsync.toml" in configmap["data"]
    assert container["args"] == ["serve", "--config", "/etc/jmlsync/jmlsync.toml"]


@needs_kubectl
def test_sqlite_runs_exactly_one_replica_on_its_volume() -> None:
    objects = _render("sqlite")
    deployment = _one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    claim = _one(objects, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {
        "name": "state",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    }
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


@needs_kubectl
def test_postgresql_runs_replicas_that_survive_a_disruption() -> None:
    objects = _render("postgresql")
    deployment = _one(objects, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = _one(objects, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    policy = _one(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {8080}
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, 5432, 443} <= egress_ports
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JMLSYNC_STORE__URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "jmlsync-database",
        "key": "url",
    }


# --- the configuration in the ConfigMap ---------------------------------------------------------


def _plain_env(overlay: str) -> dict[str, str]:
    """The container's literal environment: the base Deployment's, then the overlay patch's."""
    env: dict[str, str] = {}
    for path in (
        KUBERNETES / "base" / "deployment.yaml",
        KUBERNETES / overlay / "deployment-patch.yaml",
    ):
        for container in _load(path)["spec"]["template"]["spec"].get("containers", []):
            for entry in container.get("env", []):
                if "value" in entry:
                    env[entry["name"]] = entry["value"]
    return env


def _config_check(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JMLSYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "jmlsync", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **env},
        check=False,
    )


def test_sqlite_configmap_passes_config_check() -> None:
    env = _plain_env("sqlite")
    assert env["JMLSYNC_CONFIG"] == "/etc/jmlsync/jmlsync.toml"
    done = _config_check(KUBERNETES / "sqlite" / "jmlsync.toml", env)
    assert done.returncode == 0, done.stderr
    assert "ledger: kind ledger" in done.stdout
    assert "error" not in done.stderr.lower()


@pytest.mark.postgresql
async def test_postgresql_configmap_passes_config_check_on_a_database() -> None:
    async with fresh_database() as url:
        env = {**_plain_env("postgresql"), "JMLSYNC_STORE__URL": url}
        done = _config_check(KUBERNETES / "postgresql" / "jmlsync.toml", env)
    assert done.returncode == 0, done.stderr
    assert "aws: kind aws-identity-center" in done.stdout


def test_config_check_refuses_a_broken_configmap(tmp_path: Path) -> None:
    broken = tmp_path / "jmlsync.toml"
    text = (KUBERNETES / "sqlite" / "jmlsync.toml").read_text()
    broken.write_text(text.replace('target = "ledger"', 'target = "ledgr"'))
    done = _config_check(broken, _plain_env("sqlite"))
    assert done.returncode == 1
    assert "unknown target 'ledgr'" in done.stderr


# --- the configuration serves -------------------------------------------------------------------


def _as_mounted(overlay: str, root: Path, store_url: str | None = None) -> Path:
    """The overlay's jmlsync.toml with the pod's mount points moved under ``root``."""
    state, tokens = root / "var-lib-jmlsync", root / "etc-jmlsync-tokens"
    state.mkdir()
    tokens.mkdir()
    (tokens / "tokens").write_text("k8s-" + "c" * 40 + "\n")
    (tokens / "tokens").chmod(0o600)
    text = (KUBERNETES / overlay / "jmlsync.toml").read_text()
    text = text.replace("/var/lib/jmlsync", str(state)).replace("/etc/jmlsync-tokens", str(tokens))
    text = text.replace('listen = "0.0.0.0:8080"', 'listen = "127.0.0.1:0"')
    if store_url is not None:
        text = re.sub(r'^url = ".*"$', f'url = "{store_url}"', text, count=1, flags=re.M)
    config = root / "jmlsync.toml"
    config.write_text(text)
    return config


async def _serves_and_is_ready(config: Path) -> None:
    running = await start_service(config)
    try:
        root = running.url.removesuffix("/scim/v2")
        headers = {"Authorization": "Bearer k8s-" + "c" * 40}
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(30):
                while True:
                    async with session.get(root + "/readyz") as response:
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.1)  # another process is getting ready
            async with session.get(running.url + "/Users", headers=headers) as response:
                assert response.status == 200
    finally:
        assert await stop_service(running) == 0


@pytest.mark.process
async def test_sqlite_configmap_serves(tmp_path: Path) -> None:
    config = _as_mounted("sqlite", tmp_path)
    await _serves_and_is_ready(config)
    assert (tmp_path / "var-lib-jmlsync" / "jmlsync.db").exists()  # on the volume


@pytest.mark.postgresql
@pytest.mark.process
async def test_postgresql_configmap_serves(tmp_path: Path) -> None:
    async with fresh_database() as url:
        await _serves_and_is_ready(_as_mounted("postgresql", tmp_path, url))
