"""Poison input never stops the stream or poisons its state: far-ahead orbits, implausible epoch headers.

Pure parts (no broker): the windows' evidence rule for far-ahead hits, the epoch header check, the nodes.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from datafiles import RUN_CSV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamz import Stream

from dtlive.core import detector as det
from dtlive.core.checkpoint import Checkpoint
from dtlive.core.rows import Rows
from dtlive.core.windows import EventTimeWindows
from dtlive.streaming.nodes import Batch, plausible_epoch


def hits(orbits, partition=0, offsets=None) -> Rows:
    orbits = np.asarray(orbits, np.int64)
    n = len(orbits)
    return Rows.from_columns(head=np.full(n, 2), fpga=np.zeros(n), channel=np.arange(n) % 64, orbit=orbits,
                             bx=np.zeros(n), tdc=np.zeros(n), partition=partition,
                             offset=np.arange(n) if offsets is None else offsets)


def feed(w: EventTimeWindows, rows: Rows, size: int):
    closed, late = [], []
    for i in range(0, len(rows), size):
        c, lt = w.add(rows.select(slice(i, i + size)))
        closed += c
        late.append(lt)
    closed += w.flush()
    return closed, Rows.concat(late), w.take_out_of_range()


# --- the evidence rule -------------------------------------------------------------------------------------------


def test_one_far_ahead_hit_does_not_make_the_real_hits_late():
    w = EventTimeWindows(100, 10, max_jump_orbits=1000)
    w.add(hits([5, 20, 40], offsets=[0, 1, 2]))
    closed, late = w.add(hits([50, 10**9, 60, 70], offsets=[3, 4, 5, 6]))
    assert closed == [] and len(late) == 0 and w.watermark == 60  # 70 - 10: the far hit moved nothing
    far = w.take_out_of_range()
    assert far.orbit.tolist() == [10**9] and far.offset.tolist() == [4]
    closed, late = w.add(hits([150], offsets=[7]))
    assert [c.id for c in closed] == [0] and len(late) == 0
    assert sorted(closed[0].hits.offset.tolist()) == [0, 1, 2, 3, 5, 6]


def test_without_the_check_one_far_hit_makes_every_later_hit_late():
    """What the rule prevents (the old behaviour, still there with max_jump_orbits=None)."""
    w = EventTimeWindows(100, 10)
    w.add(hits([5, 10**9]))
    _, late = w.add(hits([50, 60], offsets=[2, 3]))
    assert len(late) == 2


def test_a_far_hit_at_the_end_of_a_batch_is_held_then_rejected_when_the_stream_stays():
    w = EventTimeWindows(100, 0, max_jump_orbits=1000)
    w.add(hits([5, 10], offsets=[0, 1]))
    w.add(hits([20, 10**9], offsets=[2, 3]))
    assert len(w.take_out_of_range()) == 0 and w.held_offsets() == {0: [3]}
    assert w.pending_offsets() == {0: 0}  # window 0 is open anyway
    closed, _ = w.add(hits([100], offsets=[4]))  # the stream goes on where it was: the held hit had no evidence
    assert [c.id for c in closed] == [0] and w.pending_offsets() == {0: 4}
    assert w.take_out_of_range().offset.tolist() == [3] and w.held_offsets() == {}


def test_held_rows_hold_the_restart_offset_back():
    w = EventTimeWindows(100, 0, max_jump_orbits=1000)
    w.add(hits([5], offsets=[0]))
    closed, _ = w.add(hits([150, 10**9], offsets=[1, 2]))
    assert [c.id for c in closed] == [0]
    assert w.pending_offsets() == {0: 1}
    w.add(hits([210], offsets=[3]))  # window 1 closes; the far hit is rejected
    assert w.pending_offsets() == {0: 3}


def test_a_real_jump_with_many_hits_is_followed_at_once():
    w = EventTimeWindows(100, 0, max_jump_orbits=1000, jump_evidence_rows=5)
    w.add(hits([5, 10], offsets=[0, 1]))
    jump = 10**6 + np.arange(5)
    closed, late = w.add(hits([20, *jump], offsets=np.arange(2, 8)))
    assert [c.id for c in closed] == [0] and len(late) == 0 and len(w.take_out_of_range()) == 0
    assert w.watermark == 10**6 + 4


def test_a_real_jump_with_few_hits_is_followed_when_the_next_batch_continues_there():
    w = EventTimeWindows(100, 0, max_jump_orbits=1000)
    w.add(hits([5, 10], offsets=[0, 1]))
    assert w.add(hits([20, 10**6], offsets=[2, 3]))[0] == []  # held: one row is no evidence yet
    closed, late = w.add(hits([10**6 + 50], offsets=[4]))  # the partition's data continues there
    assert [c.id for c in closed] == [0] and len(late) == 0 and len(w.take_out_of_range()) == 0
    (last,) = w.flush()
    assert sorted(last.hits.offset.tolist()) == [3, 4]


def test_held_rows_are_rejected_when_the_next_batch_jumps_elsewhere():
    w = EventTimeWindows(100, 0, max_jump_orbits=1000)
    w.add(hits([5], offsets=[0]))
    w.add(hits([10**6], offsets=[1]))
    w.add(hits([3 * 10**6], offsets=[2]))  # yet another step up: no evidence for either, both wait
    assert len(w.take_out_of_range()) == 0 and w.held_offsets() == {0: [1, 2]}
    w.add(hits([10], offsets=[3]))  # the stream is still where it was
    assert w.take_out_of_range().offset.tolist() == [1, 2] and w.held_offsets() == {}
    w.add(hits([4 * 10**6, 4 * 10**6 + 5], offsets=[4, 5]))
    w.flush()  # the stream ends: what is still held has no evidence
    assert w.take_out_of_range().offset.tolist() == [4, 5]


def test_spikes_climbing_one_above_the_other_are_all_rejected():
    w = EventTimeWindows(100, 0, max_jump_orbits=1000)
    w.add(hits([5, 6], offsets=[0, 1]))
    for k, orbit in enumerate([3 * 10**9, 4 * 10**9, 5 * 10**9, 20]):  # one row per batch, as a slow feed gives
        w.add(hits([orbit], offsets=[2 + k]))
    assert w.take_out_of_range().offset.tolist() == [2, 3, 4] and w.watermark == 20


def test_partitions_are_judged_each_against_its_own_stream():
    w = EventTimeWindows(100, 0, max_jump_orbits=1000)
    w.add(Rows.concat([hits([5], partition=0, offsets=[0]), hits([10**6], partition=1, offsets=[0])]))
    assert w.watermark == 5  # each partition's first rows are their own reference
    w.add(Rows.concat([hits([50, 10**7], partition=0, offsets=[1, 2]), hits([10**6 + 1], partition=1, offsets=[1])]))
    assert w.held_offsets() == {0: [2]}
    w.add(hits([60], partition=0, offsets=[3]))
    assert w.take_out_of_range().partition.tolist() == [0]


def test_rows_an_earlier_run_rejected_are_not_rejected_twice_but_undecided_ones_are():
    w = EventTimeWindows(100, 0, max_jump_orbits=1000, undecided={0: [5]})
    w.add(hits([1, 2], offsets=[0, 1]))
    batch = hits([3, 10**9, 4, 10**9, 6], offsets=[2, 3, 4, 5, 6])
    w.add(batch, already_published=np.array([True, True, True, True, False]))
    assert w.take_out_of_range().offset.tolist() == [5]  # 3 was dead-lettered by the earlier run; 5 was held


def test_the_first_batch_of_a_partition_is_judged_against_its_lowest_orbit():
    w = EventTimeWindows(100, 0, max_jump_orbits=1000)
    closed, _ = w.add(hits([10**9, 5, 6, 7, 150], offsets=np.arange(5)))
    assert len(w.take_out_of_range()) == 1 and [c.id for c in closed] == [0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(50, 400), poison=st.lists(st.integers(0, 10**6), min_size=1, max_size=8, unique=True),
       size=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_property_isolated_far_hits_are_all_rejected_and_no_real_hit_is_late(n, poison, size, seed):
    rng = np.random.default_rng(seed)
    real = np.sort(rng.integers(0, 50 * n, n))
    orbits = real.copy()
    at = sorted({p % (n - 1) + 1 for p in poison})  # never the very first row: the stream needs a start
    orbits[at] = 10**9 + rng.integers(0, 4 * 10**9, len(at))  # random corrupt orbits, far ahead
    w = EventTimeWindows(100, 0, max_jump_orbits=1000, jump_evidence_rows=20)
    closed, late, far = feed(w, hits(orbits), size)
    in_windows = sorted(o for c in closed for o in c.hits.offset.tolist())
    assert len(late) == 0
    assert sorted(far.offset.tolist()) == at
    assert in_windows == sorted(set(range(n)) - set(at))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(60, 300), parts=st.integers(2, 4), spikes=st.integers(1, 6), size=st.integers(1, 50),
       seed=st.integers(0, 2**16))
def test_property_spikes_on_several_partitions_batched_together(n, parts, spikes, size, seed):
    """Partitions interleaved in one stream (as consume calls mix them): each judged on its own rows."""
    rng = np.random.default_rng(seed)
    orbits = np.sort(rng.integers(0, 40 * n, n))  # one event time, rows spread over partitions
    partition = rng.integers(0, parts, n)
    partition[:parts] = np.arange(parts)  # every partition starts with a real row
    at = np.sort(rng.choice(np.arange(parts, n - 1), min(spikes, n - parts - 1), replace=False))
    orbits[at] = 10**9 + rng.integers(0, 4 * 10**9, len(at))
    rows = Rows.from_columns(head=np.full(n, 2), fpga=np.zeros(n), channel=np.zeros(n), orbit=orbits, bx=np.zeros(n),
                             tdc=np.zeros(n), partition=partition, offset=np.arange(n))
    w = EventTimeWindows(100, 500, max_jump_orbits=2000, jump_evidence_rows=20)
    closed, late, far = feed(w, rows, size)
    assert len(late) == 0  # lateness covers the spread of one batch over partitions
    assert sorted(far.offset.tolist()) == at.tolist()  # some only at the flush: their partition said nothing more
    assert sorted(o for c in closed for o in c.hits.offset.tolist()) == sorted(set(range(n)) - set(at.tolist()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(120, 300), jump_at=st.integers(1, 59), size=st.integers(1, 40))
def test_property_a_real_jump_is_followed_whatever_the_batching(n, jump_at, size):
    """At least one batch follows the one with the jump, or the jump brings enough rows at once."""
    orbits = np.arange(n) * 7
    orbits[jump_at:] += 10**7  # the DAQ moved far ahead and stays there
    w = EventTimeWindows(100, 0, max_jump_orbits=1000, jump_evidence_rows=20)
    closed, late, far = feed(w, hits(orbits), size)
    assert len(late) == 0 and len(far) == 0
    assert Counter(o for c in closed for o in c.hits.offset.tolist()) == Counter(range(n))


@pytest.mark.parametrize("size", [7, 300, 997])
def test_real_run_with_its_210_s_gap_is_exact_with_the_check_on(size):
    if not RUN_CSV.exists():
        pytest.skip("shared data not available")
    df = pd.read_csv(RUN_CSV)
    rows = Rows.from_columns(head=df.HEAD, fpga=df.FPGA, channel=df.TDC_CHANNEL, orbit=df.ORBIT_CNT,
                             bx=df.BX_COUNTER, tdc=df.TDC_MEAS)
    w = EventTimeWindows.from_seconds(2.0, 0.5, max_jump_s=30.0)
    closed, late, far = feed(w, rows, size)
    assert len(late) == 0 and len(far) == 0
    expected = df.groupby(df.ORBIT_CNT // det.orbits_for_seconds(2.0)).size().to_dict()
    assert {c.id: len(c.hits) for c in closed} == expected and sum(expected.values()) == 159_616


# --- epoch headers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"nan", b"inf", b"-inf", b"-5", b"1e30", b"5e9", b"abc", b"1.7e9x"])
def test_implausible_epochs_are_refused_with_a_reason(value):
    epoch, why = plausible_epoch(value)
    assert epoch is None and why.startswith("orbit_epoch ")


def test_plausible_epochs_pass():
    assert plausible_epoch(b"1700000000.5") == (1700000000.5, None)
    assert plausible_epoch("0") == (0.0, None)


def graph():
    src = Stream()
    windows = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0, max_jump_s=30)
    out = windows.sink_to_list()
    return src, windows, out


def test_a_message_with_a_bad_epoch_is_rejected_whole_and_sets_nothing():
    src, windows, out = graph()
    good = Batch.from_payloads([b"2,0,5,100,7,3"], "csv", orbit_epoch=1.7e9)
    src.emit(good)
    assert windows.orbit_epoch is None or windows.orbit_epoch == 1.7e9
    bad = Batch.from_payloads([b"2,0,5,101,7,3", b"2,0,6,102,7,3"], "csv", first_offset=1)
    bad.bad_epochs = {0: "orbit_epoch 'nan' is not a finite number"}
    src.emit(bad)
    src.emit(Batch.from_payloads([b"2,0,5,30000,7,3"], "csv", first_offset=3))  # closes window 0
    (w0,) = out
    assert w0.meta["counts"]["rejected.bad_epoch"] == 1 and w0.meta["counts"]["rows"] == 4
    assert [(r.reason, r.offset, r.payload) for r in w0.meta["rejects"]] == [("bad_epoch", 1, b"2,0,5,101,7,3")]
    assert "nan" in w0.meta["rejects"][0].detail
    assert sorted(w0.hits.offset.tolist()) == [0, 2]


def test_an_implausible_epoch_given_by_hand_never_becomes_the_streams_epoch():
    src, windows, _ = graph()
    src.emit(Batch.from_payloads([b"2,0,5,100,7,3"], "csv", orbit_epoch=float("nan")))
    assert windows.orbit_epoch is None or np.isfinite(windows.orbit_epoch)
    src.emit(Batch.from_payloads([b"2,0,5,101,7,3"], "csv", first_offset=1, orbit_epoch=1e30))
    assert windows.orbit_epoch < 4.2e9


def test_far_hits_become_counted_dead_letters_in_the_node():
    src, windows, out = graph()
    src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"2,0,5,4000000000,7,3", b"2,0,6,200,7,3"], "csv"))
    src.emit(Batch.from_payloads([b"2,0,5,30000,7,3"], "csv", first_offset=3))
    (w0,) = out
    assert w0.meta["counts"]["rejected.orbit_out_of_range"] == 1
    (r,) = w0.meta["rejects"]
    assert (r.reason, r.offset, r.payload) == ("orbit_out_of_range", 1, b"2,0,5,4000000000,7,3")
    assert sorted(w0.hits.offset.tolist()) == [0, 2]


def test_a_row_held_when_the_processor_stopped_is_judged_and_counted_once_after_the_restart():
    """The checkpoint names the held rows; the next run re-reads them (restart offset) and decides on them."""
    src = Stream()
    first = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0, max_jump_s=30)
    src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"2,0,5,101,7,3", b"2,0,5,4000000000,7,3"], "csv"))
    state, rejects = first.checkpoint()
    wire = state.to_json()
    assert wire["held_offsets"] == {"0": [2]} and wire["restart_offsets"] == {"0": 0} and rejects == []
    state = Checkpoint.from_json(json.loads(json.dumps(wire)))  # as read back from the checkpoint topic

    src = Stream()  # the restarted processor, resuming from that checkpoint
    second = src.dt_decode_hits(resume=state.positions).dt_clean_hits().dt_event_windows(
        window_s=2, lateness_s=0, max_jump_s=30, held=state.held_offsets, pending=state.pending_counts)
    out = second.sink_to_list()
    src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"2,0,5,101,7,3", b"2,0,5,4000000000,7,3",
                                  b"2,0,5,30000,7,3"], "csv"))
    (w0,) = out
    assert [(r.reason, r.offset) for r in w0.meta["rejects"]] == [("orbit_out_of_range", 2)]
    assert w0.meta["counts"]["rows"] == 4 and w0.meta["counts"]["rejected.orbit_out_of_range"] == 1
    assert sorted(w0.hits.offset.tolist()) == [0, 1]


def test_most_of_a_partitions_first_rows_far_ahead_do_not_become_its_reference():
    w = EventTimeWindows(100, 0, max_jump_orbits=1000)
    w.add(hits([86, 2_690_217_319, 2_728_180_287], offsets=[0, 1, 2]))
    assert w.held_offsets() == {0: [1, 2]} and w.watermark == 86
    w.add(hits([463, 3_846_622_449, 561], offsets=[3, 4, 5]))
    assert w.take_out_of_range().offset.tolist() == [1, 2, 4] and w.watermark == 561


def test_a_held_row_is_not_continued_by_a_spike_of_the_next_batch():
    w = EventTimeWindows(100, 0, max_jump_orbits=1000)
    w.add(hits([5013], offsets=[0]))
    w.add(hits([3_311_671_115], offsets=[1]))
    w.add(hits([3_937_752_426, 3_579_646_473], offsets=[2, 3]))  # a spike, then yet another step
    assert w.take_out_of_range().offset.tolist() == [2] and w.watermark == 5013
    w.add(hits([5100], offsets=[4]))
    assert sorted(w.take_out_of_range().offset.tolist()) == [1, 3] and w.watermark == 5100
