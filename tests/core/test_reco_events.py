"""Event building and t0 (dtlive.core.reco) against the simulator's truth, on pure noise and on run 591."""

from __future__ import annotations

import numpy as np
import pytest
from datafiles import RUN_CSV

from dtlive.core import detector as det
from dtlive.core.products import REGISTRY, Settings
from dtlive.core.products.t0diff import T0_DIFFERENCE_EDGES_NS
from dtlive.core.reco.events import build_events
from dtlive.core.reco.segments import fit_segments
from dtlive.core.reco.t0 import calibrate_trigger_offset, meantimer_t0, scint_t0, trigger_t0
from dtlive.core.reco.timebox import drift_times, fit_timebox, fit_timeboxes, timed_hits
from dtlive.core.rows import Rows, clean
from dtlive.core.simulate import SimConfig, simulate, simulate_truth

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sim():
    rows, truth = simulate_truth(10.0, seed=5, config=SimConfig(ancillary_rate_hz=0.0))
    hits, _ = clean(rows)
    return hits, truth, build_events(hits)


def _truth_of_events(ev, truth) -> np.ndarray:
    """Index of the true muon of each event (nearest true passage to the event start), -1 if none within 1 us."""
    start_ns = ev.start * det.TDC_NS
    t_mu = det.hit_time_ns(truth.orbit, 0, 0) + truth.time_ns
    i = np.clip(np.searchsorted(t_mu, start_ns), 1, len(t_mu) - 1)
    nearest = np.where(np.abs(t_mu[i] - start_ns) < np.abs(t_mu[i - 1] - start_ns), i, i - 1)
    return np.where(np.abs(t_mu[nearest] - start_ns) < 1000.0, nearest, -1)


def test_simulator_truth_comes_with_the_same_rows():
    rows, truth = simulate_truth(0.5, seed=2)
    plain = simulate(0.5, seed=2)
    assert all(np.array_equal(getattr(rows, c), getattr(plain, c)) for c in ("orbit", "bx", "tdc", "channel"))
    assert truth.t0_ns.shape == (len(truth), det.N_CHAMBERS) and truth.hit.shape == (len(truth), 16)
    assert (np.diff(truth.t0_ns, axis=1)[:, 0] == -np.diff(det.T0_OFFSET_NS)[0]).all() or len(truth) == 0


def test_events_are_the_muons(sim):
    hits, truth, ev = sim
    seen = truth.hit.reshape(len(truth), det.N_CHAMBERS, det.N_LAYERS).sum(axis=2).max(axis=1) >= 3
    match = _truth_of_events(ev, truth)
    found = np.isin(np.flatnonzero(seen), match)
    assert found.mean() > 0.97, found.mean()  # muons with a 3-layer chamber are found
    assert (match >= 0).mean() > 0.97  # and events are muons
    background = ev.background_per_chamber.sum()
    assert len(ev.event) + background == (hits.channel < det.CHAMBER_CHANNELS).sum()  # every chamber hit, once
    assert background > 0.15 * (len(ev.event) + background)  # the noise is kept apart


def test_meantimer_t0_is_within_a_few_ns_of_the_truth(sim):
    hits, truth, ev = sim
    match = _truth_of_events(ev, truth)
    mt = meantimer_t0(ev)
    ok = (match >= 0)[:, None] & ~np.isnan(mt)
    true_rel = truth.t0_ns[match.clip(0)] - (ev.start * det.TDC_NS)[:, None]
    err = (mt - true_rel)[ok]
    assert ok.sum(axis=0).min() > 300  # every chamber has meantimer events
    assert abs(np.median(err)) < 1.5, np.median(err)
    assert np.mean(np.abs(err) < 4.0) > 0.8, np.mean(np.abs(err) < 4.0)
    assert np.percentile(np.abs(err), 90) < 10.0  # the tail: a lone triplet of a steep track, a later t0
    assert np.mean(err < -10.0) < 0.01  # never much earlier than the truth


