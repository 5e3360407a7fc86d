"""CURVE on the broker's two ports: ZAP allowlists read from key folders, and who sent each message.

One ZAP domain per port: "tts-clients" accepts the keys in the client and admin folders, "tts-workers" the
keys in the worker folder. pyzmq's ThreadAuthenticator runs the ZAP handler in its own thread; for each
handshake it asks a KeyFolder, which looks at the folder again (one scandir, microseconds; handshakes are
rare) and reloads it when a .key file was added, removed or changed. A removed key therefore refuses that
peer's next connection; connections already made stay up until they end (docs/security.md, revocation).

An accepted peer's ZAP User-Id is "ROLE:NAME" (NAME is the key file's stem): libzmq attaches it to every
message from that connection, the broker reads it per message (RouterPort.parse_peer) and Principal.of
turns it into a role. Without CURVE there is no User-Id and every peer is trusted as today (principal None).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import threading
from pathlib import Path
from typing import Any, Optional

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from tts_protocol.curve import load_public, load_secret

log = logging.getLogger(__name__)

CLIENT_DOMAIN = "tts-clients"
WORKER_DOMAIN = "tts-workers"
ADMIN, CLIENT, WORKER = "admin", "client", "worker"


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated sender of a message: its role and key name."""

    role: str
    name: str

    @property
    def admin(self) -> bool:
        return self.role == ADMIN

    @staticmethod
    def of(user_id: Optional[str]) -> Optional[Principal]:
        """The principal for a ZAP User-Id ("ROLE:NAME"); None without CURVE (no User-Id)."""
        if not user_id:
            return None
        principal = _PRINCIPALS.get(user_id)
        if principal is None:
            role, _, name = user_id.partition(":")
            principal = Principal(role, name) if name else Principal(CLIENT, user_id)
            if len(_PRINCIPALS) < 100_000:
                _PRINCIPALS[user_id] = principal
        return principal


_PRINCIPALS: dict[str, Principal] = {}


def can_see(principal: Optional[Principal], owner: Optional[str]) -> bool:
    """Whether `principal` may see or act on a job owned by `owner` (admins and the owner; all without CURVE)."""
    return principal is None or principal.admin or principal.name == owner


class KeyFolder:
    """Public keys (NAME.key files) in one folder, by z85 key, reloaded whenever the folder changes."""

    def __init__(self, folder: Path, role: str) -> None:
        self.folder = folder
        self.role = role
        self._signature: Optional[tuple[tuple[str, int, int], ...]] = None
        self._names: dict[bytes, str] = {}
        self._lock = threading.Lock()
        if not folder.is_dir():
            raise ValueError(f"{role} key folder {folder} does not exist")
        secrets_here = self._secret_files()
        if secrets_here:
            # An allowlist is copied around and read by others; a secret key in it is a leak waiting to happen.
            raise ValueError(f"{role} key folder {folder} holds a secret key file ({secrets_here[0]}): an allowlist "
                             "holds public NAME.key files only; move NAME.key_secret out (it stays with its peer)")
        self.refresh()

    def _secret_files(self) -> list[Path]:
        try:
            return sorted(self.folder / e.name for e in os.scandir(self.folder) if e.name.endswith(".key_secret"))
        except OSError:
            return []

    def _scan(self) -> tuple[tuple[str, int, int], ...]:
        try:
            with os.scandir(self.folder) as entries:
                found = [(e.name, *_stamp(e)) for e in entries if e.name.endswith(".key") and e.is_file()]
        except OSError as exc:
            log.error("cannot read %s key folder %s: %s; refusing its keys", self.role, self.folder, exc)
            return ()
        return tuple(sorted(found))

    def refresh(self) -> None:
        """Reload the folder if any .key file was added, removed or changed since the last look."""
        with self._lock:
            signature = self._scan()
            if signature == self._signature:
                return
            names: dict[bytes, str] = {}
            for file_name, _, _ in signature:
                path = self.folder / file_name
                try:
                    names[load_public(path)] = path.stem
                except Exception as exc:  # one bad file must not lock every peer out
                    log.warning("%s key file %s ignored: %s", self.role, path, exc)
            if self._signature is not None:
                log.info("%s keys reloaded from %s: %d keys", self.role, self.folder, len(names))
                for secret in self._secret_files():
                    log.error("%s key folder holds a secret key file %s: move it out (an allowlist holds public "
                              "NAME.key files only)", self.role, secret)
            self._signature, self._names = signature, names

    def lookup(self, z85_key: bytes) -> Optional[str]:
        self.refresh()
        return self._names.get(z85_key)

    def has_name(self, name: str) -> bool:
        self.refresh()
        return name in self._names.values()

    def __len__(self) -> int:
        return len(self._names)


