"""Check deploy/ for what tts-broker relies on, beyond what the schema tools check (scripts/test-deploy.sh).

kubernetes-validate checks the Kubernetes objects against the API schemas, but has no schema for KEDA's
ScaledObject; docker compose config checks the compose file's syntax, hadolint the Dockerfiles. This script
adds the fields we rely on, so a change that breaks the deployment's promises fails here:

- every manifest parses; every object has apiVersion, kind, metadata.name;
- the broker Deployment: 1 replica, strategy Recreate, its state dir on a PersistentVolumeClaim defined here,
  a Service whose selector matches its pods, probes, a token file for a non-loopback --http; the GPU worker:
  nvidia.com/gpu limit, readiness and liveness probes, weights on a read-only volume;
- each KEDA ScaledObject (keda.sh/v1alpha1): targets a Deployment defined here, min <= max, prometheus
  triggers with serverAddress, a numeric threshold and a query on tts_queue_depth or
  tts_queue_oldest_age_seconds; the GPU worker's minReplicaCount is 0 (scale to zero);
- compose.yaml: broker + piper-worker + gateway, the journal on a named volume, the GPU worker only under a
  profile with an NVIDIA device reservation;
- the gateway Deployment: readiness on /health, API keys from a Secret, a Service; a ServiceMonitor that selects
  the broker's metrics port; the GPU workers' weights on a PersistentVolumeClaim defined here;
- the Dockerfiles: FROM first (after build arguments), the GPU one on nvidia/cuda (the BASE argument's default),
  no weights copied or downloaded into an image;
- the systemd units: LimitNOFILE on broker and worker; the broker's RestartPreventExitStatus holds 2, 4 and 5
  (usage, state dir locked, state dir unusable: exits a restart cannot fix).

    python scripts/check_deploy.py [DEPLOY_DIR]      exit 0 when all hold, 1 with the list of failures
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

METRICS = ("tts_queue_depth", "tts_queue_oldest_age_seconds")


class Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def need(self, ok: object, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return bool(ok)


def dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def load_manifests(folder: Path, check: Checker) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            check.need(False, f"{path.name}: does not parse: {exc}")
            continue
        for doc in docs:
            if doc is None:
                continue
            name = f"{path.name}: {dig(doc, 'kind')}/{dig(doc, 'metadata', 'name')}"
            if check.need(isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind")
                          and dig(doc, "metadata", "name"), f"{name}: apiVersion, kind and metadata.name"):
                objects.append(doc)
    return objects


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return dig(deployment, "spec", "template", "spec", "containers") or []


def check_kubernetes(objects: list[dict[str, Any]], check: Checker) -> None:
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    deployments = by_kind.get("Deployment", {})
    claims = by_kind.get("PersistentVolumeClaim", {})

    broker = deployments.get("tts-broker")
    if check.need(broker, "a Deployment tts-broker"):
        assert broker is not None
        check.need(dig(broker, "spec", "replicas") == 1, "tts-broker: replicas 1 (one journal)")
        check.need(dig(broker, "spec", "strategy", "type") == "Recreate", "tts-broker: strategy Recreate")
        volumes = dig(broker, "spec", "template", "spec", "volumes") or []
        pvc_names = [dig(v, "persistentVolumeClaim", "claimName") for v in volumes]
        check.need(any(n in claims for n in pvc_names), "tts-broker: its state on a PersistentVolumeClaim defined here")
        mounts = [m.get("mountPath") for c in containers(broker) for m in c.get("volumeMounts", [])]
        env = {e.get("name"): e.get("value") for c in containers(broker) for e in c.get("env", [])}
        check.need(env.get("TTS_STATE_DIR") in mounts, "tts-broker: TTS_STATE_DIR is the mounted volume")
        command = [str(a) for c in containers(broker) for a in c.get("command", []) + c.get("args", [])]
        token_file = env.get("TTS_HTTP_TOKEN_FILE")
        if "--http" in command and not command[command.index("--http") + 1].startswith("127.0.0.1"):
            check.need(token_file and any(token_file.startswith(f"{m}/") for m in mounts),
                       "tts-broker: a non-loopback --http has TTS_HTTP_TOKEN_FILE on a mounted Secret")
        check.need(all(c.get("readinessProbe") and c.get("livenessProbe") for c in containers(broker)),
                   "tts-broker: readiness and liveness probes")
        labels = dig(broker, "spec", "template", "metadata", "labels") or {}
        services = [s for s in by_kind.get("Service", {}).values()
                    if (sel := dig(s, "spec", "selector")) and all(labels.get(k) == v for k, v in sel.items())]
        check.need(services, "a Service whose selector matches the broker's pods")
        ports = {p.get("port") for s in services for p in dig(s, "spec", "ports") or []}
        check.need({5555, 5556} <= ports, "the broker Service exposes 5555 (clients) and 5556 (workers)")

    check_gateway(deployments.get("tts-gateway"), by_kind, check)
    check_monitoring(by_kind, check)

    gpu = [d for d in deployments.values()
           if any("nvidia.com/gpu" in (dig(c, "resources", "limits") or {}) for c in containers(d))]
    if check.need(gpu, "a GPU worker Deployment with an nvidia.com/gpu limit"):
        for deployment in gpu:
            name = deployment["metadata"]["name"]
            for container in containers(deployment):
                check.need(container.get("readinessProbe") and container.get("livenessProbe"),
                           f"{name}: readiness and liveness probes")
                check.need(any(m.get("readOnly") for m in container.get("volumeMounts", [])),
                           f"{name}: weights on a read-only volume")
            volumes = dig(deployment, "spec", "template", "spec", "volumes") or []
            check.need(any(dig(v, "persistentVolumeClaim", "claimName") in claims for v in volumes),
                       f"{name}: its weights' PersistentVolumeClaim is defined here")

    scaled = by_kind.get("ScaledObject", {})
    check.need(scaled, "a KEDA ScaledObject")
    for name, obj in scaled.items():
        check.need(obj.get("apiVersion") == "keda.sh/v1alpha1", f"ScaledObject {name}: apiVersion keda.sh/v1alpha1")
        target = dig(obj, "spec", "scaleTargetRef", "name")
        check.need(target in deployments, f"ScaledObject {name}: scaleTargetRef {target!r} is a Deployment here")
        low, high = dig(obj, "spec", "minReplicaCount"), dig(obj, "spec", "maxReplicaCount")
        check.need(isinstance(low, int) and isinstance(high, int) and 0 <= low <= high,
                   f"ScaledObject {name}: integer minReplicaCount <= maxReplicaCount")
        if target in deployments and deployments[target] in gpu:
            check.need(low == 0, f"ScaledObject {name}: minReplicaCount 0 for GPU workers (scale to zero)")
        triggers = dig(obj, "spec", "triggers") or []
        check.need(triggers, f"ScaledObject {name}: triggers")
        for trigger in triggers:
            meta = trigger.get("metadata") or {}
            check.need(trigger.get("type") == "prometheus", f"ScaledObject {name}: prometheus trigger")
            check.need(str(meta.get("serverAddress", "")).startswith("http"), f"ScaledObject {name}: serverAddress")
            check.need(any(m in str(meta.get("query", "")) for m in METRICS),
                       f"ScaledObject {name}: query on {' or '.join(METRICS)}")
            threshold = meta.get("threshold")
            check.need(isinstance(threshold, str) and re.fullmatch(r"\d+(\.\d+)?", threshold),
                       f"ScaledObject {name}: threshold is a number in a string")


def services_for(pod_labels: dict[str, Any], by_kind: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [s for s in by_kind.get("Service", {}).values()
            if (sel := dig(s, "spec", "selector")) and all(pod_labels.get(k) == v for k, v in sel.items())]


def check_gateway(gateway: dict[str, Any] | None, by_kind: dict[str, dict[str, dict[str, Any]]],
                  check: Checker) -> None:
    if not check.need(gateway, "a Deployment tts-gateway"):
        return
    assert gateway is not None
    check.need(all(dig(c, "readinessProbe", "httpGet", "path") == "/health" for c in containers(gateway)),
               "tts-gateway: readiness on GET /health")
    env = {e.get("name") for c in containers(gateway) for e in c.get("env", [])}
    check.need("TTS_GATEWAY_API_KEY_FILE" in env, "tts-gateway: API keys from a file (a Secret)")
    volumes = dig(gateway, "spec", "template", "spec", "volumes") or []
    check.need(any(dig(v, "secret", "secretName") for v in volumes), "tts-gateway: its keys mounted from a Secret")
    labels = dig(gateway, "spec", "template", "metadata", "labels") or {}
    check.need(services_for(labels, by_kind), "a Service whose selector matches the gateway's pods")


def check_monitoring(by_kind: dict[str, dict[str, dict[str, Any]]], check: Checker) -> None:
    monitors = by_kind.get("ServiceMonitor", {})
    if not check.need(monitors, "a ServiceMonitor for the broker's /metrics"):
        return
    for name, monitor in monitors.items():
        selector = dig(monitor, "spec", "selector", "matchLabels") or {}
        matched = [s for s in by_kind.get("Service", {}).values()
                   if all((dig(s, "metadata", "labels") or {}).get(k) == v for k, v in selector.items())]
        ports = {p.get("name") for s in matched for p in dig(s, "spec", "ports") or []}
        wanted = {e.get("port") for e in dig(monitor, "spec", "endpoints") or []}
        check.need(wanted and wanted <= ports, f"ServiceMonitor {name}: selects a Service with port(s) {wanted}")


def check_compose(path: Path, check: Checker) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    services = data.get("services", {})
    for name in ("broker", "piper-worker", "gateway"):
        check.need(name in services and "profiles" not in services[name], f"compose: service {name} by default")
    volumes = data.get("volumes") or {}
    broker_mounts = [str(v).split(":", 1)[0] for v in dig(services, "broker", "volumes") or []]
    check.need(any(m in volumes for m in broker_mounts), "compose: the broker's state on a named volume")
    gpu = services.get("fish-worker", {})
    check.need("gpu" in (gpu.get("profiles") or []), "compose: fish-worker only under the gpu profile")
    devices = dig(gpu, "deploy", "resources", "reservations", "devices") or []
    check.need(any(d.get("driver") == "nvidia" for d in devices), "compose: fish-worker reserves an NVIDIA GPU")


def check_dockerfile(path: Path, check: Checker, *, gpu: bool) -> None:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    # Build arguments may come before the first FROM (the base image is one: BASE=...); nothing else may.
    head = [ln for ln in instructions if not ln.upper().startswith("ARG ")]
    check.need(head and head[0].upper().startswith("FROM "), f"{path.name}: FROM comes first")
    args = dict(m.groups() for ln in instructions if (m := re.match(r"ARG\s+(\w+)=(\S+)", ln, re.I)))
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), head[0]) if head else ""
    if gpu:
        check.need("nvidia/cuda" in base, f"{path.name}: an NVIDIA CUDA base")
        check.need(any("download.pytorch.org/whl/cu" in ln for ln in instructions), f"{path.name}: torch for CUDA")
        check.need(any("VOLUME" in ln and "/models" in ln for ln in instructions), f"{path.name}: /models volume")
    for ln in instructions:
        lower = ln.lower()
        weights = r"checkpoint|\.pth|\.safetensors|models"
        copies_weights = lower.startswith(("copy", "add")) and re.search(weights, lower)
        check.need(not copies_weights, f"{path.name}: no weights copied into the image ({ln})")
        check.need(not re.search(r"huggingface-cli|hf_hub_download|snapshot_download", lower),
                   f"{path.name}: no weights downloaded into the image ({ln})")
    check.need(any(re.search(r"pip install .*'\.\[", ln) for ln in instructions),
               f"{path.name}: installs this checkout (pip install '.[...]'), not a registry release")


def unit_settings(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a systemd unit (the last one wins), comments skipped."""
    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith(("#", ";")):
            found[key.strip()] = value.strip()
    return found


