"""Reconstruction: muon events, their t0 and the time box, as pure vectorised numpy over a window's hits.

- :mod:`dtlive.reco.events`: event building (time clusters on absolute time; background hits kept apart);
- :mod:`dtlive.reco.t0`: t0 per event and chamber from the scintillator, the trigger word and the meantimer,
  and the calibration of the trigger word's offsets;
- :mod:`dtlive.reco.timebox`: drift times of event hits and the fit of the time box's edges (t0, Tmax,
  drift velocity).

The window products built on them are in :mod:`dtlive.products` (``events``, ``timebox``, ``t0diff`` on
``eventbase``).

>>> from dtlive.rows import clean
>>> from dtlive.simulate import simulate
>>> ev = build_events(clean(simulate(0.5, seed=3))[0])
>>> t0 = meantimer_t0(ev)
>>> bool(ev.n_events > 30), t0.shape == (ev.n_events, 4)
(True, True)
"""

from dtlive.reco.events import Events, build_events
from dtlive.reco.t0 import calibrate_trigger_offset, meantimer_t0, scint_t0, trigger_t0
from dtlive.reco.timebox import TimeBoxFit, drift_times, fit_timebox, fit_timeboxes

__all__ = ["Events", "TimeBoxFit", "build_events", "calibrate_trigger_offset", "drift_times", "fit_timebox",
           "fit_timeboxes", "meantimer_t0", "scint_t0", "trigger_t0"]
