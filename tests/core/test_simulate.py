"""Statistics of the cosmic-muon DAQ generator (dtlive.core.simulate) against the detector facts."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from dtlive.core import detector as det
from dtlive.core.rows import Rows, clean
from dtlive.core.simulate import DEFAULT_START_ORBIT, SimConfig, channel_noise_rates, simulate, stream

pytestmark = pytest.mark.timeout(60)

SEED = 11
DURATION_S = 30.0
CFG = SimConfig()


def _columns(rows: Rows) -> dict[str, np.ndarray]:
    return {k: getattr(rows, k) for k in ("head", "fpga", "channel", "orbit", "bx", "tdc", "partition", "offset")}


def _same(a: Rows, b: Rows) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(_columns(a).values(), _columns(b).values()))


@pytest.fixture(scope="module")
def rows() -> Rows:
    return simulate(DURATION_S, seed=SEED)


@pytest.fixture(scope="module")
def hits(rows) -> pd.DataFrame:
    """HEAD-2 rows with their absolute time, chamber, layer, cell and row position."""
    h, _ = clean(rows)
    df = h.to_pandas()
    df["row"] = h.offset
    df["t"] = det.hit_time_ns(h.orbit, h.bx, h.tdc)
    df["chamber"] = det.chamber_of(h.fpga, h.channel)
    df["layer"] = det.layer_of(h.channel)
    df["cell"] = det.cell_of(h.channel)
    return df


@pytest.fixture(scope="module")
def muon_hits(hits) -> pd.DataFrame:
    """Chamber hits of orbits with a scintillator hit, with DRIFTIME from the detector's drift-time formula."""
    scint = hits[(hits.FPGA == det.SCINT_FPGA) & (hits.TDC_CHANNEL == det.SCINT_CHANNEL)]
    t_scint = scint.groupby("ORBIT_CNT").t.min()  # earliest scintillator hit per orbit
    m = hits[(hits.chamber >= 0) & hits.ORBIT_CNT.isin(t_scint.index)].copy()
    m["drift"] = m.t - (t_scint.reindex(m.ORBIT_CNT).to_numpy() - det.T0_OFFSET_NS[m.chamber.to_numpy()])
    return m


@pytest.fixture(scope="module")
def in_time(muon_hits) -> pd.DataFrame:
    """Muon hits whose drift time lies in the physical window (noise in muon orbits removed)."""
    return muon_hits[(muon_hits.drift > -20) & (muon_hits.drift < 420)]


# --- reproducibility ------------------------------------------------------------------------------------------------


def test_same_seed_same_rows_other_seed_other_rows():
    a, b, c = simulate(1.0, seed=3), simulate(1.0, seed=3), simulate(1.0, seed=4)
    assert _same(a, b)
    assert not _same(a, c)
    assert len(a) != len(c) or not np.array_equal(a.orbit, c.orbit)
    assert _same(a, next(stream(chunk_s=1.0, seed=3)))  # simulate(d) is the first chunk of stream(chunk_s=d)


def test_rows_columns_and_types(rows):
    assert rows.orbit.dtype == np.int64
    assert rows.orbit.min() > 2**31 and rows.orbit.max() <= det.MAX_ORBIT
    assert rows.orbit.min() >= DEFAULT_START_ORBIT
    assert np.array_equal(rows.offset, np.arange(len(rows))) and not rows.partition.any()
    h, n_ancillary = clean(rows)
    assert n_ancillary > 0 and set(np.unique(h.head)) == {det.HIT_HEAD}
    assert set(np.unique(h.fpga)) == {0, 1}
    assert h.channel.min() >= 0 and h.channel.max() <= det.MAX_CHANNEL
    assert set(np.unique(h.channel[h.channel >= det.CHAMBER_CHANNELS])) == {det.SCINT_CHANNEL, det.TRIGGER_CHANNEL}
    assert not np.any((h.channel == det.SCINT_CHANNEL) & (h.fpga != det.SCINT_FPGA))
    assert h.bx.min() >= 0 and h.bx.max() <= det.MAX_BX
    assert h.tdc.min() >= 0 and h.tdc.max() <= det.TDC_PER_BX - 1
    assert np.array_equal(rows.tdc[rows.head == det.HIT_HEAD] % 1, np.zeros((rows.head == det.HIT_HEAD).sum()))


