"""The live dashboard (ipywidgets + bqplot) for notebooks and Voilà: verdicts first, details below.

Top to bottom: the summary strip (the detector's and the four chambers' quality status side by side), a slot
for the alarms (:attr:`Dashboard.alarm_slot`), the status line (LIVE, BEHIND, NO NEW DATA, PAUSED, ...), the
services' health, the controls; then the hit rates against the time of day beside the astrophysical alerts,
and the four chambers side by side (:class:`ChamberPanel`: hits per channel and the chamber map, drift time,
multiplicity, scintillator-triggered hits; the reference drawn over every histogram); the muon event display
last, collapsed. The plots are :mod:`dtlive.ui.plots`, the text panels :mod:`dtlive.ui.panels`; both are
re-exported here.

One update redraws only the visible chambers, sends a mark only when its values changed, and reads the view
as plain arrays (:meth:`dtlive.ui.live.LiveWindows.arrays`), so it stays light on the kernel.

>>> from dtlive.core.products import compute_products
>>> from dtlive.core.rows import Rows
>>> ds = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
>>> panel = ChamberPanel(ds, chamber=0)
>>> int(panel.occupancy.bars.y.sum()), type(panel.multiplicity.bars.scales["y"]).__name__
(1, 'LogScale')

In a notebook::

    from dtlive.ui.widgets import Dashboard
    Dashboard()          # finds the embedded broker (or DTLIVE_BOOTSTRAP) and updates live
"""

from __future__ import annotations

import html
import threading
import time

import numpy as np
import xarray as xr

from dtlive.core import detector as det
from dtlive.core.messages import QUALITY_SCHEMA, utc_seconds
from dtlive.kafka.health import parse_status
from dtlive.service.extras import extra
from dtlive.ui.live import VIEWS, LiveVerdicts, LiveWindows, ResultsFeed

with extra("dashboard", "dtlive.ui.widgets"):  # ipywidgets, bqplot: one line naming the extra when missing
    import ipywidgets as W

    from dtlive.ui.panels import (
        STATUS_COLORS,
        AlertPanel,
        HealthPanel,
        health_html,
        parse_analysis,
        parse_quality,
        status_html,
        verdict_html,
    )
    from dtlive.ui.plots import (
        CHAMBER_COLORS,
        CHANNEL_TICKS,
        REFERENCE_COLOR,
        HistogramView,
        OccupancyView,
        TimeSeriesView,
        legend_html,
    )

__all__ = ["CHAMBER_COLORS", "STATUS_COLORS", "AlertPanel", "ChamberPanel", "Dashboard", "EventPanel", "HealthPanel",
           "HistogramView", "OccupancyView", "TimeSeriesView", "health_html", "parse_analysis", "parse_quality",
           "reference_arrays", "status_html", "verdict_html"]

#: The histograms each chamber shows, by product.
HISTOGRAMS = ("channel_occupancy", "drift_time_ns", "active_channels_per_orbit", "scint_channel_occupancy")
_PLOT = {"width": "100%", "height": "205px"}


