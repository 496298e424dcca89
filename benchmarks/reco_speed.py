"""Hits per second of ``REGISTRY.compute`` with and without the reconstruction products, in one process.

    PYTHONPATH=. python benchmarks/reco_speed.py

Windows of 2 s (22,447 orbits) of simulated data and of run 591; the best of a few repetitions per window, in
CPU time of the process (other work on the machine slows it less than wall time).
"""

from __future__ import annotations

import time

import numpy as np

from dtlive.core import detector as det
from dtlive.core.products import REGISTRY, Registry
from dtlive.core.products.eventbase import EventProduct
from dtlive.core.rows import clean
from dtlive.core.simulate import simulate

RUN_CSV = "/work/shared/data/run000591_hits.csv"
BASE = Registry([p for p in REGISTRY.products if not isinstance(p, EventProduct)])
RECO = Registry([p for p in REGISTRY.products if isinstance(p, EventProduct)])


def windows(hits, orbits: int = det.orbits_for_seconds(2.0)):
    wid = hits.orbit // orbits
    for w in np.unique(wid):
        yield hits.select(wid == w)


def rate(registry: Registry, parts, repeat: int = 7) -> float:
    n = sum(len(p) for p in parts)
    best = []
    for p in parts:
        registry.compute(p)  # warm
        t = []
        for _ in range(repeat):
            t0 = time.process_time()
            registry.compute(p)
            t.append(time.process_time() - t0)
        best.append(min(t))
    return n / sum(best)


def main() -> None:
    sources = {"simulate(20 s)": clean(simulate(20.0, seed=1))[0]}
    try:
        from dtlive.core.decode import read_csv

        sources["run 591"] = clean(read_csv(RUN_CSV))[0]
    except FileNotFoundError:
        pass
    print(f"{'data':<16}{'hits':>9}{'base hits/s':>14}{'all hits/s':>14}{'reco only':>14}{'ratio':>8}{'x 5 kHz':>9}")
    for name, hits in sources.items():
        parts = [p for p in windows(hits) if len(p)]
        base, full, reco = rate(BASE, parts), rate(REGISTRY, parts), rate(RECO, parts)
        print(f"{name:<16}{len(hits):>9}{base:>14,.0f}{full:>14,.0f}{reco:>14,.0f}{base / full:>8.2f}"
              f"{full / det.TYPICAL_HIT_RATE_HZ:>9,.0f}")


if __name__ == "__main__":
    main()
