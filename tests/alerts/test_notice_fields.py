"""Wrong-typed notice fields are rejected with a reason naming the field; mutated real notices give an Alert
or a NoticeError and nothing else, and never stop the listener (real broker).

The GCN JSON examples are read in place from the shared alerts folder (skipped when it is absent).
"""

from __future__ import annotations

import copy
import json
import random
import time

import pytest
from confluent_kafka import Producer
from datafiles import ALERTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtlive.alerts import Alert, NoticeError, alert_to_dict, parse_notice
from dtlive.alerts.notices import REASONS
from dtlive.alerts.rules import AlertDecider, default_rules

FILES = sorted(ALERTS.glob("*.json")) if ALERTS.exists() else []
needs_files = pytest.mark.skipif(not FILES, reason="shared alert examples not available")
BASE = '{"mission": "Swift", "instrument": "BAT", "id": ["1"], "record_number": 2,' \
       ' "trigger_time": "2024-01-01T00:00:00Z", "alert_datetime": "2024-01-01T00:00:10Z"}'


def reason(doc: dict) -> NoticeError:
    with pytest.raises(NoticeError) as info:
        parse_notice(json.dumps(doc).encode(), "gcn.notices.swift.bat.guano")
    return info.value


@pytest.mark.parametrize(("field", "value", "why"), [
    ("trigger_time", None, "bad_time"), ("trigger_time", 1704067200, "bad_time"), ("trigger_time", [], "bad_time"),
    ("alert_datetime", None, "bad_time"), ("alert_datetime", {"t": 1}, "bad_time"),
    ("record_number", "abc", "bad_field"), ("record_number", 2.5, "bad_field"), ("record_number", -1, "bad_field"),
    ("record_number", True, "bad_field"), ("record_number", None, "bad_field"), ("record_number", [2], "bad_field"),
    ("id", 42, "bad_field"), ("id", {"a": 1}, "bad_field"), ("id", None, "bad_field"), ("id", [], "bad_field"),
    ("id", ["1", 2], "bad_field"), ("id", [""], "bad_field"), ("id", True, "bad_field"),
    ("mission", None, "bad_field"), ("instrument", 5, "bad_field"), ("alert_type", ["initial"], "bad_field"),
    ("alert_tense", False, "bad_field"), ("event_name", 3.5, "bad_field"), ("trigger_number", {}, "bad_field"),
])
def test_a_wrong_typed_field_is_rejected_with_a_reason_naming_it(field, value, why):
    e = reason({**json.loads(BASE), field: value})
    assert e.reason == why and field in e.message, e


@pytest.mark.parametrize(("value", "expected"), [(3, 3), (3.0, 3), ("4", 4), (0, 0)])
def test_integer_record_numbers_in_any_json_spelling_are_taken(value, expected):
    doc = {**json.loads(BASE), "record_number": value}
    assert parse_notice(json.dumps(doc)).record_number == expected


def test_igwn_and_voevent_wrong_types():
    e = reason({"superevent_id": "S1", "alert_type": 5})
    assert e.reason == "bad_field" and "alert_type" in e.message
    e = reason({"superevent_id": "S1", "alert_type": "INITIAL", "time_created": None})
    assert e.reason == "bad_time" and "time_created" in e.message
    voevent = ('<VOEvent ivorn="ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1-1" role="observation"><What>'
               '<Param name="Pkt_Ser_Num" value="{}"/></What><WhereWhen><ObsDataLocation><ObservationLocation>'
               '<AstroCoords><Time><TimeInstant><ISOTime>2024-05-12T03:04:05</ISOTime></TimeInstant></Time>'
               '</AstroCoords></ObservationLocation></ObsDataLocation></WhereWhen></VOEvent>')
    assert parse_notice(voevent.format("7")).record_number == 7
    with pytest.raises(NoticeError, match="pkt_ser_num"):
        parse_notice(voevent.format("seven"))


# --- mutated real notices ----------------------------------------------------------------------------------------

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def mutate(doc, rng: random.Random, value):
    """One random change somewhere in a JSON document: replace, delete or add a value at any depth."""
    if isinstance(doc, dict) and doc:
        key = rng.choice(sorted(doc))
        action = rng.random()
        if action < 0.2:
            del doc[key]
        elif action < 0.6 or not isinstance(doc[key], dict | list):
            doc[key] = value
        else:
            mutate(doc[key], rng, value)
    elif isinstance(doc, list) and doc:
        i = rng.randrange(len(doc))
        if isinstance(doc[i], dict | list) and rng.random() < 0.5:
            mutate(doc[i], rng, value)
        else:
            doc[i] = value
    return doc


