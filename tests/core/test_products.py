"""The six per-window products against independent pandas computations and hand-made cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from datafiles import RUN_CSV  # noqa: E402
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtlive.core.products import compute_arrays, compute_products
from dtlive.core.rows import Rows

# Written out here from the detector's documentation: per-chamber t0 offsets (ns) and time units.
OFFSET_NS = {0: 95.0 - 1.1, 1: 95.0 + 6.4, 2: 95.0 + 0.5, 3: 95.0 - 2.6}
EDGES = np.arange(-100.0, 500.0 + 1e-9, 5.0)


def rows_from_df(df: pd.DataFrame) -> Rows:
    return Rows.from_columns(
        head=df.HEAD.to_numpy(), fpga=df.FPGA.to_numpy(), channel=df.TDC_CHANNEL.to_numpy(),
        orbit=df.ORBIT_CNT.to_numpy(), bx=df.BX_COUNTER.to_numpy(), tdc=df.TDC_MEAS.to_numpy(),
    )


def hits(*rows) -> Rows:
    """Hits from (fpga, channel, orbit, bx, tdc) tuples."""
    cols = np.array(rows, np.int64).reshape(-1, 5)
    return Rows.from_columns(head=np.full(len(cols), 2), fpga=cols[:, 0], channel=cols[:, 1], orbit=cols[:, 2],
                             bx=cols[:, 3], tdc=cols[:, 4])


@pytest.fixture(scope="module")
def run_df() -> pd.DataFrame:
    if not RUN_CSV.exists():
        pytest.skip("shared data not available")
    df = pd.read_csv(RUN_CSV)
    df["chamber"] = np.where(df.TDC_CHANNEL < 128, 2 * df.FPGA + df.TDC_CHANNEL // 64, -1)
    return df


@pytest.fixture(scope="module")
def run_with_scint(run_df) -> pd.DataFrame:
    """The real hits plus synthetic scintillator hits (FPGA 1 ch 128) in ~30 % of the orbits, some doubled."""
    rng = np.random.default_rng(591)
    first_bx = run_df.groupby("ORBIT_CNT").BX_COUNTER.min()
    chosen = first_bx[rng.random(len(first_bx)) < 0.3]
    n = len(chosen)
    near = rng.random(n) < 0.7  # most of them just before the first hit, the rest anywhere in the orbit
    bx = np.where(near, np.clip(chosen.to_numpy() - rng.integers(0, 16, n), 0, 3563), rng.integers(0, 3564, n))
    scint = pd.DataFrame({"HEAD": 2, "FPGA": 1, "TDC_CHANNEL": 128, "ORBIT_CNT": chosen.index.to_numpy(),
                          "BX_COUNTER": bx, "TDC_MEAS": rng.integers(0, 30, n), "chamber": -1})
    doubled = scint.sample(frac=0.2, random_state=1).assign(
        BX_COUNTER=lambda d: np.clip(d.BX_COUNTER + rng.integers(-5, 6, len(d)), 0, 3563),
        TDC_MEAS=lambda d: rng.integers(0, 30, len(d)),
    )
    both = pd.concat([run_df, scint, doubled], ignore_index=True)
    return both.sample(frac=1.0, random_state=2).reset_index(drop=True)  # shuffle: products must not need order


# --- whole real file -------------------------------------------------------------------------------------------


def test_whole_file_totals(run_df):
    a = compute_arrays(rows_from_df(run_df))
    assert int(a["total_hits"]) == len(run_df) == 159_616
    per_chamber = run_df[run_df.chamber >= 0].chamber.value_counts().reindex(range(4), fill_value=0).to_numpy()
    np.testing.assert_array_equal(a["hits_per_chamber"], per_chamber)
    np.testing.assert_array_equal(a["hits_per_chamber"], [24_253, 35_907, 60_564, 36_572])  # README figures


def test_whole_file_occupancy_per_tdc_channel(run_df):
    ds = compute_products(rows_from_df(run_df))
    inside = run_df[run_df.chamber >= 0]
    expected = inside.groupby(["chamber", "TDC_CHANNEL"]).size()
    got = ds.channel_occupancy
    assert got.sum() == len(inside)
    for (chamber, tdc_channel), n in expected.items():
        sel = got.where(ds.tdc_channel == tdc_channel).sel(chamber=chamber)
        assert int(sel.sum()) == n, (chamber, tdc_channel)
    # zero where pandas saw nothing, and the tdc_channel coordinate is the raw TDC_CHANNEL (chambers 1, 3: 64..127)
    assert int((got > 0).sum()) == len(expected)
    np.testing.assert_array_equal(ds.tdc_channel.sel(chamber=1), np.arange(64, 128))
    np.testing.assert_array_equal(ds.tdc_channel.sel(chamber=2), np.arange(0, 64))


def test_whole_file_multiplicity(run_df):
    a = compute_arrays(rows_from_df(run_df))
    inside = run_df[run_df.chamber >= 0]
    distinct = inside.groupby(["ORBIT_CNT", "chamber"]).TDC_CHANNEL.nunique()
    expected = np.zeros((4, 64), np.int64)
    for (chamber, k), n in distinct.groupby(level="chamber").value_counts().items():
        expected[chamber, k - 1] = n
    np.testing.assert_array_equal(a["active_channels_per_orbit"], expected)
    assert a["active_channels_per_orbit"].sum() == len(distinct)
    # no scintillator in the real run: the extras are empty
    assert a["scint_channel_occupancy"].sum() == 0
    assert a["drift_time_ns"].sum() + a["drift_time_ns_underflow"].sum() + a["drift_time_ns_overflow"].sum() == 0


def independent_drift(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scint-selected occupancy, drift histogram, underflow, overflow with pandas, times relative to the orbit."""
    df = df.assign(t=25.0 * df.BX_COUNTER + df.TDC_MEAS * 25.0 / 30.0)
    scint = df[(df.FPGA == 1) & (df.TDC_CHANNEL == 128)].groupby("ORBIT_CNT").t.min().rename("t_scint")
    sel = df[df.chamber >= 0].join(scint, on="ORBIT_CNT", how="inner")
    occ = np.zeros((4, 64), np.int64)
    for (chamber, channel), n in sel.groupby(["chamber", sel.TDC_CHANNEL % 64]).size().items():
        occ[chamber, channel] = n
    dt = sel.t - (sel.t_scint - sel.chamber.map(OFFSET_NS))
    hist = np.zeros((4, len(EDGES) - 1), np.int64)
    under, over = np.zeros(4, np.int64), np.zeros(4, np.int64)
    for chamber, d in zip(sel.chamber, dt):
        if d < EDGES[0]:
            under[chamber] += 1
        elif d >= EDGES[-1]:
            over[chamber] += 1
        else:
            hist[chamber, int((d - EDGES[0]) // 5.0)] += 1
    return occ, hist, under, over


def test_scint_products_on_real_hits_with_synthetic_scintillator(run_with_scint):
    a = compute_arrays(rows_from_df(run_with_scint))
    occ, hist, under, over = independent_drift(run_with_scint)
    assert occ.sum() > 1000 and under.sum() > 0 and over.sum() > 0 and hist.sum() > 0
    np.testing.assert_array_equal(a["scint_channel_occupancy"], occ)
    np.testing.assert_array_equal(a["drift_time_ns"], hist)
    np.testing.assert_array_equal(a["drift_time_ns_underflow"], under)
    np.testing.assert_array_equal(a["drift_time_ns_overflow"], over)
    assert int(a["total_hits"]) == len(run_with_scint)
    assert a["hits_per_chamber"].sum() == int((run_with_scint.chamber >= 0).sum())


# --- additivity --------------------------------------------------------------------------------------------------


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_products_of_orbit_aligned_chunks_add_up_to_the_whole(run_with_scint, data):
    rows = rows_from_df(run_with_scint)
    whole = compute_arrays(rows)
    lo, hi = int(rows.orbit.min()), int(rows.orbit.max()) + 1
    mode = data.draw(st.sampled_from(["regular", "random"]))
    if mode == "regular":
        size = data.draw(st.integers(1_000, 3_000_000))
        cuts = np.arange((lo // size + 1) * size, hi, size)
    else:
        cuts = np.unique(data.draw(st.lists(st.integers(lo, hi), max_size=300)))
    chunk = np.searchsorted(cuts, rows.orbit, side="right")  # each orbit falls in exactly one chunk
    total = {k: np.zeros_like(v) for k, v in whole.items()}
    n_chunks = 0
    for c in np.unique(chunk):
        part = compute_arrays(rows.select(chunk == c))
        n_chunks += 1
        for k in total:
            total[k] = total[k] + part[k]
    for k in whole:
        np.testing.assert_array_equal(total[k], whole[k], err_msg=k)
    assert n_chunks == len(np.unique(chunk))


def test_non_aligned_split_breaks_multiplicity_so_the_check_can_fail():
    """Splitting one orbit's hits across chunks double-counts orbits: the additivity check above would notice."""
    h = hits((0, 1, 10, 0, 0), (0, 2, 10, 0, 0))
    one = compute_arrays(h)["active_channels_per_orbit"]
    split = compute_arrays(h.select(np.array([True, False])))["active_channels_per_orbit"] + compute_arrays(
        h.select(np.array([False, True]))
    )["active_channels_per_orbit"]
    assert not np.array_equal(one, split)


# --- hand-made cases ------------------------------------------------------------------------------------------


def test_multiplicity_counts_distinct_channels_per_orbit_and_chamber():
    h = hits(
        (0, 5, 100, 1, 0), (0, 5, 100, 9, 3), (0, 6, 100, 2, 0),  # chamber 0, orbit 100: channels {5, 6} -> 2
        (0, 70, 100, 2, 0),  # chamber 1, orbit 100 -> 1
        (0, 5, 101, 0, 0),  # chamber 0, orbit 101 -> 1
        (1, 0, 101, 0, 0), (1, 1, 101, 0, 0), (1, 2, 101, 0, 0), (1, 3, 101, 0, 0),  # chamber 2 -> 4
        (1, 138, 101, 0, 0), (1, 128, 101, 0, 0), (0, 130, 101, 0, 0),  # special channels: no chamber
        (1, 127, 2**32 - 1, 0, 0),  # chamber 3 at the highest orbit -> 1
    )
    a = compute_arrays(h)
    expected = np.zeros((4, 64), np.int64)
    expected[0, 2 - 1] = 1
    expected[0, 1 - 1] = 1
    expected[1, 1 - 1] = 1
    expected[2, 4 - 1] = 1
    expected[3, 1 - 1] = 1
    np.testing.assert_array_equal(a["active_channels_per_orbit"], expected)
    assert int(a["total_hits"]) == 13
    np.testing.assert_array_equal(a["hits_per_chamber"], [4, 1, 4, 1])
    occ = np.zeros((4, 64), np.int64)
    occ[0, 5], occ[0, 6], occ[1, 6], occ[2, [0, 1, 2, 3]], occ[3, 63] = 3, 1, 1, 1, 1
    np.testing.assert_array_equal(a["channel_occupancy"], occ)


def test_all_64_channels_active_in_one_orbit():
    h = hits(*[(1, 64 + c, 7, 0, 0) for c in range(64)])  # chamber 3
    a = compute_arrays(h)
    assert a["active_channels_per_orbit"][3, 63] == 1
    assert a["active_channels_per_orbit"].sum() == 1


SCINT_CASE = [
    # orbit 100: two scintillator hits, the earliest at bx 10 (t = 250 ns)
    (1, 128, 100, 12, 0), (1, 128, 100, 10, 0),
    (0, 5, 100, 14, 15),  # chamber 0: t = 362.5 -> 362.5 - 250 + 93.9 = 206.4
    (0, 70, 100, 12, 0),  # chamber 1: t = 300 -> 50 + 101.4 = 151.4
    (1, 3, 100, 30, 0),  # chamber 2: t = 750 -> 500 + 95.5 = 595.5 (overflow)
    (1, 127, 100, 9, 0),  # chamber 3: t = 225 -> -25 + 92.4 = 67.4
    # orbit 101: no scintillator (FPGA 0 ch 128 is not the scintillator)
    (0, 128, 101, 0, 0), (0, 5, 101, 20, 0), (1, 64, 101, 20, 0),
    # orbit 102: scintillator at bx 100 (t = 2500)
    (1, 128, 102, 100, 0),
    (0, 6, 102, 130, 0),  # chamber 0: 750 + 93.9 = 843.9 (overflow)
    (1, 10, 102, 90, 0),  # chamber 2: -250 + 95.5 = -154.5 (underflow)
    (1, 10, 102, 95, 6),  # chamber 2: 2375 + 5 - 2500 + 95.5 = -24.5
]


def test_scint_selected_occupancy_by_hand():
    a = compute_arrays(hits(*SCINT_CASE))
    expected = np.zeros((4, 64), np.int64)
    expected[0, 5] = expected[0, 6] = expected[1, 6] = expected[2, 3] = expected[3, 63] = 1
    expected[2, 10] = 2
    np.testing.assert_array_equal(a["scint_channel_occupancy"], expected)
    # the plain occupancy still counts orbit 101
    assert a["channel_occupancy"][0, 5] == 2 and a["channel_occupancy"][3, 0] == 1


def test_drift_time_histogram_by_hand():
    ds = compute_products(hits(*SCINT_CASE))
    d = ds.drift_time_ns
    expected = {0: [207.5], 1: [152.5], 2: [-22.5], 3: [67.5]}  # bin centres of 206.4, 151.4, -24.5, 67.4
    for chamber, centres in expected.items():
        nonzero = d.sel(chamber=chamber).where(d.sel(chamber=chamber) > 0, drop=True)
        np.testing.assert_allclose(nonzero.drift_time.values, centres)
        assert nonzero.values.tolist() == [1] * len(centres)
    assert ds.drift_time_ns_underflow.values.tolist() == [0, 0, 1, 0]
    assert ds.drift_time_ns_overflow.values.tolist() == [1, 0, 1, 0]
    assert ds.drift_time.attrs["units"] == "ns"


def test_drift_time_with_custom_edges_by_hand():
    a = compute_arrays(hits(*SCINT_CASE), drift_edges=np.array([-50.0, 0.0, 100.0, 200.0, 300.0]))
    np.testing.assert_array_equal(
        a["drift_time_ns"],
        [[0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]],  # 206.4 | 151.4 | -24.5 | 67.4
    )
    assert a["drift_time_ns_underflow"].tolist() == [0, 0, 1, 0]  # -154.5
    assert a["drift_time_ns_overflow"].tolist() == [1, 0, 1, 0]  # 843.9 | 595.5


def test_scint_in_a_huge_orbit_uses_exact_orbit_matching():
    """Orbits above 2^31 and neighbouring orbits must not be mixed up."""
    o = 3_387_200_973
    a = compute_arrays(hits((1, 128, o, 10, 0), (0, 1, o, 12, 0), (0, 2, o + 1, 12, 0), (0, 3, o - 1, 12, 0)))
    assert a["scint_channel_occupancy"][0].tolist() == [0, 1] + [0] * 62
    centre = EDGES[:-1] + 2.5
    assert centre[a["drift_time_ns"][0].argmax()] == 142.5  # 50 + 93.9 = 143.9
    assert a["drift_time_ns"].sum() == 1


def test_empty_hits_give_zero_products():
    a = compute_arrays(Rows.empty())
    assert int(a["total_hits"]) == 0
    for k, v in a.items():
        assert not np.any(v), k
    ds = compute_products(Rows.empty())
    sizes = {"chamber": 4, "channel": 64, "multiplicity": 64, "drift_time": 120, "drift_time_edge": 121,
             "t0_difference": 60, "t0_difference_edge": 61}
    assert dict(ds.sizes) == sizes
