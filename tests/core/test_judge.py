"""Quality tests against a reference (dtlive.core.judge, checks, references) on simulated windows with faults.

One seeded simulated detector (no ancillary words, no noisy channels): the reference is its first 60 s
(30 windows of 2 s), the clean period the next 120 s (60 windows). Faults are put into the hits of the
windows after the reference: a dead channel (its hits removed), a noisy channel (Poisson hits added at
10x its rate), a chamber losing HV (95 % of its hits removed) and a chamber's rate halved (every other hit
kept at random). Each must be seen by the test that names it within ``DELAY`` windows, and the clean period
must give no warning and no error, window by window and in lumi blocks of 5 windows.

Measured with the default configuration (seeds 11-14, 20 fault windows each, reference of 30 windows): every
fault is flagged by its own test in its first window (delay 1 window). Chamber status in every fault window:
dead channel 1, noisy channel 2 (the occupancy chi2 sees it too), HV loss 4 (every channel judged dead, rate
ratio ~0.05), rate halved 3. The ``noisy_channels`` test itself flagged 77 of the 80 noisy windows (a channel
counts as noisy above 4x its neighbours' mean; the injected one is ~11x its own rate). False alarms: 0
warnings and 0 errors over 4 x 150 clean windows (2,400 chamber verdicts of ~15 tests each) and over 4 x 30
lumi blocks of 5 windows. The muon-only ``scint_channel_occupancy`` has lower p thresholds than the other
shapes: with the common ones its chi2 reached p < 1e-5 in 2 of 1,800 clean chamber verdicts (seeds 1-3).
Here the test asserts a delay of at most ``DELAY`` windows on seed 11 and no false alarm over 60 windows.
"""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import islice

import numpy as np
import pytest

from dtlive.core import detector as det
from dtlive.core.checks import chi2_test, dead_test, ks_test, neighbour_mean
from dtlive.core.judge import chamber_status, judge, judge_blocks, load_tests_config, run_tests
from dtlive.core.messages import QUALITY_TESTS_SCHEMA, decode_message, encode_message, iso_utc, to_dataset
from dtlive.core.products import compute_products
from dtlive.core.references import accumulate, load_reference, make_reference, merge_references, save_reference
from dtlive.core.rows import Rows
from dtlive.core.simulate import DEFAULT_START_ORBIT, SimConfig, stream

SEED = 11
W = 2.0
N_REF, N_CLEAN, N_FAULT = 30, 60, 6
DELAY = 2  # a fault must be flagged within this many windows of its start
CONFIG = SimConfig(ancillary_rate_hz=0.0, n_noisy_channels=0)
DEAD = (1, 37)  # (chamber, local channel)
NOISY = (2, 22)
HV_CHAMBER, HALVED_CHAMBER = 3, 0


def chamber_hits(hits: Rows) -> np.ndarray:
    return det.chamber_of(hits.fpga, hits.channel)


def is_channel(hits: Rows, chamber: int, channel: int) -> np.ndarray:
    fpga, tdc = det.channel_of(chamber, det.layer_of(channel), det.cell_of(channel))
    return (hits.fpga == fpga) & (hits.channel == tdc)


def dead_channel(hits: Rows, k: int) -> Rows:
    return hits.select(~is_channel(hits, *DEAD))


def noisy_channel(hits: Rows, k: int) -> Rows:
    rng = np.random.default_rng(1000 + k)
    own = is_channel(hits, *NOISY)
    n = rng.poisson(10 * own.sum())
    fpga, tdc = det.channel_of(NOISY[0], det.layer_of(NOISY[1]), det.cell_of(NOISY[1]))
    zeros = np.zeros(n, np.int64)
    extra = Rows.from_columns(head=zeros + 2, fpga=zeros + int(fpga), channel=zeros + int(tdc),
                              orbit=rng.integers(hits.orbit.min(), hits.orbit.max() + 1, n),
                              bx=rng.integers(0, det.BX_PER_ORBIT, n), tdc=rng.integers(0, det.TDC_PER_BX, n))
    return Rows.concat([hits, extra])


