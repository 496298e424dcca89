"""Dead letters always fit on the broker, are written once (in the window's transaction), and poison input
(huge payloads, far-ahead orbits, implausible epoch headers, oversized notices) never stops a service.

The pure function first, then the real embedded broker: ``dtlive process`` in a subprocess (SIGKILL and
restart; a 5 MB malformed message), the processor in-process, and the alert listener.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from contracts import read_messages, valid_dead_letter

from dtlive.config import load_config
from dtlive.core import detector as det
from dtlive.kafka.clients import ensure_topics
from dtlive.kafka.deadletter import DEFAULT_MAX_BYTES, MAX_DETAIL_BYTES, dead_letter

BASE_ORBIT = 3_387_200_000


# --- the pure function ----------------------------------------------------------------------------------------


def test_small_payloads_are_kept_whole_with_their_source():
    d = dead_letter(b"2,0,5,abc,1,1", "non_numeric", "", "dt.hits", 3, 1234)
    assert d.value == b"2,0,5,abc,1,1" and d.header("truncated") == "false"
    assert (d.header("reason"), d.header("source_topic"), d.header("source_partition"), d.header("source_offset")) \
        == ("non_numeric", "dt.hits", "3", "1234")
    assert d.header("original_size") == "13" and d.header("sha256") == hashlib.sha256(b"2,0,5,abc,1,1").hexdigest()


@pytest.mark.parametrize("size", [DEFAULT_MAX_BYTES, DEFAULT_MAX_BYTES + 1, 5_000_000])
def test_payloads_above_the_limit_are_cut_and_say_so(size):
    payload = os.urandom(size)
    d = dead_letter(payload, "oversized", "", "dt.hits", 0, 7)
    assert len(d.value) == min(size, DEFAULT_MAX_BYTES) and payload.startswith(d.value)
    assert d.header("truncated") == ("true" if size > DEFAULT_MAX_BYTES else "false")
    assert int(d.header("original_size")) == size and d.header("sha256") == hashlib.sha256(payload).hexdigest()
    assert len(d.value) + sum(len(k) + len(v) for k, v in d.headers) < DEFAULT_MAX_BYTES + 2048


def test_the_detail_is_cut_on_a_character_boundary_and_nothing_is_required():
    d = dead_letter(None, "error", "é" * 1000, "t" * 1000, -1, -1, max_bytes=0)
    detail = dict(d.headers)["detail"]
    assert len(detail) <= MAX_DETAIL_BYTES and detail.decode() == "é" * (len(detail) // 2)
    assert d.value == b"" and d.header("original_size") == "0" and len(d.header("source_topic")) == 249
    with pytest.raises(ValueError):
        dead_letter(b"x", "r", "", "t", 0, 0, max_bytes=-1)


def test_the_limit_is_configured_in_the_one_config_model():
    assert load_config({}, env={}).dead_letter_max_bytes == DEFAULT_MAX_BYTES
    assert load_config({}, env={"DTLIVE_DEAD_LETTER_MAX_BYTES": "2048"}).dead_letter_max_bytes == 2048
    for bad in ("10", "2000000"):
        with pytest.raises(ValueError, match="dead_letter_max_bytes"):
            load_config({}, env={"DTLIVE_DEAD_LETTER_MAX_BYTES": bad})


# --- helpers against the real broker ----------------------------------------------------------------------------


def dead_letters(bootstrap: str, topic: str, quiet_s: float = 2.0, timeout: float = 60.0) -> list:
    """Every committed record of a dead-letter topic (read_committed), read until quiet."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "t-dead", "isolation.level": "read_committed",
                  "enable.auto.commit": False, "enable.partition.eof": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out, quiet, started = [], time.monotonic(), time.monotonic()
    while time.monotonic() - quiet < quiet_s and time.monotonic() - started < timeout:
        msgs = [m for m in c.consume(1000, 0.3) if not m.error()]
        if msgs:
            quiet = time.monotonic()
        out += msgs
    c.close()
    return out


