"""Live dashboard widgets (bqplot + ipywidgets) for notebooks and Voilà.

The pieces are small and reusable; each is bound to an xarray DataArray and has
``update(da)``:

- :class:`HistogramView`: bars of any 1-D DataArray (its one dim on x);
- :class:`OccupancyView`: one chamber's channel occupancy as bars and as the
  4-layer x 16-cell map laid out like the chamber (staggered wires);
- :class:`TimeSeriesView`: lines against window time;
- :class:`Dashboard`: all of them, a status header and controls, fed live by
  :class:`dtlive.ui.live.ResultsFeed` from a background thread that only sets trait values.

>>> from dtlive.core.products import compute_products
>>> from dtlive.core.rows import Rows
>>> ds = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
>>> view = HistogramView(ds.drift_time_ns.sel(chamber=0), title="drift time")
>>> occ = OccupancyView(ds.channel_occupancy.sel(chamber=0))
>>> int(occ.bars.y.sum()), len(occ.cells.x)
(1, 64)

In a notebook::

    from dtlive.ui.widgets import Dashboard
    Dashboard()          # finds the embedded broker (or DTLIVE_BOOTSTRAP) and updates live

Long on purpose: each view owns its bqplot marks, scales and axes; they share the helpers for scales,
colours and status text kept here.
"""

from __future__ import annotations

import html
import threading
import time

import bqplot as bq
import ipywidgets as W
import numpy as np
import xarray as xr

from dtlive.core import detector as det
from dtlive.core.messages import ANALYSIS_SCHEMA, QUALITY_SCHEMA, QUALITY_TESTS_SCHEMA
from dtlive.kafka.health import parse_status
from dtlive.ui.live import VIEWS, LiveVerdicts, LiveWindows, ResultsFeed

CHAMBER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
_MARGIN = {"top": 30, "bottom": 35, "left": 50, "right": 10}


def _figure(marks, axes, title: str, width: str = "320px", height: str = "220px", css: str | None = None):
    fig = bq.Figure(marks=marks, axes=axes, title=title, fig_margin=dict(_MARGIN),
                    layout=W.Layout(width=width, height=height), title_style={"font-size": "12px"})
    if css:
        fig.add_class(css)
    return fig


class _BarsView:
    """Bars of counts with a linear or log y axis; :meth:`set_log` rebuilds the bars and axis.

    Swapping the scale of a drawn mark leaves bqplot's bars broken in the browser, so a
    toggle draws new bars (log bars stand on 0.5, with empty bins drawn at 0.5).
    """

    data: xr.DataArray  # set by the view
    _bars_figure: bq.Figure

    def _init_bars(self, x: np.ndarray, values: np.ndarray, color: str, x_label: str, log: bool
                   ) -> tuple[list, list]:
        self._log, self._color = log, color
        self.x_scale = bq.LinearScale()
        self.x_axis = bq.Axis(scale=self.x_scale, label=x_label, num_ticks=5)
        self.bars, self.y_axis = self._make_bars(np.asarray(x, float), values)
        return [self.bars], [self.x_axis, self.y_axis]

    def _make_bars(self, x: np.ndarray, values: np.ndarray):
        y_scale = bq.LogScale(min=0.5) if self._log else bq.LinearScale(min=0, allow_padding=False)
        bars = bq.Bars(x=x, y=self._y(values), scales={"x": self.x_scale, "y": y_scale}, colors=[self._color],
                       padding=0.05, base=0.5 if self._log else 0.0)
        return bars, bq.Axis(scale=y_scale, side="left", tick_format=".2s", num_ticks=4)

    def _y(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, float)
        return np.where(values > 0, values, 0.5) if self._log else values

    def _set_bars(self, values: np.ndarray) -> None:
        """New bar heights; an all-empty histogram keeps a 0..1 axis instead of a degenerate one."""
        values = np.asarray(values, float)
        with self.bars.hold_sync():
            if not self._log:
                self.bars.scales["y"].max = None if values.size and values.max() > 0 else 1.0
            self.bars.y = self._y(values)

    def set_log(self, log: bool) -> None:
        """Switch the y axis between linear and log."""
        if log == self._log:
            return
        self._log = log
        self.bars, self.y_axis = self._make_bars(self.bars.x, self.data.values)
        self._bars_figure.marks = [self.bars]
        self._bars_figure.axes = [self.x_axis, self.y_axis]
        self._set_bars(self.data.values)