def keep_fraction(chamber: int, fraction: float):
    def fault(hits: Rows, k: int) -> Rows:
        rng = np.random.default_rng(2000 + k)
        return hits.select((chamber_hits(hits) != chamber) | (rng.random(len(hits)) < fraction))
    return fault


def window(hits: Rows, k: int):
    ds = compute_products(hits)
    first = DEFAULT_START_ORBIT + int(np.floor(k * W / det.ORBIT_S))
    last = DEFAULT_START_ORBIT + int(np.floor((k + 1) * W / det.ORBIT_S)) - 1
    ds.attrs.update(window_id=k, first_orbit=first, last_orbit=last, provenance=json.dumps({"config_hash": "sim"}))
    return ds


@pytest.fixture(scope="module")
def sim():
    """Hits of the reference windows and of the windows after them (a simulated 2 s window each)."""
    chunks = islice(stream(chunk_s=W, seed=SEED, config=CONFIG), N_REF + N_CLEAN)
    hits = [rows.select(rows.head == det.HIT_HEAD) for rows in chunks]
    ref = make_reference([window(h, k) for k, h in enumerate(hits[:N_REF])], detector={"simulator_seed": SEED},
                         label="clean simulation")
    clean = [window(h, N_REF + k) for k, h in enumerate(hits[N_REF:])]
    return {"hits": hits, "reference": ref, "clean": clean, "config": load_tests_config()}


def flagged(verdict: dict, chamber: int, test: str) -> bool:
    return any(t["test"] == test and t["status"] in ("warning", "error")
               for t in verdict["chambers"][f"chamber_{chamber}"]["tests"])


def problems(verdict: dict) -> list[str]:
    tests = [(name, t) for name, c in verdict["chambers"].items() for t in c["tests"]]
    tests += [("detector", t) for t in verdict["detector"]["tests"]]
    return [f"{name} {t['test']} {t['product']}: {t['reason']}" for name, t in tests
            if t["status"] in ("warning", "error")]


def test_a_clean_period_gives_no_warning_against_a_reference_of_another_clean_period(sim):
    verdicts = [judge(w, sim["reference"], sim["config"]) for w in sim["clean"]]
    assert [p for v in verdicts for p in problems(v)] == []
    assert {c["status"] for v in verdicts for c in v["chambers"].values()} == {0}
    blocks = [judge(sim["clean"][i:i + 5], sim["reference"], sim["config"]) for i in range(0, N_CLEAN, 5)]
    assert [p for v in blocks for p in problems(v)] == []
    assert all(v["windows"]["count"] == 5 and abs(v["windows"]["seconds"] - 5 * W) < 1e-3 for v in blocks)
    # the tests did judge, not only lack statistics: all but the drift-time overflow counts (~15 entries
    # expected a window, 50 needed) in every window, and all of them in blocks of 5 windows
    unjudged = {t["test"] for v in verdicts for c in v["chambers"].values() for t in c["tests"]
                if t["status"] == "not_enough_statistics"}
    # a window's muon events are too few for some reconstruction tests: they judge blocks of windows
    assert "drift_time_overflow" in unjudged
    assert unjudged <= {"drift_time_overflow", "event_rate", "timebox_shape", "timebox_moments", "timebox_overflow",
                        "timebox_edges", "segment_rate", "segment_shapes", "segment_moments"}
    not_ok = {(t["test"], t["status"]) for v in blocks for c in v["chambers"].values() for t in c["tests"]
              if t["status"] != "ok"}
    rare = {(name, "not_enough_statistics") for name in ("timebox_overflow", "drift_time_overflow")}  # few a window
    assert not_ok <= rare, not_ok


