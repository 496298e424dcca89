"""Scale-out on Dask (issue #7): the same graph, its heavy steps on Dask workers; file replays without Kafka.

Design (chosen by measurement, see ``docs/scaling.md``): the driver keeps everything that carries
exactly-once state — the Kafka source, the event-time windows (cheap: slicing by orbit) and the
transactional publisher. Per consume call the batch is cut into one piece per worker and decoded +
cleaned there (:func:`decode_clean`, the very nodes of :mod:`dtlive.nodes`); the closed windows of the
call are turned into result messages there (:func:`dtlive.nodes.window_message`), all in parallel, and
published in window order before anything is committed (:meth:`DaskProcessor.settle`). Results are
therefore identical to a single-process run; only where the CPU time is spent changes.

``address``: ``local:N`` starts a ``LocalCluster`` of N single-threaded worker processes on loopback;
anything else is a scheduler address (``tcp://host:8786``).

>>> parse_local("local:3"), parse_local("tcp://10.0.0.1:8786")
(3, None)
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import replace

import numpy as np
from streamz import Stream

from dtlive import nodes as _nodes  # noqa: F401  (registers the node methods on Stream)
from dtlive.config import Config
from dtlive.nodes import Batch, Decoded, window_message
from dtlive.processor import Processor, drift_edges
from dtlive.rows import Rows
from dtlive.windows import Window

log = logging.getLogger(__name__)


def parse_local(address: str) -> int | None:
    """N of ``local:N`` (None for a scheduler address)."""
    if address.startswith("local"):
        _, _, n = address.partition(":")
        return max(1, int(n or 1))
    return None


@contextlib.contextmanager
def dask_client(address: str):
    """A ``distributed.Client`` for ``address`` (``local:N`` or a scheduler address), closed afterwards."""
    from distributed import Client, LocalCluster

    n = parse_local(address)
    if n is None:
        with Client(address) as client:
            yield client
        return
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


# ------------------------------------------------------------------ work done on the workers

_GRAPHS: dict = {}


def decode_clean(batch: Batch, default_format: str, resume: tuple) -> Decoded:
    """decode_hits -> clean_hits on one (piece of a) batch, on a worker; the payloads are not sent back."""
    key = (default_format, resume)
    if key not in _GRAPHS:
        src, out = Stream(), []
        src.decode_hits(default_format=default_format, resume=dict(resume)).clean_hits().sink(out.append)
        _GRAPHS[key] = (src, out)
    src, out = _GRAPHS[key]
    out.clear()
    src.emit(batch)
    d = out.pop()
    d.batch = None
    return d


def split_batch(batch: Batch, pieces: int) -> list[Batch]:
    """``pieces`` consecutive slices of a batch's messages (each keeps the epoch and the first timestamp)."""
    n = len(batch.payloads)
    bounds = np.linspace(0, n, min(pieces, max(n, 1)) + 1).astype(int)
    return [replace(batch, payloads=batch.payloads[a:b], formats=batch.formats[a:b],
                    partitions=batch.partitions[a:b], offsets=batch.offsets[a:b], positions={})
            for a, b in zip(bounds[:-1], bounds[1:])]


def merge_decoded(parts: list[Decoded], batch: Batch, resume: dict) -> Decoded:
    counts = Counter()
    for d in parts:
        counts.update(d.counts)
    return Decoded(Rows.concat([d.rows for d in parts]), [r for d in parts for r in d.rejects], counts, batch, resume)


def _light(window: Window) -> Window:
    """The window as sent to a worker: without its dead letters (they stay with the driver's publisher)."""
    return replace(window, meta={k: v for k, v in window.meta.items() if k != "rejects"})


@Stream.register_api()
class dask_decode(Stream):
    """Batch -> Decoded (hits only), decoded and cleaned on Dask workers in parallel pieces."""

    def __init__(self, upstream, client, default_format: str = "csv", resume: dict | None = None, **kwargs):
        self.client = client
        self.default_format = default_format
        self.resume = dict(resume or {})
        self._resume_key = tuple(sorted(self.resume.items()))
        self.pieces = max(1, len(client.nthreads()))
        self.errors = 0
        super().__init__(upstream, **kwargs)

    def update(self, batch: Batch, who=None, metadata=None):
        futures = self.client.map(decode_clean, split_batch(batch, self.pieces), default_format=self.default_format,
                                  resume=self._resume_key, pure=False)
        parts = self.client.gather(futures)
        return self._emit(merge_decoded(parts, batch, self.resume))


