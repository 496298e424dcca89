"""The event display without a browser: the geometry its marks hold, the ring and its stepping, in-place updates."""

from __future__ import annotations

import numpy as np
import pytest
from display_events import scintillator_timed_hits, simulated_events

from dtlive.core import detector as det
from dtlive.core.reco.segments import Segments, fit_segments
from dtlive.ui.event_display import DisplayEvent, EventDisplay, events_from_hits

V = det.DRIFT_VELOCITY_MM_PER_NS


@pytest.fixture(scope="module")
def events():
    return simulated_events(0.3, seed=3)


def rows2d(a) -> np.ndarray:
    """A Lines mark's data as (lines, points) (bqplot keeps a single line 1-D)."""
    return np.atleast_2d(np.asarray(a, float)) if np.size(a) else np.zeros((0, 0))


def wire_xz(chamber, layer, cell):
    """Wire position (local x, global z) through the detector's channel mapping."""
    fpga, channel = det.channel_of(chamber, layer, cell)
    x, z = det.wire_position_mm(channel)
    return x, det.CHAMBER_HEIGHT_MM[np.asarray(chamber)] + z


def test_cells_wires_and_labels_cover_the_four_chambers_to_scale():
    d = EventDisplay()
    x, z = rows2d(d.cells.x), rows2d(d.cells.y)
    n = det.N_CHAMBERS * det.N_LAYERS * det.CELLS_PER_LAYER
    assert x.shape == z.shape == (n, 5)
    assert np.allclose(x.max(1) - x.min(1), det.CELL_WIDTH_MM) and np.allclose(z.max(1) - z.min(1), det.CELL_HEIGHT_MM)
    assert np.allclose(x[:, 0], x[:, -1]) and np.allclose(z[:, 0], z[:, -1])  # closed outlines
    # each outline is centred on one wire, and every wire of every channel is one of them
    centres = np.round(np.c_[(x.max(1) + x.min(1)) / 2, (z.max(1) + z.min(1)) / 2], 6)
    wires = np.round(np.c_[np.asarray(d.wires.x, float), np.asarray(d.wires.y, float)], 6)
    chamber, layer, cell = np.meshgrid(det.CHAMBERS, np.arange(1, 5), np.arange(16), indexing="ij")
    expected = np.round(np.c_[wire_xz(chamber.ravel(), layer.ravel(), cell.ravel())], 6)
    assert {tuple(r) for r in centres} == {tuple(r) for r in wires} == {tuple(r) for r in expected}
    # the layers are staggered by half a cell, and the chambers are at their heights
    assert len(np.unique(np.round(x.min(1) % det.CELL_WIDTH_MM, 6))) == 2
    for c in det.CHAMBERS:
        in_c = np.abs(centres[:, 1] - det.CHAMBER_HEIGHT_MM[c]) < 30
        assert in_c.sum() == 64
    labels = list(d.chamber_labels.text)
    assert "y view" in labels[det.ROTATED_CHAMBER] and all("x view" in t for i, t in enumerate(labels) if i != 1)
    assert all("[mm]" in a.label for a in d.figure.axes)


@pytest.mark.parametrize("size", [(560, 860), (900, 500)])
def test_scales_have_equal_aspect_and_hold_the_telescope(size):
    w, h = size
    d = EventDisplay(width_px=w, height_px=h)
    m = d.figure.fig_margin
    per_px_x = (d.x_scale.max - d.x_scale.min) / (w - m["left"] - m["right"])
    per_px_z = (d.y_scale.max - d.y_scale.min) / (h - m["top"] - m["bottom"])
    assert per_px_x == pytest.approx(per_px_z, rel=1e-9)
    x, z = rows2d(d.cells.x), rows2d(d.cells.y)
    assert d.x_scale.min < x.min() and x.max() < d.x_scale.max
    assert d.y_scale.min < z.min() and z.max() < d.y_scale.max


