"""Local segments, residuals, efficiency and 3D tracks (dtlive.core.reco) against an exact geometric generator
(tests/reco_generator.py) and end to end on the simulator's output."""

from __future__ import annotations

import numpy as np
import pytest
from reco_generator import generate, hit_arrays

from dtlive.core import detector as det
from dtlive.core.reco import efficiency as E
from dtlive.core.reco import segments as S
from dtlive.core.reco.tracks import cos_theta_histogram, fit_tracks
from dtlive.core.rows import clean
from dtlive.core.simulate import SimConfig, simulate

SUM_Z2 = float((S.LAYER_Z**2).sum())  # 845 mm^2: the lever arm of a 4-hit segment
LEVERAGE = 1.0 / det.N_LAYERS + S.LAYER_Z**2 / SUM_Z2  # of each layer's hit in a 4-hit fit (0.7 outer, 0.3 inner)


def layers_hit(event, chamber, layer) -> np.ndarray:
    """Keys event * 4 + chamber of the (event, chamber) pairs with hits on >= 3 distinct layers."""
    triples = np.unique(np.stack([event, chamber, layer]), axis=1)
    keys, n = np.unique(triples[0] * det.N_CHAMBERS + triples[1], return_counts=True)
    return keys[n >= 3]


def test_exact_hits_give_back_the_track_and_the_side_of_every_hit():
    g = generate(3000, seed=1, max_zenith_deg=45)
    seg = S.fit_segments(*hit_arrays(g))
    assert np.array_equal(np.sort(seg.event * 4 + seg.chamber), layers_hit(g.event, g.chamber, g.layer))
    assert np.abs(seg.position_mm - g.local_at(seg.event, seg.chamber)).max() < 1e-6
    assert np.abs(seg.slope - g.local_slope(seg.event, seg.chamber)).max() < 1e-9
    assert np.abs(seg.hit_x_mm - g.true_x[seg.hit_index]).max() < 1e-6  # the right left/right choice
    assert seg.chi2.max() < 1e-6 and (seg.n_hits == 4).mean() > 0.9
    assert np.array_equal(g.layer[seg.hit_index], seg.hit_layer) and np.array_equal(g.cell[seg.hit_index], seg.hit_cell)
    assert np.abs(seg.residual_mm).max() < 1e-6 and np.abs(seg.residual_unbiased_mm).max() < 1e-6


def test_smeared_hits_give_position_and_angle_within_the_fit_errors():
    sigma = 0.2
    g = generate(8000, seed=2, sigma_mm=sigma, max_zenith_deg=45)
    seg = S.fit_segments(*hit_arrays(g), sigma_mm=sigma)
    four = seg.n_hits == 4
    dpos = (seg.position_mm - g.local_at(seg.event, seg.chamber))[four]
    dslope = (seg.slope - g.local_slope(seg.event, seg.chamber))[four]
    assert np.abs(dpos).max() < 6 * sigma  # no wrong left/right choice left over
    assert dpos.std() == pytest.approx(sigma / 2, rel=0.05)  # sigma / sqrt(4)
    assert dslope.std() == pytest.approx(sigma / np.sqrt(SUM_Z2), rel=0.05)
    assert abs(dpos.mean()) < 3 * sigma / 2 / np.sqrt(four.sum())
    true_side = np.sign(g.true_x - g.wire_x)[seg.hit_index]
    clear = np.abs(g.true_x - g.wire_x)[seg.hit_index] > 3 * sigma
    assert (np.sign(seg.hit_x_mm - g.wire_x[seg.hit_index]) != true_side)[clear].mean() < 1e-3
    # chi2 of 4-hit segments follows chi2 with 2 degrees of freedom (mean 2), ndof as stated
    assert seg.chi2[four].mean() == pytest.approx(2.0, rel=0.1) and set(seg.ndof[four]) == {2}


def test_steep_staircase_tracks_take_the_image_nearer_the_vertical():
    # x = -2.49 - 1.3736 z crosses cells whose wires lie on a line: its mirror image (slope -1.857) fits too
    z = S.LAYER_Z
    x = -2.49 - 1.3736 * z
    cell = np.rint((x - S.LAYER_SHIFT) / det.CELL_WIDTH_MM).astype(int)
    drift = np.abs(x - cell * det.CELL_WIDTH_MM - S.LAYER_SHIFT) / det.DRIFT_VELOCITY_MM_PER_NS
    args = (np.zeros(4, int), np.full(4, 2), np.arange(1, 5), cell, drift)
    wire = cell * det.CELL_WIDTH_MM + S.LAYER_SHIFT
    image = 2 * wire - x  # every hit on the other side of its wire: on a line too
    assert np.polyfit(z, image, 1, full=True)[1][0] < 1e-9 and np.polyfit(z, image, 1)[0] == pytest.approx(
        -1.857, abs=1e-3
    )
    assert S.fit_segments(*args).slope[0] == pytest.approx(-1.3736)
    # near-vertical tracks have no such image: over all angles, wrong sides only come from steep tracks
    g = generate(8000, seed=3, sigma_mm=0.2)
    seg = S.fit_segments(*hit_arrays(g))
    wrong = np.abs(seg.position_mm - g.local_at(seg.event, seg.chamber)) > 1.0
    steep = np.abs(g.local_slope(seg.event, seg.chamber)) > 1.0
    assert wrong[~steep].mean() < 2e-3 and wrong.mean() < 0.03


