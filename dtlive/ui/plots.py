"""The dashboard's plots (bqplot): histograms with a reference overlay, the chamber map and time series.

Each view owns its marks, scales and axes and redraws from plain numpy arrays. A redraw sends a mark only
when its values changed (an unchanged array is not sent again) and batches a mark's changes in one message
(``hold_sync``): in a kernel every widget message costs CPU, so fewer messages is a lighter dashboard.

- :class:`HistogramView`: bars of a 1-D histogram, its reference (scaled to the same entries) as a black step
  line on top, a log or linear y axis;
- :class:`OccupancyView`: one chamber's hits per channel as a :class:`HistogramView` and as the chamber map
  (4 layers x 16 cells, staggered as the wires are), with a colour bar (HTML beside the map: the ramp, round
  ticks and a label);
- :class:`TimeSeriesView`: lines against the time of day (UTC), bad and warning periods shaded behind them,
  the legend above the plot (never over the data).

>>> from dtlive.core.products import compute_products
>>> from dtlive.core.rows import Rows
>>> ds = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
>>> view = HistogramView(ds.drift_time_ns.sel(chamber=0), title="drift time")
>>> occ = OccupancyView(ds.channel_occupancy.sel(chamber=0))
>>> int(occ.bars.y.sum()), len(occ.cells.x)
(1, 64)

Long on purpose: the three views share their axes, tick and reference-overlay helpers, which belong with them.
"""

from __future__ import annotations

import html
from collections.abc import Hashable

import bqplot as bq
import ipywidgets as W
import numpy as np
import xarray as xr

from dtlive.core import detector as det

CHAMBER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
REFERENCE_COLOR = "#212121"
PERIOD_COLORS = {"bad": "#c62828", "warning": "#f9a825"}
CHANNEL_TICKS = np.array([0, 16, 32, 48, 64])
COUNT_FORMAT = "~s"  # d3: 3, 120, 1.2k, 3.4M (no trailing zeros)
LOG_FLOOR = 0.5  # a log axis starts here; empty bins are drawn at it
COUNT_FLOOR = 4.0  # a count axis spans at least 0..4 (whole-number ticks)
_MARGIN = {"top": 26, "bottom": 40, "left": 58, "right": 14}


def make_figure(marks, axes, title: str, width: str = "320px", height: str = "220px", css: str | None = None,
                margin: dict | None = None) -> bq.Figure:
    """A bqplot Figure of the dashboard's style (small title, room for axis labels).

    >>> make_figure([], [], "empty", css="my-plot").title
    'empty'
    """
    fig = bq.Figure(marks=marks, axes=axes, title=title, fig_margin={**_MARGIN, **(margin or {})},
                    layout=W.Layout(width=width, height=height), title_style={"font-size": "13px"},
                    padding_y=0.0)
    if css:
        fig.add_class(css)
    return fig


def bin_edges(centres) -> np.ndarray:
    """The edges around bin centres: midpoints between them, the outer ones half a bin out.

    >>> bin_edges([1, 2, 3]).tolist(), bin_edges([5.0]).tolist()
    ([0.5, 1.5, 2.5, 3.5], [4.5, 5.5])
    """
    c = np.asarray(centres, float)
    if c.size < 2:
        return np.array([c[0] - 0.5, c[0] + 0.5]) if c.size else np.array([0.0, 1.0])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def _changed(old: np.ndarray | None, new: np.ndarray) -> bool:
    return old is None or old.shape != new.shape or not np.array_equal(old, new, equal_nan=new.dtype.kind == "f")


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> np.ndarray:
    """Round tick values from ``lo`` to ``hi`` (outward): about ``count`` of them, 1, 2, 2.5 or 5 times a power
    of ten apart (whole numbers only with ``integer``).

    >>> nice_ticks(0, 47).tolist(), nice_ticks(0, 3, integer=True).tolist(), nice_ticks(-100, 500, 7).tolist()
    ([0.0, 20.0, 40.0, 60.0], [0.0, 1.0, 2.0, 3.0], [-100.0, 0.0, 100.0, 200.0, 300.0, 400.0, 500.0])
    """
    raw = max(hi - lo, 1e-9) / max(count - 1, 1)
    mag = 10.0 ** np.floor(np.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * mag for m in steps if m * mag >= raw * 0.999)
    step = max(1.0, float(np.round(step))) if integer else step
    start, stop = np.floor(lo / step + 1e-9) * step, np.ceil(hi / step - 1e-9) * step
    return np.round(np.arange(start, stop + step / 2, step), 9)


