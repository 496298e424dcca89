"""Importable streamz nodes: Kafka source, decode, clean, event-time windows, histogram.

Each node is small and does one thing; services and notebooks wire them together. They are streamz
plug-ins (entry points ``streamz.sources`` and ``streamz.nodes``), so ``Stream.dt_decode_hits`` and the
others are there as soon as streamz is imported; the ``dt_`` prefix keeps them apart from other
libraries' nodes. A user's own graph in a notebook looks like this (``bootstrap`` from ``dtlive broker``)::

    from streamz import Stream
    src = Stream.dt_from_kafka_batched_consumer("dt.hits", {"bootstrap.servers": bootstrap})
    windows = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2)
    products = windows.dt_histogram()          # one xarray.Dataset per closed window
    products.sink(lambda ds: print(ds.attrs["window_id"], int(ds.total_hits)))
    src.start()                                # connects, then polls on the notebook's event loop

streamz's own ``Stream.from_kafka_batched`` feeds the same nodes through :class:`dt_payload_batch`.
The same graph without Kafka, from in-memory payloads:

>>> from streamz import Stream
>>> src = Stream()
>>> windows = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0)
>>> out = windows.dt_histogram().sink_to_list()
>>> src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"2,0,6,900000,0,0"], "csv"))
>>> [int(ds.total_hits) for ds in out]
[1]

The nodes keep streamz's contract: none changes what it receives (every branch of a graph sees the
same data), and metadata travels with the data. :class:`dt_event_windows` retains the metadata of each
batch until everything made of it is emitted (its hits in closed windows, its counts and rejects with
one), so a checkpointing source such as ``from_kafka_batched`` commits only offsets whose windows are out.

Exceptions while handling one batch never stop the graph: the node logs them,
counts them in ``node.errors`` and turns the batch into rejects with reason ``error``.

Long on purpose: every ``dt_`` node keeps the streamz contract (metadata retained while buffered and
released on emit, inputs never mutated) next to its docstring example, and the ``streamz.nodes`` entry
points and readers of a graph find them all here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from streamz import Source, Stream

from dtlive import __version__
from dtlive.config import Config
from dtlive.core import detector as det
from dtlive.core.checkpoint import Checkpoint
from dtlive.core.decode import Reject, decode, encode_csv
from dtlive.core.messages import COUNTS, EPOCH_HEADER, FORMAT_HEADER, MONITOR_SCHEMA, iso_utc, message_from_arrays
from dtlive.core.products import DRIFT_EDGES_NS, arrays_to_dataset, compute_arrays
from dtlive.core.rows import Rows, clean, partitions_of
from dtlive.core.windows import EventTimeWindows, Window
from dtlive.service.processes import process_age_s

if TYPE_CHECKING:
    from confluent_kafka import Consumer

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """Raw messages of one consume call, as plain arrays (no Kafka objects).

    >>> b = Batch.from_payloads([b"2,0,5,100,7,3", b"2,0,6,100,0,0"], "csv", topic="dt.hits", partition=3,
    ...                         first_offset=40)
    >>> b.offsets.tolist(), b.partitions.tolist(), b.positions, b.formats
    ([40, 41], [3, 3], {3: 42}, ['csv', 'csv'])
    """

    payloads: list[bytes]
    formats: list[str | None]
    partitions: np.ndarray
    offsets: np.ndarray
    timestamps_ms: np.ndarray  # broker timestamps (from_messages keeps only the first one)
    topic: str = ""
    orbit_epoch: float | None = None
    positions: dict[int, int] = field(default_factory=dict)  # next offset per partition after this batch
    waiting: frozenset = frozenset()  # partitions with input the source has not delivered yet (windows wait)
    bad_epochs: dict[int, str] = field(default_factory=dict)  # message index -> why its epoch header is unusable

    @classmethod
    def from_payloads(
        cls,
        payloads: list[bytes],
        fmt: str | None = None,
        topic: str = "",
        partition: int = 0,
        first_offset: int = 0,
        orbit_epoch: float | None = None,
    ) -> Batch:
        """A batch built by hand (tests, notebooks, file replays)."""
        n = len(payloads)
        offsets = np.arange(first_offset, first_offset + n, dtype=np.int64)
        return cls(
            list(payloads),
            [fmt] * n,
            np.full(n, partition, np.int32),
            offsets,
            np.full(n, int(time.time() * 1000), np.int64),
            topic,
            orbit_epoch,
            {partition: first_offset + n},
        )

    @classmethod
    def from_messages(cls, messages: list, topic: str) -> Batch:
        """From confluent-kafka messages (errors must be filtered out already).

        The per-message calls run in C (``map`` over the Message methods), and the headers are read once
        per distinct header set: a batch of one-row messages mostly holds one or two such sets.
        """
        from confluent_kafka import Message

        values = list(map(Message.value, messages))
        payloads = [p or b"" for p in values] if None in values else cast(list[bytes], values)
        n = len(messages)
        parts = np.fromiter(map(Message.partition, messages), np.int32, n)
        offs = np.fromiter(map(Message.offset, messages), np.int64, n)
        stamps = [messages[0].timestamp()[1]] if messages else []  # only the first is used (epoch fallback)
        # a consumed message's headers are a list of (name, value) or None (the stub also allows a producer's dict)
        headers = cast(list[list[tuple[str, bytes | None]] | None], list(map(Message.headers, messages)))
        bad_epochs: dict[int, str] = {}
        if n and headers.count(headers[-1]) == n:  # one header set in the whole batch
            fmt, epoch, bad = _read_headers(headers[-1] or ())
            formats = [fmt] * n
            if bad:
                bad_epochs = dict.fromkeys(range(n), bad)
        else:
            sets = [tuple(h) if h else () for h in headers]
            read = {h: _read_headers(h) for h in set(sets)}  # header set -> (format, epoch, why the epoch is bad)
            kinds = {fmt for fmt, _, _ in read.values()}
            formats = [kinds.pop()] * n if len(kinds) == 1 else [read[h][0] for h in sets]
            epoch = next((read[h][1] for h in sets if read[h][1] is not None), None)  # the first message's
            if any(bad for _, _, bad in read.values()):
                bad_epochs = {i: why for i, h in enumerate(sets) if (why := read[h][2])}
        b = cls(payloads, formats, parts, offs, np.array(stamps, np.int64), topic, epoch, bad_epochs=bad_epochs)
        for p in partitions_of(b.partitions):
            b.positions[int(p)] = int(b.offsets[b.partitions == p].max()) + 1
        return b


def _read_headers(headers: Sequence[tuple[str, bytes | None]]) -> tuple[str | None, float | None, str | None]:
    """(format, orbit epoch, why the epoch header is unusable) from one message's headers; None where absent."""
    fmt, epoch, bad = None, None, None
    for k, v in headers:
        if k == FORMAT_HEADER:
            fmt = v.decode(errors="replace") if v is not None else ""
        elif k == EPOCH_HEADER and epoch is None and bad is None and v:
            epoch, bad = plausible_epoch(v)
    return fmt, epoch, bad