@pytest.mark.parametrize("fault, chamber, test, status", [
    (dead_channel, DEAD[0], "dead_channels", 1),
    (noisy_channel, NOISY[0], "noisy_channels", 2),
    (keep_fraction(HV_CHAMBER, 0.05), HV_CHAMBER, "chamber_rate", 4),
    (keep_fraction(HALVED_CHAMBER, 0.5), HALVED_CHAMBER, "chamber_rate", 3),
], ids=["dead_channel", "noisy_channel", "hv_loss", "rate_halved"])
def test_a_fault_is_flagged_within_the_stated_windows(sim, fault, chamber, test, status):
    delay = None
    for i in range(N_FAULT):
        k = N_REF + i
        v = judge(window(fault(sim["hits"][k], k), k), sim["reference"], sim["config"])
        if flagged(v, chamber, test) and v["chambers"][f"chamber_{chamber}"]["status"] >= status:
            delay = i + 1
            break
    assert delay is not None and delay <= DELAY, f"{test} not flagged in chamber {chamber} within {DELAY} windows"
    others = {c: s["status"] for c, s in v["chambers"].items() if c != f"chamber_{chamber}"}
    if test != "chamber_rate":  # a chamber's lost hits also lower the total rate; channel faults stay local
        assert set(others.values()) == {0}, problems(v)


def test_the_dead_channel_and_the_noisy_channel_are_named(sim):
    k = N_REF
    v = judge(window(noisy_channel(dead_channel(sim["hits"][k], k), k), k), sim["reference"], sim["config"])
    tests = {(c, t["test"]): t for c, s in v["chambers"].items() for t in s["tests"]}
    assert tests[(f"chamber_{DEAD[0]}", "dead_channels")]["details"]["bad_channels"] == [DEAD[1]]
    assert tests[(f"chamber_{NOISY[0]}", "noisy_channels")]["details"]["bad_channels"] == [NOISY[1]]
    assert f"channel {DEAD[1]}" in v["chambers"][f"chamber_{DEAD[0]}"]["reasons"][-1]


def test_hv_loss_makes_the_chamber_bad_with_its_reasons(sim):
    k = N_REF
    v = judge(window(keep_fraction(HV_CHAMBER, 0.05)(sim["hits"][k], k), k), sim["reference"], sim["config"])
    c = v["chambers"][f"chamber_{HV_CHAMBER}"]
    assert c["status"] == 4 and c["label"] == "bad" and c["working_fraction"] < 0.5
    assert any(r.startswith("chamber_rate (hits_per_chamber): ratio 0.0") for r in c["reasons"])
    assert any(r.startswith("working channels") for r in c["reasons"])
    assert v["status"] == 4


def test_a_masked_channel_is_not_judged(sim):
    k = N_REF
    dead = window(dead_channel(sim["hits"][k], k), k)
    v = judge(dead, sim["reference"], sim["config"], masks={DEAD[0]: [DEAD[1]]})
    c = v["chambers"][f"chamber_{DEAD[0]}"]
    assert c["status"] == 0 and problems(v) == [] and c["bad_channels"] == [DEAD[1]]
    toml = '[[tests]]\nname = "dead"\nkind = "dead"\nproducts = ["channel_*"]\n'
    assert problems(judge(dead, sim["reference"], toml)) != []
    assert problems(judge(dead, sim["reference"], f'[masks]\n"{DEAD[0]}" = [{DEAD[1]}]\n' + toml)) == []


def test_a_small_rate_loss_is_found_by_a_lumi_block_only(sim):
    """A chamber at 93 % of its rate, against a band of +-5 %: ~3.4 Poisson sigma in one window (below the
    5 sigma needed), ~11 sigma in a block of 10 windows."""
    fault = keep_fraction(1, 0.93)
    wins = [window(fault(sim["hits"][N_REF + i], N_REF + i), N_REF + i) for i in range(10)]
    default = load_tests_config()
    cfg = replace(default, tests=tuple(replace(t, params={**t.params, "warning": [0.95, 1.05]})
                                       if t.name == "chamber_rate" else t for t in default.tests))
    assert not any(flagged(judge(w, sim["reference"], cfg), 1, "chamber_rate") for w in wins)
    assert flagged(judge(wins, sim["reference"], cfg), 1, "chamber_rate")
    assert not flagged(judge(sim["clean"][:10], sim["reference"], cfg), 1, "chamber_rate")


