"""CURVE keys for TTSP peers (docs/security.md): key files, the client side of a socket, refused handshakes.

Keys are pyzmq certificate files: NAME.key holds the public key, NAME.key_secret the public and the secret
key. The broker is the CURVE server; workers and clients are CURVE clients that know the broker's public key.
Every peer watches its socket's handshake events (HandshakeWatch): a refused key, a keyless peer at a CURVE
port, a wrong broker public key each become the one clear sentence every peer reports.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Optional, Union

import zmq
import zmq.auth
from zmq.utils.monitor import parse_monitor_message

from tts_protocol.errors import TtsError

REFUSED = "CURVE handshake refused by the broker: is this key in its allowlist?"
NEEDS_CURVE = ("this broker requires CURVE: give this peer's key pair (--curve-secret NAME.key_secret) and the "
               "broker's public key (--broker-key NAME.key)")
NO_CURVE = "this broker does not use CURVE: drop --curve-secret and --broker-key (or is this its other port?)"
BAD_BROKER_KEY = "the CURVE handshake failed: is --broker-key the broker's public key?"
NOT_ZMTP = "the peer at this address does not speak ZeroMQ (is this the broker's port?)"
_NO_DETAIL_RUN = 3
_MECHANISM_MISMATCH = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000002)
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

PathLike = Union[str, "os.PathLike[str]"]


class CurveKeyError(TtsError):
    """A key file that is missing, unreadable or of the wrong kind."""


@dataclasses.dataclass(frozen=True, slots=True)
class CurveKeys:
    """What a CURVE client socket needs: its own key pair and the broker's public key (z85 bytes)."""

    public: bytes
    secret: bytes
    server: bytes

    @classmethod
    def from_files(cls, secret_file: PathLike, broker_key_file: PathLike) -> CurveKeys:
        public, secret = load_secret(secret_file)
        return cls(public=public, secret=secret, server=load_public(broker_key_file))

    def apply(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE client of the broker (before connect)."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


def curve_keys(secret_file: Optional[PathLike], broker_key_file: Optional[PathLike]) -> Optional[CurveKeys]:
    """Keys from the two settings, None when neither is set; CurveKeyError when only one is, or a file is bad."""
    if not secret_file and not broker_key_file:
        return None
    if not secret_file or not broker_key_file:
        raise CurveKeyError("CURVE needs both a secret key file (--curve-secret) and the broker's public key "
                        "(--broker-key)")
    if not zmq.has("curve"):
        raise CurveKeyError("this libzmq was built without CURVE support")
    return CurveKeys.from_files(secret_file, broker_key_file)


def load_secret(path: PathLike) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a NAME.key_secret file."""
    public, secret = _load(path)
    if not secret:
        raise CurveKeyError(f"{path} holds no secret key (give the NAME.key_secret file, not NAME.key)")
    return public, secret


def load_public(path: PathLike) -> bytes:
    """The z85 public key from a NAME.key (or NAME.key_secret) file."""
    return _load(path)[0]


def _load(path: PathLike) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot read CURVE key file {path}: {exc}") from exc
    if not public or len(public) != 40:
        raise CurveKeyError(f"{path} is not a CURVE certificate file (no public-key line)")
    return public, secret or b""


def generate(name: str, folder: PathLike) -> tuple[Path, Path]:
    """Write folder/NAME.key and folder/NAME.key_secret (secret file mode 0600); refuse to overwrite."""
    if not KEY_NAME.match(name):
        raise CurveKeyError(f"bad key name {name!r}: letters, digits, '.', '_' and '-' only (64 at most)")
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = target / f"{name}.key", target / f"{name}.key_secret"
    for existing in (public_file, secret_file):
        if existing.exists():
            raise CurveKeyError(f"{existing} exists; remove it first (keys are never overwritten)")
    old = os.umask(0o077)
    try:
        made_public, made_secret = zmq.auth.create_certificates(os.fspath(target), name)
    finally:
        os.umask(old)
    os.chmod(made_secret, 0o600)
    os.chmod(made_public, 0o644)
    return Path(made_public), Path(made_secret)


class HandshakeWatch:
    """A socket monitor that turns failed ZMTP handshakes into the sentence that names the mistake.

    `poll()` reads pending monitor events without blocking and returns the standing failure, if any:
    EVENT_HANDSHAKE_FAILED_AUTH is a key the broker's allowlist refused (REFUSED); a mechanism mismatch is a
    keyless peer at a CURVE port (NEEDS_CURVE) or a keyed peer at a plain one (NO_CURVE); a CURVE handshake
    that fails without detail, again and again, is a wrong broker public key (BAD_BROKER_KEY); any other
    protocol failure is a peer that does not speak ZMTP at all. A later successful handshake clears it.
    `curve` says whether this socket was given CURVE keys.
    """

    _EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
               | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_DISCONNECTED)

    def __init__(self, sock: zmq.Socket, *, curve: bool = True) -> None:
        self._monitor: Optional[zmq.Socket] = sock.get_monitor_socket(self._EVENTS)
        self._sock = sock
        self.curve = curve
        self.failure: Optional[str] = None
        self.succeeded = False
        self._no_detail = 0
        # A socket has one monitor, so this watch also counts closed connections for the endpoint-list failover
        # (a broker that dies or stops closes the connection: take_disconnect()).
        self._disconnects = 0

    @property
    def refused(self) -> bool:
        """True while the broker's allowlist refuses this socket's key."""
        return self.failure == REFUSED

    @property
    def socket(self) -> Optional[zmq.Socket]:
        return self._monitor

    def poll(self) -> Optional[str]:
        """Read waiting events; the standing handshake failure (a sentence), None if there is none."""
        while self._monitor is not None:
            try:
                frames = self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:  # zmq.Again included: nothing waiting
                break
            message = parse_monitor_message(frames)
            event, value = message["event"], message["value"]
            if event == zmq.EVENT_DISCONNECTED:
                self._disconnects += 1
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.succeeded, self.failure, self._no_detail = True, None, 0
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.failure = REFUSED
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                if value == _MECHANISM_MISMATCH:
                    self.failure = NO_CURVE if self.curve else NEEDS_CURVE
                else:
                    self.failure = NOT_ZMTP
            elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                # The broker closed the handshake (EPIPE): a CURVE server does so to a wrong server key and,
                # when it is quicker than the peer's own mismatch check, to a keyless peer. One such event is
                # also what a broker restarting mid-handshake looks like, so only a run of them counts.
                self._no_detail += 1
                if self._no_detail >= _NO_DETAIL_RUN:
                    self.failure = BAD_BROKER_KEY if self.curve else NEEDS_CURVE
        return self.failure

    def take_disconnect(self) -> bool:
        """Read waiting events; True if the connection closed since the last call."""
        self.poll()
        gone, self._disconnects = self._disconnects > 0, 0
        return gone

    def close(self) -> None:
        if self._monitor is None:
            return
        close_monitor(self._sock, self._monitor)
        self._monitor = None


def close_monitor(sock: zmq.Socket, monitor: zmq.Socket) -> None:
    """Stop `sock`'s monitor and close its PAIR socket (before `sock` itself closes; a socket has one monitor)."""
    try:
        sock.disable_monitor()
    except zmq.ZMQError:
        pass  # the socket is already closed, or its monitor was
    monitor.close(linger=0)