class HistogramView(_BarsView):
    """Bars of a 1-D DataArray against its coordinate; ``update(da)`` redraws.

    >>> import xarray as xr
    >>> v = HistogramView(xr.DataArray([1, 4, 2], dims="x", coords={"x": [0, 1, 2]}), title="demo")
    >>> v.update(v.data * 2); v.bars.y.tolist()
    [2.0, 8.0, 4.0]
    """

    def __init__(self, da: xr.DataArray, title: str = "", log: bool = False, color: str = "#1f77b4",
                 css: str | None = None, **size):
        if da.ndim != 1:
            raise ValueError(f"HistogramView wants a 1-D DataArray, got dims {da.dims}")
        self.data = da
        dim = da.dims[0]
        label = da[dim].attrs.get("long_name", dim)
        units = da[dim].attrs.get("units")
        marks, axes = self._init_bars(da[dim].values, da.values, color, f"{label} [{units}]" if units else label, log)
        self.figure = self._bars_figure = _figure(marks, axes, title or str(da.name), css=css, **size)

    def update(self, da: xr.DataArray) -> None:
        self.data = da
        self._set_bars(da.values)

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.figure)


class OccupancyView(_BarsView):
    """One chamber's channel occupancy: bars per TDC channel and the chamber map (layers x cells).

    The map puts each wire where it is: 16 cells per layer, layers 1 (bottom) to 4 (top),
    alternate layers shifted by half a cell, as in the chamber.

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> ds = compute_products(Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 0], channel=[3, 3, 7], orbit=[1, 2, 3],
    ...                                         bx=[0, 0, 0], tdc=[0, 0, 0]))
    >>> occ = OccupancyView(ds.channel_occupancy.sel(chamber=0), title="chamber 0")
    >>> occ.bars.y[[3, 7]].tolist(), occ.cells.x[[3, 7]].tolist(), occ.cells.y[[3, 7]].tolist()  # channels 3, 7
    ([2.0, 1.0], [-294.0, -252.0], [-19.5, -19.5])
    >>> occ.update(ds.channel_occupancy.sel(chamber=0) * 0); float(occ.cells.color.max())
    0.0
    """

    def __init__(self, da: xr.DataArray, title: str = "", log: bool = False, color: str = "#1f77b4",
                 css: str | None = None, **size):
        if da.dims != ("channel",):
            raise ValueError(f"OccupancyView wants a DataArray over 'channel', got dims {da.dims}")
        self.data = da
        channels = da.tdc_channel.values if "tdc_channel" in da.coords else da.channel.values
        marks, axes = self._init_bars(channels, da.values, color, "TDC channel", log)
        self.bars_figure = self._bars_figure = _figure(marks, axes, f"{title} occupancy".strip(),
                                                       css=f"{css}-bars" if css else None, **size)
        x_mm, z_mm = det.wire_position_mm(da.channel.values)
        self.color_scale = bq.ColorScale(scheme="viridis", min=0)
        self.cells = bq.Scatter(
            x=x_mm, y=z_mm, color=np.asarray(da.values, float), marker="square", default_size=150,
            scales={"x": bq.LinearScale(), "y": bq.LinearScale(min=-30, max=30), "color": self.color_scale},
            tooltip=bq.Tooltip(fields=["x", "y", "color"], labels=["x [mm]", "z [mm]", "hits"]),
        )
        self.map_figure = _figure(
            [self.cells],
            [bq.Axis(scale=self.cells.scales["x"], label="x [mm]", num_ticks=4),
             bq.Axis(scale=self.cells.scales["y"], side="left", label="layer z [mm]", num_ticks=4),
             bq.ColorAxis(scale=self.color_scale, side="right", num_ticks=3, tick_format=".2s")],
            f"{title} map ({det.N_LAYERS} layers x {det.CELLS_PER_LAYER} cells)".strip(),
            css=f"{css}-map" if css else None, **size)
        self.map_figure.fig_margin = {**_MARGIN, "right": 60}
        self.widget = W.HBox([self.bars_figure, self.map_figure])

    def update(self, da: xr.DataArray) -> None:
        self.data = da
        values = np.asarray(da.values, float)
        self._set_bars(values)
        with self.cells.hold_sync():
            self.cells.color = values

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget)