def test_residual_widths_match_the_smearing():
    sigma = 0.3
    g = generate(8000, seed=4, sigma_mm=sigma, max_zenith_deg=45)
    seg = S.fit_segments(*hit_arrays(g), sigma_mm=sigma)
    # near-wire hits may take either side, which narrows the residuals a little (measured -2.5 %)
    assert S.hit_resolution(S.residual_moments(seg))[1:3] == pytest.approx(sigma, rel=0.05)  # well-filled chambers
    four = seg.n_hits[seg.hit_segment] == 4
    for layer in range(1, 5):
        m = four & (seg.hit_layer == layer) & (seg.chamber[seg.hit_segment] == 2)
        h = LEVERAGE[layer - 1]
        assert seg.residual_mm[m].std() == pytest.approx(sigma * np.sqrt(1 - h), rel=0.05)
        assert seg.residual_unbiased_mm[m].std() == pytest.approx(sigma / np.sqrt(1 - h), rel=0.05)
    edges = np.linspace(-2, 2, 41)
    hist = S.residual_histogram(seg, edges)
    assert hist.shape == (4, 4, 42) and hist.sum() == four.sum()
    assert hist[..., 0].sum() + hist[..., -1].sum() < 1e-3 * hist.sum()  # 2 mm is > 3.6 unbiased widths


def test_efficiency_of_cells_made_inefficient_is_recovered():
    eff = np.ones((det.N_CHAMBERS, det.N_LAYERS, det.CELLS_PER_LAYER))
    eff[2, 2, 7] = 0.5  # chamber 2, layer 3, cell 7
    eff[1, 0] = 0.8  # chamber 1, layer 1
    eff[0, 3, 4:8] = 0.9  # chamber 0, layer 4, cells 4-7
    g = generate(40000, seed=5, sigma_mm=0.2, efficiency=eff, wire_halflength=np.inf, max_zenith_deg=45)
    expected, found = E.layer_efficiency(*hit_arrays(g))
    measured, _ = E.efficiency(found, expected)
    filled = expected >= 100
    assert filled[2, 2, 7] and filled[1, 0].all() and filled[0, 3, 4:8].all()
    spread = np.sqrt(expected * eff * (1 - eff))  # binomial, in counts
    # + 0.5 %: a track predicted within the line's error (~0.3 mm) of a cell border may have crossed the
    # neighbour; near an inefficient cell or the layer's edge a few such tracks are lost (measured <= 0.4 %)
    assert (np.abs(found - eff * expected)[filled] <= 4 * spread[filled] + 0.005 * expected[filled]).all()
    layer_eff, layer_err = E.efficiency(found.sum(axis=2), expected.sum(axis=2))
    assert layer_eff[1, 0] == pytest.approx(0.8, abs=3 * layer_err[1, 0])
    assert layer_eff[2, [0, 1, 3]] == pytest.approx(1.0, abs=1e-3)
    # counts of disjoint halves of the events add up to those of all of them, exactly
    half = g.event % 2 == 0
    a = E.layer_efficiency(*(v[half] for v in hit_arrays(g)))
    b = E.layer_efficiency(*(v[~half] for v in hit_arrays(g)))
    assert np.array_equal(a[0] + b[0], expected) and np.array_equal(a[1] + b[1], found)


def test_efficiency_of_perfect_square_chambers_loses_only_tracks_leaving_through_a_side():
    g = generate(20000, seed=6, sigma_mm=0.2)  # all angles, wires as long as a layer is wide
    expected, found = E.layer_efficiency(*hit_arrays(g))
    layer_eff, _ = E.efficiency(found.sum(axis=2), expected.sum(axis=2))
    assert (layer_eff > 0.98).all() and (layer_eff[:, 1:3] > 0.998).all()  # inner layers see no side exit


