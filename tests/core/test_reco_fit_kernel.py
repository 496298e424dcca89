"""The compiled segment fit against a brute-force one: every candidate, every sign choice, numpy's least squares."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dtlive.core import detector as det
from dtlive.core.reco.efficiency import efficiency_entries
from dtlive.core.reco.segments import DRIFT_WINDOW_NS, HALF_CELL_MM, LAYER_SHIFT, LAYER_Z, fit_segments

pytestmark = pytest.mark.unit
SIGMA = 0.25
MAX_CHI2_NDOF = 5.0


def random_hits(seed: int, n_events: int = 150):
    """Events of one to two chambers: a track's hits on 2-4 layers, extra hits near it, some beyond the window."""
    rng = np.random.default_rng(seed)
    rows = []
    for event in range(n_events):
        for chamber in rng.choice(det.N_CHAMBERS, size=rng.integers(1, 3), replace=False):
            x0, slope = rng.uniform(-250, 250), rng.normal(0, 0.4)
            for layer in rng.choice(np.arange(1, 5), size=rng.integers(2, 5), replace=False):
                for extra in range(rng.integers(1, 4)):  # the track's hit, then hits in the cells beside it
                    x = x0 + slope * LAYER_Z[layer - 1] + extra * rng.normal(0, 30)
                    cell = int(np.rint((x - LAYER_SHIFT[layer - 1]) / det.CELL_WIDTH_MM))
                    if not 0 <= cell < det.CELLS_PER_LAYER:
                        continue
                    distance = abs(x - (cell * det.CELL_WIDTH_MM + LAYER_SHIFT[layer - 1])) + rng.normal(0, SIGMA)
                    drift = distance / det.DRIFT_VELOCITY_MM_PER_NS if rng.random() > 0.03 else 600.0
                    rows.append((event, chamber, layer, cell, drift))
    order = rng.permutation(len(rows))  # the fit takes hits in any order
    return tuple(np.array([rows[i][k] for i in order]) for k in range(5))


def brute_force_best(xw, d, min_hits: int):
    """(hits, chi2, lines) of the best accepted candidates of one group: ``xw[layer]`` and ``d[layer]`` list the
    first three usable hits of each layer (cell, then input order). ``lines``: (position, slope) of every
    candidate and sign choice with that chi2 (a track along one column of wires fits as well mirrored)."""
    layers = [la for la in range(4) if len(xw[la])]
    best: tuple = (0, np.inf, [])
    for size in range(len(layers), min_hits - 1, -1):
        for used in itertools.combinations(layers, size):
            for picks in itertools.product(*(range(len(xw[la])) for la in used)):
                for signs in itertools.product((-1.0, 1.0), repeat=size):
                    z = LAYER_Z[list(used)]
                    x = np.array([xw[la][p] + s * d[la][p] for la, p, s in zip(used, picks, signs)])
                    design = np.stack([np.ones(size), z], axis=1)
                    line = np.linalg.lstsq(design, x, rcond=None)[0]
                    chi2 = float(((x - design @ line) ** 2).sum()) / SIGMA**2
                    if chi2 > MAX_CHI2_NDOF * (size - 2) or chi2 > best[1] + 1e-7:
                        continue
                    if chi2 < best[1] - 1e-7:
                        best = (size, chi2, [])
                    best[2].append(line)
        if best[0]:
            return best  # more hits always win
    return best


def groups(event, chamber, layer, cell, drift, skip_layer=None):
    usable = (drift >= DRIFT_WINDOW_NS[0]) & (drift <= DRIFT_WINDOW_NS[1])
    for ev, ch in sorted({(int(e), int(c)) for e, c in zip(event, chamber)}):
        xw, d = [[] for _ in range(4)], [[] for _ in range(4)]
        mine = np.flatnonzero((event == ev) & (chamber == ch) & usable)
        for i in mine[np.lexsort((mine, cell[mine], layer[mine]))]:
            la = int(layer[i]) - 1
            if la != skip_layer and len(xw[la]) < 3:
                xw[la].append(cell[i] * det.CELL_WIDTH_MM + LAYER_SHIFT[la])
                d[la].append(min(max(drift[i] * det.DRIFT_VELOCITY_MM_PER_NS, 0.0), HALF_CELL_MM))
        yield ev, ch, xw, d


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("min_hits", [3, 4])
def test_the_segments_are_the_best_candidates_of_a_brute_force_search(seed, min_hits):
    hits = random_hits(seed)
    seg = fit_segments(*hits, min_hits=min_hits, ambiguity_chi2=0.0)  # no mirror rule: the lowest chi2 wins
    found = {(int(e), int(c)): k for k, (e, c) in enumerate(zip(seg.event, seg.chamber))}
    n_checked = 0
    for ev, ch, xw, d in groups(*hits):
        n, chi2, lines = brute_force_best(xw, d, min_hits)
        if not n:
            assert (ev, ch) not in found
            continue
        k = found[(ev, ch)]
        assert seg.n_hits[k] == n
        assert seg.chi2[k] == pytest.approx(chi2, rel=1e-6, abs=1e-6)
        assert min(np.hypot(seg.position_mm[k] - p, seg.slope[k] - b) for p, b in lines) < 1e-6
        n_checked += 1
    assert n_checked > 50 and len(found) == n_checked