class TimeSeriesView:
    """Lines against time; ``update(time, {label: values})`` redraws.

    >>> t = np.array(["2024-01-01T00:00:00", "2024-01-01T00:00:02"], "datetime64[ms]")
    >>> v = TimeSeriesView({"total": [3, 4]}, t, title="hits")
    >>> v.update(t, {"total": [5, 6]}); v.lines.y.tolist()
    [5.0, 6.0]
    """

    def __init__(self, series: dict[str, np.ndarray], time: np.ndarray, title: str = "", colors=None,
                 y_label: str = "hits per window", css: str | None = None, **size):
        self.labels = list(series)
        self.x_scale, self.y_scale = bq.DateScale(), bq.LinearScale(min=0)
        self.lines = bq.Lines(
            x=np.array([], "datetime64[ms]"), y=np.zeros((len(self.labels), 0)),
            scales={"x": self.x_scale, "y": self.y_scale}, labels=self.labels, display_legend=True,
            colors=list(colors or ["black", *CHAMBER_COLORS])[: len(self.labels)],
        )
        axes = [bq.Axis(scale=self.x_scale, label="window start (UTC)", num_ticks=5),
                bq.Axis(scale=self.y_scale, side="left", label=y_label, tick_format=".2s")]
        size = {"width": "100%", "height": "260px", **size}
        self.figure = _figure([self.lines], axes, title, css=css, **size)
        self.figure.legend_location = "top-left"
        self.update(time, series)

    def shade(self, spans: list[tuple[float, float]], color: str = "#ef6c00") -> None:
        """Shade time spans (UNIX seconds, e.g. bad data-quality periods) behind the lines."""
        if not hasattr(self, "spans"):
            self.spans = bq.Lines(x=[], y=[], scales={"x": self.x_scale, "y": self.y_scale}, fill="inside",
                                  colors=[color], fill_colors=[color], fill_opacities=[0.25], opacities=[0.0])
            self.figure.marks = [self.spans, *self.figure.marks]
        top = max(float(np.nanmax(self.lines.y)) if np.size(self.lines.y) else 1.0, 1.0) * 1.05
        xs = [np.array([a, a, b, b], "float64") * 1000 for a, b in spans]
        with self.spans.hold_sync():
            self.spans.x = np.array(xs).astype("datetime64[ms]") if xs else np.array([], "datetime64[ms]")
            self.spans.y = np.array([[0, top, top, 0]] * len(xs), float) if xs else np.array([], float)
            self.spans.fill_colors = [color] * max(len(xs), 1)
            self.spans.fill_opacities = [0.25] * max(len(xs), 1)
            self.spans.colors = [color] * max(len(xs), 1)

    def _stack(self, series: dict) -> np.ndarray:
        return np.array([np.asarray(series[k], float) for k in self.labels]).reshape(len(self.labels), -1)

    def update(self, time: np.ndarray, series: dict[str, np.ndarray]) -> None:
        x, y = np.asarray(time, "datetime64[ms]"), self._stack(series)
        if len(x) == 1:  # bqplot squeezes a single point into the wrong shape: draw it as a zero-length line
            x, y = np.repeat(x, 2), np.repeat(y, 2, axis=1)
        with self.lines.hold_sync():
            self.lines.x = x
            self.lines.y = y

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.figure)


def parse_quality(value: bytes) -> dict:
    """A ``dtlive.quality/1`` period or ``dtlive.quality/2`` verdict as a dict (ValueError for anything else).

    >>> parse_quality(b'{"schema": "dtlive.quality/1", "start": "2024-01-01T00:00:00Z", "end": null}')["start"]
    '2024-01-01T00:00:00Z'
    """
    import json

    msg = json.loads(value)
    if not isinstance(msg, dict) or msg.get("schema") not in (QUALITY_SCHEMA, QUALITY_TESTS_SCHEMA):
        raise ValueError("not a dtlive.quality/1 or /2 message")
    return msg


STATUS_COLORS = ("#2e7d32", "#9e9d24", "#f9a825", "#ef6c00", "#c62828")  # status 0 (ok) .. 4 (bad)
UNJUDGED_COLOR = "#757575"


def verdict_html(summary: dict) -> str:
    """The quality summary strip as HTML (pure): the detector's and each chamber's status from the newest verdict
    (:meth:`dtlive.ui.live.LiveVerdicts.summary`), coloured, with the first reason as the title (tooltip).

    Each badge has ``data-status`` (0..4, or ``none`` when not judged) and a chamber badge ``data-chamber``.

    >>> from dtlive.ui.live import LiveVerdicts
    >>> "no verdict yet" in verdict_html(LiveVerdicts().summary())
    True
    """
    def badge(css: str, text: str, status, reason: str, extra: str = "") -> str:
        color = UNJUDGED_COLOR if status is None else STATUS_COLORS[min(int(status), len(STATUS_COLORS) - 1)]
        return (f"<span class='{css}'{extra} data-status='{'none' if status is None else int(status)}' "
                f"title='{html.escape(reason, quote=True)}' style='background:{color};color:white;padding:2px 8px;"
                f"border-radius:3px;margin-right:6px'>{html.escape(text)}</span>")

    d = summary["detector"]
    parts = [badge("dtlive-detector-status", f"detector: {d['label']}", d["status"], d["reason"])]
    parts += [badge("dtlive-chamber-status", f"chamber {c['chamber']}: {c['label']}", c["status"], c["reason"],
                    f" data-chamber='{c['chamber']}'") for c in summary["chambers"]]
    if summary["state"] == "waiting":
        info = "no verdict yet: the recorder judges every few windows against the reference"
    else:
        ids = summary["windows"]
        info = (f"window {ids[0]}" if ids[0] == ids[-1] else f"windows {ids[0]}-{ids[-1]}") if ids else "windows ?"
        if summary.get("end"):
            info += f" (to {str(summary['end'])[11:19]} UTC)"
        ref = summary.get("reference")
        info += f", reference {ref!r}" if ref else ", no reference: only tests that need none"
    return (f"<div class='dtlive-verdict' data-state='{summary['state']}' style='font-family:sans-serif;"
            f"font-size:13px'><b>quality</b>&nbsp; " + "".join(parts)
            + f"<span class='dtlive-verdict-info' style='color:#555'>{html.escape(info)}</span></div>")