# --- rates ----------------------------------------------------------------------------------------------------------


def test_hit_rate_matches_configuration(hits):
    rate = len(hits) / DURATION_S
    assert abs(rate / CFG.hit_rate_hz - 1) < 0.10, rate
    cfg = SimConfig(hit_rate_hz=2000.0, muon_rate_hz=40.0)
    low = simulate(10.0, seed=SEED, config=cfg)
    rate_low = (low.head == det.HIT_HEAD).sum() / 10.0
    assert abs(rate_low / 2000.0 - 1) < 0.10, rate_low
    scint_rate = ((low.channel == det.SCINT_CHANNEL) & (low.head == det.HIT_HEAD)).sum() / 10.0
    assert abs(scint_rate / 40.0 - 1) < 0.2, scint_rate


def test_fraction_of_orbits_with_a_hit_is_about_27_percent(hits):
    n_orbits = DURATION_S / det.ORBIT_S
    fraction = hits.ORBIT_CNT.nunique() / n_orbits
    assert 0.24 < fraction < 0.30, fraction


def test_impossible_configuration_is_refused():
    with pytest.raises(ValueError, match="hit_rate_hz"):
        stream(config=SimConfig(hit_rate_hz=100.0, muon_rate_hz=140.0))
    with pytest.raises(ValueError, match="efficiency"):
        SimConfig(efficiency=1.5)


# --- muon physics ---------------------------------------------------------------------------------------------------


def test_multiplicity_in_muon_orbits_peaks_at_four(muon_hits):
    mult = muon_hits.groupby(["ORBIT_CNT", "chamber"]).TDC_CHANNEL.nunique()
    for chamber in det.CHAMBERS:
        counts = np.bincount(mult.xs(chamber, level="chamber"), minlength=10)
        assert counts.argmax() == 4, (chamber, counts)
        assert counts[4] > 0.4 * counts.sum(), (chamber, counts)
        assert counts[4] > 2 * max(counts[3], counts[5]), (chamber, counts)


def test_drift_time_is_a_box_with_sharp_edges(muon_hits):
    d = muon_hits.drift.to_numpy()
    assert ((d >= 0) & (d <= 400)).mean() > 0.95  # everything, noise in muon orbits included
    w = d[(d > -200) & (d < 600)]
    assert ((w >= 0) & (w <= 400)).mean() > 0.99
    assert (w < -20).mean() < 0.002 and (w > 420).mean() < 0.002

    def density(lo, hi):
        return ((w >= lo) & (w < hi)).sum() / (hi - lo)

    mid = density(100, 300)
    assert density(10, 50) > 0.5 * mid and density(340, 380) > 0.5 * mid
    assert density(-60, -20) < 0.02 * mid and density(400, 440) < 0.02 * mid
    assert 380 < np.percentile(w, 99.5) < det.MAX_DRIFT_NS + 10  # upper edge at ~390 ns
    assert -10 < np.percentile(w, 0.5) < 10


def test_layers_share_muon_hits_and_the_beam_is_narrower_far_from_the_middle(in_time):
    per_layer = in_time.groupby(["chamber", "layer"]).size().unstack()
    share = per_layer.div(per_layer.sum(axis=1), axis=0)
    assert share.shape == (4, 4)
    assert ((share > 0.2) & (share < 0.3)).all().all(), share

    cells = in_time.groupby(["chamber", "cell"]).size().unstack(fill_value=0).to_numpy()
    centre, edge = cells[:, 6:10].mean(axis=1), cells[:, [0, 1, 14, 15]].mean(axis=1)
    ratio = centre / edge
    outer = [0, 3]  # chambers far from the mid-height plane of the tracks
    assert (ratio[outer] > 1.1).all(), ratio
    assert ratio[outer].min() > ratio[[1, 2]].max(), ratio
    per_chamber = cells.sum(axis=1)
    assert per_chamber[1] > 2 * per_chamber[0] and per_chamber[2] > 2 * per_chamber[3]


