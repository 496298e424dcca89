"""Helpers of the browser tests (tests/ui/test_browser.py): Chromium, a live feed, servers, SVG readings.

Everything runs on loopback and every wait is bounded. The live feed is the real pipeline in
threads of the test process: ``dtlive.kafka.emulator.emulate`` (simulated DAQ, daq64) and a
``dtlive.streaming.processor.Processor`` with 1 s windows, on unique topics of the session broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(msg: str):
    """In CI a missing browser is an error; on a laptop the browser tests are skipped."""
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(msg)


def ensure_chromium() -> str:
    """Debian's Chromium, installed by scripts/install_browser.sh when missing."""
    if not os.access(CHROMIUM, os.X_OK):
        try:
            r = subprocess.run(["bash", str(ROOT / "scripts" / "install_browser.sh")], capture_output=True, text=True,
                               timeout=600)
            detail = (r.stderr or r.stdout).strip()[-2000:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            detail = str(exc)
        if not os.access(CHROMIUM, os.X_OK):
            _unavailable(f"{CHROMIUM} is missing and scripts/install_browser.sh could not install it: {detail}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        _unavailable(f"playwright is not installed ({exc}); pip install -e '.[test]'")
    return CHROMIUM


def screenshot(page, name: str, full_page: bool = True) -> Path:
    """Save a screenshot under artifacts/screenshots/ (the whole page, or what the viewport shows) and print where."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


# ---------------------------------------------------------------- the live feed


class LiveFeed:
    """Emulator thread + processor thread on unique topics; ``stop_processor()`` ends the results only."""

    def __init__(self, bootstrap: str, rate: float = 5000.0, window_s: float = 1.0, lateness_s: float = 0.2,
                 max_seconds: float = 600.0):
        from confluent_kafka import Producer

        from dtlive.config import load_config
        from dtlive.kafka.clients import ensure_topics
        from dtlive.kafka.emulator import emulate, simulated_chunks
        from dtlive.streaming.processor import Processor

        tag = uuid.uuid4().hex[:8]
        self.cfg = load_config({"bootstrap": bootstrap, "hits_topic": f"bhits-{tag}", "monitor_topic": f"bmon-{tag}",
                                "rejected_topic": f"brej-{tag}", "group_id": f"bproc-{tag}", "window_s": window_s,
                                "lateness_s": lateness_s}, env={})
        ensure_topics(self.cfg, bootstrap, [self.cfg.hits_topic])
        self.errors: list[BaseException] = []
        self._stop_emulator = threading.Event()
        self.processor = Processor(self.cfg, bootstrap, from_beginning=True)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self._emulator = threading.Thread(
            target=self._guard, name="browser-emulator", daemon=True,
            args=(emulate, producer, self.cfg.hits_topic, simulated_chunks(0, rows_per_s=rate)),
            kwargs={"rate": rate, "fmt": "daq64", "progress": False, "max_seconds": max_seconds,
                    "stop": self._stop_emulator.is_set})
        self._processor = threading.Thread(target=self._run_processor, args=(max_seconds,), name="browser-processor",
                                           daemon=True)

    @property
    def monitor_topic(self) -> str:
        return self.cfg.monitor_topic

    @property
    def published(self) -> int:
        """Windows the processor has published so far (the test's clock)."""
        return self.processor.publisher.published

    def _guard(self, fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by check()
            self.errors.append(exc)

    def _run_processor(self, max_seconds: float) -> None:
        try:
            self._guard(self.processor.run, max_seconds=max_seconds)
        finally:
            with contextlib.suppress(Exception):
                self.processor.close()

    def start(self, first_window_timeout: float = 30.0) -> LiveFeed:
        self._processor.start()
        self._emulator.start()
        self.wait_published(1, first_window_timeout)
        return self

    def check(self) -> None:
        if self.errors:
            raise AssertionError(f"live feed thread failed: {self.errors[0]!r}") from self.errors[0]

    def wait_published(self, n: int, timeout: float) -> int:
        """Wait until the processor has published ``n`` windows in total; return the count."""
        deadline = time.monotonic() + timeout
        while self.published < n and time.monotonic() < deadline:
            self.check()
            time.sleep(0.05)
        assert self.published >= n, f"only {self.published} windows published in {timeout} s (wanted {n})"
        return self.published

    def stop_processor(self, timeout: float = 15.0) -> None:
        self.processor.stop()
        self._processor.join(timeout)
        assert not self._processor.is_alive(), "processor thread did not stop"

    def stop(self, timeout: float = 15.0) -> None:
        self._stop_emulator.set()
        self.processor.stop()
        self._emulator.join(timeout)
        self._processor.join(timeout)


# ---------------------------------------------------------------- servers


def stop_popen(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL: this process only."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _is_dtlive(pid: int) -> bool:
    """The pid is (still) a dtlive process, not a recycled pid of something else."""
    try:
        return b"dtlive" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_stack_pids(state_dir: Path, timeout: float = 10.0) -> dict[str, int]:
    """Stop what ensure_stack recorded in ``state_dir/stack.json``: SIGINT, wait, SIGKILL. Returns the pids."""
    try:
        pids = json.loads((state_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    pids = {k: v for k, v in pids.items() if isinstance(v, int) and _is_dtlive(v)}
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while any(_is_dtlive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids.values():
        if _is_dtlive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return pids


def start_jupyterlab(root_dir: Path, work: Path, env: dict, timeout: float = 60.0):
    """``jupyter lab`` on a free loopback port with a random token; returns (process, base_url, token, log)."""
    token, port = secrets.token_hex(16), free_port()
    log = work / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
           f"--port={port}", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root_dir}",
           f"--LabApp.workspaces_dir={work / 'workspaces'}"]
    env = {**env, "JUPYTER_CONFIG_DIR": str(work / "jupyter-config"), "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
           "IPYTHONDIR": str(work / "ipython")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"{base}api/status?token={token}", timeout=1).close()  # noqa: S310 (loopback)
            return proc, base, token, log
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    stop_popen(proc)
    raise AssertionError(f"JupyterLab did not start on {base}:\n{log.read_text()[-3000:]}")


def run_all_cells(page, attempts: int = 3) -> None:
    """Run > Run All Cells in JupyterLab, once the kernel is idle; retried when no cell starts.

    Clicked while the kernel is still connecting, JupyterLab only walks the cells without running them.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    started = ("() => [...document.querySelectorAll('.jp-InputArea-prompt')]"
               ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))")
    for _ in range(attempts):
        page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=60_000)
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        try:
            page.wait_for_function(started, timeout=10_000)
            return
        except PlaywrightTimeout:
            print("Run All Cells started no cell; retrying")
    raise AssertionError(f"Run All Cells started no cell in {attempts} attempts")


# ---------------------------------------------------------------- reading the page

_FIGURE_JS = """(css) => {
  const fig = document.querySelector('.' + css);
  if (!fig) return null;
  const shown = e => e.getClientRects().length > 0;  // not inside a display:none (invisible) mark or axis
  const yaxis = [...fig.querySelectorAll('svg.svg-background g.axis')]
    .find(a => a.getAttribute('text-anchor') === 'end' && shown(a));
  const ticks = yaxis ? [...yaxis.querySelectorAll('g.tick')].map(t => {
    const m = /translate\\(\\s*[-\\d.e]+\\s*,\\s*([-\\d.e]+)\\s*\\)/.exec(t.getAttribute('transform') || '');
    return [m ? parseFloat(m[1]) : NaN, t.textContent];
  }) : [];
  const bars = [...fig.querySelectorAll('rect.bar')].filter(shown).map(r => parseFloat(r.getAttribute('height')));
  const lines = [...fig.querySelectorAll('path.line[id^=curve]')].map(p => p.getAttribute('d') || '');
  return {ticks, bars, lines};
}"""

_SI = {"y": -24, "z": -21, "a": -18, "f": -15, "p": -12, "n": -9, "µ": -6, "μ": -6, "m": -3, "": 0, "k": 3, "M": 6,
       "G": 9, "T": 12, "P": 15}


def parse_si(text: str) -> float:
    """A d3 ``.2s`` tick label as a number: '-610m' -> -0.61, '1.2k' -> 1200 (U+2212 minus too)."""
    m = re.fullmatch(r"\s*([-+]?[\d.]+(?:e[-+]?\d+)?)\s*([a-zA-Zµμ]?)\s*", text.replace("\u2212", "-"))
    if not m or m.group(2) not in _SI:
        return float("nan")
    return float(m.group(1)) * 10 ** _SI[m.group(2)]


class Figure:
    """What one bqplot figure shows: its visible y-axis ticks (pixel y, value), visible bar heights, line paths."""

    def __init__(self, raw: dict | None):
        assert raw is not None, "figure not in the page"
        self.ticks = [(float(y), parse_si(label)) for y, label in raw["ticks"]]
        self.labels = [label for _, label in raw["ticks"]]
        self.bars = [float(h) for h in raw["bars"]]
        self.lines = raw["lines"]

    @property
    def tick_span_px(self) -> float:
        ys = [y for y, _ in self.ticks]
        return max(ys) - min(ys) if ys else 0.0

    @property
    def y_max(self) -> float:
        """Value of the top tick (the y axis maximum)."""
        return min(self.ticks)[1] if self.ticks else float("nan")

    def value_sum(self) -> float:
        """Sum of the bar values, read back through the linear y axis (0 when every bar is flat)."""
        heights = sum(self.bars)
        if heights == 0:
            return 0.0
        (y_top, v_top), (y_bottom, v_bottom) = min(self.ticks), max(self.ticks)
        return heights * (v_top - v_bottom) / (y_bottom - y_top)


def figure(page, css: str) -> Figure:
    return Figure(page.evaluate(_FIGURE_JS, css))


def window_id(page) -> int | None:
    text = page.evaluate("() => document.querySelector('.dtlive-window-id')?.textContent ?? null")
    return int(text) if text else None


def wait_window_id(page, above: int, timeout: float = 10.0) -> int:
    """Wait until the header shows a window id greater than ``above``; return it."""
    page.wait_for_function(
        "above => { const e = document.querySelector('.dtlive-window-id'); return e && +e.textContent > above; }",
        arg=above, timeout=timeout * 1000, polling=50)
    return window_id(page)


_BOXES_JS = """(selectors) => selectors.map(sel => {
  const e = document.querySelector(sel);
  if (!e) return null;
  const r = e.getBoundingClientRect();
  return {x: r.x, y: r.y, width: r.width, height: r.height};
})"""


def boxes(page, *selectors: str, timeout: float = 30.0) -> list[dict]:
    """The bounding boxes of the first element of each selector, read at one moment (an HTML widget redrawn every
    window replaces its elements: boxes read one by one may miss one); waits until every one is there."""
    found = poll(lambda: page.evaluate(_BOXES_JS, list(selectors)), lambda got: None not in got, timeout)
    assert None not in found, {s: b for s, b in zip(selectors, found, strict=True) if b is None}
    return found


def state_text(page) -> str:
    return page.inner_text(".dtlive-state")


def poll(fn, until, timeout: float, every: float = 0.1):
    """Call ``fn()`` until ``until(value)`` or the timeout; return the last value."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not until(value) and time.monotonic() < deadline:
        time.sleep(every)
        value = fn()
    return value
