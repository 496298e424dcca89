"""History store (dtlive.storage.history): round trip equal to to_dataset, time ranges, bad intervals, idempotence,
retention, empty results, and several writers (instances and processes) at once."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

import numpy as np
import pytest
import xarray as xr

from dtlive.core import detector as det
from dtlive.core.messages import decode_message, encode_message, iso_utc, to_dataset
from dtlive.core.products import compute_products
from dtlive.core.rows import Rows, clean
from dtlive.core.windows import EventTimeWindows
from dtlive.storage.history import HistoryStore, default_path, overlaps
from dtlive.streaming.nodes import window_dataset

T0 = 1_700_001_600.0  # 2023-11-14T22:40Z: 20 minutes before a full UTC hour
W = 2.0
ORBITS = det.orbits_for_seconds(W)


def message(wid: int, n_hits: int = 20, processor: str = "p", t0: float = T0, rejected: dict | None = None) -> dict:
    """A real dtlive.monitor/1 message of the 2 s window ``wid`` with hits spread over the chambers."""
    rng = np.random.default_rng(wid)
    ch = rng.integers(0, 256, n_hits)
    hits = Rows.from_columns(head=np.full(n_hits, 2), fpga=ch // 128, channel=ch % 128,
                             orbit=wid * ORBITS + rng.integers(0, ORBITS, n_hits), bx=rng.integers(0, 3564, n_hits),
                             tdc=rng.integers(0, 30, n_hits))
    ds = compute_products(hits)
    ds["rows"] = ((), np.int64(n_hits + 3))
    ds["ancillary"] = ((), np.int64(3))
    ds.attrs.update(window_id=wid, first_orbit=wid * ORBITS, last_orbit=(wid + 1) * ORBITS - 1,
                    window_start=iso_utc(t0 + W * wid), window_end=iso_utc(t0 + W * wid + W),
                    provenance=json.dumps({"processor": processor, "inputs": [{"first_offset": wid}]}),
                    rejected_by_reason=json.dumps(rejected if rejected is not None else {}))
    return decode_message(encode_message(ds))


@pytest.fixture(scope="module")
def sim_messages() -> list[dict]:
    """Real windows of the simulator (scintillator, drift times, ancillary rows, rejects by reason)."""
    from dtlive.core.simulate import simulate

    rows = simulate(8.0, seed=5)
    hits, anc = clean(rows)
    w = EventTimeWindows.from_seconds(W, 0.5)
    closed = w.add(hits)[0] + w.flush()
    out = []
    for i, win in enumerate(closed):
        win.meta = {"orbit_epoch": 1.7e9, "counts": {"rows": len(win.hits) + 5, "ancillary": 5,
                                                      **({"rejected.bad_value": 2} if i % 2 else {})}}
        out.append(decode_message(encode_message(window_dataset(win, provenance={"processor": "sim", "topic": "t"}))))
    return out


def test_round_trip_equals_to_dataset(tmp_path, sim_messages):
    msgs = [message(i, rejected={"late": i} if i % 3 == 0 else {}) for i in range(95)]
    store = HistoryStore(tmp_path / "h")
    for i in range(0, len(msgs), 30):
        assert store.append(msgs[i : i + 30]) == len(msgs[i : i + 30])
    xr.testing.assert_identical(store.load(), to_dataset(msgs))
    sim = HistoryStore(tmp_path / "sim")
    sim.append([encode_message_dict(m) for m in sim_messages])  # raw JSON is accepted too
    got = sim.load()
    xr.testing.assert_identical(got, to_dataset(sim_messages))
    assert int(got.drift_time_ns.sum()) > 0 and got.sizes["reason"] == 1
    # a single window still comes back stacked along time
    one = HistoryStore(tmp_path / "one")
    one.append(msgs[:1])
    xr.testing.assert_identical(one.load(), to_dataset(msgs[:1], stack=True))


def encode_message_dict(m: dict) -> bytes:
    return json.dumps(m).encode()


def test_time_range_selection_across_hours(tmp_path):
    msgs = [message(i) for i in range(0, 1500, 6)]  # 50 minutes, across an hour boundary (T0 + 1200 s)
    store = HistoryStore(tmp_path)
    for i in range(0, len(msgs), 30):
        store.append(msgs[i : i + 30])
    start, end = T0 + 1000, T0 + 2000
    sub = [m for m in msgs if start <= T0 + W * m["window"]["id"] < end]
    xr.testing.assert_identical(store.load(start, end), to_dataset(sub))
    xr.testing.assert_identical(store.load(iso_utc(start), datetime.fromtimestamp(end, UTC)), to_dataset(sub))
    xr.testing.assert_identical(store.load(np.datetime64(int(start * 1000), "ms")), to_dataset(
        [m for m in msgs if T0 + W * m["window"]["id"] >= start]))
    assert store.load(end=T0) is None and store.load(start=T0 + 1e6) is None
    # the finished hour was compacted into one file, the current one holds few
    files = sorted(p.name for p in tmp_path.rglob("*.arrow"))
    assert len(files) <= 1 + store.compact_parts and sum(".c." in f for f in files) >= 1


def test_exclude_bad_intervals_list_and_callable(tmp_path):
    msgs = [message(i) for i in range(20)]
    store = HistoryStore(tmp_path)
    store.append(msgs)
    bad = [(T0 + 9.0, T0 + 10.0), (T0 + 30.5, T0 + 33.0), (T0 + 100, T0 + 200)]  # windows 4, 15 and 16
    ds = store.load(exclude_bad=True, bad_intervals=bad)
    assert ds.window_id.values.tolist() == [i for i in range(20) if i not in (4, 15, 16)]
    assert store.load(bad_intervals=bad).sizes["time"] == 20  # not excluded unless asked
    asked = []

    def ledger(a: float, b: float) -> list[tuple[float, float]]:
        asked.append((a, b))
        return [(T0 + 4.0, T0 + 6.0)]  # exactly window 2; touching windows 1 and 3 stay

    ds = store.load(T0 + 2, T0 + 20, exclude_bad=True, bad_intervals=ledger)
    assert ds.window_id.values.tolist() == [1, 3, 4, 5, 6, 7, 8, 9] and asked == [(T0 + 2, T0 + 20)]
    assert store.load(exclude_bad=True, bad_intervals=[(T0 - 1, T0 + 100)]) is None
    with pytest.raises(ValueError, match="bad_intervals"):
        store.load(exclude_bad=True)


def test_overlaps_merges_intervals():
    start = np.arange(0.0, 10.0, 2.0)
    assert overlaps(start, start + 2, [(5, 6), (1, 2.5), (2.2, 3), (20, 30)]).tolist() == [
        True, True, True, False, False]
    assert overlaps(start, start + 2, []).tolist() == [False] * 5


def test_append_is_idempotent(tmp_path):
    msgs = [message(i) for i in range(40)]
    store = HistoryStore(tmp_path, compact_parts=3)
    assert store.append(msgs[:30]) == 30
    assert store.append(msgs[:30]) == 0
    assert store.append(msgs[20:40] + msgs[35:40]) == 10  # repeats inside a batch too
    assert HistoryStore(tmp_path).append(msgs) == 0  # a new instance knows what is on disk
    store.append([message(5, processor="other")])  # another processor's window 5 is another window
    ds = store.load()
    assert ds.sizes["time"] == 41 and store.windows() == 41
    mine = [i for i, p in enumerate(ds.provenance.values) if json.loads(p)["processor"] == "p"]
    xr.testing.assert_identical(ds.isel(time=mine), to_dataset(msgs))


def test_retention_deletes_old_hours(tmp_path):
    now = time.time()
    old = [message(i, t0=now - 5 * 86400) for i in range(10)]
    recent = [message(i, t0=now - 3600) for i in range(10, 20)]
    keep_all = HistoryStore(tmp_path)  # no retention set: keeps everything
    keep_all.append(old)
    keep_all.append(recent)
    assert keep_all.load().sizes["time"] == 20 and keep_all.enforce_retention() == 0
    store = HistoryStore(tmp_path, retention_days=2)
    assert store.enforce_retention(now=now) >= 1
    assert store.load().window_id.values.tolist() == list(range(10, 20))
    assert store.enforce_retention(now=now) == 0
    # appends enforce it by themselves (wall clock) when they open a new hour
    store.append([message(i, t0=now - 4 * 86400) for i in range(30, 35)])
    assert store.load().window_id.values.tolist() == list(range(10, 20))
    assert store.enforce_retention(now=now + 10 * 86400) >= 1 and store.load() is None
    with pytest.raises(ValueError):
        HistoryStore(tmp_path, retention_days=0)


def test_empty_store_gives_none_and_default_path(tmp_path, monkeypatch):
    store = HistoryStore(tmp_path / "never-written")
    assert store.load() is None and store.windows() == 0 and store.append([]) == 0
    monkeypatch.setenv("DTLIVE_HISTORY", str(tmp_path / "env"))
    assert default_path() == tmp_path / "env" and HistoryStore().path == tmp_path / "env"
    monkeypatch.delenv("DTLIVE_HISTORY")
    assert default_path().parts[-2:] == ("dtlive", "history")


def test_windows_without_time_are_kept_undated(tmp_path):
    m = message(3)
    m["window"]["start"] = m["window"]["end"] = None
    store = HistoryStore(tmp_path)
    store.append([m, message(4)])
    ds = store.load()
    assert ds.window_id.values.tolist() == [3, 4] and np.isnat(ds.time.values[0])
    assert store.load(start=T0).window_id.values.tolist() == [4]


def test_two_instances_interleaved(tmp_path):
    a, b = HistoryStore(tmp_path, compact_parts=2), HistoryStore(tmp_path, compact_parts=2)
    msgs = [message(i) for i in range(60)]
    for i in range(0, 60, 10):
        a.append(msgs[i : i + 10])
        b.append(msgs[max(0, i - 5) : i + 5])  # overlaps what a wrote and what a will write
    xr.testing.assert_identical(HistoryStore(tmp_path).load(), to_dataset(msgs))


T_PROC = T0 + 1000  # the two-process windows cross the hour at T0 + 1200


def _writer(path: str, first: int, last: int, seed: int) -> int:
    store = HistoryStore(path, compact_parts=2)
    order = np.random.default_rng(seed).permutation(np.arange(first, last))
    n = 0
    for i in range(0, len(order), 8):
        n += store.append([message(int(w), t0=T_PROC) for w in sorted(order[i : i + 8])])
    return n


@pytest.mark.slow
def test_two_processes_append_at_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        futs = [pool.submit(_writer, str(tmp_path), 0, 140, 1), pool.submit(_writer, str(tmp_path), 60, 200, 2)]
        written = [f.result(timeout=120) for f in futs]
    assert 200 <= sum(written) <= 280  # the overlap 60..139 may be written by both; load keeps one copy
    store = HistoryStore(tmp_path)
    xr.testing.assert_identical(store.load(), to_dataset([message(i, t0=T_PROC) for i in range(200)]))
    store.compact()
    hours = {int((T_PROC + W * i) // 3600) for i in range(200)}
    assert len(hours) == 2 and len(list(tmp_path.rglob("*.arrow"))) == 2  # one file per hour
    assert store.windows() == 200 and not list((tmp_path / ".tmp").iterdir())
    assert os.path.exists(tmp_path / ".lock")
