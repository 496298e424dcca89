"""The event display in a real browser: Voilà serves a notebook showing simulated events, Chromium reads the SVG.

The events are 0.3 s of simulated DAQ rows timed from the scintillator (tests/display_events.py); the test
process builds the same events (same seed) to know what the page must draw. Chromium is Debian's
(``scripts/install_browser.sh``); without it the test skips, or fails when ``CI`` is set.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from browser_fixtures import ROOT, SCREENSHOTS, free_port, poll, screenshot
from display_events import simulated_events

from dtlive.core import detector as det
from dtlive.ui.event_display import CIRCLE_POINTS, EventDisplay, drift_distance_mm

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SECONDS, SEED = 0.3, 3
NOTEBOOK = f"""\
from display_events import simulated_events
from dtlive.ui.event_display import EventDisplay

display = EventDisplay()
display.add_events(simulated_events({SECONDS}, seed={SEED}))
display.show(0)
display"""

# the drawn marks, found from the figure's first line (a cell outline): its mark's parent holds every mark's group
_MARKS_JS = """(idx) => {
  const fig = document.querySelector('.dtlive-event-figure');
  const first = fig && fig.querySelector('g.curve path.line');
  if (!first) return null;
  const marks = [...first.closest('g.curve').parentElement.parentElement.children]
    .filter(g => !g.classList.contains('g_legend'));
  const paths = i => [...marks[i].querySelectorAll('path.line')].map(p => p.getAttribute('d') || '').filter(d => d);
  return {cells: paths(idx.cells), circles: paths(idx.circles), segments: paths(idx.segment_lines),
          labels: [...marks[idx.chamber_labels].querySelectorAll('text')].map(t => t.textContent)};
}"""


def points(d: str) -> np.ndarray:
    """The vertices of an SVG path of straight pieces, (n, 2) in pixels."""
    return np.array([float(v) for v in re.findall(r"-?[\d.]+(?:e-?\d+)?", d)]).reshape(-1, 2)


def marks(page) -> dict:
    idx = {name: EventDisplay.MARK_NAMES.index(name) for name in EventDisplay.MARK_NAMES}
    return page.evaluate(_MARKS_JS, idx)


@pytest.fixture(scope="module")
def page(chromium, tmp_path_factory):
    """Voilà serving the event-display notebook on loopback, and the page open in Chromium."""
    import nbformat

    from dtlive.deploy.cli import stop_dashboard

    work = tmp_path_factory.mktemp("event-display")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK)]
    nbformat.write(nb, work / "event_display.ipynb")
    port = free_port()
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "JUPYTER_CONFIG_DIR": str(work / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(work / "runtime"), "IPYTHONDIR": str(work / "ipython")}
    log = work / "voila.log"
    with open(log, "wb") as out:
        voila = subprocess.Popen(
            [sys.executable, "-m", "voila", str(work / "event_display.ipynb"), f"--port={port}", "--no-browser",
             "--Voila.ip=127.0.0.1", "--theme=light", "--VoilaConfiguration.show_tracebacks=True"],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    browser_page = chromium.new_page(viewport={"width": 1000, "height": 1000})
    browser_page.set_default_timeout(30_000)
    try:
        deadline = time.monotonic() + 60
        while voila.poll() is None:
            try:  # a static path: asking for the page would start a kernel
                urllib.request.urlopen(f"{url}voila/static/", timeout=1).close()  # noqa: S310 (loopback)
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                assert time.monotonic() < deadline, f"Voilà did not start:\n{log.read_text()[-3000:]}"
                time.sleep(0.2)
        assert voila.poll() is None, f"Voilà exited:\n{log.read_text()[-3000:]}"
        browser_page.goto(url, timeout=60_000)
        browser_page.wait_for_selector(".dtlive-event-label", timeout=60_000)
        yield browser_page
    except Exception:
        print(log.read_text()[-3000:])
        raise
    finally:
        browser_page.close()
        stop_dashboard(voila)


def test_event_display_draws_hits_and_segments_and_steps(page):
    (SCREENSHOTS / "event-display-FAILED.png").unlink(missing_ok=True)  # from an earlier run
    events = simulated_events(SECONDS, seed=SEED)
    n = len(events)
    first, second = events[0], events[1]
    page.wait_for_function("t => document.querySelector('.dtlive-event-label').textContent.startsWith(t)",
                           arg=f"event 1 of {n} ", timeout=30_000)
    assert page.inner_text(".dtlive-event-label").strip().startswith(f"event 1 of {n} | id {first.event_id}")
    shown = poll(lambda: marks(page), lambda m: m and len(m["circles"]) == first.n_hits, timeout=15)
    try:
        assert shown is not None, "no figure in the page"
        assert len(shown["cells"]) == det.N_CHAMBERS * det.N_LAYERS * det.CELLS_PER_LAYER
        assert len(shown["circles"]) == first.n_hits and len(shown["segments"]) == len(first.segments) >= 1
        assert any("y view" in t for t in shown["labels"]), shown["labels"]

        # to scale: a cell is 42 x 13 mm, and a drift circle's radius in pixels is its drift distance in mm
        cell = points(shown["cells"][0])
        w_px, h_px = np.ptp(cell[:, 0]), np.ptp(cell[:, 1])
        assert w_px / h_px == pytest.approx(det.CELL_WIDTH_MM / det.CELL_HEIGHT_MM, rel=0.02), (w_px, h_px)
        px_per_mm = w_px / det.CELL_WIDTH_MM
        circles = [points(d) for d in shown["circles"]]
        assert all(len(c) == CIRCLE_POINTS for c in circles)
        r_px = np.array([np.ptp(c[:, 0]) / 2 for c in circles])
        r_mm = drift_distance_mm(first.drift_ns)
        big = r_mm > 2.0
        assert big.any() and np.allclose(r_px[big] / px_per_mm, r_mm[big], rtol=0.03, atol=0.3), (r_px, r_mm)
        for d in shown["segments"]:  # a line piece from the bottom to the top of its chamber
            seg = points(d)
            assert len(seg) == 2
            assert abs(seg[1, 1] - seg[0, 1]) == pytest.approx(4 * det.CELL_HEIGHT_MM * px_per_mm, rel=0.02)
        assert page.is_disabled(".dtlive-event-prev") and page.is_enabled(".dtlive-event-next")
        screenshot(page, "event-display-first")

        page.click(".dtlive-event-next")
        page.wait_for_function("t => document.querySelector('.dtlive-event-label').textContent.startsWith(t)",
                               arg=f"event 2 of {n} | id {second.event_id}", timeout=10_000)
        moved = poll(lambda: marks(page), lambda m: m["circles"] != shown["circles"], timeout=10)
        assert moved["circles"] != shown["circles"], "the drift circles did not change"
        moved = poll(lambda: marks(page), lambda m: (len(m["circles"]), len(m["segments"])) == (
            second.n_hits, len(second.segments)), timeout=10)
        assert len(moved["circles"]) == second.n_hits and len(moved["segments"]) == len(second.segments)
        assert moved["cells"] == shown["cells"], "the chambers moved"
        assert page.is_enabled(".dtlive-event-prev")
        screenshot(page, "event-display-second")

        page.click(".dtlive-event-prev")
        page.wait_for_function("t => document.querySelector('.dtlive-event-label').textContent.startsWith(t)",
                               arg=f"event 1 of {n} ", timeout=10_000)
        # circles and segments are separate marks, redrawn one after the other
        back = poll(lambda: marks(page), lambda m: (m["circles"], m["segments"]) == (shown["circles"],
                                                                                     shown["segments"]), timeout=10)
        assert back["circles"] == shown["circles"] and back["segments"] == shown["segments"]
        assert page.is_disabled(".dtlive-event-prev")
    except Exception:
        screenshot(page, "event-display-FAILED")
        raise
