"""Scale-out on Dask: ``dtlive process --dask`` (and the client of ``dtlive replay --dask``).

``dtlive process --dask`` (:class:`DaskProcessor`, chosen by measurement: ``docs/scaling.md``):
the input topic's partitions are split into one group per worker; on each worker a long-lived Dask
actor (:class:`dtlive.streaming.dask_actor.PartitionActor`) reads its group with its own consumer and runs the
processor's nodes (decode -> clean -> event-time windows). Hits never leave the worker: for each closed
window it returns the products' summaries of its share (:mod:`dtlive.core.products`), and the driver merges them
into exactly the single processor's message and publishes it in its one Kafka transaction, exactly once.

``dtlive replay --dask`` (files, no Kafka) is :mod:`dtlive.streaming.replay`: the workers read, decode and cut
pieces of the files into the same mergeable shares.

``address``: ``local:N`` starts a ``LocalCluster`` of N single-threaded worker processes on loopback;
anything else is a scheduler address (``tcp://host:8786``).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dtlive.config import Config
from dtlive.core import detector as det
from dtlive.core.checkpoint import Checkpoint
from dtlive.core.products import Answer, Request, Settings, merge, plan_requests
from dtlive.core.rows import Rows
from dtlive.core.windows import Window
from dtlive.kafka.clients import ClusterWatch, consumer_config, partition_ends
from dtlive.kafka.health import Heartbeat, partition_lag
from dtlive.service.extras import extra
from dtlive.streaming.dask_actor import Report, Share
from dtlive.streaming.nodes import window_message

if TYPE_CHECKING:
    from distributed import Future
    from distributed.actor import BaseActorFuture
from dtlive.streaming.processor import (
    BATCH_SIZE,
    HEALTH_LOGGERS,
    TransactionalPublisher,
    open_producer,
    processing_run,
    run_provenance,
)

log = logging.getLogger(__name__)


def _parse_local(address: str) -> int | None:
    """N of ``local:N`` (None for a scheduler address).

    >>> _parse_local("local:4"), _parse_local("local"), _parse_local("local:0"), _parse_local("tcp://10.0.0.1:8786")
    (4, 1, 1, None)
    """
    if address.startswith("local"):
        _, _, n = address.partition(":")
        return max(1, int(n or 1))
    return None


#: Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting it switches off glibc's
#: dynamic mmap threshold, so every large numpy array is a fresh mmap with its pages faulted in: decoding and
#: histogramming took ~40 % more CPU in a worker than in a plain process (docs/scaling.md). Local clusters
#: leave it unset; for workers of your own, set this in their Dask configuration.
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


@contextlib.contextmanager
def dask_client(address: str):
    """A ``distributed.Client`` for ``address`` (``local:N`` or a scheduler address), closed afterwards.

    >>> with dask_client("local:2") as client:  # doctest: +SKIP
    ...     len(client.nthreads())
    2
    """
    with extra("dask", "Dask scale-out (dtlive.streaming.dask_driver)"):
        import dask
        from distributed import Client, LocalCluster

    n = _parse_local(address)
    if n is None:
        with Client(address) as client:
            yield client
        return
    with dask.config.set(WORKER_CONFIG), \
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


# ------------------------------------------------------------------ dtlive process --dask: the driver


@dataclass
class _Slot:
    """One group of partitions and the actor currently reading it."""

    partitions: list[int]
    start: dict[int, int]  # where the next actor for this slot starts
    positions: dict[int, int] = field(default_factory=dict)  # last reported
    restart: dict[int, int] = field(default_factory=dict)  # last reported lowest offset of its open windows
    holding: int | None = None  # lowest window its actor may still add to (None: it holds nothing back)
    done: bool = False
    future: Future | None = None  # the actor's future: keeps the actor alive
    actor: Any = None  # a dask Actor proxy of a PartitionActor: its methods return actor futures
    where: dict = field(default_factory=dict)
    restarts: int = 0


@dataclass
class _Pending:
    """A window some actor closed and the driver has not published yet."""

    shares: dict[int, Share] = field(default_factory=dict)  # slot -> share
    asked: dict[int, Request] | None = None  # slot -> request, once every actor has closed the window
    answers: dict[int, Answer] = field(default_factory=dict)
    ready: bool = False

    def restart_exchange(self) -> None:
        self.asked, self.answers, self.ready = None, {}, False


class DaskProcessor:
    """``dtlive process --dask``: the input's partitions read, decoded and windowed by actors on Dask workers.

    The driver (this object) owns the exactly-once state: the one transactional publisher, the counts and
    dead letters reported by the actors, and per partition the offsets a restart must re-read from. It keeps
    one :meth:`~dtlive.streaming.dask_actor.PartitionActor.step` call in flight per actor (a new one as soon as a
    report is in, so no actor waits for a slower one), publishes meanwhile the windows every actor has closed and whose
    exchange is complete, merged with :func:`dtlive.core.products.merge`, and commits. A window's message
    equals the single processor's.

    An actor whose step fails (its worker died) is replaced: its shares of unpublished windows are dropped
    and a new actor re-reads its partitions from their restart offsets, skipping windows already published.
    The checkpoint has the single processor's form, so either kind of processor resumes the other's series.

    >>> with dask_client("local:2") as client:                                            # doctest: +SKIP
    ...     DaskProcessor(load_config({}), "127.0.0.1:9092", client).run(until_end=True).close()
    """

    def __init__(self, cfg: Config, bootstrap: str, client, from_beginning: bool = False, batch_size: int = BATCH_SIZE,
                 run_id: str | None = None, ledger=None, workers: int | None = None, step_seconds: float = 0.3,
                 step_timeout: float = 120.0):
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

        self.cfg, self.bootstrap, self.client = cfg, bootstrap, client
        self.batch_size, self.step_seconds, self.step_timeout = batch_size, step_seconds, step_timeout
        self.run_id = run_id or uuid.uuid4().hex[:12]
        producer, ckpt = open_producer(cfg, bootstrap)
        self.resumed = ckpt is not None
        ckpt = ckpt or Checkpoint()
        # in the processor's group: its metadata goes with the offsets committed in each transaction
        self.consumer = Consumer(consumer_config(cfg, bootstrap, group_id=cfg.group_id, from_beginning=from_beginning))
        meta = self.consumer.list_topics(cfg.hits_topic, timeout=15).topics.get(cfg.hits_topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise RuntimeError(f"topic {cfg.hits_topic!r} is not available on {bootstrap}")
        partitions = sorted(meta.partitions)
        reset = OFFSET_BEGINNING if from_beginning else OFFSET_END
        if self.resumed:  # our own committed state, not the group offsets (see Processor)
            known = dict(ckpt.restart_offsets)
        else:
            got = self.consumer.committed([TopicPartition(cfg.hits_topic, p) for p in partitions], timeout=15)
            known = {tp.partition: tp.offset for tp in got if tp.offset >= 0}
        self.start_offsets = {p: known.get(p, reset) for p in partitions}
        resume = ckpt.positions
        self.published_through = ckpt.last_window
        self.window_orbits = det.orbits_for_seconds(cfg.window_s)
        self.orbit_epoch = ckpt.orbit_epoch
        self.counts = Counter(ckpt.pending_counts)
        self.rejects: list = []
        self.settings = Settings.from_config(cfg)
        self.pending: dict[int, _Pending] = {}
        n = max(1, min(workers or len(client.nthreads()), len(partitions)))
        self.slots = []
        for i in range(n):
            mine = partitions[i::n]
            self.slots.append(_Slot(mine, {p: self.start_offsets[p] for p in mine},
                                    positions={p: resume[p] for p in mine if p in resume},
                                    holding=self.published_through + 1))  # all, until its first report
        self.publisher = TransactionalPublisher(cfg, bootstrap, run_provenance(cfg, self.run_id), producer, self,
                                                on_recover=lambda: self.follow_broker(force=True))
        self.cluster = ClusterWatch.of(cfg, bootstrap, every_s=cfg.idle_s)
        self.input_restarts = 0
        self.messages = 0
        self.lost_actors = 0
        self.targets: dict[int, int] | None = None
        self._stop = False
        self.heartbeat = Heartbeat("dask-processor", cfg, bootstrap, run_id=self.run_id, watch=HEALTH_LOGGERS)
        self._start(list(range(n)))
        self.ledger = ledger
        self.run_keeper = processing_run(ledger, self.run_id, cfg, self.start_offsets)

    # -------------------------------------------------------------- actors

    def _start(self, indices: list[int], timeout: float = 60.0) -> None:
        """Start an actor for each slot in ``indices`` (spread over workers not busy with another slot)."""
        from dtlive.streaming.dask_actor import PartitionActor

        deadline = time.monotonic() + timeout
        todo = list(indices)
        while todo:
            workers = sorted(self.client.scheduler_info()["workers"])
            busy = [s.where.get("address") for s in self.slots if s.actor is not None]
            free = [w for w in workers if w not in busy] or workers
            futures = {}
            for k, i in enumerate(todo):
                s = self.slots[i]
                futures[i] = self.client.submit(
                    PartitionActor, self.cfg, self.bootstrap, s.partitions, s.start, s.positions,
                    self.published_through, self.orbit_epoch, self.batch_size, actor=True, pure=False,
                    workers=[free[k % len(free)]] if free else None, allow_other_workers=True)
            for i, fut in futures.items():
                s = self.slots[i]
                try:
                    s.actor = fut.result(timeout=max(1.0, deadline - time.monotonic()))
                    s.where = s.actor.where().result(timeout=max(1.0, deadline - time.monotonic()))
                    s.future = fut
                    todo.remove(i)
                    log.info("partitions %s: actor on %s (pid %s)", s.partitions, s.where.get("address"),
                             s.where.get("pid"))
                except Exception:  # noqa: BLE001 - a worker may be restarting: try again on another
                    if time.monotonic() > deadline:
                        raise
                    log.warning("starting the actor of partitions %s failed; retrying", s.partitions, exc_info=True)
                    s.actor = None
                    time.sleep(0.5)

    def _replace(self, indices: list[int]) -> None:
        """Actors lost: drop their shares of unpublished windows, re-read their partitions from restart offsets."""
        for i in indices:
            s = self.slots[i]
            restart = self.commit_offsets(i)  # before the shares go: they hold the lowest offsets
            s.start = {p: restart.get(p, self.start_offsets[p]) for p in s.partitions}
            for pw in self.pending.values():
                pw.shares.pop(i, None)
            s.actor = s.future = None
            s.holding, s.done, s.restarts = self.published_through + 1, False, s.restarts + 1
            self.lost_actors += 1
            log.warning("actor of partitions %s lost (worker %s); re-reading from %s", s.partitions,
                        s.where.get("address"), s.start)
        for wid in [w for w, pw in self.pending.items() if not pw.shares]:
            del self.pending[wid]
        for pw in self.pending.values():  # the merged tables may change: ask again once all shares are back
            pw.restart_exchange()
        self._start(indices)

    def follow_broker(self, now: float | None = None, force: bool = False) -> bool:
        """When the broker was replaced (it restarted empty), every actor reads its partitions again from their
        beginning, as the single processor does. Asked at most once per ``idle_s``, and whenever the publisher
        needed a new producer. True if the input was restarted."""
        from confluent_kafka import OFFSET_BEGINNING

        if not self.cluster.replaced(now, force=force):
            return False
        log.warning("dask processor %r: the broker at %s lost its topics (restarted?); creating them again and "
                    "reading %s from its beginning", self.cfg.group_id, self.bootstrap, self.cfg.hits_topic)
        self.publisher.broker_replaced()
        for s in self.slots:  # an actor started later reads the new topic from its beginning too
            s.start, s.positions, s.restart = {p: OFFSET_BEGINNING for p in s.partitions}, {}, {}
        for pw in self.pending.values():  # offsets in the old topic mean nothing in the new one
            for sh in pw.shares.values():
                sh.inputs = {}
        calls = [s.actor.read_input_again() for s in self.slots if s.actor is not None]
        for call in calls:
            call.result(timeout=60)
        self.input_restarts += 1
        return True

    # -------------------------------------------------------------- the loop

    def stop(self, *_):
        self._stop = True

    def run(self, until_end: bool = False, max_seconds: float | None = None,
            on_tick: Callable[[DaskProcessor], None] | None = None) -> DaskProcessor:
        """Process until stopped (or, with ``until_end``, until the input's end at start is reached)."""
        if until_end:
            ends = partition_ends(self.cfg, self.bootstrap, self.cfg.hits_topic)
            self.targets = {p: high for p, (_, high) in ends.items()}
        started = time.monotonic()
        last_tick = 0.0
        calls: dict[int, tuple[BaseActorFuture, float]] = {}  # slot -> its step call in flight, and when it was made
        while not self._stop:
            lost = []
            for i, s in enumerate(self.slots):  # each actor steps again as soon as its last report is in
                if i not in calls and (not s.done or self._requests(i)):
                    targets = None if self.targets is None else {p: self.targets.get(p, 0) for p in s.partitions}
                    try:
                        calls[i] = (s.actor.step(self.published_through, self._requests(i), targets,
                                                 self.step_seconds), time.monotonic())
                    except Exception:  # noqa: BLE001 - its worker died between two steps: replace the actor
                        log.exception("the actor of partitions %s is gone", s.partitions)
                        lost.append(i)
            self._publish_ready()  # while the actors consume
            if self.publisher.due():  # at once for a new window, else every commit interval
                self.publisher.commit()
            for i in self._finished(calls):
                call, _ = calls.pop(i)
                try:
                    self._ingest(i, call.result(timeout=1.0))  # ended, or outlived step_timeout
                except Exception:  # noqa: BLE001 - the worker died (or the actor broke): replace the actor
                    log.exception("step of the actor of partitions %s failed", self.slots[i].partitions)
                    lost.append(i)
            if lost:
                self._replace(lost)
            self._plan()
            now = time.monotonic()
            if self.targets is not None and all(s.done for s in self.slots) and \
                    all(pw.ready for pw in self.pending.values()):
                break
            if on_tick and now - last_tick >= 1.0:
                on_tick(self)
                last_tick = now
            self.heartbeat.maybe(now, self.health)
            self.follow_broker(now)
            if max_seconds is not None and now - started > max_seconds:
                break
        for call, _ in calls.values():  # let the last steps end before the actors are closed
            with contextlib.suppress(Exception):
                call.result(timeout=self.step_timeout)
        self._publish_ready()
        self.publisher.commit()
        return self

    def _finished(self, calls: dict[int, tuple[BaseActorFuture, float]]) -> list[int]:
        """The slots whose step call has ended (or outlived ``step_timeout``); waits until there is one."""
        if not calls:
            time.sleep(0.01)
            return []
        while True:
            now = time.monotonic()
            ended = [i for i, (call, made) in calls.items() if call.done() or now - made > self.step_timeout]
            if ended:
                return ended
            time.sleep(0.002)

    def _requests(self, i: int) -> dict[int, Request]:
        """The questions for slot ``i`` not answered yet (sent with each of its steps until answered)."""
        return {wid: pw.asked[i] for wid, pw in self.pending.items()
                if pw.asked is not None and i in pw.asked and i not in pw.answers}

    def _ingest(self, i: int, rep: Report) -> None:
        s = self.slots[i]
        s.positions.update(rep.positions)
        s.restart, s.holding, s.done = rep.restart, rep.holding, rep.done
        self.messages += rep.messages
        self.counts.update(rep.counts)
        self.rejects += rep.rejects
        for wid, sh in rep.shares.items():
            if wid <= self.published_through:  # closed by an actor that was idle while the others moved on
                n = sh.partial.hits
                self.counts.update({"late_hits": n, "rejected.late": n})
                log.warning("%d hits of window %d arrived after it was published: counted late", n, wid)
                continue
            pw = self.pending.setdefault(wid, _Pending())
            pw.shares[i] = sh
            pw.restart_exchange()
        for wid, ans in rep.answers.items():
            pending = self.pending.get(wid)
            if pending is not None and pending.asked is not None and i in pending.asked:
                pending.answers[i] = ans

    def _plan(self) -> None:
        """Start the exchange of every window all actors have closed; mark the windows ready to publish."""
        floor = min((s.holding for s in self.slots if s.holding is not None), default=None)
        for wid in sorted(self.pending):
            pw = self.pending[wid]
            if floor is not None and wid >= floor:
                pw.ready = False
                continue
            if pw.asked is None:
                pw.asked = plan_requests({i: sh.partial for i, sh in pw.shares.items()}, self.settings)
            pw.ready = all(i in pw.answers for i in pw.asked)

    def _publish_ready(self) -> None:
        while self.pending:
            wid = min(self.pending)
            if not self.pending[wid].ready:
                return
            self._publish(wid, self.pending.pop(wid))

    def _publish(self, wid: int, pw: _Pending) -> None:
        shares = [pw.shares[i] for i in sorted(pw.shares)]
        arrays = merge([sh.partial for sh in shares], [pw.answers[i] for i in sorted(pw.answers)], self.settings)
        if self.orbit_epoch is None:
            self.orbit_epoch = next((sh.orbit_epoch for sh in shares if sh.orbit_epoch is not None), None)
        inputs: dict[int, tuple[int, int]] = {}
        for sh in shares:
            inputs.update(sh.inputs)  # the slots' partitions are disjoint
        self.published_through = wid
        counts, self.counts = self.counts, Counter()
        rejects, self.rejects = self.rejects, []
        window = Window(wid, wid * self.window_orbits, (wid + 1) * self.window_orbits - 1, Rows.empty(), inputs,
                        meta={"counts": counts, "rejects": rejects, "orbit_epoch": self.orbit_epoch,
                              "positions": self.positions(), "restart_offsets": self.commit_offsets()})
        self.publisher.publish(window, window_message(window, self.settings.drift_edges, self.publisher.provenance,
                                                      arrays))

    # -------------------------------------------------------------- StreamState: what each transaction commits

    def positions(self) -> dict[int, int]:
        """Per partition, the next offset the actors have accounted for."""
        return {p: o for s in self.slots for p, o in s.positions.items()}

    def commit_offsets(self, slot: int | None = None) -> dict[int, int]:
        """Per partition (of one slot, or all), the offset from which a restart must re-read to lose nothing."""
        out: dict[int, int] = {}
        for i, s in enumerate(self.slots):
            if slot is not None and i != slot:
                continue
            low = dict(s.restart)
            for pw in self.pending.values():
                sh = pw.shares.get(i)
                for p, (first, _) in (sh.inputs.items() if sh is not None else ()):
                    low[p] = min(first, low.get(p, first))
            out.update(low)
        return out

    def checkpoint(self) -> tuple[Checkpoint, list]:
        """The state to commit (the single processor's checkpoint) and the dead letters to write (drained)."""
        rejects, self.rejects = self.rejects, []
        state = Checkpoint(last_window=self.published_through, window_orbits=self.window_orbits,
                           positions=self.positions(), restart_offsets=self.commit_offsets(),
                           pending_counts=dict(self.counts), orbit_epoch=self.orbit_epoch)
        return state, rejects

    def consumer_group_metadata(self) -> object:
        """The driver's consumer's group metadata: the offsets committed in each transaction go to its group."""
        return self.consumer.consumer_group_metadata()

    def health(self) -> dict:
        """Heartbeat fields (:mod:`dtlive.kafka.health`): state, input lag per partition, running totals, actors."""
        from confluent_kafka import TopicPartition

        positions, high = self.positions(), {}
        for p in sorted({p for s in self.slots for p in s.partitions}):
            try:  # the driver's consumer is not assigned: ask the broker, briefly
                high[p] = self.consumer.get_watermark_offsets(TopicPartition(self.cfg.hits_topic, p), timeout=0.5)[1]
            except Exception:  # noqa: BLE001 - the broker is away: no lag for this partition
                continue
        lag = partition_lag(high, positions, topic=self.cfg.hits_topic)
        lost = self.lost_actors > getattr(self, "_lost_seen", 0)
        self._lost_seen = self.lost_actors
        return {
            "state": "degraded" if lost or len(high) < sum(len(s.partitions) for s in self.slots) else "running",
            "lag": lag,
            "counts": {"messages": self.messages, "windows": self.publisher.published,
                       "dead_letters": self.publisher.dead_lettered},
            "errors": {"lost_actors": self.lost_actors},
            "detail": {"input": self.cfg.hits_topic, "output": self.cfg.monitor_topic, "group_id": self.cfg.group_id,
                       "last_window": self.published_through, "actors": len(self.slots)},
        }

    def close(self, status: str = "finished") -> None:
        self.heartbeat.close(fields=self.health)
        for s in self.slots:
            with contextlib.suppress(Exception):
                s.actor.close().result(timeout=10)
            s.actor = s.future = None
        self.consumer.close()
        self.publisher.producer.flush(10)
        if self.run_keeper is not None:
            self.run_keeper.stop(status)
