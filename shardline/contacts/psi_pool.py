"""Both cores on the PSI's group operations: a warm process pool fed in small chunks.

The PSI's cost is its scalar multiplications (libsodium holds the GIL for each), so they run in
worker processes. Three things keep both cores busy from the first element to the last:

- the workers start, and import the PSI core, once (``start``: the org node calls it when its
  first session begins and keeps the pool, so only that session pays about a second for it);
- work goes in chunks of ``CHUNK`` elements, submitted all at once: a step never waits for the
  slowest of a few large tasks, and the last chunk leaves a core idle for a few milliseconds;
- results come back chunk by chunk, in order (``stream``), so the org node puts each part on
  the bus while later parts are still being computed, and its peer starts on them at once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

CHUNK = 1000


def _warm() -> None:
    import shardline.core.psi  # noqa: F401  (the workers' only import, done once)


def _noop() -> int:
    return os.getpid()


class PsiPool:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or min(2, os.cpu_count() or 1)
        self._ex: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def start(self) -> PsiPool:
        """Start every worker now and wait until each has imported the PSI core (blocks: call it
        from a thread in async code)."""
        with self._lock:
            if self._ex is None:
                self._start()
        return self

    def _start(self) -> None:
        if self._ex is None:
            # forkserver: the workers never inherit an event loop or a bus connection
            self._ex = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=_warm,
            )
            for f in [self._ex.submit(_noop) for _ in range(self.workers * 4)]:
                f.result()

    def submit(self, fn: Callable, items: Sequence, *args) -> list[Future]:
        """One future per chunk of ``items``, in order."""
        ex = self.start()._ex
        assert ex is not None
        return [ex.submit(fn, items[i : i + CHUNK], *args) for i in range(0, len(items), CHUNK)]

    async def map(self, fn: Callable, items: Sequence, *args) -> list:
        parts = await asyncio.gather(
            *(asyncio.wrap_future(f) for f in self.submit(fn, items, *args))
        )
        return [x for part in parts for x in part]

    async def stream(self, fn: Callable, items: Sequence, *args) -> AsyncIterator[list]:
        """Each chunk's results as soon as it and every chunk before it is done."""
        for f in self.submit(fn, items, *args):
            yield await asyncio.wrap_future(f)

    def cpu_seconds(self) -> float:
        """CPU time the workers have used so far (Linux /proc; 0 where it is not there)."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in list(getattr(self._ex, "_processes", None) or {}):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        return total

    def shutdown(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=False, cancel_futures=True)
            self._ex = None
