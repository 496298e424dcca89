r"""``dtlive replay``: DAQ CSV files straight into windows -> result messages -> history store, without Kafka.

The files (local paths or fsspec URLs such as ``s3://...``) are read in the given order as one stream, in
pieces of about ``piece_bytes`` cut at line boundaries (:func:`plan_pieces`, :func:`read_piece`); piece k is
message k of partition 0, so a window's provenance says which pieces fed it.

* In one process (no Dask client) the pieces go through the processor's own nodes:
  decode -> clean -> event-time windows -> :func:`~dtlive.streaming.nodes.window_message`.
* With a ``distributed.Client`` (``replay(..., client=client)``) every worker reads, decodes and cleans its pieces
  itself, so nothing per hit crosses the network. The driver replays the windows' bookkeeping on small
  per-piece summaries (:class:`WindowPlan`: which rows are late, which windows close after which piece,
  which counts go with them); the workers compute the products of each window that lies in one piece and
  the products' shares (:mod:`dtlive.core.products`) of each window that spans pieces; the driver merges those.
  The messages equal the one-process replay's (tests/streaming/test_replay.py).

>>> import pathlib, tempfile
>>> from dtlive.config import load_config
>>> from dtlive.storage.history import HistoryStore
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "hits.csv").write_bytes(b"HEAD,FPGA,TDC_CHANNEL,ORBIT_CNT,BX_COUNTER,TDC_MEAS\n"
...                                        b"2,0,1,100,5,6\n2,1,3,100,7,8\n")
>>> [(p.start, p.end) for p in plan_pieces([str(folder / "hits.csv")], piece_bytes=40)]
[(0, 40), (40, 80)]
>>> summary = replay([str(folder / "hits.csv")], load_config({}, env={}), store=HistoryStore(folder / "history"))
>>> summary["pieces"], summary["windows"], summary["hits"]
(1, 1, 2)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
from streamz import Stream

from dtlive.config import Config
from dtlive.core import detector as det
from dtlive.core.products import Answer, Kept, Partial, Request, Settings, answer, compute, merge, plan_requests, share
from dtlive.core.rows import Rows
from dtlive.core.windows import Window, WindowBook
from dtlive.streaming.graph import hit_graph, window_graph
from dtlive.streaming.nodes import Batch, Decoded, window_message

log = logging.getLogger(__name__)

PIECE_BYTES = 4 << 20  # ~150k CSV rows: a piece is the unit of work of a worker
PAYLOAD_BYTES = 1 << 20  # a piece is decoded as payloads of about this size (one bad line spoils no more)


# ------------------------------------------------------------------ pieces of files


@dataclass(frozen=True)
class Piece:
    """The lines of ``path`` that start in bytes ``[start, end)``; ``index``: its place in the whole replay.

    >>> p = Piece("run591.csv", start=0, end=4 << 20, index=0)
    >>> p.end - p.start, p.index
    (4194304, 0)
    """

    path: str
    start: int
    end: int
    index: int


def plan_pieces(paths: Iterable[str], piece_bytes: int = PIECE_BYTES) -> list[Piece]:
    """Cut the files into pieces of ``piece_bytes`` (the last of each file shorter), in order.

    Raises ``FileNotFoundError`` for a file that is not there (before anything is processed).

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "hits.csv"
    >>> _ = path.write_bytes(b"2,0,1,100,5,6\\n" * 10)  # 140 bytes
    >>> [(p.start, p.end, p.index) for p in plan_pieces([str(path), str(path)], piece_bytes=100)]
    [(0, 100, 0), (100, 140, 1), (0, 100, 2), (100, 140, 3)]
    """
    import fsspec

    if piece_bytes < 1:
        raise ValueError("piece_bytes must be >= 1")
    pieces: list[Piece] = []
    for path in paths:
        fs, local = fsspec.core.url_to_fs(path)
        size = int(fs.size(local))
        for start in range(0, max(size, 1), piece_bytes):
            pieces.append(Piece(path, start, min(start + piece_bytes, size), len(pieces)))
    return pieces


def read_piece(piece: Piece) -> bytes:
    """The piece's lines (a line belongs to the piece its first byte is in; the last one is completed).

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "hits.csv"
    >>> _ = path.write_bytes(b"2,0,1,100,5,6\\r\\n2,0,2,100,5,6\\r\\n2,0,3,100,5,6\\r\\n")
    >>> [read_piece(p) for p in plan_pieces([str(path)], piece_bytes=20)]  # a line goes with the piece it starts in
    [b'2,0,1,100,5,6\\n2,0,2,100,5,6\\n', b'2,0,3,100,5,6\\n', b'']
    """
    import fsspec

    with fsspec.open(piece.path, "rb") as f:
        skip = piece.start > 0  # read one byte early: was the line before us complete?
        f.seek(piece.start - skip)
        data = f.read(piece.end - piece.start + skip)
        if skip:
            nl = data.find(b"\n")
            if nl < 0:  # the whole piece lies inside a line that began in an earlier piece
                return b""
            data = data[nl + 1 :]
        if data and not data.endswith(b"\n"):  # our last line runs on past ``end``: read it to its end
            tail = [data]
            while chunk := f.read(64 * 1024):
                nl = chunk.find(b"\n")
                tail.append(chunk if nl < 0 else chunk[: nl + 1])
                if nl >= 0:
                    break
            data = b"".join(tail)
    return data.replace(b"\r\n", b"\n")


def split_payloads(data: bytes, size: int = PAYLOAD_BYTES) -> list[bytes]:
    """``data`` in payloads of about ``size`` bytes, cut after a newline.

    >>> split_payloads(b"a\\nbb\\nc\\n", 3)
    [b'a\\n', b'bb\\n', b'c\\n']
    """
    out, i, n = [], 0, len(data)
    while i < n:
        cut = min(i + size, n)
        if cut < n:
            nl = data.rfind(b"\n", i, cut)
            if nl < 0:
                nl = data.find(b"\n", cut)
            cut = n if nl < 0 else nl + 1
        out.append(data[i:cut])
        i = cut
    return out


def _piece_batch(piece: Piece, data: bytes, orbit_epoch: float | None = None) -> Batch:
    """The piece as a ``csv-batch`` :class:`~dtlive.streaming.nodes.Batch` of partition 0, offset ``piece.index``."""
    payloads = split_payloads(data)
    batch = Batch.from_payloads(payloads, "csv-batch", topic=piece.path, first_offset=piece.index,
                                orbit_epoch=orbit_epoch)
    batch.offsets = np.full(len(payloads), piece.index, np.int64)
    batch.positions = {0: piece.index + 1}
    return batch


def _decode_piece(piece: Piece, orbit_epoch: float | None = None) -> Decoded:
    """Read, decode and clean one piece (the processor's dt_decode_hits -> dt_clean_hits nodes)."""
    src = Stream()
    out: list[Decoded] = []
    hit_graph(src, default_format="csv-batch").sink(out.append)
    src.emit(_piece_batch(piece, read_piece(piece), orbit_epoch))
    return out[0]


# ------------------------------------------------------------------ one process


def _replay_local(pieces: list[Piece], cfg: Config, edges: np.ndarray, provenance: dict,
                  orbit_epoch: float | None, progress: Callable[[int], None]) -> list[dict]:
    src = Stream()
    # no holding back of far-ahead rows: the Dask replay's plan (WindowPlan) has none, and both give one result
    windows = window_graph(src, replace(cfg, max_orbit_jump_s=0), default_format="csv-batch")
    msgs: list[dict] = []
    windows.sink(lambda w: msgs.append(window_message(w, edges, provenance)))
    for piece in pieces:
        src.emit(_piece_batch(piece, read_piece(piece), orbit_epoch if piece.index == 0 else None))
        progress(piece.index + 1)
    windows.flush()
    return msgs


# ------------------------------------------------------------------ on Dask: the driver's window bookkeeping


@dataclass
class Summary:
    """What the driver needs of one decoded piece: its window ids and hits per id, no hits.

    >>> s = Summary(ids=np.array([3, 4]), hits=np.array([10, 2]), max_orbit=50_000,
    ...             counts=Counter(rows=14, ancillary=2), first_orbit=33_700, timestamp_ms=0)
    >>> plan = WindowPlan(window_orbits=11_223, lateness_orbits=0)
    >>> plan.add(0, s), [c.id for c in plan.closed]  # window 3 ends below the watermark (orbit 50,000)
    (-1, [3])
    """

    ids: np.ndarray  # sorted distinct window ids of its hits
    hits: np.ndarray  # hits per id
    max_orbit: int
    counts: Counter  # rows, ancillary, rejected.* (decode and clean)
    first_orbit: int | None  # of its first hit (for the provisional orbit epoch)
    timestamp_ms: int


@dataclass
class Closing:
    """A window the plan closed: the pieces with hits in it and the bookkeeping that goes with it.

    >>> plan = WindowPlan(window_orbits=100, lateness_orbits=0)
    >>> _ = plan.add(0, Summary(np.array([0]), np.array([5]), 99, Counter(rows=5), 0, 0))
    >>> _ = plan.add(1, Summary(np.array([0, 1]), np.array([1, 4]), 150, Counter(rows=5), 120, 0))
    >>> [(c.id, c.pieces, c.counts["rows"], c.positions, c.restart_offsets) for c in plan.closed]
    [(0, [0, 1], 10, {0: 2}, {0: 1})]
    """

    id: int
    pieces: list[int]
    counts: Counter
    positions: dict[int, int]
    restart_offsets: dict[int, int]


class WindowPlan:
    """The dt_event_windows node's bookkeeping replayed on piece summaries, in piece order (no hits).

    The same :class:`~dtlive.core.windows.WindowBook` as :class:`~dtlive.core.windows.EventTimeWindows`, holding piece
    numbers instead of rows, on one partition: hits of windows up to the last closed one are late; after
    each piece the windows whose last orbit is below the watermark close; the counts since the previous
    closed window go with the first window closed.

    >>> plan = WindowPlan(window_orbits=100, lateness_orbits=0)
    >>> s = lambda ids, top: Summary(np.array(ids), np.ones(len(ids), int), top, Counter(rows=len(ids)), 0, 0)
    >>> plan.add(0, s([0, 1], 150)), [c.id for c in plan.closed]
    (-1, [0])
    >>> plan.add(1, s([0, 2], 250)), [(c.id, c.pieces, c.counts["late_hits"]) for c in plan.closed]
    (0, [(1, [0], 1)])
    """

    def __init__(self, window_orbits: int, lateness_orbits: int):
        self.book: WindowBook[int] = WindowBook(window_orbits, lateness_orbits)
        self.counts: Counter = Counter()
        self.closed: list[Closing] = []  # of the last add()/flush()
        self._position = 0

    def add(self, index: int, s: Summary) -> int:
        """Account piece ``index``; return the last closed window before it (its hits up to it are late)."""
        before = self.book.last_closed
        self.counts.update(s.counts)
        self._position = index + 1
        self.closed = []
        if not len(s.ids):
            return before
        late = self.book.late(s.ids)
        n_late = int(s.hits[late].sum())
        if n_late:
            self.counts.update({"late_hits": n_late, "rejected.late": n_late})
        if not late.all():  # the highest orbit is a hit that is not late
            for wid in s.ids[~late].tolist():
                self.book.put(wid, index)
            self.book.saw(0, s.max_orbit)
        if self.book.watermark is not None:
            self._close(self.book.watermark)
        return before

    def flush(self) -> None:
        """Close every open window (the end of the input)."""
        self.closed = []
        self._close(None)

    def _close(self, watermark: int | None) -> None:
        for wid, pieces in self.book.close(watermark):
            counts, self.counts = self.counts, Counter()
            self.closed.append(Closing(wid, pieces, counts, {0: self._position}, {}))
        restart = min((p for ps in self.book.items.values() for p in ps), default=self._position)
        for c in self.closed:
            c.restart_offsets = {0: restart}


# ------------------------------------------------------------------ on Dask: the work on the workers


@dataclass
class _Loaded:
    """A decoded piece held on its worker."""

    hits: Rows
    ids: np.ndarray  # window id of each hit
    summary: Summary


@dataclass
class _Shared:
    """A piece's products, held on its worker: whole windows, and shares (with kept hits) of the others."""

    whole: dict[int, dict[str, np.ndarray]]
    partials: dict[int, Partial]
    kept: dict[int, Kept]


def _load_piece(piece: Piece, window_orbits: int) -> _Loaded:
    """Read, decode, clean and summarise a piece (on a worker)."""
    d = _decode_piece(piece)
    hits = d.rows
    ids = hits.orbit // window_orbits
    stamps = d.batch.timestamps_ms
    s = Summary(np.empty(0, np.int64), np.empty(0, np.int64), 0, d.counts, None, int(stamps[0]) if len(stamps) else 0)
    if len(hits):
        s.ids, s.hits = np.unique(ids, return_counts=True)
        s.max_orbit, s.first_orbit = int(hits.orbit.max()), int(hits.orbit[0])
    return _Loaded(hits, ids, s)


def _summary_of(loaded: _Loaded) -> Summary:
    return loaded.summary


def _share_piece(loaded: _Loaded, last_closed: int, whole: frozenset[int], settings: Settings) -> _Shared:
    """Drop the late hits; the products of the ``whole`` windows, shares of the others (on a worker)."""
    hits, ids = loaded.hits, loaded.ids
    keep = ids > last_closed
    if not keep.all():
        hits, ids = hits.select(keep), ids[keep]
    out = _Shared({}, {}, {})
    if not len(ids):
        return out
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    bounds = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        wid, rows = int(ids[a]), hits.select(order[a:b])
        if wid in whole:
            out.whole[wid] = compute(rows, settings)
        else:
            out.partials[wid], out.kept[wid] = share(rows, settings)
    return out


def _parts_of(shared: _Shared) -> tuple[dict[int, dict[str, np.ndarray]], dict[int, Partial]]:
    """What the driver needs of a piece's products (the kept hits stay on the worker)."""
    return shared.whole, shared.partials


def _answers_of(shared: _Shared, requests: dict[int, Request], settings: Settings) -> dict[int, Answer]:
    return {wid: answer(shared.kept[wid], r, settings) for wid, r in requests.items()}


# ------------------------------------------------------------------ on Dask: the driver


def _replay_on_dask(client, pieces: list[Piece], cfg: Config, settings: Settings, provenance: dict,
                   orbit_epoch: float | None = None, progress: Callable[[int], None] = lambda done: None,
                   group: int | None = None) -> list[dict]:
    """The one-process replay's messages, with reading, decoding and products on the client's workers.

    Pieces go in groups of ``group`` (default: 2 per worker thread), the next group loading while the driver
    plans the last, so that only a few pieces' hits are in the workers' memory at once; the shares of a
    window that spans groups wait on their workers.
    """
    window_orbits = det.orbits_for_seconds(cfg.window_s)
    plan = WindowPlan(window_orbits, int(round(cfg.lateness_s / det.ORBIT_S)))
    group = group or max(2, 2 * sum(client.nthreads().values()))
    shares: dict[int, dict[int, Partial]] = {}  # open window -> piece -> its share
    held: dict[int, object] = {}  # piece -> future of its _Shared on a worker, while a window it shares is open
    epoch = orbit_epoch
    msgs: list[dict] = []

    def publish(closing: list[Closing], whole: dict[int, dict[str, np.ndarray]]) -> None:
        asked: dict[int, dict[int, Request]] = {}  # piece -> window -> request
        for c in closing:
            if c.id not in whole:
                for i, r in plan_requests(shares[c.id], settings).items():
                    asked.setdefault(i, {})[c.id] = r
        futures = [client.submit(_answers_of, held[i], reqs, settings, pure=False) for i, reqs in asked.items()]
        answers = dict(zip(asked, client.gather(futures)))
        for c in closing:
            if c.id in whole:
                arrays = whole.pop(c.id)
            else:
                parts = shares.pop(c.id)
                answered = [answers[i][c.id] for i in parts if c.id in asked.get(i, {})]
                arrays = merge(list(parts.values()), answered, settings)
            window = Window(c.id, c.id * window_orbits, (c.id + 1) * window_orbits - 1, Rows.empty(),
                            {0: (min(c.pieces), max(c.pieces))},
                            meta={"counts": c.counts, "orbit_epoch": epoch, "positions": c.positions,
                                  "restart_offsets": c.restart_offsets})
            msgs.append(window_message(window, settings.drift_edges, provenance, arrays))
        still = {i for parts in shares.values() for i in parts}
        for i in [i for i in held if i not in still]:
            del held[i]

    def load(chunk: list[Piece]) -> list:
        return [client.submit(_load_piece, p, window_orbits, pure=False) for p in chunk]

    chunks = [pieces[g : g + group] for g in range(0, len(pieces), group)]
    upcoming = load(chunks[0]) if chunks else []
    for k, chunk in enumerate(chunks):
        loaded, upcoming = upcoming, load(chunks[k + 1]) if k + 1 < len(chunks) else []  # the next group meanwhile
        summaries = client.gather([client.submit(_summary_of, f, pure=False) for f in loaded])
        befores, closing = [], []
        for p, s in zip(chunk, summaries):
            if epoch is None and s.first_orbit is not None:  # as the dt_event_windows node: the first hit's batch
                epoch = s.timestamp_ms / 1000 - s.first_orbit * det.ORBIT_S
            befores.append(plan.add(p.index, s))
            closing += plan.closed
        whole_in = {p.index: frozenset(c.id for c in closing if c.pieces == [p.index]) for p in chunk}
        shared = [client.submit(_share_piece, f, b, whole_in[p.index], settings, pure=False)
                  for f, p, b in zip(loaded, chunk, befores)]
        del loaded
        whole: dict[int, dict[str, np.ndarray]] = {}
        parts = client.gather([client.submit(_parts_of, f, pure=False) for f in shared])
        for p, f, (w, partials) in zip(chunk, shared, parts):
            whole.update(w)
            for wid, partial in partials.items():
                shares.setdefault(wid, {})[p.index] = partial
                held[p.index] = f
        publish(closing, whole)
        progress(chunk[-1].index + 1)
    plan.flush()
    publish(plan.closed, {})
    return msgs


# ------------------------------------------------------------------ the command


def replay(paths: list[str], cfg: Config, client=None, ledger=None, store=None, run_id: str | None = None,
           orbit_epoch: float | None = None, piece_bytes: int = PIECE_BYTES,
           progress: Callable[[int, int], None] | None = None) -> dict:
    """CSV files straight into windows -> result messages -> the history store (and the run in the ledger).

    The files are read in the given order as one stream (one partition), so a later file's hits are late
    for windows an earlier one closed. With ``client`` (a ``distributed.Client``) reading, decoding and
    the products run on its workers (same messages). ``orbit_epoch`` (UNIX seconds of orbit 0) places the
    windows in UTC (default: the first hit is "now"). ``progress(done, total)`` is called after pieces.
    Returns a summary: run id, windows, hits, messages (the result messages themselves).

    >>> import pathlib, tempfile
    >>> from dtlive.config import load_config
    >>> from dtlive.storage.history import HistoryStore
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.csv").write_bytes(b"2,0,1,100,5,6\\n2,1,3,30000,7,8\\n")
    >>> _ = (folder / "b.csv").write_bytes(b"2,0,1,200,5,6\\n2,1,3,60000,7,8\\n")  # orbit 200: late
    >>> store = HistoryStore(folder / "history")
    >>> s = replay([str(folder / "a.csv"), str(folder / "b.csv")], load_config({}, env={}), store=store,
    ...            orbit_epoch=1.7e9)
    >>> s["pieces"], s["windows"], s["hits"], [m["counts"]["late_hits"] for m in s["messages"]]
    (2, 3, 3, [0, 1, 0])
    >>> store.load().window_id.values.tolist()
    [0, 1, 2]
    """
    from dtlive.storage.history import HistoryStore

    pieces = plan_pieces(paths, piece_bytes)
    run_id = run_id or uuid.uuid4().hex[:12]
    processor = f"replay-{run_id}"
    if ledger is not None:
        ledger.start_run("replay", cfg, inputs=[{"file": p} for p in paths], run_id=run_id, processor=processor)
    settings = Settings.from_config(cfg)
    provenance = {"topic": ",".join(paths), "config_hash": cfg.config_hash, "run_id": run_id, "processor": processor}
    store = store if store is not None else HistoryStore()
    done = (lambda n: progress(n, len(pieces))) if progress is not None else (lambda n: None)
    status = "failed"
    t0 = time.perf_counter()
    try:
        if client is None:
            msgs = _replay_local(pieces, cfg, settings.drift_edges, provenance, orbit_epoch, done)
        else:
            msgs = _replay_on_dask(client, pieces, cfg, settings, provenance, orbit_epoch, done)
        store.append(msgs)
        status = "finished"
    finally:
        if ledger is not None:
            ledger.stop_run(run_id, status=status)
    return {"run_id": run_id, "processor": processor, "pieces": len(pieces), "windows": len(msgs),
            "hits": int(sum(m["total_hits"] for m in msgs)), "seconds": round(time.perf_counter() - t0, 3),
            "messages": msgs}


def dumps(summary: dict) -> str:
    """The summary as one JSON line, without the messages.

    >>> dumps({"run_id": "r1", "windows": 2, "hits": 3, "messages": [{"total_hits": 3}]})
    '{"run_id": "r1", "windows": 2, "hits": 3}'
    """
    import json

    return json.dumps({k: v for k, v in summary.items() if k != "messages"})
