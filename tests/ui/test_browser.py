"""The dashboard in a real browser: Chromium driven by Playwright, real broker, live pipeline.

* JupyterLab: the quickstart notebook, run cell by cell by the browser, starts the stack with
  ``ensure_stack`` and shows a live Dashboard;
* Voilà (``dtlive.deploy.cli.start_dashboard``) on a live feed (emulator + processor threads, 1 s windows) with a
  saved reference: plots render with readable axes, the summary strip on top and the chambers side by side,
  the reference over every histogram, the window id advances, Pause/Resume, cumulative view and Reset, log
  scale, the quality strip showing a published verdict, and the NO NEW DATA badge once the processor stops
  (that test stops the feed's processor, so it runs last);
* Voilà on a broker of its own that goes away: the status line says BROKER UNREACHABLE.

Screenshots (the 1600x1000 viewport, and whole pages) go to ``artifacts/screenshots/`` (git-ignored), to look at
after a run. Chromium is Debian's (/usr/bin/chromium,
``scripts/install_browser.sh``); without it these tests skip, or fail when ``CI`` is set.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import time
import uuid
from types import SimpleNamespace

import pytest
from browser_fixtures import (
    ROOT,
    SCREENSHOTS,
    LiveFeed,
    boxes,
    figure,
    free_port,
    poll,
    run_all_cells,
    screenshot,
    start_jupyterlab,
    state_text,
    stop_popen,
    stop_stack_pids,
    wait_window_id,
    window_id,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.browser]

VIEWPORT = {"width": 1600, "height": 1000}
OCC0 = "dtlive-c0-occupancy-bars"


def save_reference(history) -> None:
    """The reference ``default`` in the history folder ``history``: simulated windows through the products."""
    from dtlive.core.messages import iso_utc
    from dtlive.core.products import compute_products
    from dtlive.core.rows import clean
    from dtlive.core.simulate import simulate
    from dtlive.storage.references import reference_dir, save

    hits, _ = clean(simulate(5.0, seed=99))
    window = compute_products(hits)
    start = time.time() - 3600
    window.attrs.update(window_id=0, first_orbit=0, last_orbit=5 * 11223, window_start=iso_utc(start),
                        window_end=iso_utc(start + 5))
    save("default", window, reference_dir(history))


@contextlib.contextmanager
def environment(**values):
    """Environment variables set for what starts inside (Voilà and its kernels inherit them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def dashboard(broker, chromium, tmp_path_factory):
    """A live feed on unique topics, Voilà serving the dashboard on it (with a saved reference), and the page open
    in Chromium."""
    from dtlive.deploy.cli import start_dashboard

    history = tmp_path_factory.mktemp("history")
    save_reference(history)
    feed = LiveFeed(broker).start()
    with environment(DTLIVE_HISTORY=str(history)):
        voila, url = start_dashboard(broker, feed.monitor_topic, free_port())
    page = chromium.new_page(viewport=VIEWPORT)
    page.set_default_timeout(30_000)
    try:
        page.goto(url, timeout=120_000)  # the page waits for its kernel: slow on a loaded machine
        page.wait_for_selector(".dtlive-window-id", timeout=120_000)
        yield SimpleNamespace(page=page, feed=feed, url=url)
    finally:
        page.close()
        stop_popen(voila)
        feed.stop()


# ---------------------------------------------------------------- JupyterLab


def test_jupyterlab_quickstart_runs_and_updates(broker, chromium, tmp_path):
    """Run All Cells of notebooks/01-quickstart.ipynb in JupyterLab: ensure_stack starts processor and
    emulator on unique topics, the Dashboard renders and its window id advances."""
    tag = uuid.uuid4().hex[:8]
    notebooks, state = tmp_path / "notebooks", tmp_path / "state"
    notebooks.mkdir()
    state.mkdir()
    # a copy, so JupyterLab can never autosave outputs into the repository's notebook
    shutil.copy(ROOT / "notebooks" / "01-quickstart.ipynb", notebooks)
    env = {**os.environ, "DTLIVE_BOOTSTRAP": broker, "DTLIVE_STATE_DIR": str(state),
           "DTLIVE_HITS_TOPIC": f"labhits-{tag}", "DTLIVE_MONITOR_TOPIC": f"labmon-{tag}",
           "DTLIVE_REJECTED_TOPIC": f"labrej-{tag}", "DTLIVE_GROUP_ID": f"labproc-{tag}",
           "DTLIVE_WINDOW_S": "1", "DTLIVE_LATENESS_S": "0.2", "DTLIVE_QUALITY_TOPIC": f"labdq-{tag}",
           "DTLIVE_ANALYSES_TOPIC": f"labanalyses-{tag}", "DTLIVE_ALERTS_GROUP_ID": f"labalerts-{tag}",
           "DTLIVE_ALERTS_REJECTED_TOPIC": f"labalertsrej-{tag}", "DTLIVE_DB": f"sqlite:///{tmp_path / 'ledger.db'}",
           "DTLIVE_HISTORY": str(tmp_path / "history"), "DTLIVE_ARTIFACTS": str(tmp_path / "artifacts")}
    (SCREENSHOTS / "jupyterlab-quickstart-FAILED.png").unlink(missing_ok=True)  # from an earlier run
    lab, base, token, log = start_jupyterlab(notebooks, tmp_path, env)
    page = chromium.new_page(viewport=VIEWPORT)
    page.set_default_timeout(30_000)
    stopped: dict[str, int] = {}
    try:
        page.goto(f"{base}lab/tree/01-quickstart.ipynb?token={token}", timeout=60_000)
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
        run_all_cells(page)
        started = page.locator(".jp-OutputArea-output", has_text="Kafka at").first
        started.wait_for(timeout=60_000)
        assert f"Kafka at {broker}" in started.inner_text()
        assert "'emulator'" in started.inner_text() and "'processor'" in started.inner_text(), started.inner_text()
        page.wait_for_selector(".dtlive-dashboard", state="visible", timeout=60_000)
        page.wait_for_selector(".dtlive-window-id", timeout=30_000)
        assert len(figure(page, OCC0).bars) == 64
        first = window_id(page)
        later = wait_window_id(page, first, timeout=15)
        assert later > first
        assert "LIVE" in state_text(page)
        screenshot(page, "jupyterlab-quickstart")
        page.locator(f".{OCC0}").scroll_into_view_if_needed()
        screenshot(page, "jupyterlab-quickstart-plots")
    except Exception:
        screenshot(page, "jupyterlab-quickstart-FAILED")
        prompts = page.locator(".jp-InputArea-prompt").all_inner_texts()
        print(f"cell prompts: {prompts}; kernel status: {page.locator('.jp-Notebook-ExecutionIndicator').count()}")
        print(page.locator(".jp-NotebookPanel").inner_text()[:2000])
        print(log.read_text()[-3000:])
        for f in sorted(state.glob("*.log")):
            print(f"--- {f.name}\n{f.read_text()[-1500:]}")
        raise
    finally:
        page.close()
        stop_popen(lab)  # the kernel goes with it, so nothing can start another process
        stopped = stop_stack_pids(state)
    assert {"emulator", "processor"} <= set(stopped), stopped


# ---------------------------------------------------------------- Voilà


def test_voila_says_so_when_the_broker_goes_away(chromium, tmp_path):
    """A broker of its own with one window on it, the dashboard showing it; the broker stops: the status line
    says BROKER UNREACHABLE (runs before the shared dashboard starts, so only one Voilà runs at a time)."""
    from confluent_kafka import Producer
    from monitor_messages import encode_message_dict, message

    from dtlive.config import load_config
    from dtlive.deploy.cli import start_dashboard
    from dtlive.kafka.broker import EmbeddedBroker
    from dtlive.kafka.clients import ensure_topics

    broker = EmbeddedBroker(port=free_port(), state_dir=tmp_path).start()
    voila = page = None
    try:
        topic = f"gone-{uuid.uuid4().hex[:8]}"
        ensure_topics(load_config({}, env={}), broker.bootstrap, [topic])
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        producer.produce(topic, encode_message_dict(message(1, 50)))
        assert producer.flush(10) == 0
        del producer  # gone before the broker: no reconnect messages for the rest of the session
        with environment(DTLIVE_HISTORY=str(tmp_path / "history")):
            voila, url = start_dashboard(broker.bootstrap, topic, free_port())
        page = chromium.new_page(viewport=VIEWPORT)
        page.goto(url, timeout=60_000)
        page.wait_for_selector(".dtlive-window-id", timeout=60_000)
        assert window_id(page) == 1 and "BROKER UNREACHABLE" not in state_text(page)
        broker.stop()
        page.wait_for_function(
            "() => document.querySelector('.dtlive-state').textContent.includes('BROKER UNREACHABLE')",
            timeout=30_000, polling=200)
        assert window_id(page) == 1  # what was shown stays, with the reason it does not move
        screenshot(page, "voila-broker-gone-1600x1000", full_page=False)
    finally:
        if page is not None:
            page.close()
        if voila is not None:
            stop_popen(voila)
        broker.stop()


def test_voila_plots_render(dashboard):
    page = dashboard.page
    for c in range(4):
        assert len(figure(page, f"dtlive-c{c}-occupancy-bars").bars) == 64
        assert page.locator(f".dtlive-c{c}-occupancy-map path.dot").count() == 64
        for kind in ("multiplicity", "scint", "drift"):  # filled steps: the data and the reference, one mark
            assert figure(page, f"dtlive-c{c}-{kind}").lines[0].startswith("M"), kind
    occ = figure(page, OCC0)
    assert all(math.isfinite(h) for h in occ.bars) and max(occ.bars) > 0
    assert occ.value_sum() > 0
    series = figure(page, "dtlive-timeseries")
    assert len(series.lines) == 5  # total + 4 chambers
    assert all(d.startswith("M") and "L" in d for d in series.lines), series.lines
    screenshot(page, "voila-dashboard-1600x1000", full_page=False)
    screenshot(page, "voila-dashboard")


_AXES_JS = """() => [...document.querySelectorAll('.dtlive-dashboard .bqplot.figure')]
  .filter(f => f.getClientRects().length > 0)
  .map(f => ({
    css: [...f.classList].filter(c => c.startsWith('dtlive-')).join(' '),
    labels: [...f.querySelectorAll('text.axislabel')].map(t => t.textContent.trim()),
    ticks: [...f.querySelectorAll('g.axis')].map(a => [...a.querySelectorAll('g.tick text')].map(t => t.textContent)),
    legend: f.querySelectorAll('g.legend').length && f.querySelector('g.legend').getClientRects().length,
  }))"""


_COLORBAR_JS = """(c) => {
  const bar = document.querySelector(`.dtlive-c${c}-occupancy-colorbar`);
  const ramp = bar.querySelector('.dtlive-colorbar-ramp');
  const map = document.querySelector(`.dtlive-c${c}-occupancy-map`).getBoundingClientRect();
  const r = ramp.getBoundingClientRect();
  return {ramp: getComputedStyle(ramp).backgroundImage, text: bar.innerText, left: r.left, height: r.height,
          map_right: map.right};
}"""


def test_voila_every_plot_is_readable(dashboard):
    """Every plot shown: axis labels with units, channel axes at 0/16/32/48/64, time of day on the time series,
    a colour bar with its ramp and label on every map, no legend drawn over the data."""
    figs = dashboard.page.evaluate(_AXES_JS)
    assert len(figs) == 4 * 5 + 1, [f["css"] for f in figs]
    for f in figs:
        assert len([lb for lb in f["labels"] if lb]) >= 2, f
        assert any(re.search(r"\[.+\]|/ |orbits", lb) for lb in f["labels"]), f  # a y label with its units
        assert not f["legend"], f
    by_css = {f["css"]: f for f in figs}
    for c in range(4):
        for kind in ("occupancy-bars", "multiplicity", "scint"):
            assert ["0", "16", "32", "48", "64"] in by_css[f"dtlive-c{c}-{kind}"]["ticks"], (c, kind)
        bar = dashboard.page.evaluate(_COLORBAR_JS, c)
        assert "linear-gradient" in bar["ramp"] and "hits / channel" in bar["text"], bar
        assert bar["left"] >= bar["map_right"] - 1 and bar["height"] > 100, bar  # beside the map, as tall as it
    times = [t for ticks in by_css["dtlive-timeseries"]["ticks"] for t in ticks if ":" in t]
    assert times and all(re.fullmatch(r"\d\d:\d\d:\d\d", t) for t in times), times
    assert len(times) <= 8, times  # ~100 px a label on the half-page plot: they must not run into each other


def test_voila_summary_strip_on_top_and_the_chambers_side_by_side(dashboard):
    page = dashboard.page
    strip, slot, state, *cards = boxes(page, ".dtlive-verdict", ".dtlive-alarms-slot", ".dtlive-state",
                                       *(f".dtlive-chamber-status[data-chamber='{c}']" for c in range(4)))
    assert strip["y"] < 120 and strip["y"] + strip["height"] <= slot["y"] + 1 and slot["y"] <= state["y"]
    assert max(b["y"] for b in cards) - min(b["y"] for b in cards) < 2  # one row
    assert [b["x"] for b in cards] == sorted(b["x"] for b in cards) and cards[-1]["x"] < VIEWPORT["width"]
    columns = boxes(page, *(f".dtlive-c{c}-column" for c in range(4)))
    assert max(b["y"] for b in columns) - min(b["y"] for b in columns) < 2
    assert all(a["x"] + a["width"] <= b["x"] + 1 for a, b in zip(columns, columns[1:], strict=False))
    assert columns[-1]["x"] + columns[-1]["width"] <= VIEWPORT["width"] and min(b["width"] for b in columns) > 300
    assert columns[0]["y"] < VIEWPORT["height"]  # the chambers start on the first screen
    screenshot(page, "voila-top-1600x1000", full_page=False)


_REFERENCE_JS = """(css) => {
  const fig = document.querySelector('.' + css);
  const shown = e => e.getClientRects().length > 0;
  const bars = [...fig.querySelectorAll('rect.bar')].filter(shown).map(r => parseFloat(r.getAttribute('height')));
  const lines = [...fig.querySelectorAll('path.line')].filter(shown)
    .map(p => ({d: p.getAttribute('d') || '', stroke: getComputedStyle(p).stroke}));
  const black = 'rgb(33, 33, 33)';
  return {bars: bars.reduce((a, b) => a + b, 0), data: lines.filter(l => l.stroke !== black).map(l => l.d),
          ref: lines.filter(l => l.stroke === black).map(l => l.d)};
}"""


def test_voila_the_reference_is_drawn_over_every_histogram(dashboard):
    page = dashboard.page
    wait_window_id(page, window_id(page))
    for c in range(4):
        for kind, bins in (("occupancy-bars", 64), ("drift", 120), ("multiplicity", 64), ("scint", 64)):
            got = page.evaluate(_REFERENCE_JS, f"dtlive-c{c}-{kind}")
            # the simulated chambers fill every histogram: bars, or a filled step line
            assert got["bars"] > 0 if kind == "occupancy-bars" else got["data"][0].count("L") >= bins, (c, kind)
            assert len(got["ref"]) == 1, (c, kind, got)  # one black step line over the bins' edges
            assert got["ref"][0].startswith("M") and got["ref"][0].count("L") >= bins, (c, kind, got["ref"])
    assert "reference default: 1 window," in page.inner_text(".dtlive-reference-note")
    page.locator(".dtlive-c0-occupancy-bars").scroll_into_view_if_needed()
    screenshot(page, "voila-reference-1600x1000", full_page=False)
    page.evaluate("() => window.scrollTo(0, 0)")


def test_voila_window_id_advances(dashboard):
    page = dashboard.page
    first = window_id(page)
    second = wait_window_id(page, first, timeout=10)
    third = wait_window_id(page, second, timeout=10)
    assert first < second < third


def test_voila_pause_freezes_plots_resume_moves_them(dashboard):
    page, feed = dashboard.page, dashboard.feed
    page.click(".dtlive-pause")
    page.wait_for_function("() => document.querySelector('.dtlive-state').textContent.includes('PAUSED')",
                           timeout=15_000)  # the kernel answers the click; on a busy machine that takes seconds
    assert page.inner_text(".dtlive-pause").strip() == "Resume"
    time.sleep(0.5)  # updates already on their way when the click landed
    id_paused, occ, series = window_id(page), figure(page, OCC0), figure(page, "dtlive-timeseries")
    published = feed.published
    feed.wait_published(published + 4, timeout=15)  # more than 3 windows arrive while paused
    time.sleep(0.5)
    still = figure(page, OCC0)
    assert still.bars == occ.bars and still.labels == occ.labels, "occupancy changed while paused"
    assert figure(page, "dtlive-timeseries").lines == series.lines, "time series changed while paused"
    id_after = window_id(page)
    screenshot(page, "voila-paused")

    page.click(".dtlive-pause")
    page.wait_for_function("() => !document.querySelector('.dtlive-state').textContent.includes('PAUSED')",
                           timeout=15_000)
    moved = poll(lambda: figure(page, OCC0), lambda f: f.bars != occ.bars, timeout=10)
    assert moved.bars != occ.bars, "occupancy did not move after Resume"
    assert id_after == id_paused, "the header's window id moved while the plots were frozen"
    assert wait_window_id(page, id_after, timeout=10) > id_after


def test_voila_cumulative_grows_and_reset_drops(dashboard):
    page = dashboard.page
    try:
        page.click(".dtlive-mode button:text-is('cumulative')")
        page.wait_for_function("() => document.querySelector('.dtlive-view').textContent === 'cumulative'",
                               timeout=5000)
        shown = wait_window_id(page, window_id(page))
        before = figure(page, OCC0).value_sum()
        shown = wait_window_id(page, shown + 2)  # three windows later
        grown = figure(page, OCC0)
        assert grown.value_sum() > 1.02 * before > 0, (before, grown.value_sum())
        screenshot(page, "voila-cumulative")

        page.click(".dtlive-reset")
        # the bars and the y axis come in messages of their own: wait for both
        dropped = poll(lambda: figure(page, OCC0), lambda f: f.value_sum() < 0.5 * grown.value_sum() and (
            not f.bars or max(f.bars) == 0 or f.y_max < grown.y_max), timeout=10)
        assert dropped.value_sum() < 0.5 * grown.value_sum(), (grown.value_sum(), dropped.value_sum())
        assert not dropped.bars or max(dropped.bars) == 0 or dropped.y_max < grown.y_max
        screenshot(page, "voila-reset")
        start = dropped.value_sum()
        wait_window_id(page, window_id(page) + 2)
        regrown = figure(page, OCC0).value_sum()
        assert regrown > 0 and regrown > 1.5 * start, (start, regrown)

    finally:  # the next test expects the 'last' view, also after a failure
        page.click(".dtlive-mode button:text-is('last')")
        page.wait_for_function("() => document.querySelector('.dtlive-view').textContent === 'last'", timeout=5000)


def test_voila_log_scale_switches_y_axis(dashboard):
    page = dashboard.page
    linear = figure(page, OCC0)
    assert linear.tick_span_px > 100 and min(v for _, v in linear.ticks) <= 0
    try:
        page.check(".dtlive-log input[type=checkbox]")
        # the live feed may redraw the linear axis meanwhile: wait for the log axis itself (no tick at or below 0),
        # and for the new bars on it (new marks: they come in a message of their own, their data in the next)
        log = poll(lambda: figure(page, OCC0),
                   lambda f: f.labels != linear.labels and f.ticks and all(v > 0 for _, v in f.ticks)
                   and f.bars and all(math.isfinite(h) for h in f.bars) and max(f.bars) > 0, timeout=30)
        screenshot(page, "voila-log")
        assert log.labels != linear.labels, "y axis did not change"
        assert all(v > 0 for _, v in log.ticks), f"log axis with ticks <= 0: {log.labels}"
        assert log.tick_span_px > 100, f"log y axis spans {log.tick_span_px:.1f} px"
        assert all(math.isfinite(h) for h in log.bars) and max(log.bars) > 0, "bars not drawn on the log axis"
    finally:
        page.uncheck(".dtlive-log input[type=checkbox]")
    back = poll(lambda: figure(page, OCC0), lambda f: f.tick_span_px > 100, timeout=5)
    assert back.tick_span_px > 100 and all(math.isfinite(h) for h in back.bars), "linear axis not restored"


def test_voila_quality_strip_shows_the_newest_verdict(dashboard):
    """A dtlive.quality/2 verdict (a real one: a window with hits in chamber 0 only, judged without a reference)
    published on the quality topic turns the strip's chamber badges to its statuses, with the reason as title."""
    import json

    import numpy as np
    from confluent_kafka import Producer

    from dtlive.config import Config
    from dtlive.core.judge import judge
    from dtlive.core.messages import iso_utc
    from dtlive.core.products import compute_products
    from dtlive.core.rows import Rows

    page = dashboard.page
    n, now = 2000, time.time()
    hits = Rows.from_columns(head=np.full(n, 2), fpga=np.zeros(n, int), channel=np.arange(n) % 64,
                             orbit=np.arange(n) * 10, bx=np.zeros(n, int), tdc=np.zeros(n, int))
    ds = compute_products(hits)
    ds.attrs.update(window_id=1, first_orbit=0, last_orbit=22446, window_start=iso_utc(now - 2),
                    window_end=iso_utc(now))
    verdict = {**judge(ds, None), "processor": "browser-test"}
    assert verdict["chambers"]["chamber_2"]["status"] == 4  # silent: bad
    p = Producer({"bootstrap.servers": dashboard.feed.cfg.bootstrap})
    p.produce(Config.quality_topic, json.dumps(verdict).encode())
    assert p.flush(10) == 0
    badge = page.locator(".dtlive-chamber-status[data-chamber='2'][data-status='4']")
    badge.wait_for(timeout=20_000)
    assert "rate 0 Hz" in badge.get_attribute("title") and "chamber 2: bad" in badge.inner_text()
    assert page.locator(".dtlive-detector-status[data-status='4']").count() == 1
    strip, state = boxes(page, ".dtlive-verdict", ".dtlive-state")
    assert strip["y"] < state["y"]  # the strip is on top
    screenshot(page, "voila-quality-strip")


def test_voila_service_health_turns_stale_when_a_heartbeat_stops(dashboard):
    """A service (here: this test, as an "emulator") beats every 0.5 s on the status topic: the page shows it
    running; its beats stop without a final one (a hung loop): the row turns stale and the badge says ALARM;
    a final "stopped" beat clears its alarm."""
    from dtlive.config import load_config
    from dtlive.kafka.health import Heartbeat

    page = dashboard.page
    cfg = load_config({"bootstrap": dashboard.feed.cfg.bootstrap, "status_interval_s": 0.5})
    row = f".dtlive-health-row[data-service='emulator'][data-pid='{os.getpid()}']"
    hb = Heartbeat("emulator", cfg, cfg.bootstrap)
    try:
        deadline, silent = time.monotonic() + 30, time.monotonic()
        while page.locator(f"{row}[data-state='running']").count() == 0:
            assert time.monotonic() < deadline, page.locator(".dtlive-health").inner_text()
            before = time.monotonic()
            if hb.maybe(None, state="running", counts={"rows": 1}):
                silent = before  # the last beat left no earlier than this
            page.wait_for_timeout(100)
        page.wait_for_selector(f"{row}[data-state='stale']", timeout=15_000)
        assert time.monotonic() - silent >= 1.0  # not before 3 intervals of 0.5 s after the last beat
        assert "ALARM" in page.locator(".dtlive-health-badge").inner_text()
        screenshot(page, "voila-service-stale")
    finally:
        hb.close()
    page.wait_for_selector(f"{row}[data-state='stopped']", timeout=15_000)


def test_voila_no_new_data_badge_when_processor_stops(dashboard):
    """Runs last: stops the feed's processor (the emulator keeps sending); stale after 10 s (LiveWindows.status)."""
    page, feed = dashboard.page, dashboard.feed
    assert state_text(page).startswith("LIVE")
    feed.stop_processor()
    t0 = time.monotonic()
    page.wait_for_function("() => document.querySelector('.dtlive-state').textContent.includes('NO NEW DATA')",
                           timeout=16_000, polling=100)
    print(f"NO NEW DATA shown {time.monotonic() - t0:.1f} s after the processor stopped")
    screenshot(page, "voila-no-new-data")
