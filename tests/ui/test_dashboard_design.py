"""The dashboard's design without a browser: the reference over every histogram, readable axes, the alert panel,
periods, no developer text, and updates that send only what changed (widget messages counted on their comm)."""

from __future__ import annotations

import json
import re

import bqplot as bq
import ipywidgets as W
import numpy as np
import pytest
from monitor_messages import T0, message

from dtlive.core.messages import iso_utc, to_dataset
from dtlive.storage.references import reference_dir, save
from dtlive.ui.panels import AlertPanel, verdict_html
from dtlive.ui.plots import CHANNEL_TICKS, PERIOD_COLORS, REFERENCE_COLOR
from dtlive.ui.widgets import HISTOGRAMS, Dashboard


@pytest.fixture
def wire(monkeypatch):
    """Count the messages every widget created from now on sends to the frontend."""
    import comm
    from comm import DummyComm

    sent: list[tuple[str, dict]] = []

    class Counting(DummyComm):
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            sent.append((self.comm_id, data or {}))

    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: Counting(*a, **k))
    return sent


def dashboard(tmp_path, reference=None, **kwargs) -> Dashboard:
    """A dashboard without a feed, its reference looked for in ``tmp_path`` (none there unless saved)."""
    return Dashboard("127.0.0.1:1", start=False, references_dir=reference_dir(tmp_path), reference=reference,
                     **kwargs)


def test_the_reference_is_drawn_over_every_histogram_scaled_to_the_entries_shown(tmp_path):
    ref_windows = [message(w, 40, chamber_channel=5) for w in range(3)]
    save("default", to_dataset(ref_windows), reference_dir(tmp_path))
    d = dashboard(tmp_path)
    assert "reference default: 3 windows" in d.reference_note.value
    d.add_messages([message(10, 10, chamber_channel=3)])
    ref = to_dataset(ref_windows).sum("time")
    for c, panel in enumerate(d.panels):
        for product in HISTOGRAMS:
            view = panel.views[product]
            shown = view.values.sum()
            assert REFERENCE_COLOR in view.ref_line.colors and view.ref_line in view.figure.marks
            assert len(view.ref_line.x) == len(view.x) + 1  # a step line over the bins' edges
            expected = ref[product].sel(chamber=c).values.astype(float)
            data, drawn = view.drawn()
            floor = 0.5 if product == "active_channels_per_orbit" else 0.0  # the log axis' floor
            np.testing.assert_allclose(data, np.maximum(view.values, floor))
            if shown > 0 and expected.sum() > 0:  # same entries as the histogram, the reference's shape
                assert drawn is not None, (c, product)
                np.testing.assert_allclose(drawn, np.maximum(expected * shown / expected.sum(), floor))
            else:  # nothing to scale to (an empty chamber, or the reference has nothing there)
                assert drawn is None, (c, product)
    occ = d.panels[0].occupancy
    assert occ.figure.marks == [occ.bars, occ.ref_line] and occ.ref_line.colors == [REFERENCE_COLOR]
    assert occ.ref_line.y[5] == pytest.approx(10.0)  # all 10 hits where the reference has them all: channel 5
    mult = d.panels[0].multiplicity
    assert mult.figure.marks == [mult.bars] and mult.bars is mult.ref_line  # data and reference: one mark
    d.log_box.value = True
    assert occ.ref_line.visible and type(occ.ref_line.scales["y"]).__name__ == "LogScale"
    assert occ.ref_line.y.min() == 0.5 and occ.ref_line.scales["y"] is occ.bars.scales["y"]


def test_without_a_reference_there_is_no_overlay_until_one_is_saved(tmp_path):
    d = dashboard(tmp_path)
    d.add_messages([message(1, 10)])
    assert all(v.drawn()[1] is None for p in d.panels for v in p.views.values())
    assert "no reference" in d.reference_note.value
    save("default", to_dataset([message(w, 20) for w in range(2)]), reference_dir(tmp_path))
    d._check_reference()  # the status clock does this every second
    d.add_messages([message(2, 10)])
    assert d.panels[0].occupancy.ref_line.visible and d.panels[0].multiplicity.drawn()[1] is not None
    assert "reference default: 2 windows" in d.reference_note.value