EPOCH_RANGE = (0.0, 4_102_444_800.0)  # UNIX seconds of 1970-01-01 and 2100-01-01: an epoch outside is corrupt


def plausible_epoch(value: bytes | str) -> tuple[float | None, str | None]:
    """An ``orbit_epoch`` header's value as UNIX seconds, or None and the reason it cannot be one.

    >>> plausible_epoch(b"1700000000.5"), plausible_epoch(b"nan")[1], plausible_epoch(b"1e30")[1]
    ((1700000000.5, None), "orbit_epoch 'nan' is not a finite number", "orbit_epoch '1e30' is outside 1970-2100")
    """
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    shown = text if len(text) <= 40 else text[:40] + "..."
    try:
        epoch = float(text)
    except ValueError:
        return None, f"orbit_epoch {shown!r} is not a number"
    if not np.isfinite(epoch):
        return None, f"orbit_epoch {shown!r} is not a finite number"
    if not EPOCH_RANGE[0] <= epoch < EPOCH_RANGE[1]:
        return None, f"orbit_epoch {shown!r} is outside 1970-2100"
    return epoch, None


@dataclass
class Decoded:
    """Decoded rows of a batch plus bookkeeping for the rows not already accounted for.

    >>> from streamz import Stream
    >>> src = Stream()
    >>> out = src.dt_decode_hits(resume={0: 1}).sink_to_list()
    >>> src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"2,0,6,101,0,0", b"oops"], "csv"))
    >>> d = out[0]
    >>> d.fresh(d.rows).tolist(), [r.reason for r in d.rejects], dict(d.counts)
    ([False, True], ['field_count'], {'rows': 2, 'rejected.field_count': 1})
    """

    rows: Rows
    rejects: list[Reject]
    counts: Counter
    batch: Batch
    resume: dict[int, int] = field(default_factory=dict)

    def fresh(self, rows: Rows) -> np.ndarray:
        """Mask of rows not already counted by an earlier run (offset >= resume position)."""
        if not self.resume:
            return np.ones(len(rows), bool)
        limit = np.array([self.resume.get(int(p), -1) for p in range(int(rows.partition.max(initial=0)) + 1)])
        return rows.offset >= limit[rows.partition]


def _guarded(method):
    """Run a node's own step and emit its result with the input's metadata; on an exception log it, count it
    and hand the batch on as rejects.

    Only the node's own work is guarded (``method`` returns what to emit, or None);
    what nodes downstream raise propagates to the caller of ``emit``/``poll``, so a
    failing sink is reported as itself and never mistaken for bad input.
    """

    def update(self, x, who=None, metadata=None):
        try:
            out = method(self, x)
        except Exception as exc:  # noqa: BLE001 - one bad batch must never stop the graph
            self.errors += 1
            log.exception("%s failed on one batch; its input is dead-lettered", type(self).__name__)
            out = _as_rejects(x, exc)
        return None if out is None else self._emit(out, metadata=metadata)

    return update


def _as_rejects(x: Batch | Decoded, exc: Exception) -> Decoded | None:
    """Every message of the batch behind ``x`` as a reject with reason ``error`` (None: no batch behind it)."""
    batch = x.batch if isinstance(x, Decoded) else x
    if not isinstance(batch, Batch):
        return None
    rejects = [Reject("error", p, int(a), int(b), repr(exc)[:200])
               for p, a, b in zip(batch.payloads, batch.partitions, batch.offsets)]
    return Decoded(Rows.empty(), rejects, Counter({"rows": len(rejects), "rejected.error": len(rejects)}), batch)


