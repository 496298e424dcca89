"""The ``dtlive`` command line itself: where its options go and what its commands say when they cannot work."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from faults import free_port

from dtlive.config import load_config
from dtlive.deploy.cli import DASHBOARD_PORT, Summary, build_parser, dashboard_port, port_free
from dtlive.kafka.clients import ensure_topics
from dtlive.kafka.results import COLUMNS


def dtlive(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m dtlive ARGS`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "dtlive", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "CI": "true"})


@pytest.mark.parametrize(("before", "after"), [
    (["-v", "process"], ["process", "-v"]),
    (["-vv", "process"], ["process", "-vv"]),
    (["--bootstrap", "h:1", "status", "--json"], ["status", "--bootstrap", "h:1", "--json"]),
    (["--config", "a.toml", "--bootstrap", "h:2", "results", "--last", "3"],
     ["results", "--last", "3", "--config", "a.toml", "--bootstrap", "h:2"]),
    (["--bootstrap", "h:3", "-v", "alerts", "send", "n.json"],
     ["alerts", "send", "n.json", "--bootstrap", "h:3", "-v"]),
])
def test_global_options_before_or_after_the_command_mean_the_same(before, after):
    parser = build_parser()
    assert vars(parser.parse_args(before)) == vars(parser.parse_args(after))


def test_global_options_keep_their_defaults_and_top_level_values():
    parser = build_parser()
    plain = parser.parse_args(["process"])
    assert (plain.bootstrap, plain.config, plain.verbose) == (None, None, 0)
    top = parser.parse_args(["--bootstrap", "h:1", "-v", "process", "--until-end"])
    assert (top.bootstrap, top.verbose, top.until_end) == ("h:1", 1, True)  # not overwritten by the command's level
    both = parser.parse_args(["--bootstrap", "h:1", "process", "--bootstrap", "h:2"])
    assert both.bootstrap == "h:2"  # the nearer one wins


def test_command_help_lists_the_global_options(capsys):
    for command in (["process"], ["status"], ["alerts", "listen"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*command, "--help"])
        text = capsys.readouterr().out
        assert "--bootstrap" in text and "--config" in text and "--verbose" in text, (command, text)


def test_status_with_bootstrap_after_the_command_reports_the_broker_unreachable():
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    out = dtlive("status", "--bootstrap", address)
    assert out.returncode == 1, out
    assert "usage:" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    mine = [ln for ln in out.stderr.splitlines() if ln.startswith("dtlive status: error:")]
    assert len(mine) == 1 and address in mine[0] and "unreachable" in mine[0], out.stderr


def test_dashboard_on_a_taken_port_says_so_and_starts_nothing():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = dtlive("dashboard", "--port", str(port), "--bootstrap", f"127.0.0.1:{free_port()}", timeout=30)
    assert out.returncode == 1, out
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("dtlive dashboard: error:") and f"port {port}" in lines[0], lines
    assert "http://" not in out.stderr + out.stdout  # no URL: nothing was served


def test_dashboard_port_is_the_one_asked_for_or_the_default_or_a_free_one():
    port = free_port()
    assert dashboard_port(port) == port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match=f"port {taken.getsockname()[1]} "):
            dashboard_port(taken.getsockname()[1])
    default_free = port_free(DASHBOARD_PORT)
    chosen = dashboard_port(None)
    if default_free:
        assert chosen == DASHBOARD_PORT
    else:
        assert chosen != DASHBOARD_PORT and port_free(chosen)


def _columns(line: str) -> dict[str, str]:
    return dict(zip(COLUMNS, line.split(), strict=True))


@pytest.mark.kafka
def test_results_prints_each_window_once_with_its_scalars_and_follows_live(broker, topics, capsys):
    import threading

    from confluent_kafka import Producer
    from monitor_messages import encode_message_dict, message

    from dtlive.deploy.cli import main

    topic = topics["monitor_topic"]
    ensure_topics(load_config({}, env={}), broker, [topic])
    producer = Producer({"bootstrap.servers": broker})

    def publish(*windows: int) -> dict[int, dict]:
        sent = {w: message(w, 10 * w + 1, chamber_channel=w % 4 * 16) for w in windows}
        for m in sent.values():
            producer.produce(topic, encode_message_dict(m))
        producer.flush(10)
        return sent

    sent = publish(1, 2, 3, 2)  # window 2 twice (published again)
    assert main(["results", "--bootstrap", broker, "--topic", topic, "--last", "0"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == [w for name in COLUMNS for w in name.split()]
    rows = [_columns(ln) for ln in lines]
    assert [int(r["window"]) for r in rows] == [1, 2, 3]
    for r in rows:
        m = sent[int(r["window"])]
        assert int(r["hits"]) == m["total_hits"] == int(r["rows"])
        assert [int(r[f"ch{c}"]) for c in range(4)] == m["hits_per_chamber"]

    follow = subprocess.Popen([sys.executable, "-m", "dtlive", "results", "--bootstrap", broker, "--topic", topic,
                               "--last", "2", "--follow", "--duration", "12"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "CI": "true"})
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(follow.stdout), daemon=True)
    reader.start()
    try:
        for _ in range(300):  # until the windows present at start are printed (at most 30 s)
            if len(out) >= 3 or follow.poll() is not None:
                break
            time.sleep(0.1)
        more = publish(4, 3, 5, 4)  # new windows, and windows already printed published again
        follow.wait(60)
    finally:
        follow.kill()
    reader.join(10)
    assert follow.returncode == 0, follow.stderr.read()
    assert [ln.split() for ln in out[:1]] == [header.split()] and all(ln.split()[0].isdigit() for ln in out[1:])
    printed = [_columns(ln) for ln in out[1:]]
    assert [int(r["window"]) for r in printed] == [2, 3, 4, 5]
    assert [int(r["hits"]) for r in printed[2:]] == [more[4]["total_hits"], more[5]["total_hits"]]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _running_processor():
    return SimpleNamespace(
        source=SimpleNamespace(messages=123_456, high_watermarks=lambda: {0: 2_000, 1: 3_000},
                               positions={0: 1_500, 1: 3_000}),
        publisher=SimpleNamespace(published=4_321, dead_lettered=17),
        windows=SimpleNamespace(orbit_epoch=time.time() - 1_000.0))


def test_the_live_summary_redraws_in_place_within_80_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    term = _Terminal()
    summary = Summary(term)
    proc = _running_processor()
    summary(proc)
    summary.on_publish({"message": {"window": {"id": 98_765, "last_orbit": 10_000_000},
                                    "hits_per_chamber": [12_345, 23_456, 34_567, 45_678]}})
    summary(proc)
    draws = term.getvalue().split("\r")[1:]
    assert len(draws) == 2
    for draw in draws:
        assert draw.endswith("\x1b[K")  # cleared to the end: a shorter line leaves nothing behind
        assert len(draw.removesuffix("\x1b[K")) <= 79 and "\n" not in draw
    assert "lag 500" in draws[0] and "windows 4,321" in draws[0]
    assert "#98765" in draws[1] and " age " in draws[1]  # the hits per chamber are what gives way
    assert "hits 12345/" not in draws[1]


def test_a_wide_terminal_shows_every_field_and_a_narrow_one_keeps_lag_rejects_and_age():
    summary = Summary(io.StringIO())
    summary.on_publish({"message": {"window": {"id": 98_765, "last_orbit": 10_000_000},
                                    "hits_per_chamber": [12_345, 23_456, 34_567, 45_678]}})
    wide = summary.line(_running_processor(), 200)
    assert "msg/s" in wide and "#98765" in wide and "hits 12345/23456/34567/45678" in wide
    narrow = summary.line(_running_processor(), 40)
    assert len(narrow) <= 40 and narrow.startswith("lag 500") and "rejects 17" in narrow and "age" in narrow


def test_the_summary_in_a_log_is_a_line_each():
    log = io.StringIO()
    summary = Summary(log)
    summary(_running_processor())
    summary(_running_processor())
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("in ") and "\r" not in line for line in lines)


def test_no_reconstruction_reaches_the_configuration():
    from dtlive.deploy.cli import _config, build_parser

    assert _config(build_parser().parse_args(["process", "--no-reconstruction"])).reconstruction is False
    assert _config(build_parser().parse_args(["process"])).reconstruction is True
