"""Certification, pure (dtlive.core.certification, golden, certified): the rule, overrides, good ranges, the JSON
document and the window selection, by example and as properties over random blocks, runs and overrides."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtlive.core.certification import (
    ALL,
    Block,
    Override,
    Run,
    certify,
    good_blocks,
    good_times,
    is_good,
    run_of,
    run_verdicts,
)
from dtlive.core.certified import CERTIFIED, inside, select
from dtlive.core.golden import SCHEMA, check, document, times_ms

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CH = [0, 1, 2, 3]
T0 = 1_764_928_800.0  # 2025-12-05T10:00:00Z


# ------------------------------------------------------------------------------------------ strategies

statuses = st.one_of(st.none(), st.integers(0, 4))


@st.composite
def scenarios(draw):
    """Contiguous 10 s blocks over a few detector runs, random statuses, random overrides."""
    n = draw(st.integers(0, 14))
    blocks = [Block(T0 + 10 * i, T0 + 10 * i + 10, {c: draw(statuses) for c in CH}, "p", 5 * i, 5 * i + 4)
              for i in range(n)]
    cuts = sorted(draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=3)) | {0})
    runs = [Run(k + 1, T0 + 10 * a, T0 + 10 * cuts[k + 1] if k + 1 < len(cuts) else None)
            for k, a in enumerate(cuts)]
    overrides = []
    for k in range(draw(st.integers(0, 5))):
        chamber = draw(st.one_of(st.none(), st.sampled_from(CH)))
        if draw(st.booleans()):
            o = Override(draw(st.booleans()), "why", "who", at=draw(st.integers(0, 3)) * 1.0, chamber=chamber,
                         run=draw(st.integers(1, len(runs))), id=k + 1)
        else:
            a = draw(st.integers(-2, n + 1))
            b = draw(st.one_of(st.none(), st.integers(a + 1, n + 3)))
            o = Override(draw(st.booleans()), "why", "who", at=draw(st.integers(0, 3)) * 1.0, chamber=chamber,
                         start=T0 + 10 * a + draw(st.sampled_from([0, 3])), end=None if b is None else T0 + 10 * b,
                         id=k + 1)
        overrides.append(o)
    return blocks, runs, overrides


def _key(v):
    return (v.block.first_window, v.chamber)


# ------------------------------------------------------------------------------------------ the rule


def test_the_automatic_rule_is_status_at_most_the_threshold_and_unjudged_is_bad():
    assert [is_good(s) for s in (0, 1, 2, 3, 4, None)] == [True, True, True, False, False, False]
    assert [is_good(s, max_status=0) for s in (0, 1)] == [True, False]
    with pytest.raises(ValueError, match="max_status"):
        certify([], max_status=5)


def test_blocks_belong_to_the_run_they_start_in_and_are_numbered_from_one_per_run():
    runs = [Run(1, T0, T0 + 20), Run(2, T0 + 20)]
    blocks = [Block(T0 + 10 * i, T0 + 10 * i + 10, {0: 0}) for i in range(4)]
    blocks.append(Block(T0 - 10, T0, {0: 0}))  # before any run: no run, no number
    v = certify(blocks, runs, chambers=[0])
    assert [(x.run, x.number) for x in v] == [(None, None), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert run_of(runs, T0 + 19.999) == 1 and run_of(runs, T0 + 20) == 2
    assert good_times(v, 0) == [(T0 - 10, T0 + 40)]  # the block outside every run still counts in time


def test_a_later_override_replaces_an_earlier_one_and_both_stay():
    blocks = [Block(T0 + 10 * i, T0 + 10 * i + 10, {0: 0, 1: 0}) for i in range(3)]
    first = Override(False, "HV trip", "alice", at=1.0, run=1, id=1)
    second = Override(True, "HV was fine after all", "bob", at=2.0, start=T0 + 10, end=T0 + 20, chamber=1, id=2)
    v = certify(blocks, [Run(1, T0)], [second, first], chambers=[0, 1])  # given in any order: applied by time
    good = {(x.number, x.chamber): x.good for x in v}
    assert good == {(1, 0): False, (1, 1): False, (2, 0): False, (2, 1): True, (3, 0): False, (3, 1): False}
    decided = {(x.number, x.chamber): x.override.id for x in v}
    assert decided[(2, 1)] == 2 and decided[(2, 0)] == 1
    # same time made: the larger id (made later) wins
    tie = Override(True, "again", "carol", at=1.0, run=1, id=3)
    assert all(x.good for x in certify(blocks, [Run(1, T0)], [first, tie], chambers=[0, 1]))


def test_an_override_needs_a_run_or_time_a_reason_and_a_person():
    with pytest.raises(ValueError, match="run or a time range"):
        Override(True, "why", "who", at=0.0, chamber=1)
    with pytest.raises(ValueError, match="reason"):
        Override(True, " ", "who", at=0.0, run=1)
    with pytest.raises(ValueError, match="at or before"):
        Override(True, "why", "who", at=0.0, start=5.0, end=5.0)


def test_a_run_is_good_for_a_chamber_when_every_block_is():
    blocks = [Block(T0 + 10 * i, T0 + 10 * i + 10, {0: 1, 1: 4 if i == 1 else 2}) for i in range(3)]
    runs = run_verdicts(certify(blocks, [Run(9, T0)], chambers=[0, 1]))
    assert runs == [{"run": 9, "chamber": 0, "blocks": 3, "good_blocks": 3, "good": True, "overridden": 0},
                    {"run": 9, "chamber": 1, "blocks": 3, "good_blocks": 2, "good": False, "overridden": 0}]


# ------------------------------------------------------------------------------------------ properties


@FAST
@given(scenarios(), st.integers(0, 4))
def test_without_a_covering_override_the_verdict_is_the_automatic_one(scenario, max_status):
    blocks, runs, overrides = scenario
    for v in certify(blocks, runs, overrides, max_status, CH):
        assert v.automatic == is_good(v.status, max_status)
        assert v.good == (v.automatic if v.override is None else v.override.good)
        if v.override is not None:  # it is the latest of those covering the block
            covering = [o for o in overrides if o.covers(v.block, v.run, v.chamber)]
            assert v.override == max(covering, key=lambda o: (o.at, o.id))


@FAST
@given(scenarios(), st.integers(0, 4), st.integers(0, 4), st.randoms(use_true_random=False))
def test_overrides_are_never_lost_when_the_automatic_verdicts_are_recomputed(scenario, m1, m2, rnd):
    blocks, runs, overrides = scenario
    a = {_key(v): v for v in certify(blocks, runs, overrides, m1, CH)}
    shuffled_blocks, shuffled_overrides = blocks[:], overrides[:]
    rnd.shuffle(shuffled_blocks)
    rnd.shuffle(shuffled_overrides)
    b = {_key(v): v for v in certify(shuffled_blocks, runs, shuffled_overrides, m2, CH)}
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert v.override == b[k].override and (v.number, v.run) == (b[k].number, b[k].run)
        if v.override is not None:
            assert v.good == b[k].good == v.override.good
        elif m1 <= m2:  # a looser threshold never turns a good block bad
            assert b[k].good >= v.good


@FAST
@given(scenarios())
def test_good_ranges_are_exactly_the_good_blocks(scenario):
    blocks, runs, overrides = scenario
    v = certify(blocks, runs, overrides, chambers=CH)
    by_block: dict[int, list] = {}
    for x in v:
        by_block.setdefault(x.block.first_window, []).append(x)
    for chamber in [*CH, ALL]:
        good = [(xs[0], all(x.good for x in xs) if chamber == ALL else xs[chamber].good) for xs in by_block.values()]
        wanted: dict[int, set[int]] = {}
        for x, ok in good:
            if ok and x.run is not None:
                wanted.setdefault(x.run, set()).add(x.number)
        ranges = good_blocks(v, chamber)
        assert {r: {n for a, b in rs for n in range(a, b + 1)} for r, rs in ranges.items()} == wanted
        for rs in ranges.values():  # sorted, disjoint, not touching (else they would be one range)
            assert all(a <= b for a, b in rs) and all(rs[i][1] + 1 < rs[i + 1][0] for i in range(len(rs) - 1))
        spans = good_times(v, chamber)
        assert all(a < b for a, b in spans) and all(spans[i][1] < spans[i + 1][0] for i in range(len(spans) - 1))
        good_len = sum(x.block.end - x.block.start for x, ok in good if ok)
        assert sum(b - a for a, b in spans) == pytest.approx(good_len)  # contiguous blocks, no overlap


@FAST
@given(scenarios())
def test_good_in_every_chamber_is_within_each_chambers_good(scenario):
    v = certify(*scenario, chambers=CH)
    every = {(r, n) for r, rs in good_blocks(v, ALL).items() for a, b in rs for n in range(a, b + 1)}
    for c in CH:
        assert every <= {(r, n) for r, rs in good_blocks(v, c).items() for a, b in rs for n in range(a, b + 1)}


@FAST
@given(scenarios())
def test_the_json_document_round_trips_its_time_ranges_and_is_golden_json(scenario):
    v = certify(*scenario, chambers=CH)
    doc = json.loads(json.dumps(document(v, 2, T0, "p", CH)))
    assert check(doc)["schema"] == SCHEMA and set(doc["runs"]) == {"chamber_0", "chamber_1", "chamber_2",
                                                                     "chamber_3", ALL}
    for golden in doc["runs"].values():  # CMS form: run (string) -> [[first, last], ...]
        assert all(r.isdigit() and all(isinstance(a, int) and a <= b for a, b in rs) for r, rs in golden.items())
    runs = {x.run for x in v if x.run is not None}
    for c in CH:  # a run is good for a chamber when it has blocks and all are good
        assert doc["good_runs"][f"chamber_{c}"] == sorted(r for r in runs if all(
            x.good for x in v if x.run == r and x.chamber == c))
    assert doc["good_runs"][ALL] == sorted(r for r in runs if all(x.good for x in v if x.run == r))
    got = times_ms(doc)
    for c in [*CH, ALL]:
        assert got[c] == [(round(a * 1000), round(b * 1000)) for a, b in good_times(v, c)]


def test_a_document_that_is_not_one_is_refused_with_its_reason():
    with pytest.raises(ValueError, match="needs 'times'"):
        times_ms({"schema": SCHEMA, "runs": {}})
    with pytest.raises(ValueError, match="unknown key"):
        times_ms({"schema": SCHEMA, "times": {"chamber_x": []}})
    with pytest.raises(ValueError, match="ISO 8601"):
        times_ms({"schema": SCHEMA, "times": {"chamber_0": [["yesterday", "today"]]}})


# ------------------------------------------------------------------------------------------ window selection


def windows(n: int, chambers: int = 4) -> xr.Dataset:
    t = (np.datetime64("2025-12-05T10:00:00", "ms") + np.arange(n) * np.timedelta64(2000, "ms"))
    return xr.Dataset({"hits_per_chamber": (("time", "chamber"), np.arange(n * chambers).reshape(n, chambers) + 1),
                       "total_hits": ("time", np.full(n, 99))},
                      coords={"time": t, "window_end": ("time", t + np.timedelta64(2000, "ms")),
                              "chamber": np.arange(chambers)})


@FAST
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 12)), max_size=4), st.integers(1, 15))
def test_a_window_is_certified_only_when_wholly_inside_a_good_range(spans, n):
    ds = windows(n, chambers=1)
    t0 = int(ds.time.values[0].astype(np.int64))
    raw = sorted((t0 + 1000 * a, t0 + 1000 * (a + d)) for a, d in spans)
    merged: list[tuple[int, int]] = []
    for a, b in raw:  # the good ranges of a document are disjoint
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    start = ds.time.values.astype(np.int64)
    end = ds.window_end.values.astype(np.int64)
    brute = [any(a <= s and e <= b for a, b in merged) for s, e in zip(start, end, strict=True)]
    assert inside(start, end, merged).tolist() == brute


def test_uncertified_chambers_are_nan_and_windows_with_none_certified_are_dropped():
    ds = windows(4)
    ms = ds.time.values.astype(np.int64)
    times = {0: [(ms[0], ms[3] + 2000)], 1: [(ms[1], ms[2] + 2000)], 2: [], 3: [], ALL: []}
    out = select(ds, times)
    assert out.time.size == 4 and out[CERTIFIED].sel(chamber=0).all()
    assert out[CERTIFIED].values[:, 1].tolist() == [False, True, True, False]
    assert np.isnan(out.hits_per_chamber.sel(chamber=[2, 3])).all()
    assert out.hits_per_chamber.values[1, :2].tolist() == ds.hits_per_chamber.values[1, :2].tolist()
    assert out.total_hits.values.tolist() == [99] * 4  # detector-wide: as it was
    none_good = select(ds, {0: [(ms[1], ms[2] + 2000)], 1: [], 2: [], 3: []})
    assert none_good.time.values.tolist() == ds.time.values[1:3].tolist()
    every = none_good.where(none_good[CERTIFIED].all("chamber"), drop=True)
    assert every.time.size == 0
    assert select(ds, {}) is None


def test_selection_keeps_the_ranges_order_free():
    ds = windows(6, chambers=1)
    ms = ds.time.values.astype(np.int64)
    spans = [(ms[4], ms[5] + 2000), (ms[0], ms[1] + 2000)]
    random.Random(1).shuffle(spans)
    assert select(ds, {0: spans}).time.size == 4
