"""Heap housekeeping for long-running services: a periodic glibc ``malloc_trim``, and start-up objects kept
out of the garbage collector's way.

Why (measured with ``benchmarks/memory.py`` and heaptrack at 10k rows/s csv): the processor has
no native leak. What makes its RSS climb is the allocators keeping what a burst used: when the process
stalls on a busy machine, the backlog arrives as one big consume call, and the memory it took (librdkafka's
fetch queue in its threads' malloc arenas, holes in glibc's main heap, Python's object arenas) stays
resident after it is freed. glibc gives back only the free top of its main heap on its own;
``malloc_trim(0)`` also releases the free pages inside every arena. It takes about 1 ms.

Why :func:`freeze_startup_objects` (csv at 100k one-row messages/s): every consume call makes
thousands of message objects that live long enough to reach the oldest generation, so full collections came
2-3 times a second, and each walked the ~100k objects the imports made (pandas, xarray, dask): up to 0.2 s
per collection, 30 % of the processor's CPU and the largest part of its result latency. Modules imported
later, on first use (numba and the reconstruction's kernels at the first window, pandas' CSV parser), made
the same again: :class:`ImportFreezer` freezes their objects as well (csv, 1M one-row messages end to end:
4.5 -> 3.5 s with the reconstruction, 2.9 -> 2.7 s without).

>>> t = HeapTrimmer(interval_s=30.0, last=0.0)
>>> t.maybe(10.0), t.maybe(31.0), t.maybe(40.0), t.count
(False, True, False, 1)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
import time
from dataclasses import dataclass, field


def _find_malloc_trim():
    """glibc's ``malloc_trim`` or None (musl, macOS, Windows have none)."""
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_malloc_trim = _find_malloc_trim()


def freeze_startup_objects() -> int:
    """Move every object alive now out of the garbage collector's generations (:func:`gc.freeze`).

    Call it once a service process is set up, before its loop (the ``dtlive`` commands do): later
    collections then walk only what the loop made. Frozen objects are still freed when their last reference
    goes, only reference cycles among them are not collected any more, so it suits a process's long-lived
    set-up (modules, configuration, the graph), not an interactive session. Returns the number frozen.

    >>> import gc
    >>> freeze_startup_objects() > 1000  # the modules imported so far, at least
    True
    >>> gc.unfreeze(); gc.get_freeze_count()
    0
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


GEN0_THRESHOLD = 50_000


def collect_less_often(gen0: int = GEN0_THRESHOLD) -> tuple[int, int, int]:
    """Let the garbage collector start a collection only after ``gen0`` more objects were made than freed
    (Python's default: 700); returns the thresholds in force before.

    A consume call makes thousands of message objects that live until their batch is processed: at the default,
    csv at one row per message started a collection every 700 of them, 3,500 per million messages, 0.28 s
    of a 2.8 s run, each walking the batch's live messages. At 50,000 none starts while a batch's objects come
    and go (they are freed by their reference counts); reference cycles are still collected, later.

    >>> import gc
    >>> before = collect_less_often()
    >>> gc.get_threshold()[0]
    50000
    >>> gc.set_threshold(*before)
    """
    before = gc.get_threshold()
    gc.set_threshold(gen0, *before[1:])
    return before


def trim() -> bool:
    """Release the free heap memory of every malloc arena to the OS; False where that is not possible.

    >>> type(trim()).__name__  # True on glibc when free pages went back to the OS
    'bool'
    """
    return _malloc_trim is not None and bool(_malloc_trim(0))


@dataclass
class HeapTrimmer:
    """Calls :func:`trim` at most once every ``interval_s`` seconds of :meth:`maybe` calls (0: never).

    >>> t = HeapTrimmer(interval_s=5.0, last=100.0)
    >>> t.maybe(104.0), t.maybe(105.0), t.last, t.count
    (False, True, 105.0, 1)
    >>> HeapTrimmer(interval_s=0).maybe(1e12)  # 0: never trims
    False
    """

    interval_s: float = 30.0
    last: float = field(default_factory=time.monotonic)
    count: int = 0

    def maybe(self, now: float | None = None) -> bool:
        """Trim if ``interval_s`` passed since the last time; True if it trimmed."""
        now = time.monotonic() if now is None else now
        if self.interval_s <= 0 or now - self.last < self.interval_s:
            return False
        self.last = now
        self.count += 1
        trim()
        return True


@dataclass
class ImportFreezer:
    """Freezes what is alive (:func:`gc.freeze`) whenever modules were imported since the last :meth:`maybe`.

    A service loop calls it once per turn, between batches: the objects of an import done on first use (its
    modules, functions, compiled kernels) then leave the collector's generations as the start-up's did, and
    what a batch made has mostly gone by then. Counting ``sys.modules`` costs nanoseconds; a freeze is a
    list splice.

    >>> f = ImportFreezer()
    >>> f.maybe()  # nothing imported since it was made
    False
    >>> f.modules -= 1  # as if a module had been imported since
    >>> f.maybe(), f.count
    (True, 1)
    >>> gc.unfreeze()
    """

    modules: int = field(default_factory=lambda: len(sys.modules))
    count: int = 0

    def maybe(self) -> bool:
        """Freeze if the number of imported modules changed; True if it froze."""
        if len(sys.modules) == self.modules:
            return False
        self.modules = len(sys.modules)
        self.count += 1
        gc.freeze()
        return True
