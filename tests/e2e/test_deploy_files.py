"""scripts/check_deploy.py: passes on deploy/ as committed and fails on copies that break its promises.

The real tools (systemd-analyze, docker compose config, kubernetes-validate, hadolint) run in
scripts/test-deploy.sh, which `make test` runs; this keeps the field checks themselves honest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deploykit import ROOT, broken_copy, checker

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]



def test_committed_deploy_files_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert checker().main(["check_deploy", str(ROOT / "deploy")]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize(("file", "old", "new", "message"), [
    ("kubernetes/broker.yaml", "type: Recreate", "type: RollingUpdate", "strategy Recreate"),
    ("kubernetes/broker.yaml", "  replicas: 1", "  replicas: 2", "replicas 1"),
    ("kubernetes/keda-scaledobject.yaml", "minReplicaCount: 0", "minReplicaCount: 1", "scale to zero"),
    ("kubernetes/keda-scaledobject.yaml", "sum(tts_queue_depth{model=~\"fish", "sum(tts_queued{model=~\"fish",
     "query on"),
    ("kubernetes/fish-worker.yaml", "nvidia.com/gpu: 1", "example.com/gpu: 1", "nvidia.com/gpu"),
    ("compose.yaml", 'profiles: ["gpu"]', 'profiles: ["default"]', "gpu profile"),
    ("Dockerfile.gpu", "VOLUME [\"/models\"]", "COPY checkpoints /models", "no weights copied"),
    ("kubernetes/broker.yaml", "name: TTS_HTTP_TOKEN_FILE", "name: TTS_HTTP_TOKEN_FILE_UNUSED",
     "TTS_HTTP_TOKEN_FILE"),
    ("systemd/tts-broker.service", "RestartPreventExitStatus=2 4 5", "RestartPreventExitStatus=2",
     "RestartPreventExitStatus"),
    ("systemd/tts-broker.service", "LimitNOFILE=65536", "#LimitNOFILE=65536", "tts-broker.service: LimitNOFILE"),
    ("systemd/tts-worker.service", "LimitNOFILE=65536", "LimitNOFILE=1024", "tts-worker.service: LimitNOFILE"),
    ("kubernetes/fish-worker.yaml", '"find /tmp/tts-worker.ready -newermt', '"find /tmp/tts-worker.alive -newermt',
     "tts-fish-worker: the readinessProbe reads the worker's --ready-file"),
    ("kubernetes/piper-worker.yaml", '"--ready-file", "/tmp/tts-worker.ready"]', '"--name", "piper"]',
     "tts-piper-worker: the readinessProbe reads"),
    ("compose.yaml", '      test: ["CMD-SHELL", "find /tmp/tts-worker.ready', '      test: ["CMD-SHELL", "find /tmp/x',
     "compose: piper-worker's healthcheck reads its TTS_WORKER_READY_FILE"),
])
def test_broken_copies_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, old: str, new: str,
                            message: str) -> None:
    deploy = broken_copy(tmp_path, file, old, new)
    assert checker().main(["check_deploy", str(deploy)]) == 1
    assert message in capsys.readouterr().err
