"""Benchmark: the live dashboard.

1. **Kernel CPU per update** (target p99 <= 10 ms): a ``dtlive.ui.widgets.Dashboard(start=False)`` with every
   plot (4 chambers), fed real result messages one window at a time through ``add_messages`` (what the
   feed thread calls), and every 5th window a quality verdict for the summary strip (``add_periods``, as the
   recorder judges blocks of 5 windows). A reference (``default``, the sum of the messages) is saved in a
   temporary ``DTLIVE_HISTORY``, so a dashboard that overlays references draws it. Messages are made with the
   pipeline's pure functions: ``simulate`` -> ``clean`` -> ``compute_products`` (+ window attrs) ->
   ``encode_message`` -> ``decode_message``. Every widget message is serialised as a kernel does before it
   goes to the frontend (the comm's ``json_clean`` and ``jupyter_client.Session.serialize``: JSON and its
   HMAC signature); only the socket send is left out. CPU is the calling thread's (``time.thread_time``), per
   view mode, and once with an hour of history (1800 windows) in the time series.
2. **Result produced -> plot changed in the browser** (target p99 <= 1 s): a private embedded broker,
   Voilà (``dtlive.deploy.cli.start_dashboard``) on a fresh monitor topic, headless Chromium (Playwright). This
   process produces result messages (increasing window ids, distinct hits) and a MutationObserver in the
   page stamps ``Date.now()`` when the header shows the new window id and when chamber 0's occupancy
   bars change; latency = that stamp - ``time.time()`` just before ``produce()`` (same host clock).

    .venv/bin/python -m benchmarks.dashboard [--quick] [--kernel-only] [--updates N]   # -> results/dashboard.json

From a runner: ``run(quick=...)`` returns the results dict, ``print_table(results)`` prints them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks.checks import count_check, verdict

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "dashboard.json"
CHROMIUM = "/usr/bin/chromium"
UPDATE_TARGET_MS = 10.0  # of kernel CPU, p99
BROWSER_TARGET_S = 1.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stats(values, scale: float = 1.0, digits: int = 1) -> dict:
    a = np.asarray(values, float) * scale
    if not len(a):
        return {"n": 0}
    return {"p50": round(float(np.percentile(a, 50)), digits), "p90": round(float(np.percentile(a, 90)), digits),
            "p99": round(float(np.percentile(a, 99)), digits), "max": round(float(a.max()), digits),
            "mean": round(float(a.mean()), digits), "n": int(len(a))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- messages


def make_messages(n: int, window_s: float = 2.0, processor: str = "bench-dashboard") -> list[dict]:
    """``n`` consecutive parsed result messages of simulated data (distinct hits in each window)."""
    from dtlive.core import detector as det
    from dtlive.core.messages import decode_message, encode_message, iso_utc
    from dtlive.core.products import compute_products
    from dtlive.core.rows import clean
    from dtlive.core.simulate import DEFAULT_START_ORBIT, simulate

    orbits = int(round(window_s / det.ORBIT_S))
    now = time.time()
    out = []
    for i in range(n):
        first = DEFAULT_START_ORBIT + i * orbits
        rows = simulate(window_s, seed=i, start_orbit=first)
        hits, ancillary = clean(rows)
        ds = compute_products(hits)
        ds["rows"] = ((), np.int64(len(rows)))
        ds["ancillary"] = ((), np.int64(ancillary))
        start = now - (n - i) * window_s
        ds.attrs.update(window_id=i, first_orbit=first, last_orbit=first + orbits - 1, window_start=iso_utc(start),
                        window_end=iso_utc(start + window_s), provenance=json.dumps({"processor": processor}))
        out.append(decode_message(encode_message(ds)))
    return out


def with_id(msg: dict, window_id: int, end: float | None = None, window_s: float = 2.0) -> dict:
    """A copy of a parsed message with another window id (and, optionally, window times ending at ``end``)."""
    from dtlive.core.messages import iso_utc

    window = dict(msg["window"], id=int(window_id))
    if end is not None:
        window.update(start=iso_utc(end - window_s), end=iso_utc(end))
    return {**msg, "window": window}


# ---------------------------------------------------------------- 1. kernel time per update


class _Wire:
    """Widget messages serialised as an ipykernel comm does (``json_clean``, then ``Session.serialize``: JSON of
    header, parent, metadata and content, and its HMAC-SHA256 signature); the socket send is left out."""

    def __init__(self):
        from jupyter_client.session import Session

        self.session = Session(key=uuid.uuid4().hex.encode())
        self.messages = 0
        self.bytes = 0

    def install(self):
        """Make every widget created from now on send through this wire; returns a function that undoes it."""
        import comm
        from comm import DummyComm

        try:
            from ipykernel.jsonutil import json_clean
        except ImportError:  # pragma: no cover - without ipykernel: no cleaning
            def json_clean(obj):
                return obj
        wire = self

        class WireComm(DummyComm):
            def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
                content = json_clean(dict(data=data or {}, comm_id=self.comm_id, **keys))
                msg = wire.session.msg(msg_type, content, metadata=json_clean(metadata or {}))
                parts = wire.session.serialize(msg, ident=self.topic)
                wire.messages += 1
                wire.bytes += sum(len(p) for p in parts) + sum(memoryview(b).nbytes for b in buffers or ())

        old = comm.create_comm
        comm.create_comm = lambda *a, **k: WireComm(*a, **k)
        return lambda: setattr(comm, "create_comm", old)


@contextlib.contextmanager
def _history_with_reference(messages: list[dict]):
    """A temporary DTLIVE_HISTORY holding the reference ``default``: the sum of ``messages``."""
    from dtlive.core.messages import to_dataset
    from dtlive.storage.references import reference_dir, save

    old = os.environ.get("DTLIVE_HISTORY")
    path = tempfile.mkdtemp(prefix="dtlive-bench-dash-history-")
    os.environ["DTLIVE_HISTORY"] = path
    try:
        save("default", to_dataset(messages), reference_dir(path))
        yield Path(path)
    finally:
        if old is None:
            os.environ.pop("DTLIVE_HISTORY", None)
        else:
            os.environ["DTLIVE_HISTORY"] = old
        shutil.rmtree(path, ignore_errors=True)


def _verdict(window_id: int, status: int) -> dict:
    """A ``dtlive.quality/2`` verdict on the 5 windows up to ``window_id`` (chamber 2 at ``status``)."""
    from dtlive.core.messages import QUALITY_TESTS_SCHEMA, iso_utc

    return {"schema": QUALITY_TESTS_SCHEMA, "status": status, "processor": "bench-dashboard",
            "windows": {"count": 5, "ids": [window_id - 4, window_id], "end": iso_utc(time.time())},
            "reference": {"label": "default"}, "detector": {"status": status, "reasons": []},
            "chambers": {f"chamber_{c}": {"status": status if c == 2 else 0, "label": "",
                                          "reasons": ["chamber_rate: ratio 0.5"] if c == 2 and status else []}
                         for c in range(4)}}


def kernel_updates(n: int = 60, history: int = 1800, distinct: int = 30) -> dict:
    """Kernel CPU and wall time of one update per view mode (ms): ``Dashboard.add_messages([one window])``, and
    every 5th window a verdict (``add_periods``); widget messages serialised as a kernel does."""
    from dtlive.ui.widgets import Dashboard

    t0 = time.perf_counter()
    messages = make_messages(distinct)
    log(f"dashboard: {distinct} distinct windows made in {time.perf_counter() - t0:.1f} s")
    out = {}
    cases = [("last", 0, False), ("cumulative", 0, False), ("rolling", 0, False), ("last", 0, True),
             ("last", history, False)]
    wire = _Wire()
    undo = wire.install()
    try:
        with _history_with_reference(messages):
            for mode, preload, log_scale in cases:
                name = f"{mode}{'-log' if log_scale else ''}{f'-history{preload}' if preload else ''}"
                out[name] = _kernel_case(Dashboard, wire, messages, n, mode, preload, log_scale)
                log(f"dashboard: {name}: CPU p50 {out[name]['add_messages_cpu_ms']['p50']} ms, "
                    f"p99 {out[name]['add_messages_cpu_ms']['p99']} ms (wall p99 "
                    f"{out[name]['add_messages_ms']['p99']} ms), {out[name]['widget_messages_per_update']} "
                    "widget messages per update")
    finally:
        undo()
    return out


def _kernel_case(Dashboard, wire: _Wire, messages: list[dict], n: int, mode: str, preload: int,  # noqa: N803
                 log_scale: bool) -> dict:
    distinct = len(messages)
    t0 = time.perf_counter()
    dash = Dashboard(bootstrap="127.0.0.1:1", topic="unused", start=False)  # no feed: fed by hand
    build_ms = (time.perf_counter() - t0) * 1000
    dash.view_mode.value = mode
    dash.log_box.value = log_scale
    if preload:
        dash.live.add([with_id(messages[i % distinct], i) for i in range(preload)])
    base = preload
    for i in range(3):  # warm-up
        dash.add_messages([with_id(messages[i % distinct], base + i)])
    base += 3
    dash.update_ms.clear()
    wall, cpu = [], []
    sent0, bytes0 = wire.messages, wire.bytes
    for i in range(n):
        msg = with_id(messages[i % distinct], base + i)
        t, c = time.perf_counter(), time.thread_time()
        dash.add_messages([msg])
        if (base + i) % 5 == 4:
            dash.add_periods([_verdict(base + i, 2 * ((base + i) // 5 % 2))])
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.thread_time() - c) * 1000)
    assert dash.updates >= n and dash.live.status()["window_id"] == base + n - 1
    return {"add_messages_ms": stats(wall), "add_messages_cpu_ms": stats(cpu), "refresh_ms": stats(dash.update_ms),
            "widget_messages_per_update": round((wire.messages - sent0) / n, 1),
            "widget_kbytes_per_update": round((wire.bytes - bytes0) / n / 1024, 1),
            "build_ms": round(build_ms, 1), "windows_in_history": len(dash.live.points),
            "target_ms": UPDATE_TARGET_MS, "target_met_p99": bool(np.percentile(cpu, 99) <= UPDATE_TARGET_MS)}


# ---------------------------------------------------------------- 2. produce -> browser


_OBSERVER_JS = """() => {
  window.__dtl = {ids: {}, bars: []};
  const seen = () => {
    const e = document.querySelector('.dtlive-window-id');
    if (e && !(e.textContent in window.__dtl.ids)) window.__dtl.ids[e.textContent] = Date.now();
  };
  new MutationObserver(muts => {
    const now = Date.now();
    for (const m of muts) {
      const t = m.target;
      if (t.nodeType === 1 && t.matches('rect.bar') && t.closest('.dtlive-c0-occupancy-bars')) {
        window.__dtl.bars.push(now); break;
      }
    }
    seen();
  }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true,
                             attributeFilter: ['height', 'y']});
  seen();
}"""


def _chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        subprocess.run(["bash", str(ROOT / "scripts" / "install_browser.sh")], check=False, timeout=600)
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} missing and scripts/install_browser.sh could not install it")
    return CHROMIUM


@contextlib.contextmanager
def _state_dir():
    """A temporary DTLIVE_STATE_DIR (broker and Voilà logs) for this benchmark only."""
    old = os.environ.get("DTLIVE_STATE_DIR")
    path = tempfile.mkdtemp(prefix="dtlive-bench-dash-")
    os.environ["DTLIVE_STATE_DIR"] = path
    try:
        yield Path(path)
    finally:
        if old is None:
            os.environ.pop("DTLIVE_STATE_DIR", None)
        else:
            os.environ["DTLIVE_STATE_DIR"] = old
        shutil.rmtree(path, ignore_errors=True)


def browser_latency(n: int = 20, interval_s: float = 1.0, distinct: int = 10) -> dict:
    """Produce ``n`` result messages; time until the page shows each (header id, chamber 0 bars)."""
    from confluent_kafka import Producer
    from playwright.sync_api import sync_playwright

    from dtlive.config import load_config
    from dtlive.deploy.cli import start_dashboard
    from dtlive.kafka.broker import EmbeddedBroker
    from dtlive.kafka.clients import ensure_topics
    from dtlive.ui.live import ResultsFeed

    chromium = _chromium()
    messages = make_messages(distinct)
    header, bars, seen_py, fed = [], [], [], []
    arrived: dict[int, float] = {}
    with _state_dir() as state:
        broker = EmbeddedBroker(port=free_port(), state_dir=state).start()
        voila = None
        try:
            topic = f"bench.dashboard.{uuid.uuid4().hex[:8]}"
            ensure_topics(load_config({"bootstrap": broker.bootstrap}, env={}), broker.bootstrap, [topic])
            producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})

            def produce(i: int) -> float:
                payload = json.dumps(with_id(messages[i % distinct], i, end=time.time()), separators=(",", ":"))
                t = time.time()
                producer.produce(topic, payload.encode())
                producer.flush(10)
                return t

            produce(0)  # so the page has a window to show
            # the same feed the Dashboard runs, in this process: the broker + consumer share of the latency
            def stamp(msgs):
                arrived.update({m["window"]["id"]: time.time() for m in msgs})

            feed = ResultsFeed(broker.bootstrap, stamp, topic=topic, backfill=0).start()
            voila, url = start_dashboard(broker.bootstrap, topic, free_port())
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                t = time.monotonic()
                page.goto(url, timeout=60_000)
                page.wait_for_function("() => document.querySelector('.dtlive-window-id')?.textContent === '0'",
                                       timeout=60_000)
                log(f"dashboard: Voila page showing window 0 after {time.monotonic() - t:.1f} s")
                page.evaluate(_OBSERVER_JS)
                time.sleep(1.0)
                for i in range(1, n + 1):
                    t_prod = produce(i)
                    page.wait_for_function("id => window.__dtl.ids[id] !== undefined", arg=str(i), polling=20,
                                           timeout=15_000)
                    seen_py.append(time.time() - t_prod)
                    t_id = page.evaluate("id => window.__dtl.ids[id]", str(i)) / 1000
                    header.append(t_id - t_prod)
                    time.sleep(0.3)  # let the bar redraw land before reading the stamps
                    changes = [c / 1000 for c in page.evaluate("() => window.__dtl.bars")]
                    after = [c for c in changes if c >= t_prod]
                    bars.append((min(after) - t_prod) if after else float("nan"))
                    fed.append(arrived.get(i, float("nan")) - t_prod)
                    time.sleep(max(0.0, t_prod + interval_s - time.time()))
                browser.close()
            feed.stop()
        finally:
            if voila is not None:
                voila.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    voila.wait(15)
                if voila.poll() is None:
                    voila.kill()
            broker.stop()
    bars_ok = [b for b in bars if np.isfinite(b)]
    # every window produced must have been shown (the header waits fail loudly) and redrawn the bars
    count = count_check(len(bars), len(bars_ok), "occupancy redraws")
    figures_met = bool(header and np.percentile(header, 99) <= BROWSER_TARGET_S
                       and (not bars_ok or np.percentile(bars_ok, 99) <= BROWSER_TARGET_S))
    met, text = verdict(figures_met, [count, count_check(n, len(header), "windows shown")])
    return {
        "messages": n, "interval_s": interval_s,
        "header_window_id_s": stats(header, digits=3),
        "occupancy_bars_changed_s": stats(bars_ok, digits=3),
        "bars_change_not_seen": len(bars) - len(bars_ok),
        "seen_by_playwright_s": stats(seen_py, digits=3),
        "results_feed_in_process_s": stats([f for f in fed if np.isfinite(f)], digits=3),
        "target_s": BROWSER_TARGET_S,
        "target_met_p99": met,
        "verdict": text,
    }


# ---------------------------------------------------------------- runner


def run(quick: bool = False, browser: bool = True, updates: int | None = None) -> dict:
    out: dict = {}
    out["kernel_update"] = kernel_updates(n=updates or (20 if quick else 200), history=600 if quick else 1800,
                                          distinct=10 if quick else 30)
    if not browser:
        return out
    try:
        out["browser"] = browser_latency(n=10 if quick else 20)
    except Exception as exc:  # noqa: BLE001 - e.g. no Chromium: keep the kernel figures
        out["browser"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"dashboard: browser part failed: {out['browser']['error']}")
    return out


def print_table(res: dict) -> None:
    print("\n== dashboard: kernel CPU per update, every plot (Dashboard.add_messages, one window; a verdict every 5th)")
    print(f"  {'case':<22} {'CPU p50':>8} {'CPU p99':>8} {'wall p50':>9} {'wall p99':>9} {'msgs':>5} {'kB':>6} "
          f"{'build ms':>9}  target")
    for name, r in res.get("kernel_update", {}).items():
        a, c = r["add_messages_ms"], r["add_messages_cpu_ms"]
        print(f"  {name:<22} {c['p50']:>8} {c['p99']:>8} {a['p50']:>9} {a['p99']:>9} "
              f"{r.get('widget_messages_per_update', '-'):>5} {r.get('widget_kbytes_per_update', '-'):>6} "
              f"{r['build_ms']:>9}  CPU p99<={r['target_ms']:g}: {'MET' if r['target_met_p99'] else 'MISSED'}")
    b = res.get("browser")
    if b is None:  # --kernel-only
        return
    print("\n== dashboard: result produced -> browser shows it (Voila + Chromium, real broker)")
    if "error" in b:
        print(f"  FAILED: {b['error']}")
        return
    for key, label in (("header_window_id_s", "header window id"), ("occupancy_bars_changed_s", "c0 occupancy bars"),
                       ("seen_by_playwright_s", "seen by Playwright"),
                       ("results_feed_in_process_s", "ResultsFeed callback")):
        s = b[key]
        print(f"  {label:<20} p50 {s.get('p50')} s  p99 {s.get('p99')} s  max {s.get('max')} s  (n={s['n']})")
    print(f"  target p99 <= {b['target_s']} s: {b.get('verdict') or ('MET' if b['target_met_p99'] else 'MISSED')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dashboard", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer windows and messages")
    ap.add_argument("--kernel-only", action="store_true", help="only the kernel CPU per update (no browser)")
    ap.add_argument("--updates", type=int, default=None, help="updates timed per case (default 200, quick 20)")
    args = ap.parse_args(argv)
    res = run(quick=args.quick, browser=not args.kernel_only, updates=args.updates)
    env = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
           "python": sys.version.split()[0], "quick": args.quick, "updates": args.updates,
           "load_average": os.getloadavg()}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                           timeout=10).stdout.strip()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"environment": env, "results": res}, indent=1) + "\n")
    print_table(res)
    print(json.dumps(res, indent=1))
    print(f"\nresults: {RESULTS}")
    return 0 if "error" not in res.get("browser", {}) else 1


if __name__ == "__main__":
    sys.exit(main())
