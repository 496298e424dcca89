"""Event-time windows on ORBIT_CNT, closed by a watermark. Pure: no I/O.

Windows are aligned to absolute orbit multiples: window ``k`` holds orbits
``[k * W, (k + 1) * W - 1]``. The watermark of a partition is the highest orbit
seen on it minus the lateness allowance; the stream's watermark is the minimum over
partitions (and nothing closes while a partition with input to read has delivered
nothing yet: ``waiting``). A window closes once its last orbit is below the watermark. Hits for an
already closed window are *late*: they are returned so the caller can count and
dead-letter them, never silently dropped.

The watermark needs evidence, not one row: with ``max_jump_orbits`` set, a hit more than that
far above everything its partition has shown before it (its highest accepted orbit and the rows
before it in the batch; in a partition's first batch, the batch's lowest orbit) is a step up. The rows
from a step on are taken when the partition's data stays up there: at least ``jump_evidence_rows``
of them in the batch, or the partition's next batch going on there. Until then they are held (and
hold the restart offset back). When the partition's data comes back below the step (in the same
or the next batch), or the stream is flushed while they are held, the rows up there are rejected as
``orbit_out_of_range`` (:meth:`EventTimeWindows.take_out_of_range`): one corrupt orbit can never
make the real hits after it late, and a real jump of the DAQ is followed.

>>> from dtlive.core.rows import Rows
>>> w = EventTimeWindows(window_orbits=100, lateness_orbits=10)
>>> closed, late = w.add(Rows.from_columns(head=[2, 2], fpga=[0, 0], channel=[1, 1], orbit=[5, 150], bx=[0, 0],
...                                        tdc=[0, 0]))
>>> [c.id for c in closed], len(late), sorted(w.filled)
([0], 0, [0, 1])
>>> [c.id for c in w.flush()]
[1]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from dtlive.core import detector as det
from dtlive.core.rows import Rows, by_partition, partitions_of

T = TypeVar("T")
JUMP_EVIDENCE_ROWS = 50  # rows far ahead at the end of one batch that are enough evidence of a real jump


@dataclass
class Window:
    """The hits of one closed event-time window and where they came from.

    >>> w = Window(3, 300, 399, Rows.empty())
    >>> w.id, w.last_orbit - w.first_orbit + 1, len(w.hits)
    (3, 100, 0)
    """

    id: int
    first_orbit: int
    last_orbit: int
    hits: Rows
    inputs: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (first, last) offset
    meta: dict = field(default_factory=dict)  # bookkeeping added by the stream node (counts, rejects, ...)


class WindowBook(Generic[T]):
    """The bookkeeping of aligned event-time windows, whatever they hold.

    Which windows are open and what each holds so far (``items``: rows of hits in a processor, piece
    numbers in the replay driver), the highest orbit seen per partition, the watermark (the lowest of
    those minus the lateness allowance), which window ids are late (at or below the last closed one)
    and which windows close.

    >>> book = WindowBook(window_orbits=100, lateness_orbits=10)
    >>> book.put(0, "a"); book.put(1, "b"); book.saw(0, 150)
    >>> book.watermark, book.close(book.watermark), book.late(np.array([0, 1])).tolist()
    (140, [(0, ['a'])], [True, False])
    >>> book.close(None), book.last_closed
    ([(1, ['b'])], 1)
    """

    def __init__(self, window_orbits: int, lateness_orbits: int, last_closed: int = -1):
        self.window_orbits = int(window_orbits)
        self.lateness_orbits = int(lateness_orbits)
        self.last_closed = int(last_closed)
        self.items: dict[int, list[T]] = {}  # open window id -> what it holds
        self.peaks: dict[int, int] = {}  # partition -> highest orbit seen on it

    @property
    def watermark(self) -> int | None:
        """Lowest orbit that may still arrive without being late (None before any hit)."""
        return min(self.peaks.values()) - self.lateness_orbits if self.peaks else None

    @property
    def open_ids(self) -> list[int]:
        return sorted(self.items)

    def late(self, ids: np.ndarray) -> np.ndarray:
        """Which window ids belong to windows closed already."""
        return ids <= self.last_closed

    def put(self, wid: int, item: T) -> None:
        self.items.setdefault(wid, []).append(item)

    def saw(self, partition: int, orbit: int) -> None:
        """A partition delivered hits up to ``orbit``."""
        self.peaks[partition] = max(orbit, self.peaks.get(partition, orbit))

    def close(self, watermark: int | None) -> list[tuple[int, list[T]]]:
        """Close the open windows whose last orbit lies below ``watermark`` (None: all of them), in order."""
        closed = []
        for wid in sorted(self.items):
            if watermark is not None and (wid + 1) * self.window_orbits - 1 >= watermark:
                break
            closed.append((wid, self.items.pop(wid)))
            self.last_closed = wid
        return closed


class EventTimeWindows:
    """Assigns hits to aligned orbit windows and closes them by watermark (the bookkeeping is a
    :class:`WindowBook` of the windows' rows; this class adds late and far-ahead hits and input offsets).

    >>> w = EventTimeWindows(window_orbits=100, lateness_orbits=10)
    >>> closed, late = w.add(Rows.from_columns(head=[2, 2], fpga=[0, 0], channel=[1, 1], orbit=[5, 150], bx=[0, 0],
    ...                                        tdc=[0, 0]))
    >>> [(c.id, len(c.hits)) for c in closed], w.open_ids, len(late)
    ([(0, 1)], [1], 0)
    """

    def __init__(
        self,
        window_orbits: int,
        lateness_orbits: int,
        last_closed: int = -1,
        max_jump_orbits: int | None = None,
        jump_evidence_rows: int = JUMP_EVIDENCE_ROWS,
        undecided: dict[int, list[int]] | None = None,
    ):
        """``max_jump_orbits``: hits further ahead of their partition need evidence (None: no check).
        ``undecided``: per partition, offsets an earlier run held without deciding on them (its
        :meth:`held_offsets`); rows from there are judged again even when marked already published."""
        if window_orbits < 1 or lateness_orbits < 0:
            raise ValueError("window_orbits must be >= 1 and lateness_orbits >= 0")
        if (max_jump_orbits is not None and max_jump_orbits < 1) or jump_evidence_rows < 1:
            raise ValueError("max_jump_orbits must be >= 1 (or None) and jump_evidence_rows >= 1")
        self.book: WindowBook[Rows] = WindowBook(window_orbits, lateness_orbits, last_closed)
        self.published_before = int(last_closed)  # windows up to here were published by an earlier run
        self.max_jump_orbits = None if max_jump_orbits is None else int(max_jump_orbits)
        self.jump_evidence_rows = int(jump_evidence_rows)
        self._low: dict[int, dict[int, int]] = {}  # open window -> partition -> lowest input offset in it
        self._held: dict[int, tuple[Rows, np.ndarray]] = {}  # partition -> rows far ahead, their published mask
        self._out_of_range: list[Rows] = []
        self._undecided = {int(p): np.asarray(sorted(o), np.int64) for p, o in (undecided or {}).items()}
        self.waiting: frozenset[int] = frozenset()  # partitions with input not read yet: nothing closes before them
        self.filled: set[int] = set()  # windows the last :meth:`add` put hits into (closed by it or still open)

    @classmethod
    def from_seconds(
        cls,
        window_s: float,
        lateness_s: float,
        last_closed: int = -1,
        max_jump_s: float | None = None,
        undecided: dict[int, list[int]] | None = None,
    ) -> EventTimeWindows:
        """Windows of ``window_s`` seconds with ``lateness_s`` seconds of lateness allowance; hits more than
        ``max_jump_s`` seconds ahead of their partition need evidence (None or 0: no check)."""
        jump = det.orbits_for_seconds(max_jump_s) if max_jump_s else None
        return cls(det.orbits_for_seconds(window_s), int(round(lateness_s / det.ORBIT_S)), last_closed, jump,
                   undecided=undecided)

    @property
    def window_orbits(self) -> int:
        return self.book.window_orbits

    @property
    def lateness_orbits(self) -> int:
        return self.book.lateness_orbits

    @property
    def watermark(self) -> int | None:
        """Lowest orbit that may still arrive without being late (None before any hit)."""
        return self.book.watermark

    @property
    def open_ids(self) -> list[int]:
        return self.book.open_ids

    @property
    def peaks(self) -> dict[int, int]:
        """Highest orbit seen per partition."""
        return self.book.peaks

    @property
    def last_closed(self) -> int:
        return self.book.last_closed

    @last_closed.setter
    def last_closed(self, wid: int) -> None:
        self.book.last_closed = int(wid)

    @property
    def holding(self) -> bool:
        """Whether rows far ahead are held back, waiting for evidence (see :meth:`held_offsets`)."""
        return bool(self._held)

    def add(self, hits: Rows, already_published: np.ndarray | None = None) -> tuple[list[Window], Rows]:
        """Add cleansed hits; return the windows this closes and the late hits.

        ``already_published`` marks rows that a previous run already consumed (a replay
        after restart): those whose window that run published are dropped silently
        instead of being reported late.
        """
        self.filled = set()
        if self.max_jump_orbits is not None and (len(hits) or self._held):
            hits, already_published = self._screen(hits, already_published)
        if len(hits) == 0:
            return [], Rows.empty()
        ids = hits.orbit // self.window_orbits
        late = self.book.late(ids)
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
                    part = hits.select(slice(a, b)) if order is None else hits.select(order[a:b])
                    self._put(int(sorted_ids[a]), part)
            for partition, peak in by_partition(hits.partition, hits.orbit, np.maximum).items():
                self.book.saw(partition, peak)
        return ([] if self.waiting else self._close_until(self.watermark)), late_rows

    def flush(self) -> list[Window]:
        """Close every open window (the stream went idle or ended); held far-ahead rows are rejected."""
        for part in list(self._held):
            self._reject(*self._held.pop(part))
        return self._close_until(None)

    def take_out_of_range(self) -> Rows:
        """The rows rejected as implausibly far ahead since the last call (drained)."""
        out, self._out_of_range = Rows.concat(self._out_of_range), []
        return out

    def held_offsets(self) -> dict[int, list[int]]:
        """Per partition, the offsets of rows held for want of evidence (to persist with a checkpoint)."""
        return {p: sorted(set(rows.offset.tolist())) for p, (rows, _) in self._held.items()}

    def _screen(self, hits: Rows, published: np.ndarray | None) -> tuple[Rows, np.ndarray | None]:
        """Take the rows that are plausible or have evidence; hold or reject the others (per partition)."""
        n = len(hits)
        pub = np.zeros(n, bool) if published is None else np.asarray(published, bool)
        parts = partitions_of(hits.partition)
        if not self._held:  # the usual case, no step up anywhere: one pass over the orbits
            per_part = [hits.orbit] if len(parts) == 1 else [hits.orbit[hits.partition == p] for p in parts]
            if not any(self._steps(x, self._level(int(p), x)).any() for p, x in zip(parts, per_part)):
                return hits, published
        seqs, seq_pub, keep_mask = [], [], np.ones(n, bool)
        for p in sorted(set(parts.tolist()) | set(self._held)):
            held, held_pub = self._held.pop(p, (Rows.empty(), np.zeros(0, bool)))
            rows: slice | np.ndarray = np.flatnonzero(hits.partition == p) if len(parts) > 1 else slice(None)
            if p not in parts:
                rows = np.zeros(0, np.int64)
            seq = Rows.concat([held, hits.select(rows)])  # views of the batch when nothing is held
            seq_p = np.concatenate([held_pub, pub[rows]])
            take = self._judge(p, seq, seq_p, len(held))
            keep_mask[rows] = take[len(held):]
            if take[: len(held)].any():
                seqs.append(held.select(take[: len(held)]))
                seq_pub.append(held_pub[take[: len(held)]])
        if not keep_mask.all():
            kept = int(keep_mask.sum())
            which = slice(0, kept) if keep_mask[:kept].all() else keep_mask  # rows held at the end: views
            hits, pub = hits.select(which), pub[which]
        if seqs:
            hits, pub = Rows.concat([*seqs, hits]), np.concatenate([*seq_pub, pub])
        return hits, (pub if published is not None or pub.any() else None)

    def _level(self, part: int, orbits: np.ndarray) -> int:
        """What a partition has shown so far: its highest accepted orbit; before that, its first rows' lowest
        (a far-ahead row among them is then a step up like any other, whichever place it has in the batch)."""
        return self.book.peaks[part] if part in self.book.peaks else int(orbits.min())

    def _steps(self, orbits: np.ndarray, level: int) -> np.ndarray:
        """Rows more than ``max_jump_orbits`` above everything before them (and ``level``)."""
        jump = self.max_jump_orbits
        assert jump is not None, "only asked with a far-ahead check"
        if not len(orbits) or orbits.max() <= level + jump:  # the usual case: none, found in one pass
            return np.zeros(len(orbits), bool)
        before = np.maximum.accumulate(np.concatenate(([level], orbits[:-1])))
        return orbits > before + jump

    def _judge(self, part: int, seq: Rows, published: np.ndarray, n_held: int) -> np.ndarray:
        """Which rows of one partition's sequence (held rows first, then the batch's) to take now.

        A step up of more than ``max_jump_orbits`` that the sequence comes back below is a spike: the rows up
        there before the return are rejected. A step nothing comes back below is a jump when the rows from it
        to the next step are enough, or reach from held rows into this batch; otherwise the rows from it on
        wait for the partition's next batch (at most ``jump_evidence_rows`` of them; beyond that a segment
        the data steps up from again without coming back is rejected).
        """
        jump, x = self.max_jump_orbits, seq.orbit
        take = np.ones(len(x), bool)
        if not len(x):
            return take
        level = self._level(part, x[n_held:] if len(x) > n_held else x)
        top = np.iinfo(np.int64).max
        for _ in range(2 * len(x) + 1):  # each pass takes steps as jumps, then rejects rows or holds rows
            steps = np.flatnonzero(self._steps(np.where(take, x, np.iinfo(np.int64).min), level) & take)
            if not len(steps):
                break
            # a step the data comes back below: the rows up there before that are a spike (the lowest row after
            # each row, from a running minimum from the end, says whether it comes back, without a search each)
            after = np.minimum.accumulate(np.where(take, x, top)[::-1])[::-1]
            comes_back = np.append(after[1:], top)[steps] < x[steps] - jump
            spike = None
            if comes_back.any():
                s = int(steps[np.argmax(comes_back)])
                back = np.flatnonzero(take[s + 1 :] & (x[s + 1 :] < x[s] - jump))
                spike = take & (x >= x[s] - jump)
                spike[:s] = False
                spike[s + 1 + int(back[-1]) :] = False
            else:  # nothing comes back: each step in turn, up to the next one, may be a real jump
                taken = 0
                for k, s in enumerate(steps.tolist()):
                    end = int(steps[k + 1]) if k + 1 < len(steps) else len(x)
                    rows_there = int(take[s:end].sum())
                    continued = s < n_held and bool(take[n_held:end].any())  # held rows, and the next batch there
                    if rows_there < self.jump_evidence_rows and not continued:
                        break
                    level = max(level, int(x[s]))  # a jump: the steps after it stay steps, none comes back
                    taken += 1
                if taken == len(steps):
                    break
                s = int(steps[taken])
                end = int(steps[taken + 1]) if taken + 1 < len(steps) else len(x)
                wait = take.copy()
                wait[:s] = False
                if end == len(x) or wait.sum() < self.jump_evidence_rows:  # wait for the partition's next batch
                    self._held[part] = (seq.select(wait), published[wait])
                    take &= ~wait
                    break
                spike = take.copy()  # the data keeps stepping up without coming back: no evidence for these
                spike[:s] = False
                spike[end:] = False
            self._reject(seq.select(spike), published[spike])
            take &= ~spike
        return take

    def _reject(self, rows: Rows, published: np.ndarray) -> None:
        """Count rows as out of range, except those an earlier run already rejected (published, not undecided)."""
        if not len(rows):
            return
        if published.any():
            undecided = np.zeros(len(rows), bool)
            for p, offsets in self._undecided.items():
                undecided |= (rows.partition == p) & np.isin(rows.offset, offsets)
            rows = rows.select(~published | undecided)
        if len(rows):
            self._out_of_range.append(rows)

    def _put(self, wid: int, rows: Rows) -> None:
        self.book.put(wid, rows)
        self.filled.add(wid)
        low = self._low.setdefault(wid, {})
        for p, off in by_partition(rows.partition, rows.offset, np.minimum).items():
            low[p] = min(off, low.get(p, off))

    def pending_offsets(self) -> dict[int, int]:
        """Per partition, the lowest input offset that still feeds an open window (or is held)."""
        low: dict[int, int] = {}
        for per_window in self._low.values():
            for p, off in per_window.items():
                low[p] = min(off, low.get(p, off))
        for p, (rows, _) in self._held.items():
            off = int(rows.offset.min())
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
        for wid, parts in self.book.close(watermark):
            hits = Rows.concat(parts)
            self._low.pop(wid, None)
            first = by_partition(hits.partition, hits.offset, np.minimum)
            last = by_partition(hits.partition, hits.offset, np.maximum)
            inputs = {p: (first[p], last[p]) for p in first}
            closed.append(Window(wid, wid * self.window_orbits, (wid + 1) * self.window_orbits - 1, hits, inputs))
        return closed