def test_axes_are_readable_on_every_plot(tmp_path):
    d = dashboard(tmp_path)
    d.add_messages([message(1, 10)])
    figures = [f for p in d.panels for f in (*[v.figure for v in p.views.values()], p.occupancy.map_figure)]
    figures.append(d.timeseries.figure)
    for fig in figures:
        y_axes = [a for a in fig.axes if a.side == "left"]
        assert len(y_axes) == 1 and re.search(r"\[.+\]|/ |orbits", y_axes[0].label), (fig.title, y_axes[0].label)
        x_axes = [a for a in fig.axes if a.side in (None, "bottom") and not isinstance(a, bq.ColorAxis)]
        assert len(x_axes) == 1 and x_axes[0].label, fig.title
        assert not any(getattr(m, "display_legend", False) for m in fig.marks)  # no legend over the data
    panel = d.panels[1]
    for view in (panel.occupancy, panel.scint, panel.multiplicity):
        assert view.x_axis.tick_values.tolist() == CHANNEL_TICKS.tolist() and view.x_axis.tick_format == "d"
    assert panel.occupancy.x_axis.label == "channel" and panel.drift.x_axis.label == "drift time [ns]"
    assert panel.drift.y_axis.label == "hits / 5 ns"
    assert type(panel.multiplicity.bars.scales["y"]).__name__ == "LogScale"  # log by default
    assert type(panel.occupancy.bars.scales["y"]).__name__ == "LinearScale"
    time_axis = d.timeseries.figure.axes[0]
    assert time_axis.tick_format == "%H:%M:%S" and time_axis.label == "time of day (UTC)"
    bar = panel.occupancy.color_bar.value  # the colour bar beside the map: the ramp, round ticks, a label
    assert "linear-gradient(to top, #440154" in bar and "hits / channel" in bar and ">4<" in bar
    assert panel.occupancy.map_box.children == (panel.occupancy.map_figure, panel.occupancy.color_bar)
    tooltip = panel.occupancy.cells.tooltip
    assert "name" in tooltip.fields and str(panel.occupancy.cells.names[7]).startswith("channel 7 (TDC 71)")
    assert "chamber 0" in d.timeseries.legend.value and "warning period" in d.timeseries.legend.value


def test_count_axes_have_round_ticks_and_stay_put_while_the_data_fluctuates(tmp_path, wire):
    d = dashboard(tmp_path)
    d.add_messages([message(1, 2)])
    occ = d.panels[0].occupancy
    scale, axis = occ.bars.scales["y"], occ.y_axis
    assert (scale.min, scale.max) == (0, 4) and axis.tick_values.tolist() == [0, 1, 2, 3, 4]  # not 0.5 steps
    d.add_messages([message(2, 500)])
    assert scale.max == 600 and axis.tick_values.tolist() == [0, 200, 400, 600]
    wire.clear()
    d.add_messages([message(3, 450)])  # within the axis: it stays, nothing is sent for it
    assert scale.max == 600 and not any(cid in (scale.comm.comm_id, axis.comm.comm_id) for cid, _ in wire)
    d.add_messages([message(4, 30)])  # far below, once: a burst is over, the axis stays a while
    assert scale.max == 600
    for w in range(5, 14):  # far below for 10 windows: the axis follows
        d.add_messages([message(w, 30)])
    assert d.updates == 13 and scale.max == 30 and axis.tick_values.tolist() == [0, 10, 20, 30]
    assert occ.cells.scales["color"].max == 30 and ">30<" in occ.color_bar.value and ">600<" not in occ.color_bar.value
    rates = d.timeseries
    assert rates.y_scale.min == 0 and rates.y_scale.max in rates.figure.axes[1].tick_values
    # d3 picks round times, about six of them (their labels never run into each other), and round channels
    assert rates.figure.axes[0].num_ticks == 6 and occ.x_axis.num_ticks is None


def test_the_time_series_is_the_hit_rate_and_shades_bad_and_warning_periods(tmp_path):
    d = dashboard(tmp_path)
    d.add_messages([message(1, 10), message(2, 20), message(3, 5)])
    assert d.timeseries.lines.y[0].tolist() == [5.0, 10.0, 2.5]  # hits / s of the 2 s windows
    d.add_periods([{"schema": "dtlive.quality/1", "start": iso_utc(T0 + 2), "end": iso_utc(T0 + 6), "kind": "bad",
                    "reason": "data_gap"},
                   {"schema": "dtlive.quality/1", "start": iso_utc(T0 + 6), "end": iso_utc(T0 + 7), "kind": "warning",
                    "reason": "noisy_channel"}])
    spans = d.timeseries.spans
    xs = np.atleast_2d(spans.x)
    assert xs.shape == (2, 4) and xs[0][0] == np.datetime64(int((T0 + 2) * 1000), "ms")
    assert spans.fill_colors == [PERIOD_COLORS["bad"], PERIOD_COLORS["warning"]]
    assert spans.scales["y"] is not d.timeseries.y_scale and spans.preserve_domain == {"x": True}  # full height