def test_the_other_layers_predictions_are_those_of_a_brute_force_search():
    hits = random_hits(3)
    ev, flat, found = efficiency_entries(*hits)
    got = sorted(zip(ev.tolist(), flat.tolist(), found.tolist()))
    event, chamber, layer, cell, drift = hits
    usable = (drift >= DRIFT_WINDOW_NS[0]) & (drift <= DRIFT_WINDOW_NS[1])
    expected, tied = [], set()
    for tested in range(4):
        for e, ch, xw, d in groups(*hits, skip_layer=tested):
            n, _, lines = brute_force_best(xw, d, 3)
            if n and len(lines) > 1:  # lines of equal chi2 (mirror images): the prediction may be either's
                tied.add((e, ch * 4 + tested))
            if not n or len(lines) > 1 or abs(lines[0][1]) > 1.0:
                continue
            line = lines[0]
            pred = int(np.rint((line[0] + line[1] * LAYER_Z[tested] - LAYER_SHIFT[tested]) / det.CELL_WIDTH_MM))
            if 0 <= pred < det.CELLS_PER_LAYER:
                there = (event == e) & (chamber == ch) & (layer == tested + 1) & usable
                hit = bool((np.abs(cell[there] - pred) <= 1).any())
                expected.append((e, (ch * 4 + tested) * det.CELLS_PER_LAYER + pred, hit))
    got = [g for g in got if (g[0], g[1] // det.CELLS_PER_LAYER) not in tied]
    assert len(expected) > 50 and got == sorted(expected)


def test_fitting_the_events_directly_gives_what_the_timed_hits_give():
    """The products fit the events' hits in compiled passes (fit_events); the public path times them first
    (timed_hits) and fits the arrays (segments_and_efficiency): the same segments and entries, bit for bit."""
    from dtlive.core.reco.efficiency import segments_and_efficiency
    from dtlive.core.reco.events import build_events
    from dtlive.core.reco.segments import fit_events
    from dtlive.core.reco.t0 import meantimer_t0
    from dtlive.core.reco.timebox import timed_hits
    from dtlive.core.rows import clean
    from dtlive.core.simulate import simulate

    ev = build_events(clean(simulate(2.0, seed=11))[0])
    t0 = meantimer_t0(ev)
    h = timed_hits(ev, t0)
    seg, (event, flat, found) = segments_and_efficiency(h.event, h.chamber, h.layer, h.cell, h.drift_ns)
    direct, (d_event, d_flat, _, d_found) = fit_events(ev, t0, min_hits=3)
    assert len(seg) > 100 and len(event) > 300
    for name in ("event", "chamber", "n_hits", "position_mm", "slope", "chi2", "hit_layer", "residual_unbiased_mm"):
        assert np.array_equal(getattr(seg, name), getattr(direct, name)), name
    assert np.array_equal(h.index[seg.hit_index], direct.hit_index)
    assert np.array_equal(event, d_event) and np.array_equal(flat, d_flat) and np.array_equal(found, d_found)
    with pytest.raises(ValueError, match="one row per event"):
        fit_events(ev, t0[:-1])


@pytest.mark.parametrize("d", [[16.0, 16.4, 17.1, 17.6], [17.6, 17.1, 16.4, 16.0]], ids=["rising", "falling"])
def test_of_equally_good_sign_choices_the_nearer_vertical_one_is_kept(d):
    """Wires on a straight staircase (cells 4, 5, 5, 6: one line through all four wires): every hit on its left
    and every hit on its right fit exactly as well, whatever the distances, with slopes less than 0.1 apart (too
    close for the mirror rule). The flatter of the two is kept, whichever of them comes first or rounds lower."""
    cell, d = np.array([4, 5, 5, 6]), np.array(d)
    wires = cell * det.CELL_WIDTH_MM + LAYER_SHIFT
    slopes = [np.polyfit(LAYER_Z, wires + side * d, 1)[0] for side in (-1, 1)]
    assert 0 < abs(abs(slopes[0]) - abs(slopes[1])) < 0.1
    seg = fit_segments(np.zeros(4, int), np.zeros(4, int), np.arange(1, 5), cell, d / det.DRIFT_VELOCITY_MM_PER_NS)
    assert seg.n_hits.tolist() == [4]
    assert seg.slope[0] == pytest.approx(min(slopes, key=abs), abs=1e-9)