def _duration(seconds: float) -> str:
    """A duration as people read it: ``4.2 s``, ``3 min 20 s``, ``2 h 05 min``.

    >>> _duration(4.24), _duration(200), _duration(7500)
    ('4.2 s', '3 min 20 s', '2 h 05 min')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def status_html(status: dict, broker: str, broker_ok: bool | None, error: str | None, paused: bool,
                view: str, now: float | None = None, newest: int | None = None) -> str:
    """The status header as HTML (pure, so tests can check its wording).

    >>> "BROKER UNREACHABLE" in status_html({"state": "waiting", "windows": 0}, "h:1", False, "down", False, "last")
    True
    """
    now = time.time() if now is None else now
    if broker_ok is False:
        badge, color = "BROKER UNREACHABLE", "#c62828"
    elif status["state"] == "waiting":
        badge, color = "WAITING FOR DATA", "#ef6c00"
    elif status["state"] == "stale":
        badge, color = f"NO NEW DATA for {_duration(status['since_last_s'])} (processor or DAQ stopped?)", "#ef6c00"
    elif status["state"] == "behind":
        badge, color = f"BEHIND: newest data {_duration(status['data_age_s'])} old (catching up)", "#f9a825"
    else:
        badge, color = "LIVE", "#2e7d32"
    if paused:
        badge += " · PAUSED" + (f" (newest window {newest})" if newest is not None else "")
    parts = [f"<b>broker</b> {html.escape(broker)}"]
    if status.get("windows"):
        end = time.strftime("%H:%M:%S", time.gmtime(status["window_end"])) if np.isfinite(status["window_end"]) else "?"
        parts += [
            f"<b>window</b> <span class='dtlive-window-id'>{status['window_id']}</span> (ends {end} UTC)",
            f"<b>data age</b> {_duration(status['data_age_s'])}"
            + (f" (clock {status['clock_ahead_s']:.0f} s ahead)" if status.get("clock_ahead_s", 0) >= 1 else ""),
            f"<b>input</b> {status['input_rows_per_s']:,.0f} rows/s",
            f"<b>windows/s</b> {status['windows_per_s']:.2f}",
            f"<b>rejects</b> {status['rejected_last']} last / {status['rejected_total']} total",
        ]
    parts.append(f"<b>view</b> <span class='dtlive-view'>{view}</span>")
    detail = f"<div style='color:#c62828'>{html.escape(error)}</div>" if error and broker_ok is False else ""
    return (
        f"<div class='dtlive-status-line' style='font-family:sans-serif;font-size:13px'>"
        f"<span class='dtlive-state' style='background:{color};color:white;padding:2px 8px;border-radius:3px'>"
        f"{badge}</span>&nbsp; " + " &nbsp;|&nbsp; ".join(parts) + detail + "</div>"
    )


def parse_analysis(value: bytes) -> dict:
    """A ``dtlive.analysis/1`` message as a dict (ValueError for anything else).

    >>> parse_analysis(b'{"schema": "dtlive.analysis/1", "analysis": "rate_excess", "status": "ok"}')["status"]
    'ok'
    >>> parse_analysis(b'{"schema": "dtlive.monitor/1"}')
    Traceback (most recent call last):
    ...
    ValueError: not a dtlive.analysis/1 message
    """
    import json

    msg = json.loads(value)
    if not isinstance(msg, dict) or msg.get("schema") != ANALYSIS_SCHEMA:
        raise ValueError("not a dtlive.analysis/1 message")
    return msg


class AlertPanel:
    """The newest canned-analysis results (from ``dt.analyses``) as a small live table.

    >>> panel = AlertPanel()
    >>> panel.add([{"alert_id": "Swift:1", "mission": "Swift", "analysis": "rate_excess", "trigger_time": "t",
    ...             "summary": {"status": "ok", "max_significance_sigma": 1.25}}])
    >>> "Swift:1" in panel.widget.value and "1.2" in panel.widget.value
    True
    """

    def __init__(self, keep: int = 12):
        self.keep = keep
        self.rows: list[dict] = []
        self.widget = W.HTML("<i>no alerts yet</i>")
        self.widget.add_class("dtlive-alerts")

    def add(self, messages: list[dict]) -> None:
        for m in messages:
            if m.get("retracted"):
                for r in self.rows:
                    if r["alert_id"] == m.get("alert_id"):
                        r["retracted"] = True
                continue
            self.rows.append(m)
        self.rows = self.rows[-self.keep:]
        self.widget.value = self._html()

    def _html(self) -> str:
        cells = []
        for m in reversed(self.rows):
            summary = m.get("summary") or {}
            sig = summary.get("max_significance_sigma")
            result = f"{sig:.1f} σ (chamber {summary.get('max_chamber')})" if sig is not None else summary.get(
                "status", "")
            style = "text-decoration:line-through;color:#888" if m.get("retracted") else ""
            cells.append(f"<tr style='{style}'><td>{html.escape(str(m.get('trigger_time') or ''))}</td>"
                         f"<td>{html.escape(str(m.get('alert_id')))}</td><td>{html.escape(str(m.get('analysis')))}"
                         f"</td><td>{html.escape(str(result))}</td></tr>")
        return ("<b>Alerts and canned analyses</b> (newest first; retracted struck through)"
                "<table style='font-size:12px'><tr><th>trigger (UTC)</th><th>alert</th><th>analysis</th>"
                "<th>result</th></tr>" + "".join(cells) + "</table>")


def health_html(rows: list[dict], alarms: list[str]) -> str:
    """The service-health line and table as HTML (pure): rows and alarms of :class:`dtlive.kafka.health.ServiceHealth`.

    >>> "ALARM" in health_html([], ["processor on h (pid 1): no heartbeat for 9 s"])
    True
    """
    if alarms:
        badge, color = "ALARM: " + "; ".join(alarms), "#c62828"
    elif rows:
        badge, color = f"SERVICES OK ({len(rows)})", "#2e7d32"
    else:
        badge, color = "NO SERVICE HEARTBEATS", "#757575"
    cells = []
    for r in rows:
        lag = "-" if r.get("lag_messages") is None else f"{r['lag_messages']} msgs"
        if r.get("lag_s") is not None:
            lag += f", {round(r['lag_s'], 1) + 0.0:.1f} s"
        first = next(iter((r.get("rates") or {}).items()), None)
        rate = f"{first[0].removesuffix('_per_s')} {first[1]:,.1f}/s" if first else "-"
        bad = r.get("alarm") is not None
        style = "color:#c62828;font-weight:bold" if bad else ""
        state = str(r["state"]).upper() if bad else str(r["state"])
        cells.append(
            f"<tr class='dtlive-health-row' data-service='{html.escape(str(r['service']))}' "
            f"data-pid='{r['pid']}' data-state='{html.escape(str(r['state']))}' style='{style}'>"
            f"<td>{html.escape(str(r['service']))}</td><td>{html.escape(str(r['host']))}:{r['pid']}</td>"
            f"<td class='dtlive-health-state'>{html.escape(state)}</td><td>{r['age_s']:.1f} s ago</td>"
            f"<td>{html.escape(lag)}</td>"
            f"<td>{html.escape(rate)}</td>"
            f"<td>{r.get('errors_total', 0)}</td></tr>")
    table = ("<table style='font-size:12px;border-spacing:12px 0'><tr><th>service</th><th>host:pid</th>"
             "<th>state</th><th>heartbeat</th><th>input lag</th><th>rate</th><th>errors</th></tr>"
             + "".join(cells) + "</table>") if cells else ""
    return (f"<div class='dtlive-health-line' style='font-family:sans-serif;font-size:13px'><b>services</b> "
            f"<span class='dtlive-health-badge' style='background:{color};color:white;padding:2px 8px;"
            f"border-radius:3px'>{html.escape(badge)}</span>{table}</div>")


class HealthPanel:
    """Service health from the heartbeats on ``dt.status``: a badge (an alarm when a heartbeat is missing,
    irregular or reports errors) and a compact table, one row per service instance.

    >>> from dtlive.kafka.health import status_message
    >>> panel = HealthPanel()
    >>> panel.add([status_message("processor", run_id="r", state="running", seq=0, now=100.0, host="h", pid=1)],
    ...           now=101.0)
    >>> "SERVICES OK" in panel.widget.value
    True
    >>> panel.refresh(now=110.0); panel.alarms
    ['processor on h (pid 1): no heartbeat for 10 s']
    """

    def __init__(self, health=None):
        from dtlive.kafka.health import ServiceHealth

        self.health = health if health is not None else ServiceHealth()
        self.alarms: list[str] = []
        self.widget = W.HTML(health_html([], []))
        self.widget.add_class("dtlive-health")

    def add(self, messages: list[dict], now: float | None = None) -> None:
        """Take parsed ``dtlive.status/1`` heartbeats (from the status feed's thread) and redraw."""
        self.health.add(messages)
        self.refresh(now)

    def refresh(self, now: float | None = None) -> None:
        """Redraw (also without new heartbeats: that is how a missing one becomes an alarm)."""
        rows = self.health.rows(now)
        self.alarms = [f"{r['service']} on {r['host']} (pid {r['pid']}): {r['alarm']}" for r in rows if r["alarm"]]
        value = health_html(rows, self.alarms)
        if value != self.widget.value:
            self.widget.value = value


class ChamberPanel:
    """All per-chamber plots of one chamber in a row.

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> ds = compute_products(Rows.from_columns(head=[2, 2], fpga=[1, 1], channel=[3, 128], orbit=[7, 7], bx=[4, 0],
    ...                                         tdc=[0, 0]))
    >>> panel = ChamberPanel(ds, chamber=2)
    >>> float(panel.occupancy.bars.y.sum()), int(panel.scint.data.sum()), len(panel.views)
    (1.0, 1, 4)
    >>> panel.set_log(True); panel.update(ds, chamber=3)  # chamber 3 saw nothing
    >>> int(panel.occupancy.data.sum()), type(panel.drift.bars.scales["y"]).__name__
    (0, 'LogScale')
    """

    def __init__(self, ds: xr.Dataset, chamber: int, log: bool = False):
        sel = ds.sel(chamber=chamber)
        color = CHAMBER_COLORS[chamber]
        css = f"dtlive-c{chamber}"
        self.occupancy = OccupancyView(sel.channel_occupancy, title=f"chamber {chamber}", log=log, color=color,
                                       css=f"{css}-occupancy")
        self.multiplicity = HistogramView(sel.active_channels_per_orbit, "active channels per orbit", log=log,
                                          color=color, css=f"{css}-multiplicity")
        self.scint = HistogramView(sel.scint_channel_occupancy.assign_coords(channel=sel.tdc_channel.values),
                                   "scintillator-selected occupancy", log=log, color=color, css=f"{css}-scint")
        self.drift = HistogramView(sel.drift_time_ns, "drift time", log=log, color=color, css=f"{css}-drift")
        self.views = [self.occupancy, self.multiplicity, self.scint, self.drift]
        self.widget = W.VBox([
            W.HTML(f"<b style='color:{color}'>Chamber {chamber}</b>"),
            W.HBox([self.occupancy.bars_figure, self.occupancy.map_figure, self.multiplicity.figure]),
            W.HBox([self.scint.figure, self.drift.figure]),
        ])

    def update(self, ds: xr.Dataset, chamber: int) -> None:
        sel = ds.sel(chamber=chamber)
        self.occupancy.update(sel.channel_occupancy)
        self.multiplicity.update(sel.active_channels_per_orbit)
        self.scint.update(sel.scint_channel_occupancy.assign_coords(channel=sel.tdc_channel.values))
        self.drift.update(sel.drift_time_ns)

    def set_log(self, log: bool) -> None:
        for v in self.views:
            v.set_log(log)


class EventPanel:
    """Single muon events of the newest raw data, on demand: a button reads the newest messages of the hits
    topic (:func:`dtlive.ui.live.read_latest_hits`), reconstructs their events and shows them in an
    :class:`~dtlive.ui.event_display.EventDisplay` (collapsed until opened; it costs nothing until asked).

    >>> from dtlive.config import load_config
    >>> panel = EventPanel("127.0.0.1:9", load_config({}, env={}))
    >>> panel.widget.get_title(0), panel.status.value
    ('Muon events (newest data)', 'press the button to read the newest hits')
    """

    def __init__(self, bootstrap: str, cfg, rows: int = 20_000):
        from dtlive.ui.event_display import EventDisplay

        self.bootstrap, self.cfg, self.rows = bootstrap, cfg, rows
        self.display = EventDisplay(capacity=50)
        self.button = W.Button(description="Show the newest events", icon="refresh")
        self.status = W.HTML("press the button to read the newest hits")
        self.status.add_class("dtlive-events-status")
        self.button.on_click(lambda _: self.load())
        body = W.VBox([W.HBox([self.button, self.status]), self.display.widget])
        self.widget = W.Accordion(children=[body], selected_index=None)
        self.widget.set_title(0, "Muon events (newest data)")
        self.widget.add_class("dtlive-events")

    def load(self) -> int:
        """Read, reconstruct and show the newest events; return how many were shown."""
        from dtlive.ui.event_display import latest_events
        from dtlive.ui.live import read_latest_hits

        self.status.value = "reading..."
        try:
            hits = read_latest_hits(self.bootstrap, self.cfg.hits_topic, self.rows, kafka=self.cfg.kafka,
                                    default_format=self.cfg.default_format)
        except Exception as exc:  # noqa: BLE001 - the page says why, the dashboard goes on
            self.status.value = f"could not read {html.escape(self.cfg.hits_topic)}: {html.escape(str(exc))}"
            return 0
        events = latest_events(hits, last=20)
        if events:
            self.display.add_events(events)
        self.status.value = (f"{len(events)} events with segments in two chambers or more, from the newest "
                             f"{len(hits):,} hits of {html.escape(self.cfg.hits_topic)}")
        return len(events)


class Dashboard(W.VBox):
    """The live detector: status, time series, per-chamber plots and controls, in one widget.

    ``Dashboard()`` finds the broker like every dtlive command (``DTLIVE_BOOTSTRAP`` or the
    embedded broker); it shows the newest ``backfill`` windows at once, then updates live.
    ``start=False`` builds it without a feed (feed it with :meth:`add_messages`).

    >>> Dashboard(bootstrap="127.0.0.1:9092")   # doctest: +SKIP
    """

    def __init__(self, bootstrap: str | None = None, topic: str | None = None, backfill: int = 30,
                 rolling: int = 10, chambers=(0, 1, 2, 3), start: bool = True, status_every_s: float = 1.0,
                 quality_topic: str | None = None, stale_after_s: float = 10.0):
        from dtlive.config import load_config

        cfg = load_config({})
        if bootstrap is None:
            from dtlive.kafka.clients import NoBrokerError, resolve_bootstrap

            try:
                bootstrap, _ = resolve_bootstrap(cfg)
            except NoBrokerError:
                bootstrap = "127.0.0.1:9092"
        self.bootstrap = bootstrap
        self.topic = topic or cfg.monitor_topic
        self.live = LiveWindows(rolling=rolling)
        self.stale_after_s = stale_after_s  # no new window for this long: the badge says so
        self._shown: dict | None = None  # status of the window the plots show (frozen while paused)
        self._lock = threading.RLock()
        self.updates = 0
        self.update_ms: list[float] = []
        empty = self.live.view("last")

        self.header = W.HTML(layout=W.Layout(width="100%"))
        self.header.add_class("dtlive-status")
        self.pause_button = W.ToggleButton(description="Pause", icon="pause",
                                           tooltip="freeze the plots; data keeps coming")
        self.pause_button.add_class("dtlive-pause")
        self.view_mode = W.ToggleButtons(options=list(VIEWS), value="last", description="view",
                                    tooltips=["the newest window", "sum since the last reset", "sum of the last N"])
        self.view_mode.style.button_width = "90px"
        self.view_mode.add_class("dtlive-mode")
        self.rolling_n = W.BoundedIntText(value=rolling, min=1, max=self.live.history, description="N",
                                        layout=W.Layout(width="110px"), style={"description_width": "20px"})
        self.reset_button = W.Button(description="Reset", icon="undo", tooltip="restart the cumulative view")
        self.reset_button.add_class("dtlive-reset")
        self.log_box = W.Checkbox(value=False, description="log scale", indent=False, layout=W.Layout(width="100px"))
        self.log_box.add_class("dtlive-log")
        self.chamber_boxes = [W.Checkbox(value=c in chambers, description=f"chamber {c}", indent=False,
                                         layout=W.Layout(width="95px")) for c in range(det.N_CHAMBERS)]
        controls = W.HBox([self.pause_button, self.view_mode, self.rolling_n, self.reset_button, self.log_box,
                           *self.chamber_boxes],
                          layout=W.Layout(flex_flow="row wrap", align_items="center"))

        series = self.live.series()
        self.timeseries = TimeSeriesView(self._series_dict(series), series["time"],
                                         title="hits per window: total and per chamber", css="dtlive-timeseries")
        self.panels = [ChamberPanel(empty, c) for c in range(det.N_CHAMBERS)]
        for c, panel in enumerate(self.panels):
            panel.widget.layout.display = None if c in chambers else "none"

        self.pause_button.observe(self._on_pause, "value")
        self.view_mode.observe(lambda _: self.refresh(), "value")
        self.rolling_n.observe(self._on_rolling, "value")
        self.reset_button.on_click(lambda _: self.reset())
        self.log_box.observe(self._on_log, "value")
        for c, box in enumerate(self.chamber_boxes):
            box.observe(lambda ch, c=c: self._show_chamber(c, ch["new"]), "value")

        self.alerts = AlertPanel()
        self.services = HealthPanel()
        self.verdicts = LiveVerdicts()  # the newest dtlive.quality/2 verdict, shown in the strip at the top
        self.verdict_strip = W.HTML(verdict_html(self.verdicts.summary()), layout=W.Layout(width="100%"))
        self.verdict_strip.add_class("dtlive-verdict-strip")
        self.events = EventPanel(self.bootstrap, cfg)
        super().__init__([self.verdict_strip, self.header, self.services.widget, controls, self.timeseries.figure,
                          self.alerts.widget, *[p.widget for p in self.panels], self.events.widget])
        self.add_class("dtlive-dashboard")
        self.feed = ResultsFeed(self.bootstrap, self.add_messages, topic=self.topic, backfill=backfill,
                                kafka=cfg.kafka)
        self.periods: list[dict] = []  # data-quality periods from dt.quality, shaded on the time series
        self.alerts_feed = ResultsFeed(self.bootstrap, self._add_alerts, topic=cfg.analyses_topic, backfill=50,
                                       kafka=cfg.kafka, parse=parse_analysis)
        self.quality_feed = ResultsFeed(self.bootstrap, self.add_periods, topic=quality_topic or cfg.quality_topic,
                                        backfill=500, kafka=cfg.kafka, parse=parse_quality)
        self.status_feed = ResultsFeed(self.bootstrap, self.add_heartbeats, topic=cfg.status_topic, backfill=100,
                                       kafka=cfg.kafka, parse=parse_status)
        self._status_stop = threading.Event()
        self._status_every_s = status_every_s
        self._refresh_status()
        if start:
            self.start()

    # --- data in -------------------------------------------------------------------------------------------
    def add_messages(self, messages: list[dict]) -> None:
        """Take parsed result messages (the feed calls this from its thread) and redraw unless paused."""
        with self._lock:
            new = self.live.add(messages)
            if new and not self.pause_button.value:
                self.refresh()
            else:
                self._refresh_status()

    def add_heartbeats(self, messages: list[dict]) -> None:
        """Take ``dtlive.status/1`` heartbeats (from the status feed's thread) and redraw the service health."""
        with self._lock:
            self.services.add(messages)

    def _add_alerts(self, messages: list[dict]) -> None:
        with self._lock:
            self.alerts.add(messages)

    def add_periods(self, messages: list[dict]) -> None:
        """Take quality messages (from the quality feed's thread): ``dtlive.quality/1`` periods are shaded, the
        newest ``dtlive.quality/2`` verdict fills the summary strip."""
        with self._lock:
            if self.verdicts.add(messages):
                self.verdict_strip.value = verdict_html(self.verdicts.summary())
            periods = [m for m in messages if m.get("schema") == QUALITY_SCHEMA]
            if not periods:
                return
            self.periods += periods
            del self.periods[:-500]
            self._shade()

    def _shade(self) -> None:
        from dtlive.core.messages import utc_seconds

        self.timeseries.shade([(utc_seconds(p["start"]), utc_seconds(p["end"])) for p in self.periods
                               if p.get("kind", "bad") == "bad"])

    # --- drawing --------------------------------------------------------------------------------------------
    @staticmethod
    def _series_dict(series: dict) -> dict:
        out = {"total": series["total_hits"]}
        out.update({f"chamber {c}": series["hits_per_chamber"][:, c] for c in range(det.N_CHAMBERS)})
        return out

    def refresh(self) -> None:
        """Redraw every plot from the current view (only trait values change)."""
        with self._lock:
            t0 = time.perf_counter()
            ds = self.live.view(self.view_mode.value)
            for c, panel in enumerate(self.panels):
                panel.update(ds, c)
            series = self.live.series()
            self.timeseries.update(series["time"], self._series_dict(series))
            if self.periods:
                self._shade()
            self._refresh_status()
            self.updates += 1
            self.update_ms.append((time.perf_counter() - t0) * 1000)
            del self.update_ms[:-1000]

    def _refresh_status(self) -> None:
        status = self.live.status(stale_after_s=self.stale_after_s)
        newest = None
        if self.pause_button.value and self._shown is not None:  # the plots are frozen: say which window they show
            newest = status.get("window_id")
            status = {**self._shown, "state": status["state"], "since_last_s": status.get("since_last_s", 0.0)}
        elif not self.pause_button.value:
            self._shown = status
        feed = getattr(self, "feed", None)
        view = self.view_mode.value if self.view_mode.value != "rolling" else f"rolling {self.live.rolling}"
        self.header.value = status_html(status, self.bootstrap, feed.broker_ok if feed else None,
                                        feed.error if feed else None, self.pause_button.value, view, newest=newest)

    # --- controls -------------------------------------------------------------------------------------------
    def _on_pause(self, change) -> None:
        paused = change["new"]
        self.pause_button.description, self.pause_button.icon = ("Resume", "play") if paused else ("Pause", "pause")
        if not change["new"]:
            self.refresh()
        else:
            self._refresh_status()

    def _on_log(self, change) -> None:
        for p in self.panels:
            p.set_log(change["new"])

    def _on_rolling(self, change) -> None:
        with self._lock:
            self.live.set_rolling(change["new"])
        self.refresh()

    def _show_chamber(self, chamber: int, show: bool) -> None:
        self.panels[chamber].widget.layout.display = None if show else "none"

    def reset(self) -> None:
        """Restart the cumulative view from zero."""
        with self._lock:
            self.live.reset()
        self.refresh()

    # --- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> Dashboard:
        """Start the background feeds and the status clock."""
        self.feed.start()
        self.quality_feed.start()
        self.alerts_feed.start()
        self.status_feed.start()
        self._status_stop.clear()
        threading.Thread(target=self._status_loop, name="dtlive-dashboard-status", daemon=True).start()
        return self

    def _status_loop(self) -> None:
        while not self._status_stop.wait(self._status_every_s):
            with self._lock:
                self._refresh_status()
                self.services.refresh()

    def stop(self) -> None:
        """Stop the feed and the status clock (the widget stays as it is)."""
        self._status_stop.set()
        self.feed.stop()
        self.quality_feed.stop()
        self.alerts_feed.stop()
        self.status_feed.stop()