@Stream.register_api()
class dt_payload_batch(Stream):
    """Message values -> :class:`Batch`: feeds streamz's own ``Stream.from_kafka_batched`` into dtlive's nodes.

    ``from_kafka_batched`` emits, per partition and poll, the list of the messages' values (with
    ``keys=True``, dicts holding a ``"value"``). Only the values reach this node, so a batch made here
    lacks what :class:`dt_from_kafka_batched_consumer` reads from each message:

    - partitions and offsets: every batch is put on partition 0 and its messages are numbered by a running
      count of the messages this node has seen. ``Window.inputs``, positions and restart offsets count
      those, not Kafka offsets, and hits of all partitions share one watermark (a partition far ahead
      makes another's hits late). Offsets stay streamz's business: the metadata goes on with the batch,
      and ``from_kafka_batched`` commits them once :class:`dt_event_windows` has emitted what they hold.
    - headers: the ``format`` header (``fmt`` applies to every message, else the decoder's
      ``default_format``) and the ``orbit_epoch`` header (``orbit_epoch`` if given, else the arrival time
      of the first batch with hits anchors the time axis, as for messages without the header).

    >>> from streamz import Stream
    >>> src = Stream()
    >>> out = src.dt_payload_batch(fmt="csv").sink_to_list()
    >>> src.emit([b"2,0,5,100,7,3", b"2,0,6,101,0,0"]); src.emit([{"key": None, "value": b"2,0,5,102,7,3"}])
    >>> [(b.payloads, b.formats, b.offsets.tolist()) for b in out][1]
    ([b'2,0,5,102,7,3'], ['csv'], [2])
    """

    def __init__(self, upstream, fmt: str | None = None, topic: str = "", orbit_epoch: float | None = None,
                 **kwargs):
        self.fmt = fmt
        self.topic = topic
        self.orbit_epoch = orbit_epoch
        self.messages = 0
        super().__init__(upstream, **kwargs)

    def update(self, values: list, who=None, metadata=None):
        payloads = [(v.get("value") if isinstance(v, dict) else v) or b"" for v in values]
        batch = Batch.from_payloads(payloads, self.fmt, self.topic, first_offset=self.messages,
                                    orbit_epoch=self.orbit_epoch)
        self.messages += len(payloads)
        return self._emit(batch, metadata=metadata)


@Stream.register_api()
class dt_decode_hits(Stream):
    """Batch -> Decoded: payloads to numpy columns, grouped by their ``format`` header.

    Messages without a header are read as ``default_format``; rejects carry a reason. A message whose
    ``orbit_epoch`` header is not a plausible UNIX time (:func:`plausible_epoch`) is rejected whole with
    reason ``bad_epoch``: its header cannot anchor the stream's time, so its rows are not trusted either.

    >>> from streamz import Stream
    >>> src = Stream()
    >>> out = src.dt_decode_hits(default_format="csv").sink_to_list()
    >>> batch = Batch.from_payloads([b"2,0,5,100,7,3", b"2,0,6,100,0,0"], None)
    >>> batch.bad_epochs = {1: "orbit_epoch 'x' is not a number"}
    >>> src.emit(batch)
    >>> out[0].rows.channel.tolist(), [(r.reason, r.offset) for r in out[0].rejects]
    ([5], [('bad_epoch', 1)])
    """

    def __init__(self, upstream, default_format: str = "csv", resume: dict[int, int] | None = None, **kwargs):
        self.default_format = default_format
        self.resume = dict(resume or {})
        self.errors = 0
        super().__init__(upstream, **kwargs)

    @_guarded
    def update(self, batch: Batch) -> Decoded:
        bad = batch.bad_epochs  # messages with an implausible epoch header are rejected whole
        rejects = [Reject("bad_epoch", bytes(batch.payloads[i]), int(batch.partitions[i]), int(batch.offsets[i]),
                          detail) for i, detail in sorted(bad.items())]
        groups: list[tuple[str, np.ndarray | None]]
        if len(set(batch.formats)) <= 1 and not bad:  # the usual case: one format in the whole batch
            groups = [((batch.formats or [None])[0] or self.default_format, None)]
        else:
            formats = [None if i in bad else f or self.default_format for i, f in enumerate(batch.formats)]
            groups = [(fmt, np.array([i for i, f in enumerate(formats) if f == fmt]))
                      for fmt in dict.fromkeys(formats) if fmt is not None]
        parts = []
        for fmt, idx in groups:
            if idx is None:
                out = decode(batch.payloads, fmt, batch.partitions, batch.offsets)
            else:
                out = decode([batch.payloads[i] for i in idx], fmt, batch.partitions[idx], batch.offsets[idx])
            parts.append(out.rows)
            rejects += out.rejects
        rows = Rows.concat(parts)
        d = Decoded(rows, [], Counter(), batch, self.resume)
        if self.resume:
            rejects = [r for r in rejects if r.offset >= self.resume.get(r.partition, -1)]
        d.rejects = rejects
        d.counts["rows"] = int(d.fresh(rows).sum()) + len(rejects)
        d.counts.update(f"rejected.{r.reason}" for r in rejects)
        return d


@Stream.register_api()
class dt_clean_hits(Stream):
    """Decoded -> Decoded with only hit rows (HEAD == 2); ancillary rows are counted and dropped.

    >>> from streamz import Stream
    >>> src = Stream()
    >>> out = src.dt_decode_hits().dt_clean_hits().sink_to_list()
    >>> src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"0,0,5,100,7,3", b"4,1,0,100,0,0"], "csv"))
    >>> out[0].rows.head.tolist(), out[0].counts["ancillary"], out[0].counts["rows"]
    ([2], 2, 3)
    """

    def __init__(self, upstream, **kwargs):
        self.errors = 0
        super().__init__(upstream, **kwargs)

    @_guarded
    def update(self, d: Decoded) -> Decoded:
        hits, _ = clean(d.rows)
        fresh_all, fresh_hits = d.fresh(d.rows), d.fresh(hits)
        counts = Counter(d.counts)
        counts["ancillary"] += int(fresh_all.sum() - fresh_hits.sum())
        return replace(d, rows=hits, counts=counts)


