"""Benchmark: the window products in one process (``dtlive.core.products``), per window.

Realistic 2 s windows, built once before any timing: the busiest 2 s of run 591 (real hits, no
scintillator), a simulated window at the telescope's rates (5 kHz of hits, 140 Hz of muons with their
scintillator hits) and a dense simulated one (250 kHz of hits, 5 kHz of muons). Timed with ``timeit``:
:func:`~dtlive.core.products.compute_arrays` (the processor's per-window products: the registry's exchange on
one share), :func:`~dtlive.core.products.compute_products` (the same plus the labelled Dataset) and
:func:`~dtlive.core.products.combine` of the dense window split at random over 4 shares (the Dask exchange in
one process). The best and the median of ``--repeat`` rounds are reported (the best is the least disturbed
by other work on the machine), and whether the 4-share merge equals the one-share arrays.

    .venv/bin/python -m benchmarks.products [--repeat 7]          # -> results/products.json
"""

from __future__ import annotations

import json
import statistics
import sys
import timeit

import numpy as np

from benchmarks.common import DATA_FILE, RESULTS_DIR, loadavg, log


def windows() -> dict:
    """The hits of the benchmark's windows, by name."""
    from dtlive.core import detector as det
    from dtlive.core.decode import read_csv
    from dtlive.core.rows import clean
    from dtlive.core.simulate import SimConfig, simulate

    run, _ = clean(read_csv(str(DATA_FILE)))
    wid = run.orbit // det.orbits_for_seconds(2.0)
    ids, n = np.unique(wid, return_counts=True)
    return {
        "run591": run.select(wid == ids[n.argmax()]),
        "sim": clean(simulate(2.0, seed=1))[0],
        "dense": clean(simulate(2.0, seed=2, config=SimConfig(hit_rate_hz=250_000, muon_rate_hz=5_000,
                                                               ancillary_rate_hz=0)))[0],
    }


def timed(fn, repeat: int) -> dict:
    """Best and median seconds per call of ``fn`` over ``repeat`` rounds of about 0.2 s each."""
    fn()
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    rounds = [t / number for t in timer.repeat(repeat=repeat, number=number)]
    return {"best_ms": round(min(rounds) * 1e3, 4), "median_ms": round(statistics.median(rounds) * 1e3, 4)}


def run(repeat: int = 7) -> dict:
    from dtlive.core.products import combine, compute_arrays, compute_products

    hits = windows()
    dense = hits["dense"]
    part = np.random.default_rng(0).integers(0, 4, len(dense))
    shares = [dense.select(part == i) for i in range(4)]
    cases = {
        "compute_arrays run591": (hits["run591"], lambda: compute_arrays(hits["run591"])),
        "compute_arrays sim": (hits["sim"], lambda: compute_arrays(hits["sim"])),
        "compute_arrays dense": (dense, lambda: compute_arrays(dense)),
        "compute_products sim": (hits["sim"], lambda: compute_products(hits["sim"])),
        "combine dense, 4 shares": (dense, lambda: combine(shares)),
    }
    out = {}
    for name, (h, fn) in cases.items():
        r = timed(fn, repeat)
        r["hits"] = len(h)
        r["hits_per_s_best"] = round(len(h) / (r["best_ms"] / 1e3))
        out[name] = r
        log(f"products: {name}: {r['best_ms']} ms best, {r['median_ms']} ms median ({len(h):,} hits)")
    merged, whole = combine(shares), compute_arrays(dense)
    equal = set(merged) == set(whole) and all(np.array_equal(merged[k], whole[k]) for k in whole)
    return {"repeat": repeat, "cases": out, "shares_equal_one_share": equal, "loadavg_end": loadavg()}


def print_table(res: dict) -> None:
    print(f"{'case':<26}{'hits':>10}{'best ms':>10}{'median ms':>11}{'hits/s (best)':>16}")
    for name, c in res["cases"].items():
        print(f"{name:<26}{c['hits']:>10,}{c['best_ms']:>10.3f}{c['median_ms']:>11.3f}{c['hits_per_s_best']:>16,}")
    print(f"4 shares merged equal the one-share arrays: {res['shares_equal_one_share']}")


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.products", description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="timed rounds per case (default 7)")
    args = ap.parse_args(argv)
    res = run(args.repeat)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "products.json").write_text(json.dumps(res, indent=1))
    print_table(res)
    return 0 if res["shares_equal_one_share"] else 1


if __name__ == "__main__":
    sys.exit(main())