class NiceRange:
    """A linear axis from 0 to a round top with round ticks, moved only when the data leaves it: at once above
    the top, after ``shrink_after`` draws in a row below 40 % of it. The axis stays put while the data fluctuates
    (a burst of noise does not make it jump back and forth), and then costs no message.

    >>> scale = bq.LinearScale(min=0)
    >>> axis = bq.Axis(scale=scale)
    >>> r = NiceRange(scale, axis, shrink_after=2)
    >>> r.fit(47), scale.max, axis.tick_values.tolist()
    (True, 60.0, [0.0, 20.0, 40.0, 60.0])
    >>> r.fit(30), r.fit(12), r.fit(12), scale.max
    (False, False, True, 15.0)
    """

    def __init__(self, scale, axis, integer: bool = True, floor: float = COUNT_FLOOR, on_change=None,
                 shrink_after: int = 10):
        self.scale, self.axis, self.integer, self.floor = scale, axis, integer, floor
        self.on_change = on_change  # called with the new ticks (e.g. to redraw a colour bar)
        self.shrink_after = shrink_after
        self.top: float | None = None
        self._low = 0  # draws in a row far below the top

    def fit(self, top: float) -> bool:
        """Fit the axis to data reaching ``top``; whether it moved."""
        top = max(float(top) if np.isfinite(top) else 0.0, self.floor)
        if self.top is not None and top <= self.top:
            self._low = self._low + 1 if top < 0.4 * self.top else 0
            if self._low < self.shrink_after:
                return False
        self._low = 0
        ticks = nice_ticks(0.0, top, 5, self.integer)
        self.top = float(ticks[-1])
        with self.scale.hold_sync():
            self.scale.min, self.scale.max = 0.0, self.top
        if self.axis is not None:
            self.axis.tick_values = ticks
        if self.on_change is not None:
            self.on_change(ticks)
        return True


VIRIDIS = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b",
           "#fde725")  # the map's colour scheme, bottom to top


def count_text(value: float) -> str:
    """A count as a tick label: ``40``, ``1.2k``, ``3M``.

    >>> count_text(40.0), count_text(1200.0), count_text(3e6)
    ('40', '1.2k', '3M')
    """
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{unit}"
    return f"{value:.3g}"


def colorbar_html(ticks, label: str, height: int = 139) -> str:
    """A vertical colour bar as HTML: the viridis ramp (first tick at the bottom), its tick labels and a label.

    >>> html_bar = colorbar_html([0, 10, 20], "hits / channel")
    >>> "linear-gradient(to top, #440154" in html_bar and ">20<" in html_bar and "hits / channel" in html_bar
    True
    """
    lo, hi = float(ticks[0]), float(ticks[-1])
    labels = "".join(
        f"<div style='position:absolute;left:16px;bottom:{(float(t) - lo) / (hi - lo or 1) * height - 7:.0f}px;"
        f"font-size:11px;color:#333'>{count_text(float(t))}</div>" for t in ticks)
    return (f"<div class='dtlive-colorbar' style='position:relative;height:{height}px;width:62px;"
            "font-family:sans-serif'>"
            f"<div class='dtlive-colorbar-ramp' style='position:absolute;left:0;bottom:0;width:12px;"
            f"height:{height}px;background:linear-gradient(to top, {', '.join(VIRIDIS)})'></div>{labels}"
            f"<div class='dtlive-colorbar-label' style='position:absolute;left:44px;bottom:0;height:{height}px;"
            "writing-mode:vertical-rl;transform:rotate(180deg);text-align:center;font-size:12px;color:#333'>"
            f"{html.escape(label)}</div></div>")