def test_circles_are_centred_on_the_wires_with_the_drift_distance(events):
    d = EventDisplay()
    d.add_events(events[:1])
    ev = d.current
    x, z = rows2d(d.circles.x), rows2d(d.circles.y)
    assert len(x) == ev.n_hits > 3
    wx, wz = wire_xz(ev.chamber, ev.layer, ev.cell)
    radius = np.hypot(x - wx[:, None], z - wz[:, None])
    expected = np.clip(ev.drift_ns * V, 0, det.CELL_WIDTH_MM / 2)
    assert np.allclose(radius, expected[:, None], atol=1e-9)
    assert (expected > 0.5).any()  # not a test of zero radii


def test_segment_lines_are_the_fit_across_each_chamber(events):
    d = EventDisplay()
    for ev in events[:10]:
        d.add_events([DisplayEvent(ev.chamber, ev.layer, ev.cell, ev.drift_ns)])  # the display fits it
        fit = fit_segments(np.zeros(ev.n_hits, int), ev.chamber, ev.layer, ev.cell, ev.drift_ns)
        x, z = rows2d(d.segment_lines.x), rows2d(d.segment_lines.y)
        assert len(x) == len(fit) >= 1
        h = det.N_LAYERS * det.CELL_HEIGHT_MM / 2
        assert np.allclose(z, det.CHAMBER_HEIGHT_MM[fit.chamber][:, None] + [-h, h])
        assert np.allclose(x, fit.position_mm[:, None] + fit.slope[:, None] * [-h, h])
        # the chosen positions are on the lines, one per layer of each segment
        cx, cz = np.asarray(d.chosen.x, float), np.asarray(d.chosen.y, float)
        assert len(cx) == fit.n_hits.sum()
        seg = fit.hit_segment
        on_line = fit.position_mm[seg] + fit.slope[seg] * (cz - det.CHAMBER_HEIGHT_MM[fit.chamber[seg]])
        assert np.abs(cx - on_line).max() < 1.5


def test_hits_of_a_segment_are_coloured_the_others_grey():
    ev = DisplayEvent(chamber=[2, 2, 2, 2, 2], layer=[1, 2, 3, 4, 4], cell=[7, 8, 7, 8, 1],
                      drift_ns=np.array([10.0, 11.0, 10.0, 11.0, 5.0]) / V)
    d = EventDisplay()
    d.add_events([ev])
    assert len(d.current.segments) == 1 and sorted(d.current.segments.hit_index.tolist()) == [0, 1, 2, 3]
    colors = list(d.circles.colors)
    assert len(set(colors[:4])) == 1 and colors[4] != colors[0]
    # segments given with an event are drawn as they are, not refitted
    d.add_events([DisplayEvent(ev.chamber, ev.layer, ev.cell, ev.drift_ns, segments=Segments.empty())])
    assert np.size(d.segment_lines.x) == 0 and len(set(d.circles.colors)) == 1 != len(set(colors))


def test_stepping_shows_each_event_and_respects_the_bounds(events):
    d = EventDisplay(capacity=5)
    assert d.label.value == "no event" and d.previous_button.disabled and d.next_button.disabled
    d.next(), d.previous()  # nothing to show: no error
    d.add_events(events[:8])
    assert len(d) == 5 and d.index == 4 and d.current.event_id == events[7].event_id
    assert d.label.value.startswith("event 5 of 5 | id ") and str(events[7].event_id) in d.label.value
    assert d.next_button.disabled and not d.previous_button.disabled
    shown = rows2d(d.circles.x).copy()
    d.next_button.click()  # at the newest: stays
    assert d.index == 4 and np.array_equal(rows2d(d.circles.x), shown)
    seen = [d.current.event_id]
    for k in range(3, -1, -1):
        d.previous_button.click()
        assert d.index == k and d.label.value.startswith(f"event {k + 1} of 5")
        assert not np.array_equal(rows2d(d.circles.x), shown)
        shown = rows2d(d.circles.x).copy()
        seen.append(d.current.event_id)
    assert seen == [e.event_id for e in events[7:2:-1]]
    assert d.previous_button.disabled and not d.next_button.disabled
    d.previous()
    assert d.index == 0
    d.next_button.click()
    assert d.index == 1 and d.current.event_id == events[4].event_id
    d.show(-1)
    assert d.index == 4
    for bad in (5, -6):
        with pytest.raises(IndexError):
            d.show(bad)
    assert d.index == 4


