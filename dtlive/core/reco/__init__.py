"""Offline-style reconstruction of muon events: the hits of each muon, timed from its t0, become local
straight-line segments per chamber (left/right ambiguity resolved, residuals, layer and cell efficiency) and,
when every chamber has one, a 3D track with its zenith and azimuth angles. Everything works on plain numpy
arrays of hits (``event``, ``chamber``, ``layer``, ``cell``, ``drift_ns``) of whole windows: numpy where a
pass over all the hits does it, compiled loops (numba, ``*_kernel`` modules, cached on disk) where the work is
per event.

Where the events and their t0 come from, live, without a scintillator:

- :mod:`dtlive.core.reco.events`: event building (time clusters on absolute time; background hits kept apart);
- :mod:`dtlive.core.reco.t0`: t0 per event and chamber from the scintillator, the trigger word and the
  meantimer, and the calibration of the trigger word's offsets;
- :mod:`dtlive.core.reco.timebox`: drift times of event hits and the fit of the time box's edges (t0, Tmax,
  drift velocity).

The window products built on them are in :mod:`dtlive.core.products` (``events``, ``timebox``, ``t0diff`` on
``eventbase``).
"""


def warm_up() -> None:
    """Compile the reconstruction's loops into numba's disk cache (or load them from it).

    The first use in a new install compiles them for seconds; ``scripts/setup.sh`` calls this once.

    >>> warm_up()
    """
    import numpy as np

    from dtlive.core.reco.events import build_events
    from dtlive.core.reco.segments import fit_and_predict
    from dtlive.core.reco.t0 import meantimer_t0
    from dtlive.core.rows import Rows

    hits = Rows.from_columns(head=[2] * 4, fpga=[0] * 4, channel=[3, 1, 2, 0], orbit=[7] * 4, bx=[104, 108, 104, 112],
                             tdc=[0] * 4)  # fmt: skip
    meantimer_t0(build_events(hits))
    fit_and_predict(np.zeros(3), np.zeros(3), np.arange(1, 4), np.array([7, 8, 7]), np.array([186.0, 204.0, 186.0]),
                    with_all=True, with_leave_out=True)  # fmt: skip