def _dim_label(da: xr.DataArray, dim: Hashable) -> str:
    coord = da[dim] if dim in da.coords else None
    attrs = coord.attrs if coord is not None else {}
    label = str(attrs.get("long_name", dim)).replace(" (bin centre)", "")
    units = attrs.get("units")
    return f"{label} [{units}]" if units and units != "1" else label


class HistogramView:
    """A 1-D histogram against its bin centres, the reference over it as a black step line; ``update`` redraws.

    Bars (``bars``, the reference ``ref_line``: two marks), or with ``steps=True`` a filled step line and the
    reference in one mark (``bars`` and ``ref_line`` are then the same ``Lines``): one message per redraw
    instead of two. ``set_reference(values)`` overlays a reference histogram (same bins), scaled on every redraw
    to the entries shown; ``set_log`` switches the y axis (log bars stand on 0.5, where empty bins are drawn).
    :meth:`drawn` gives back what is drawn, per bin.

    >>> import xarray as xr
    >>> v = HistogramView(xr.DataArray([1, 4, 2], dims="x", coords={"x": [0, 1, 2]}), title="demo")
    >>> v.update(v.data * 2); v.bars.y.tolist()
    [2.0, 8.0, 4.0]
    >>> v.set_reference(np.array([1.0, 1.0, 2.0])); v.ref_line.y.tolist()  # scaled to the 14 entries shown
    [3.5, 3.5, 7.0, 7.0]
    >>> s = HistogramView(v.data, steps=True); s.set_reference(np.array([1.0, 1.0, 2.0]))
    >>> [a.tolist() for a in s.drawn()], s.bars is s.ref_line
    ([[2.0, 8.0, 4.0], [3.5, 3.5, 7.0]], True)
    """

    def __init__(self, da: xr.DataArray, title: str = "", log: bool = False, color: str = "#1f77b4",
                 css: str | None = None, y_label: str = "entries / bin", x_ticks=None, x_label: str | None = None,
                 steps: bool = False, **size):
        if da.ndim != 1:
            raise ValueError(f"HistogramView wants a 1-D DataArray, got dims {da.dims}")
        dim = da.dims[0]
        self._template = da
        self._steps = steps
        self._log, self._color = log, color
        self._reference: np.ndarray | None = None
        self._sent_y: np.ndarray | None = None
        self._sent_ref: np.ndarray | None = None
        self.values = np.asarray(da.values, float)
        centres = np.asarray(da[dim].values if dim in da.coords else np.arange(da.size), float)
        integer = np.issubdtype((da[dim] if dim in da.coords else np.arange(1)).dtype, np.integer)
        self.x, self.edges = centres, bin_edges(centres)
        self.x_scale = bq.LinearScale(min=float(self.edges[0]), max=float(self.edges[-1]))
        if x_ticks is None:
            x_ticks = nice_ticks(self.edges[0], self.edges[-1], 7, integer)
            x_ticks = x_ticks[(x_ticks >= self.edges[0]) & (x_ticks <= self.edges[-1])]
        self.x_axis = bq.Axis(scale=self.x_scale, label=x_label or _dim_label(da, dim),
                              tick_values=np.asarray(x_ticks, float), tick_format="d" if integer else "~g",
                              grid_lines="none")
        self.y_label = y_label
        self.bars, self.ref_line, self.y_axis = self._make_marks()
        self.figure = self._bars_figure = make_figure(self._marks(), [self.x_axis, self.y_axis],
                                                      title or str(da.name), css=css, **size)
        self._draw(self.values)

    def _marks(self) -> list:
        return [self.bars] if self._steps else [self.bars, self.ref_line]

    @property
    def data(self) -> xr.DataArray:
        """What is drawn, as a DataArray like the one the view was made with."""
        return self._template.copy(data=self.values.astype(self._template.dtype))

    def _make_marks(self):
        y_scale = (bq.LogScale(min=LOG_FLOOR) if self._log
                   else bq.LinearScale(min=0, max=COUNT_FLOOR, allow_padding=False))
        scales = {"x": self.x_scale, "y": y_scale}
        base = LOG_FLOOR if self._log else 0.0
        axis = bq.Axis(scale=y_scale, side="left", label=self.y_label, tick_format=COUNT_FORMAT,
                       grid_color="#e0e0e0", label_offset="46px")  # log: d3's ticks (1, 2, 5, 10, ...)
        self._range = None if self._log else NiceRange(y_scale, axis)
        self._sent_y = self._sent_ref = None
        if self._steps:  # data (filled) and reference (NaN while none: not drawn) in one mark
            y = np.full((2, self.edges.size), base)
            y[1] = np.nan
            lines = bq.Lines(x=self.edges, y=y, scales=scales, colors=[self._color, REFERENCE_COLOR],
                             interpolation="step-after", fill="bottom", fill_colors=[self._color, self._color],
                             fill_opacities=[0.4, 0.0], stroke_width=1.5, preserve_domain={"x": True})
            return lines, lines, axis
        bars = bq.Bars(x=self.x, y=np.full(self.x.size, base), scales=scales, colors=[self._color], padding=0.08,
                       base=base,
                       tooltip=bq.Tooltip(fields=["x", "y"], labels=[self.x_axis.label, self.y_label],
                                          formats=["~g", COUNT_FORMAT]))
        ref = bq.Lines(x=self.edges, y=np.full(self.edges.size, base), scales=scales, colors=[REFERENCE_COLOR],
                       interpolation="step-after", stroke_width=1.5, visible=False,
                       preserve_domain={"x": True})
        return bars, ref, axis

    def _floor(self, values: np.ndarray) -> np.ndarray:
        return np.maximum(values, LOG_FLOOR) if self._log else values

    def update(self, da) -> None:
        """Draw new values (a DataArray over the same bins, or a plain array)."""
        self._draw(np.asarray(getattr(da, "values", da), float))

    def _scaled_reference(self) -> np.ndarray | None:
        """The reference scaled to the entries shown (None: nothing to draw)."""
        ref, total = self._reference, float(self.values.sum())
        return None if ref is None or total <= 0 else self._floor(ref * (total / ref.sum()))

    def _draw(self, values: np.ndarray) -> None:
        self.values = values
        y = self._floor(values)
        ref = self._scaled_reference()
        if self._range is not None:
            self._range.fit(max(float(values.max()) if values.size else 0.0, float(ref.max()) if ref is not None
                                else 0.0))
        if self._steps:
            both = np.array([np.append(y, y[-1]),
                             np.full(y.size + 1, np.nan) if ref is None else np.append(ref, ref[-1])])
            if _changed(self._sent_y, both):
                self.bars.y = both
                self._sent_y = both
            return
        if _changed(self._sent_y, y):
            self.bars.y = y
            self._sent_y = y
        self._draw_reference(ref)

    def set_reference(self, values: np.ndarray | None) -> None:
        """Overlay this reference histogram (None or an empty one: no overlay)."""
        ref = None if values is None else np.asarray(values, float)
        self._reference = ref if ref is not None and ref.shape == self.x.shape and ref.sum() > 0 else None
        self._draw(self.values)

    def _draw_reference(self, scaled: np.ndarray | None) -> None:
        if scaled is None:
            if self.ref_line.visible:
                self.ref_line.visible = False
            return
        y = np.append(scaled, scaled[-1])
        if _changed(self._sent_ref, y) or not self.ref_line.visible:
            with self.ref_line.hold_sync():
                self.ref_line.y = y
                self.ref_line.visible = True
            self._sent_ref = y

    def drawn(self) -> tuple[np.ndarray, np.ndarray | None]:
        """What is drawn per bin: (the histogram, the scaled reference or None when none is drawn)."""
        if self._steps:
            data, ref = np.asarray(self.bars.y, float)[:, :-1]
            return data, None if np.isnan(ref).all() else ref
        return np.asarray(self.bars.y, float), np.asarray(self.ref_line.y, float)[:-1] if self.ref_line.visible \
            else None

    def set_bins(self, centres: np.ndarray) -> None:
        """Other bins (the processor's binning changed): new x, the reference dropped until set again."""
        self.x, self.edges = np.asarray(centres, float), bin_edges(centres)
        self._reference = None
        with self.x_scale.hold_sync():
            self.x_scale.min, self.x_scale.max = float(self.edges[0]), float(self.edges[-1])
        self.bars, self.ref_line, self.y_axis = self._make_marks()
        self._bars_figure.marks = self._marks()
        self._bars_figure.axes = [self.x_axis, self.y_axis]

    def set_log(self, log: bool) -> None:
        """Switch the y axis between linear and log (new marks: bqplot bars do not survive a scale swap)."""
        if log == self._log:
            return
        self._log = log
        self.bars, self.ref_line, self.y_axis = self._make_marks()
        with self._bars_figure.hold_sync():
            self._bars_figure.marks = self._marks()
            self._bars_figure.axes = [self.x_axis, self.y_axis]
        self._draw(self.values)

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.figure)