def headers(m) -> dict[str, str]:
    """A dead letter's headers as text, checked against the dead-letter contract."""
    return valid_dead_letter(m)


def start_processor(broker, topics, *extra, env=None):
    args = [sys.executable, "-m", "dtlive", "--bootstrap", broker, "process", "--input", topics["hits_topic"],
            "--output", topics["monitor_topic"], "--rejected", topics["rejected_topic"], "--group-id",
            topics["group_id"], "--from-beginning", "--batch-size", "200", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "CI": "true", **(env or {})})


def wait_for(condition, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode()[-3000:] if proc.stdout else ""
            raise AssertionError(f"the processor exited ({proc.returncode}) while waiting for {what}:\n{out}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def row(i: int, rate: float) -> bytes:
    """Good row ``i`` of a feed at ``rate`` rows/s: event time keeps pace with the feed."""
    orbit = BASE_ORBIT + int(i / rate / det.ORBIT_S)
    return f"2,{i % 2},{i % 64},{orbit},{i % 3564},{i % 30}".encode()


BAD = [b"2,0,5,abc,1,1", b"2,0,5", b"", b"2,9,5,3387200000,1,1", b"7,0,0,0,0,0"]


def feed(broker: str, topic: str, n: int, rate: float, bad_every: int, sent: dict, stop: threading.Event):
    """Produce ``n`` messages at ``rate``/s, one bad row every ``bad_every``; record offsets of each kind."""
    p = Producer({"bootstrap.servers": broker, "linger.ms": 5, "enable.idempotence": True})

    def delivered(kind):
        return lambda err, msg: sent[kind].append(msg.offset()) if err is None else sent["errors"].append(err)

    started = time.monotonic()
    for i in range(n):
        if stop.is_set():
            break
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        bad = i % bad_every == bad_every - 1
        value = BAD[(i // bad_every) % len(BAD)] if bad else row(i, rate)
        p.produce(topic, value, headers=[("format", b"csv")], on_delivery=delivered("bad" if bad else "good"))
        p.poll(0)
    p.flush(30)


# --- the processor: exactly once under kill -9, and a huge payload -----------------------------------------------


@pytest.mark.slow
def test_dead_letters_are_written_exactly_once_across_a_kill_9(broker, topics):
    """A throttled feed with bad rows; the processor is killed (SIGKILL) while it flows, then restarted."""
    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    sent: dict[str, list] = {"good": [], "bad": [], "errors": []}
    stop = threading.Event()
    n, rate = 120_000, 1_000.0  # at most 2 min of event time; it stops 2 s after the kill
    feeder = threading.Thread(target=feed, args=(broker, topics["hits_topic"], n, rate, 10, sent, stop), daemon=True)
    feeder.start()
    first = start_processor(broker, topics)
    try:
        wait_for(lambda: len(read_messages(broker, topics["monitor_topic"], timeout=2)) >= 2, 90, "2 windows", first)
        assert feeder.is_alive(), "the feed ended before the kill: the kill would prove nothing"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        time.sleep(2)  # rows keep coming while nothing reads them
        stop.set()
        feeder.join(60)
        assert not feeder.is_alive() and not sent["errors"]
        second = start_processor(broker, topics, "--until-end")
        out, _ = second.communicate(timeout=180)
        assert second.returncode == 0, out.decode()[-3000:]
    finally:
        stop.set()
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()

    letters = dead_letters(broker, topics["rejected_topic"])
    where = Counter((headers(m)["source_partition"], int(headers(m)["source_offset"])) for m in letters)
    twice = {k: c for k, c in where.items() if c > 1}
    assert not twice, f"dead letters written more than once: {sorted(twice)[:10]}"
    bad = len(sent["bad"])
    assert sorted(o for _, o in where) == sorted(sent["bad"]) and bad >= 10
    reasons = Counter(headers(m)["reason"] for m in letters)  # the five bad rows of BAD, one after the other
    kinds = ["non_numeric", "field_count", "empty", "out_of_range", "unknown_head"]
    assert reasons == {k: bad // 5 + (i < bad % 5) for i, k in enumerate(kinds)}
    msgs = read_messages(broker, topics["monitor_topic"])
    ids = [m["window"]["id"] for m in msgs]
    assert len(ids) == len(set(ids)) and len({m["provenance"]["run_id"] for m in msgs}) == 2
    assert sum(m["total_hits"] for m in msgs) == len(sent["good"])  # every good row counted once
    assert sum(sum(m["counts"]["rejected"].values()) for m in msgs) == len(sent["bad"])


def test_a_5_mb_malformed_message_is_dead_lettered_cut_and_the_stream_goes_on(broker, topics):
    """``dtlive process`` running live: good rows, a 5 MB line (over the broker's 1 MB default), good rows."""
    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    p = Producer({"bootstrap.servers": broker, "linger.ms": 5, "message.max.bytes": 10_000_000})
    rate = 1000.0
    huge = b"2,0,5," + b"9" * 5_000_000
    proc = start_processor(broker, topics)
    try:
        for i in range(3000):  # 3 s of event time: window 0 closes
            p.produce(topics["hits_topic"], row(i, rate), headers=[("format", b"csv")])
        p.flush(30)
        wait_for(lambda: len(read_messages(broker, topics["monitor_topic"], timeout=2)) >= 1, 60, "a window", proc)
        offsets = []
        p.produce(topics["hits_topic"], huge, headers=[("format", b"csv")],
                  on_delivery=lambda err, msg: offsets.append(msg.offset() if err is None else err))
        for i in range(3000, 9000):  # 3 more windows' worth
            p.produce(topics["hits_topic"], row(i, rate), headers=[("format", b"csv")])
        p.flush(30)
        assert len(offsets) == 1 and isinstance(offsets[0], int), offsets

        def windows_after_the_poison():
            msgs = read_messages(broker, topics["monitor_topic"], timeout=2)
            return any(i["first_offset"] > offsets[0] for m in msgs for i in m["provenance"]["inputs"])

        wait_for(windows_after_the_poison, 60, "windows of the rows after the 5 MB message", proc)
        assert proc.poll() is None, "the processor stopped"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out.decode(), out.decode()[-3000:]
    (letter,) = [m for m in dead_letters(broker, topics["rejected_topic"]) if headers(m)["reason"] == "oversized"]
    h = headers(letter)
    assert len(letter.value()) == DEFAULT_MAX_BYTES and huge.startswith(letter.value())
    assert h["truncated"] == "true" and int(h["original_size"]) == len(huge)
    assert h["sha256"] == hashlib.sha256(huge).hexdigest()
    assert (h["source_topic"], h["source_partition"], int(h["source_offset"])) == (topics["hits_topic"], "0",
                                                                                    offsets[0])
    msgs = read_messages(broker, topics["monitor_topic"])
    assert sum(m["counts"]["rejected"].get("oversized", 0) for m in msgs) == 1


def test_far_ahead_orbits_and_bad_epoch_headers_through_the_processor(broker, topics):
    """One corrupt orbit and one message with an absurd epoch header: counted, dead-lettered, nothing late."""
    from dtlive.streaming.processor import Processor

    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    p = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    rate, n = 1000.0, 6000
    epoch_ok = [("format", b"csv"), ("orbit_epoch", b"1700000000.0")]
    for i in range(n):
        value = row(i, rate)
        hdrs = epoch_ok if i == 0 else [("format", b"csv")]
        if i == 2500:
            value = b"2,0,5,4000000000,7,3"  # a corrupt orbit, ~100 hours ahead
        if i == 4000:
            hdrs = [("format", b"csv"), ("orbit_epoch", b"1e30")]
        p.produce(topics["hits_topic"], value, headers=hdrs)
    p.flush(30)
    cfg = load_config({"bootstrap": broker, **topics}, env={})
    proc = Processor(cfg, broker, from_beginning=True, batch_size=300)
    proc.run(until_end=True, max_seconds=120)
    proc.close()
    msgs = read_messages(broker, topics["monitor_topic"])
    rejected = Counter()
    for m in msgs:
        rejected.update(m["counts"]["rejected"])
    assert rejected == {"orbit_out_of_range": 1, "bad_epoch": 1}
    assert sum(m["counts"]["late_hits"] for m in msgs) == 0
    assert sum(m["total_hits"] for m in msgs) == n - 2
    assert {m["provenance"]["orbit_epoch"] for m in msgs} == {1700000000.0}
    letters = {headers(m)["reason"]: (int(headers(m)["source_offset"]), m.value())
               for m in dead_letters(broker, topics["rejected_topic"])}
    assert letters["orbit_out_of_range"] == (2500, b"2,0,5,4000000000,7,3")
    assert letters["bad_epoch"][0] == 4000


# --- the alert listener --------------------------------------------------------------------------------------------


def test_an_oversized_broken_notice_is_dead_lettered_cut(broker, tmp_path):
    from dtlive.alerts.listener import AlertListener
    from dtlive.storage.ledger import Ledger

    tag = tmp_path.name[-8:]
    cfg = load_config({"bootstrap": broker, "alerts_rejected_topic": f"alerts-rej-{tag}",
                       "analyses_topic": f"analyses-{tag}", "alerts_group_id": f"alerts-{tag}",
                       "alert_topics": f"gcn.notices.t{tag}"}, env={})
    listener = AlertListener(cfg, broker, ledger=Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}"), workers=1,
                             artifacts_dir=tmp_path / "artifacts")
    try:
        notice = b'{"mission": "Swift", "id": "1", "pad": "' + b"x" * 2_000_000  # 2 MB, not even closed
        assert listener.handle(notice, f"gcn.notices.t{tag}", 0, 41) is None
        listener.producer.flush(10)
    finally:
        listener.close()
    (letter,) = dead_letters(broker, cfg.alerts_rejected_topic)
    h = headers(letter)
    assert h["reason"] == "not_json" and h["truncated"] == "true" and int(h["original_size"]) == len(notice)
    assert len(letter.value()) == DEFAULT_MAX_BYTES and h["sha256"] == hashlib.sha256(notice).hexdigest()
    assert (h["source_topic"], h["source_offset"]) == (f"gcn.notices.t{tag}", "41")
    assert listener.counts["rejected.not_json"] == 1


def test_a_partition_actor_rejects_far_ahead_orbits_too(broker, topics):
    """The Dask partition actor runs the same dt_event_windows node with the configured jump rule (used here
    directly, as an ordinary object, on two partitions of the real broker)."""
    from dtlive.streaming.dask_actor import PartitionActor

    ensure_topics(load_config({}, env={}), broker, {topics["hits_topic"]: 2})
    p = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    rate, n = 1000.0, 6000
    for i in range(n):
        value = b"2,1,5,4000000000,7,3" if i == 2001 else row(i, rate)
        p.produce(topics["hits_topic"], value, headers=[("format", b"csv")], partition=i % 2)
    p.flush(30)
    cfg = load_config({"bootstrap": broker, **topics}, env={})
    actor = PartitionActor(cfg, broker, [0, 1], {0: 0, 1: 0}, batch_size=250)
    shares, counts, rejects = {}, Counter(), []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rep = actor.step(-1, {}, targets={0: n // 2, 1: n // 2})
            shares.update(rep.shares)
            counts.update(rep.counts)
            rejects += rep.rejects
            if rep.done:
                break
    finally:
        actor.close()
    assert counts["rejected.orbit_out_of_range"] == 1 and counts["late_hits"] == 0
    (r,) = rejects
    assert (r.reason, r.partition, r.offset, r.payload) == ("orbit_out_of_range", 1, 1000, b"2,1,5,4000000000,7,3")
    assert sum(s.partial.hits for s in shares.values()) == n - 1