def reference_arrays(ref: xr.Dataset | None, drift_edges: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The histograms of a reference as plain arrays ``(chamber, bin)`` (none for a missing reference; the drift
    time left out when its bins differ from ``drift_edges``).

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> ref = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
    >>> sorted(reference_arrays(ref)), reference_arrays(None)
    (['active_channels_per_orbit', 'channel_occupancy', 'drift_time_ns', 'scint_channel_occupancy'], {})
    >>> "drift_time_ns" in reference_arrays(ref, drift_edges=np.arange(3.0))
    False
    """
    if ref is None:
        return {}
    out = {k: np.asarray(ref[k].values, float) for k in HISTOGRAMS if k in ref}
    edges = ref.coords.get("drift_time_edges")
    if drift_edges is not None and "drift_time_ns" in out and (
            edges is None or edges.size != len(drift_edges) or not np.allclose(edges.values, drift_edges)):
        del out["drift_time_ns"]
    return out


class ChamberPanel:
    """One chamber's plots in a column: hits per channel (bars), the chamber map, drift time, multiplicity (log
    scale) and hits per channel in scintillator-triggered orbits (filled steps), the reference over each
    histogram.

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
    >>> panel.set_reference(reference_arrays(ds), chamber=2); panel.update(ds, chamber=2)
    >>> panel.occupancy.ref_line.visible, float(panel.occupancy.ref_line.y[3])
    (True, 1.0)
    """

    def __init__(self, ds: xr.Dataset, chamber: int, log: bool = False):
        sel = ds.sel(chamber=chamber)
        color = CHAMBER_COLORS[chamber]
        css = f"dtlive-c{chamber}"
        self.chamber = chamber
        self.occupancy = OccupancyView(sel.channel_occupancy, log=log, color=color, css=f"{css}-occupancy", **_PLOT)
        bin_ns = float(np.diff(sel.drift_time.values[:2])[0]) if sel.drift_time.size > 1 else 0.0
        self.drift = HistogramView(sel.drift_time_ns, "drift time", log=log, color=color, css=f"{css}-drift",
                                   y_label=f"hits / {bin_ns:g} ns", x_label="drift time [ns]", steps=True, **_PLOT)
        self.multiplicity = HistogramView(sel.active_channels_per_orbit, "multiplicity (log scale)", log=True,
                                          color=color, css=f"{css}-multiplicity", y_label="orbits",
                                          x_label="active channels in an orbit", x_ticks=CHANNEL_TICKS, steps=True,
                                          **_PLOT)
        self.scint = HistogramView(sel.scint_channel_occupancy, "hits per channel, scintillator-triggered orbits",
                                   log=log, color=color, css=f"{css}-scint", y_label="hits / channel",
                                   x_label="channel", x_ticks=CHANNEL_TICKS, steps=True, **_PLOT)
        self.views = {"channel_occupancy": self.occupancy, "drift_time_ns": self.drift,
                      "active_channels_per_orbit": self.multiplicity, "scint_channel_occupancy": self.scint}
        self.stale = False  # hidden while the data moved on: drawn when shown again
        header = W.HTML(f"<div style='font-family:sans-serif;font-size:15px;font-weight:bold;color:white;"
                        f"background:{color};padding:2px 8px;border-radius:3px'>Chamber {chamber}</div>")
        self.widget = W.VBox([header, self.occupancy.bars_figure, self.occupancy.map_box, self.drift.figure,
                              self.multiplicity.figure, self.scint.figure],
                             layout=W.Layout(flex="1 1 0", min_width="0", margin="0 2px"))
        self.widget.add_class(f"{css}-column")

    def draw(self, arrays: dict[str, np.ndarray], chamber: int) -> None:
        """Draw this chamber's histograms from view arrays ``(chamber, bin)`` (see :meth:`LiveWindows.arrays`)."""
        for product, view in self.views.items():
            view._draw(np.asarray(arrays[product][chamber], float))
        self.stale = False

    def update(self, ds: xr.Dataset, chamber: int) -> None:
        """Draw a chamber of a products Dataset."""
        self.draw({k: ds[k].values for k in HISTOGRAMS}, chamber)

    def set_reference(self, ref: dict[str, np.ndarray], chamber: int) -> None:
        """Overlay the reference histograms of :func:`reference_arrays` (those missing: no overlay)."""
        for product, view in self.views.items():
            view.set_reference(ref[product][chamber] if product in ref else None)

    def set_log(self, log: bool) -> None:
        """Log or linear y axes (multiplicity stays on its log scale)."""
        for view in self.views.values():
            if view is not self.multiplicity:
                view.set_log(log)