def test_the_alert_panel_newest_first_aligned_to_the_second_highlighted_failed_and_duplicates():
    panel = AlertPanel()

    def result(alert, t, sigma=None, status="ok", reason=None, published=0.0):
        summary = {"status": status, **({"max_significance_sigma": sigma, "max_chamber": 2} if sigma else {}),
                   **({"reason": reason} if reason else {})}
        return {"alert_id": alert, "mission": alert.split(":")[0], "analysis": "rate_excess",
                "trigger_time": f"2026-12-05T{t}.250000Z", "published_at": published, "summary": summary}

    panel.add([result("Swift:1", "10:00:01", 1.2), result("IceCube:2", "11:30:15", 4.5)])
    panel.add([result("KM3NeT:3", "09:00:00", status="error", reason="history store unreadable"),
               result("Swift:1", "10:00:01", 1.3, published=5.0)])  # the same notice again
    html = panel.widget.value
    rows = re.findall(r"<tr class='dtlive-alert-row' data-kind='(\w+)' data-copies='(\d+)'.*?</tr>", html)
    times = re.findall(r"font-family:monospace'>([^<]*)<", html)
    assert times == ["2026-12-05 11:30:15", "2026-12-05 10:00:01", "2026-12-05 09:00:00"]  # newest first
    assert rows == [("significant", "1"), ("ok", "2"), ("failed", "1")]
    assert "4.5 σ (chamber 2)" in html and "1.3 σ" in html and "1.2 σ" not in html  # the newest result kept
    assert "received 2x" in html and "FAILED: history store unreadable" in html
    assert html.count("<td") == 6 * 3 and html.count("<th") == 6  # one column per field, every row
    panel.add([{"alert_id": "IceCube:2", "analysis": "rate_excess", "retracted": True}])
    assert "retracted" in panel.widget.value and "line-through" in panel.widget.value


def test_the_top_of_the_page_is_verdicts_then_alarms_then_the_status_line(tmp_path):
    d = dashboard(tmp_path)
    assert d.children[0] is d.verdict_strip and d.children[1] is d.alarm_slot and d.children[2] is d.header
    assert d.alarm_slot.children == () and "dtlive-alarms-slot" in d.alarm_slot._dom_classes
    strip = verdict_html(d.verdicts.summary())
    assert strip.count("class='dtlive-card'") == 5 and "display:flex" in strip  # side by side, one row
    chambers = next(c for c in d.children if "dtlive-chambers" in c._dom_classes)
    assert [p.widget for p in d.panels] == list(chambers.children)  # four columns


def _texts(widget) -> list[str]:
    out = []
    if isinstance(widget, W.HTML | W.Label):
        out.append(widget.value)
    if isinstance(widget, bq.Figure):
        out.append(widget.title)
        out += [a.label for a in widget.axes]
    if isinstance(widget, W.Accordion):
        out += [widget.get_title(i) for i in range(len(widget.children))]
    for child in getattr(widget, "children", ()):
        out += _texts(child)
    return out


def test_no_developer_text_on_the_page(tmp_path):
    from importlib.resources import files

    d = dashboard(tmp_path)
    d.add_messages([message(1, 10)])
    d.add_periods([{"schema": "dtlive.quality/2", "status": 0, "windows": {"ids": [1, 1], "end": iso_utc(T0)},
                    "reference": None, "detector": {"status": 0, "reasons": []}, "chambers": {}}])
    notebook = json.loads((files("dtlive.ui") / "dashboard.ipynb").read_text())
    markdown = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown"]
    text = " ".join(_texts(d) + markdown)
    for word in ("DTLIVE_", "Voil", "dt.monitor", "dt.hits", "topic", "recorder", "kafka", "Kafka", "helper",
                 "TODO", "traceback", "None", "NaN"):
        assert word not in text, word


def test_an_update_sends_only_what_changed_and_only_for_visible_chambers(tmp_path, wire):
    save("default", to_dataset([message(w, 20) for w in range(2)]), reference_dir(tmp_path))
    d = dashboard(tmp_path)
    d.add_messages([message(1, 25)])
    marks = {p.chamber: {v.bars.comm.comm_id for v in p.views.values()} | {p.occupancy.cells.comm.comm_id}
             for p in d.panels}

    def sent_by(chamber: int) -> int:
        return sum(1 for comm_id, _ in wire if comm_id in marks[chamber])

    wire.clear()
    d.add_messages([message(2, 30)])  # chamber 0 changes (channel 3) within its axes, chambers 1-3 stay empty
    assert sent_by(0) == 3 and sent_by(1) == sent_by(2) == sent_by(3) == 0  # occupancy, map, multiplicity
    assert len(wire) == 3 + 1 + 2  # the occupancy's reference line, the time series and the status line: no more
    wire.clear()
    d.refresh()  # nothing new: no plot to send (the status line says how old the data is now)
    assert [m for m in wire if m[0] != d.header.comm.comm_id] == []
    d.chamber_boxes[0].value = False
    wire.clear()
    d.add_messages([message(3, 50)])
    assert sent_by(0) == 0 and d.panels[0].stale
    d.chamber_boxes[0].value = True  # shown again: drawn at once
    assert d.panels[0].occupancy.bars.y[3] == 50 and not d.panels[0].stale