class WindowsOnDask:
    """Collects closed windows and turns them into result messages on the workers, all at once."""

    def __init__(self, client, edges: np.ndarray, provenance: dict):
        self.client, self.edges, self.provenance = client, edges, provenance
        self.pending: list[tuple[Window, object]] = []

    def submit(self, window: Window) -> None:
        fut = self.client.submit(window_message, _light(window), self.edges, self.provenance, pure=False)
        self.pending.append((window, fut))

    def results(self) -> list[tuple[Window, dict]]:
        """The collected windows with their messages, in window order; empties the collection."""
        pending, self.pending = self.pending, []
        msgs = self.client.gather([f for _, f in pending]) if pending else []
        return [(w, m) for (w, _), m in zip(pending, msgs)]


class DaskProcessor(Processor):
    """``dtlive process --dask``: :class:`~dtlive.processor.Processor` with decode and histograms on Dask."""

    def __init__(self, cfg: Config, bootstrap: str, client, **kwargs):
        super().__init__(cfg, bootstrap, **kwargs)
        self.client = client
        # rewire: source -> dask_decode -> event_windows -> WindowsOnDask (published by settle())
        decode = next(iter(self.source.downstreams))
        clean = next(iter(self.windows.upstreams))
        clean.disconnect(self.windows)
        self.source.disconnect(decode)
        for sink in list(self.windows.downstreams):
            self.windows.disconnect(sink)
        self.source.dask_decode(client, default_format=cfg.default_format, resume=decode.resume).connect(self.windows)
        self.remote = WindowsOnDask(client, self.publisher.edges, self.publisher.provenance)
        self.windows.sink(self.remote.submit)

    def settle(self) -> None:
        for window, msg in self.remote.results():
            self.publisher.publish(window, msg)


# ------------------------------------------------------------------ dtlive replay: files -> windows, no Kafka


def file_batches(path: str, partition: int = 0, lines_per_payload: int = 50_000, messages: int = 8):
    """Batches of ``csv-batch`` payloads of one CSV file (local path or fsspec URL)."""
    import fsspec

    with fsspec.open(path, "rb") as f:
        lines = f.read().replace(b"\r\n", b"\n").split(b"\n")
    payloads = [b"\n".join(lines[i : i + lines_per_payload]) for i in range(0, len(lines), lines_per_payload)]
    for i in range(0, len(payloads), messages):
        yield Batch.from_payloads(payloads[i : i + messages], "csv-batch", topic=path, partition=partition,
                                  first_offset=i, orbit_epoch=None)


def replay(paths: list[str], cfg: Config, client=None, ledger=None, store=None, run_id: str | None = None,
           orbit_epoch: float | None = None) -> dict:
    """CSV files straight into windows -> result messages -> the history store (and the run in the ledger).

    The files are read in the given order as one stream (one partition), so later files continue the
    event time of earlier ones. With ``client`` (a ``distributed.Client``) decoding and histograms run on
    its workers. ``orbit_epoch`` (UNIX seconds of orbit 0) places the windows in UTC (default: the first
    hit is "now"). Returns a summary: run id, windows, hits, messages (the result messages themselves).
    """
    from dtlive.history import HistoryStore

    run_id = run_id or uuid.uuid4().hex[:12]
    processor = f"replay-{run_id}"
    if ledger is not None:
        ledger.start_run("replay", cfg, inputs=[{"file": p} for p in paths], run_id=run_id, processor=processor)
    edges = drift_edges(cfg)
    provenance = {"topic": ",".join(paths), "config_hash": cfg.config_hash, "run_id": run_id, "processor": processor}
    src = Stream()
    decoded = src.dask_decode(client, default_format="csv-batch") if client is not None else \
        src.decode_hits(default_format="csv-batch").clean_hits()
    windows = decoded.event_windows(window_s=cfg.window_s, lateness_s=cfg.lateness_s, idle_s=cfg.idle_s)
    collected: list[Window] = []
    windows.sink(collected.append)
    store = store if store is not None else HistoryStore()
    msgs: list[dict] = []
    status = "failed"

    def publish():
        if client is not None:
            remote = WindowsOnDask(client, edges, provenance)
            for w in collected:
                remote.submit(w)
            msgs.extend(m for _, m in remote.results())
        else:
            msgs.extend(window_message(w, edges, provenance) for w in collected)
        collected.clear()

    t0 = time.perf_counter()
    try:
        first = True
        for path in paths:
            for batch in file_batches(path):
                if first:
                    batch.orbit_epoch, first = orbit_epoch, False
                src.emit(batch)
                publish()
        windows.flush()
        publish()
        store.append(msgs)
        status = "finished"
    finally:
        if ledger is not None:
            ledger.stop_run(run_id, status=status)
    return {"run_id": run_id, "processor": processor, "windows": len(msgs),
            "hits": int(sum(m["total_hits"] for m in msgs)), "seconds": round(time.perf_counter() - t0, 3),
            "messages": msgs}


def dumps(summary: dict) -> str:
    return json.dumps({k: v for k, v in summary.items() if k != "messages"})