def test_trigger_t0_calibrated_on_simulation_agrees_with_truth_and_meantimer(sim):
    hits, truth, ev = sim
    cal = calibrate_trigger_offset(ev)
    assert (cal.n > 200).all() and (cal.error_ns < 5).all()
    tr, mt = trigger_t0(ev, cal.offset_ns), meantimer_t0(ev)
    diff = (tr - mt)[~np.isnan(tr - mt)]
    assert abs(np.median(diff)) < 1.0
    match = _truth_of_events(ev, truth)
    true_rel = truth.t0_ns[match.clip(0)] - (ev.start * det.TDC_NS)[:, None]
    err = (tr - true_rel)[(match >= 0)[:, None] & ~np.isnan(tr)]
    q16, q50, q84 = np.percentile(err, [16, 50, 84])
    assert abs(q50) < 10.0  # the calibration against the meantimer inherits its late tail
    assert (q84 - q16) / 2 < 60.0  # a trigger word after the segment's last hit: tens of ns per event


def test_fixed_latency_trigger_gives_a_sharp_trigger_t0():
    rows, truth = simulate_truth(5.0, seed=8, config=SimConfig(trigger_timing="fixed", ancillary_rate_hz=0.0))
    ev = build_events(clean(rows)[0])
    diff = trigger_t0(ev) - meantimer_t0(ev)
    diff = diff[~np.isnan(diff)]
    assert abs(np.median(diff)) < 15.0  # the BX rounding of the trigger word: -12.5 ns on average
    q25, q75 = np.percentile(diff, [25, 75])
    assert (q75 - q25) / 1.349 < 20.0  # jitter, the BX rounding of the trigger word, the meantimer tail


def test_scintillator_t0_matches_the_truth(sim):
    hits, truth, ev = sim
    match = _truth_of_events(ev, truth)
    sc = scint_t0(ev)
    true_rel = truth.t0_ns[match.clip(0)] - (ev.start * det.TDC_NS)[:, None]
    err = (sc - true_rel)[(match >= 0)[:, None] & ~np.isnan(sc)]
    assert np.percentile(np.abs(err), 95) < 1.0  # TDC counts of the scintillator hit only


def test_time_box_fit_finds_the_simulated_drift_velocity(sim):
    hits, truth, ev = sim
    edges = np.arange(-100.0, 505.0, 5.0)
    chamber, dt = drift_times(ev, meantimer_t0(ev))
    fits = fit_timeboxes(np.array([np.histogram(dt[chamber == c], edges)[0] for c in range(4)]), edges)
    assert np.all(np.abs(fits["t0_ns"]) < 5 + 3 * fits["t0_err_ns"]), fits["t0_ns"]
    pull = (fits["velocity_um_per_ns"] - det.DRIFT_VELOCITY_MM_PER_NS * 1e3) / fits["velocity_err_um_per_ns"]
    assert np.all(np.abs(fits["tmax_ns"] - det.MAX_DRIFT_NS) < 20), fits["tmax_ns"]
    assert np.all(np.abs(fits["velocity_um_per_ns"] - det.DRIFT_VELOCITY_MM_PER_NS * 1e3) < 3.0), pull


def test_segments_from_meantimer_t0_find_the_true_tracks(sim):
    hits, truth, ev = sim
    mt = meantimer_t0(ev)
    h = timed_hits(ev, mt)
    seg = fit_segments(h.event, h.chamber, h.layer, h.cell, h.drift_ns)
    assert len(seg) > 0.95 * (~np.isnan(mt)).sum()
    muon = _truth_of_events(ev, truth)[seg.event]
    planes = seg.chamber[:, None] * det.N_LAYERS + np.arange(det.N_LAYERS)[None, :]
    true_x = truth.local_mm[muon.clip(0)[:, None], planes].mean(axis=1)  # at the chamber's centre
    off = np.abs(seg.position_mm - true_x)[muon >= 0]
    assert np.mean(off < 1.0) > 0.85, np.mean(off < 1.0)


