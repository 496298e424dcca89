"""Events for the event-display tests: simulated DAQ rows, timed from the scintillator as the drift-time product
does (``drift = t_hit - (t_scint - T0_OFFSET_NS[chamber])``, the earliest scintillator hit of the orbit), one
event per orbit with a scintillator hit, hits outside the segment fit's drift window left out."""

from __future__ import annotations

import numpy as np

from dtlive.core import detector as det
from dtlive.core.reco.segments import DRIFT_WINDOW_NS
from dtlive.core.simulate import simulate
from dtlive.ui.event_display import DisplayEvent, events_from_hits


def scintillator_timed_hits(seconds: float = 0.3, seed: int = 3) -> dict[str, np.ndarray]:
    """Per chamber hit of an orbit with a scintillator hit: orbit, chamber, layer, cell, drift_ns, channel, fpga."""
    rows = simulate(seconds, seed=seed)
    hits = rows.select(rows.head == det.HIT_HEAD)
    t = det.time_in_orbit_ns(hits.bx, hits.tdc)
    scint = (hits.fpga == det.SCINT_FPGA) & (hits.channel == det.SCINT_CHANNEL)
    order = np.lexsort((t[scint], hits.orbit[scint]))
    s_orbit, s_time = hits.orbit[scint][order], t[scint][order]
    first = np.ones(len(s_orbit), bool)
    first[1:] = s_orbit[1:] != s_orbit[:-1]
    s_orbit, s_time = s_orbit[first], s_time[first]  # earliest scintillator time of each orbit
    chamber = det.chamber_of(hits.fpga, hits.channel)
    wire = np.flatnonzero(chamber >= 0)
    k = np.clip(np.searchsorted(s_orbit, hits.orbit[wire]), 0, len(s_orbit) - 1)
    wire, k = wire[s_orbit[k] == hits.orbit[wire]], k[s_orbit[k] == hits.orbit[wire]]
    drift = t[wire] - (s_time[k] - det.T0_OFFSET_NS[chamber[wire]])
    keep = (drift >= DRIFT_WINDOW_NS[0]) & (drift <= DRIFT_WINDOW_NS[1])
    wire, drift = wire[keep], drift[keep]
    return {"orbit": hits.orbit[wire], "chamber": chamber[wire], "layer": det.layer_of(hits.channel[wire]),
            "cell": det.cell_of(hits.channel[wire]), "drift_ns": drift, "channel": hits.channel[wire],
            "fpga": hits.fpga[wire]}


def simulated_events(seconds: float = 0.3, seed: int = 3) -> list[DisplayEvent]:
    """The events (orbits) of ``seconds`` of simulated data with at least one segment, oldest first; the time shown
    is the orbit's time since the first orbit of the run."""
    h = scintillator_timed_hits(seconds, seed)
    orbits = np.unique(h["orbit"])
    times = {int(o): f"t = {(int(o) - int(orbits[0])) * det.ORBIT_S:.6f} s" for o in orbits}
    events = events_from_hits(h["orbit"], h["chamber"], h["layer"], h["cell"], h["drift_ns"], times=times)
    return [e for e in events if len(e.segments)]