def _segments(in_time: pd.DataFrame) -> pd.DataFrame:
    """Straight-line fits (x = a + b z) of chambers with exactly one in-time hit in each of the 4 layers."""
    g = in_time.groupby(["ORBIT_CNT", "chamber"])
    ok = (g.layer.transform("nunique") == 4) & (g.layer.transform("size") == 4)
    seg = in_time[ok].sort_values(["ORBIT_CNT", "chamber", "layer"])
    x_wire, z = det.wire_position_mm(seg.TDC_CHANNEL.to_numpy())
    dist = np.clip(seg.drift.to_numpy(), 0, None) * det.DRIFT_VELOCITY_MM_PER_NS
    x_wire, z, dist = (a.reshape(-1, 4) for a in (x_wire, z, dist))
    signs = np.array(list(itertools.product((-1.0, 1.0), repeat=4)))  # left/right ambiguity
    x = x_wire[:, None, :] + signs[None] * dist[:, None, :]  # (segment, combination, layer)
    zc = z - z.mean(axis=1, keepdims=True)
    slope = (x * zc[:, None, :]).sum(-1) / (zc**2).sum(-1)[:, None]
    icpt = x.mean(-1) - slope * z.mean(axis=1)[:, None]
    rms = np.sqrt(((x - icpt[..., None] - slope[..., None] * z[:, None, :]) ** 2).mean(-1))
    best = rms.argmin(axis=1)
    i = np.arange(len(best))
    keys = seg[["ORBIT_CNT", "chamber"]].to_numpy()[::4]
    return pd.DataFrame({"orbit": keys[:, 0], "chamber": keys[:, 1], "rms": rms[i, best], "x": icpt[i, best],
                         "slope": slope[i, best]})  # fmt: skip


def test_hits_of_a_muon_lie_on_a_straight_line_in_the_right_view(in_time):
    seg = _segments(in_time)
    assert len(seg) > 1000
    assert (seg.rms < 0.5).mean() > 0.95, seg.rms.describe()  # wires, drift velocity and T0 offsets consistent
    wide = seg.pivot(index="orbit", columns="chamber", values=["x", "slope"]).dropna()
    assert len(wide) > 100
    s = wide["slope"]
    assert np.corrcoef(s[0], s[3])[0, 1] > 0.8 and np.corrcoef(s[2], s[3])[0, 1] > 0.8  # same view
    assert abs(np.corrcoef(s[0], s[1])[0, 1]) < 0.3 and abs(np.corrcoef(s[1], s[3])[0, 1]) < 0.3  # rotated chamber
    x, h = wide["x"], det.CHAMBER_HEIGHT_MM
    x2_pred = x[0] + (x[3] - x[0]) * (h[2] - h[0]) / (h[3] - h[0])  # chambers 0, 2, 3 are aligned in x
    assert (np.abs(x2_pred - x[2]) < 3.0).mean() > 0.8


def test_trigger_word_marks_muon_orbits_on_both_fpgas(hits):
    trig = hits[hits.TDC_CHANNEL == det.TRIGGER_CHANNEL]
    scint_orbits = set(hits.ORBIT_CNT[hits.TDC_CHANNEL == det.SCINT_CHANNEL])
    assert set(trig.FPGA) == {0, 1}
    same_orbit = trig.ORBIT_CNT.isin(scint_orbits)
    assert same_orbit.mean() > 0.95
    assert (same_orbit | (trig.ORBIT_CNT - 1).isin(scint_orbits)).all()  # or just after an orbit boundary
    assert (trig.TDC_MEAS == 1).all()
    share = len(trig) / len(hits)
    assert 0.005 < share < 0.03, share  # run 591: 1.45 % of the rows
    per_fpga = np.bincount(trig.FPGA, minlength=2)
    assert per_fpga.min() > 0.3 * per_fpga.max()
    first_hit = hits[hits.chamber >= 0].groupby("ORBIT_CNT").BX_COUNTER.min()
    after = trig.BX_COUNTER.to_numpy() - first_hit.reindex(trig.ORBIT_CNT).to_numpy()
    assert 8 <= np.nanmedian(after) <= 18  # run 591: ~13 BX after the first hit


# --- noise ----------------------------------------------------------------------------------------------------------