def test_pure_noise_gives_few_segments():
    rng = np.random.default_rng(7)
    n_events, per_event = 20000, 4  # four random hits in one chamber per event
    event = np.repeat(np.arange(n_events), per_event)
    n = len(event)
    seg = S.fit_segments(event, np.full(n, 2), rng.integers(1, 5, n), rng.integers(0, 16, n),
                         rng.uniform(0, det.MAX_DRIFT_NS, n))  # fmt: skip
    assert len(seg) / n_events < 0.025  # measured 1.8 %
    assert (np.abs(seg.slope) <= 1).sum() / n_events < 0.005  # within 45 degrees: 0.2 %
    assert (seg.n_hits == 4).sum() / n_events < 1e-3


def test_a_noise_hit_beside_the_track_is_left_out_and_out_of_time_hits_are_ignored():
    x = 50.0 + 0.3 * S.LAYER_Z
    cell = np.rint((x - S.LAYER_SHIFT) / det.CELL_WIDTH_MM).astype(int)
    drift = np.abs(x - cell * det.CELL_WIDTH_MM - S.LAYER_SHIFT) / det.DRIFT_VELOCITY_MM_PER_NS
    layer = np.r_[np.arange(1, 5), 2, 3]
    cells = np.r_[cell, cell[1] + 1, cell[2]]
    drifts = np.r_[drift, 200.0, 2000.0]  # a neighbour hit in layer 2, an afterpulse in layer 3
    seg = S.fit_segments(np.zeros(6, int), np.zeros(6, int), layer, cells, drifts)
    assert seg.n_hits.tolist() == [4] and sorted(seg.hit_index.tolist()) == [0, 1, 2, 3]
    assert seg.slope[0] == pytest.approx(0.3) and seg.angle_deg[0] == pytest.approx(np.degrees(np.arctan(0.3)))
    assert len(S.fit_segments([0, 0], [0, 0], [1, 2], [3, 3], [10.0, 20.0])) == 0
    assert len(S.fit_segments([], [], [], [], [])) == 0
    with pytest.raises(ValueError, match="min_hits"):
        S.fit_segments([0], [0], [1], [0], [0.0], min_hits=2)


def test_tracks_give_zenith_and_azimuth_back():
    g = generate(20000, seed=8, sigma_mm=0.1)
    tracks = fit_tracks(S.fit_segments(*hit_arrays(g), sigma_mm=0.1), sigma_mm=0.1)
    assert len(tracks) > 1000
    assert np.abs(tracks.x_mm - g.x_ref[tracks.event]).max() < 1.0
    assert np.abs(tracks.y_mm - g.y_ref[tracks.event]).max() < 2.0  # one chamber, 43 mm below z_ref
    assert np.abs(tracks.tx - g.tx[tracks.event]).max() < 1e-3
    dty = tracks.ty - g.ty[tracks.event]  # one chamber's lever arm: 0.1 mm / sqrt(845 mm^2) for 4 hits
    assert dty.std() < 1.3 * 0.1 / np.sqrt(SUM_Z2) and np.abs(dty).max() < 0.03
    true_cos = 1 / np.sqrt(1 + g.tx**2 + g.ty**2)
    dtheta = tracks.theta_deg - np.degrees(np.arccos(true_cos))[tracks.event]
    assert dtheta.std() < 0.3 and np.abs(dtheta).max() < 2.0  # degrees
    steep = tracks.theta_deg > 10  # azimuth is well defined (its error ~ that of ty / tan theta)
    true_phi = np.degrees(np.arctan2(g.ty, g.tx))[tracks.event]
    dphi = (tracks.phi_deg - true_phi + 180) % 360 - 180
    assert np.abs(dphi[steep]).max() < 5
    assert tracks.chi2_x.mean() == pytest.approx(tracks.ndof_x.mean(), rel=0.15)
    assert cos_theta_histogram(tracks, np.linspace(0, 1, 11)).sum() == len(tracks)


def simulated_events(duration_s: float, seed: int) -> tuple[dict, int]:
    """Chamber hits of the simulator grouped by the orbit of a scintillator hit, timed from it."""
    hits, _ = clean(simulate(duration_s, seed=seed))
    t = det.time_in_orbit_ns(hits.bx, hits.tdc)
    scint = (hits.fpga == det.SCINT_FPGA) & (hits.channel == det.SCINT_CHANNEL)
    order = np.lexsort((t[scint], hits.orbit[scint]))
    orbits, times = hits.orbit[scint][order], t[scint][order]
    first = np.r_[True, orbits[1:] != orbits[:-1]]
    orbits, times = orbits[first], times[first]
    chamber_hit = hits.channel < det.CHAMBER_CHANNELS
    orbit = hits.orbit[chamber_hit]
    idx = np.clip(np.searchsorted(orbits, orbit), 0, len(orbits) - 1)
    ok = orbits[idx] == orbit
    channel = hits.channel[chamber_hit][ok]
    chamber = det.chamber_of(hits.fpga[chamber_hit][ok], channel)
    drift = t[chamber_hit][ok] - (times[idx[ok]] - det.T0_OFFSET_NS[chamber])
    return dict(event=orbit[ok], chamber=chamber, layer=det.layer_of(channel), cell=det.cell_of(channel),
                drift_ns=drift), len(orbits)  # fmt: skip


