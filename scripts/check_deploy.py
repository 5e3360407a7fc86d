"""Check deploy/ for what tts-broker relies on, beyond what the schema tools check (scripts/test-deploy.sh).

kubernetes-validate checks the Kubernetes objects against the API schemas, but has no schema for KEDA's
ScaledObject; docker compose config checks the compose file's syntax, hadolint the Dockerfiles. This script
adds the fields we rely on, so a change that breaks the deployment's promises fails here:

- every manifest parses; every object has apiVersion, kind, metadata.name;
- the broker Deployment: 1 replica, strategy Recreate, its state dir on a PersistentVolumeClaim defined here,
  a Service whose selector matches its pods, probes, a token file for a non-loopback --http; the GPU worker:
  nvidia.com/gpu limit, readiness and liveness probes, weights on a read-only volume; every worker: a readinessProbe
  that reads its --ready-file;
- each KEDA ScaledObject (keda.sh/v1alpha1): targets a Deployment defined here, min <= max, prometheus
  triggers with serverAddress, a numeric threshold and a query on tts_queue_depth or
  tts_queue_oldest_age_seconds; the GPU worker's minReplicaCount is 0 (scale to zero);
- compose.yaml: broker + piper-worker + gateway, the journal on a named volume, the GPU worker only under a
  profile with an NVIDIA device reservation; each worker's healthcheck reads its TTS_WORKER_READY_FILE;
- the gateway Deployment: readiness on /health, API keys from a Secret, a Service; a ServiceMonitor that selects
  the broker's metrics port; the GPU workers' weights on a PersistentVolumeClaim defined here;
- the Dockerfiles: FROM first (after build arguments), the GPU one on nvidia/cuda (the BASE argument's default),
  no weights copied or downloaded into an image;
- the systemd units: LimitNOFILE on broker and worker; the broker's RestartPreventExitStatus holds 2, 4 and 5
  (usage, state dir locked, state dir unusable: exits a restart cannot fix).
- the Secrets (kubernetes/secrets.yaml; the manifests here and in failover/): CURVE is on in every container that
  talks ZeroMQ (tts-broker: its key pair and the client and worker allowlists; tts-worker and tts: their key pair
  and the broker's public key), each key file or folder its settings name is on a read-only mount of a Secret
  that secrets.yaml defines with that key (a key pair where a pair is wanted; an allowlist of public NAME.key
  files only), every peer checks the broker against the same public key; every Secret volume is mode 0440 or
  tighter (never world-readable, never writable) in a pod with an fsGroup; every Secret a manifest references
  (volumes, secretKeyRef, a ServiceMonitor's credentials) exists in secrets.yaml with the key named; an exec
  probe that runs `tts` has client keys; the broker's probes are GET /healthz; secrets.yaml holds placeholders
  only and no file in deploy/ holds CURVE key material.

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

    for name, deployment in deployments.items():  # a worker is ready while the broker answers it, not while it runs
        for container in containers(deployment):
            command = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
            if command[:1] != ["tts-worker"]:
                continue
            ready = command[command.index("--ready-file") + 1] if "--ready-file" in command[:-1] else None
            probe = " ".join(str(a) for a in dig(container, "readinessProbe", "exec", "command") or [])
            check.need(ready is not None and ready in probe,
                       f"{name}: the readinessProbe reads the worker's --ready-file (the broker answers it)")

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


# ---- Secrets: CURVE keys, tokens --------------------------------------------------------------------

# The CURVE settings each ZeroMQ role reads (env variable, command-line flag, what the file is); `required` ones
# turn CURVE on. A broker container may also carry client settings (for `kubectl exec ... tts status`).
PAIR, PUBLIC, FOLDER = "a key pair (NAME.key_secret)", "a public key (NAME.key)", "an allowlist folder"
CURVE_SETTINGS: dict[str, list[tuple[str, str, str, bool]]] = {
    "broker": [("TTS_CURVE_SECRET", "--curve-secret", PAIR, True),
               ("TTS_CLIENT_KEYS", "--client-keys", FOLDER, True),
               ("TTS_WORKER_KEYS", "--worker-keys", FOLDER, True),
               ("TTS_ADMIN_KEYS", "--admin-keys", FOLDER, False),
               ("TTS_CLIENT_CURVE_SECRET", "", PAIR, False),
               ("TTS_CLIENT_BROKER_KEY", "", PUBLIC, False)],
    "worker": [("TTS_WORKER_CURVE_SECRET", "--curve-secret", PAIR, True),
               ("TTS_WORKER_BROKER_KEY", "--broker-key", PUBLIC, True)],
    "client": [("TTS_CLIENT_CURVE_SECRET", "--curve-secret", PAIR, True),
               ("TTS_CLIENT_BROKER_KEY", "--broker-key", PUBLIC, True)],
}
PLACEHOLDER = "REPLACE"
KEY_MATERIAL = re.compile(r"(public|secret)-key\s*=\s*\"[^\"]{40}\"")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def zmq_role(container: dict[str, Any]) -> str | None:
    """broker, worker or client (any `tts` command: the gateway, bridges) by the program a container runs."""
    command = [str(a) for a in container.get("command", []) + container.get("args", [])]
    program = Path(command[0]).name if command else ""
    return {"tts-broker": "broker", "tts-worker": "worker", "tts": "client"}.get(program)


def setting(container: dict[str, Any], env_name: str, flag: str) -> str | None:
    """A setting's value: the command-line flag wins over the environment, as in the programs."""
    command = [str(a) for a in container.get("command", []) + container.get("args", [])]
    if flag and flag in command[:-1]:
        return command[command.index(flag) + 1]
    env = {e.get("name"): e.get("value") for e in container.get("env", [])}
    value = env.get(env_name)
    return str(value) if value is not None else None


