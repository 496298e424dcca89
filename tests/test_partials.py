"""Shares of a window merged (dtlive.partials) equal the products of all its hits at once, exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
from datafiles import RUN_CSV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtlive import detector as det
from dtlive.partials import combine, merge, merge_scint, share, shared_chambers
from dtlive.products import DRIFT_EDGES_NS, compute_arrays
from dtlive.rows import Rows, clean


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        assert np.shape(got[k]) == np.shape(want[k]), k
        assert (np.asarray(got[k]) == np.asarray(want[k])).all(), k


def random_hits(rng: np.random.Generator, n: int, orbits: int) -> Rows:
    fpga = rng.integers(0, 2, n)
    channel = np.where(rng.random(n) < 0.1, rng.choice([128, 138], n), rng.integers(0, 128, n))
    scint = rng.random(n) < 0.08
    fpga[scint], channel[scint] = det.SCINT_FPGA, det.SCINT_CHANNEL
    return Rows.from_columns(head=np.full(n, 2), fpga=fpga, channel=channel,
                             orbit=3_000_000_000 + rng.integers(0, orbits, n), bx=rng.integers(0, 3564, n),
                             tdc=rng.integers(0, 32, n))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400), orbits=st.integers(1, 60), k=st.integers(1, 5),
       by=st.sampled_from(["random", "fpga", "chamber", "contiguous"]))
def test_any_split_merges_to_the_whole(seed, n, orbits, k, by):
    rng = np.random.default_rng(seed)
    hits = random_hits(rng, n, orbits)
    if by == "random":
        part = rng.integers(0, k, n)
    elif by == "fpga":
        part = hits.fpga % k
    elif by == "chamber":
        part = (2 * hits.fpga + np.minimum(hits.channel, 127) // 64) % k
    else:
        part = np.searchsorted(np.sort(rng.integers(0, n + 1, k - 1)), np.arange(n), side="right")
    parts = [hits.select(part == i) for i in range(k)]
    edges = DRIFT_EDGES_NS if seed % 2 else np.linspace(-20, 400, 43)
    assert_same(combine(parts, edges), compute_arrays(hits, edges))


def test_real_run_split_by_partition_key_merges_exactly():
    df = pd.read_csv(RUN_CSV, nrows=60_000)
    rows = Rows.from_columns(**{c: df[f].to_numpy() for c, f in zip(("head", "fpga", "channel", "orbit", "bx", "tdc"),
                                                                       det.FIELDS)})
    hits, _ = clean(rows)
    want = compute_arrays(hits)  # run 591 has no scintillator hits: the drift exchange is covered above
    for key in (hits.fpga, hits.channel % 3, np.arange(len(hits)) % 4):
        assert_same(combine([hits.select(key == v) for v in np.unique(key)]), want)


def test_merge_needs_masks_only_for_shared_chambers():
    a = Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 1], channel=[1, 70, 128], orbit=[7, 7, 7], bx=[5, 6, 0],
                          tdc=[0, 0, 0])
    b = Rows.from_columns(head=[2, 2], fpga=[0, 1], channel=[2, 3], orbit=[7, 7], bx=[9, 9], tdc=[0, 0])
    (pa, ka), (pb, kb) = share(a), share(b)
    assert shared_chambers([pa, pb]) == [0]  # chamber 1 only in a, chamber 2 only in b
    keys, masks = ka.masks_of([0])
    assert keys.tolist() == [7 * 4] and masks.tolist() == [2]
    scint = merge_scint([pa, pb])
    assert scint[0].tolist() == [7]
    from dtlive.partials import drift_part
    got = merge([pa, pb], [drift_part(ka, scint), drift_part(kb, scint)], [ka.masks_of([0]), kb.masks_of([0])])
    assert_same(got, compute_arrays(Rows.concat([a, b])))
    assert got["active_channels_per_orbit"][0, 1] == 1  # channels 1 and 2 of chamber 0 in orbit 7: one orbit, 2
