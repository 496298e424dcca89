"""Every registered product, merged from any split of a window's hits into shares, equals the one-share result.

The property test is parametrised over ``dtlive.core.products.REGISTRY``: a product added there is under it.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from datafiles import RUN_CSV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtlive.core import detector as det
from dtlive.core.products import DRIFT_EDGES_NS, REGISTRY, Registry, Settings, compute_arrays, compute_products
from dtlive.core.products.eventbase import EventProduct
from dtlive.core.rows import Rows, clean

EDGES = [DRIFT_EDGES_NS, np.linspace(-20.0, 400.0, 43), np.array([-50.0, 0.0, 100.0])]


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        assert np.shape(got[k]) == np.shape(want[k]), k
        assert (np.asarray(got[k]) == np.asarray(want[k])).all(), k


def shipped(x):
    """``x`` after a trip between processes (what Dask does to summaries, requests and answers)."""
    return pickle.loads(pickle.dumps(x))


def exchange(registry: Registry, parts: list[Rows], s: Settings) -> dict:
    """The share -> request -> answer -> merge exchange with everything that travels pickled."""
    shares = [registry.share(p, s) for p in parts]
    partials = {i: shipped(partial) for i, (partial, _) in enumerate(shares)}
    requests = shipped(registry.plan_requests(partials, s))
    answers = [shipped(registry.answer(shares[i][1], r, s)) for i, r in requests.items()]
    return registry.merge(list(partials.values()), answers, s)


@st.composite
def split_window(draw) -> tuple[Rows, list[Rows], np.ndarray]:
    """Random cleansed hits (scintillator, special channels, repeated channels, several orbits) and a split."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 300))
    orbits = draw(st.integers(1, 40))
    channels = draw(st.integers(1, 128))  # few: the same channels again and again in an orbit
    k = draw(st.integers(1, 5))
    by = draw(st.sampled_from(["random", "fpga", "chamber", "contiguous", "all in one"]))
    fpga = rng.integers(0, 2, n)
    channel = np.where(rng.random(n) < 0.1, rng.choice([128, 130, 138], n), rng.integers(0, channels, n))
    scint = rng.random(n) < draw(st.sampled_from([0.0, 0.05, 0.3]))
    fpga[scint], channel[scint] = det.SCINT_FPGA, det.SCINT_CHANNEL
    hits = Rows.from_columns(head=np.full(n, 2), fpga=fpga, channel=channel,
                             orbit=3_000_000_000 + rng.integers(0, orbits, n), bx=rng.integers(0, 3564, n),
                             tdc=rng.integers(0, 30, n))
    if by == "random":
        part = rng.integers(0, k, n)
    elif by == "fpga":
        part = hits.fpga % k
    elif by == "chamber":
        part = (2 * hits.fpga + np.minimum(hits.channel, 127) // 64) % k
    elif by == "contiguous":
        part = np.searchsorted(np.sort(rng.integers(0, n + 1, k - 1)), np.arange(n), side="right")
    else:
        part = np.full(n, k - 1)  # the other shares are empty
    return hits, [hits.select(part == i) for i in range(k)], EDGES[draw(st.integers(0, len(EDGES) - 1))]


@pytest.mark.parametrize("product", REGISTRY.products, ids=lambda p: p.name)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=split_window())
def test_every_product_merges_any_split_to_the_one_share_result(product, window):
    hits, parts, edges = window
    s, alone = Settings(edges), Registry([product])
    merged = exchange(alone, parts, s)
    whole = alone.compute(hits, s)
    assert set(whole) == {*product.variables, *product.counts}
    assert_same(merged, whole)
    finished, full = alone.finish(merged, s), compute_products(hits, edges)
    for name in product.variables:
        xr.testing.assert_identical(finished[name], full[name])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=split_window())
def test_the_registry_merges_any_split_to_the_finished_dataset(window):
    hits, parts, edges = window
    s = Settings(edges)
    merged = exchange(REGISTRY, parts, s)
    assert_same(merged, compute_arrays(hits, edges))
    xr.testing.assert_identical(REGISTRY.finish(merged, s, {"window_id": 1}),
                                compute_products(hits, edges, {"window_id": 1}))
    assert int(merged["total_hits"]) == len(hits) == sum(len(p) for p in parts)