def outcome(payload, topic: str = "") -> Alert | NoticeError:
    """parse_notice's result: an Alert that serialises and a decider can decide on, or a NoticeError with a reason."""
    try:
        alert = parse_notice(payload, topic)
    except NoticeError as e:
        assert e.reason in REASONS and e.reason != "internal_error", e
        assert e.message and str(e).startswith(e.reason)
        return e
    assert isinstance(alert, Alert)
    json.dumps(alert_to_dict(alert), allow_nan=False)
    AlertDecider(default_rules()).decide(alert, run_tests=True)  # the rules take any parsed alert
    return alert


@needs_files
@PROPERTY
@given(path=st.sampled_from(FILES or [None]), seed=st.integers(0, 2**32), n=st.integers(1, 4),
       value=values)
def test_property_mutated_example_notices_give_an_alert_or_a_notice_error(path, seed, n, value):
    rng = random.Random(seed)
    doc = json.loads(path.read_text())
    for _ in range(n):
        doc = mutate(doc, rng, copy.deepcopy(value))
    outcome(json.dumps(doc).encode(), "gcn.notices.swift.bat.guano")


@needs_files
@PROPERTY
@given(path=st.sampled_from(FILES or [None]), cut=st.integers(0, 4000), flips=st.lists(
    st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=4))
def test_property_damaged_example_bytes_give_an_alert_or_a_notice_error(path, cut, flips):
    data = bytearray(path.read_bytes()[: max(cut, 1)] if cut % 3 == 0 else path.read_bytes())
    for at, byte in flips:
        if data:
            data[at % len(data)] = byte
    outcome(bytes(data))


@needs_files
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("field", ["trigger_time", "record_number", "id"])
def test_each_example_with_a_core_field_nulled_is_rejected_with_a_reason(path, field):
    doc = json.loads(path.read_text())
    doc[field] = None
    e = outcome(json.dumps(doc).encode())
    assert isinstance(e, NoticeError) and e.reason in ("bad_field", "bad_time") and field in e.message


def committed(bootstrap: str, topic: str, at_least: int, timeout: float = 30.0) -> list:
    """The committed records of a topic: read until ``at_least`` are there and 1 s passes without more."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "t-read", "isolation.level": "read_committed",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out, quiet, started = [], time.monotonic(), time.monotonic()
    while (len(out) < at_least or time.monotonic() - quiet < 1.0) and time.monotonic() - started < timeout:
        msgs = [m for m in c.consume(500, 0.2) if not m.error()]
        if msgs:
            quiet = time.monotonic()
        out += msgs
    c.close()
    return out


# --- the listener against the real broker --------------------------------------------------------------------------


@needs_files
def test_the_listener_survives_mutated_notices_and_dead_letters_each_broken_one(broker, tmp_path):
    from dtlive.alerts.listener import AlertListener
    from dtlive.alerts.rules import load_rules
    from dtlive.config import load_config
    from dtlive.kafka.clients import ensure_topics
    from dtlive.storage.ledger import Ledger

    tag = tmp_path.name[-8:]
    topic = f"gcn.notices.mut{tag}"
    cfg = load_config({"bootstrap": broker, "alerts_rejected_topic": f"alerts-rej-{tag}",
                       "analyses_topic": f"analyses-{tag}", "alerts_group_id": f"alerts-{tag}",
                       "alert_topics": topic}, env={})
    ensure_topics(cfg, broker, [topic])
    rng = random.Random(19)
    payloads, expected_rejects = [], 0
    for i in range(60):
        doc = json.loads(FILES[i % len(FILES)].read_text())
        value = rng.choice([None, 7, -1.5, "x", [], {}, True, ["a", 1]])
        payload = json.dumps(mutate(doc, rng, value)).encode() if i % 5 else b'{"mission": "Swift", "id": ['
        payloads.append(payload)
        expected_rejects += isinstance(outcome(payload, topic), NoticeError)
    p = Producer({"bootstrap.servers": broker})
    for payload in payloads:
        p.produce(topic, payload)
    p.flush(10)
    never = load_rules('[[rule]]\nname = "none"\ntopics = ["nothing.here"]\nanalyses = ["snapshot"]\n')
    listener = AlertListener(cfg, broker, ledger=Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}"), rules=never,
                             workers=1, artifacts_dir=tmp_path / "artifacts")
    try:
        deadline = time.monotonic() + 60
        while listener.counts["notices"] < len(payloads) and time.monotonic() < deadline:
            listener.poll(0.5)
        listener.producer.flush(10)
    finally:
        listener.close()
    assert listener.counts["notices"] == len(payloads)
    assert expected_rejects >= 12 and listener.counts["rejected"] == expected_rejects
    letters = committed(broker, cfg.alerts_rejected_topic, expected_rejects)
    assert len(letters) == expected_rejects
    assert all(dict(m.headers())["reason"].decode() in REASONS for m in letters)