def test_a_reference_survives_netcdf_and_gives_the_same_verdicts(sim, tmp_path):
    path = tmp_path / "ref.nc"
    save_reference(sim["reference"], path)
    back = load_reference(path)
    assert back.attrs["windows"] == N_REF and json.loads(back.attrs["detector"]) == {
        "simulator_seed": SEED, "config_hash": ["sim"]}
    w = sim["clean"][0]
    verdict = judge(w, back, sim["config"])
    assert verdict == judge(w, sim["reference"], sim["config"])
    assert json.loads(json.dumps(verdict, allow_nan=False))["reference"]["windows"] == N_REF


def test_references_merge_and_windows_from_messages_are_judged(sim):
    halves = merge_references(make_reference(sim["clean"][:10]), make_reference(sim["clean"][10:20]))
    whole = make_reference(sim["clean"][:20])
    assert (halves.channel_occupancy == whole.channel_occupancy).all()
    assert halves.attrs["windows"] == 20 and halves.attrs["orbits"] == whole.attrs["orbits"]
    msgs = []
    for w in sim["clean"][:4]:
        w = w.copy()
        k = w.attrs["window_id"]
        w.attrs.update(window_start=iso_utc(1.7e9 + W * k), window_end=iso_utc(1.7e9 + W * k + W))
        msgs.append(decode_message(encode_message(w)))
    stacked = to_dataset(msgs)
    verdicts = judge_blocks(stacked, sim["reference"], block=2)
    assert len(verdicts) == 2 and [v["windows"]["ids"] for v in verdicts] == [[N_REF, N_REF + 1],
                                                                               [N_REF + 2, N_REF + 3]]
    assert verdicts[0]["windows"]["start"] == iso_utc(1.7e9 + W * N_REF)
    acc = accumulate(stacked)
    assert acc.attrs["windows"] == 4 and int(acc.total_hits) == int(stacked.total_hits.sum())
    assert all(v["schema"] == QUALITY_TESTS_SCHEMA and problems(v) == [] for v in verdicts)
    json.dumps(verdicts, allow_nan=False)  # JSON-ready: no NaN, no numpy types


def test_every_product_has_a_default_test(sim):
    cfg = sim["config"]
    names = {r.product for r in run_tests(accumulate(sim["clean"][0]), sim["reference"], cfg)}
    one_axis = {str(k) for k, v in sim["clean"][0].data_vars.items() if len(set(v.dims) - {"chamber", "time"}) <= 1}
    assert names == one_axis  # maps with two axes besides the chamber (per layer and cell) are not judged yet


def test_too_few_entries_are_not_judged():
    ctx_args = dict(centres=np.arange(4.0), mask=np.zeros(4, bool), scale=1.0)
    from dtlive.core.checks import Context

    ctx = Context(**ctx_args)
    assert chi2_test(np.array([3, 0, 0, 0]), np.full(4, 1000), ctx, {}).status == "not_enough_statistics"
    assert ks_test(np.array([50, 50, 0, 0]), np.full(4, 10), ctx, {}).status == "not_enough_statistics"
    low = Context(**{**ctx_args, "scale": 0.001})  # 1 entry expected per channel: a zero means nothing
    assert dead_test(np.zeros(4), np.full(4, 1000), low, {}).status == "not_enough_statistics"
    assert dead_test(np.zeros(4), np.full(4, 1000), ctx, {}).status == "error"


