"""Event display: the hits and fitted segments of single muon events, drawn on the telescope to scale.

One bqplot figure shows the four chambers at their heights (``CHAMBER_HEIGHT_MM`` plus the layer z), every
cell as a 42 x 13 mm outline with its wire as a dot, in one plane: the horizontal axis is the coordinate a
chamber measures, x for chambers 0, 2, 3 and y for the rotated chamber 1 (labelled as the y view). For the
event shown it draws a drift circle per hit (centred on its wire, radius the drift distance as the
reconstruction uses it: ``drift_ns * DRIFT_VELOCITY_MM_PER_NS`` clipped to 0 .. half a cell), the position
each segment chose for its hits, and each fitted segment as a line piece across its chamber. Hits used by a
segment are drawn in colour, the others in grey. The mouse wheel zooms (both axes alike), dragging pans.

:class:`EventDisplay` keeps the last ``capacity`` events in a ring with Previous / Next buttons and an
"event k of N" label; stepping and adding events change the marks' data, the figure stays the same.
Events are plain hit arrays (:class:`DisplayEvent`); segments are fitted by
:func:`dtlive.core.reco.segments.fit_segments` (all events of one ``add_events`` call at once) unless an
event brings its own.

>>> v = 53.8e-3  # a vertical track 10 mm right of the wires of cells 7 (layers 1, 3), left of cell 8 (2, 4)
>>> ev = DisplayEvent(chamber=[2, 2, 2, 2], layer=[1, 2, 3, 4], cell=[7, 8, 7, 8],
...                   drift_ns=np.array([10.0, 11.0, 10.0, 11.0]) / v, event_id=42)
>>> display = EventDisplay(capacity=10)
>>> display.add_events([ev])
>>> display.label.value, display.circles.x.shape, display.segment_lines.x.round(3).tolist()
('event 1 of 1 | id 42', (4, 41), [10.0, 10.0])

(bqplot keeps a single line as a 1-D array.)

In a notebook, ``display`` (the last expression of a cell) shows the figure and its buttons.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from dtlive.core import detector as det
from dtlive.core.reco.segments import HALF_CELL_MM, LAYER_SHIFT, LAYER_Z, Segments, fit_segments
from dtlive.core.rows import Rows
from dtlive.service.extras import extra

with extra("dashboard", "dtlive.ui.event_display"):  # ipywidgets, bqplot: one line naming the extra when missing
    import bqplot as bq
    import ipywidgets as W

DEFAULT_CAPACITY = 50
CIRCLE_POINTS = 41  # points of a drift circle's polygon (the first repeated at the end)
CHAMBER_HALF_HEIGHT_MM = det.N_LAYERS * det.CELL_HEIGHT_MM / 2  # a segment is drawn across this +- local z
USED_COLOR, UNUSED_COLOR, SEGMENT_COLOR, CELL_COLOR = "#1f77b4", "#a0a0a0", "#d62728", "#c8c8c8"
_MARGIN = {"top": 40, "bottom": 50, "left": 70, "right": 15}
_LABEL_ROOM_MM = 300.0  # right of the cells, for the chamber names
_TICK_MM = 200.0
_PER_SEGMENT = ("event", "chamber", "n_hits", "position_mm", "slope", "chi2", "ndof")


def chamber_view(chamber: int | np.integer) -> str:
    """Name of the coordinate a chamber measures: ``"y"`` for the rotated chamber, ``"x"`` otherwise.

    >>> [chamber_view(c) for c in range(4)]
    ['x', 'y', 'x', 'x']
    """
    return "y" if chamber == det.ROTATED_CHAMBER else "x"


def global_z_mm(chamber: np.ndarray, z_local: np.ndarray) -> np.ndarray:
    """Height of a point of a chamber: ``CHAMBER_HEIGHT_MM[chamber] + z_local``.

    >>> global_z_mm(np.array([0, 3]), np.array([0.0, 19.5])).tolist()
    [219.8, 1839.3]
    """
    return det.CHAMBER_HEIGHT_MM[np.asarray(chamber)] + np.asarray(z_local, float)


def wire_positions() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every wire of the telescope: chamber, layer, cell, local x (mm) and global z (mm), ordered by them.

    >>> chamber, layer, cell, x, z = wire_positions()
    >>> len(x), x[:2].tolist(), z[0].round(1)
    (256, [-294.0, -252.0], np.float64(200.3))
    """
    chamber, layer, cell = (a.ravel() for a in np.meshgrid(det.CHAMBERS, np.arange(1, det.N_LAYERS + 1),
                                                            np.arange(det.CELLS_PER_LAYER), indexing="ij"))
    x = cell * det.CELL_WIDTH_MM + LAYER_SHIFT[layer - 1]
    return chamber, layer, cell, x, global_z_mm(chamber, LAYER_Z[layer - 1])


