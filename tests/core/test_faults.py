"""Faults put into the simulator (dtlive.core.faults) and their detection by the quality tests in lumi blocks
(dtlive.core.detection, judged as the recorder judges: LumiJudge, blocks of 5 windows of 2 s).

Seed 11 (the seed of tests/core/test_judge.py): the reference is the sound detector's first 30 windows (60 s);
each fault of FAULT_CASES (a dead channel, a noisy channel, a chamber losing HV, a t0 shift of 10 ns, a drift
velocity 10 % low) starts at window 30, on a block boundary, and must be flagged within its stated windows (the
first block, 10 s) by the test that names it. The clean period judged here is 20 blocks (200 s) after the
reference, with no warning and no error and every time box judged; benchmarks/detection.py measures the delays
over more seeds and the false alarms over a clean hour (360 blocks), and the README gives its figures. A
detector at an eighth of the rates gives too few entries for the time-box edges: "not enough statistics", no alarm.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dtlive.core import detector as det
from dtlive.core.detection import (
    BLOCK,
    FAULT_CASES,
    SOUND,
    detect_case,
    false_alarms,
    simulated_messages,
    simulated_reference,
)
from dtlive.core.faults import Faults, per_chamber
from dtlive.core.products import compute_arrays
from dtlive.core.products.kernel import DRIFT_EDGES_NS
from dtlive.core.reco.timebox import fit_timebox
from dtlive.core.rows import Rows, clean
from dtlive.core.simulate import SimConfig, simulate, simulate_truth

pytestmark = pytest.mark.timeout(240)

SEED = 11
N_REF = 30
N_CLEAN_BLOCKS = 20  # 200 s of lumi blocks; benchmarks/detection.py judges an hour


def with_faults(**kw) -> SimConfig:
    return replace(SOUND, faults=Faults(**kw))


def channel_counts(rows: Rows) -> np.ndarray:
    """Hits per chamber channel (index chamber * 64 + channel = FPGA * 128 + TDC_CHANNEL), then scintillator,
    then trigger words."""
    h, _ = clean(rows)
    chamber = h.channel < det.CHAMBER_CHANNELS
    counts = np.bincount(h.fpga[chamber] * det.CHAMBER_CHANNELS + h.channel[chamber], minlength=256)
    return np.append(counts, [(h.channel == det.SCINT_CHANNEL).sum(), (h.channel == det.TRIGGER_CHANNEL).sum()])


def scint_box(rows: Rows, chamber: int):
    """The fitted scintillator time box (``drift_time_ns``) of a chamber."""
    return fit_timebox(compute_arrays(clean(rows)[0])["drift_time_ns"][chamber], DRIFT_EDGES_NS)


@pytest.fixture(scope="module")
def sound_rows() -> Rows:
    return simulate(20.0, seed=SEED, config=SOUND)


# --- the simulator's faults -----------------------------------------------------------------------------------------


def test_without_faults_the_rows_are_the_sound_detectors():
    a = simulate(2.0, seed=3)
    b = simulate(2.0, seed=3, config=SimConfig(faults=Faults()))
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("orbit", "bx", "tdc", "channel", "fpga"))
    assert not Faults().active and Faults().describe() == "no fault"


def test_a_dead_channel_records_nothing_and_the_other_channels_are_untouched(sound_rows):
    dead = simulate(20.0, seed=SEED, config=with_faults(dead_channels=((1, 37),)))
    a, b = channel_counts(sound_rows), channel_counts(dead)
    index = 1 * 64 + 37
    assert a[index] > 100 and b[index] == 0
    others = np.arange(256) != index
    assert np.array_equal(a[:256][others], b[:256][others])  # the same muons and noise: only the channel is lost
    assert b[256] == a[256] and 0 <= a[257] - b[257] < 0.01 * a[257]  # a trigger word may miss a layer


def test_hv_loss_keeps_the_stated_fraction_of_the_chambers_hits(sound_rows):
    lost = simulate(20.0, seed=SEED, config=with_faults(hit_fraction=per_chamber(3, 0.05, 1.0)))
    a, b = channel_counts(sound_rows), channel_counts(lost)
    assert 0.04 < b[192:256].sum() / a[192:256].sum() < 0.06
    assert np.array_equal(a[:192], b[:192])


def test_a_noisy_channel_adds_its_rate(sound_rows):
    noisy = simulate(20.0, seed=SEED, config=with_faults(noisy_channels=((2, 22, 200.0),)))
    a, b = channel_counts(sound_rows), channel_counts(noisy)
    added = b[2 * 64 + 22] - a[2 * 64 + 22]
    assert abs(added - 4000) < 5 * np.sqrt(4000), added
    assert np.array_equal(np.delete(a, 2 * 64 + 22), np.delete(b, 2 * 64 + 22))


def test_a_t0_shift_delays_the_chambers_hits_and_its_truth():
    rows, truth = simulate_truth(20.0, seed=SEED, config=SOUND)
    shifted_rows, shifted = simulate_truth(20.0, seed=SEED, config=with_faults(t0_shift_ns=per_chamber(2, 8.0, 0.0)))
    assert np.allclose(shifted.t0_ns - truth.t0_ns, [0.0, 0.0, 8.0, 0.0])
    assert np.array_equal(channel_counts(rows)[:256], channel_counts(shifted_rows)[:256])
    before, after = scint_box(rows, 2), scint_box(shifted_rows, 2)
    assert abs(after.t0_ns - before.t0_ns - 8.0) < 1.0, (before, after)
    assert abs(after.tmax_ns - before.tmax_ns) < 2.0
    other = scint_box(shifted_rows, 3)
    assert abs(other.t0_ns - scint_box(rows, 3).t0_ns) < 0.5


def test_a_slower_drift_stretches_the_time_box(sound_rows):
    slow = simulate(20.0, seed=SEED, config=with_faults(drift_velocity_scale=per_chamber(1, 0.9, 1.0)))
    before, after = scint_box(sound_rows, 1), scint_box(slow, 1)
    assert abs(before.tmax_ns - det.MAX_DRIFT_NS) < 5.0, before
    assert abs(after.tmax_ns - det.MAX_DRIFT_NS / 0.9) < 5.0, after
    assert abs(after.t0_ns - before.t0_ns) < 1.0
    assert abs(after.velocity_um_per_ns / before.velocity_um_per_ns - 0.9) < 0.01


def test_impossible_faults_are_refused():
    with pytest.raises(ValueError, match="t0_shift_ns"):
        Faults(t0_shift_ns=(1.0, 2.0))
    with pytest.raises(ValueError, match="channel"):
        Faults(dead_channels=((4, 1),))
    with pytest.raises(ValueError, match="drift_velocity_scale"):
        Faults(drift_velocity_scale=per_chamber(0, 0.0, 1.0))


# --- detection by the quality tests in lumi blocks --------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    return simulated_reference(SOUND, SEED, N_REF)


@pytest.mark.parametrize("name", list(FAULT_CASES))
def test_each_fault_is_flagged_within_its_stated_windows(reference, name):
    case = FAULT_CASES[name]
    d = detect_case(case, reference, SEED, N_REF, case.within_windows, SOUND)
    assert d["detected"], f"{case.faults.describe()} not flagged within {case.within_windows} windows"
    assert d["within"] and d["named"], d
    if name in ("dead_channel", "noisy_channel"):  # a channel's fault stays in its chamber
        assert set(d["other_chambers"].values()) == {0}, d


def test_windows_of_a_fault_follow_the_sound_detectors_muons():
    a = next(simulated_messages(SOUND, SEED, first=N_REF, count=1))
    b = next(simulated_messages(with_faults(t0_shift_ns=per_chamber(0, 5.0, 0.0)), SEED, first=N_REF, count=1))
    assert a["window"]["id"] == b["window"]["id"] == N_REF
    assert a["hits_per_chamber"] == b["hits_per_chamber"]


def test_clean_lumi_blocks_give_no_alarm_and_every_test_judges(reference):
    clean_blocks = false_alarms(SOUND, reference, SEED, N_REF, N_CLEAN_BLOCKS * BLOCK)
    assert clean_blocks["blocks"] == N_CLEAN_BLOCKS
    assert clean_blocks["alarms"] == [] and clean_blocks["warnings"] == clean_blocks["errors"] == 0
    assert clean_blocks["max_status"] == 0 and clean_blocks["not_judged"] == 0
    edges = clean_blocks["edges"]  # every time box of every chamber judged in every block
    assert {k: len(v["t0"]) for k, v in edges.items()} == {
        f"{test} ({product})": 4 * N_CLEAN_BLOCKS for test, product in (
            ("timebox_edges", "drift_time_ns"), ("timebox_edges", "timebox_meantimer"))}


def test_windows_of_few_muons_are_not_judged_rather_than_flagged(reference):
    """An eighth of the rates (every chamber still above the 100 Hz the absolute rate test wants): a block holds
    too few entries for the time-box edges (~180-600 a chamber, 1,000 needed); nothing is flagged."""
    low = replace(SOUND, hit_rate_hz=SOUND.hit_rate_hz / 8, muon_rate_hz=SOUND.muon_rate_hz / 8)
    out = false_alarms(low, simulated_reference(low, SEED, N_REF), SEED, N_REF, 2 * BLOCK)
    assert out["blocks"] == 2 and out["alarms"] == [] and out["edges"] == {}
