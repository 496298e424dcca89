"""The worker side of ``dtlive process --dask``: a Dask actor reading its own partitions.

A :class:`PartitionActor` lives on one Dask worker. It holds one confluent-kafka consumer ``assign()``-ed
to a group of the input topic's partitions from given start offsets (no consumer group, no commits: the
driver, :class:`dtlive.streaming.dask_driver.DaskProcessor`, owns the offsets) and runs the processor's own nodes on
them: decode -> clean -> event-time windows, whose watermark is the minimum over its partitions. Hits never
leave the worker. For each window it closes, :meth:`PartitionActor.step` returns the products' summaries of
its share (a :class:`~dtlive.core.products.Partial`, in a :class:`Share`); what the products keep of the window
stays here until the driver sends its :class:`~dtlive.core.products.Request`, answered in a later step (an
:class:`~dtlive.core.products.Answer`).

Used directly (no Dask) it is an ordinary object; the driver creates it with
``client.submit(PartitionActor, ..., actor=True)``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field

from dtlive.config import Config
from dtlive.core.checkpoint import Checkpoint
from dtlive.core.decode import Reject
from dtlive.core.products import Answer, Kept, Partial, Request, Settings, answer, share
from dtlive.core.windows import Window
from dtlive.kafka.clients import consumer_config
from dtlive.streaming.graph import read_input_again, window_graph
from dtlive.streaming.nodes import dt_from_kafka_batched_consumer
from dtlive.streaming.processor import BATCH_SIZE


@dataclass
class Share:
    """An actor's share of one closed window: the products' summaries and where its hits came from.

    >>> from dtlive.core.products import share
    >>> from dtlive.core.rows import Rows
    >>> partial, _ = share(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
    >>> s = Share(partial, inputs={0: (120, 135)}, orbit_epoch=1.7e9)
    >>> s.partial.hits, s.inputs
    (1, {0: (120, 135)})
    """

    partial: Partial
    inputs: dict[int, tuple[int, int]]  # partition -> (first, last) offset
    orbit_epoch: float | None


@dataclass
class Report:
    """What one :meth:`PartitionActor.step` returns; everything consumed so far is accounted in it.

    >>> rep = Report(positions={0: 136}, holding=4)
    >>> rep.shares, rep.counts["rows"], rep.done, rep.positions
    ({}, 0, False, {0: 136})
    """

    shares: dict[int, Share] = field(default_factory=dict)  # closed in this step, by window id
    answers: dict[int, Answer] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)  # rows, ancillary, late, rejected.* since the last step
    rejects: list[Reject] = field(default_factory=list)  # dead letters since the last step
    positions: dict[int, int] = field(default_factory=dict)  # next offset per partition
    restart: dict[int, int] = field(default_factory=dict)  # lowest offset feeding a window still open here
    holding: int | None = None  # lowest window id this actor may still add to (None: none for now)
    done: bool = False  # reached the targets given (until-end) and flushed
    messages: int = 0  # consumed since the last step


class PartitionActor:
    """One consumer on ``partitions`` and the processor's nodes: decode -> clean -> windows -> shares.

    ``start_offsets``: where to read (librdkafka logical offsets allowed); ``resume``: positions up to which
    an earlier run (or a lost actor) already accounted rows (see :class:`dtlive.streaming.nodes.Decoded`);
    ``last_closed``: the last published window (hits of earlier windows are not taken again).

    >>> from dtlive.config import load_config
    >>> actor = PartitionActor(load_config({}), "127.0.0.1:9092", partitions=[0, 1],
    ...                        start_offsets={0: 0, 1: 0})  # doctest: +SKIP
    >>> rep = actor.step(published=-1, requests={})  # doctest: +SKIP
    >>> sorted(rep.positions), rep.done  # doctest: +SKIP
    ([0, 1], False)
    """

    def __init__(self, cfg: Config, bootstrap: str, partitions: list[int], start_offsets: dict[int, int],
                 resume: dict[int, int] | None = None, last_closed: int = -1, orbit_epoch: float | None = None,
                 batch_size: int = BATCH_SIZE):
        self.cfg = cfg
        self.settings = Settings.from_config(cfg)
        conf = consumer_config(cfg, bootstrap, group_id=f"{cfg.group_id}.dask", from_beginning=True)
        self.source = dt_from_kafka_batched_consumer(cfg.hits_topic, conf, batch_size=batch_size,
                                                     start_offsets=dict(start_offsets), partitions=list(partitions))
        # the driver holds the counts not yet published: the actor's windows start with none
        start = Checkpoint(last_window=last_closed, positions=dict(resume or {}), orbit_epoch=orbit_epoch)
        self.windows = window_graph(self.source, cfg, start)
        self.closed: list[Window] = []
        self.windows.sink(self.closed.append)
        self.source.connect()  # the driver learns at once when its topic cannot be read
        self.kept: dict[int, Kept] = {}
        self.targets: dict[int, int] | None = None
        self.done = False
        self._messages = 0

    def where(self) -> dict:
        """The worker process of this actor (pid, and the Dask worker address when on one)."""
        try:
            from distributed import get_worker

            address = get_worker().address
        except (ImportError, ValueError):
            address = ""
        return {"pid": os.getpid(), "address": address}

    def step(self, published: int, requests: dict[int, Request], targets: dict[int, int] | None = None,
             max_seconds: float = 0.3) -> Report:
        """Answer the driver's requests, consume for up to ``max_seconds``, report what changed.

        ``published``: the last window the driver published (kept hits up to it are dropped, and hits
        for it arriving later are late). ``targets``: stop at these offsets (until-end) and flush.
        """
        for wid in [w for w in self.kept if w <= published]:
            del self.kept[wid]
        state = self.windows.state
        if not any(w <= published for w in state.open_ids):
            state.last_closed = max(state.last_closed, published)
        rep = Report(answers={wid: answer(self.kept[wid], r, self.settings) for wid, r in requests.items()
                             if wid in self.kept})
        if targets is not None:
            self.targets = targets
        self._consume(max_seconds)
        for w in self.closed:
            partial, kept = share(w.hits, self.settings)
            self.kept[w.id] = kept
            rep.shares[w.id] = Share(partial, w.inputs, w.meta.get("orbit_epoch"))
            rep.counts.update(w.meta.get("counts", {}))
            rep.rejects += w.meta.get("rejects", [])
        self.closed.clear()
        rep.counts.update(self.windows.counts)
        self.windows.counts = Counter()
        rep.rejects += self.windows.rejects
        self.windows.rejects = []
        rep.positions = dict(self.windows.positions)
        rep.restart = self.windows.commit_offsets()
        rep.holding, rep.done = self._holding(), self.done
        rep.messages, self._messages = self._messages, 0
        return rep

    def read_input_again(self) -> None:
        """The broker was replaced: read the partitions again from their beginning (open windows keep their
        hits; see :func:`dtlive.streaming.graph.read_input_again`)."""
        read_input_again(self.windows)

    def close(self) -> None:
        self.source.close()

    def _consume(self, max_seconds: float) -> None:
        started = time.monotonic()
        while not self.done:
            n = self.source.poll()
            self._messages += n
            if self.targets is not None and all(self.source.positions.get(p, 0) >= t for p, t in self.targets.items()):
                self.windows.flush()
                self.done = True
            elif n == 0:
                self.windows.flush_if_idle(input_waiting=self.source.input_waiting)
                return
            if time.monotonic() - started >= max_seconds:
                return

    def _holding(self) -> int | None:
        """Lowest window this actor may still contribute to; None when it holds nothing back.

        Like the single processor's minimum watermark: a partition that delivered hits holds later windows
        back until it moves on or goes idle (``idle_s``); one with input not read yet holds everything.
        """
        state = self.windows.state
        if self.done:
            return None
        if self.source.waiting:
            return state.last_closed + 1
        quiet = time.monotonic() - self.windows.last_input >= self.cfg.idle_s
        if not state.open_ids and (state.watermark is None or quiet):
            return None
        return state.last_closed + 1