def test_real_run_split_by_partition_key_merges_exactly():
    df = pd.read_csv(RUN_CSV, nrows=60_000)
    rows = Rows.from_columns(**{c: df[f].to_numpy() for c, f in zip(("head", "fpga", "channel", "orbit", "bx", "tdc"),
                                                                       det.FIELDS)})
    hits, _ = clean(rows)
    want = compute_arrays(hits)  # run 591 has no scintillator hits: the drift exchange is covered above
    for key in (hits.fpga, hits.channel % 3, np.arange(len(hits)) % 4):
        assert_same(exchange(REGISTRY, [hits.select(key == v) for v in np.unique(key)], Settings()), want)


def test_only_chambers_seen_by_several_shares_send_masks():
    a = Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 1], channel=[1, 70, 128], orbit=[7, 7, 7], bx=[5, 6, 0],
                          tdc=[0, 0, 0])
    b = Rows.from_columns(head=[2, 2], fpga=[0, 1], channel=[2, 3], orbit=[7, 7], bx=[9, 9], tdc=[0, 0])
    (pa, ka), (pb, kb) = REGISTRY.share(a), REGISTRY.share(b)
    requests = REGISTRY.plan_requests({0: pa, 1: pb})
    # chamber 0 is in both; chamber 1 only in a, chamber 2 only in b
    assert requests[0]["multiplicity"] == requests[1]["multiplicity"] == [0]
    orbits, _ = requests[0]["drift_time"]  # the merged scintillator table goes to both (both have chamber hits)
    assert orbits.tolist() == [7] and requests[1]["drift_time"][0].tolist() == [7]
    answers = [REGISTRY.answer(ka, requests[0]), REGISTRY.answer(kb, requests[1])]
    keys, masks = answers[0]["multiplicity"]
    assert keys.tolist() == [7 * 4] and masks.tolist() == [2]  # orbit 7, chamber 0: channel 1 only
    got = REGISTRY.merge([pa, pb], answers)
    assert_same(got, compute_arrays(Rows.concat([a, b])))
    assert got["active_channels_per_orbit"][0, 1] == 1  # channels 1 and 2 of chamber 0 in orbit 7: one orbit, 2


def test_without_scintillator_or_shared_chambers_there_is_no_second_round():
    a = Rows.from_columns(head=[2, 2], fpga=[0, 0], channel=[1, 138], orbit=[7, 8], bx=[5, 6], tdc=[0, 0])
    b = Rows.from_columns(head=[2, 2], fpga=[1, 1], channel=[2, 128], orbit=[7, 7], bx=[9, 0], tdc=[0, 0])
    scint_only = Rows.from_columns(head=[2], fpga=[1], channel=[128], orbit=[7], bx=[0], tdc=[0])
    assert REGISTRY.plan_requests({0: REGISTRY.share(a)[0]}) == {}
    requests = REGISTRY.plan_requests({0: REGISTRY.share(a)[0], 1: REGISTRY.share(b)[0],
                                       2: REGISTRY.share(scint_only)[0], 3: REGISTRY.share(Rows.empty())[0]})
    by_slot = {p.name for p in REGISTRY.products if isinstance(p, EventProduct)}  # ask where a muon may be split
    others = {i: [n for n in r if n not in by_slot] for i, r in requests.items()}
    assert others == {0: ["drift_time"], 1: ["drift_time"], 2: []}  # drift: chamber hits only


def test_a_registry_needs_distinct_names():
    with pytest.raises(ValueError, match="distinct"):
        Registry([REGISTRY.products[0], REGISTRY.products[0]])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=split_window())
def test_without_reconstruction_the_counting_products_are_the_same_and_the_rest_is_left_out(window):
    hits, parts, edges = window
    on, off = Settings(edges), Settings(edges, reconstruction=False)
    merged = exchange(REGISTRY, parts, off)
    reco = {k for p in REGISTRY.products if p.reconstruction for k in (*p.variables, *p.counts)}
    assert reco and not reco & set(merged)
    assert_same(merged, {k: v for k, v in compute_arrays(hits, edges).items() if k not in reco})
    ds = REGISTRY.finish(merged, off)  # the Dataset has every variable; the reconstruction's are all 0
    assert set(ds.data_vars) == set(REGISTRY.finish(REGISTRY.compute(hits, on), on).data_vars)
    assert all(int(np.count_nonzero(ds[k].values)) == 0 for k in reco if k in ds)
