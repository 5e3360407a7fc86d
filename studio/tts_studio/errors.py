"""The build's exceptions: one root, a manifest error that carries every problem with its line number."""

from __future__ import annotations

import dataclasses


class BuildError(Exception):
    """Root of every error `tts build` raises on purpose."""


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class ManifestProblem:
    """One thing wrong with a manifest line."""

    line_no: int
    reason: str


class ManifestError(BuildError):
    """The manifest was refused before anything was synthesised; `problems` lists each one with its line."""

    def __init__(self, path: str, problems: list[ManifestProblem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s), nothing built")

    def lines(self) -> list[str]:
        """`PATH:LINE: reason` for each problem, in line order."""
        return [f"{self.path}:{p.line_no}: {p.reason}" for p in self.problems]


class BuildSetupError(BuildError):
    """Options that cannot work (a bad template, an unwritable folder, an unknown --pick take)."""
