"""The dtlive.monitor/1 result message <-> xarray."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datafiles import RUN_CSV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtlive.core import detector as det
from dtlive.core.decode import read_csv
from dtlive.core.messages import decode_message, encode_message, message_bytes, message_from_arrays, to_dataset
from dtlive.core.products import PRODUCTS, REGISTRY, compute_products
from dtlive.core.products.kernel import DRIFT_EDGES_NS
from dtlive.core.rows import Rows, clean
from dtlive.core.simulate import SimConfig, simulate

COUNT_NAMES = ("rows", "ancillary", "special_channel_hits", "late_hits")
HISTOGRAMS = ("channel_occupancy", "active_channels_per_orbit", "scint_channel_occupancy", "drift_time_ns")


def random_hits(seed: int, n: int, first_orbit: int, n_orbits: int) -> Rows:
    rng = np.random.default_rng(seed)
    fpga = rng.integers(0, 2, n)
    channel = rng.integers(0, 128, n)
    special = rng.random(n) < 0.1
    channel[special] = rng.choice([128, 138], special.sum())
    fpga[channel == 128] = 1  # scintillator hits (and a few FPGA-0 ch 138)
    return Rows.from_columns(
        head=np.full(n, 2), fpga=fpga, channel=channel,
        orbit=first_orbit + rng.integers(0, n_orbits, n), bx=rng.integers(0, 3564, n), tdc=rng.integers(0, 30, n),
    )


def window_ds(hits: Rows, wid: int, n_orbits: int = 1000, counts=None, rejected=None, start=True):
    ds = compute_products(hits)
    for i, k in enumerate(COUNT_NAMES):
        ds[k] = ((), np.int64((counts or {}).get(k, 10 * wid + i)))
    ds.attrs.update(
        window_id=wid, first_orbit=wid * n_orbits, last_orbit=(wid + 1) * n_orbits - 1,
        window_start=f"2024-05-0{1 + wid % 9}T10:00:00.000Z" if start else None,
        window_end=f"2024-05-0{1 + wid % 9}T10:00:02.000Z" if start else None,
        provenance=json.dumps({"inputs": [{"topic": "dt.hits", "partition": 0, "first_offset": wid,
                                           "last_offset": wid + 99}], "config_hash": "abc", "run_id": "r1"}),
        rejected_by_reason=json.dumps(rejected if rejected is not None else {"non_numeric": wid + 1, "late": 2}),
    )
    return ds


# --- round trip ---------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), n=st.integers(0, 3000), wid=st.integers(0, 10**6),
       counts=st.fixed_dictionaries({k: st.integers(0, 2**40) for k in COUNT_NAMES}),
       rejected=st.dictionaries(st.sampled_from(["empty", "non_numeric", "late", "out_of_range"]),
                                st.integers(1, 10**6)))
def test_single_window_round_trip_preserves_everything(seed, n, wid, counts, rejected):
    hits = random_hits(seed, n, wid * 1000, 1000)
    ds = window_ds(hits, wid, counts=counts, rejected=rejected)
    raw = encode_message(ds)
    back = to_dataset([raw])
    assert "time" not in back.dims
    for k in PRODUCTS:
        np.testing.assert_array_equal(back[k].values, ds[k].values, err_msg=k)
        assert back[k].dims == ds[k].dims
    for k in COUNT_NAMES:
        assert int(back[k]) == counts[k]
    assert int(back["rejected"]) == sum(rejected.values())
    assert json.loads(back.attrs["rejected_by_reason"]) == rejected
    assert json.loads(back.attrs["provenance"]) == json.loads(ds.attrs["provenance"])
    assert (back.attrs["window_id"], back.attrs["first_orbit"], back.attrs["last_orbit"]) == (
        wid, wid * 1000, wid * 1000 + 999)
    np.testing.assert_array_equal(back.drift_time_edges.values, ds.drift_time_edges.values)
    # encoding the decoded Dataset again gives the same message
    assert json.loads(encode_message(back)) == json.loads(raw)


def test_round_trip_keeps_custom_drift_binning():
    edges = np.array([-20.0, 0.0, 150.0, 400.0])
    ds = compute_products(random_hits(3, 500, 0, 50), drift_edges=edges)
    ds.attrs.update(window_id=1, first_orbit=0, last_orbit=49)
    msg = json.loads(encode_message(ds))
    assert msg["histograms"]["drift_time_ns"]["chamber_2"]["bin_edges"] == edges.tolist()
    back = to_dataset([msg])
    np.testing.assert_array_equal(back.drift_time_ns.values, ds.drift_time_ns.values)
    np.testing.assert_array_equal(back.drift_time_edges.values, edges)


# --- the JSON layout ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    hits = random_hits(7, 5000, 3_000_000_000, 200)  # orbits above 2^31
    return hits, json.loads(encode_message(window_ds(hits, 4)))


def test_message_top_level_follows_the_design(sample):
    hits, msg = sample
    assert msg["schema"] == "dtlive.monitor/1"
    assert set(msg["window"]) >= {"id", "first_orbit", "last_orbit", "start", "end"}
    assert msg["window"]["id"] == 4
    assert msg["provenance"]["inputs"][0] == {"topic": "dt.hits", "partition": 0, "first_offset": 4, "last_offset": 103}
    assert msg["total_hits"] == len(hits)
    in_chamber = hits.channel < 128
    chamber = 2 * hits.fpga[in_chamber] + hits.channel[in_chamber] // 64
    assert msg["hits_per_chamber"] == [int((chamber == c).sum()) for c in range(4)]
    assert set(msg["counts"]) >= {"rows", "rejected", "ancillary", "special_channel_hits", "late_hits"}
    assert msg["counts"]["rejected"] == {"non_numeric": 5, "late": 2}
    assert set(msg["histograms"]) >= set(HISTOGRAMS)
    for name in HISTOGRAMS:
        assert sorted(msg["histograms"][name]) == ["chamber_0", "chamber_1", "chamber_2", "chamber_3"]


def test_occupancy_edges_are_tdc_channel_values(sample):
    hits, msg = sample
    for name in ("channel_occupancy", "scint_channel_occupancy"):
        for c in range(4):
            entry = msg["histograms"][name][f"chamber_{c}"]
            first = 64 if c in (1, 3) else 0
            assert entry["bin_edges"] == list(range(first, first + 65))
            assert len(entry["bin_counts"]) == 64
    # bin i of chamber c counts hits on FPGA c // 2 with TDC_CHANNEL == bin_edges[i]
    for c in range(4):
        entry = msg["histograms"]["channel_occupancy"][f"chamber_{c}"]
        expected = [int(((hits.fpga == c // 2) & (hits.channel == e)).sum()) for e in entry["bin_edges"][:-1]]
        assert entry["bin_counts"] == expected


def test_multiplicity_edges_and_meaning(sample):
    hits, msg = sample
    for c in range(4):
        entry = msg["histograms"]["active_channels_per_orbit"][f"chamber_{c}"]
        assert entry["bin_edges"] == list(range(1, 66))
        sel = (hits.fpga == c // 2) & (hits.channel // 64 == c % 2) & (hits.channel < 128)
        per_orbit = {}
        for o, ch in zip(hits.orbit[sel].tolist(), hits.channel[sel].tolist()):
            per_orbit.setdefault(o, set()).add(ch)
        expected = [sum(1 for s in per_orbit.values() if len(s) == k) for k in entry["bin_edges"][:-1]]
        assert entry["bin_counts"] == expected


def test_drift_histogram_entries_carry_under_and_overflow(sample):
    _, msg = sample
    for c in range(4):
        entry = msg["histograms"]["drift_time_ns"][f"chamber_{c}"]
        assert entry["bin_edges"] == [-100.0 + 5.0 * i for i in range(121)]
        assert len(entry["bin_counts"]) == 120
        assert isinstance(entry["underflow"], int) and isinstance(entry["overflow"], int)
    total = sum(
        sum(e["bin_counts"]) + e["underflow"] + e["overflow"] for e in msg["histograms"]["drift_time_ns"].values()
    )
    assert total == sum(sum(e["bin_counts"]) for e in msg["histograms"]["scint_channel_occupancy"].values()) > 0


# --- stacking ----------------------------------------------------------------------------------------------


def test_stacking_windows_sorts_by_window_id():
    wids = [7, 2, 5, 3]
    all_hits = {w: random_hits(w, 100 * w, w * 1000, 1000) for w in wids}
    msgs = [encode_message(window_ds(all_hits[w], w)) for w in wids]
    ds = to_dataset(msgs)
    assert ds.sizes["time"] == 4
    assert ds.window_id.values.tolist() == [2, 3, 5, 7]
    assert ds.first_orbit.values.tolist() == [2000, 3000, 5000, 7000]
    assert ds.total_hits.values.tolist() == [200, 300, 500, 700]
    assert ds.time.dtype.kind == "M"
    assert ds.time.values[0] == np.datetime64("2024-05-03T10:00:00.000")
    assert ds.window_end.values[-1] == np.datetime64("2024-05-08T10:00:02.000")
    for i, w in enumerate([2, 3, 5, 7]):
        single = compute_products(all_hits[w])
        for k in PRODUCTS:
            np.testing.assert_array_equal(ds[k].isel(time=i).values, single[k].values, err_msg=f"{k} window {w}")
        assert int(ds.rows.isel(time=i)) == 10 * w
        assert int(ds.rejected.isel(time=i)) == w + 1 + 2
        assert ds.rejected_by_reason.isel(time=i).sel(reason="non_numeric").item() == w + 1
        assert json.loads(ds.provenance.values[i])["inputs"][0]["first_offset"] == w
    assert ds.reason.values.tolist() == ["late", "non_numeric"]
    assert ds.channel_occupancy.dims == ("time", "chamber", "channel")
    # sum over the windows == the products of all hits at once (additivity through the messages)
    whole = compute_products(Rows.concat(list(all_hits.values())))
    for k in PRODUCTS:
        np.testing.assert_array_equal(ds[k].sum("time").values, whole[k].values, err_msg=k)


def test_one_message_stacked_on_request_and_windows_without_times():
    raw = encode_message(window_ds(random_hits(1, 50, 0, 10), 0, start=False))
    ds = to_dataset([raw], stack=True)
    assert ds.sizes["time"] == 1 and ds.window_id.values.tolist() == [0]
    assert np.isnat(ds.time.values[0])
    two = to_dataset([raw, json.loads(raw)])
    assert two.sizes["time"] == 2
    clean = to_dataset([encode_message(window_ds(random_hits(2, 5, 0, 10), w, rejected={})) for w in (0, 1)])
    assert clean.rejected_by_reason.shape == (2, 0)  # no rejects: an empty reason dimension, not an error


def test_to_dataset_takes_kafka_like_messages():
    class FakeMessage:
        def __init__(self, value):
            self._value = value

        def value(self):
            return self._value

    raw = encode_message(window_ds(random_hits(2, 80, 1000, 1000), 1))
    ds = to_dataset([FakeMessage(raw)])
    assert int(ds.total_hits) == 80


# --- not a dtlive message ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [b"{}", b'{"schema": "dtlive.monitor/2"}', b'{"schema": "other", "total_hits": 1}', b"[1, 2]", b'"a string"',
     b"not json", b"\xff\xfe", b"", "null", {"schema": None}, {"window": {}}],
)
def test_decode_message_rejects_non_dtlive_values(value):
    with pytest.raises(ValueError):
        decode_message(value)
    with pytest.raises(ValueError):
        to_dataset([value])


def test_decode_message_accepts_all_three_input_types():
    raw = encode_message(window_ds(random_hits(5, 10, 0, 10), 0))
    for value in (raw, raw.decode(), json.loads(raw)):
        assert decode_message(value)["schema"] == "dtlive.monitor/1"


def test_to_dataset_of_nothing_raises():
    with pytest.raises(ValueError):
        to_dataset([])


def test_a_message_with_its_variables_as_arrays_encodes_to_the_same_bytes():
    """The processor keeps the reconstruction's variables as arrays and lets orjson write them: the bytes on the
    wire are those of the nested lists, on real hits (run 591) and on dense simulation."""
    run, _ = clean(read_csv(str(RUN_CSV)))
    wid = run.orbit // det.orbits_for_seconds(2.0)
    windows = [run.select(wid == w) for w in np.unique(wid)[:4]]
    windows.append(clean(simulate(0.2, seed=4, config=SimConfig(hit_rate_hz=250_000, muon_rate_hz=5_000)))[0])
    for i, hits in enumerate(windows):
        arrays = REGISTRY.compute(hits)
        attrs = {"window_id": i, "provenance": json.dumps({"processor": "p"})}
        fast = message_from_arrays(arrays, DRIFT_EDGES_NS, attrs, variables_as_arrays=True)
        assert fast["variables"] and all(isinstance(v, np.ndarray | int) for v in fast["variables"].values())
        assert message_bytes(fast) == message_bytes(message_from_arrays(arrays, DRIFT_EDGES_NS, attrs))
