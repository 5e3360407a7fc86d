"""Write a host-network copy of deploy/compose.yaml for the image test (scripts/test-images.sh).

The test's docker daemon has no bridge network and no iptables rules, so every container shares the host's
network and must bind 127.0.0.1 on free ports. This keeps the compose file's services, commands, environment,
health checks, dependencies, volumes and stop periods as they are and changes only addresses:
    python scripts/images/hostnet_compose.py deploy/compose.yaml OUT.yaml --image tts-broker:cpu-test \
        --port 5555=41001 --port 5556=41002 --port 8000=41003 --port 9464=41004 [--drop SERVICE ...] \
        [--service-port broker-b:9464=41005 ...] [--env TTS_JOURNAL_URL=postgresql://... ...]
Each service gets `network_mode: host` and the test's image (no `build`, no published `ports`); services under a
profile (the GPU worker) are left out; in every string, `0.0.0.0` and service host names become 127.0.0.1 and
each `:PORT` named by --port becomes its free port (--service-port SERVICE:OLD=NEW first, for one service: two
services that listen on the same port in their own namespaces need two ports on the host); --env NAME=VALUE
replaces that variable's value in every service that sets it (e.g. a journal URL on the host instead of a dropped
postgres service).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml


def rewrite(value: Any, hosts: set[str], ports: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: rewrite(v, hosts, ports) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite(v, hosts, ports) for v in value]
    if not isinstance(value, str):
        return value
    text = value.replace("0.0.0.0", "127.0.0.1")
    for host in hosts:
        text = re.sub(rf"(?<=//){re.escape(host)}(?=:)", "127.0.0.1", text)
    for old, new in ports.items():
        text = re.sub(rf"(?<=:){old}(?!\d)", new, text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--image", required=True)
    parser.add_argument("--port", action="append", default=[], help="OLD=NEW")
    parser.add_argument("--drop", action="append", default=[], help="a service to leave out")
    parser.add_argument("--service-port", action="append", default=[], help="SERVICE:OLD=NEW")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE")
    args = parser.parse_args()
    ports = dict(p.split("=", 1) for p in args.port)
    service_ports: dict[str, dict[str, str]] = {}
    for spec in args.service_port:
        name, _, mapping = spec.partition(":")
        old, _, new = mapping.partition("=")
        service_ports.setdefault(name, {})[old] = new
    env = dict(e.split("=", 1) for e in args.env)
    data = yaml.safe_load(args.source.read_text(encoding="utf-8"))
    services: dict[str, Any] = data["services"]
    hosts = set(services)
    kept: dict[str, Any] = {}
    for name, service in services.items():
        if service.get("profiles") or name in args.drop:
            continue
        service = {k: v for k, v in service.items() if k not in ("build", "ports", "networks")}
        service = rewrite(service, hosts, {**ports, **service_ports.get(name, {})})
        environment = service.get("environment")
        if isinstance(environment, dict):
            service["environment"] = {k: env.get(k, v) for k, v in environment.items()}
        service["image"] = args.image
        service["network_mode"] = "host"
        depends = service.get("depends_on")
        if isinstance(depends, dict):
            service["depends_on"] = {k: v for k, v in depends.items() if k in services and k not in args.drop}
            if not service["depends_on"]:
                del service["depends_on"]
        kept[name] = service
    out = {k: v for k, v in data.items() if not k.startswith("x-") and k != "services"}
    out["services"] = kept
    args.target.write_text(yaml.safe_dump(out, sort_keys=False), encoding="utf-8")
    print(f"hostnet_compose: {', '.join(kept)} -> {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
