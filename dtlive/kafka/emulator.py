r"""``dtlive emulate``: replay DAQ files, or the simulator, onto Kafka at a steady rate.

Rows are paced against a wall-clock schedule (row ``i`` is due at ``t0 + i / rate``),
so the achieved rate stays within ~1 % whatever the message format. Every message
carries the ``format`` header; the first message of every chunk also carries the
``orbit_epoch`` header (UNIX seconds of orbit 0, chosen so the first replayed hit is "now").

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "run.csv"
>>> _ = path.write_text("HEAD,FPGA,TDC_CHANNEL,ORBIT_CNT,BX_COUNTER,TDC_MEAS\n2,0,5,100,7,3\n2,1,70,101,0,0\n")
>>> chunk = next(file_chunks([str(path)], loop=False))
>>> len(chunk.rows), chunk.raw_lines is not None
(2, True)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dtlive.core import detector as det
from dtlive.core.decode import FORMATS, decode, encode_csv, encode_daq64
from dtlive.core.messages import EPOCH_HEADER, FORMAT_HEADER
from dtlive.core.rows import Rows


@dataclass
class Chunk:
    """Rows to send; for a file's first pass also its original CSV lines (sent as they are).

    >>> rows = Rows.from_columns(head=[2, 2], fpga=[0, 1], channel=[5, 70], orbit=[100, 101], bx=[7, 0], tdc=[3, 0])
    >>> len(Chunk(rows)), len(Chunk(rows, [b"2,0,5,100,7,3"]))  # the lines as read, when there are any
    (2, 1)
    """

    rows: Rows
    raw_lines: list[bytes] | None = None

    def __len__(self) -> int:
        return len(self.raw_lines) if self.raw_lines is not None else len(self.rows)


class DataFileError(ValueError):
    """A file that cannot be replayed: missing, unreadable, or holding no DAQ rows (the message says which).

    >>> try:
    ...     read_data_file("/no/such/run.csv")
    ... except DataFileError as e:
    ...     print(e)
    no such file: /no/such/run.csv
    """


def read_data_file(path: str) -> tuple[list[bytes], Rows]:
    r"""The CSV lines of a DAQ file (header and blank lines left out) and the rows they decode to.

    Raises :class:`DataFileError` with one clear sentence for a file that is missing or unreadable, empty,
    has other columns, or holds no line that decodes to a DAQ row.

    >>> import pathlib, tempfile
    >>> junk = pathlib.Path(tempfile.mkdtemp()) / "junk.csv"
    >>> _ = junk.write_bytes(b"name,value\nx,1\n")
    >>> try:
    ...     read_data_file(str(junk))
    ... except DataFileError as e:
    ...     print(str(e).split(" has ")[1])
    the columns 'name,value', not HEAD,FPGA,TDC_CHANNEL,ORBIT_CNT,BX_COUNTER,TDC_MEAS
    """
    import fsspec

    try:
        with fsspec.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataFileError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise DataFileError(f"{path} is a directory, not a DAQ CSV file") from None
    except (OSError, ImportError, ValueError) as e:
        raise DataFileError(f"cannot read {path}: {e}") from None
    lines = [ln.strip() for ln in data.replace(b"\r\n", b"\n").split(b"\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DataFileError(f"{path} is empty: no DAQ rows to send")
    first = lines[0]
    columns = first.replace(b" ", b"").upper()
    if first[:1].isalpha() and b"," in first and first.isascii() and columns != det.CSV_HEADER.encode():
        shown = first[:60].decode(errors="replace")
        raise DataFileError(f"{path} has the columns {shown!r}, not {det.CSV_HEADER}")
    lines = [ln for ln in lines if not ln.upper().startswith(b"HEAD")]
    decoded = decode(lines, "csv")
    if not len(decoded.rows):
        why = ", ".join(f"{n} {reason}" for reason, n in Counter(r.reason for r in decoded.rejects).most_common(3))
        raise DataFileError(f"{path} holds no DAQ rows: none of its {len(lines)} lines decodes ({why or 'none'})")
    return lines, decoded.rows


class FileChunks:
    """Chunks of the given CSV files (local paths or fsspec URLs), optionally looping forever (an iterator).

    The files are read and checked at once (:func:`read_data_file`; a bad file raises
    :class:`DataFileError` before anything is sent); ``rows`` is how many rows one pass sends. On every
    further pass the orbits are shifted past the end of the previous pass so event time keeps increasing.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.csv"
    >>> _ = path.write_text("2,0,5,100,7,3\\n2,1,70,101,0,0\\n2,1,71,102,0,0\\n")
    >>> chunks = FileChunks([str(path)], loop=True, chunk_rows=2)
    >>> chunks.rows, [c.rows.orbit.tolist() for c in (next(chunks), next(chunks))]
    (3, [[100, 101], [102]])
    >>> next(chunks).rows.orbit.tolist()  # the second pass: 102 - 100 orbits and 5 s (56117 orbits) later
    [56219, 56220]
    """

    def __init__(self, paths: list[str], loop: bool = False, chunk_rows: int = 50_000):
        loaded = [read_data_file(path) for path in paths]
        self.rows = sum(len(rows) for _, rows in loaded)
        self.loop = loop
        self._chunks = _chunks(loaded, loop, chunk_rows)

    def __iter__(self) -> FileChunks:
        return self

    def __next__(self) -> Chunk:
        return next(self._chunks)


def file_chunks(paths: list[str], loop: bool = False, chunk_rows: int = 50_000) -> FileChunks:
    """The :class:`FileChunks` of ``paths``.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.csv"
    >>> _ = path.write_text("HEAD,FPGA,TDC_CHANNEL,ORBIT_CNT,BX_COUNTER,TDC_MEAS\\n2,0,5,100,7,3\\n")
    >>> [c.raw_lines for c in file_chunks([str(path)])]
    [[b'2,0,5,100,7,3']]
    """
    return FileChunks(paths, loop, chunk_rows)


def _chunks(loaded: list[tuple[list[bytes], Rows]], loop: bool, chunk_rows: int) -> Iterator[Chunk]:
    if not loaded:
        return
    first = min(int(r.orbit.min()) for _, r in loaded if len(r))
    span = max(int(r.orbit.max()) for _, r in loaded if len(r)) - first + det.orbits_for_seconds(5)
    shift = 0
    while True:
        for lines, rows in loaded:
            for i in range(0, max(len(lines), 1), chunk_rows):
                if shift == 0:
                    yield Chunk(rows.select(slice(i, i + chunk_rows)), lines[i : i + chunk_rows])
                else:
                    part = rows.select(slice(i, i + chunk_rows))
                    yield Chunk(Rows(**{**part.__dict__, "orbit": part.orbit + shift}))
        if not loop:
            return
        shift += span


def clock_orbit(now: float | None = None) -> int:
    """The orbit counter of a DAQ whose counter started at 00:00 UTC today (it fits the 32-bit counter).

    A simulated DAQ that starts there continues, after a restart, where the wall clock is: its orbits never go
    back, so a processor that saw the earlier hits counts none of the new ones as late.

    >>> clock_orbit(86_400 * 20_000 + 3600) == round(3600 / det.ORBIT_S)
    True
    """
    now = time.time() if now is None else now
    return int(round((now % 86_400) / det.ORBIT_S))


def simulated_chunks(seed: int = 0, chunk_s: float = 1.0, rows_per_s: float | None = None,
                     start_orbit: int | None = None) -> Iterator[Chunk]:
    """Endless chunks from the cosmic-muon simulator.

    With ``rows_per_s`` the simulated rates (muons, noise, ancillary words) are scaled together so
    the detector produces that many rows per second of event time: replayed at the same rate, event
    time then keeps pace with the wall clock (a quieter or busier telescope, same shapes).
    ``start_orbit``: the first orbit (default the simulator's; :func:`clock_orbit` for a live stream).

    >>> chunks = simulated_chunks(seed=1, chunk_s=0.01, rows_per_s=2000, start_orbit=1000)
    >>> first = next(chunks)
    >>> int(first.rows.orbit.min()) >= 1000, 5 < len(first) < 60  # about 20 rows in 10 ms of event time
    (True, True)
    """
    from dataclasses import replace

    from dtlive.core.simulate import SimConfig, stream

    config = SimConfig()
    if rows_per_s is not None:
        natural = config.hit_rate_hz + det.N_FPGA * config.ancillary_rate_hz * len(det.ANCILLARY_HEADS)
        f = rows_per_s / natural
        config = replace(config, hit_rate_hz=config.hit_rate_hz * f, muon_rate_hz=config.muon_rate_hz * f,
                         ancillary_rate_hz=config.ancillary_rate_hz * f)
    where = {} if start_orbit is None else {"start_orbit": start_orbit}
    for rows in stream(chunk_s=chunk_s, seed=seed, config=config, **where):
        yield Chunk(rows)


KEYS = ("fpga", "chamber")


def split_by_key(chunk: Chunk, key: str, partitions: int) -> list[tuple[int, bytes, Chunk]]:
    """``(partition, key bytes, sub-chunk)`` per key value of a chunk: the rows of one FPGA (or chamber) together.

    Partition = key value % ``partitions``; a chamber key sends special channels (scintillator,
    trigger) and ancillary words with the FPGA's first chamber. Row order is kept inside each group.

    >>> rows = Rows.from_columns(head=[2, 2, 2], fpga=[0, 1, 0], channel=[5, 128, 70], orbit=[1, 1, 2], bx=[0, 0, 0],
    ...                          tdc=[0, 0, 0])
    >>> [(part, key, sub.rows.channel.tolist()) for part, key, sub in split_by_key(Chunk(rows), "fpga", 2)]
    [(0, b'0', [5, 70]), (1, b'1', [128])]
    >>> [(part, key) for part, key, _ in split_by_key(Chunk(rows), "chamber", 4)]  # the scintillator with chamber 2
    [(0, b'0'), (1, b'1'), (2, b'2')]
    """
    rows = chunk.rows
    if key == "fpga":
        values = rows.fpga.astype(np.int64)
    elif key == "chamber":
        chamber = det.chamber_of(rows.fpga, rows.channel.astype(np.int64))
        values = np.where(chamber >= 0, chamber, 2 * rows.fpga).astype(np.int64)
    else:
        raise ValueError(f"unknown key {key!r}; choose one of {', '.join(KEYS)}")
    out = []
    for value in np.unique(values):
        idx = np.flatnonzero(values == value)
        raw = chunk.raw_lines if chunk.raw_lines is not None and len(chunk.raw_lines) == len(rows) else None
        lines = [raw[i] for i in idx] if raw is not None else None  # None: re-encoded from rows
        out.append((int(value) % partitions, str(int(value)).encode(), Chunk(rows.select(idx), lines)))
    return out


def _encode_chunk(chunk: Chunk, fmt: str, rows_per_message: int) -> tuple[list[bytes], np.ndarray]:
    """Payloads of a chunk and the number of rows in each.

    >>> rows = Rows.from_columns(head=[2, 2, 2], fpga=[0, 1, 0], channel=[5, 7, 9], orbit=[1, 1, 2], bx=[0, 0, 0],
    ...                          tdc=[0, 0, 0])
    >>> payloads, sizes = _encode_chunk(Chunk(rows), "csv-batch", 2)
    >>> payloads, sizes.tolist()
    ([b'2,0,5,1,0,0\\n2,1,7,1,0,0', b'2,0,9,2,0,0'], [2, 1])
    >>> [len(p) for p in _encode_chunk(Chunk(rows), "daq64", 2)[0]]
    [16, 8]
    """
    if fmt == "csv":
        lines = chunk.raw_lines if chunk.raw_lines is not None else encode_csv(chunk.rows)
        return lines, np.ones(len(lines), np.int64)
    if fmt == "csv-batch":
        lines = chunk.raw_lines if chunk.raw_lines is not None else encode_csv(chunk.rows)
        payloads = [b"\n".join(lines[i : i + rows_per_message]) for i in range(0, len(lines), rows_per_message)]
        n = len(lines)
    elif fmt == "daq64":
        payloads = encode_daq64(chunk.rows, rows_per_message)
        n = len(chunk.rows.head)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    sizes = np.full(len(payloads), rows_per_message, np.int64)
    if len(payloads):
        sizes[-1] = n - rows_per_message * (len(payloads) - 1)
    return payloads, sizes


def _chunk_messages(chunk: Chunk, fmt: str, rows_per_message: int, with_epoch: list, headers: list, extra: dict,
                   partitions: int | None = None, key: str = "fpga") -> list[tuple[bytes, int, list, dict]]:
    """``(payload, rows, headers, produce kwargs)`` of a chunk's messages; the first one (of each key) has the epoch.

    With ``partitions`` > 1 the messages of all keys are put in order of their first orbit, so every
    partition's event time advances together (the stream's watermark is the minimum over partitions).

    >>> rows = Rows.from_columns(head=[2, 2, 2], fpga=[1, 0, 1], channel=[5, 7, 9], orbit=[1, 2, 3], bx=[0, 0, 0],
    ...                          tdc=[0, 0, 0])
    >>> msgs = _chunk_messages(Chunk(rows), "csv", 1, ["epoch"], ["plain"], {}, partitions=2)
    >>> for payload, rows, headers, where in msgs:  # by first orbit, the epoch once per key
    ...     print(payload, rows, headers, where)
    b'2,1,5,1,0,0' 1 ['epoch'] {'partition': 1, 'key': b'1'}
    b'2,0,7,2,0,0' 1 ['epoch'] {'partition': 0, 'key': b'0'}
    b'2,1,9,3,0,0' 1 ['plain'] {'partition': 1, 'key': b'1'}
    """
    if not partitions or partitions <= 1:
        payloads, sizes = _encode_chunk(chunk, fmt, rows_per_message)
        return [(p, int(n), with_epoch if i == 0 else headers, extra) for i, (p, n) in enumerate(zip(payloads, sizes))]
    out, firsts = [], []
    for part, k, sub in split_by_key(chunk, key, partitions):
        payloads, sizes = _encode_chunk(sub, fmt, rows_per_message)
        starts = np.r_[0, np.cumsum(sizes)[:-1]] if len(sizes) else np.zeros(0, np.int64)
        firsts.append(sub.rows.orbit[np.minimum(starts, len(sub.rows) - 1)])
        where = {"partition": part, "key": k}
        out += [(p, int(n), with_epoch if i == 0 else headers, where) for i, (p, n) in enumerate(zip(payloads, sizes))]
    order = np.argsort(np.concatenate(firsts), kind="stable") if firsts else np.zeros(0, np.int64)
    return [out[i] for i in order]


@dataclass
class EmulatorStats:
    """What :func:`emulate` sent: rows, messages, those the broker did not confirm, and when (perf_counter s).

    >>> stats = EmulatorStats(rows=5000, messages=50, started=10.0, finished=12.0)
    >>> stats.elapsed, stats.rate
    (2.0, 2500.0)
    """

    rows: int = 0
    messages: int = 0
    undelivered: int = 0  # messages the broker had not confirmed when the emulator stopped waiting for it
    started: float = 0.0
    finished: float = 0.0

    @property
    def elapsed(self) -> float:
        """Seconds from the first message to the end (at least 1 ns)."""
        return max(self.finished - self.started, 1e-9)

    @property
    def rate(self) -> float:
        """Rows sent per second."""
        return self.rows / self.elapsed


def _health(stats: EmulatorStats) -> dict:
    """Heartbeat fields of the send loop: running totals (they become rows/s and messages/s)."""
    return {"state": "running", "counts": {"rows": stats.rows, "messages": stats.messages}}


def emulate(producer, topic: str, chunks: Iterator[Chunk], *, rate: float | None = 1000.0, fmt: str = "csv",
            rows_per_message: int | None = None, limit: int | None = None, max_seconds: float | None = None,
            progress: bool | None = None, stop=lambda: False, partition: int | None = None,
            partitions: int | None = None, key: str = "fpga", heartbeat=None, flush_s: float = 120.0,
            total: int | None = None) -> EmulatorStats:
    """Send chunks to ``topic`` with a confluent-kafka ``producer`` at ``rate`` rows/s (None: as fast as possible).

    Stops after ``limit`` rows, ``max_seconds``, the end of the input, or when ``stop()`` is true.
    With ``partitions`` (> 1) the rows are spread over that many partitions by ``key`` ("fpga" or
    "chamber", see :func:`split_by_key`): each message holds rows of one key only and carries it as its key.
    ``heartbeat``: a :class:`dtlive.kafka.health.Heartbeat` given the running totals from the send loop (the caller
    closes it). ``flush_s``: how long to wait at the end for the broker to confirm what was sent; what it did
    not is counted in ``undelivered``. ``total``: rows the input holds, if known (the progress bar then shows
    the share sent and the time left); ``progress``: show the bar (None: when stderr is a terminal).

    >>> class Producer:  # what emulate needs of a confluent-kafka Producer
    ...     def __init__(self): self.sent = []
    ...     def produce(self, topic, value, headers=(), **kw): self.sent.append((topic, value, [k for k, _ in headers]))
    ...     def poll(self, timeout=0): return 0
    ...     def flush(self, timeout=0): return 0
    >>> rows = Rows.from_columns(head=[2, 2, 2], fpga=[0, 1, 0], channel=[5, 7, 9], orbit=[1, 1, 2], bx=[0, 0, 0],
    ...                          tdc=[0, 0, 0])
    >>> producer = Producer()
    >>> stats = emulate(producer, "dt.hits", iter([Chunk(rows)]), rate=None, fmt="csv-batch", rows_per_message=2,
    ...                 progress=False)
    >>> stats.rows, stats.messages, stats.undelivered
    (3, 2, 0)
    >>> producer.sent[0][:2], producer.sent[0][2], producer.sent[1][2]
    (('dt.hits', b'2,0,5,1,0,0\\n2,1,7,1,0,0'), ['format', 'orbit_epoch'], ['format'])
    """
    from tqdm import tqdm

    if rows_per_message is None:
        rows_per_message = 1 if fmt == "csv" else int(min(10_000, max(1, (rate or 1e6) / 100)))
    stats = EmulatorStats()
    epoch: float | None = None
    known = [n for n in (limit, total) if n is not None]
    bar = tqdm(total=min(known) if known else None, unit="rows", unit_scale=True,
               disable=progress is False if progress is not None else None,
               desc=f"emulate -> {topic}", smoothing=0.1, mininterval=0.5)
    bar.refresh()  # shown at once, before the first chunk is encoded
    headers_base = [(FORMAT_HEADER, fmt.encode())]
    extra = {} if partition is None else {"partition": partition}
    stats.started = time.perf_counter()
    clock_started = False  # the pacing clock starts with the first message, not before the first chunk exists
    try:
        for chunk in chunks:
            if epoch is None and len(chunk.rows):
                epoch = time.time() - float(chunk.rows.orbit.min()) * det.ORBIT_S
            # The epoch rides on the first message of every chunk (of each key) only: parsing headers is a large
            # part of a consumer's per-message cost, and one per chunk is enough to anchor a restart.
            with_epoch = [*headers_base, (EPOCH_HEADER, repr(epoch).encode())] if epoch is not None else headers_base
            messages = _chunk_messages(chunk, fmt, rows_per_message, with_epoch, headers_base, extra, partitions, key)
            if not clock_started:  # after the first chunk is read and encoded: no burst to catch up on them
                stats.started, clock_started = time.perf_counter(), True
            for payload, size, headers, where in messages:
                if limit is not None and stats.rows >= limit:
                    return stats
                if stop() or (max_seconds is not None and time.perf_counter() - stats.started > max_seconds):
                    return stats
                if rate:
                    due = stats.started + stats.rows / rate
                    delay = due - time.perf_counter()
                    if delay > 0.002:
                        producer.poll(0)
                        if heartbeat is not None:
                            heartbeat.maybe(None, lambda: _health(stats))
                        time.sleep(delay)
                while True:
                    try:
                        producer.produce(topic, payload, headers=headers, **where)
                        break
                    except BufferError:  # local queue full: let it drain
                        producer.poll(0.05)
                stats.rows += int(size)
                stats.messages += 1
                if stats.messages % 1000 == 0:
                    producer.poll(0)
                    bar.update(stats.rows - bar.n)
                    if heartbeat is not None:
                        heartbeat.maybe(None, lambda: _health(stats))
    finally:
        stats.undelivered = producer.flush(flush_s)  # a broker that was stalled may need a while to take the rest
        stats.finished = time.perf_counter()
        bar.update(stats.rows - bar.n)
        bar.close()
    return stats


def emulator_producer(cfg, bootstrap: str, topics: dict[str, int] | None = None):
    """The emulator's producer: idempotent, and it sends again what a broker restart lost (``topics``, name ->
    partitions, are created again first). Making it asks the broker for its cluster id (waiting up to 10 s for an
    answer), so that a broker replaced later is noticed.

    >>> from dtlive.config import load_config
    >>> type(emulator_producer(load_config({}, env={}), "127.0.0.1:9")).__name__
    'RetryingProducer'
    """
    from confluent_kafka import Producer

    from dtlive.kafka.clients import ensure_topics, producer_config
    from dtlive.kafka.delivery import RetryingProducer

    settings = {"queue.buffering.max.messages": 1_000_000, "enable.idempotence": True}
    return RetryingProducer(lambda extra: Producer(producer_config(cfg, bootstrap, **settings, **extra)),
                            ensure=(lambda: ensure_topics(cfg, bootstrap, topics)) if topics else None)
