"""Typed reading of engine options and per-job voice settings.

Engine options come from `--engine-opt key=value` (strings) or from a RELOAD (msgpack scalars), so every
reader accepts both. A bad engine option is an EngineLoadError (the worker cannot start); a bad voice setting
is an EngineError (that one job fails, `engine_error`, not retried).
"""

from __future__ import annotations

import builtins
import math
from typing import Any, Mapping, Optional

from tts_worker.engines.base import EngineError, EngineLoadError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class _Reader:
    """Shared parsing; subclasses choose the exception and the wording."""

    what = "option"

    def __init__(self, owner: builtins.str, values: Mapping[str, Any]) -> None:
        self.owner = owner
        self.values = dict(values)

    def _fail(self, message: builtins.str) -> Exception:
        raise NotImplementedError

    def _get(self, key: builtins.str) -> Any:
        value = self.values.get(key)
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def float(self, key: builtins.str, default: builtins.float, *, min: builtins.float = -math.inf,
              max: builtins.float = math.inf, min_exclusive: builtins.bool = False) -> builtins.float:
        raw = self._get(key)
        if raw is None:
            return default
        if isinstance(raw, bool):
            raise self._fail(f"{self.what} {key}={raw!r} is not a number")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise self._fail(f"{self.what} {key}={_short(raw)} is not a number") from None
        too_low = value <= min if min_exclusive else value < min
        if not math.isfinite(value) or too_low or value > max:
            low = f"> {min}" if min_exclusive else f">= {min}"
            raise self._fail(f"{self.what} {key}={value} is out of range ({low} and <= {max})")
        return value

    def optional_float(self, key: builtins.str, *, min: builtins.float = -math.inf,
                       max: builtins.float = math.inf) -> Optional[builtins.float]:
        """Like float() but None when the key is absent (the caller keeps its own default)."""
        if self._get(key) is None:
            return None
        return self.float(key, 0.0, min=min, max=max)

    def int(self, key: builtins.str, default: builtins.int, *, min: builtins.int = -(2**63),
            max: builtins.int = 2**63 - 1) -> builtins.int:
        raw = self._get(key)
        if raw is None:
            return default
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise self._fail(f"{self.what} {key}={raw!r} is not an integer")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise self._fail(f"{self.what} {key}={_short(raw)} is not an integer") from None
        if not min <= value <= max:
            raise self._fail(f"{self.what} {key}={value} is out of range ({min}..{max})")
        return value

    def bool(self, key: builtins.str, default: builtins.bool) -> builtins.bool:
        raw = self._get(key)
        if raw is None:
            return default
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise self._fail(f"{self.what} {key}={_short(raw)} is not a boolean (true/false)")

    def str(self, key: builtins.str, default: Optional[builtins.str] = None) -> Optional[builtins.str]:
        raw = self._get(key)
        if raw is None:
            return default
        if not isinstance(raw, str):
            raise self._fail(f"{self.what} {key}={raw!r} is not a string")
        return raw


class OptionReader(_Reader):
    """Reads engine options; errors are EngineLoadError naming the engine."""

    what = "option"

    def __init__(self, engine: str, options: Mapping[str, Any], known: set[str]) -> None:
        super().__init__(engine, options)
        unknown = sorted(set(self.values) - known)
        if unknown:
            raise EngineLoadError(
                f"engine {engine}: unknown option(s) {', '.join(unknown)}; "
                f"known options: {', '.join(sorted(known)) or '(none)'}"
            )

    def _fail(self, message: str) -> Exception:
        return EngineLoadError(f"engine {self.owner}: {message}")


class VoiceReader(_Reader):
    """Reads one job's voice settings; errors are EngineError (code engine_error)."""

    what = "voice setting"

    def _fail(self, message: str) -> Exception:
        return EngineError(message)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