def check_systemd(folder: Path, check: Checker) -> None:
    broker = unit_settings(folder / "tts-broker.service")
    worker = unit_settings(folder / "tts-worker.service")
    for name, unit in (("tts-broker.service", broker), ("tts-worker.service", worker)):
        check.need(unit.get("LimitNOFILE", "").isdigit() and int(unit["LimitNOFILE"]) >= 4096,
                   f"{name}: LimitNOFILE of at least 4096")
    prevent = set(broker.get("RestartPreventExitStatus", "").split())
    check.need({"2", "4", "5"} <= prevent,
               "tts-broker.service: RestartPreventExitStatus=2 4 5 (a restart cannot fix these exits)")


def main(argv: list[str]) -> int:
    deploy = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "deploy"
    check = Checker()
    objects = load_manifests(deploy / "kubernetes", check)
    check_kubernetes(objects, check)
    check_compose(deploy / "compose.yaml", check)
    check_dockerfile(deploy / "Dockerfile.cpu", check, gpu=False)
    check_dockerfile(deploy / "Dockerfile.gpu", check, gpu=True)
    check_systemd(deploy / "systemd", check)
    if check.failures:
        for failure in check.failures:
            print(f"check_deploy: FAIL {failure}", file=sys.stderr)
        return 1
    print(f"check_deploy: ok ({len(objects)} Kubernetes objects, compose.yaml, 2 Dockerfiles, "
          "systemd units)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