def secret_sources(volume: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]] | None:
    """(Secret name, items) for a secret or projected-secrets volume; None for any other volume."""
    if "secret" in volume:
        return [(str(dig(volume, "secret", "secretName")), dig(volume, "secret", "items") or [])]
    if "projected" in volume:
        sources = dig(volume, "projected", "sources") or []
        return [(str(dig(s, "secret", "name")), dig(s, "secret", "items") or []) for s in sources if "secret" in s]
    return None


def volume_mode(volume: dict[str, Any]) -> int | None:
    return dig(volume, "secret", "defaultMode") if "secret" in volume else dig(volume, "projected", "defaultMode")


def projected_files(volume: dict[str, Any], secrets: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """The files a Secret volume shows: relative path -> (Secret, key), as the kubelet projects them."""
    files: dict[str, tuple[str, str]] = {}
    for name, items in secret_sources(volume) or []:
        if items:
            files.update({str(i.get("path")): (name, str(i.get("key"))) for i in items})
        else:
            files.update({key: (name, key) for key in secret_keys(secrets.get(name))})
    return files


def secret_keys(secret: dict[str, Any] | None) -> list[str]:
    if secret is None:
        return []
    return [str(k) for k in {**(secret.get("data") or {}), **(secret.get("stringData") or {})}]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") in WORKLOADS]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload.get("kind") == "CronJob":
        return dig(workload, "spec", "jobTemplate", "spec", "template", "spec") or {}
    return dig(workload, "spec", "template", "spec") or {}


def check_secret_refs(objects: list[dict[str, Any]], secrets: dict[str, dict[str, Any]], check: Checker) -> None:
    """Every Secret a manifest names exists in secrets.yaml, with the keys it names."""
    def need(owner: str, name: object, key: object = None) -> None:
        if check.need(name in secrets, f"{owner}: Secret {name} is defined in secrets.yaml"):
            if key is not None:
                check.need(str(key) in secret_keys(secrets[str(name)]),
                           f"{owner}: Secret {name} in secrets.yaml has the key {key}")

    for obj in objects:
        owner = f"{obj['kind']} {obj['metadata']['name']}"
        if obj.get("kind") in WORKLOADS:
            spec = pod_spec(obj)
            for volume in spec.get("volumes") or []:
                for name, items in secret_sources(volume) or []:
                    need(owner, name)
                    for item in items:
                        need(owner, name, item.get("key"))
            for container in spec.get("containers") or []:
                for env in container.get("env") or []:
                    if ref := dig(env, "valueFrom", "secretKeyRef"):
                        need(owner, ref.get("name"), ref.get("key"))
                for source in container.get("envFrom") or []:
                    if ref := source.get("secretRef"):
                        need(owner, ref.get("name"))
        if obj.get("kind") == "ServiceMonitor":
            for endpoint in dig(obj, "spec", "endpoints") or []:
                if ref := dig(endpoint, "authorization", "credentials"):
                    need(owner, ref.get("name"), ref.get("key"))


def check_placeholders(deploy: Path, secrets: dict[str, dict[str, Any]], check: Checker) -> None:
    """secrets.yaml is a template: placeholders only; no CURVE key file's contents anywhere in deploy/."""
    for name, secret in secrets.items():
        check.need(not secret.get("data"), f"Secret {name}: stringData placeholders, no data (base64 hides keys)")
        for key, value in (secret.get("stringData") or {}).items():
            check.need(str(value).startswith(PLACEHOLDER),
                       f"Secret {name}: key {key} is a placeholder starting {PLACEHOLDER!r}, not real material")
    for path in sorted(p for p in deploy.rglob("*") if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        check.need(not KEY_MATERIAL.search(text),
                   f"{path.relative_to(deploy)}: holds CURVE key material (a public-key/secret-key line)")


def check_secret_mounts(objects: list[dict[str, Any]], secrets: dict[str, dict[str, Any]], check: Checker) -> None:
    """Secret volumes read-only, 0440 or tighter, fsGroup; every ZeroMQ container's keys on them, CURVE on."""
    broker_keys: set[tuple[str, str]] = set()
    for workload in workloads(objects):
        name = f"{workload['kind']} {workload['metadata']['name']}"
        spec = pod_spec(workload)
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        secret_volumes = {n: v for n, v in volumes.items() if secret_sources(v) is not None}
        for vname, volume in secret_volumes.items():
            mode = volume_mode(volume)
            modes = [mode] + [i.get("mode") for _, items in secret_sources(volume) or [] for i in items]
            check.need(all(m is not None and m & 0o227 == 0 for m in modes if m is not None) and mode is not None,
                       f"{name}: Secret volume {vname} has defaultMode 0440 or tighter (not world-readable, "
                       "not writable)")
        if secret_volumes:
            check.need(dig(spec, "securityContext", "fsGroup") is not None,
                       f"{name}: pod securityContext.fsGroup, so its non-root user reads the 0440 Secret files")
        for container in spec.get("containers") or []:
            cname = f"{name} container {container.get('name')}"
            mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") in secret_volumes]
            for mount in mounts:
                check.need(mount.get("readOnly") is True, f"{cname}: Secret mount {mount.get('mountPath')} readOnly")
            check_probes(container, cname, check)
            role = zmq_role(container)
            if role is None:
                continue
            for env_name, flag, kind, required in CURVE_SETTINGS[role]:
                path = setting(container, env_name, flag)
                if path is None:
                    check.need(not required, f"{cname}: CURVE on ({env_name} is set)")
                    continue
                found = key_at(path, mounts, secret_volumes, secrets, kind)
                if not check.need(isinstance(found, list), f"{cname}: {env_name}={path}: {found}"):
                    continue
                assert isinstance(found, list)
                if kind == PUBLIC:
                    broker_keys.update(found)
    check.need(len(broker_keys) <= 1, "every peer checks the broker against one public key (one Secret and key): "
               f"{sorted(broker_keys)}")


def key_at(path: str, mounts: list[dict[str, Any]], volumes: dict[str, dict[str, Any]],
           secrets: dict[str, dict[str, Any]], kind: str) -> list[tuple[str, str]] | str:
    """The (Secret, key) pairs behind a key file or allowlist folder, or why there are none."""
    for mount in sorted(mounts, key=lambda m: -len(str(m.get("mountPath")))):
        root = str(mount.get("mountPath")).rstrip("/")
        if path != root and not path.startswith(root + "/"):
            continue
        files = projected_files(volumes[str(mount.get("name"))], secrets)
        if kind == FOLDER:
            if path != root:
                return f"an allowlist folder is a whole Secret mount, not {path} inside {root}"
            if not files:
                return f"the Secret(s) mounted at {root} have no keys in secrets.yaml"
            bad = [f for f in files if not f.endswith(".key")]
            return (f"an allowlist holds public NAME.key files only, not {bad}" if bad
                    else [files[f] for f in files])
        relative = path[len(root) + 1:]
        if relative not in files:
            return f"no key {relative} in the Secret(s) mounted at {root} (secrets.yaml)"
        suffix = ".key_secret" if kind == PAIR else ".key"
        if not relative.endswith(suffix):
            return f"wants {kind}, a file named *{suffix}"
        return [files[relative]]
    return "not on a Secret mounted in this container"


def check_probes(container: dict[str, Any], cname: str, check: Checker) -> None:
    """Under CURVE a `tts` command is a client: a probe that runs one needs client keys in the container."""
    client_keys = setting(container, "TTS_CLIENT_CURVE_SECRET", "") and setting(container, "TTS_CLIENT_BROKER_KEY", "")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        command = [str(a) for a in dig(container, probe, "exec", "command") or []]
        runs_tts = bool(command) and (Path(command[0]).name == "tts" or any("tts_client" in a for a in command))
        check.need(not runs_tts or client_keys,
                   f"{cname}: {probe} runs a client of the broker (tts) without client keys (CURVE refuses it)")
    if zmq_role(container) == "broker":
        for probe in ("readinessProbe", "livenessProbe"):
            kind = "GET /healthz" if dig(container, probe, "httpGet", "path") == "/healthz" else None
            check.need(kind or dig(container, probe, "tcpSocket"),
                       f"{cname}: {probe} is GET /healthz (or a TCP check of --http): no key needed")


def check_secrets(deploy: Path, objects: list[dict[str, Any]], failover: list[dict[str, Any]],
                  check: Checker) -> None:
    secrets = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Secret"}
    check.need(secrets, "kubernetes/secrets.yaml defines the Secrets the manifests mount")
    check_placeholders(deploy, secrets, check)
    check_secret_refs(objects + failover, secrets, check)
    check_secret_mounts(objects, secrets, check)
    check_secret_mounts(failover, secrets, check)

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
    for name in ("piper-worker", "fish-worker"):  # healthy while the broker answers it, as in Kubernetes
        ready = str(dig(services, name, "environment", "TTS_WORKER_READY_FILE") or "")
        test = " ".join(str(a) for a in dig(services, name, "healthcheck", "test") or [])
        check.need(bool(ready) and ready in test, f"compose: {name}'s healthcheck reads its TTS_WORKER_READY_FILE")


def check_dockerfile(path: Path, check: Checker, *, gpu: bool) -> None:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    # Build arguments may come before the first FROM (the base image is one: BASE=...); nothing else may.
    head = [ln for ln in instructions if not ln.upper().startswith("ARG ")]
    check.need(head and head[0].upper().startswith("FROM "), f"{path.name}: FROM comes first")
    args: dict[str, str] = {m.group(1): m.group(2) for ln in instructions
                            if (m := re.match(r"ARG\s+(\w+)=(\S+)", ln, re.I))}
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
    failover = load_manifests(deploy / "kubernetes" / "failover", check)
    check_kubernetes(objects, check)
    check_secrets(deploy, objects, failover, check)
    check_compose(deploy / "compose.yaml", check)
    check_dockerfile(deploy / "Dockerfile.cpu", check, gpu=False)
    check_dockerfile(deploy / "Dockerfile.gpu", check, gpu=True)
    check_systemd(deploy / "systemd", check)
    if check.failures:
        for failure in check.failures:
            print(f"check_deploy: FAIL {failure}", file=sys.stderr)
        return 1
    print(f"check_deploy: ok ({len(objects)} + {len(failover)} Kubernetes objects, compose.yaml, 2 Dockerfiles, "
          "systemd units)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