def test_adding_follows_the_newest_or_stays_on_the_event_shown(events):
    d = EventDisplay(capacity=4)
    d.add_events(events[:4])
    d.show(2)
    d.add_events(events[4:5])  # one drops out: the event shown moves to index 1
    assert d.index == 1 and d.current.event_id == events[2].event_id
    d.add_events(events[5:10])  # the event shown drops out: the oldest kept
    assert d.index == 0 and d.current.event_id == events[6].event_id
    d.show(-1)
    d.add_events(events[10:12])
    assert d.current.event_id == events[11].event_id and d.label.value.startswith("event 4 of 4")
    d.clear()
    assert len(d) == 0 and d.label.value == "no event" and np.size(d.circles.x) == 0


def test_updates_change_mark_data_never_the_figure(events):
    d = EventDisplay()
    figure, marks, axes = d.figure, list(d.figure.marks), list(d.figure.axes)
    ids = [m.model_id for m in marks]
    d.add_events(events[:3])
    d.previous()
    d.show(0)
    assert d.figure is figure and list(d.figure.marks) == marks and list(d.figure.axes) == axes
    assert [m.model_id for m in d.figure.marks] == ids
    assert [getattr(d, name) for name in EventDisplay.MARK_NAMES] == marks  # the order the browser test reads


def test_events_from_hits_split_one_fit_per_event():
    h = scintillator_timed_hits(0.3, seed=5)
    evs = events_from_hits(h["orbit"], h["chamber"], h["layer"], h["cell"], h["drift_ns"])
    whole = fit_segments(h["orbit"], h["chamber"], h["layer"], h["cell"], h["drift_ns"])
    assert [e.event_id for e in evs] == np.unique(h["orbit"]).tolist()
    assert sum(e.n_hits for e in evs) == len(h["orbit"])
    assert sum(len(e.segments) for e in evs) == len(whole) > 20
    got = np.concatenate([e.segments.position_mm for e in evs])
    assert np.allclose(got, whole.position_mm)
    for e in evs:  # each event's hit_index points at its own hits: the chosen side is its wire +- drift
        s = e.segments
        wx, _ = wire_xz(e.chamber[s.hit_index], s.hit_layer, s.hit_cell)
        assert np.allclose(np.abs(s.hit_x_mm - wx), np.clip(e.drift_ns[s.hit_index] * V, 0, 21.0))
        assert np.array_equal(e.layer[s.hit_index], s.hit_layer)


def test_simulated_muons_mostly_give_segments_in_several_chambers(events):
    """The scintillator-timed simulation is what the browser test shows: most events are muons with segments."""
    assert len(events) > 20
    n_seg = np.array([len(e.segments) for e in events])
    assert (n_seg >= 2).mean() > 0.5
    chi2 = np.concatenate([e.segments.chi2_ndof for e in events])
    assert np.median(chi2) < 2.0


def test_display_event_checks_its_arrays():
    with pytest.raises(ValueError, match="one entry per hit"):
        DisplayEvent([0, 0], [1], [3, 3], [10.0, 20.0])
    for bad in ({"chamber": [4]}, {"layer": [0]}, {"layer": [5]}, {"cell": [16]}, {"cell": [-1]}):
        hit = {"chamber": [0], "layer": [1], "cell": [3], "drift_ns": [10.0]} | bad
        with pytest.raises(ValueError, match=f"{next(iter(bad))} outside"):
            DisplayEvent(**hit)
    with pytest.raises(ValueError, match="finite"):
        DisplayEvent([0], [1], [3], [np.nan])
    with pytest.raises(ValueError):
        EventDisplay(capacity=0)
