"""Automatic data-quality flags from the stream of window results. Pure: no I/O, no clock.

A :class:`QualityMonitor` is fed parsed ``dtlive.monitor/1`` messages (in batches, in any order;
repeats are ignored) and returns the :class:`Period` s that are over. Four conditions are flagged:

``data_gap``
    no hits for longer than ``gap_s``: published windows further apart than that (windows without
    hits are not published) or windows with zero hits in between. The period runs from the end of
    the last window with hits to the start of the next one.
``chamber_silent`` (detail ``chamber``)
    a chamber with no hits, or fewer than ``silent_fraction`` of its running median, in at least
    ``silent_windows`` consecutive windows while another chamber has hits. Only a chamber that has
    been seen with hits, at a rate giving at least ``silent_min_expected`` hits a window, can go silent
    (a quiet chamber's empty windows are chance).
``noisy_channel`` (detail ``chamber``, ``channel``, ``tdc_channel``, ``rate_hz``, ``neighbour_rate_hz``)
    a channel with more than ``noisy_factor`` times the median of the ``noisy_neighbours`` nearest
    channels on each side in the same layer, and at least ``noisy_min_hits`` hits, in a window; flagged
    once that held in ``noisy_min_windows`` windows, closed after ``noisy_clear_windows`` quiet windows
    (so neither a single burst nor a flickering channel makes a flood of periods).
``rate_jump`` (detail ``direction``, ``rate_hz``, ``reference_rate_hz``, ``max_sigma``)
    the total hit rate differs from the median of the last ``rate_history`` windows by more than
    ``rate_rel`` (relative) *and* ``rate_sigma`` Poisson standard deviations. Windows at the edges of
    an interruption (the first after, the last before) are partly empty by construction and are not
    judged, so a rate jump is only decided once the next window has arrived.

An ongoing condition extends one period: :meth:`QualityMonitor.check` returns each period once,
when it is over; :attr:`QualityMonitor.open_periods` shows the ones still going on and
:meth:`QualityMonitor.flush` closes them (at shutdown, or to cut periods at a run boundary).
Times are UNIX seconds (UTC) taken from the window start/end of the messages (event time).
Periods carry ``kind`` ``"bad"`` (data gap, silent chamber) or ``"warning"`` (noisy channel, rate
jump), changeable with ``kinds``.

>>> from dtlive.core.messages import decode_message, encode_message, iso_utc
>>> from dtlive.core.products import compute_products
>>> from dtlive.core.rows import Rows
>>> def window(i, n=400):  # n hits spread over the 256 chamber channels, 2 s windows from t = 1.7e9
...     ch = np.arange(n) % 256
...     ds = compute_products(Rows.from_columns(head=[2] * n, fpga=ch // 128, channel=ch % 128, orbit=[i] * n,
...                                             bx=[0] * n, tdc=[0] * n))
...     ds.attrs.update(window_id=i, first_orbit=i, last_orbit=i, window_start=iso_utc(1.7e9 + 2 * i),
...                     window_end=iso_utc(1.7e9 + 2 * i + 2))
...     return decode_message(encode_message(ds))
>>> qm = QualityMonitor(gap_s=10)
>>> qm.check([window(i) for i in range(10)])          # steady: nothing
[]
>>> [(p.reason, p.start - 1.7e9, p.end - 1.7e9) for p in qm.check([window(i) for i in range(30, 33)])]
[('data_gap', 20.0, 60.0)]
>>> qm.flush()
[]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field
from typing import cast

import numpy as np

from dtlive.core import detector as det

NCH = det.CHANNELS_PER_CHAMBER
KINDS = {"data_gap": "bad", "chamber_silent": "bad", "noisy_channel": "warning", "rate_jump": "warning"}


@dataclass
class Period:
    """A span of event time with a quality condition; ``start``/``end`` are UNIX seconds (UTC).

    >>> p = Period(10.0, 30.0, "data_gap", {"windows_without_hits": 0})
    >>> p.duration, p.automatic, p.kind, p.to_dict()["start_utc"]
    (20.0, True, 'bad', '1970-01-01T00:00:10.000Z')
    """

    start: float
    end: float
    reason: str
    detail: dict
    automatic: bool = True
    kind: str = "bad"

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict:
        """JSON-ready, with ISO UTC copies of the times."""
        from dtlive.core.messages import iso_utc

        d = asdict(self)
        d.update(start_utc=iso_utc(self.start), end_utc=iso_utc(self.end))
        return d


@dataclass
class _Run:
    """An ongoing condition for one key: its span and what its detail is built from."""

    start: float
    end: float
    first_id: int
    last_id: int
    windows: int = 0  # windows in which the condition held
    quiet: int = 0  # consecutive windows since it last held
    sums: dict = field(default_factory=dict)
    first: dict = field(default_factory=dict)


class _Tracker:
    """Turns per-window yes/no of a condition per key into periods (one per episode)."""

    def __init__(self, reason: str, kind: str, open_after: int, close_after: int,
                 detail: Callable[[Hashable, _Run], dict]):
        self.reason, self.kind = reason, kind
        self.open_after, self.close_after = max(1, open_after), max(1, close_after)
        self.detail = detail
        self.runs: dict[Hashable, _Run] = {}

    def step(self, win: _Window, active: dict[Hashable, dict]) -> list[Period]:
        """``active``: key -> values to add up (and keep from the first window) for the keys that hold."""
        for key, values in active.items():
            run = self.runs.get(key)
            if run is None:
                run = self.runs[key] = _Run(win.start, win.end, win.id, win.id, first=dict(values))
            run.end, run.last_id, run.quiet = win.end, win.id, 0
            run.windows += 1
            for k, v in values.items():
                run.sums[k] = run.sums.get(k, 0.0) + v
            run.sums["max_abs_sigma"] = max(run.sums.get("max_abs_sigma", 0.0), abs(values.get("sigma", 0.0)))
        out = []
        for key in [k for k in self.runs if k not in active]:
            run = self.runs[key]
            run.quiet += 1
            if run.quiet >= self.close_after:
                del self.runs[key]
                if run.windows >= self.open_after:
                    out.append(self._period(key, run))
        return out

    def close_all(self) -> list[Period]:
        out = [self._period(k, r) for k, r in self.runs.items() if r.windows >= self.open_after]
        self.runs.clear()
        return out

    def open(self) -> list[Period]:
        return [self._period(k, r) for k, r in self.runs.items() if r.windows >= self.open_after]

    def _period(self, key: Hashable, run: _Run) -> Period:
        detail = self.detail(key, run)
        detail.update(windows=run.windows, first_window_id=run.first_id, last_window_id=run.last_id)
        return Period(run.start, run.end, self.reason, detail, True, self.kind)


@dataclass
class _Window:
    id: int
    start: float
    end: float
    total: int
    chambers: np.ndarray  # (4,)
    noisy: np.ndarray  # (k, 2) chamber, channel of the noisy channels
    noisy_hits: np.ndarray  # (k,)
    noisy_ref: np.ndarray  # (k,) neighbour median

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 1e-9)


class QualityMonitor:
    """Stateful automatic quality flags over a stream of parsed result messages (no I/O).

    Feed :meth:`check` with batches of parsed ``dtlive.monitor/1`` messages of **one** processor's
    stream; it returns the periods that ended. Thresholds (defaults in brackets):

    - ``gap_s`` [10]: seconds without hits that make a ``data_gap``;
    - ``silent_windows`` [3], ``silent_fraction`` [0.01], ``silent_history`` [30], ``silent_min_expected`` [10]:
      a chamber is silent in a window with 0 hits or < fraction x the median rate of its last
      ``silent_history`` healthy windows, if that median gives >= ``silent_min_expected`` hits a window;
    - ``noisy_factor`` [5], ``noisy_min_hits`` [20], ``noisy_neighbours`` [4], ``noisy_min_windows`` [3],
      ``noisy_clear_windows`` [3];
    - ``rate_history`` [30], ``rate_rel`` [0.2], ``rate_sigma`` [5], ``rate_min_history`` [5];
    - ``kinds``: reason -> ``Period.kind`` (default :data:`KINDS`).

    >>> qm = QualityMonitor(gap_s=30, silent_windows=5)
    >>> qm.gap_s, qm.open_periods
    (30.0, [])
    """

    def __init__(
        self,
        *,
        gap_s: float = 10.0,
        silent_windows: int = 3,
        silent_fraction: float = 0.01,
        silent_history: int = 30,
        silent_min_expected: float = 10.0,
        noisy_factor: float = 5.0,
        noisy_min_hits: int = 20,
        noisy_neighbours: int = 4,
        noisy_min_windows: int = 3,
        noisy_clear_windows: int = 3,
        rate_history: int = 30,
        rate_rel: float = 0.2,
        rate_sigma: float = 5.0,
        rate_min_history: int = 5,
        kinds: dict[str, str] | None = None,
    ):
        if gap_s <= 0 or silent_windows < 1 or noisy_factor <= 1 or noisy_neighbours < 1 or rate_history < 1:
            raise ValueError("gap_s > 0, silent_windows >= 1, noisy_factor > 1, noisy_neighbours >= 1 and "
                             "rate_history >= 1 are required")
        self.gap_s = float(gap_s)
        self.silent_fraction = float(silent_fraction)
        self.silent_min_expected = float(silent_min_expected)
        self.noisy_factor = float(noisy_factor)
        self.noisy_min_hits = int(noisy_min_hits)
        self.noisy_neighbours = int(noisy_neighbours)
        self.rate_rel = float(rate_rel)
        self.rate_sigma = float(rate_sigma)
        self.rate_min_history = int(rate_min_history)
        self.kinds = {**KINDS, **(kinds or {})}
        self._silent = _Tracker("chamber_silent", self.kinds["chamber_silent"], silent_windows, 1, _silent_detail)
        self._noisy = _Tracker("noisy_channel", self.kinds["noisy_channel"], noisy_min_windows, noisy_clear_windows,
                               _noisy_detail)
        self._rate = _Tracker("rate_jump", self.kinds["rate_jump"], 1, 1, _rate_detail)
        self._chamber_rates: list[deque[float]] = [deque(maxlen=int(silent_history)) for _ in range(det.N_CHAMBERS)]
        self._rates: deque[float] = deque(maxlen=int(rate_history))
        self._last_start: float | None = None  # newest window processed (any)
        self._prev_hit: _Window | None = None  # newest window with hits
        self._pending: tuple[_Window, bool] | None = None  # window awaiting its rate verdict, came after a break
        self._last_hit_end: float | None = None
        self._last_seen_end: float | None = None
        self._zero_windows = 0  # windows without hits since the last with hits
        self._now: float | None = None
        self.windows_seen = 0
        self.skipped = 0  # repeats, out-of-order or undated windows

    # ------------------------------------------------------------------ API

    def check(self, msgs: list[dict], *, now: float | None = None) -> list[Period]:
        """Add parsed messages; return the periods that are over (each period exactly once).

        ``now`` (UNIX seconds, optional) lets an ongoing data gap show in :attr:`open_periods` before
        the next window arrives; it must be on the same clock as the window times.
        """
        wins = self._parse(msgs)
        out: list[Period] = []
        for w in wins:
            if self._last_start is not None and w.start <= self._last_start:
                self.skipped += 1
                continue
            self._last_start = w.start
            self.windows_seen += 1
            self._last_seen_end = w.end if self._last_seen_end is None else max(self._last_seen_end, w.end)
            if w.total <= 0:
                self._zero_windows += 1
                continue
            out += self._window(w)
        if now is not None:
            self._now = now if self._now is None else max(self._now, now)
        return sorted(out, key=lambda p: (p.start, p.reason))

    @property
    def open_periods(self) -> list[Period]:
        """Conditions still going on (their end is the latest window in the condition so far)."""
        out = self._silent.open() + self._noisy.open() + self._rate.open()
        gap = self._open_gap()
        if gap is not None:
            out.append(gap)
        return sorted(out, key=lambda p: (p.start, p.reason))

    def flush(self, now: float | None = None) -> list[Period]:
        """Close and return every open period (the monitor can go on with new windows afterwards).

        A window still waiting for its rate verdict (the newest) is not judged: it may be the partly
        filled last window of the stream.
        """
        if now is not None:
            self._now = now if self._now is None else max(self._now, now)
        out = self._silent.close_all() + self._noisy.close_all() + self._rate.close_all()
        gap = self._open_gap()
        if gap is not None:
            out.append(gap)
            self._last_hit_end = gap.end
            self._zero_windows = 0
        self._pending = None
        self._prev_hit = None
        return sorted(out, key=lambda p: (p.start, p.reason))

    # ------------------------------------------------------------------ one window

    def _window(self, w: _Window) -> list[Period]:
        out: list[Period] = []
        # (a) data gap before this window: interrupts every other condition
        if self._last_hit_end is not None and w.start - self._last_hit_end > self.gap_s:
            out += self._silent.close_all() + self._noisy.close_all()
            out.append(Period(self._last_hit_end, w.start, "data_gap", {
                "duration_s": round(w.start - self._last_hit_end, 3),
                "windows_without_hits": self._zero_windows,
                "last_window_id": self._prev_hit.id if self._prev_hit is not None else None,
                "next_window_id": w.id,
            }, True, self.kinds["data_gap"]))
        self._zero_windows = 0
        # (d) rate jump of the previous window, now that we know whether it is an edge
        brk = self._prev_hit is None or w.start - self._prev_hit.end > 0.25 * w.seconds
        if self._pending is not None:
            prev, after_break = self._pending
            if brk or after_break:
                out += self._rate.close_all()
            else:
                out += self._rate.step(prev, self._rate_verdict(prev))
        self._pending = (w, brk)
        # (b) silent chambers
        rates = w.chambers / w.seconds
        silent = np.zeros(det.N_CHAMBERS, bool)
        refs = np.full(det.N_CHAMBERS, np.nan)
        for c in range(det.N_CHAMBERS):
            hist = self._chamber_rates[c]
            if hist:
                refs[c] = float(np.median(hist))
                silent[c] = refs[c] * w.seconds >= self.silent_min_expected and (
                    w.chambers[c] == 0 or (len(hist) >= 3 and rates[c] < self.silent_fraction * refs[c]))
        healthy = (w.chambers > 0) & ~silent
        active: dict[Hashable, dict] = {}
        for c in np.flatnonzero(silent).tolist():
            if healthy[np.arange(det.N_CHAMBERS) != c].any():
                active[int(c)] = {"hits": float(w.chambers[c]), "seconds": w.seconds, "reference_rate_hz": refs[c]}
        for c in np.flatnonzero(~silent).tolist():
            self._chamber_rates[c].append(rates[c])
        out += self._silent.step(w, active)
        # (c) noisy channels
        out += self._noisy.step(w, {
            (int(c), int(ch)): {"hits": float(n), "ref": float(r), "seconds": w.seconds}
            for (c, ch), n, r in zip(w.noisy, w.noisy_hits, w.noisy_ref)
        })
        self._prev_hit = w
        self._last_hit_end = w.end
        return out

    def _rate_verdict(self, w: _Window) -> dict:
        rate = w.total / w.seconds
        verdict = {}
        if len(self._rates) >= self.rate_min_history:
            ref = float(np.median(self._rates))
            expected = ref * w.seconds
            sigma = (w.total - expected) / np.sqrt(max(expected, 1.0))
            rel = (rate - ref) / ref if ref > 0 else np.inf
            if abs(rel) > self.rate_rel and abs(sigma) > self.rate_sigma:
                verdict["rate"] = {"hits": float(w.total), "seconds": w.seconds, "reference_rate_hz": ref,
                                   "sigma": float(sigma)}
        self._rates.append(rate)
        return verdict

    def _open_gap(self) -> Period | None:
        if self._last_hit_end is None:
            return None
        end = max(x for x in (self._now, self._last_seen_end) if x is not None)
        if end - self._last_hit_end <= self.gap_s:
            return None
        return Period(self._last_hit_end, end, "data_gap", {
            "duration_s": round(end - self._last_hit_end, 3), "windows_without_hits": self._zero_windows,
            "last_window_id": self._prev_hit.id if self._prev_hit is not None else None, "next_window_id": None,
            "ongoing": True}, True, self.kinds["data_gap"])

    # ------------------------------------------------------------------ parsing (vectorised per batch)

    def _parse(self, msgs: list[dict]) -> list[_Window]:
        dated = [m for m in msgs if m.get("window", {}).get("start") and m.get("window", {}).get("end")]
        self.skipped += len(msgs) - len(dated)
        if not dated:
            return []
        start = _seconds([m["window"]["start"] for m in dated])
        end = _seconds([m["window"]["end"] for m in dated])
        occ = np.array([[m["histograms"]["channel_occupancy"][f"chamber_{c}"]["bin_counts"]
                         for c in range(det.N_CHAMBERS)] for m in dated], np.int64)
        ref = neighbour_median(occ, self.noisy_neighbours)
        noisy = (occ >= self.noisy_min_hits) & (occ > self.noisy_factor * ref)
        wins = []
        for i in np.argsort(start, kind="stable"):
            m = dated[i]
            idx = np.argwhere(noisy[i])
            wins.append(_Window(int(m["window"]["id"]), float(start[i]), float(end[i]), int(m["total_hits"]),
                                np.asarray(m["hits_per_chamber"], np.int64), idx,
                                occ[i][noisy[i]], ref[i][noisy[i]]))
        return wins


def neighbour_median(occ: np.ndarray, k: int = 4) -> np.ndarray:
    """Median occupancy of the ``k`` nearest channels on each side in the same layer (the channel excluded).

    ``occ`` has shape ``(..., 64)`` (channels of one chamber, TDC_CHANNEL % 64); channel ``c`` is cell
    ``c // 4`` of layer slot ``c % 4``, so same-layer neighbours are 4 channels apart. Edge cells have
    fewer neighbours.

    >>> occ = np.full(64, 10); occ[21] = 500
    >>> ref = neighbour_median(occ)
    >>> int(ref[21]), int(ref[25]), int(ref[22])
    (10, 10, 10)
    """
    occ = np.asarray(occ, float)
    lead = occ.shape[:-1]
    cells = det.CELLS_PER_LAYER
    by_layer = occ.reshape(*lead, cells, NCH // cells).swapaxes(-1, -2)  # (..., slot, cell)
    pad = np.full((*by_layer.shape[:-1], cells + 2 * k), np.nan)
    pad[..., k:k + cells] = by_layer
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * k + 1, axis=-1)  # (..., slot, cell, 2k+1)
    win = np.delete(win, k, axis=-1)  # the channel itself is not its own neighbour
    srt = np.sort(win, axis=-1)  # NaN (beyond the chamber edge) sort last
    n = (~np.isnan(srt)).sum(axis=-1)
    lo = np.take_along_axis(srt, ((n - 1) // 2)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(srt, (n // 2)[..., None], axis=-1)[..., 0]
    med = (lo + hi) / 2
    return med.swapaxes(-1, -2).reshape(*lead, NCH)


def _seconds(values: list[str]) -> np.ndarray:
    """ISO UTC strings -> UNIX seconds (float), vectorised."""
    ms = np.array([np.datetime64(v.rstrip("Z"), "ms") for v in values], dtype="datetime64[ms]").astype(np.int64)
    return ms / 1000.0


def _silent_detail(key: Hashable, run: _Run) -> dict:
    return {"chamber": key, "hits": int(run.sums.get("hits", 0)),
            "reference_rate_hz": round(float(run.first.get("reference_rate_hz", np.nan)), 3)}


def _noisy_detail(key: Hashable, run: _Run) -> dict:
    chamber, channel = cast(tuple[int, int], key)
    seconds = run.sums.get("seconds", 1.0)
    return {"chamber": chamber, "channel": channel, "tdc_channel": (chamber % 2) * NCH + channel,
            "rate_hz": round(run.sums.get("hits", 0.0) / seconds, 3),
            "neighbour_rate_hz": round(run.sums.get("ref", 0.0) / seconds, 3)}


def _rate_detail(key: Hashable, run: _Run) -> dict:
    seconds = run.sums.get("seconds", 1.0)
    rate = run.sums.get("hits", 0.0) / seconds
    ref = run.first.get("reference_rate_hz", np.nan)
    return {"direction": "up" if run.first.get("sigma", 0) > 0 else "down", "rate_hz": round(rate, 3),
            "reference_rate_hz": round(float(ref), 3), "max_sigma": round(run.sums.get("max_abs_sigma", 0.0), 1)}