class OccupancyView(HistogramView):
    """One chamber's hits per channel: bars over the chamber's 64 channels and the chamber map.

    The map puts each wire where it is: 16 cells per layer, layers 1 (bottom) to 4 (top), alternate layers
    shifted by half a cell; the colour bar says how many hits, the tooltip which channel.

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> ds = compute_products(Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 0], channel=[3, 3, 7], orbit=[1, 2, 3],
    ...                                         bx=[0, 0, 0], tdc=[0, 0, 0]))
    >>> occ = OccupancyView(ds.channel_occupancy.sel(chamber=0), title="chamber 0")
    >>> occ.bars.y[[3, 7]].tolist(), occ.cells.x[[3, 7]].tolist(), occ.cells.y[[3, 7]].tolist()  # channels 3, 7
    ([2.0, 1.0], [-294.0, -252.0], [-19.5, -19.5])
    >>> str(occ.cells.names[7])
    'channel 7 (TDC 7), layer 1, cell 1'
    >>> occ.update(ds.channel_occupancy.sel(chamber=0) * 0); float(occ.cells.color.max())
    0.0
    """

    def __init__(self, da: xr.DataArray, title: str = "", log: bool = False, color: str = "#1f77b4",
                 css: str | None = None, **size):
        if da.dims != ("channel",):
            raise ValueError(f"OccupancyView wants a DataArray over 'channel', got dims {da.dims}")
        self._sent_color: np.ndarray | None = None
        super().__init__(da, title=f"{title} hits per channel".strip(), log=log, color=color,
                         css=f"{css}-bars" if css else None, y_label="hits / channel", x_ticks=CHANNEL_TICKS,
                         x_label="channel", **size)
        self.bars_figure = self.figure
        channels = da.channel.values
        tdc = da.tdc_channel.values if "tdc_channel" in da.coords else channels
        x_mm, z_mm = det.wire_position_mm(channels)
        names = [f"channel {c} (TDC {t}), layer {la}, cell {ce}"
                 for c, t, la, ce in zip(channels.tolist(), np.asarray(tdc).tolist(),
                                         det.layer_of(channels).tolist(), det.cell_of(channels).tolist(), strict=True)]
        self.color_scale = bq.ColorScale(scheme="viridis", min=0, max=COUNT_FLOOR)
        self.cells = bq.Scatter(
            x=x_mm, y=z_mm, color=np.zeros(channels.size), names=np.array(names), display_names=False,
            marker="square", default_size=150, stroke="#9e9e9e",
            scales={"x": bq.LinearScale(min=-340, max=370), "y": bq.LinearScale(min=-28, max=28),
                    "color": self.color_scale},
            tooltip=bq.Tooltip(fields=["name", "color"], labels=["", "hits"], formats=["", COUNT_FORMAT]),
        )
        z_ticks = np.array(sorted(det.LAYER_Z_MM.values()))
        self.color_bar = W.HTML(colorbar_html([0, COUNT_FLOOR], "hits / channel"),
                                layout=W.Layout(width="64px", min_width="64px", margin=f"{_MARGIN['top']}px 0 0 0"))
        if css:
            self.color_bar.add_class(f"{css}-colorbar")
        self._color_range = NiceRange(self.color_scale, None, on_change=self._draw_color_bar)
        self.map_figure = make_figure(
            [self.cells],
            [bq.Axis(scale=self.cells.scales["x"], label="x [mm]", tick_values=np.arange(-300, 301, 150),
                     tick_format="d", grid_lines="none"),
             bq.Axis(scale=self.cells.scales["y"], side="left", label="z [mm]", tick_values=z_ticks,
                     tick_format=".1f", grid_lines="none", label_offset="46px")],
            f"{title} map ({det.N_LAYERS} layers x {det.CELLS_PER_LAYER} cells)".strip(),
            css=f"{css}-map" if css else None, **{**size, "width": "auto"})
        self.map_figure.layout.flex = "1 1 0"
        self.map_box = W.HBox([self.map_figure, self.color_bar], layout=W.Layout(width=size.get("width", "320px")))
        self.widget = W.HBox([self.bars_figure, self.map_box])
        self._draw(self.values)

    def _draw_color_bar(self, ticks: np.ndarray) -> None:
        self.color_bar.value = colorbar_html(ticks, "hits / channel")

    def _draw(self, values: np.ndarray) -> None:
        super()._draw(values)
        if not hasattr(self, "cells"):
            return
        self._color_range.fit(float(values.max()) if values.size else 0.0)  # sends only when the range moves
        if _changed(self._sent_color, values):
            self.cells.color = values
            self._sent_color = values

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget)


