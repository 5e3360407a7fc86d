"""One thread per engine instance that does all of its torch work (load, warm-up, jobs, unload).

The worker calls load() from its main thread and synthesize() from its synthesis thread; torch.compile's
CUDA graphs and the process-global RNG both want a single owner thread, so every call is forwarded here.
Results of a job stream back through a queue as they are produced.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator, Optional, TypeVar

from tts_worker.engines.base import EngineError

T = TypeVar("T")
_STOP = object()


class InferenceThread:
    """A single daemon thread running submitted callables in order."""

    def __init__(self, name: str) -> None:
        self._tasks: "queue.Queue[Any]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopped = False
        self._thread.start()

    @property
    def ident(self) -> Optional[int]:
        return self._thread.ident

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopped

    def call(self, fn: Callable[[], T], timeout_s: Optional[float] = None) -> T:
        """Run fn() on the thread and return its result (its exception is re-raised here)."""
        if not self.alive():
            raise EngineError("the engine's inference thread is not running", retryable=True)
        done = threading.Event()
        box: dict[str, Any] = {}

        def task() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed back to the caller, who decides
                box["error"] = exc
            finally:
                done.set()

        self._tasks.put(task)
        if not done.wait(timeout_s):
            raise TimeoutError(f"inference thread did not finish within {timeout_s} s")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def post(self, fn: Callable[[], None]) -> None:
        """Queue fn() on the thread without waiting; fn must handle its own errors."""
        if not self.alive():
            raise EngineError("the engine's inference thread is not running", retryable=True)
        self._tasks.put(fn)

    def iterate(self, make: Callable[[], Iterator[T]]) -> Iterator[T]:
        """Run the iterator make() on the thread, yielding its items here as they come."""
        if not self.alive():
            raise EngineError("the engine's inference thread is not running", retryable=True)
        results: "queue.Queue[tuple[str, Any]]" = queue.Queue()

        def task() -> None:
            try:
                for item in make():
                    results.put(("item", item))
            except BaseException as exc:
                results.put(("error", exc))
            else:
                results.put(("end", None))

        self._tasks.put(task)
        while True:
            kind, value = results.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Let queued work finish, end the thread; False if it is still busy after `timeout_s`."""
        if not self._stopped:
            self._stopped = True
            self._tasks.put(_STOP)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            if task is _STOP:
                return
            task()
