"""Live results for dashboards: a pure window accumulator and a background ``dt.monitor`` feed.

:class:`LiveWindows` (pure, no I/O) keeps the recent windows and answers the three views
a shifter wants: the ``last`` window, the ``cumulative`` sum since the last reset, and the
``rolling`` sum of the last N windows, plus the per-window time series and a status.
:class:`ResultsFeed` is the thin I/O shell: one background thread with its own consumer
that starts from the newest windows (a short backfill, so a view is never empty), hands
parsed messages to a callback, and reports plainly when the broker or the data is gone.
:class:`LiveVerdicts` (pure) keeps the newest ``dtlive.quality/2`` verdict and says per chamber what the
summary strip shows.
The same feed follows the services' heartbeats on ``dt.status`` (``parse=dtlive.kafka.health.parse_status``);
:class:`dtlive.kafka.health.ServiceHealth` is their pure state (who is alive, stale or irregular).

>>> from dtlive.core.messages import encode_message, decode_message
>>> from dtlive.core.products import compute_products
>>> from dtlive.core.rows import Rows
>>> def window(i, n):
...     ds = compute_products(Rows.from_columns(head=[2] * n, fpga=[0] * n, channel=[3] * n, orbit=[i] * n,
...                                             bx=[0] * n, tdc=[0] * n))
...     ds.attrs.update(window_id=i, first_orbit=i, last_orbit=i)
...     return decode_message(encode_message(ds))
>>> live = LiveWindows(rolling=2)
>>> live.add([window(0, 5), window(1, 1), window(2, 2)])
3
>>> [int(live.view(mode).total_hits) for mode in ("last", "rolling", "cumulative")]
[2, 3, 8]
>>> live.reset(); int(live.view("cumulative").total_hits)
0
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from dtlive.config import Config
from dtlive.core import detector as det
from dtlive.core.messages import COUNTS, QUALITY_TESTS_SCHEMA, decode_message, message_arrays, utc_seconds
from dtlive.core.products import DRIFT_EDGES_NS, PRODUCTS, arrays_to_dataset

log = logging.getLogger(__name__)

VIEWS = ("last", "cumulative", "rolling")


@dataclass
class WindowPoint:
    """What the time series keep of one window.

    >>> from dtlive.core.messages import decode_message, encode_message, iso_utc
    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> ds = compute_products(Rows.from_columns(head=[2], fpga=[1], channel=[3], orbit=[7], bx=[0], tdc=[0]))
    >>> ds.attrs.update(window_id=7, first_orbit=0, last_orbit=9, window_start=iso_utc(1.7e9),
    ...                 window_end=iso_utc(1.7e9 + 2))
    >>> live = LiveWindows()
    >>> live.add([decode_message(encode_message(ds))], received=1.7e9 + 3)
    1
    >>> p = live.points[-1]
    >>> p.id, p.end - p.start, p.total_hits, p.hits_per_chamber.tolist(), p.received
    (7, 2.0, 1, [0, 0, 1, 0], 1700000003.0)
    """

    id: int
    start: float  # UNIX seconds
    end: float
    total_hits: int
    hits_per_chamber: np.ndarray
    rows: int
    rejected: int
    received: float  # wall clock when the dashboard got it


@dataclass
class LiveWindows:
    """Recent windows, summed three ways, and their time series. Pure: feed it parsed messages.

    >>> from dtlive.core.messages import decode_message, encode_message
    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> ds = compute_products(Rows.from_columns(head=[2, 2], fpga=[0, 0], channel=[3, 4], orbit=[7, 7], bx=[0, 0],
    ...                                         tdc=[0, 0]))
    >>> msgs = []
    >>> for i in range(3):
    ...     ds.attrs.update(window_id=i, first_orbit=i, last_orbit=i)
    ...     msgs.append(decode_message(encode_message(ds)))
    >>> live = LiveWindows(rolling=2)
    >>> live.add(msgs), live.add(msgs[:1])  # a repeat is ignored
    (3, 0)
    >>> int(live.view("rolling").total_hits), int(live.view("cumulative").total_hits), live.windows_since_reset
    (4, 6, 3)
    """

    rolling: int = 10
    history: int = 1800  # windows kept for the time series (an hour of 2 s windows)
    drift_edges: np.ndarray = field(default_factory=lambda: DRIFT_EDGES_NS.copy())
    points: deque = field(init=False)
    _recent: deque = field(init=False)
    _cumulative: dict | None = field(default=None, init=False)
    _seen: set = field(default_factory=set, init=False)
    windows_since_reset: int = field(default=0, init=False)
    added: int = field(default=0, init=False)  # windows added ever: a view's version
    _rejected_total: int = field(default=0, init=False)
    _series: dict = field(init=False)  # the time series' columns, appended to (no rebuild per redraw)
    _n: int = field(default=0, init=False)

    def __post_init__(self):
        self.points = deque(maxlen=self.history)
        self._recent = deque(maxlen=max(1, self.rolling))
        cap = 2 * self.history
        self._series = {"time": np.zeros(cap), "duration": np.zeros(cap), "window_id": np.zeros(cap, np.int64),
                        "total_hits": np.zeros(cap, np.int64),
                        "hits_per_chamber": np.zeros((cap, det.N_CHAMBERS), np.int64)}

    def _append(self, p: WindowPoint) -> None:
        if len(self.points) == self.history:
            self._rejected_total -= self.points[0].rejected
        self.points.append(p)
        self._rejected_total += p.rejected
        s, cap = self._series, 2 * self.history
        if self._n == cap:  # full: keep the newest history - 1 rows at the front
            for col in s.values():
                col[: self.history - 1] = col[cap - self.history + 1:]
            self._n = self.history - 1
        i = self._n
        s["time"][i], s["window_id"][i], s["total_hits"][i] = p.start, p.id, p.total_hits
        s["duration"][i] = p.end - p.start if np.isfinite(p.end - p.start) else np.nan
        s["hits_per_chamber"][i] = p.hits_per_chamber
        self._n += 1

    def set_rolling(self, n: int) -> None:
        """Change how many windows the rolling view sums (keeps what fits)."""
        self.rolling = max(1, int(n))
        self._recent = deque(self._recent, maxlen=max(self.rolling, 1))

    def add(self, messages: list[dict], received: float | None = None) -> int:
        """Add parsed ``dtlive.monitor/1`` messages (any order; repeats ignored); return how many were new."""
        received = time.time() if received is None else received
        new = 0
        for msg in sorted(messages, key=lambda m: m["window"]["id"]):
            key = (msg["provenance"].get("processor"), msg["window"]["id"])
            if key in self._seen:
                continue
            self._seen.add(key)
            if len(self._seen) > 4 * self.history:  # forget the oldest keys; windows only move forward
                self._seen = set(sorted(self._seen, key=lambda k: k[1])[-self.history :])
            arrays = message_arrays(msg)
            if len(msg["histograms"]["drift_time_ns"]["chamber_0"]["bin_edges"]) != len(self.drift_edges):
                self.drift_edges = np.array(msg["histograms"]["drift_time_ns"]["chamber_0"]["bin_edges"], float)
                self._cumulative, self._recent = None, deque(maxlen=self.rolling)
            self._recent.append(arrays)
            if self._cumulative is None:
                self._cumulative = {k: np.array(v, copy=True) for k, v in arrays.items()}
            else:
                for k, v in arrays.items():
                    self._cumulative[k] = self._cumulative[k] + v
            w = msg["window"]
            self._append(
                WindowPoint(w["id"], utc_seconds(w.get("start")), utc_seconds(w.get("end")), int(arrays["total_hits"]),
                            arrays["hits_per_chamber"], int(arrays["rows"]), int(arrays["rejected"]), received)
            )
            self.windows_since_reset += 1
            self.added += 1
            new += 1
        return new

    def reset(self) -> None:
        """Start the cumulative view again from zero (the time series are kept)."""
        self._cumulative = None
        self.windows_since_reset = 0

    def arrays(self, mode: str = "last", keys=None) -> dict[str, np.ndarray] | None:
        """Product arrays of a view (None while there is nothing to show); ``keys``: only these (the rolling sum
        of a few products is quicker than of all)."""
        if mode not in VIEWS:
            raise ValueError(f"unknown view {mode!r}; choose one of {', '.join(VIEWS)}")
        if mode == "cumulative":
            return self._cumulative
        if not self._recent:
            return None
        if mode == "last":
            return self._recent[-1]
        return {k: sum(a[k] for a in self._recent) for k in (self._recent[-1] if keys is None else keys)}

    def view(self, mode: str = "last") -> xr.Dataset:
        """A view as the labelled Dataset of :mod:`dtlive.core.products` (zeros while empty)."""
        arrays: dict[str, Any] | None = self.arrays(mode)  # counts as plain numbers while empty
        if arrays is None:
            from dtlive.core.products import compute_arrays
            from dtlive.core.rows import Rows

            arrays = {**compute_arrays(Rows.empty(), self.drift_edges), **{k: 0 for k in (*COUNTS, "rejected")}}
        ds = arrays_to_dataset({k: arrays[k] for k in PRODUCTS}, self.drift_edges)
        for k in (*COUNTS, "rejected"):
            ds[k] = ((), np.int64(arrays[k]))
        ds.attrs["view"] = mode
        return ds

    def series(self) -> dict[str, np.ndarray]:
        """Per-window time series: ``time`` (datetime64 of window start), ``window_id``, ``total_hits``,
        ``hits_per_chamber`` and ``duration`` (seconds; NaN when unknown)."""
        lo = self._n - len(self.points)
        out = {k: v[lo: self._n].copy() for k, v in self._series.items()}
        out["time"] = (out["time"] * 1000).astype("datetime64[ms]")
        return out

    def status(self, now: float | None = None, stale_after_s: float = 10.0) -> dict:
        """Last window, data age, input rate, windows/s and rejects, and a one-word state.

        The figures never contradict each other. ``state`` is ``live`` only while windows keep coming (one
        within ``stale_after_s``) and their data is fresh (it ended at most ``stale_after_s`` plus a window
        ago); windows that keep coming with older data are ``behind`` (a backlog, a replay); no window for
        ``stale_after_s`` is ``stale``, and then both rates are 0. Rates are numbers, never NaN (0 where they
        cannot be known); ``data_age_s`` is never negative: a window that ends after ``now`` (a clock ahead)
        has age 0 and ``clock_ahead_s`` says by how much.
        """
        now = time.time() if now is None else now
        if not self.points:
            return {"state": "waiting", "windows": 0}
        last = self.points[-1]
        recent = []  # received in the last 30 s (the newest are at the end)
        for p in reversed(self.points):
            if now - p.received > 30:
                break
            recent.append(p)
        span = (recent[0].received - recent[-1].received) if len(recent) > 1 else 0.0
        duration = last.end - last.start if np.isfinite(last.end - last.start) and last.end > last.start else 0.0
        age = now - last.end if np.isfinite(last.end) else now - last.received
        since_last = now - last.received
        fresh = age <= stale_after_s + duration
        state = "stale" if since_last > stale_after_s else "live" if fresh else "behind"
        flowing = state != "stale"
        return {
            "state": state,
            "windows": len(self.points),
            "window_id": last.id,
            "window_start": last.start,
            "window_end": last.end,
            "data_age_s": max(age, 0.0),
            "clock_ahead_s": max(-age, 0.0),
            "since_last_s": since_last,
            "input_rows_per_s": last.rows / duration if flowing and duration > 0 else 0.0,
            "windows_per_s": (len(recent) - 1) / span if flowing and span > 0 else 0.0,
            "rejected_last": last.rejected,
            "rejected_total": self._rejected_total,
        }


NO_VERDICT = "no verdict yet"


class LiveVerdicts:
    """The newest ``dtlive.quality/2`` verdict (by the end of its windows) and the summary the strip shows.

    Messages of any other schema are ignored, so the whole ``dt.quality`` topic can be fed in.

    >>> v = LiveVerdicts()
    >>> v.summary()["chambers"][2]["label"]
    'no verdict yet'
    >>> v.add([{"schema": "dtlive.quality/2", "status": 4, "windows": {"ids": [5, 9], "end": "2026-12-05T10:00:10Z"},
    ...         "reference": {"label": "clean"}, "detector": {"status": 0, "reasons": []},
    ...         "chambers": {"chamber_2": {"status": 4, "label": "bad", "reasons": ["chamber_rate: ratio 0"]}}}])
    True
    >>> s = v.summary(); s["state"], s["detector"]["label"], s["chambers"][2]["status"], s["chambers"][2]["reason"]
    ('judged', 'bad', 4, 'chamber_rate: ratio 0')
    """

    def __init__(self):
        from dtlive.core.judge import StatusRules

        self.labels = StatusRules().labels
        self.newest: dict | None = None
        self.received = 0
        self._key: tuple = ()

    def add(self, messages: list[dict]) -> bool:
        """Take parsed quality messages; return whether the newest verdict changed."""
        changed = False
        for m in messages:
            if not isinstance(m, dict) or m.get("schema") != QUALITY_TESTS_SCHEMA:
                continue
            self.received += 1
            key = ((m.get("windows") or {}).get("end") or "", self.received)
            if self.newest is None or key >= self._key:
                self.newest, self._key, changed = m, key, True
        return changed

    def _label(self, status) -> str:
        if status is None:
            return "not enough statistics"
        return self.labels[min(int(status), len(self.labels) - 1)]

    def summary(self) -> dict:
        """``{"state": "waiting" | "judged", "chambers": [{"chamber", "status", "label", "reason"}], "detector":
        {"status", "label", "reason"}, "windows", "end", "reference", "processor"}`` (status None: not judged)."""
        v = self.newest
        if v is None:
            blank = {"status": None, "label": NO_VERDICT, "reason": "no quality verdict received yet"}
            return {"state": "waiting", "chambers": [{"chamber": c, **blank} for c in det.CHAMBERS],
                    "detector": dict(blank), "windows": [], "end": None, "reference": None, "processor": None}
        chambers = []
        for c in det.CHAMBERS:
            ch = (v.get("chambers") or {}).get(f"chamber_{c}") or {}
            reasons = ch.get("reasons") or []
            chambers.append({"chamber": c, "status": ch.get("status"), "label": self._label(ch.get("status")),
                             "reason": reasons[0] if reasons else ""})
        wide = (v.get("detector") or {}).get("reasons") or []
        first = wide[:1] or [c["reason"] for c in chambers if c["reason"]][:1]
        windows = v.get("windows") or {}
        return {"state": "judged", "chambers": chambers,
                "detector": {"status": v.get("status"), "label": self._label(v.get("status")),
                             "reason": first[0] if first else ""},
                "windows": windows.get("ids") or [], "end": windows.get("end"),
                "reference": (v.get("reference") or {}).get("label"), "processor": v.get("processor")}


class ResultsFeed:
    """Background consumer of a results topic: newest windows first, then live.

    ``parse`` turns a message value into a dict (default: a ``dtlive.monitor/1`` result;
    it raises ValueError for values to skip), so the same feed follows ``dt.quality``.

    ``on_messages`` gets lists of parsed messages from the feed's thread; ``broker_ok``
    and ``error`` tell whether the broker answers. The feed never stops on its own:
    when the broker goes away it keeps retrying and resumes when it returns.

    >>> feed = ResultsFeed("127.0.0.1:9092", on_messages=print, backfill=30)  # doctest: +SKIP
    >>> feed.start(); ...; feed.stop()                                        # doctest: +SKIP
    """

    def __init__(
        self,
        bootstrap: str,
        on_messages: Callable[[list[dict]], None],
        topic: str = Config.monitor_topic,
        backfill: int = 30,
        kafka: dict | None = None,
        check_every_s: float = 2.0,
        parse: Callable[[bytes], dict] = decode_message,
    ):
        self.parse = parse
        self.bootstrap = bootstrap
        self.topic = topic
        self.backfill = backfill
        self.on_messages = on_messages
        self.kafka = dict(kafka or {})
        self.check_every_s = check_every_s
        self.broker_ok: bool | None = None
        self.error: str | None = None
        self.received = 0
        self.skipped = 0
        self.cluster_id: str | None = None  # of the broker read from: a new one (restarted empty) is followed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ResultsFeed:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"dtlive-feed-{self.topic}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _consumer(self):
        from confluent_kafka import Consumer

        from dtlive.kafka.clients import LIBRDKAFKA_LOG

        def on_error(err):
            self.error = str(err)
            if err.code() in (-187, -195):  # _ALL_BROKERS_DOWN, _TRANSPORT
                self.broker_ok = False

        return Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": "dtlive-dashboard",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 100,  # also makes the end-offset check quick
            "reconnect.backoff.max.ms": 1000,
            "error_cb": on_error,
            "logger": LIBRDKAFKA_LOG,  # rate-limited: a dead broker gives one line, not one per reconnect
            **self.kafka,
        })

    def _assign(self, consumer) -> bool:
        """Assign every partition of the topic at its end minus the backfill; False if not there yet."""
        from confluent_kafka import TopicPartition

        from dtlive.kafka.clients import end_offsets

        ends = end_offsets(consumer, self.topic, timeout=2)
        self.broker_ok = True
        if not ends:
            return False
        starts = {p: max(low, high - self.backfill) for p, (low, high) in ends.items()}
        consumer.assign([TopicPartition(self.topic, p, start) for p, start in starts.items()])
        return True

    def _run(self) -> None:
        consumer, assigned, last_check = None, False, 0.0
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = self._consumer()
                if not assigned:
                    assigned = self._assign(consumer)
                    if not assigned:
                        self.error = f"topic {self.topic!r} does not exist yet (is the processor running?)"
                        self._stop.wait(1.0)
                        continue
                    self.error = None
                msgs = consumer.consume(1, 0.25)  # wake up on the first message, then take what is there
                if msgs:
                    msgs += consumer.consume(1000, 0)
                parsed = []
                for m in msgs:
                    if m.error():
                        continue
                    try:
                        parsed.append(self.parse(m.value()))
                    except ValueError:
                        self.skipped += 1
                if parsed:
                    self.broker_ok, self.error = True, None
                    self.received += len(parsed)
                    self.on_messages(parsed)
                elif time.monotonic() - last_check > self.check_every_s:
                    last_check = time.monotonic()
                    cluster = consumer.list_topics(self.topic, timeout=1).cluster_id  # raises while it is away
                    self.broker_ok = True
                    if self.cluster_id is not None and cluster != self.cluster_id:  # restarted empty: start over
                        log.warning("dashboard feed: the broker was replaced; reading %s there", self.topic)
                        consumer.close()
                        consumer, assigned = None, False
                    self.cluster_id = cluster
            except Exception as exc:  # noqa: BLE001  (keep retrying: the dashboard must recover by itself)
                self.broker_ok, self.error = False, f"broker {self.bootstrap} unreachable: {exc}"
                self._stop.wait(1.0)
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()
