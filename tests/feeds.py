"""A throttled feed of the real run for kill tests: the input is still arriving when the kill happens.

:class:`ThrottledFeed` replays ``run000591_hits.csv`` with :func:`dtlive.kafka.emulator.emulate` at a fixed rate in a
thread. The rows after the first ``hold_after_windows`` windows of the run wait until :meth:`ThrottledFeed.release`
(bounded by ``hold_timeout``), so however fast the machine, a test that kills a service before releasing kills it
mid-stream: part of the input is provably not sent yet.
"""

from __future__ import annotations

import threading

import numpy as np
from confluent_kafka import Producer
from datafiles import RUN_CSV

from dtlive.core import detector as det
from dtlive.kafka.emulator import Chunk, emulate, file_chunks

RUN_ROWS = 159_616  # rows (all hits) of run000591_hits.csv


def split_at_window(chunk: Chunk, window_orbits: int, allowed: list[int], count: int) -> tuple[Chunk, Chunk]:
    """The chunk cut before its first row outside the first ``count`` windows of the stream (file order kept).

    ``allowed`` lists the windows met so far, in order; it grows (up to ``count``) with this chunk's windows.
    """
    window = chunk.rows.orbit // window_orbits
    ids, first = np.unique(window, return_index=True)
    for w in ids[np.argsort(first)]:
        if len(allowed) < count and int(w) not in allowed:
            allowed.append(int(w))
    later = np.flatnonzero(~np.isin(window, allowed))
    cut = int(later[0]) if len(later) else len(chunk.rows)

    def part(sl: slice) -> Chunk:
        return Chunk(chunk.rows.select(sl), None if chunk.raw_lines is None else chunk.raw_lines[sl])

    return part(slice(0, cut)), part(slice(cut, None))


class ThrottledFeed(threading.Thread):
    """``emulate()`` of the real run at ``rate`` rows/s, holding back the rows after its first ``hold_after_windows``.

    ``rows_sent_before_hold`` counts the rows handed to the emulator before the gate; ``holding`` is set while
    the gate waits; ``error`` keeps an exception of the thread; ``stats`` the emulator's summary at the end.
    """

    def __init__(self, bootstrap: str, topic: str, rate: float, hold_after_windows: int | None = None, *,
                 window_s: float = 2.0, partitions: int | None = None, key: str = "fpga",
                 hold_timeout: float = 120.0):
        super().__init__(daemon=True, name="throttled-feed")
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.hold_after_windows, self.window_orbits = hold_after_windows, det.orbits_for_seconds(window_s)
        self.partitions, self.key, self.hold_timeout = partitions, key, hold_timeout
        self.holding, self.released = threading.Event(), threading.Event()
        self.rows_yielded = 0
        self.rows_sent_before_hold: int | None = None
        self.stats = None
        self.error: BaseException | None = None

    def release(self) -> None:
        """Let the held-back rows go."""
        self.released.set()

    def _chunks(self):
        held, allowed = self.hold_after_windows is None, []
        for chunk in file_chunks([str(RUN_CSV)], chunk_rows=2_000):
            if not held:
                now, later = split_at_window(chunk, self.window_orbits, allowed, self.hold_after_windows)
                if len(later.rows):
                    if len(now.rows):
                        yield now
                        self.rows_yielded += len(now.rows)
                    held = True
                    self.rows_sent_before_hold = self.rows_yielded
                    self.holding.set()
                    self.released.wait(self.hold_timeout)
                    self.holding.clear()
                    chunk = later
            yield chunk
            self.rows_yielded += len(chunk.rows)

    def run(self) -> None:
        try:
            producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
            self.stats = emulate(producer, self.topic, self._chunks(), rate=self.rate, fmt="csv", progress=False,
                                 partitions=self.partitions, key=self.key)
            producer.flush(30)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.error = exc
