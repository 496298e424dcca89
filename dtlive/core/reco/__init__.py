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