def test_pure_noise_gives_few_events():
    cfg = SimConfig(muon_rate_hz=0.0, noise_rate_hz_per_channel=20.0, ancillary_rate_hz=0.0)
    hits, _ = clean(simulate(20.0, seed=4, config=cfg))
    ev = build_events(hits)
    fake_rate_hz = ev.n_events / 20.0
    assert len(hits) > 80_000  # ~5 kHz of noise
    assert fake_rate_hz < 0.5, fake_rate_hz  # against 140 Hz of muons: < 0.4 %
    assert ev.background_per_chamber.sum() >= len(hits) - 3 * ev.n_events * 5


def test_products_split_by_fpga_equal_one_share_on_simulation(sim):
    hits, _, _ = sim
    part = hits.select(hits.orbit < hits.orbit.min() + det.orbits_for_seconds(2.0))
    whole = REGISTRY.compute(part)
    split = REGISTRY.combine([part.select(part.fpga == f) for f in (0, 1)])
    for k in whole:
        assert np.array_equal(whole[k], split[k]), k
    assert whole["events"] > 100 and whole["timebox_meantimer"].sum() > 500 and whole["timebox_trigger"].sum() > 500


def test_products_split_at_random_and_across_an_orbit_boundary_equal_one_share(sim):
    hits, _, ev = sim
    # a window that starts with a muon straddling an orbit boundary, if the simulation has one
    straddle = np.flatnonzero(np.bincount(ev.event[ev.event >= 0],
                                          weights=(ev.orbit[ev.event >= 0] != ev.event_orbit[ev.event[ev.event >= 0]]))
                              > 0)
    assert len(straddle)  # ~0.5 % of 1,400 muons cross an orbit boundary
    first = int(ev.event_orbit[straddle[0]])
    part = hits.select((hits.orbit >= first - 2000) & (hits.orbit < first + 2000))
    whole = REGISTRY.compute(part)
    rng = np.random.default_rng(3)
    for k in (2, 3, 5):
        share = rng.integers(0, k, len(part))
        split = REGISTRY.combine([part.select(share == i) for i in range(k)])
        for name in whole:
            assert np.array_equal(whole[name], split[name]), (k, name)
    assert whole["events"] > 10


@pytest.fixture(scope="module")
def run591():
    if not RUN_CSV.is_file():
        pytest.skip(f"run 591 is not at {RUN_CSV}")
    from dtlive.core.decode import read_csv

    hits, _ = clean(read_csv(str(RUN_CSV)))
    return hits


def test_run_591_time_boxes_are_filled_from_trigger_word_and_meantimer(run591):
    a = REGISTRY.compute(run591, Settings())
    assert int(a["drift_time_ns"].sum()) == 0  # no scintillator
    assert int(a["events"]) > 3000 and int(a["events_with_trigger"]) > 1500
    assert (a["timebox_meantimer"].sum(axis=1) > 4000).all()
    assert (a["timebox_trigger"].sum(axis=1) > 3000).all()
    assert (a["background_hits_per_chamber"] > a["event_hits_per_chamber"]).all()  # most real hits are noise
    fits = fit_timeboxes(a["timebox_meantimer"], Settings().drift_edges)
    assert fits["t0_ns"].max() < 30 and fits["t0_ns"].min() > -10  # the meantimer puts the rising edge near 0
    assert (np.abs(fits["tmax_ns"] - 350) < 30).all()  # run 591's box: ~350 ns, faster than 53.8 um/ns


def _parts_of_591(hits):
    """Run 591 before and after its 210 s pause (two trigger settings)."""
    orbits = np.unique(hits.orbit)
    last_before = orbits[np.argmax(np.diff(orbits))]
    return hits.select(hits.orbit <= last_before), hits.select(hits.orbit > last_before)