@dataclass
class _Kept:
    """The metadata a window node retains for one input batch, and what it waits for before releasing it."""

    metadata: list[dict]
    windows: set[int] = field(default_factory=set)  # windows holding hits of the batch, not emitted yet
    held: bool = False  # far-ahead rows were held back when it came or since (its own may be among them)
    counted: bool = False  # its counts and rejects went out with a window

    @property
    def done(self) -> bool:
        return self.counted and not self.windows and not self.held


@Stream.register_api()
class dt_event_windows(Stream):
    """Decoded hits -> closed :class:`~dtlive.core.windows.Window` objects, in window order.

    Windows are ``window_s`` long on ORBIT_CNT, aligned to orbit multiples, closed by
    the watermark (``lateness_s`` allowance) or by :meth:`flush_if_idle` after ``idle_s``
    seconds without input. Counts and rejects seen since the previous window travel in
    ``window.meta``; late hits become rejects with reason ``late``. With ``max_jump_s``, hits
    that far ahead of their partition need evidence before they move the watermark (see
    :mod:`dtlive.core.windows`); those without become rejects with reason ``orbit_out_of_range``.
    ``held``: the ``held_offsets`` of the checkpoint this node resumes from.

    Metadata (streamz's reference counting): the metadata of a batch is retained while its hits sit in
    open windows, while far-ahead rows wait for evidence, and until its counts went out with a window. A
    closed window is emitted with the metadata of the batches whose hits it holds (the first window closed
    at a time also with those whose counts it carries); afterwards the metadata of finished batches is
    released, in arrival order, so a source committing offsets on release never commits past a batch
    still in use.

    >>> from streamz import RefCounter, Stream
    >>> src = Stream()
    >>> windows = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0)
    >>> refs = [RefCounter(), RefCounter()]
    >>> src.emit(Batch.from_payloads([b"2,0,5,100,7,3"], "csv"), metadata=[{"ref": refs[0]}])
    >>> second = Batch.from_payloads([b"2,0,5,900000,7,3"], "csv", first_offset=1)
    >>> src.emit(second, metadata=[{"ref": refs[1]}])
    >>> [r.count for r in refs]  # window 0 is out, the second batch's hits sit in an open window
    [0, 1]
    """

    def __init__(
        self,
        upstream,
        window_s: float = Config.window_s,
        lateness_s: float = Config.lateness_s,
        idle_s: float = Config.idle_s,
        last_closed: int = -1,
        orbit_epoch: float | None = None,
        pending: dict | None = None,
        max_jump_s: float | None = None,
        held: dict | None = None,
        **kwargs,
    ):
        undecided = {int(p): list(o) for p, o in (held or {}).items()}
        self.state = EventTimeWindows.from_seconds(window_s, lateness_s, last_closed, max_jump_s, undecided)
        self.idle_s = idle_s
        self.orbit_epoch = orbit_epoch
        self._epoch_fixed = orbit_epoch is not None  # a header epoch replaces a provisional one until a window closes
        self.counts: Counter = Counter(pending or {})
        self.rejects: list[Reject] = []
        self.positions: dict[int, int] = {}
        self.last_input = time.monotonic()
        self.held_since_idle = 0  # idle checks that found input waiting (or no answer) since the last input
        self.errors = 0
        self._kept: deque[_Kept] = deque()  # metadata retained, in arrival order
        super().__init__(upstream, **kwargs)

    def update(self, d: Decoded, who=None, metadata=None):
        kept = None
        if metadata:
            kept = _Kept(list(metadata))
            self._retain_refs(kept.metadata)
            self._kept.append(kept)
        try:
            closed = self._add(d)
        except Exception:  # noqa: BLE001 - one bad batch must never stop the graph
            self.errors += 1
            log.exception("%s failed on one batch; its input is dead-lettered", type(self).__name__)
            closed = []
        if self._kept:
            self._track(kept, closed)
        return self._emit_windows(closed)

    def _track(self, new: _Kept | None, closed: list[Window]) -> None:
        """Note the windows that hits of retained batches went into in the last add."""
        filled = self.state.filled & {*self.state.open_ids, *(w.id for w in closed)}
        for k in self._kept:
            if k is new or k.held:  # rows held back earlier may have gone into windows now
                k.windows |= filled
        if self.state.holding:
            if new is not None:
                new.held = True
        else:
            for k in self._kept:
                if k.held:  # its held rows went into windows or became rejects (counted with the next window)
                    k.held = k.counted = False

    def _add(self, d: Decoded) -> list[Window]:
        self.last_input = time.monotonic()
        self.held_since_idle = 0
        self.positions.update(d.batch.positions)
        self.counts.update(d.counts)
        self.rejects += d.rejects
        epoch = d.batch.orbit_epoch
        if epoch is not None and not self._epoch_fixed and EPOCH_RANGE[0] <= epoch < EPOCH_RANGE[1]:
            self.orbit_epoch, self._epoch_fixed = epoch, True
        elif self.orbit_epoch is None and len(d.rows):  # provisional: the first message's broker timestamp
            self.orbit_epoch = float(d.batch.timestamps_ms[0]) / 1000 - float(d.rows.orbit[0]) * det.ORBIT_S
        self.state.waiting = d.batch.waiting
        closed, late = self.state.add(d.rows, already_published=~d.fresh(d.rows))
        if len(late):
            self.counts["late_hits"] += len(late)
            self.counts["rejected.late"] += len(late)
            self.rejects += [
                Reject("late", line, int(p), int(o))
                for line, p, o in zip(encode_csv(late), late.partition, late.offset)
            ]
        self._take_out_of_range()
        return closed

    def restart_input(self, partitions) -> None:
        """The input of ``partitions`` starts again at offset 0 (its topic was created anew after a broker
        lost it): offsets remembered from the old topic are dropped, open windows keep their hits."""
        self.state.forget_offsets(partitions)
        self.positions.update({p: 0 for p in partitions})

    def _take_out_of_range(self) -> None:
        far = self.state.take_out_of_range()
        if len(far):
            self.counts["rejected.orbit_out_of_range"] += len(far)
            self.rejects += [
                Reject("orbit_out_of_range", line, int(p), int(o), "far ahead of its partition, no evidence")
                for line, p, o in zip(encode_csv(far), far.partition, far.offset)
            ]

    def flush(self) -> list:
        """Close and emit every open window now."""
        closed = self.state.flush()
        self._take_out_of_range()
        for k in self._kept:
            if k.held:  # its held rows are rejects now
                k.held = k.counted = False
        return self._emit_windows(closed)

    def flush_if_idle(self, now: float | None = None, input_waiting: Callable[[], bool | None] | None = None) -> bool:
        """Flush when no input arrived for ``idle_s`` seconds; True if something was flushed.

        ``input_waiting``: asked before flushing whether the input still holds unread data (True), holds none
        (False) or cannot tell (None: the broker did not answer). Only a confirmed False flushes: a stalled or
        slow broker is not an idle stream, and closing its windows early would make their hits late. While the
        answer is not False the idle clock starts again, so the question is asked at most once per ``idle_s``.

        >>> from streamz import Stream
        >>> w = Stream().dt_event_windows(window_s=2)
        >>> w.state.add(Rows.from_columns(head=[2], fpga=[0], channel=[1], orbit=[5], bx=[0], tdc=[0]))[0]
        []
        >>> w.flush_if_idle(now=time.monotonic() + 60, input_waiting=lambda: None), w.state.open_ids
        (False, [0])
        >>> w.flush_if_idle(now=time.monotonic() + 120, input_waiting=lambda: False), w.state.open_ids
        (True, [])
        """
        now = time.monotonic() if now is None else now
        if not self.state.open_ids or now - self.last_input < self.idle_s:
            return False
        waiting = input_waiting() if input_waiting is not None else False
        if waiting is not False:
            if not self.held_since_idle:
                log.warning("open windows %s held: %s", self.state.open_ids,
                            "the broker does not answer" if waiting is None else "the input still has unread data")
            self.held_since_idle += 1
            self.last_input = now
            return False
        self.held_since_idle = 0
        self.flush()
        return True

    def _emit_windows(self, closed: list[Window]):
        results: list = []
        if closed:
            self._epoch_fixed = self._epoch_fixed or self.orbit_epoch is not None
            restart = self.commit_offsets()  # the same for every window closed here: they are all gone already
        for w in closed:
            w.meta = {
                "counts": self._drain_counts(),
                "rejects": self.rejects,
                "orbit_epoch": self.orbit_epoch,
                "positions": dict(self.positions),
                "restart_offsets": dict(restart),
            }
            self.rejects = []
            metadata = [m for k in self._kept if w.id in k.windows or (w is closed[0] and not k.counted)
                        for m in k.metadata]
            results += self._emit(w, metadata=metadata) or []
        if closed and self._kept:
            self._release_done({w.id for w in closed})
        return results

    def _release_done(self, emitted: set[int]) -> None:
        """Windows ``emitted`` went out (the first with all counts): release finished batches in arrival order."""
        for k in self._kept:
            k.windows -= emitted
            k.counted = True
        while self._kept and self._kept[0].done:
            self._release_refs(self._kept.popleft().metadata)

    def _drain_counts(self) -> Counter:
        counts, self.counts = self.counts, Counter()
        return counts

    def checkpoint(self) -> tuple[Checkpoint, list[Reject]]:
        """State to persist and the rejects not yet handed on (drained)."""
        rejects, self.rejects = self.rejects, []
        state = Checkpoint(
            last_window=self.state.last_closed,
            window_orbits=self.state.window_orbits,
            positions=dict(self.positions),
            restart_offsets=self.commit_offsets(),
            pending_counts=dict(self.counts),
            orbit_epoch=self.orbit_epoch,
            held_offsets=self.state.held_offsets(),
        )
        return state, rejects

    def commit_offsets(self) -> dict[int, int]:
        """Per partition, the offset from which a restart must re-read to lose nothing."""
        low = self.state.pending_offsets()
        return {p: min(low.get(p, pos), pos) for p, pos in self.positions.items()}