def legend_html(items: list[tuple[str, str, str]], css: str = "dtlive-legend") -> str:
    """A legend as HTML, to sit beside a plot instead of over its data: ``(label, colour, "line" | "box")``.

    >>> "chamber 0" in legend_html([("chamber 0", "#1f77b4", "line")])
    True
    """
    def swatch(color: str, kind: str) -> str:
        if kind == "box":
            return (f"<span style='display:inline-block;width:14px;height:10px;background:{color};opacity:.35;"
                    f"border:1px solid {color};vertical-align:middle'></span>")
        return (f"<span style='display:inline-block;width:18px;height:0;border-top:2px solid {color};"
                "vertical-align:middle'></span>")
    return (f"<div class='{css}' style='font-family:sans-serif;font-size:12px;color:#333'>"
            + "".join(f"<span style='margin-right:14px;white-space:nowrap'>{swatch(c, k)} {html.escape(t)}</span>"
                      for t, c, k in items) + "</div>")


class TimeSeriesView:
    """Lines against the time of day (UTC); ``update(time, {label: values})`` redraws, ``shade_periods`` shades.

    The legend is HTML above the plot (:attr:`widget` holds both).

    >>> t = np.array(["2024-01-01T00:00:00", "2024-01-01T00:00:02"], "datetime64[ms]")
    >>> v = TimeSeriesView({"total": [3, 4]}, t, title="hits")
    >>> v.update(t, {"total": [5, 6]}); v.lines.y.tolist()
    [5.0, 6.0]
    >>> v.shade_periods([(1704067200.0, 1704067201.0, "bad")]); v.spans.fill_colors
    ['#c62828']
    """

    def __init__(self, series: dict[str, np.ndarray], time: np.ndarray, title: str = "", colors=None,
                 y_label: str = "hits per window", css: str | None = None, **size):
        self.labels = list(series)
        self.colors = list(colors or ["black", *CHAMBER_COLORS])[: len(self.labels)]
        self.x_scale, self.y_scale = bq.DateScale(), bq.LinearScale(min=0)
        self._sent: tuple[np.ndarray, np.ndarray] | None = None
        self.lines = bq.Lines(x=np.array([], "datetime64[ms]"), y=np.zeros((len(self.labels), 0)),
                              scales={"x": self.x_scale, "y": self.y_scale}, labels=self.labels,
                              display_legend=False, colors=self.colors, stroke_width=1.5)
        self.spans = bq.Lines(x=np.array([], "datetime64[ms]"), y=np.array([], float),
                              scales={"x": self.x_scale, "y": bq.LinearScale(min=0, max=1)}, fill="inside",
                              colors=[PERIOD_COLORS["bad"]], fill_colors=[PERIOD_COLORS["bad"]],
                              fill_opacities=[0.25], opacities=[0.0], preserve_domain={"x": True})
        # about one "HH:MM:SS" label per 130 px of a half-page plot: labels never run into each other
        axes = [bq.Axis(scale=self.x_scale, label="time of day (UTC)", tick_format="%H:%M:%S", grid_lines="none",
                        num_ticks=6),
                bq.Axis(scale=self.y_scale, side="left", label=y_label, tick_format=COUNT_FORMAT,
                        grid_color="#e0e0e0", label_offset="46px")]
        self._range = NiceRange(self.y_scale, axes[1], integer=False, floor=1.0)
        size = {"width": "100%", "height": "240px", **size}
        # room on the right for the newest time label, centred on the last tick
        self.figure = make_figure([self.spans, self.lines], axes, title, css=css, margin={"right": 36}, **size)
        items = [(label, c, "line") for label, c in zip(self.labels, self.colors, strict=True)]
        items += [(f"{kind} period", c, "box") for kind, c in PERIOD_COLORS.items()]
        self.legend = W.HTML(legend_html(items))
        self.widget = W.VBox([self.legend, self.figure], layout=W.Layout(width=size["width"]))
        self.update(time, series)

    def _stack(self, series: dict) -> np.ndarray:
        return np.array([np.asarray(series[k], float) for k in self.labels]).reshape(len(self.labels), -1)

    def update(self, time: np.ndarray, series: dict[str, np.ndarray]) -> None:
        x, y = np.asarray(time, "datetime64[ms]"), self._stack(series)
        if len(x) == 1:  # bqplot squeezes a single point into the wrong shape: draw it as a zero-length line
            x, y = np.repeat(x, 2), np.repeat(y, 2, axis=1)
        if self._sent is not None and not _changed(self._sent[0], x) and not _changed(self._sent[1], y):
            return
        finite = y[np.isfinite(y)]
        self._range.fit(float(finite.max()) if finite.size else 0.0)
        with self.lines.hold_sync():
            self.lines.x = x
            self.lines.y = y
        self._sent = (x, y)

    def shade_periods(self, periods: list[tuple[float, float, str]]) -> None:
        """Shade time spans ``(start, end, kind)`` (UNIX seconds; kind ``bad`` or ``warning``) behind the lines."""
        periods = [p for p in periods if np.isfinite(p[0]) and np.isfinite(p[1])]
        xs = [np.array([a, a, b, b], "float64") * 1000 for a, b, _ in periods]
        colors = [PERIOD_COLORS.get(kind, PERIOD_COLORS["bad"]) for _, _, kind in periods] or [PERIOD_COLORS["bad"]]
        with self.spans.hold_sync():
            self.spans.x = np.array(xs).astype("datetime64[ms]") if xs else np.array([], "datetime64[ms]")
            self.spans.y = np.array([[0, 1, 1, 0]] * len(xs), float) if xs else np.array([], float)
            self.spans.fill_colors = colors
            self.spans.fill_opacities = [0.25] * len(colors)
            self.spans.colors = colors

    def shade(self, spans: list[tuple[float, float]], color: str = PERIOD_COLORS["bad"]) -> None:
        """Shade time spans (UNIX seconds) as bad periods (``color`` picks another shade)."""
        self.shade_periods([(a, b, "bad") for a, b in spans])
        if color != PERIOD_COLORS["bad"] and spans:
            self.spans.fill_colors = self.spans.colors = [color] * len(spans)

    def _ipython_display_(self):  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget)