def test_run_591_trigger_and_meantimer_t0_agree_within_uncertainties(run591):
    """Calibrated on the even events, the trigger t0 of the odd ones agrees with their meantimer t0."""
    before, after = _parts_of_591(run591)
    assert np.allclose(calibrate_trigger_offset(build_events(before)).offset_ns, det.TRIGGER_T0_OFFSET_NS, atol=0.5)
    for part in (before, after):
        ev = build_events(part)
        diff = trigger_t0(ev, np.zeros(4)) - meantimer_t0(ev)
        even, odd = diff[0::2], diff[1::2]
        for c in range(det.N_CHAMBERS):
            a, b = even[:, c][~np.isnan(even[:, c])], odd[:, c][~np.isnan(odd[:, c])]
            assert len(a) > 100 and len(b) > 100
            q = [np.percentile(x, [25, 50, 75]) for x in (a, b)]
            err = [1.2533 * (x[2] - x[0]) / 1.349 / np.sqrt(len(y)) for x, y in zip(q, (a, b))]
            assert abs(q[1][1] - q[0][1]) < 3 * np.hypot(*err), (c, q, err)


def test_run_591_t0_difference_shows_the_trigger_setting_change(run591):
    """A 2 s window on each side of the pause: the trigger word moves ~150 ns against the meantimer."""
    centre = (T0_DIFFERENCE_EDGES_NS[:-1] + T0_DIFFERENCE_EDGES_NS[1:]) / 2
    medians = []
    for part in _parts_of_591(run591):
        window = part.select(part.orbit < part.orbit.min() + det.orbits_for_seconds(2.0))
        h = REGISTRY.compute(window)["t0_trigger_minus_meantimer"].sum(axis=0)
        assert h.sum() > 20
        medians.append(centre[np.searchsorted(np.cumsum(h), h.sum() / 2)])
    assert abs(medians[0]) < 30 and medians[0] - medians[1] > 100, medians


def test_fit_of_an_empty_or_tiny_box_fails_cleanly():
    assert not fit_timebox(np.ones(120), np.arange(121.0)).ok
    r = Rows.empty()
    assert build_events(r).n_events == 0 and meantimer_t0(build_events(r)).shape == (0, 4)


def test_the_compiled_keys_keep_exactly_the_elements_element_kind_names():
    """The element rule is written twice (the compiled sort keys and element_kind, which the share exchange uses to
    send the hits of split slots): every FPGA and channel a decoded hit can have is kept by the one exactly when
    the other calls it a chamber hit, trigger word or scintillator hit."""
    from dtlive.core.reco.events import element_kind
    from dtlive.core.reco.events_kernel import element_keys

    fpga, channel = (a.ravel() for a in np.meshgrid(np.arange(det.N_FPGA), np.arange(det.MAX_CHANNEL + 1)))
    ones = np.ones(len(channel), np.int64)
    keys = element_keys(fpga, channel, ones, ones, np.arange(len(channel)))  # tdc = row: each key names its row
    kept = (keys >> 11) - (keys >> 11).min()
    assert sorted(kept.tolist()) == np.flatnonzero(element_kind(fpga, channel) != 3).tolist()
    assert ((keys >> 8) & 7).tolist() == fpga[kept].tolist() and (keys & 255).tolist() == channel[kept].tolist()


@pytest.mark.parametrize("order", ["daq", "reversed", "shuffled"])
def test_the_keys_come_out_sorted_and_the_events_the_same_in_any_order_of_the_hits(sim, order):
    """Keys are moved into place as they are made (DAQ order is nearly time order); hits far out of order make the
    pass give up moving them and sort at the end: the keys, and so the events, are the same either way."""
    from dtlive.core.reco.events_kernel import element_keys

    hits, _, ev = sim
    rows = {"daq": np.arange(len(hits)), "reversed": np.arange(len(hits))[::-1],
            "shuffled": np.random.default_rng(3).permutation(len(hits))}[order]
    reordered = hits.select(rows)
    keys = element_keys(reordered.fpga, reordered.channel, reordered.orbit, reordered.bx, reordered.tdc)
    assert (keys == np.sort(element_keys(hits.fpga[::-1], hits.channel[::-1], hits.orbit[::-1], hits.bx[::-1],
                                         hits.tdc[::-1]))).all()
    again = build_events(reordered)
    assert again.n_events == ev.n_events > 100
    assert all((getattr(again, f) == getattr(ev, f)).all() for f in ("ticks", "event", "start", "trigger", "scint"))