def window_products(window: Window, drift_edges: np.ndarray = DRIFT_EDGES_NS, provenance: dict | None = None,
                    arrays: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict]:
    """Product and count arrays of a closed window, and its attrs (window, provenance, rejects), without xarray.

    ``arrays``: the products when they were computed elsewhere (merged shares, :func:`dtlive.core.products.merge`);
    the window's own hits are then not used. The counts the products do not give come from the window.

    >>> from dtlive.core.rows import Rows
    >>> w = Window(4, 400, 499, Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[450], bx=[0], tdc=[0]),
    ...            inputs={0: (10, 12)}, meta={"counts": {"rows": 3, "rejected.empty": 2}, "orbit_epoch": 0.0})
    >>> arrays, attrs = window_products(w, provenance={"topic": "dt.hits", "run_id": "r1"})
    >>> int(arrays["total_hits"]), int(arrays["rows"]), attrs["window_id"], attrs["rejected_by_reason"]
    (1, 3, 4, '{"empty": 2}')
    >>> attrs["window_start"], json.loads(attrs["provenance"])["inputs"]
    ('1970-01-01T00:00:00.035Z', [{'topic': 'dt.hits', 'partition': 0, 'first_offset': 10, 'last_offset': 12}])
    """
    values: dict[str, Any] = compute_arrays(window.hits, drift_edges) if arrays is None else dict(arrays)
    counts = Counter(window.meta.get("counts", {}))
    for k in COUNTS:
        if k not in values:
            values[k] = np.int64(counts.get(k, 0))
    rejected = {k.split(".", 1)[1]: v for k, v in counts.items() if k.startswith("rejected.") and v}
    epoch = window.meta.get("orbit_epoch")
    prov = dict(provenance or {})
    topic = prov.pop("topic", "")
    prov["inputs"] = [
        {"topic": topic, "partition": p, "first_offset": a, "last_offset": b}
        for p, (a, b) in sorted(window.inputs.items())
    ]
    prov.setdefault("dtlive_version", __version__)
    prov["orbit_epoch"] = epoch
    prov["input_position"] = [
        {"topic": topic, "partition": p, "offset": o} for p, o in sorted(window.meta.get("positions", {}).items())
    ]
    prov["restart_offsets"] = [
        {"topic": topic, "partition": p, "offset": o} for p, o in sorted(window.meta.get("restart_offsets", {}).items())
    ]
    attrs = {
        "schema": MONITOR_SCHEMA,
        "window_id": window.id,
        "first_orbit": window.first_orbit,
        "last_orbit": window.last_orbit,
        "window_start": iso_utc(None if epoch is None else epoch + window.first_orbit * det.ORBIT_S),
        "window_end": iso_utc(None if epoch is None else epoch + (window.last_orbit + 1) * det.ORBIT_S),
        "provenance": json.dumps(prov),
        "rejected_by_reason": json.dumps(rejected),
    }
    return values, attrs


