"""Checks of the Helm chart's rendered manifests (``helm template``) that ``helm lint`` cannot make: that the
pods would start with settings llmrec accepts, and that probes, ports, annotations and mounts agree.

``python -m tools.check_chart rendered.yaml [...]``: one file per ``helm template`` run; exit status 1 with
the problems listed. ``make ops-check`` renders the chart with its defaults and with ``ci-values.yaml``.
For each Deployment, the ConfigMap's ``llmrec.toml`` and the container's ``LLMREC_*`` variables are loaded
with ``llmrec.settings.load_settings``, exactly as the process would at start; a variable set twice in one
container (Kubernetes keeps the last, silently: an ``extraEnv`` entry overriding the chart's) is a problem.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from llmrec.settings import Settings, SettingsError, load_settings

Manifest = dict[str, Any]


def load_manifests(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Exactly these variables in ``os.environ`` (so none of this shell's LLMREC_* leaks in), then restore."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") == kind]


def _component(manifest: Manifest) -> str:
    return str(manifest["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    return {str(item["name"]): str(item["value"]) for item in container.get("env", ()) if "value" in item}


def duplicate_env(deployment: Manifest) -> list[str]:
    """Variables set more than once in a container of ``deployment``."""
    problems: list[str] = []
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        names = [str(item["name"]) for item in container.get("env", ())]
        for twice in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{deployment['metadata']['name']}: {container['name']} sets {twice} twice")
    return problems


def _mount_for(
    path: str, pod: Mapping[str, Any], container: Mapping[str, Any]
) -> tuple[Manifest, str] | None:
    """The volume a file path lies in, and the path inside it."""
    volumes = {v["name"]: v for v in pod.get("volumes", ())}
    for mount in container.get("volumeMounts", ()):
        prefix = str(mount["mountPath"]).rstrip("/") + "/"
        if path.startswith(prefix):
            return volumes[mount["name"]], path[len(prefix) :]
    return None


def pod_settings(deployment: Manifest, manifests: list[Manifest]) -> tuple[Settings | None, list[str]]:
    """The settings the Deployment's first container would load, or the problems that prevent it."""
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = _env(container)
    problems: list[str] = []
    config_path = env.get("LLMREC_CONFIG")
    if not config_path:
        return None, [f"{name}: no LLMREC_CONFIG"]
    found = _mount_for(config_path, pod, container)
    if found is None or "configMap" not in found[0]:
        return None, [f"{name}: LLMREC_CONFIG={config_path} is not in a ConfigMap mount"]
    volume, key = found
    config_maps = {m["metadata"]["name"]: m for m in _by_kind(manifests, "ConfigMap")}
    config_map = config_maps.get(volume["configMap"]["name"])
    if config_map is None or key not in config_map.get("data", {}):
        return None, [f"{name}: ConfigMap {volume['configMap']['name']} has no key {key}"]
    secrets = {m["metadata"]["name"]: m for m in _by_kind(manifests, "Secret")}
    for variable, path in env.items():
        if not variable.endswith("_FILE"):
            continue
        mounted = _mount_for(path, pod, container)
        if mounted is None or "secret" not in mounted[0]:
            problems.append(f"{name}: {variable}={path} is not in a Secret mount")
            continue
        secret = secrets.get(mounted[0]["secret"]["secretName"])
        # A Secret the chart did not render (existingSecret) is the operator's to fill.
        if secret is not None and mounted[1] not in secret.get("data", {}):
            problems.append(f"{name}: Secret {secret['metadata']['name']} has no key {mounted[1]}")
    with tempfile.TemporaryDirectory() as folder:
        toml = Path(folder) / "llmrec.toml"
        toml.write_text(config_map["data"][key])
        llmrec_env = {k: v for k, v in env.items() if k.startswith("LLMREC_") and k != "LLMREC_CONFIG"}
        try:
            with _environment(llmrec_env):
                settings = load_settings(toml)
        except SettingsError as exc:
            return None, [*problems, f"{name}: llmrec would not start: {exc}"]
    return settings, problems