def test_noisy_channels_stand_out(hits):
    rates = channel_noise_rates(seed=SEED)
    assert rates.shape == (det.N_FPGA, det.CHAMBER_CHANNELS)
    configured = set(np.argsort(rates.ravel())[-CFG.n_noisy_channels :])
    occupancy = np.zeros(det.N_FPGA * det.CHAMBER_CHANNELS)
    ch = hits[hits.chamber >= 0]
    np.add.at(occupancy, ch.FPGA.to_numpy() * det.CHAMBER_CHANNELS + ch.TDC_CHANNEL.to_numpy(), 1)
    measured = set(np.argsort(occupancy)[-CFG.n_noisy_channels :])
    assert measured == configured
    noisy = np.array(sorted(configured))
    assert (occupancy[noisy] > 10 * np.median(occupancy)).all()
    assert np.allclose(occupancy[noisy] / DURATION_S, rates.ravel()[noisy], rtol=0.1)
    assert (occupancy > 0).all()  # noise reaches all 256 chamber channels
    other = channel_noise_rates(seed=SEED + 1)
    assert set(np.argsort(other.ravel())[-CFG.n_noisy_channels :]) != configured


# --- ancillary words ------------------------------------------------------------------------------------------------


def test_ancillary_rows_look_like_the_2023_stream(rows):
    assert rows.tdc.dtype == np.float64
    assert set(np.unique(rows.head)) == {0, 1, 2, 3, 4, 5}
    anc = ~np.isin(rows.head, [det.HIT_HEAD])
    n_packets = (rows.head == 3).sum()
    assert abs(n_packets / (DURATION_S * det.N_FPGA * CFG.ancillary_rate_hz) - 1) < 0.2
    tan_psi, local_x = rows.tdc[rows.head == 4], rows.tdc[rows.head == 5]
    assert (tan_psi % 1 != 0).mean() > 0.9 and np.abs(tan_psi).max() < 1
    assert (local_x % 1 != 0).mean() > 0.5 and np.abs(local_x).max() > 10
    assert rows.bx[rows.head == 3].max() > det.MAX_BX  # out-of-range BX (up to 18504)
    assert rows.bx[rows.head == 3].max() <= 18504
    # their ORBIT_CNT sits ~10-12 s ahead of the hits around them
    idx = np.flatnonzero(anc)
    prev_hit = np.maximum.accumulate(np.where(~anc, np.arange(len(rows)), -1))[idx]
    lead_s = (rows.orbit[idx] - rows.orbit[prev_hit]) * det.ORBIT_S
    expected = np.asarray(CFG.ancillary_lead_s)[rows.fpga[idx]]
    assert np.all(np.abs(lead_s - expected) < 0.05)
    assert lead_s.min() > 5


def test_switches_remove_scintillator_trigger_and_ancillary():
    cfg = SimConfig(scintillator=False, trigger_word=False, ancillary_rate_hz=0.0)
    r = simulate(2.0, seed=SEED, config=cfg)
    assert r.tdc.dtype == np.int64 and set(np.unique(r.head)) == {det.HIT_HEAD}
    assert r.channel.max() < det.CHAMBER_CHANNELS
    assert abs((len(r) / 2.0) / cfg.hit_rate_hz - 1) < 0.1  # noise makes up for the missing special hits


# --- stream and DAQ order -------------------------------------------------------------------------------------------


def test_stream_chunks_are_contiguous_and_deterministic():
    chunk_s, start = 0.25, DEFAULT_START_ORBIT + 123
    chunks = list(itertools.islice(stream(chunk_s=chunk_s, seed=5, start_orbit=start), 6))
    again = list(itertools.islice(stream(chunk_s=chunk_s, seed=5, start_orbit=start), 6))
    assert all(_same(a, b) for a, b in zip(chunks, again))
    t0 = start * det.ORBIT_NS
    offset = 0
    for k, c in enumerate(chunks):
        assert c.offset[0] == offset and np.array_equal(c.offset, np.arange(offset, offset + len(c)))
        offset += len(c)
        h, _ = clean(c)
        t = det.hit_time_ns(h.orbit, h.bx, h.tdc)
        lo, hi = t0 + k * chunk_s * 1e9, t0 + (k + 1) * chunk_s * 1e9
        assert t.min() >= lo - 1 and t.max() < hi + 1
        assert t.min() - lo < 5e6 and hi - t.max() < 5e6  # chunk filled from edge to edge
    total = sum(int((c.head == det.HIT_HEAD).sum()) for c in chunks)
    assert abs(total / (6 * chunk_s) / CFG.hit_rate_hz - 1) < 0.1
    with pytest.raises(ValueError, match="chunk_s"):
        stream(chunk_s=0)  # refused at once, not at the first chunk