def test_simulated_muons_give_segments_efficiency_resolution_and_a_cos2_like_angle_distribution():
    ev, n_muon_events = simulated_events(40.0, seed=3)
    seg = S.fit_segments(**ev)
    w = (ev["drift_ns"] >= S.DRIFT_WINDOW_NS[0]) & (ev["drift_ns"] <= S.DRIFT_WINDOW_NS[1])
    candidates = layers_hit(ev["event"][w], ev["chamber"][w], ev["layer"][w])
    assert np.isin(candidates, seg.event * 4 + seg.chamber).mean() > 0.995  # measured 99.99 %
    assert len(np.unique(seg.event)) / n_muon_events > 0.97  # measured 99.3 %
    cfg = SimConfig()
    expected, found = E.layer_efficiency(**ev)
    layer_eff, _ = E.efficiency(found.sum(axis=2), expected.sum(axis=2))
    assert ((layer_eff > cfg.efficiency - 0.025) & (layer_eff < cfg.efficiency + 0.015)).all()
    jitter_mm = cfg.time_resolution_ns * det.DRIFT_VELOCITY_MM_PER_NS  # 0.108 mm
    assert S.hit_resolution(S.residual_moments(seg)) == pytest.approx(jitter_mm, rel=0.1)
    # chamber 2 sits at the mid-height where tracks are generated, so its segment angles show the zenith law:
    # of intensities cos^n with n = 1, 2, 3 (exact generator, same geometry), cos^2 matches best
    edges = np.linspace(-60, 60, 25)
    observed = np.histogram(seg.angle_deg[seg.chamber == 2], edges)[0]
    chi2 = {}
    for n in (1, 2, 3):
        g = generate(30000, seed=10, sigma_mm=jitter_mm, efficiency=cfg.efficiency, zenith_power=n)
        ref = S.fit_segments(*hit_arrays(g))
        model = np.histogram(ref.angle_deg[ref.chamber == 2], edges)[0]
        model = model / model.sum() * observed.sum()
        chi2[n] = float(((observed - model) ** 2 / np.maximum(model, 1)).sum())
    assert min(chi2, key=chi2.get) == 2 and chi2[2] < 2 * (len(edges) - 1), chi2
    tracks = fit_tracks(seg)
    assert len(tracks) > 300 and np.median(tracks.cos_theta) > 0.97  # the four chambers see near-vertical muons


def test_segments_of_disjoint_events_are_those_of_all_of_them():
    g = generate(3000, seed=9, sigma_mm=0.2)
    whole = S.fit_segments(*hit_arrays(g))
    half = g.event % 3 == 0
    parts = [S.fit_segments(*(v[m] for v in hit_arrays(g))) for m in (half, ~half)]
    key = np.concatenate([p.event * 4 + p.chamber for p in parts])
    order = np.argsort(key)
    assert np.array_equal(key[order], whole.event * 4 + whole.chamber)
    assert np.array_equal(np.concatenate([p.slope for p in parts])[order], whole.slope)
    four = S.fit_segments(*hit_arrays(g), min_hits=4)
    assert set(four.n_hits) == {4} and len(four) == (whole.n_hits == 4).sum()


def test_a_crowded_layer_is_bounded_and_the_track_still_found():
    x = -100.0 + 0.1 * S.LAYER_Z
    cell = np.rint((x - S.LAYER_SHIFT) / det.CELL_WIDTH_MM).astype(int)
    drift = np.abs(x - cell * det.CELL_WIDTH_MM - S.LAYER_SHIFT) / det.DRIFT_VELOCITY_MM_PER_NS
    rng = np.random.default_rng(10)
    far = np.arange(cell[1] + 3, 16)  # a burst of hits in layer 2, right of the track's cell
    layer = np.r_[np.arange(1, 5), np.full(len(far), 2)]
    cells = np.r_[cell, far]
    drifts = np.r_[drift, rng.uniform(0, det.MAX_DRIFT_NS, len(far))]
    seg = S.fit_segments(np.zeros(len(layer), int), np.zeros(len(layer), int), layer, cells, drifts)
    assert seg.n_hits.tolist() == [4] and seg.slope[0] == pytest.approx(0.1)
    bounded = S.fit_segments(np.zeros(len(layer), int), np.zeros(len(layer), int), layer, cells, drifts,
                             max_hits_per_layer=1)  # fmt: skip
    assert bounded.n_hits.tolist() == [4]  # the track's hit is the first of layer 2 in cell order
