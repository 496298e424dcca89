"""Offline-style reconstruction of muon events: the hits of each muon, timed from its t0, become local
straight-line segments per chamber (left/right ambiguity resolved, residuals, layer and cell efficiency) and,
when every chamber has one, a 3D track with its zenith and azimuth angles. Everything works on plain numpy
arrays of hits (``event``, ``chamber``, ``layer``, ``cell``, ``drift_ns``), vectorised over whole windows.
"""