def window_message(window: Window, drift_edges: np.ndarray = DRIFT_EDGES_NS, provenance: dict | None = None,
                   arrays: dict[str, np.ndarray] | None = None, variables_as_arrays: bool = False) -> dict:
    """The ``dtlive.monitor/1`` message of a closed window (the processor's fast path: no xarray).

    ``arrays``: products computed elsewhere, as for :func:`window_products`; ``variables_as_arrays``: as for
    :func:`dtlive.core.messages.message_from_arrays`.

    >>> from dtlive.core.rows import Rows
    >>> w = Window(4, 400, 499, Rows.from_columns(head=[2, 2], fpga=[0, 1], channel=[3, 3], orbit=[450, 451], bx=[0, 0],
    ...                                           tdc=[0, 0]))
    >>> msg = window_message(w)
    >>> msg["schema"], msg["window"]["id"], msg["hits_per_chamber"], msg["window"]["start"]
    ('dtlive.monitor/1', 4, [1, 0, 1, 0], None)
    """
    arrays, attrs = window_products(window, drift_edges, provenance, arrays)
    return message_from_arrays(arrays, drift_edges, attrs, variables_as_arrays)


def window_dataset(window: Window, drift_edges: np.ndarray = DRIFT_EDGES_NS, provenance: dict | None = None):
    """The products of a closed window as an ``xarray.Dataset`` with window, count and provenance attrs.

    >>> from dtlive.core.rows import Rows
    >>> w = Window(4, 400, 499, Rows.from_columns(head=[2], fpga=[1], channel=[70], orbit=[450], bx=[0], tdc=[0]),
    ...            meta={"counts": {"rows": 5, "ancillary": 4}})
    >>> ds = window_dataset(w)
    >>> ds.attrs["window_id"], int(ds.total_hits), int(ds.ancillary), int(ds.hits_per_chamber.sel(chamber=3))
    (4, 1, 4, 1)
    """
    arrays, attrs = window_products(window, drift_edges, provenance)
    ds = arrays_to_dataset(arrays, drift_edges, attrs)
    return ds.assign({k: ((), arrays[k]) for k in COUNTS})


@Stream.register_api()
class dt_histogram(Stream):
    """Window -> ``xarray.Dataset`` of the six products (see :func:`window_dataset`).

    >>> from dtlive.core.rows import Rows
    >>> from streamz import Stream
    >>> src = Stream()
    >>> out = src.dt_histogram(drift_edges=[0.0, 200.0, 400.0]).sink_to_list()
    >>> src.emit(Window(0, 0, 99, Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[5], bx=[0], tdc=[0])))
    >>> out[0].sizes["drift_time"], int(out[0].total_hits)
    (2, 1)
    """

    def __init__(self, upstream, drift_edges: np.ndarray = DRIFT_EDGES_NS, provenance: dict | None = None, **kwargs):
        self.drift_edges = np.asarray(drift_edges, float)
        self.provenance = provenance or {}
        self.errors = 0
        super().__init__(upstream, **kwargs)

    def update(self, w: Window, who=None, metadata=None):
        try:
            ds = window_dataset(w, self.drift_edges, self.provenance)
        except Exception:  # noqa: BLE001
            self.errors += 1
            log.exception("histogram failed for window %s", getattr(w, "id", "?"))
            return None
        return self._emit(ds, metadata=metadata)