def cell_outlines() -> tuple[np.ndarray, np.ndarray]:
    """Closed outlines (5 corners) of every cell, centred on its wire: x and global z, shape (256, 5) each.

    >>> x, z = cell_outlines()
    >>> x.shape, (x[0].max() - x[0].min()).item(), (z[0].max() - z[0].min()).round(6).item()
    ((256, 5), 42.0, 13.0)
    """
    _, _, _, x, z = wire_positions()
    dx = np.array([-1, 1, 1, -1, -1]) * det.CELL_WIDTH_MM / 2
    dz = np.array([-1, -1, 1, 1, -1]) * det.CELL_HEIGHT_MM / 2
    return x[:, None] + dx, z[:, None] + dz


def drift_distance_mm(drift_ns: np.ndarray) -> np.ndarray:
    """Drift distance of hits as the segment fit uses it: drift time x drift velocity, within 0 .. half a cell.

    >>> drift_distance_mm(np.array([-5.0, 100.0, 1000.0])).round(2).tolist()
    [0.0, 5.38, 21.0]
    """
    return np.clip(np.asarray(drift_ns, float) * det.DRIFT_VELOCITY_MM_PER_NS, 0.0, HALF_CELL_MM)


def drift_circles(chamber, layer, cell, drift_ns, n_points: int = CIRCLE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Polygons of the drift circles of hits: x and global z, shape (n_hits, n_points), first point repeated last.

    >>> x, z = drift_circles([0], [1], [7], [10 / 53.8e-3])  # wire at x = 0, z = 219.8 - 19.5
    >>> x.shape, float(x.max().round(6)), float(z.min().round(6))
    ((1, 41), 10.0, 190.3)
    """
    chamber, layer, cell = (np.asarray(a, np.int64) for a in (chamber, layer, cell))
    r = drift_distance_mm(drift_ns)
    t = np.linspace(0.0, 2 * np.pi, n_points)
    x = cell * det.CELL_WIDTH_MM + LAYER_SHIFT[layer - 1]
    z = global_z_mm(chamber, LAYER_Z[layer - 1])
    return x[:, None] + r[:, None] * np.cos(t), z[:, None] + r[:, None] * np.sin(t)


def segment_lines(segments: Segments) -> tuple[np.ndarray, np.ndarray]:
    """End points of segments across their chambers (local z = -+26 mm): x and global z, shape (n, 2) each.

    >>> seg = fit_segments(np.zeros(3, int), np.ones(3, int), np.array([1, 2, 3]), np.array([7, 8, 7]),
    ...                    np.array([10, 11, 10]) / 53.8e-3)
    >>> x, z = segment_lines(seg)
    >>> x.round(3).tolist(), z.round(1).tolist()
    ([[10.0, 10.0]], [[951.3, 1003.3]])
    """
    dz = np.array([-CHAMBER_HALF_HEIGHT_MM, CHAMBER_HALF_HEIGHT_MM])
    x = segments.position_mm[:, None] + segments.slope[:, None] * dz
    return x, global_z_mm(segments.chamber[:, None], dz)


@dataclass(frozen=True, eq=False)
class DisplayEvent:
    """The hits of one event: ``chamber`` (0-3), ``layer`` (1-4), ``cell`` (0-15), ``drift_ns`` (hit time minus
    the event's t0), one entry per hit; optionally an ``event_id`` and a ``time`` (anything printable), both
    shown in the label, and its ``segments`` (a :class:`~dtlive.core.reco.segments.Segments` whose
    ``hit_index`` refers to these arrays) when already fitted.

    >>> DisplayEvent([0, 0], [1, 2], [3, 3], [50.0, 120.0]).n_hits
    2
    """

    chamber: np.ndarray
    layer: np.ndarray
    cell: np.ndarray
    drift_ns: np.ndarray
    event_id: int | None = None
    time: Any = None
    segments: Segments | None = None

    def __post_init__(self):
        for name, dtype in (("chamber", np.int64), ("layer", np.int64), ("cell", np.int64), ("drift_ns", float)):
            object.__setattr__(self, name, np.atleast_1d(np.asarray(getattr(self, name), dtype)))
        if not len(self.chamber) == len(self.layer) == len(self.cell) == len(self.drift_ns):
            raise ValueError("chamber, layer, cell and drift_ns must have one entry per hit")
        for name, hi in (("chamber", det.N_CHAMBERS - 1), ("layer", det.N_LAYERS), ("cell", det.CELLS_PER_LAYER - 1)):
            lo = 1 if name == "layer" else 0
            if ((getattr(self, name) < lo) | (getattr(self, name) > hi)).any():
                raise ValueError(f"{name} outside {lo} .. {hi}")
        if not np.isfinite(self.drift_ns).all():
            raise ValueError("drift_ns must be finite")

    @property
    def n_hits(self) -> int:
        return len(self.chamber)


def events_from_hits(event, chamber, layer, cell, drift_ns, times: dict | None = None,
                     **fit_options) -> list[DisplayEvent]:
    """:class:`DisplayEvent` s of hit arrays grouped by ``event`` (in order of event id), with their segments
    fitted by one call of :func:`~dtlive.core.reco.segments.fit_segments` (``fit_options`` go to it);
    ``times`` maps an event id to its time.

    >>> evs = events_from_hits([5, 5, 5, 9], [0, 0, 0, 3], [1, 2, 3, 1], [7, 8, 7, 0], [186.0, 204.5, 186.0, 9.0])
    >>> [(e.event_id, e.n_hits, len(e.segments)) for e in evs]
    [(5, 3, 1), (9, 1, 0)]
    """
    event, chamber, layer, cell, drift_ns = (np.asarray(a) for a in (event, chamber, layer, cell, drift_ns))
    order = np.argsort(event, kind="stable")
    ids, start = np.unique(event[order], return_index=True)
    pos = np.repeat(np.arange(len(ids)), np.diff(np.append(start, len(order))))
    hits = (chamber[order], layer[order], cell[order], drift_ns[order])
    per_event = _split_segments(fit_segments(pos, *hits, **fit_options), start, len(ids))
    stops = np.append(start[1:], len(order))
    times = times or {}
    return [DisplayEvent(hits[0][a:b], hits[1][a:b], hits[2][a:b], hits[3][a:b], event_id=int(i),
                         time=times.get(int(i)), segments=s)
            for i, a, b, s in zip(ids.tolist(), start, stops, per_event)]


def _split_segments(seg: Segments, first_hit: np.ndarray, n_events: int) -> list[Segments]:
    """Segments fitted with ``event`` = 0 .. n_events - 1 over concatenated events (event i's hits start at
    ``first_hit[i]``), split into one :class:`Segments` per event with event-relative ``hit_index``."""
    seg_bounds = np.searchsorted(seg.event, np.arange(n_events + 1))
    hit_bounds = np.searchsorted(seg.hit_segment, seg_bounds)
    out = []
    for i in range(n_events):
        s, h = slice(seg_bounds[i], seg_bounds[i + 1]), slice(hit_bounds[i], hit_bounds[i + 1])
        kw = {f.name: getattr(seg, f.name)[s if f.name in _PER_SEGMENT else h] for f in fields(Segments)}
        kw["hit_segment"] = kw["hit_segment"] - seg_bounds[i]
        kw["hit_index"] = kw["hit_index"] - first_hit[i]
        out.append(Segments(**kw))
    return out


class EventDisplay:
    """The last ``capacity`` events on the telescope, to scale, with Previous / Next and an "event k of N" label.

    Parameters
    ----------
    capacity
        Events kept; adding more drops the oldest.
    width_px, height_px
        Size of the figure; the scales are set so that a millimetre is as long across as up.
    fit_options
        Passed to :func:`~dtlive.core.reco.segments.fit_segments` for events without segments.

    Attributes
    ----------
    figure : bqplot.Figure
        Marks ``cells`` (outlines), ``wires``, ``chamber_labels``, ``circles`` (drift circles of the event shown),
        ``chosen`` (the positions its segments chose) and ``segment_lines``.
    label : ipywidgets.Label
        ``"event k of N"``, then ``| id ...`` and ``| ...`` (time) when the event has them.
    widget : ipywidgets.VBox
        Buttons, label and figure.

    Examples
    --------
    >>> d = EventDisplay(capacity=2)
    >>> d.add_events([DisplayEvent([0], [1], [3], [100.0], event_id=i) for i in (7, 8, 9)])
    >>> d.label.value, d.index, d.previous_button.disabled, d.next_button.disabled
    ('event 2 of 2 | id 9', 1, False, True)
    >>> d.previous(); d.label.value, d.current.event_id
    ('event 1 of 2 | id 8', 8)
    """

    MARK_NAMES = ("cells", "wires", "chamber_labels", "circles", "chosen", "segment_lines")  # figure.marks, in order

    def __init__(self, capacity: int = DEFAULT_CAPACITY, width_px: int = 560, height_px: int = 860,
                 **fit_options):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.fit_options = capacity, fit_options
        self.events: deque[DisplayEvent] = deque(maxlen=capacity)
        self.index: int | None = None
        self.x_scale, self.y_scale = _equal_aspect_scales(width_px, height_px)
        scales = {"x": self.x_scale, "y": self.y_scale}
        cx, cz = cell_outlines()
        self.cells = bq.Lines(x=cx, y=cz, scales=scales, colors=[CELL_COLOR], stroke_width=1)
        _, _, _, wx, wz = wire_positions()
        self.wires = bq.Scatter(x=wx, y=wz, scales=scales, colors=["#606060"], default_size=4, marker="circle")
        self.chamber_labels = bq.Label(
            x=np.full(det.N_CHAMBERS, wx.max() + det.CELL_WIDTH_MM), y=det.CHAMBER_HEIGHT_MM, scales=scales,
            text=[f"chamber {c} ({chamber_view(c)} view)" for c in det.CHAMBERS], align="start", default_size=12,
            colors=["#404040"], y_offset=4, apply_clip=False)
        self.circles = bq.Lines(x=np.zeros(0), y=np.zeros(0), scales=scales, colors=[USED_COLOR], stroke_width=1.2)
        self.chosen = bq.Scatter(x=np.zeros(0), y=np.zeros(0), scales=scales, colors=[USED_COLOR], default_size=10,
                                 marker="cross")
        self.segment_lines = bq.Lines(x=np.zeros(0), y=np.zeros(0), scales=scales, colors=[SEGMENT_COLOR],
                                      stroke_width=2)
        axes = [bq.Axis(scale=self.x_scale, label="x (chambers 0, 2, 3) or y (chamber 1) [mm]",
                        tick_values=_ticks(self.x_scale, _TICK_MM)),
                bq.Axis(scale=self.y_scale, side="left", label="height z [mm]", label_offset="52px",
                        tick_values=_ticks(self.y_scale, _TICK_MM))]
        self.figure = bq.Figure(
            marks=[getattr(self, name) for name in self.MARK_NAMES],
            axes=axes, title="event display", fig_margin=dict(_MARGIN), min_aspect_ratio=0.01,
            max_aspect_ratio=100, layout=W.Layout(width=f"{width_px}px", height=f"{height_px}px"),
            interaction=bq.interacts.PanZoom(scales={"x": [self.x_scale], "y": [self.y_scale]}))
        self.figure.add_class("dtlive-event-figure")
        self.previous_button = W.Button(description="Previous", icon="arrow-left", layout=W.Layout(width="110px"))
        self.next_button = W.Button(description="Next", icon="arrow-right", layout=W.Layout(width="110px"))
        self.previous_button.add_class("dtlive-event-prev")
        self.next_button.add_class("dtlive-event-next")
        self.previous_button.on_click(lambda _: self.previous())
        self.next_button.on_click(lambda _: self.next())
        self.label = W.Label("no event")
        self.label.add_class("dtlive-event-label")
        self.widget = W.VBox([W.HBox([self.previous_button, self.next_button, self.label]), self.figure])
        self.widget.add_class("dtlive-event-display")
        self._redraw()

    # ------------------------------------------------------------------ the ring

    def __len__(self) -> int:
        return len(self.events)

    @property
    def current(self) -> DisplayEvent | None:
        """The event shown (None while the ring is empty)."""
        return None if self.index is None else self.events[self.index]

    def add_events(self, events: Iterable[DisplayEvent]) -> None:
        """Append events (the oldest drop out beyond ``capacity``) and fit those without segments, all at once.

        While the newest event is shown (or none), the display moves on to the new newest one; otherwise it
        stays on the event it shows, or on the oldest one kept if that event dropped out.
        """
        new = list(events)[-self.capacity:]
        if not new:
            return
        new = _with_segments(new, self.fit_options)
        follow = self.index is None or self.index == len(self.events) - 1
        dropped = max(0, len(self.events) + len(new) - self.capacity)
        self.events.extend(new)
        self.index = len(self.events) - 1 if follow or self.index is None else max(0, self.index - dropped)
        self._redraw()

    def show(self, i: int) -> None:
        """Show event ``i`` of the ring (0 = oldest kept; negative counts from the newest)."""
        n = len(self.events)
        if not -n <= i < n:
            raise IndexError(f"event {i} out of range: {n} events kept")
        self.index = i % n
        self._redraw()

    def next(self) -> None:
        """Show the next (newer) event; nothing at the newest."""
        if self.index is not None and self.index < len(self.events) - 1:
            self.show(self.index + 1)

    def previous(self) -> None:
        """Show the previous (older) event; nothing at the oldest."""
        if self.index:
            self.show(self.index - 1)

    def clear(self) -> None:
        """Forget every event."""
        self.events.clear()
        self.index = None
        self._redraw()

    # ------------------------------------------------------------------ drawing

    def _redraw(self) -> None:
        ev, n = self.current, len(self.events)
        self.previous_button.disabled = not self.index
        self.next_button.disabled = self.index is None or self.index >= n - 1
        if ev is None or self.index is None:
            self.label.value = "no event"
            for mark in (self.circles, self.chosen, self.segment_lines):
                with mark.hold_sync():
                    mark.x, mark.y = np.zeros(0), np.zeros(0)
            return
        text = f"event {self.index + 1} of {n}"
        if ev.event_id is not None:
            text += f" | id {ev.event_id}"
        if ev.time is not None:
            text += f" | {ev.time}"
        self.label.value = text
        seg = ev.segments
        assert seg is not None, "every event kept has its segments (_with_segments)"
        used = np.zeros(ev.n_hits, bool)
        used[seg.hit_index] = True
        cx, cz = drift_circles(ev.chamber, ev.layer, ev.cell, ev.drift_ns)
        sx, sz = segment_lines(seg)
        with self.circles.hold_sync():
            self.circles.x, self.circles.y = _lines(cx), _lines(cz)
            self.circles.colors = np.where(used, USED_COLOR, UNUSED_COLOR).tolist() or [USED_COLOR]
        with self.chosen.hold_sync():
            self.chosen.x = seg.hit_x_mm
            self.chosen.y = global_z_mm(seg.chamber[seg.hit_segment], seg.hit_z_mm)
        with self.segment_lines.hold_sync():
            self.segment_lines.x, self.segment_lines.y = _lines(sx), _lines(sz)

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget)


def _lines(a: np.ndarray) -> np.ndarray:
    """Data of a Lines mark: one row per line; an empty 1-D array when there is none."""
    return a if len(a) else np.zeros(0)


def _with_segments(events: Sequence[DisplayEvent], fit_options: dict) -> list[DisplayEvent]:
    """The events, those without segments given theirs (one fit over all of them)."""
    todo = [i for i, e in enumerate(events) if e.segments is None]
    if not todo:
        return list(events)
    sizes = np.array([events[i].n_hits for i in todo])
    first = np.cumsum(sizes) - sizes
    hits = [np.concatenate([getattr(events[i], k) for i in todo]) for k in ("chamber", "layer", "cell", "drift_ns")]
    seg = fit_segments(np.repeat(np.arange(len(todo)), sizes), *hits, **fit_options)
    out = list(events)
    for i, s in zip(todo, _split_segments(seg, first, len(todo))):
        e = events[i]
        out[i] = DisplayEvent(e.chamber, e.layer, e.cell, e.drift_ns, event_id=e.event_id, time=e.time, segments=s)
    return out


def _ticks(scale: bq.LinearScale, step: float) -> np.ndarray:
    """Multiples of ``step`` inside a scale's range."""
    return np.arange(np.ceil(scale.min / step), np.floor(scale.max / step) + 1) * step


def _equal_aspect_scales(width_px: int, height_px: int) -> tuple[bq.LinearScale, bq.LinearScale]:
    """x and z scales covering the telescope (and the chamber names) with equal mm per pixel on both axes."""
    _, _, _, x, z = wire_positions()
    x0, x1 = x.min() - det.CELL_WIDTH_MM, x.max() + det.CELL_WIDTH_MM + _LABEL_ROOM_MM
    z0, z1 = z.min() - 2 * det.CELL_HEIGHT_MM, z.max() + 2 * det.CELL_HEIGHT_MM
    w = max(width_px - _MARGIN["left"] - _MARGIN["right"], 1)
    h = max(height_px - _MARGIN["top"] - _MARGIN["bottom"], 1)
    mm_per_px = max((x1 - x0) / w, (z1 - z0) / h)
    xc, zc = (x0 + x1) / 2, (z0 + z1) / 2
    return (bq.LinearScale(min=float(xc - mm_per_px * w / 2), max=float(xc + mm_per_px * w / 2), allow_padding=False),
            bq.LinearScale(min=float(zc - mm_per_px * h / 2), max=float(zc + mm_per_px * h / 2), allow_padding=False))


def latest_events(hits: Rows, last: int = 20, min_chambers: int = 2) -> list[DisplayEvent]:
    """The ``last`` newest muon events of cleansed hits with segments in at least ``min_chambers`` chambers,
    oldest first, timed from their meantimer t0 (:func:`dtlive.core.reco.t0.meantimer_t0`: no scintillator
    needed) and fitted: what the dashboard's event panel shows of the newest hits.

    >>> from dtlive.core.simulate import simulate
    >>> rows = simulate(0.5, seed=3)
    >>> events = latest_events(rows.select(rows.head == det.HIT_HEAD), last=5)
    >>> len(events), all(len({int(c) for c in e.segments.chamber}) >= 2 for e in events)
    (5, True)
    """
    from dtlive.core.reco.events import build_events
    from dtlive.core.reco.t0 import meantimer_t0
    from dtlive.core.reco.timebox import timed_hits

    ev = build_events(hits)
    h = timed_hits(ev, meantimer_t0(ev))
    if not len(h.event):
        return []
    events = events_from_hits(h.event, h.chamber, h.layer, h.cell, h.drift_ns)
    chosen = [e for e in events if e.segments is not None and len(set(e.segments.chamber.tolist())) >= min_chambers]
    return chosen[-last:]
