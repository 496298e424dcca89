"""The alarm panel: pure (events folded into open alarms newest first, the Acknowledge button only on latched ones),
and in a real browser: Voilà serves a notebook with the panel on the session broker, an alarm published on the
alarm topic appears in Chromium, the Acknowledge button is clicked there, and the acknowledgement reaches the
topic and, through the recorder's alarm desk, the ledger."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
from browser_fixtures import ROOT, free_port, screenshot

from dtlive.config import load_config
from dtlive.core.alarms import on_status
from dtlive.core.messages import iso_utc
from dtlive.ui.alarms import AlarmPanel

T0 = 1_764_928_800.0


def change(chamber, previous, status, t, reasons=("dead_channels: 64 dead",)):
    return {"processor": "p", "chamber": chamber, "previous": previous, "status": status, "label": None,
            "reasons": list(reasons), "start": iso_utc(T0 + t)}


def test_the_panel_shows_open_alarms_newest_first_with_a_button_for_latched_ones():
    panel = AlarmPanel(bootstrap="127.0.0.1:1", start=False, by="alice")
    board, events = {}, []
    for c, prev, status, t in [(0, 0, 2, 0), (3, 0, 4, 5), (0, 2, 0, 10)]:
        board, new = on_status(board, change(c, prev, status, t))
        events += new
    panel.add_events(events + events)  # each event once
    rows = panel.rows.children
    assert [a.chamber for a in panel.shown()] == [3, 0]  # newest first
    assert "ERROR</b> chamber 3" in rows[0].children[0].value and "10:00:05 UTC" in rows[0].children[0].value
    assert "WARNING</b> chamber 0" in rows[1].children[0].value and "ok again" in rows[1].children[0].value
    assert not rows[0].children[1].disabled and "2 waiting" in panel.title.value
    panel.name.value = ""
    assert panel.acknowledge(panel.shown()[0].id) is None and "type your name" in panel.message.value


@pytest.fixture
def served_panel(chromium, broker, tmp_path):
    """Voilà serving a notebook with an AlarmPanel on a fresh alarm topic of the session broker; the page open."""
    import nbformat

    from dtlive.deploy.cli import stop_dashboard
    from dtlive.kafka.clients import ensure_topics

    cfg = load_config({"bootstrap": broker, "alarm_topic": f"alarms-{uuid.uuid4().hex[:8]}"}, env={})
    ensure_topics(cfg, broker, [cfg.alarm_topic])
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from dtlive.ui.alarms import AlarmPanel\n"
        f"AlarmPanel(bootstrap={broker!r}, topic={cfg.alarm_topic!r}, by='browser-tester')")]
    nbformat.write(nb, tmp_path / "alarms.ipynb")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "IPYTHONDIR": str(tmp_path / "ipython")}
    log = tmp_path / "voila.log"
    with open(log, "wb") as out:
        voila = subprocess.Popen(
            [sys.executable, "-m", "voila", str(tmp_path / "alarms.ipynb"), f"--port={port}", "--no-browser",
             "--Voila.ip=127.0.0.1", "--theme=light", "--VoilaConfiguration.show_tracebacks=True"],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    page = chromium.new_page(viewport={"width": 1100, "height": 700})
    page.set_default_timeout(30_000)
    try:
        deadline = time.monotonic() + 60
        while voila.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/voila/static/", timeout=1).close()  # noqa: S310
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                assert time.monotonic() < deadline, f"Voilà did not start:\n{log.read_text()[-3000:]}"
                time.sleep(0.2)
        page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
        page.wait_for_selector(".dtlive-alarm-title", timeout=60_000)
        yield cfg, page
    except Exception:
        print(log.read_text()[-3000:])
        raise
    finally:
        page.close()
        stop_dashboard(voila)


@pytest.mark.slow
def test_an_alarm_appears_in_the_browser_and_is_acknowledged_there(served_panel, broker, tmp_path):
    from dtlive.kafka.alarms import read_alarm_events
    from dtlive.storage.alarm_desk import AlarmDesk
    from dtlive.storage.ledger import Ledger

    cfg, page = served_panel
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    desk = AlarmDesk(cfg, broker, ledger)  # the recorder's: raises the alarm, then hears the acknowledgement
    try:
        (raised,) = desk.status_changes([{"processor": "p", "chamber": 2, "previous": 0, "status": 4,
                                          "label": "bad", "reasons": ["dead_channels: 64 dead channel(s)"],
                                          "start": iso_utc(time.time())}])
        line = page.wait_for_selector(f".dtlive-alarm-line[data-alarm='{raised['alarm_id']}']", timeout=30_000)
        text = line.inner_text()
        assert "ERROR" in text and "chamber 2" in text and "dead_channels: 64 dead channel(s)" in text
        assert raised["time"][11:19] in text and line.get_attribute("data-state") == "active"
        screenshot(page, "alarm-panel-raised")
        page.click(".dtlive-alarm .dtlive-alarm-ack")
        page.wait_for_selector(f".dtlive-alarm-line[data-alarm='{raised['alarm_id']}'][data-state='acknowledged']",
                               timeout=30_000)
        assert "acknowledged by browser-tester" in page.inner_text(".dtlive-alarm-panel")
        screenshot(page, "alarm-panel-acknowledged")
        acks = [e for e in read_alarm_events(cfg, broker) if e["event"] == "acknowledged"]
        assert [(a["alarm_id"], a["by"]) for a in acks] == [(raised["alarm_id"], "browser-tester")]
        deadline = time.monotonic() + 20
        while desk.acks == 0 and time.monotonic() < deadline:
            desk.poll(0.5)
        assert desk.board[raised["alarm_id"]].state == "acknowledged"
    finally:
        desk.close()
    assert [e["event"] for e in ledger.alarm_events()] == ["raised", "acknowledged"]
    assert ledger.alarms()[0]["acked_by"] == "browser-tester"