def test_events_cut_by_a_chunk_edge_continue_in_the_next_chunk():
    # 1 us chunks and only muons: many muons straddle a chunk edge
    cfg = SimConfig(
        muon_rate_hz=1e4, noise_rate_hz_per_channel=0.0, n_noisy_channels=0, trigger_word=False, ancillary_rate_hz=0.0
    )
    chunk_ns, n_chunks = 1000.0, 3000
    chunks = list(itertools.islice(stream(chunk_s=chunk_ns * 1e-9, seed=2, config=cfg), n_chunks))
    t_rel = []
    for k, c in enumerate(chunks):
        t = (c.orbit - DEFAULT_START_ORBIT) * det.ORBIT_NS + c.bx * det.BX_NS + c.tdc * (det.BX_NS / det.TDC_PER_BX)
        assert np.all(t >= k * chunk_ns - 1e-3) and np.all(t < (k + 1) * chunk_ns + 1e-3), k
        t_rel.append(t)
    rows = Rows.concat(chunks)
    t = np.concatenate(t_rel)
    order = np.argsort(t)
    t, is_scint = t[order], (rows.channel == det.SCINT_CHANNEL)[order]
    first = np.flatnonzero(np.r_[True, np.diff(t) > 2000.0])  # one muon per cluster of rows
    n_scint = np.add.reduceat(is_scint.astype(int), first)
    n_rows = np.diff(np.r_[first, len(t)])
    assert len(first) > 15
    assert np.all(n_scint >= 1)  # no muon lost its scintillator hit at a chunk edge
    spans = np.maximum.reduceat(t, first) - t[first]
    assert spans.max() < 500 and np.median(n_rows) > 5
    assert abs((n_rows.sum() - n_scint.sum()) / n_scint.sum() / (cfg.hits_per_muon() - 1) - 1) < 0.2


def test_daq_order_is_per_fpga_blocks_roughly_in_time(rows, hits):
    # every FPGA emits its hits in time order
    for fpga in (0, 1):
        assert np.all(np.diff(hits.t[hits.FPGA.eq(fpga)].to_numpy()) >= 0)
    # the merged stream is only roughly time-ordered: small steps back, at most one orbit
    dt = np.diff(hits.t.to_numpy())
    assert (dt < 0).mean() > 0.01
    assert dt.min() > -CFG.block_rows * CFG.block_gap_ns
    assert np.diff(hits.ORBIT_CNT.to_numpy()).min() >= -1
    # FPGA runs like run 591 (mean ~2.7 rows)
    f = rows.fpga[rows.head == det.HIT_HEAD]
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, f, -1]) != 0))
    assert 2.0 < runs.mean() < 3.5, runs.mean()
    # busy orbits: the two FPGAs alternate in blocks of ~4 rows instead of being time-sorted
    n_per = hits.groupby(["ORBIT_CNT", "FPGA"]).size().unstack(fill_value=0)
    busy = n_per[(n_per[0] >= 8) & (n_per[1] >= 8)].index
    assert len(busy) > 50
    busy_rows = hits[hits.ORBIT_CNT.isin(busy)].sort_values("row")
    run_lengths = []
    for _, g in busy_rows.groupby("ORBIT_CNT"):
        fg = g.FPGA.to_numpy()
        run_lengths.append(np.diff(np.flatnonzero(np.diff(np.r_[-1, fg, -1]) != 0)))
    rl = np.concatenate(run_lengths)
    assert np.mean([len(r) >= 3 for r in run_lengths]) > 0.95  # interleaved, not one FPGA after the other
    assert np.bincount(rl).argmax() == CFG.block_rows  # full blocks dominate
    assert (rl % CFG.block_rows == 0).mean() > 0.5


@pytest.mark.parametrize("rows_per_s", [1000, 20_000])
def test_simulated_chunks_scaled_to_a_replay_rate_keep_event_time_with_wall_time(rows_per_s):
    from dtlive.kafka.emulator import simulated_chunks

    chunks = simulated_chunks(seed=1, chunk_s=1.0, rows_per_s=rows_per_s)
    rows = sum(len(next(chunks)) for _ in range(5))
    assert abs(rows / 5 - rows_per_s) < 0.05 * rows_per_s  # ~rows_per_s rows per second of event time
