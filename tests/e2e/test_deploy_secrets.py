"""The Kubernetes manifests' Secrets and CURVE wiring (issue 23), linted and then run for real.

The static half: scripts/check_deploy.py passes on deploy/ and fails on copies that break a promise about the
Secrets (a key not mounted, a world-readable mode, a writable mount, a Secret key missing from secrets.yaml,
real key material committed, CURVE off, a `tts` probe without a client key).

The live half proves the wiring rather than linting it. deploy/kubernetes/make-secrets.sh makes the Secrets'
data with `tts keys generate`, one folder per Secret and one file per key; the test checks that this layout is
exactly the Secrets and keys secrets.yaml declares. Each pod gets a root folder of its own, where every Secret
volume it mounts is projected the way the kubelet projects it (the files in a timestamped folder, a `..data`
link to it, each key a link through `..data`, mode from defaultMode, group from fsGroup; an update swaps
`..data` in one rename) at the manifest's mount path. Then the broker, the Piper worker (the real Piper engine),
the Fish worker, the gateway, `tts say` and the admin's `tts status` run with the manifests' commands and
environment, as the manifests' user (runAsUser, runAsGroup, fsGroup supplementary) when the test runs as root.
The only rewrites are those a test on one host needs: absolute paths are put under the pod's root, the Service
name tts-broker becomes the broker's loopback endpoints, 0.0.0.0 binds become loopback ports of the system's
choosing, and the Fish worker runs the tone engine (no GPU and no weights here).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx
import pytest
import soundfile
import yaml

from deploykit import ROOT, broken_copy, checker
from harness import Proc, wait_for

K8S = ROOT / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent
MADE_BY_HAND = {"tts-broker-journal"}  # a database URL (failover only): make-secrets.sh does not make it
# The Fish worker's engine settings a host without a GPU replaces: the tone engine, no checkpoint, no CUDA.
FISH_ON_THIS_HOST = {"TTS_ENGINE": "tone", "TTS_ENGINE_OPTIONS": None, "AUDIO_DEVICE": None}


def manifest_objects(*files: Path) -> list[dict[str, Any]]:
    return [doc for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]


def find(kind: str, name: str, objects: list[dict[str, Any]]) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"one {kind} {name} in deploy/kubernetes"
    return found[0]


# ---- the static checks -----------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.timeout(30)
def test_committed_manifests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert checker().main(["check_deploy", str(ROOT / "deploy")]) == 0, capsys.readouterr().err


CERTIFICATE_LINE = 'public-key = "' + "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7" + '"'


@pytest.mark.unit
@pytest.mark.timeout(30)
@pytest.mark.parametrize(("file", "old", "new", "message"), [
    # CURVE off in a peer: its settings no longer name a key.
    ("kubernetes/piper-worker.yaml", "name: TTS_WORKER_CURVE_SECRET", "name: TTS_WORKER_CURVE_SECRET_OFF",
     "tts-piper-worker container worker: CURVE on (TTS_WORKER_CURVE_SECRET"),
    ("kubernetes/broker.yaml", "name: TTS_CURVE_SECRET", "name: TTS_CURVE_SECRET_OFF",
     "Deployment tts-broker container broker: CURVE on (TTS_CURVE_SECRET"),
    ("kubernetes/failover/broker-failover.yaml", "name: TTS_WORKER_KEYS", "name: TTS_WORKER_KEYS_OFF",
     "StatefulSet tts-broker container broker: CURVE on (TTS_WORKER_KEYS"),
    # A key the settings name is not where a Secret puts it.
    ("kubernetes/gateway.yaml", "value: /etc/tts/keys/client.key_secret", "value: /etc/tts/keys/gateway.key_secret",
     "no key gateway.key_secret in the Secret(s) mounted at /etc/tts/keys"),
    ("kubernetes/fish-worker.yaml", "            - name: curve-keys\n              mountPath: /etc/tts/keys\n"
     "              readOnly: true\n", "", "not on a Secret mounted in this container"),
    ("kubernetes/broker.yaml", "value: /etc/tts/workers", "value: /etc/tts/keys",
     "an allowlist holds public NAME.key files only"),
    ("kubernetes/piper-worker.yaml", "value: /etc/tts/keys/broker.key", "value: /etc/tts/keys/worker.key_secret",
     "wants a public key (NAME.key)"),
    # Modes and mounts.
    ("kubernetes/gateway.yaml", "            secretName: tts-gateway-keys\n            defaultMode: 0440",
     "            secretName: tts-gateway-keys\n            defaultMode: 0444", "defaultMode 0440 or tighter"),
    ("kubernetes/piper-worker.yaml", "              mountPath: /etc/tts/keys\n              readOnly: true",
     "              mountPath: /etc/tts/keys\n              readOnly: false", "readOnly"),
    ("kubernetes/fish-worker.yaml", "        fsGroup: 10001", "", "fsGroup"),
    # Secrets referenced but not declared; key material committed.
    ("kubernetes/secrets.yaml", "  name: tts-curve-admins\n", "  name: tts-curve-admin-keys\n",
     "Secret tts-curve-admins is defined in secrets.yaml"),
    ("kubernetes/secrets.yaml", "  scrape: ", "  scrape-token: ", "Secret tts-broker-http-tokens in secrets.yaml has "
     "the key scrape"),
    ("kubernetes/secrets.yaml", '  broker.key: "REPLACE: broker.key from tts keys generate broker"',
     "  broker.key: |\n    curve\n        " + CERTIFICATE_LINE, "holds CURVE key material"),
    ("compose.yaml", "services:\n", "# " + CERTIFICATE_LINE + "\nservices:\n",
     "compose.yaml: holds CURVE key material"),
    ("kubernetes/secrets.yaml", '  keys: "REPLACE: one random token a line"', '  keys: "sk-live-0123456789"',
     "tts-gateway-keys: key keys is a placeholder"),
    # Probes a CURVE broker would refuse, or that need no key.
    ("kubernetes/piper-worker.yaml",
     """command: ["sh", "-c", "find /tmp/tts-worker.ready -newermt '30 seconds ago' 2>/dev/null | grep -q ."]""",
     'command: ["tts", "health"]',
     "readinessProbe runs a client of the broker"),
    ("kubernetes/broker.yaml", "          readinessProbe:\n            httpGet:\n              path: /healthz",
     "          readinessProbe:\n            httpGet:\n              path: /metrics", "readinessProbe is GET /healthz"),
])
def test_broken_copies_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, old: str, new: str,
                            message: str) -> None:
    deploy = broken_copy(tmp_path, file, old, new)
    assert checker().main(["check_deploy", str(deploy)]) == 1
    assert message in capsys.readouterr().err


# ---- the live run ----------------------------------------------------------------------------------


def project(target: Path, files: dict[str, bytes], *, mode: int, group: Optional[int]) -> None:
    """Put `files` in `target` as the kubelet's atomic writer does, or update them there the same way.

    The files go to a new ..TIMESTAMP folder; `..data` is switched to it in one rename; each file name in
    `target` is a link to ..data/NAME (made for new names, removed for gone ones); the old folder is removed.
    """
    target.mkdir(parents=True, exist_ok=True)
    stamp = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir(mode=0o755)
    for name, data in files.items():
        path = stamp / name
        path.write_bytes(data)
        os.chmod(path, mode)
        if group is not None:
            os.chown(path, 0, group)
    data_link = target / "..data"
    old = os.readlink(data_link) if data_link.is_symlink() else None
    os.symlink(stamp.name, target / "..data_tmp")
    os.replace(target / "..data_tmp", data_link)
    for entry in target.iterdir():
        if not entry.name.startswith("..") and entry.name not in files:
            entry.unlink()
    for name in files:
        if not (target / name).is_symlink():
            os.symlink(f"..data/{name}", target / name)
    if old is not None:
        shutil.rmtree(target / old)


@dataclasses.dataclass
class Pod:
    """One pod of a manifest on this host: its root folder, Secret volumes, user, environment and command."""

    workload: dict[str, Any]
    root: Path
    secrets: Path  # make-secrets.sh's output: SECRET/KEY files
    name: str
    endpoints: dict[str, str] = dataclasses.field(default_factory=dict)  # tts-broker Service address -> endpoint

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.workload["spec"]["template"]["spec"])

    @property
    def container(self) -> dict[str, Any]:
        containers = self.spec["containers"]
        assert len(containers) == 1
        return dict(containers[0])

    @property
    def ids(self) -> tuple[int, int, int]:
        context = self.spec.get("securityContext") or {}
        assert {"runAsUser", "runAsGroup", "fsGroup"} <= set(context), \
            f"{self.name}: runAsUser, runAsGroup and fsGroup (the user reads 0440 Secret files through the group)"
        return int(context["runAsUser"]), int(context["runAsGroup"]), int(context["fsGroup"])

    def path(self, pod_path: str) -> Path:
        return self.root / pod_path.lstrip("/")

    def volume_files(self, volume: dict[str, Any]) -> dict[str, bytes]:
        if "secret" in volume:
            sources = [(volume["secret"]["secretName"], volume["secret"].get("items"))]
        else:
            sources = [(s["secret"]["name"], s["secret"].get("items")) for s in volume["projected"]["sources"]]
        files: dict[str, bytes] = {}
        for secret, items in sources:
            folder = self.secrets / secret
            pairs = [(i["key"], i["path"]) for i in items] if items else [(f.name, f.name) for f in folder.iterdir()]
            files.update({path: (folder / key).read_bytes() for key, path in pairs})
        return files

    def mount(self) -> None:
        """Lay out the pod's volumes under its root: Secrets projected, claims and /tmp as empty folders it owns."""
        uid, _, fs_group = self.ids
        as_root = os.geteuid() == 0
        volumes = {v["name"]: v for v in self.spec.get("volumes") or []}
        owned = [self.path("/tmp")]
        for mount in self.container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            target = self.path(mount["mountPath"])
            if "secret" in volume or "projected" in volume:
                mode = (volume.get("secret") or volume.get("projected") or {})["defaultMode"]
                project(target, self.volume_files(volume), mode=mode, group=fs_group if as_root else None)
            else:
                owned.append(target)
        for folder in owned:
            folder.mkdir(parents=True, exist_ok=True)
            if as_root:
                os.chown(folder, uid, fs_group)

    def reproject(self, volume_name: str) -> None:
        """The kubelet's update of one Secret volume after its Secret changed."""
        volume = next(v for v in self.spec["volumes"] if v["name"] == volume_name)
        mount = next(m for m in self.container["volumeMounts"] if m["name"] == volume_name)
        project(self.path(mount["mountPath"]), self.volume_files(volume), mode=volume["secret"]["defaultMode"],
                group=self.ids[2] if os.geteuid() == 0 else None)

    def rewrite(self, value: str) -> str:
        for service, endpoint in self.endpoints.items():
            value = value.replace(service, endpoint)
        if value.startswith("tcp://0.0.0.0:"):
            return "tcp://127.0.0.1:*"
        if value.startswith("0.0.0.0:"):
            return "127.0.0.1:0"
        if value.startswith("/"):
            return str(self.path(value))
        return value

    def env(self, overrides: Optional[dict[str, Optional[str]]] = None) -> dict[str, str]:
        found: dict[str, Optional[str]] = {"HOME": "/tmp"}
        for item in self.container.get("env") or []:
            if "value" in item:
                found[item["name"]] = str(item["value"])
            elif item["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
                found[item["name"]] = self.name
            else:
                raise AssertionError(f"{self.name}: no value for {item}")
        found.update(overrides or {})
        return {k: self.rewrite(v) for k, v in found.items() if v is not None}

    def as_user(self) -> list[str]:
        """Run as the manifest's user, group and fsGroup when the test may switch user (runs as root)."""
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            return []
        uid, gid, fs_group = self.ids
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={fs_group}", "--"]

    def command(self, *extra: str) -> list[str]:
        program, *args = [str(a) for a in self.container["command"] + self.container.get("args", [])]
        return [*self.as_user(), str(BIN / program), *(self.rewrite(a) for a in args), *extra]

    def probe(self, name: str) -> int:
        """The container's exec probe `name` as the kubelet runs it (the pod's /tmp is under its root)."""
        tmp = str(self.path("/tmp"))
        command = [c.replace("/tmp/", tmp + "/") for c in self.container[name]["exec"]["command"]]
        return subprocess.run([*self.as_user(), *command], timeout=30).returncode

    def run(self, args: list[str], *, overrides: Optional[dict[str, Optional[str]]] = None,
            timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        """A `tts` command in this pod's container, as `kubectl exec` runs it."""
        env = {**os.environ, **self.env(overrides)}
        return subprocess.run([*self.as_user(), str(BIN / "tts"), *args], env=env, cwd=self.root,
                              capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture
def pod_root() -> Iterator[Path]:
    """A folder the manifests' non-root user can reach (pytest's tmp_path is private to the test's user)."""
    root = Path(tempfile.mkdtemp(prefix="tts-pods-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    """The Secrets' data, made by deploy/kubernetes/make-secrets.sh (`tts keys generate`) as a user would."""
    out = tmp_path / "tts-secrets"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", str(K8S / "make-secrets.sh"), str(out)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    again = subprocess.run(["bash", str(K8S / "make-secrets.sh"), str(out)], env=env, capture_output=True,
                           text=True, timeout=30)
    assert again.returncode != 0 and "never overwritten" in again.stderr
    return out


def start(pod: Pod, procs: list[Proc], log_dir: Path, *extra: str,
          overrides: Optional[dict[str, Optional[str]]] = None) -> Proc:
    proc = Proc(pod.command(*extra), log_dir / f"{pod.name}.log", pod.env(overrides))
    procs.append(proc)
    return proc


def ready_file(pod: Pod, proc: Proc, path: Path) -> dict[str, Any]:
    wait_for(lambda: path.exists() or not proc.alive(), 60, what=f"{pod.name}'s ready file")
    assert proc.alive(), f"{pod.name} exited:\n{proc.log()}"
    if pod.as_user():  # setpriv ran the program itself as the manifest's user: it read its keys as that user
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert int(uid) == pod.ids[0], f"{pod.name} runs as uid {uid}"
    return dict(json.loads(path.read_text()))


def key_pair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    done = subprocess.run([str(BIN / "tts"), "keys", "generate", name, "--dir", str(tmp_path / "more-keys")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return tmp_path / "more-keys" / f"{name}.key", tmp_path / "more-keys" / f"{name}.key_secret"


@pytest.mark.timeout(420)
def test_manifests_speak_under_curve(tmp_path: Path, procs: list[Proc], pod_root: Path, secrets_dir: Path) -> None:
    objects = manifest_objects(*sorted(K8S.glob("*.yaml")))

    # make-secrets.sh made exactly the Secrets and keys secrets.yaml declares.
    declared = {o["metadata"]["name"]: sorted(o["stringData"]) for o in objects if o["kind"] == "Secret"}
    made = {d.name: sorted(f.name for f in d.iterdir()) for d in secrets_dir.iterdir()}
    assert made == {name: keys for name, keys in declared.items() if name not in MADE_BY_HAND}

    def pod(name: str, workload: str) -> Pod:
        return Pod(find("Deployment", workload, objects), pod_root / name, secrets_dir, name)

    # The broker, as broker.yaml runs it: CURVE on both ports, its --http with the token file.
    broker = pod("tts-broker-0", "tts-broker")
    broker.mount()
    broker_ready = broker.path("/tmp/ready.json")
    broker_proc = start(broker, procs, tmp_path, "--ready-file", str(broker_ready))
    info = ready_file(broker, broker_proc, broker_ready)
    service = {"tcp://tts-broker:5555": info["frontend"], "tcp://tts-broker:5556": info["backend"]}
    http = str(info["http"]).rstrip("/")

    # Its probes' GET /healthz answers with no key and no token; the ServiceMonitor's token reads /metrics.
    container = broker.container
    assert container["readinessProbe"].get("httpGet", {}).get("path") == "/healthz", "the broker's probe needs no key"
    assert httpx.get(f"{http}/healthz", timeout=10).status_code == 200
    monitor = find("ServiceMonitor", "tts-broker", objects)
    credentials = monitor["spec"]["endpoints"][0]["authorization"]["credentials"]
    scrape = (secrets_dir / credentials["name"] / credentials["key"]).read_text().strip()
    assert httpx.get(f"{http}/metrics", timeout=10).status_code in (401, 403)
    metrics = httpx.get(f"{http}/metrics", headers={"Authorization": f"Bearer {scrape}"}, timeout=10)
    assert metrics.status_code == 200 and "tts_queue_depth" in metrics.text

    # The workers: piper-worker.yaml with the real Piper engine, fish-worker.yaml on the tone engine.
    piper = pod("tts-piper-worker-abc12", "tts-piper-worker")
    fish = pod("tts-fish-worker-def34", "tts-fish-worker")
    workers = {piper.name: start_pod(piper, service, procs, tmp_path),
               fish.name: start_pod(fish, service, procs, tmp_path, overrides=FISH_ON_THIS_HOST)}

    # `kubectl exec deploy/tts-broker -- tts status`: the broker pod's admin key sees both workers by name
    # (names are shown to admin keys only), so the admin key and both worker keys are accepted.
    def registered() -> bool:
        for name, proc in workers.items():
            assert proc.alive(), f"{name} exited:\n{proc.log()}"
        done = broker.run(["--broker", info["frontend"], "status", "--json"])
        assert done.returncode == 0, done.stderr
        return all(name in done.stdout for name in workers)

    wait_for(registered, 240, interval_s=1.0, what="both workers registered, as the admin's tts status shows")
    for worker_pod in (piper, fish):  # their exec probes, polled as the kubelet does: ready once the broker answers
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in worker_pod.container:
                wait_for(lambda: worker_pod.probe(probe) == 0, 30, interval_s=0.5,  # noqa: B023 (called here)
                         what=f"{worker_pod.name}: {probe} passing")

    # `tts say` with the gateway pod's client key: speech from Piper (the default model) and from the other
    # worker (tone), each under its own worker key.
    gateway = pod("tts-gateway-5f6g7", "tts-gateway")
    gateway.endpoints = service
    gateway.mount()
    broker_url = gateway.rewrite("tcp://tts-broker:5555")
    for model, text in ((None, "Hello from the manifests."), ("tone", "And from the second worker.")):
        out = gateway.path(f"/tmp/{model or 'piper'}.wav")
        choose = ["--model", model] if model else []
        done = gateway.run(["--broker", broker_url, "say", text, "-o", str(out), *choose])
        assert done.returncode == 0, f"tts say: {done.stdout}\n{done.stderr}"
        assert soundfile.info(str(out)).frames > 0

    # The gateway itself, as gateway.yaml runs it: ready on GET /health, speech for its API key.
    gateway_ready = gateway.path("/tmp/ready.json")
    gateway_proc = start(gateway, procs, tmp_path, "--ready-file", str(gateway_ready))
    url = ready_file(gateway, gateway_proc, gateway_ready)["url"]
    wait_for(lambda: httpx.get(f"{url}/health", timeout=10).status_code == 200, 60, interval_s=0.5,
             what="the gateway's readiness probe, GET /health")
    api_key = (secrets_dir / "tts-gateway-keys" / "keys").read_text().split()[0]
    speech = httpx.post(f"{url}/v1/audio/speech", headers={"Authorization": f"Bearer {api_key}"}, timeout=120,
                        json={"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "wav"})
    assert speech.status_code == 200 and speech.content[:4] == b"RIFF", speech.text[:200]

    # Rotation by Secret data alone: a client key added to tts-curve-clients is accepted once the kubelet has
    # updated the broker's mount, and refused again once it is removed; the broker runs on throughout.
    public, secret = key_pair(tmp_path, "app-1")
    app = pod("app-1", "tts-gateway")
    app.mount()
    shutil.copy(secret, app.path("/tmp/app-1.key_secret"))
    os.chmod(app.path("/tmp/app-1.key_secret"), 0o444)
    as_app: dict[str, Optional[str]] = {"TTS_CLIENT_CURVE_SECRET": "/tmp/app-1.key_secret"}

    def ping() -> subprocess.CompletedProcess[str]:
        return app.run(["--broker", info["frontend"], "ping"], overrides=as_app)

    refused = ping()
    assert refused.returncode != 0 and "refused" in refused.stdout + refused.stderr
    shutil.copy(public, secrets_dir / "tts-curve-clients" / "app-1.key")
    broker.reproject("client-keys")
    assert ping().returncode == 0
    (secrets_dir / "tts-curve-clients" / "app-1.key").unlink()
    broker.reproject("client-keys")
    refused = ping()
    assert refused.returncode != 0 and "refused" in refused.stdout + refused.stderr
    assert broker_proc.alive() and broker.path("/tmp/ready.json").exists()


def start_pod(pod: Pod, service: dict[str, str], procs: list[Proc], log_dir: Path,
              overrides: Optional[dict[str, Optional[str]]] = None) -> Proc:
    pod.endpoints = service
    pod.mount()
    return start(pod, procs, log_dir, overrides=overrides)
