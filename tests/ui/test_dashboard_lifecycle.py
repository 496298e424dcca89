"""The Voilà dashboard leaves no kernel and no server behind (real broker, real Voilà, real Chromium).

* a page closed without ``beforeunload`` (a crashed tab, a lost network) loses its kernel within the grace;
* a page that stays open keeps its kernel past the grace, and a page request that never connects is culled;
* SIGTERM to ``dtlive dashboard`` stops it, its Voilà and the kernels within seconds.

Kernels are counted as the ``ipykernel_launcher`` descendants of the Voilà process, read from /proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from browser_fixtures import free_port, poll, stop_popen

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
GRACE_S = 3.0


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                if fields[0] != "Z":
                    out.setdefault(int(fields[1]), []).append(int(entry.name))
    return out


def descendants(pid: int) -> list[int]:
    children, found, todo = _children(), [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def kernels(pid: int) -> list[int]:
    """Kernel processes under ``pid``."""
    out = []
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            if b"ipykernel_launcher" in Path(f"/proc/{p}/cmdline").read_bytes():
                out.append(p)
    return out


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.fixture
def voila(broker, tmp_path, monkeypatch, request):
    """``start_dashboard`` with a short kernel grace, on a monitor topic of its own (no data needed); a test may
    give a shorter wait for a page's first connection (``first_connect_s``) with ``pytest.mark.first_connect_s``."""
    from dtlive.deploy.cli import start_dashboard, stop_dashboard

    monkeypatch.setenv("DTLIVE_STATE_DIR", str(tmp_path))  # Voilà's log goes there
    mark = request.node.get_closest_marker("first_connect_s")
    proc, url = start_dashboard(broker, f"lifecycle-{uuid.uuid4().hex[:8]}", free_port(), kernel_grace_s=GRACE_S,
                                first_connect_s=mark.args[0] if mark else 60.0)
    try:
        yield proc, url
    finally:
        stop_dashboard(proc)
        for log in tmp_path.glob("voila-*.log"):  # shown when the test failed
            print(log.read_text(errors="replace")[-4000:])


def open_dashboard(chromium, url: str):
    page = chromium.new_page()
    page.goto(url, timeout=90_000)
    page.wait_for_selector(".dtlive-state", timeout=90_000)  # the widgets rendered: the kernel's websocket is up
    return page


@pytest.mark.browser
def test_closed_page_loses_its_kernel_open_page_keeps_it(voila, chromium):
    proc, url = voila
    assert kernels(proc.pid) == []
    kept = open_dashboard(chromium, url)
    closed = open_dashboard(chromium, url)
    both = poll(lambda: kernels(proc.pid), lambda k: len(k) == 2, timeout=30)
    assert len(both) == 2, both

    closed.close(run_before_unload=False)  # like a crashed tab: no beforeunload beacon, only the websocket closes
    t0 = time.monotonic()
    left = poll(lambda: kernels(proc.pid), lambda k: len(k) <= 1, timeout=60)
    gone_after = time.monotonic() - t0
    print(f"kernel of the closed page gone after {gone_after:.1f} s (grace {GRACE_S:g} s)")
    assert len(left) == 1, f"the closed page's kernel is still running after 60 s: {left}"
    assert gone_after >= GRACE_S - 0.5, "shut down before the grace: a reconnecting page would lose its kernel"

    # the page still open keeps its kernel well past the grace, and still shows the dashboard
    time.sleep(3 * GRACE_S)  # a negative check: nothing may happen in this time
    assert kernels(proc.pid) == left
    assert kept.inner_text(".dtlive-state")

    kept.close(run_before_unload=False)
    remaining = poll(lambda: kernels(proc.pid), lambda k: not k, timeout=60)
    assert remaining == [], f"kernels left after every page closed: {remaining}"


@pytest.mark.first_connect_s(4 * GRACE_S)
def test_page_that_never_connects_is_culled(voila):
    """A page fetched but never shown (no websocket ever) has its kernel culled too, after the wait for a first
    connection (longer than the grace: a slow browser may still be loading the page)."""
    proc, url = voila
    urllib.request.urlopen(url, timeout=120).read()  # noqa: S310 (loopback): Voilà renders, a kernel starts
    assert len(kernels(proc.pid)) == 1
    t0 = time.monotonic()
    remaining = poll(lambda: kernels(proc.pid), lambda k: not k, timeout=120)
    gone_after = time.monotonic() - t0
    assert remaining == [], f"the kernel of a page that never connected was not culled: {remaining}"
    # the clock may have started one culler pass (the grace) before the page was rendered
    assert gone_after >= 3 * GRACE_S - 0.5, f"culled after {gone_after:.1f} s: before the first-connect wait"


def test_sigterm_stops_dashboard_voila_and_kernels(broker, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DTLIVE_BOOTSTRAP": broker, "DTLIVE_STATE_DIR": str(tmp_path),
           "DTLIVE_MONITOR_TOPIC": f"lifecycle-{uuid.uuid4().hex[:8]}"}
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as out:  # Voilà logs there too: a pipe nobody reads could fill up and block it
        dtlive = subprocess.Popen([sys.executable, "-m", "dtlive", "dashboard", "--port", str(port),
                                   "--kernel-grace", "600s"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"

        def answers() -> bool:
            try:
                urllib.request.urlopen(url, timeout=120).read()  # noqa: S310 (loopback): renders, starts a kernel
                return True
            except OSError:
                return False

        assert poll(answers, bool, timeout=90, every=0.5), "dtlive dashboard did not answer"
        tree = descendants(dtlive.pid)
        voila_pids = _children().get(dtlive.pid, [])
        started = [k for v in voila_pids for k in kernels(v)]
        assert voila_pids and started, f"no Voilà with a kernel under dtlive: {tree}"

        t0 = time.monotonic()
        dtlive.send_signal(signal.SIGTERM)
        code = dtlive.wait(30)
        left = poll(lambda: [p for p in tree if alive(p)], lambda x: not x, timeout=15)
        took = time.monotonic() - t0
        print(f"dtlive dashboard, Voilà and {len(started)} kernel(s) gone {took:.1f} s after SIGTERM")
        assert code == 0, log.read_text()[-2000:]
        assert left == [], f"left running after SIGTERM: {left}"
        assert took < 20
    finally:
        stop_popen(dtlive)
