"""Event-time windows on ORBIT_CNT, closed by a watermark (DESIGN.md §3). Pure: no I/O.

Windows are aligned to absolute orbit multiples: window ``k`` holds orbits
``[k * W, (k + 1) * W - 1]``. The watermark of a partition is the highest orbit
seen on it minus the lateness allowance; the stream's watermark is the minimum over
partitions (and nothing closes while a partition with input to read has delivered
nothing yet: ``waiting``). A window closes once its last orbit is below the watermark. Hits for an
already closed window are *late*: they are returned so the caller can count and
dead-letter them, never silently dropped.

>>> from dtlive.rows import Rows
>>> w = EventTimeWindows(window_orbits=100, lateness_orbits=10)
>>> closed, late = w.add(Rows.from_columns(head=[2, 2], fpga=[0, 0], channel=[1, 1], orbit=[5, 150], bx=[0, 0],
...                                        tdc=[0, 0]))
>>> [c.id for c in closed], len(late)
([0], 0)
>>> [c.id for c in w.flush()]
[1]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dtlive import detector as det
from dtlive.rows import Rows, by_partition


@dataclass
class Window:
    """The hits of one closed event-time window and where they came from."""

    id: int
    first_orbit: int
    last_orbit: int
    hits: Rows
    inputs: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (first, last) offset
    meta: dict = field(default_factory=dict)  # bookkeeping added by the stream node (counts, rejects, ...)


class EventTimeWindows:
    """Assigns hits to aligned orbit windows and closes them by watermark."""

    def __init__(self, window_orbits: int, lateness_orbits: int, last_closed: int = -1):
        if window_orbits < 1 or lateness_orbits < 0:
            raise ValueError("window_orbits must be >= 1 and lateness_orbits >= 0")
        self.window_orbits = int(window_orbits)
        self.lateness_orbits = int(lateness_orbits)
        self.last_closed = int(last_closed)
        self.published_before = int(last_closed)  # windows up to here were published by an earlier run
        self._open: dict[int, list[Rows]] = {}
        self._low: dict[int, dict[int, int]] = {}  # open window -> partition -> lowest input offset in it
        self._max_orbit: dict[int, int] = {}
        self.waiting: frozenset[int] = frozenset()  # partitions with input not read yet: nothing closes before them

    @classmethod
    def from_seconds(cls, window_s: float, lateness_s: float, last_closed: int = -1) -> EventTimeWindows:
        """Windows of ``window_s`` seconds with ``lateness_s`` seconds of lateness allowance."""
        return cls(det.orbits_for_seconds(window_s), int(round(lateness_s / det.ORBIT_S)), last_closed)

    @property
    def watermark(self) -> int | None:
        """Lowest orbit that may still arrive without being late (None before any hit)."""
        if not self._max_orbit:
            return None
        return min(self._max_orbit.values()) - self.lateness_orbits

    @property
    def open_ids(self) -> list[int]:
        return sorted(self._open)

    def add(self, hits: Rows, already_published: np.ndarray | None = None) -> tuple[list[Window], Rows]:
        """Add cleansed hits; return the windows this closes and the late hits.

        ``already_published`` marks rows that a previous run already consumed (a replay
        after restart): those whose window that run published are dropped silently
        instead of being reported late.
        """
        if len(hits) == 0:
            return [], Rows.empty()
        ids = hits.orbit // self.window_orbits
        late = ids <= self.last_closed
        if late.any():
            if already_published is not None:
                keep = ~(late & already_published & (ids <= self.published_before))
                hits, ids, late = hits.select(keep), ids[keep], late[keep]
            late_rows = hits.select(late)
            hits, ids = hits.select(~late), ids[~late]
        else:
            late_rows = Rows.empty()
        if len(hits):
            lo, hi = ids.min(), ids.max()
            if lo == hi:
                self._put(int(lo), hits)
            else:
                in_order = bool((ids[1:] >= ids[:-1]).all())  # the usual case: slices, no copies
                order = None if in_order else np.argsort(ids, kind="stable")
                sorted_ids = ids if in_order else ids[order]
                bounds = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1], True])
                for a, b in zip(bounds[:-1], bounds[1:]):
                    part = hits.select(slice(a, b)) if in_order else hits.select(order[a:b])
                    self._put(int(sorted_ids[a]), part)
            for part, peak in by_partition(hits.partition, hits.orbit, np.maximum).items():
                self._max_orbit[part] = max(peak, self._max_orbit.get(part, peak))
        return ([] if self.waiting else self._close_until(self.watermark)), late_rows

    def flush(self) -> list[Window]:
        """Close every open window (the stream went idle or ended)."""
        return self._close_until(None)

    def _put(self, wid: int, rows: Rows) -> None:
        self._open.setdefault(wid, []).append(rows)
        low = self._low.setdefault(wid, {})
        for p, off in by_partition(rows.partition, rows.offset, np.minimum).items():
            low[p] = min(off, low.get(p, off))

    def pending_offsets(self) -> dict[int, int]:
        """Per partition, the lowest input offset that still feeds an open window."""
        low: dict[int, int] = {}
        for per_window in self._low.values():
            for p, off in per_window.items():
                low[p] = min(off, low.get(p, off))
        return low

    def forget_offsets(self, partitions) -> None:
        """Forget the input offsets open windows hold on ``partitions`` (their topic was created anew, so
        the old offsets mean nothing there); the hits stay in their windows."""
        for low in self._low.values():
            for p in partitions:
                low.pop(p, None)

    def _close_until(self, watermark: int | None) -> list[Window]:
        closed = []
        for wid in sorted(self._open):
            last_orbit = (wid + 1) * self.window_orbits - 1
            if watermark is not None and last_orbit >= watermark:
                break
            hits = Rows.concat(self._open.pop(wid))
            self._low.pop(wid, None)
            first = by_partition(hits.partition, hits.offset, np.minimum)
            last = by_partition(hits.partition, hits.offset, np.maximum)
            inputs = {p: (first[p], last[p]) for p in first}
            closed.append(Window(wid, wid * self.window_orbits, last_orbit, hits, inputs))
            self.last_closed = wid
        return closed
