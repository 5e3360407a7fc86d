"""What the deploy/ and image tests share: the repository root, scripts loaded by path, and broken copies of deploy/.

scripts/ is not a package (its files run as commands), so the tests load a script as a module by its path.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: Path, name: str = "") -> ModuleType:
    """The script at `path` as a module (its `main()` not run)."""
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while a class is made
    spec.loader.exec_module(module)
    return module


def checker() -> ModuleType:
    """scripts/check_deploy.py, the field checks of deploy/."""
    return load_script(ROOT / "scripts" / "check_deploy.py")


def broken_copy(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A copy of deploy/ under tmp_path with the first `old` in `file` replaced by `new`; its deploy folder."""
    deploy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", deploy)
    path = deploy / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1))
    return deploy
