"""Write a host-network copy of deploy/compose.yaml (or compose.failover.yaml) for the image test.

The test's docker daemon (scripts/test-images.sh) has no bridge network and no iptables rules, so every container
shares the host's network and must bind 127.0.0.1 on free ports. This keeps the compose file's services,
commands, environment, health checks, dependencies, volumes and stop periods as they are and changes only
addresses and images:
    python scripts/images/hostnet_compose.py deploy/compose.failover.yaml OUT.yaml --image tts-broker:cpu-test \
        --port 5555=41001 --port 5556=41002 --port 8000=41003 --port 9464=41004 --port 5432=41006 \
        [--service-port broker-b:9464=41005 ...] [--postgres-image tts-test-postgres:15]
Each service gets `network_mode: host` and the test's image (no `build`, no published `ports`); services under a
profile (the GPU worker) are left out; in every string, `0.0.0.0` and service host names (after `//` or `@`)
become 127.0.0.1 and each `:PORT` named by --port becomes its free port (--service-port SERVICE:OLD=NEW first,
for one service: two services that listen on the same port in their own namespaces need two ports on the host).
A service on a `postgres:` image runs --postgres-image instead (scripts/images/Dockerfile.postgres, which reads
the official image's POSTGRES_* variables), listening on 127.0.0.1 at the port --port gives 5432: PGPORT, which
the server and the health check's pg_isready both read.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

POSTGRES_PORT = "5432"


def rewrite(value: Any, hosts: set[str], ports: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: rewrite(v, hosts, ports) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite(v, hosts, ports) for v in value]
    if not isinstance(value, str):
        return value
    text = value.replace("0.0.0.0", "127.0.0.1")
    for host in hosts:
        # tcp://broker:5555 and postgresql://user:password@postgres:5432/db alike.
        text = re.sub(rf"(?:(?<=//)|(?<=@)){re.escape(host)}(?=:)", "127.0.0.1", text)
    for old, new in ports.items():
        text = re.sub(rf"(?<=:){old}(?!\d)", new, text)
    return text


def is_postgres(service: dict[str, Any]) -> bool:
    image = str(service.get("image", ""))
    return image == "postgres" or image.startswith("postgres:")


def host_postgres(service: dict[str, Any], image: str, port: str) -> dict[str, Any]:
    """The postgres service on the locally built image, on 127.0.0.1 at `port` of the host's network."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    service["environment"] = {**environment, "PGPORT": port}
    service["command"] = ["postgres", "-c", "listen_addresses=127.0.0.1"]
    service["image"] = image
    return service


def convert(data: dict[str, Any], *, image: str, ports: dict[str, str],
            service_ports: dict[str, dict[str, str]], postgres_image: str | None) -> dict[str, Any]:
    """The host-network copy of a parsed compose file."""
    services: dict[str, Any] = data["services"]
    hosts = set(services)
    kept: dict[str, Any] = {}
    for name, service in services.items():
        if service.get("profiles"):
            continue
        postgres = is_postgres(service)
        if postgres and postgres_image is None:
            raise SystemExit(f"hostnet_compose: service {name} runs {service['image']}: give --postgres-image")
        service = {k: v for k, v in service.items() if k not in ("build", "ports", "networks")}
        service = rewrite(service, hosts, {**ports, **service_ports.get(name, {})})
        if postgres:
            assert postgres_image is not None
            port = service_ports.get(name, {}).get(POSTGRES_PORT, ports.get(POSTGRES_PORT))
            if port is None:
                raise SystemExit(f"hostnet_compose: service {name} is PostgreSQL: give --port 5432=FREE_PORT")
            service = host_postgres(service, postgres_image, port)
        else:
            service["image"] = image
        service["network_mode"] = "host"
        depends = service.get("depends_on")
        if isinstance(depends, dict):
            service["depends_on"] = {k: v for k, v in depends.items() if not services.get(k, {}).get("profiles")}
            if not service["depends_on"]:
                del service["depends_on"]
        kept[name] = service
    out = {k: v for k, v in data.items() if not k.startswith("x-") and k != "services"}
    out["services"] = kept
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--image", required=True)
    parser.add_argument("--port", action="append", default=[], help="OLD=NEW")
    parser.add_argument("--service-port", action="append", default=[], help="SERVICE:OLD=NEW")
    parser.add_argument("--postgres-image", help="the image a postgres: service runs instead")
    args = parser.parse_args()
    ports = dict(p.split("=", 1) for p in args.port)
    service_ports: dict[str, dict[str, str]] = {}
    for spec in args.service_port:
        name, _, mapping = spec.partition(":")
        old, _, new = mapping.partition("=")
        service_ports.setdefault(name, {})[old] = new
    data = yaml.safe_load(args.source.read_text(encoding="utf-8"))
    out = convert(data, image=args.image, ports=ports, service_ports=service_ports,
                  postgres_image=args.postgres_image)
    args.target.write_text(yaml.safe_dump(out, sort_keys=False), encoding="utf-8")
    print(f"hostnet_compose: {', '.join(out['services'])} -> {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
