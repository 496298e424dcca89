"""Automatic quality flags (dtlive.core.quality): each flag on synthetic windows, none on steady simulated data
(except the simulator's three noisy channels), and the ~210 s gap of the real run 591."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pandas as pd
import pytest
from datafiles import RUN_CSV

from dtlive.core import detector as det
from dtlive.core.decode import read_csv
from dtlive.core.messages import decode_message, encode_message, iso_utc
from dtlive.core.products import compute_products
from dtlive.core.quality import Period, QualityMonitor, neighbour_median
from dtlive.core.rows import Rows, clean
from dtlive.core.windows import EventTimeWindows
from dtlive.streaming.nodes import window_dataset

T0 = 1_700_000_000.0
W = 2.0
ORBITS = det.orbits_for_seconds(W)
EPOCH = 1.7e9


def base_occupancy(wid: int, mean: float = 20.0) -> np.ndarray:
    """Steady Poisson counts (chamber, channel) of one window."""
    return np.random.default_rng(wid).poisson(mean, (det.N_CHAMBERS, det.CHANNELS_PER_CHAMBER))


_MESSAGES: dict[tuple, dict] = {}


def message(wid: int, occ: np.ndarray | None = None, processor: str = "p") -> dict:
    """A real dtlive.monitor/1 message of the 2 s window ``wid`` (starting at T0 + 2 wid) with these counts."""
    occ = base_occupancy(wid) if occ is None else occ
    key = (wid, occ.tobytes(), processor)
    if key not in _MESSAGES:  # the monitor never changes a message: share them between tests
        _MESSAGES[key] = _message(wid, occ, processor)
    return _MESSAGES[key]


def _message(wid: int, occ: np.ndarray, processor: str) -> dict:
    flat = occ.ravel()
    cell = np.repeat(np.arange(flat.size), flat)  # chamber * 64 + channel
    chamber, local = cell // 64, cell % 64
    n = len(cell)
    orbit = wid * ORBITS + np.random.default_rng(wid + 7).integers(0, ORBITS, n)
    hits = Rows.from_columns(head=np.full(n, 2), fpga=chamber // 2, channel=(chamber % 2) * 64 + local, orbit=orbit,
                             bx=np.zeros(n, int), tdc=np.zeros(n, int))
    ds = compute_products(hits)
    ds.attrs.update(window_id=wid, first_orbit=wid * ORBITS, last_orbit=(wid + 1) * ORBITS - 1,
                    window_start=iso_utc(T0 + W * wid), window_end=iso_utc(T0 + W * wid + W),
                    provenance=json.dumps({"processor": processor}), rejected_by_reason="{}")
    return decode_message(encode_message(ds))


def run(msgs: list[dict], batch: int | None = None, **kw) -> tuple[list[Period], QualityMonitor]:
    qm = QualityMonitor(**kw)
    out = []
    step = batch or max(len(msgs), 1)
    for i in range(0, len(msgs), step):
        out += qm.check(msgs[i : i + step])
    return out + qm.flush(), qm


def summary(periods: list[Period]) -> list[tuple]:
    return [(p.reason, round(p.start - T0, 3), round(p.end - T0, 3)) for p in periods]


def test_steady_windows_raise_nothing():
    periods, qm = run([message(i) for i in range(60)])
    assert periods == [] and qm.windows_seen == 60 and qm.open_periods == []


def test_data_gap_between_published_windows_is_one_period():
    msgs = [message(i) for i in range(20)] + [message(i) for i in range(30, 40)]
    periods, _ = run(msgs)
    assert summary(periods) == [("data_gap", 40.0, 60.0)]
    gap = periods[0]
    assert gap.kind == "bad" and gap.automatic and gap.duration == pytest.approx(20.0)
    assert gap.detail["last_window_id"] == 19 and gap.detail["next_window_id"] == 30
    # a hole shorter than gap_s is not a gap
    assert run([message(i) for i in range(10)] + [message(i) for i in range(14, 20)])[0] == []


def test_windows_with_zero_hits_count_as_gap():
    empty = np.zeros((4, 64), int)
    msgs = [message(i) for i in range(10)] + [message(i, empty) for i in range(10, 17)] + [
        message(i) for i in range(17, 25)]
    periods, _ = run(msgs)
    assert summary(periods) == [("data_gap", 20.0, 34.0)]
    assert periods[0].detail["windows_without_hits"] == 7


def test_ongoing_gap_is_open_then_closed_once():
    qm = QualityMonitor()
    assert qm.check([message(i) for i in range(10)]) == []
    assert qm.check([], now=T0 + 40) == []
    (gap,) = qm.open_periods
    assert (gap.reason, gap.start, gap.end, gap.detail["ongoing"]) == ("data_gap", T0 + 20, T0 + 40, True)
    closed = qm.check([message(i) for i in range(30, 35)])
    assert summary(closed) == [("data_gap", 20.0, 60.0)] and qm.open_periods == []
    assert qm.flush() == []


def test_chamber_going_silent():
    def occ(i, factor):
        o = base_occupancy(i)
        o[2] = (o[2] * factor).astype(int)
        return o

    msgs = [message(i, occ(i, 0 if 20 <= i < 30 else 1)) for i in range(40)]
    periods, _ = run(msgs)
    # a quarter of the hits gone is also a (down) rate jump over the same windows
    assert summary(periods) == [("chamber_silent", 40.0, 60.0), ("rate_jump", 40.0, 60.0)]
    p = periods[0]
    assert p.detail["chamber"] == 2 and p.detail["windows"] == 10 and p.kind == "bad"
    assert periods[1].detail["direction"] == "down" and periods[1].kind == "warning"
    # two silent windows are not enough (silent_windows=3) ...
    two = run([message(i, occ(i, 0 if i in (20, 21) else 1)) for i in range(30)])[0]
    assert [p.reason for p in two] == ["rate_jump"]
    # ... and a chamber at < 1 % of its usual rate is silent too
    low = [message(i, occ(i, 1)) for i in range(20)]
    for i in range(20, 25):
        o = base_occupancy(i)
        o[2] = 0
        o[2, 5] = 3  # 3 hits instead of ~1280
        low.append(message(i, o))
    assert summary(run(low + [message(i) for i in range(25, 30)])[0])[0] == ("chamber_silent", 40.0, 50.0)
    # a chamber with ~2 hits a window has empty windows by chance: not silent (silent_min_expected=10)
    quiet = []
    for i in range(40):
        o = base_occupancy(i)
        o[3] = 0
        o[3, :2] = 0 if 20 <= i < 25 else 1
        quiet.append(message(i, o))
    assert "chamber_silent" not in [p.reason for p in run(quiet)[0]]


def test_noisy_channel_found_once_with_rate():
    def occ(i):
        o = base_occupancy(i)
        if 10 <= i < 30 and (i < 18 or i % 2 == 0):  # noisy, flickering in the second half, last in window 28
            o[1, 21] = 500
        return o

    periods, _ = run([message(i, occ(i)) for i in range(40)])
    assert summary(periods) == [("noisy_channel", 20.0, 58.0)]
    d = periods[0].detail
    assert (d["chamber"], d["channel"], d["tdc_channel"]) == (1, 21, 85)
    assert d["rate_hz"] == pytest.approx(250.0) and d["neighbour_rate_hz"] == pytest.approx(10.0, rel=0.3)
    assert periods[0].kind == "warning"


def test_neighbours_are_same_layer_channels():
    occ = np.zeros(64)
    occ[[1, 5, 9, 13, 17]] = [10, 20, 30, 40, 50]  # layer slot 1, cells 0..4
    ref = neighbour_median(occ, k=2)
    assert ref[9] == np.median([10, 20, 40, 50]) and ref[1] == np.median([20, 30]) and ref[8] == 0


def test_rate_jump_one_period_and_edges_not_judged():
    msgs = [message(i, base_occupancy(i) * (2 if 30 <= i < 40 else 1)) for i in range(60)]
    periods, _ = run(msgs)
    assert summary(periods) == [("rate_jump", 60.0, 80.0)]
    d = periods[0].detail
    assert d["direction"] == "up" and d["rate_hz"] == pytest.approx(2 * d["reference_rate_hz"], rel=0.05)
    # a half-empty window at each side of a data gap is an edge, not a rate jump
    edge = [message(i) for i in range(20)] + [message(20, base_occupancy(20) // 4),
                                              message(40, base_occupancy(40) // 3)]
    periods, _ = run(edge + [message(i) for i in range(41, 50)])
    assert summary(periods) == [("data_gap", 42.0, 80.0)]


def test_streaming_in_any_batches_gives_each_period_once():
    def occ(i):
        o = base_occupancy(i) * (2 if 50 <= i < 55 else 1)
        if 20 <= i < 30:
            o[3] = 0
        if i >= 60:
            o[0, 40] = 400
        return o

    msgs = [message(i, occ(i)) for i in list(range(40)) + list(range(46, 80))]
    whole, _ = run(msgs)
    assert sorted(p.reason for p in whole) == ["chamber_silent", "data_gap", "noisy_channel", "rate_jump", "rate_jump"]
    for batch in (1, 7):
        assert summary(run(msgs, batch=batch)[0]) == summary(whole)
    # repeats and shuffled batches: nothing twice
    qm = QualityMonitor()
    out = qm.check(msgs[:45]) + qm.check(msgs[30:50]) + qm.check(msgs[45:]) + qm.flush()
    assert summary(out) == summary(whole) and qm.skipped == 20
    # the noisy channel is still open at the end: visible before flush, returned by flush
    qm = QualityMonitor()
    qm.check(msgs)
    assert "noisy_channel" in [p.reason for p in qm.open_periods]


def simulated_messages(seconds: float, seed: int, rows_per_s: float) -> list[dict]:
    from dtlive.kafka.emulator import simulated_chunks

    w = EventTimeWindows.from_seconds(W, 0.5)
    closed = []
    for chunk in islice(simulated_chunks(seed=seed, chunk_s=10.0, rows_per_s=rows_per_s), int(seconds / 10)):
        hits, _ = clean(chunk.rows)
        closed += w.add(hits)[0]
    closed += w.flush()
    msgs = []
    for win in closed:
        win.meta = {"orbit_epoch": EPOCH}
        msgs.append(decode_message(encode_message(window_dataset(win, provenance={"processor": "sim"}))))
    return msgs


def test_simulated_data_flags_only_the_three_noisy_channels():
    from dtlive.core.simulate import channel_noise_rates

    seed, rows_per_s = 4, 1000.0  # the demo's rate: 3 minutes of windows
    msgs = simulated_messages(180, seed, rows_per_s)
    assert len(msgs) >= 88
    periods, _ = run(msgs, batch=30)
    assert {p.reason for p in periods} == {"noisy_channel"}
    rates = channel_noise_rates(seed=seed)  # the layout depends on the seed only, not on the rate
    top = np.argsort(rates.ravel())[-3:]  # index fpga * 128 + channel
    expected = {(int(i // 64), int(i % 64)) for i in top}
    found = {(p.detail["chamber"], p.detail["channel"]) for p in periods}
    assert found == expected
    assert len(periods) == 3  # each one period over the whole run


def replay_real_file() -> list[dict]:
    hits, _ = clean(read_csv(str(RUN_CSV)))
    w = EventTimeWindows.from_seconds(W, 0.5)
    closed = w.add(hits)[0] + w.flush()
    msgs = []
    for win in closed:
        win.meta = {"orbit_epoch": EPOCH}
        msgs.append(decode_message(encode_message(window_dataset(win, provenance={}))))
    return msgs


def test_real_run_gap_is_one_data_gap_at_the_right_place():
    msgs = replay_real_file()
    periods, _ = run(msgs, batch=5)
    gaps = [p for p in periods if p.reason == "data_gap"]
    assert len(gaps) == 1, periods
    # expected bounds from the file itself: the largest step between consecutive hit orbits
    orbits = np.sort(pd.read_csv(RUN_CSV, usecols=["ORBIT_CNT"])["ORBIT_CNT"].to_numpy(np.int64))
    i = int(np.argmax(np.diff(orbits)))
    last_before, first_after = (EPOCH + orbits[[i, i + 1]] * det.ORBIT_S).tolist()
    assert first_after - last_before == pytest.approx(210, abs=1)
    gap = gaps[0]
    # windows are 2 s wide: the flagged gap lies inside the true one, within a window of each edge
    assert last_before <= gap.start <= last_before + W
    assert first_after - W <= gap.end <= first_after
    assert gap.duration == pytest.approx(210, abs=2 * W)
    assert not [p for p in periods if p.reason in ("chamber_silent", "rate_jump")], periods
    # the run's persistently noisy channel (chamber 0, TDC channel 3: ~80 Hz against ~8 Hz) is found on both sides
    noisy = [p for p in periods if p.reason == "noisy_channel" and (p.detail["chamber"], p.detail["channel"]) == (0, 3)]
    assert len(noisy) == 2 and noisy[0].end <= gap.start < gap.end <= noisy[1].start