@Stream.register_api(staticmethod)
class dt_from_kafka_batched_consumer(Source):
    """Source: one long-lived confluent-kafka consumer, ``assign()``-ed, batched ``consume()``.

    Emits the messages of one consume call (at most ``batch_size``) as batches (:class:`Batch`) of at
    most ``max_batch_bytes`` of payload (a bigger message makes a batch of its own). ``start_offsets``
    maps partition -> offset (default: the group's committed offsets, else ``auto.offset.reset``).
    ``partitions``: read only these (a share of the topic, e.g. on a Dask worker); default all.
    Use :meth:`poll` to drive it synchronously, or ``start()`` on an event loop.

    Making the source touches nothing: it connects (:meth:`connect`) in ``start()`` or at the first
    :meth:`poll`, so a graph can be built before its broker or topic exists.

    >>> from streamz import Stream
    >>> src = Stream.dt_from_kafka_batched_consumer("dt.hits", {"bootstrap.servers": "127.0.0.1:9"})
    >>> src.consumer is None, src.partitions
    (True, [])
    """

    def __init__(
        self,
        topic: str,
        consumer_config: dict,
        batch_size: int = 10_000,
        poll_timeout: float = 0.2,
        start_offsets: dict[int, int] | None = None,
        max_batch_bytes: int = 4 << 20,
        partitions: list[int] | None = None,
        **kwargs,
    ):
        self.topic = topic
        self.batch_size = batch_size
        self.max_batch_bytes = max(1, int(max_batch_bytes))
        self.poll_timeout = poll_timeout
        self.config = {
            "group.id": "dtlive-viewer",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            **consumer_config,
        }
        self.consumer: Consumer | None = None  # made by connect()
        self._share = None if partitions is None else sorted(partitions)  # the partitions to read; None: all
        self._start_at = None if start_offsets is None else dict(start_offsets)
        self.partitions: list[int] = []
        self.start_offsets: dict[int, int] = {}  # where reading started (negative: librdkafka's logical offsets)
        self.positions: dict[int, int] = {}
        self.waiting: set[int] = set()
        self.offset_resets = 0
        self.messages = 0
        self.first_input_at: float | None = None  # when the first messages came (monotonic), and the process age
        self.first_input_age_s: float | None = None
        self.errors = 0
        super().__init__(**kwargs)

    def connect(self) -> None:
        """Make the consumer, find the partitions and where to read them, and assign them (once).

        Raises RuntimeError when the topic is not available; the source can then be connected again later.
        """
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

        if self.consumer is not None:
            return
        topic, conf = self.topic, self.config
        # an offset the broker calls out of range is reported, never silently reset to one end (that skips input)
        consumer = Consumer({**conf, "auto.offset.reset": "error"})
        try:
            meta = consumer.list_topics(topic, timeout=15)
            tmeta = meta.topics.get(topic)
            if tmeta is None or tmeta.error is not None or not tmeta.partitions:
                raise RuntimeError(f"topic {topic!r} is not available on {conf.get('bootstrap.servers')}")
            partitions = sorted(tmeta.partitions) if self._share is None else self._share
            reset = OFFSET_BEGINNING if conf["auto.offset.reset"] in ("earliest", "beginning", "smallest") \
                else OFFSET_END
            committed = {}
            if self._start_at is None:
                got = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
                committed = {tp.partition: tp.offset for tp in got if tp.offset >= 0}
            offsets = {p: (self._start_at or committed).get(p, reset) for p in partitions}
            # Partitions with input before their end: event-time windows wait until each has delivered something,
            # so a replay of a multi-partition topic stays exact whichever partition is fetched first.
            waiting = set()
            if len(partitions) > 1 or self._share is not None:  # a share waits for each of its partitions too
                from dtlive.kafka.clients import end_offsets

                ends = end_offsets(consumer, topic)
                waiting = {p for p, o in offsets.items() if p in ends and ends[p][1] > max(o, ends[p][0])
                           and o != OFFSET_END}
            consumer.assign([TopicPartition(topic, p, o) for p, o in offsets.items()])
        except BaseException:
            consumer.close()
            raise
        self.consumer, self.partitions, self.waiting = consumer, partitions, waiting
        self.start_offsets = dict(offsets)
        self.positions = {p: o for p, o in offsets.items() if o >= 0}

    def start(self) -> None:
        """Connect, then poll on streamz's event loop."""
        self.connect()
        super().start()

    def high_watermarks(self) -> dict[int, int]:
        """Current end offset of every partition (cached by librdkafka, refreshed by consume)."""
        from confluent_kafka import TopicPartition

        if self.consumer is None:  # not connected yet: nothing known
            return {}
        out = {}
        for p in self.partitions:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            out[p] = max(high, self.positions.get(p, 0))
        return out

    def input_waiting(self, timeout: float = 1.0) -> bool | None:
        """Whether the broker holds messages this source has not delivered yet.

        Asks the broker (not librdkafka's cache) for each partition's end offset: True when any lies beyond
        the position reached, False when none does, None when the broker did not answer within ``timeout``
        (stalled, restarting or unreachable). One request per partition: meant for rare checks, e.g. before
        windows are closed because the stream looks idle.
        """
        from confluent_kafka import KafkaException, TopicPartition

        if self.consumer is None:
            return None
        deadline = time.monotonic() + timeout
        try:
            for p in self.partitions:
                tp = TopicPartition(self.topic, p)
                _, high = self.consumer.get_watermark_offsets(tp, timeout=max(0.05, deadline - time.monotonic()))
                position = self.positions.get(p)
                if position is None:
                    position = self.consumer.position([tp])[0].offset
                if position >= 0 and high > position:
                    return True
        except KafkaException:
            return None
        return False

    def _out_of_range(self, partition: int, err) -> None:
        """The broker refused our offset on ``partition``: read on from where we are if the log still holds it,
        else from its start (retention removed what was not read yet: said, with how much). A broker that was
        replaced is followed by its user (:meth:`restart_from_beginning`)."""
        from confluent_kafka import KafkaException, TopicPartition

        assert self.consumer is not None, "connected"
        self.offset_resets += 1
        position = self.positions.get(partition)
        try:
            low, _ = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=2.0)
        except KafkaException:
            low = None
        target = position if position is not None and (low is None or position >= low) else low
        if target is None:
            log.warning("offset out of range on %s/%s (%s) and no position known: waiting", self.topic, partition, err)
            return
        if position is not None and target > position:
            log.warning("%s/%s: %d messages were removed before they were read (retention); reading on from %d",
                        self.topic, partition, target - position, target)
        else:
            log.warning("%s/%s: the broker refused offset %s (%s); reading on from %d", self.topic, partition,
                        position, err, target)
        self.consumer.seek(TopicPartition(self.topic, partition, target))

    def restart_from_beginning(self) -> None:
        """Read every partition again from its beginning: the broker was replaced and the topic created anew,
        so the positions reached in the old one mean nothing (a fetch beyond a log's end just returns nothing)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        assert self.consumer is not None, "connected"
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self.partitions])
        self.positions = {p: 0 for p in self.partitions}
        self.waiting = set()

    def _next_batches(self, timeout: float | None = None) -> list[Batch]:
        """One consume call's messages as batches of at most ``max_batch_bytes`` of payload each.

        Decoding a whole consume call at once (up to ``batch_size`` messages of 80 kB) makes column arrays
        of hundreds of MB; pieces of a few MB stay in the CPU caches and decode 2-3x faster.
        """
        from confluent_kafka import KafkaError, Message

        # consume(n, t) waits for n messages or t seconds: take what is queued now, and only when that is
        # nothing wait for the first message (so a short backlog is processed at once, not after t)
        assert self.consumer is not None, "connected"
        msgs = self.consumer.consume(self.batch_size, 0)
        if not msgs:
            first = self.consumer.poll(self.poll_timeout if timeout is None else timeout)
            if first is not None:
                msgs = [first, *(self.consumer.consume(self.batch_size - 1, 0) if self.batch_size > 1 else [])]
        errors = list(map(Message.error, msgs))
        good = msgs
        if errors.count(None) != len(errors):
            good = []
            for m, e in zip(msgs, errors):
                if e is None:
                    good.append(m)
                elif e.code() == KafkaError._AUTO_OFFSET_RESET:  # see auto.offset.reset in __init__
                    self._out_of_range(m.partition() or 0, e)  # set on every message consumed
                else:
                    self.errors += 1
                    log.warning("consume error: %s", e)
        if not good:
            return []
        if self.first_input_at is None:  # start-up is over: see the processor's timing()
            self.first_input_at, self.first_input_age_s = time.monotonic(), process_age_s()
        sizes = list(map(len, good))
        bounds = [0]
        if sum(sizes) > self.max_batch_bytes:
            size = 0
            for i, n in enumerate(sizes):  # greedy pieces; a message bigger than the limit is a piece of its own
                if size and size + n > self.max_batch_bytes:
                    bounds.append(i)
                    size = 0
                size += n
        bounds.append(len(good))
        batches = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            batch = Batch.from_messages(good[a:b], self.topic)
            self.positions.update(batch.positions)
            if self.waiting:
                self.waiting -= set(batch.positions)
                batch.waiting = frozenset(self.waiting)
            batches.append(batch)
        self.messages += len(good)
        return batches

    def poll(self, timeout: float | None = None) -> int:
        """Consume once and emit the batches downstream (synchronously); return the number of messages.

        Connects first if not connected yet.
        """
        self.connect()
        n = 0
        for batch in self._next_batches(timeout):
            self._emit(batch)  # in the caller's thread (``emit`` would hop to streamz's event-loop thread and wait)
            n += len(batch.payloads)
        return n

    def _idle(self) -> None:
        """No input: let downstream windows close after their idle time."""
        todo, seen = list(self.downstreams), set()
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if hasattr(node, "flush_if_idle"):
                node.flush_if_idle(input_waiting=self.input_waiting)
            todo += list(node.downstreams)

    async def _run(self):
        """One cycle of ``start()``: runs on streamz's event loop, so it emits asynchronously."""
        batches = self._next_batches(timeout=0)
        if not batches:
            self._idle()
            await asyncio.sleep(self.poll_timeout)
        for batch in batches:
            await self.emit(batch, asynchronous=True)

    def close(self) -> None:
        self.stop()
        if self.consumer is not None:
            self.consumer.close()
