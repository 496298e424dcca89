"""The CLI as a person sees it: run in a pseudo-terminal of 80 columns and rendered by a terminal emulator (pyte).

What the screen shows is checked, not the bytes written: a live line redrawn in place leaves one row, cut to the
width, with nothing of a longer earlier line behind it.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import uuid

import pexpect
import pyte
import pytest
from datafiles import RUN_CSV

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

COLUMNS, LINES = 80, 24
# every field but lag, rejects and the data age gives way on a narrow terminal
SUMMARY = re.compile(r"(in [\d,]+ msg/s  )?lag [\d,]+  (windows [\d,]+  )?rejects [\d,]+"
                     r"(  #\d+)?(  hits [\d/]+)?(  age -?[\d.]+ s)?")


def spawn(args: list[str], tmp_path) -> pexpect.spawn:
    """``python -m dtlive ARGS`` in an 80 x 24 pseudo-terminal, with its own ledger, history and state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DTLIVE_", "KAFKA_", "COLUMNS", "LINES"))}
    env.update(DTLIVE_DB=f"sqlite:///{tmp_path / 'ledger.sqlite'}", DTLIVE_HISTORY=str(tmp_path / "history"),
               DTLIVE_STATE_DIR=str(tmp_path / "state"), TERM="xterm")
    return pexpect.spawn(sys.executable, ["-m", "dtlive", *args], env=env, dimensions=(LINES, COLUMNS), timeout=5)


def read_until(child: pexpect.spawn, screen: pyte.Screen, stream: pyte.ByteStream, done, seconds: float) -> bool:
    """Feed the child's output to the emulated screen until ``done(rows)`` or ``seconds`` (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            stream.feed(child.read_nonblocking(65536, timeout=0.5))
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            return bool(done(screen.display))
        if done(screen.display):
            return True
    return False


def finish(child: pexpect.spawn, stream: pyte.ByteStream, seconds: float = 30) -> None:
    """Ctrl-C, then the rest of the output until the process exits (killed after ``seconds``)."""
    child.kill(signal.SIGINT)
    deadline = time.monotonic() + seconds
    while child.isalive() and time.monotonic() < deadline:
        try:
            stream.feed(child.read_nonblocking(65536, timeout=0.5))
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            break
    if child.isalive():
        child.terminate(force=True)


def test_demo_redraws_its_summary_in_place_within_80_columns(broker, tmp_path):
    screen, stream = pyte.Screen(COLUMNS, LINES), None
    stream = pyte.ByteStream(screen)
    tag = uuid.uuid4().hex[:8]
    child = spawn(["demo", "--bootstrap", broker, "--no-dashboard", "--rate", "3000", "--format", "daq64",
                   "--input", f"term-hits-{tag}", "--output", f"term-monitor-{tag}", "--rejected", f"term-rej-{tag}",
                   "--group-id", f"term-{tag}", "--duration", "60"], tmp_path)
    try:
        def a_window_shown(rows):
            return any((m := SUMMARY.search(r)) and m.group(5) and "windows 0 " not in r for r in rows)

        assert read_until(child, screen, stream, a_window_shown, 45), "\n".join(screen.display)
        time.sleep(3)  # a few more redraws
        read_until(child, screen, stream, lambda rows: False, 1)
        rows = [r.rstrip() for r in screen.display]
        live = [r for r in rows if SUMMARY.search(r)]
        assert len(live) == 1, rows  # redrawn in place: one row, never a new line per update
        assert SUMMARY.fullmatch(live[0]), f"stale or cut characters on the live row: {live[0]!r}"
        assert len(live[0]) < COLUMNS  # fits, with the cursor's column to spare: no wrap onto a second row
    finally:
        finish(child, stream)
    assert child.exitstatus == 0 or child.signalstatus is None, (child.exitstatus, child.signalstatus)
    assert any("published" in r and "windows" in r for r in screen.display), screen.display


def test_emulate_of_a_file_shows_its_total_and_time_left_at_once(broker, tmp_path):
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    child = spawn(["emulate", "--bootstrap", broker, "--rate", "2000", "--topic", f"term-emu-{uuid.uuid4().hex[:8]}",
                   str(RUN_CSV)], tmp_path)
    started = time.monotonic()
    try:
        def bar_with_total(rows):
            return any(re.search(r"\d+%.*/\s*[\d.,]+[kM]?", r) for r in rows)

        assert read_until(child, screen, stream, bar_with_total, 20), "\n".join(screen.display)
        first_bar = time.monotonic() - started
        time.sleep(2)
        read_until(child, screen, stream, lambda rows: False, 1)
        bars = [r.rstrip() for r in screen.display if re.search(r"\d+%", r)]
        assert len(bars) == 1, screen.display  # the bar redraws in place
        assert len(bars[0]) <= COLUMNS and re.search(r"<\s*\d+:\d\d", bars[0]), bars[0]  # time left (ETA) shown
        assert first_bar < 15
    finally:
        finish(child, stream)
