"""CURVE keys for TTSP peers (docs/security.md): key files, the client side of a socket, refused handshakes.

Keys are pyzmq certificate files: NAME.key holds the public key, NAME.key_secret the public and the secret
key. The broker is the CURVE server; workers and clients are CURVE clients that know the broker's public key.
When the broker's ZAP handler refuses a key, libzmq reports EVENT_HANDSHAKE_FAILED_AUTH on the peer's socket
monitor: HandshakeWatch turns that into the one clear sentence every peer reports (REFUSED).
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
    """A socket monitor that remembers whether the broker refused this socket's CURVE handshake.

    `poll()` reads pending monitor events without blocking; `refused` stays True once an
    EVENT_HANDSHAKE_FAILED_AUTH was seen, and `succeeded` once a handshake went through.
    """

    def __init__(self, sock: zmq.Socket) -> None:
        self._monitor: Optional[zmq.Socket] = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        self._sock = sock
        self.refused = False
        self.succeeded = False
        self.protocol_error = False

    @property
    def socket(self) -> Optional[zmq.Socket]:
        return self._monitor

    def poll(self) -> bool:
        """Read waiting events; True if the broker has refused this key (now or earlier)."""
        while self._monitor is not None:
            try:
                frames = self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError:
                break
            event = parse_monitor_message(frames)["event"]
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.refused = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.succeeded, self.refused = True, False
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self.protocol_error = True
        return self.refused

    def close(self) -> None:
        if self._monitor is None:
            return
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)
        self._monitor = None