def test_status_is_the_worst_level_with_its_reasons():
    from dtlive.core.checks import Outcome
    from dtlive.core.judge import Result

    rules = load_tests_config().status
    warn = Result("t", "chi2", "p", 0, Outcome("warning", 1e-6, "odd shape"), rules.warning)
    nes = Result("t", "chi2", "p", 1, Outcome("not_enough_statistics", float("nan"), "few"), 0)
    s = chamber_status([warn, nes], rules, masks={0: range(10)}, chambers=[0, 1])
    assert s[0]["status"] == 2 and s[0]["reasons"][0] == "t (p): odd shape"  # 54/64 working: below 85 %
    assert s[1]["status"] is None


def test_neighbour_mean_skips_masked_channels():
    occ = np.full(64, 10.0)
    occ[8] = 1000  # cell 2 of layer slot 0; its neighbours are channels 0, 4, 12, 16
    mask = np.zeros(64, bool)
    mask[8] = True
    assert neighbour_mean(occ, mask)[4] == 10 and neighbour_mean(occ)[4] > 300



def test_without_a_reference_only_the_tests_that_need_none_judge(sim):
    v = judge(sim["clean"][0], None, sim["config"])
    judged = {t["kind"] for c in v["chambers"].values() for t in c["tests"] if t["status"] != "not_enough_statistics"}
    assert judged == {"range", "noisy"} and problems(v) == []
    assert {c["status"] for c in v["chambers"].values()} == {0} and v["reference"]["seconds"] is None


def test_a_reference_binned_otherwise_is_refused(sim):
    other = compute_products(sim["hits"][N_REF], drift_edges=np.linspace(-100.0, 500.0, 61))
    with pytest.raises(ValueError, match="drift_time bins differ"):
        judge(other, sim["reference"], sim["config"])
    with pytest.raises(ValueError, match="drift_time bins differ"):
        merge_references(sim["reference"], make_reference(other))


def test_a_detector_wide_error_sets_the_verdict_status(sim):
    k = N_REF
    hits = sim["hits"][k]
    v = judge(window(hits.select(chamber_hits(hits) < 0), k), sim["reference"], sim["config"])  # chambers empty
    assert v["detector"]["status"] == 2 and v["detector"]["reasons"][0].startswith("total_rate (total_hits)")
    assert v["status"] == 4


def test_a_channel_empty_in_the_reference_counts_as_not_working(sim):
    ref = make_reference([window(dead_channel(h, k), k) for k, h in enumerate(sim["hits"][:10])])
    k = N_REF
    v = judge(window(dead_channel(sim["hits"][k], k), k), ref, sim["config"])
    c = v["chambers"][f"chamber_{DEAD[0]}"]
    assert c["bad_channels"] == [DEAD[1]] and c["working_fraction"] == round(63 / 64, 4) and c["status"] == 0


def test_a_silent_chamber_is_bad_without_a_reference_and_so_never_certified_good():
    from dtlive.core.certification import is_good

    n = 4000  # a window of hits in chambers 0, 1 and 3 only (chamber 2 lost its HV)
    chamber = np.array([0, 1, 3])[np.arange(n) % 3]
    hits = Rows.from_columns(head=np.full(n, 2), fpga=chamber // 2, channel=(chamber % 2) * 64 + np.arange(n) % 64,
                             orbit=np.arange(n) * 5, bx=np.zeros(n, int), tdc=np.zeros(n, int))
    ds = compute_products(hits)
    ds.attrs.update(window_id=1, first_orbit=0, last_orbit=22445)
    chambers = judge(ds, None)["chambers"]
    assert chambers["chamber_2"]["status"] == 4 and chambers["chamber_2"]["label"] == "bad"
    assert "rate 0 Hz" in chambers["chamber_2"]["reasons"][0]
    assert [is_good(chambers[f"chamber_{c}"]["status"]) for c in range(4)] == [True, True, False, True]
