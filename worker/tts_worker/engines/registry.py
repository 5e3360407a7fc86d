"""Find engines by name: the built-in ones plus third-party plugins, importing only the chosen one.

Built-ins map a name to "module:Class". Other packages add engines through the entry-point group
`tts_broker.engines` (name = "module:Class"); a built-in name always wins over a plugin of the same name.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import time
from importlib import metadata
from typing import Any, Mapping, Optional

from tts_worker.engines.base import Engine, EngineInfo, EngineLoadError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tts_broker.engines"


@dataclasses.dataclass(frozen=True, slots=True)
class EngineSpec:
    """Where an engine lives and what the listing says about it, known without importing it."""

    name: str
    target: str  # "module:Class"
    licence: str = ""
    description: str = ""
    requires: tuple[str, ...] = ()  # top-level modules it needs (checked without importing them)
    install_hint: str = ""
    builtin: bool = True

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def attribute(self) -> str:
        return self.target.partition(":")[2]

    def installed(self) -> bool:
        """Whether the modules it needs are importable (found, not imported)."""
        return all(_module_found(m) for m in (self.module.split(".")[0], *self.requires))


BUILTIN_ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec("tone", "tts_worker.engines.tone:ToneTestEngine", "Apache-2.0",
                   "TEST engine: deterministic tones, not speech"),
        EngineSpec("piper", "tts_worker.engines.piper:PiperEngine",
                   "GPL-3.0-or-later (piper-tts, espeak-ng); voice: see MODEL_CARD",
                   "Piper VITS voices on CPU (default en_US-joe-medium)",
                   requires=("piper", "onnxruntime"), install_hint="pip install -e '.[piper]'"),
        EngineSpec("fish-speech", "tts_worker.engines.fish_speech:FishSpeechEngine",
                   "code Apache-2.0; weights CC-BY-NC-SA-4.0",
                   "Fish Speech 1.5 / OpenAudio S1-mini (GPU recommended)",
                   requires=("torch",), install_hint="see docs/fish-speech.md"),
        EngineSpec("openai-http", "tts_worker.engines.openai_http:OpenAIHttpEngine",
                   "that of the remote server's model",
                   "any OpenAI-compatible /v1/audio/speech server, admission by time to first audio",
                   requires=("aiohttp",), install_hint="pip install -e . (aiohttp is a base dependency)"),
    )
}


def _module_found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _plugin_specs() -> dict[str, EngineSpec]:
    specs: dict[str, EngineSpec] = {}
    try:
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # broken distribution metadata must not stop the worker
        log.warning("cannot read entry points %s: %s", ENTRY_POINT_GROUP, exc)
        return specs
    for ep in entry_points:
        if ep.name in BUILTIN_ENGINES or ep.name in specs:
            continue
        specs[ep.name] = EngineSpec(ep.name, ep.value, builtin=False,
                                    description=f"plugin from {_distribution(ep)}")
    return specs


def _distribution(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an installed package"


def available_engines() -> dict[str, EngineSpec]:
    """Every engine name that can be asked for: built-ins first, then plugins."""
    return {**BUILTIN_ENGINES, **_plugin_specs()}


def resolve(name: str) -> EngineSpec:
    """The spec for `name`, or EngineLoadError listing the known names. Imports nothing."""
    engines = available_engines()
    spec = engines.get(name)
    if spec is None:
        raise EngineLoadError(f"unknown engine {name!r}; known engines: {', '.join(sorted(engines))}")
    return spec


def load_class(spec: EngineSpec) -> type:
    """Import the engine's module and return its class."""
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        hint = f": {spec.install_hint}" if spec.install_hint else ""
        raise EngineLoadError(f"engine {spec.name} cannot be imported ({exc}){hint}") from exc
    try:
        return getattr(module, spec.attribute)
    except AttributeError:
        raise EngineLoadError(f"engine {spec.name}: {spec.module} has no {spec.attribute}") from None


def create_engine(name: str, options: Mapping[str, Any], settings: Any) -> Engine:
    """Build (not load) the engine `name` with its options; EngineLoadError for any problem."""
    spec = resolve(name)
    cls = load_class(spec)
    try:
        engine = cls(options=dict(options), settings=settings)
    except EngineLoadError:
        raise
    except (TypeError, ValueError) as exc:
        raise EngineLoadError(f"engine {name}: bad options: {exc}") from exc
    return engine


@dataclasses.dataclass(frozen=True, slots=True)
class LoadedEngine:
    """An engine with its model loaded, what it says about itself, and how long loading took."""

    engine: Engine
    info: EngineInfo
    load_time_ms: int


def load_engine(name: str, options: Mapping[str, Any], settings: Any) -> LoadedEngine:
    """Build and load the engine `name`; any failure becomes EngineLoadError (and the engine is closed)."""
    started = time.monotonic()
    engine = create_engine(name, options, settings)
    try:
        info = engine.load()
    except EngineLoadError:
        close_engine(engine)
        raise
    except Exception as exc:  # a bad checkpoint can surface as anything; it is still a load failure
        close_engine(engine)
        raise EngineLoadError(f"engine {name} failed to load: {type(exc).__name__}: {exc}") from exc
    return LoadedEngine(engine, info, int((time.monotonic() - started) * 1000))


def close_engine(engine: Engine) -> None:
    """Close an engine on a path that must go on: a failure is logged, never raised."""
    try:
        engine.close()
    except Exception:
        log.exception("closing engine %s failed", getattr(engine, "name", "?"))


@dataclasses.dataclass(frozen=True, slots=True)
class EngineListing:
    """One row of `tts-worker --list-engines`."""

    name: str
    licence: str
    description: str
    installed: bool
    source: str


def list_engines() -> list[EngineListing]:
    """Every engine with its licence. Plugins are imported to read their `licence` attribute."""
    rows = []
    for spec in available_engines().values():
        licence: Optional[str] = spec.licence or None
        if licence is None:
            try:
                licence = str(getattr(load_class(spec), "licence", "") or "unknown")
            except EngineLoadError:
                licence = "unknown (cannot import)"
        rows.append(EngineListing(spec.name, licence, spec.description, spec.installed(),
                                  "built-in" if spec.builtin else spec.target))
    return rows