class EventPanel:
    """Single muon events of the newest raw data, on demand: a button reads the newest messages of the hits
    topic (:func:`dtlive.ui.rawdata.read_latest_hits`), reconstructs their events and shows them in an
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
        from dtlive.ui.rawdata import read_latest_hits

        self.status.value = "reading..."
        try:
            hits = read_latest_hits(self.bootstrap, self.cfg.hits_topic, self.rows, kafka=self.cfg.kafka,
                                    default_format=self.cfg.default_format)
        except Exception as exc:  # noqa: BLE001 - the page says why, the dashboard goes on
            self.status.value = f"could not read the newest hits: {html.escape(str(exc))}"
            return 0
        events = latest_events(hits, last=20)
        if events:
            self.display.add_events(events)
        self.status.value = (f"{len(events)} events with segments in two chambers or more, from the newest "
                             f"{len(hits):,} hits")
        return len(events)


class Dashboard(W.VBox):
    """The live detector for a shift: verdicts on top, details below, fed live from the broker.

    ``Dashboard()`` finds the broker like every dtlive command (``DTLIVE_BOOTSTRAP`` or the embedded broker); it
    shows the newest ``backfill`` windows at once, then updates live. ``start=False`` builds it without a feed
    (feed it with :meth:`add_messages`). ``reference``: the reference drawn over the histograms, a name in the
    history store's ``references`` folder (default: the configured one) or a Dataset.

    >>> Dashboard(bootstrap="127.0.0.1:9092")   # doctest: +SKIP
    """

    def __init__(self, bootstrap: str | None = None, topic: str | None = None, backfill: int = 30,
                 rolling: int = 10, chambers=(0, 1, 2, 3), start: bool = True, status_every_s: float = 1.0,
                 quality_topic: str | None = None, stale_after_s: float = 10.0,
                 reference: str | xr.Dataset | None = None, references_dir=None):
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
        self._empty = {k: empty[k].values for k in HISTOGRAMS}

        self.verdicts = LiveVerdicts()  # the newest dtlive.quality/2 verdict, shown in the strip at the top
        self.verdict_strip = W.HTML(verdict_html(self.verdicts.summary()), layout=W.Layout(width="100%"))
        self.verdict_strip.add_class("dtlive-verdict-strip")
        self.alarm_slot = W.VBox([], layout=W.Layout(width="100%"))  # the alarms go here, under the strip
        self.alarm_slot.add_class("dtlive-alarms-slot")
        self.header = W.HTML(layout=W.Layout(width="100%"))
        self.header.add_class("dtlive-status")
        self.services = HealthPanel()

        self.pause_button = W.ToggleButton(description="Pause", icon="pause",
                                           tooltip="freeze the plots; data keeps coming")
        self.pause_button.add_class("dtlive-pause")
        self.view_mode = W.ToggleButtons(options=list(VIEWS), value="last", description="view",
                                         tooltips=["the newest window", "sum since the last reset",
                                                   "sum of the last N windows"])
        self.view_mode.style.button_width = "100px"  # "cumulative" in full
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
                           *self.chamber_boxes], layout=W.Layout(flex_flow="row wrap", align_items="center"))

        series = self.live.series()
        self.timeseries = TimeSeriesView(self._series_dict(series), series["time"], title="hit rate",
                                         y_label="hits / s", css="dtlive-timeseries", width="100%", height="215px")
        self.alerts = AlertPanel()
        self.alerts.widget.layout = W.Layout(flex="2 1 0", min_width="0", margin="0 0 0 12px")
        self.timeseries.widget.layout = W.Layout(flex="3 1 0", min_width="0")
        self.panels = [ChamberPanel(empty, c) for c in range(det.N_CHAMBERS)]
        for c, panel in enumerate(self.panels):
            panel.widget.layout.display = None if c in chambers else "none"
        self.reference_note = W.HTML(self._reference_legend(None))
        self.reference_note.add_class("dtlive-reference-note")
        chambers_box = W.HBox([p.widget for p in self.panels], layout=W.Layout(width="100%"))
        chambers_box.add_class("dtlive-chambers")

        self.pause_button.observe(self._on_pause, "value")
        self.view_mode.observe(lambda _: self.refresh(), "value")
        self.rolling_n.observe(self._on_rolling, "value")
        self.reset_button.on_click(lambda _: self.reset())
        self.log_box.observe(self._on_log, "value")
        for c, box in enumerate(self.chamber_boxes):
            box.observe(lambda ch, c=c: self._show_chamber(c, ch["new"]), "value")

        self.events = EventPanel(self.bootstrap, cfg)
        super().__init__([self.verdict_strip, self.alarm_slot, self.header, self.services.widget, controls,
                          W.HBox([self.timeseries.widget, self.alerts.widget], layout=W.Layout(width="100%")),
                          self.reference_note, chambers_box, self.events.widget],
                         layout=W.Layout(width="100%"))
        self.add_class("dtlive-dashboard")

        self._reference_file = None
        self._reference: xr.Dataset | None = None
        if isinstance(reference, xr.Dataset):
            self._set_reference(reference)
        else:
            from dtlive.storage.references import ReferenceFile, reference_dir

            name = cfg.reference if reference is None else reference
            self._reference_file = ReferenceFile(name, references_dir or reference_dir())
            self._check_reference()

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
        """Take quality messages (from the quality feed's thread): ``dtlive.quality/1`` periods, bad and warning,
        are shaded; the newest ``dtlive.quality/2`` verdict fills the summary strip."""
        with self._lock:
            if self.verdicts.add(messages):
                self.verdict_strip.value = verdict_html(self.verdicts.summary())
            periods = [m for m in messages if m.get("schema") == QUALITY_SCHEMA]
            if not periods:
                return
            self.periods += periods
            del self.periods[:-500]
            self.timeseries.shade_periods([(utc_seconds(p["start"]), utc_seconds(p["end"]), p.get("kind", "bad"))
                                           for p in self.periods])

    # --- the reference ---------------------------------------------------------------------------------------
    def _check_reference(self) -> None:
        """Follow the reference file: a new or changed one is drawn, a removed one taken away (none saved yet is
        no warning here: the legend says there is nothing to compare with)."""
        f = self._reference_file
        if f is not None:
            ref = f.get() if f.path is not None and f.path.exists() else None
            if ref is not self._reference:
                self._set_reference(ref)

    def _set_reference(self, ref: xr.Dataset | None) -> None:
        with self._lock:
            self._reference = ref
            arrays = reference_arrays(ref, self.live.drift_edges)
            for c, panel in enumerate(self.panels):
                panel.set_reference(arrays, c)
            self.reference_note.value = self._reference_legend(ref)

    @staticmethod
    def _reference_legend(ref: xr.Dataset | None) -> str:
        if ref is None:
            return legend_html([("no reference histograms to compare with", "#9e9e9e", "line")])
        a = ref.attrs
        start, end = str(a.get("first_start") or ""), str(a.get("last_end") or "")
        span = f", {start[:16].replace('T', ' ')} to {end[11:16]} UTC" if start and end else ""
        n = int(a.get("windows", 0))
        text = (f"reference {a.get('label') or ''!s}: {n} window{'' if n == 1 else 's'}{span}; "
                "scaled to the entries of each histogram")
        return legend_html([("data of the chosen view", "#777777", "box"), (text, REFERENCE_COLOR, "line")])

    # --- drawing --------------------------------------------------------------------------------------------
    @staticmethod
    def _series_dict(series: dict) -> dict:
        with np.errstate(divide="ignore", invalid="ignore"):
            per_s = np.where(series["duration"] > 0, 1.0 / series["duration"], np.nan)
        out = {"total": series["total_hits"] * per_s}
        out.update({f"chamber {c}": series["hits_per_chamber"][:, c] * per_s for c in range(det.N_CHAMBERS)})
        return out

    def refresh(self) -> None:
        """Redraw the visible plots from the current view (only values that changed are sent)."""
        with self._lock:
            t0 = time.perf_counter()
            arrays = self.live.arrays(self.view_mode.value, keys=HISTOGRAMS) or self._empty
            self._fit_bins(arrays)
            for c, panel in enumerate(self.panels):
                if self.chamber_boxes[c].value:
                    panel.draw(arrays, c)
                else:
                    panel.stale = True
            series = self.live.series()
            self.timeseries.update(series["time"], self._series_dict(series))
            self._refresh_status()
            self.updates += 1
            self.update_ms.append((time.perf_counter() - t0) * 1000)
            del self.update_ms[:-1000]

    def _fit_bins(self, arrays: dict) -> None:
        """The processor's drift-time bins changed: new x for the drift plots, the reference checked again."""
        n = np.shape(arrays["drift_time_ns"])[1]
        if n == self.panels[0].drift.x.size:
            return
        edges = self.live.drift_edges
        for panel in self.panels:
            panel.drift.set_bins((edges[1:] + edges[:-1]) / 2 if len(edges) == n + 1 else np.arange(n))
        self._set_reference(self._reference)

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
        value = status_html(status, self.bootstrap, feed.broker_ok if feed else None, feed.error if feed else None,
                            self.pause_button.value, view, newest=newest)
        if value != self.header.value:
            self.header.value = value

    # --- controls -------------------------------------------------------------------------------------------
    def _on_pause(self, change) -> None:
        paused = change["new"]
        self.pause_button.description, self.pause_button.icon = ("Resume", "play") if paused else ("Pause", "pause")
        if not change["new"]:
            self.refresh()
        else:
            self._refresh_status()

    def _on_rolling(self, change) -> None:
        with self._lock:
            self.live.set_rolling(change["new"])
        self.refresh()

    def _on_log(self, change) -> None:
        with self._lock:
            for panel in self.panels:
                panel.set_log(change["new"])

    def _show_chamber(self, chamber: int, show: bool) -> None:
        panel = self.panels[chamber]
        panel.widget.layout.display = None if show else "none"
        if show and panel.stale and not self.pause_button.value:
            with self._lock:
                panel.draw(self.live.arrays(self.view_mode.value, keys=HISTOGRAMS) or self._empty, chamber)

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
            self._check_reference()

    def stop(self) -> None:
        """Stop the feed and the status clock (the widget stays as it is)."""
        self._status_stop.set()
        self.feed.stop()
        self.quality_feed.stop()
        self.alerts_feed.stop()
        self.status_feed.stop()