def _annotation_port(deployment: Manifest) -> int | None:
    port = deployment["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/port")
    return int(port) if port is not None else None


def _selects(service: Manifest, deployment: Manifest) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in service["spec"]["selector"].items())


def check_api(deployment: Manifest, settings: Settings, manifests: list[Manifest]) -> list[str]:
    name = deployment["metadata"]["name"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    problems: list[str] = []
    ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports", ())}
    if settings.api.host != "0.0.0.0":
        problems.append(f"{name}: api.host is {settings.api.host}: kubelet and the Service cannot reach it")
    if ports.get("grpc") != settings.api.port:
        problems.append(f"{name}: port grpc {ports.get('grpc')} != api.port {settings.api.port}")
    if ports.get("metrics") != settings.api.metrics_port:
        problems.append(f"{name}: port metrics {ports.get('metrics')} != api.metrics_port")
    if settings.api.http_enabled and ports.get("http") != settings.api.http_port:
        problems.append(f"{name}: port http {ports.get('http')} != api.http_port {settings.api.http_port}")
    if settings.api.processes != 1:
        problems.append(f"{name}: api.processes={settings.api.processes}: the metrics ports would differ")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = container.get(probe, {}).get("grpc")
        if spec is None or int(spec["port"]) != settings.api.port:
            problems.append(f"{name}: {probe} is not a gRPC probe on api.port {settings.api.port}")
    if settings.api.tls_cert_file is not None:
        problems.append(f"{name}: api TLS is on, but kubelet's gRPC probes speak plaintext only")
    if _annotation_port(deployment) not in (None, settings.api.metrics_port):
        problems.append(f"{name}: prometheus.io/port != api.metrics_port {settings.api.metrics_port}")
    services = [s for s in _by_kind(manifests, "Service") if _selects(s, deployment)]
    if not services:
        problems.append(f"{name}: no Service selects its pods")
    for service in services:
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in ports and port["targetPort"] not in ports.values():
                problems.append(
                    f"Service {service['metadata']['name']}: targetPort {port['targetPort']} unknown"
                )
    return problems


def check_worker(deployment: Manifest, settings: Settings) -> list[str]:
    name = deployment["metadata"]["name"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = settings.worker.metrics_port
    problems: list[str] = []
    probe = container.get("readinessProbe", {}).get("httpGet", {})
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", ())}
    if probe.get("path") != "/metrics" or ports.get(probe.get("port"), probe.get("port")) != port:
        problems.append(f"{name}: readiness probe does not read /metrics on worker.metrics_port {port}")
    if settings.worker.metrics_host != "0.0.0.0":
        problems.append(f"{name}: worker.metrics_host {settings.worker.metrics_host}: not scrapable")
    if _annotation_port(deployment) not in (None, port):
        problems.append(f"{name}: prometheus.io/port != worker.metrics_port {port}")
    return problems


def check(manifests: list[Manifest]) -> list[str]:
    problems: list[str] = []
    for manifest in manifests:
        if (
            not manifest.get("apiVersion")
            or not manifest.get("kind")
            or not manifest.get("metadata", {}).get("name")
        ):
            problems.append(f"a manifest without apiVersion, kind or metadata.name: {manifest}")
    deployments = {_component(d): d for d in _by_kind(manifests, "Deployment")}
    for component in ("api", "worker"):
        deployment = deployments.get(component)
        if deployment is None:
            problems.append(f"no Deployment with app.kubernetes.io/component={component}")
            continue
        problems += duplicate_env(deployment)
        settings, found = pod_settings(deployment, manifests)
        problems += found
        if settings is None:
            continue
        if component == "api":
            problems += check_api(deployment, settings, manifests)
        else:
            problems += check_worker(deployment, settings)
    return problems


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m tools.check_chart RENDERED.yaml [...]", file=sys.stderr)
        return 2
    failed = False
    for path in argv:
        problems = check(load_manifests(Path(path).read_text()))
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        failed = failed or bool(problems)
        if not problems:
            print(f"{path}: chart manifests consistent, settings load")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