def _stamp(entry: os.DirEntry[str]) -> tuple[int, int]:
    st = entry.stat()
    return st.st_mtime_ns, st.st_size


class _Domain:
    """pyzmq credentials provider for one ZAP domain: the first folder that holds the key decides its role."""

    def __init__(self, authenticator: BrokerAuthenticator, folders: list[KeyFolder]) -> None:
        self.authenticator = authenticator
        self.folders = folders

    def callback(self, domain: str, z85_key: bytes) -> bool:
        for folder in self.folders:
            name = folder.lookup(z85_key)
            if name is not None:
                self.authenticator.decided[z85_key] = f"{folder.role}:{name}"
                return True
        log.warning("CURVE handshake refused on %s: key %s is in no allowlist", domain,
                    z85_key.decode("ascii", "replace"))
        return False


class BrokerAuthenticator(ThreadAuthenticator):
    """ThreadAuthenticator whose User-Id is "ROLE:NAME" of the key file that allowed the peer."""

    def __init__(self, context: zmq.Context, *, clients: KeyFolder, workers: KeyFolder,
                 admins: Optional[KeyFolder]) -> None:
        super().__init__(context, log=logging.getLogger("tts_broker.zap"))
        self.decided: dict[bytes, str] = {}
        client_folders = [admins, clients] if admins is not None else [clients]
        self.start()
        self.configure_curve_callback(CLIENT_DOMAIN, _Domain(self, client_folders))
        self.configure_curve_callback(WORKER_DOMAIN, _Domain(self, [workers]))

    def curve_user_id(self, client_public_key: bytes) -> str:
        # Called right after the callback accepted this key, in the same (authenticator) thread.
        return self.decided.pop(zmq.utils.z85.encode(client_public_key), "client:unknown")


@dataclasses.dataclass(slots=True)
class CurveServer:
    """The broker's key pair and the authenticator; `secure(sock, domain)` makes a ROUTER a CURVE server."""

    public: bytes
    secret: bytes
    authenticator: BrokerAuthenticator
    workers: KeyFolder

    @classmethod
    def start(cls, context: zmq.Context, *, secret_file: str, client_keys: str, worker_keys: str,
              admin_keys: Optional[str]) -> CurveServer:
        if not zmq.has("curve"):
            raise ValueError("this libzmq was built without CURVE support")
        public, secret = load_secret(secret_file)
        clients = KeyFolder(Path(client_keys), CLIENT)
        workers = KeyFolder(Path(worker_keys), WORKER)
        admins = KeyFolder(Path(admin_keys), ADMIN) if admin_keys else None
        log.info("CURVE on: %d client, %d worker and %d admin keys allowed", len(clients), len(workers),
                 len(admins) if admins is not None else 0)
        authenticator = BrokerAuthenticator(context, clients=clients, workers=workers, admins=admins)
        return cls(public=public, secret=secret, authenticator=authenticator, workers=workers)

    def secure(self, sock: zmq.Socket, domain: str) -> None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt_string(zmq.ZAP_DOMAIN, domain)

    def worker_allowed(self, key: Optional[str]) -> bool:
        """Whether a worker connection's User-Id ("worker:NAME") is still in the worker folder."""
        role, _, name = (key or "").partition(":")
        return role == WORKER and self.workers.has_name(name)

    def stop(self) -> None:
        self.authenticator.stop()


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// endpoints bound to a loopback address only."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: reachable from elsewhere


def warn_if_exposed(endpoints: list[str], log_: Any = log) -> bool:
    """Log a loud warning for each non-loopback endpoint bound without CURVE; True if any."""
    exposed = [e for e in endpoints if not is_loopback(e)]
    for endpoint in exposed:
        log_.warning("!!! SECURITY: %s is reachable from other hosts and CURVE is off: any peer that reaches it "
                     "can register as a worker (and read users' texts) or use every client command. Start the "
                     "broker with --curve-secret, --client-keys and --worker-keys (docs/security.md). !!!",
                     endpoint)
    return bool(exposed)
