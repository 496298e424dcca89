"""The message contracts as files (dtlive.core.schemas): every message the code builds is valid, broken ones
are refused with the field named, and the schema files agree with the code's own lists of names."""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from contracts import valid, valid_dead_letter
from datafiles import ALERTS, RUN_CSV
from jsonschema import Draft202012Validator

from dtlive.alerts import parse_notice
from dtlive.alerts.analyses import AnalysisContext, AnalysisResult, get_analysis
from dtlive.alerts.notices import FORMATS
from dtlive.alerts.notices import REASONS as NOTICE_REASONS
from dtlive.config import load_config
from dtlive.core import detector as det
from dtlive.core.checks import KINDS as TEST_KINDS
from dtlive.core.checks import STATUSES as TEST_STATUSES
from dtlive.core.decode import REASONS as HIT_REASONS
from dtlive.core.decode import read_csv
from dtlive.core.messages import DEAD_LETTER_SCHEMA, VARIABLES, iso_utc, message_dict
from dtlive.core.products import compute_products
from dtlive.core.quality import KINDS, Period, QualityMonitor
from dtlive.core.rows import Rows, clean
from dtlive.core.schemas import SCHEMA_IDS, ContractError, schema, schema_file, validate
from dtlive.core.windows import EventTimeWindows
from dtlive.kafka.deadletter import dead_letter
from dtlive.kafka.health import SERVICES, STATES, Heartbeat, partition_lag, status_message
from dtlive.storage.history import HistoryStore
from dtlive.storage.recorder import quality_message
from dtlive.streaming.nodes import window_message
from dtlive.streaming.processor import run_provenance

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "dtlive" / "core" / "schemas"
EPOCH = 1.7e9


# ------------------------------------------------------------------------------------------- the files


def test_every_schema_id_has_a_valid_draft_2020_12_schema_shipped_with_the_package():
    files = sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json"))
    assert files == sorted(schema_file(s) for s in SCHEMA_IDS) and len(files) == 8
    for sid in SCHEMA_IDS:
        s = schema(sid)
        assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(s)
        assert s["title"].startswith(sid + ":")
        if sid != DEAD_LETTER_SCHEMA:
            assert s["properties"]["schema"] == {"const": sid} and "schema" in s["required"]
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "core/schemas/*.schema.json" in package_data["dtlive"]


def test_schema_returns_a_copy_and_unknown_ids_are_refused():
    schema("dtlive.status/1")["properties"].clear()
    assert "state" in schema("dtlive.status/1")["properties"]
    with pytest.raises(ContractError, match="unknown schema id 'dtlive.status/2'"):
        schema("dtlive.status/2")
    with pytest.raises(ContractError, match="no schema id"):
        validate({"service": "recorder"})
    with pytest.raises(ContractError, match="not a JSON object"):
        validate(["dtlive.status/1"])


def test_schema_names_agree_with_the_code():
    status = schema("dtlive.status/1")["properties"]
    assert status["service"]["enum"] == list(SERVICES) and status["state"]["enum"] == list(STATES)
    quality = schema("dtlive.quality/1")["properties"]
    assert quality["reason"]["enum"] == list(KINDS) and set(quality["kind"]["enum"]) == set(KINDS.values())
    assert schema("dtlive.alert/1")["properties"]["format"]["enum"] == list(FORMATS)
    test = schema("dtlive.quality/2")["$defs"]["test"]["properties"]
    assert test["kind"]["enum"] == list(TEST_KINDS) and test["status"]["enum"] == list(TEST_STATUSES)
    reasons = schema(DEAD_LETTER_SCHEMA)["properties"]["reason"]["enum"]
    assert set(reasons) == set(HIT_REASONS) | set(NOTICE_REASONS)
    monitor = schema("dtlive.monitor/1")
    assert monitor["properties"]["hits_per_chamber"]["maxItems"] == det.N_CHAMBERS
    assert list(monitor["properties"]["variables"]["properties"]) == list(VARIABLES)
    occ = monitor["properties"]["histograms"]["properties"]["channel_occupancy"]
    assert occ["required"] == [f"chamber_{c}" for c in range(det.N_CHAMBERS)]
    msg = message_dict(compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0])))
    for product, defs in (("channel_occupancy", ("tdc_channel_edges_0", "tdc_channel_edges_1")),
                          ("active_channels_per_orbit", ("multiplicity_edges",) * 2)):
        for c in range(det.N_CHAMBERS):
            edges = msg["histograms"][product][f"chamber_{c}"]["bin_edges"]
            assert monitor["$defs"][defs[c % 2]]["const"] == edges
            assert len(edges) == det.CHANNELS_PER_CHAMBER + 1


# ----------------------------------------------------------------------------------- real messages pass


def real_windows(n_windows: int = 3) -> list:
    if not RUN_CSV.is_file():
        pytest.skip(f"real run data not available at {RUN_CSV}")
    hits, _ = clean(read_csv(str(RUN_CSV)))
    hits = hits.select(np.arange(min(len(hits), 60_000)))
    w = EventTimeWindows.from_seconds(2.0, 0.5)
    closed = (w.add(hits)[0] + w.flush())[:n_windows]
    for win in closed:
        win.meta = {"orbit_epoch": EPOCH, "counts": {"rows": len(win.hits), "rejected.field_count": 2},
                    "positions": {0: 10}, "restart_offsets": {0: 3}}
        win.inputs = {0: (0, 9)}
    return closed


def test_window_results_of_real_data_are_valid():
    cfg = load_config({"bootstrap": "127.0.0.1:9"}, env={})
    windows = real_windows()
    for i, win in enumerate(windows):
        msg = window_message(win, provenance=run_provenance(cfg, "r1"))
        msg["provenance"]["result_seq"] = i + 1  # as the processor sets it
        msg = valid(json.dumps(msg))
        assert msg["window"]["start"] is not None and msg["total_hits"] > 0
        assert msg["counts"]["rejected"] == {"field_count": 2}
    ds = compute_products(windows[0].hits)  # the xarray path, without any window attrs
    valid(message_dict(ds))


def test_heartbeats_are_valid():
    lag = partition_lag({0: 10, 1: 5}, {0: 4}, newest_orbit={0: 0}, orbit_epoch=100.0, now=101.0, topic="t")
    valid(status_message("processor", run_id="r", state="running", seq=3, now=100.0, host="h", pid=7, lag=lag,
                         rates={"input_msgs_per_s": 500}, counts={"windows": 4}, errors={"late": 1},
                         last_error={"text": "WARNING x: y", "time": 99.0}, started_at=90.0, config_hash="abc",
                         detail={"analyses_pending": 0}))
    for service in SERVICES:
        valid(status_message(service, run_id="r", state="idle", seq=0, now=1.0))

    class Producer:
        sent: list = []

        def produce(self, topic, value, **kw):
            self.sent.append(value)

        def poll(self, timeout=0):
            return 0

        def flush(self, timeout=0):
            return 0

    cfg = load_config({"status_topic": "st"}, env={})
    hb = Heartbeat("recorder", cfg, "127.0.0.1:9", producer=Producer(), create_topic=False)
    hb.beat(state="running", counts={"windows": 3}, lag=lag)
    hb.close()
    states = [valid(v)["state"] for v in hb.producer.sent]  # the bytes the heartbeat thread produces
    assert states == ["starting", "running", "stopped"]


def window(i: int, n: int = 400) -> dict:
    ch = np.arange(n) % 256
    ds = compute_products(Rows.from_columns(head=[2] * n, fpga=ch // 128, channel=ch % 128, orbit=[i] * n,
                                            bx=[0] * n, tdc=[0] * n))
    ds.attrs.update(window_id=i, first_orbit=i, last_orbit=i, window_start=iso_utc(EPOCH + 2 * i),
                    window_end=iso_utc(EPOCH + 2 * i + 2))
    return json.loads(json.dumps(message_dict(ds)))


def test_quality_periods_are_valid():
    qm = QualityMonitor(gap_s=10)
    periods = qm.check([window(i) for i in range(10)] + [window(i) for i in range(30, 33)])
    periods += qm.check([window(i, n=0) for i in range(33, 45)]) + qm.flush()  # the second gap still going on
    assert [(p.reason, p.detail.get("ongoing", False)) for p in periods] == [("data_gap", False), ("data_gap", True)]
    for p in periods:
        valid(json.dumps(quality_message(p)))


def test_quality_periods_of_every_reason_from_the_monitor_are_valid():
    rng = np.random.default_rng(1)

    def msg(i, occ):
        flat = occ.ravel()
        cell = np.repeat(np.arange(flat.size), flat)
        chamber, local = cell // 64, cell % 64
        n = len(cell)
        hits = Rows.from_columns(head=np.full(n, 2), fpga=chamber // 2, channel=(chamber % 2) * 64 + local,
                                 orbit=np.full(n, i), bx=np.zeros(n, int), tdc=np.zeros(n, int))
        ds = compute_products(hits)
        ds.attrs.update(window_id=i, first_orbit=i, last_orbit=i, window_start=iso_utc(EPOCH + 2 * i),
                        window_end=iso_utc(EPOCH + 2 * i + 2))
        return message_dict(ds)

    msgs = []
    for i in range(60):
        occ = rng.poisson(20, (det.N_CHAMBERS, det.CHANNELS_PER_CHAMBER))
        if 20 <= i < 30:
            occ[2] = 0  # a silent chamber (and a rate drop)
        if 35 <= i < 45:
            occ[1, 21] = 500  # a noisy channel
        msgs.append(msg(i, occ))
    qm = QualityMonitor(gap_s=10)
    periods = qm.check(msgs) + qm.check([msg(80, rng.poisson(20, (4, 64)))]) + qm.flush()
    assert {"data_gap", "chamber_silent", "noisy_channel", "rate_jump"} <= {p.reason for p in periods}
    for p in periods:
        valid(json.dumps(quality_message(p)))


def test_quality_test_verdicts_are_valid():
    from dtlive.core.judge import judge, judge_blocks
    from dtlive.core.references import make_reference

    rng = np.random.default_rng(1)

    def win(i, dead=()):
        channel = rng.integers(0, 128, 5000)
        channel = channel[~np.isin(channel, dead)]
        n = len(channel)
        ds = compute_products(Rows.from_columns(head=[2] * n, fpga=[0] * n, channel=channel,
                                                orbit=rng.integers(0, 22446, n) + 22446 * i, bx=[0] * n,
                                                tdc=[0] * n))
        ds.attrs.update(window_id=i, first_orbit=22446 * i, last_orbit=22446 * i + 22445,
                        window_start=iso_utc(EPOCH + 2 * i), window_end=iso_utc(EPOCH + 2 * i + 2))
        return ds

    ref = make_reference([win(i) for i in range(5)], label="flat")
    verdicts = [judge(win(9, dead=[70]), ref), judge(win(10), None), judge(win(11), ref, masks={1: [3, 4]})]
    from dtlive.core.messages import encode_message, to_dataset

    stacked = to_dataset([encode_message(win(i)) for i in range(12, 16)])
    verdicts += judge_blocks(stacked, ref, block=2)
    for v in verdicts:
        valid(json.dumps(v))
    assert verdicts[0]["chambers"]["chamber_1"]["status"] == 1 and verdicts[1]["reference"]["label"] is None
    assert len(verdicts) == 5 and verdicts[2]["config"]["masks"] == {"1": [3, 4]}


IGWN = {"superevent_id": "S240501ab", "alert_type": "PRELIMINARY", "time_created": "2024-05-01T12:00:01Z",
        "event": {"time": "2024-05-01T12:00:00Z", "far": 1e-9, "significant": True, "instruments": ["H1", "L1"]},
        "urls": {"gracedb": "https://example.org/S240501ab"}}


def alerts():
    out = [parse_notice(json.dumps(IGWN), "igwn.gwalert"),
           parse_notice(b'{"mission": "IceCube", "id": "7", "trigger_time": "2024-05-01T12:00:00Z", "ra": 370,'
                        b' "dec": -5, "ra_dec_error": 0.5, "alert_tense": "test"}', "gcn.notices.icecube.lvk"),
           parse_notice(b'{"mission": "Swift", "id": "1", "alert_type": "retraction"}', "t")]
    out += [parse_notice(p.read_bytes(), "") for p in sorted(ALERTS.glob("*.json"))] if ALERTS.is_dir() else []
    return out


def test_parsed_alerts_are_valid():
    from dtlive.alerts import alert_to_dict

    parsed = alerts()
    for a in parsed:
        d = valid(json.dumps(alert_to_dict(a)))
        assert d["is_retraction"] == (d["type"] == "retraction")
    assert {a.format for a in parsed} >= {"json", "igwn"} and any(a.is_test for a in parsed)


def test_analysis_results_are_valid(tmp_path):
    from dtlive.alerts import alert_to_dict
    from dtlive.alerts.jobs import run_job
    from dtlive.alerts.listener import AlertListener

    alert = parse_notice(b'{"mission": "IceCube", "id": "7", "trigger_time": "2024-05-01T12:00:00Z"}')
    ctx = AnalysisContext(HistoryStore(tmp_path / "h"), artifacts_dir=tmp_path / "a")
    record = get_analysis("rate_excess")(alert, ctx).to_dict()
    assert valid(json.dumps(record))["status"] == "no_data"
    valid(AnalysisResult(name="x", version="1", summary={"status": "ok", "n": 1}).to_dict())
    # what the listener publishes: the worker's record (run_job), or a retraction notice
    result = run_job("rate_excess", alert_to_dict(alert), {}, str(tmp_path / "h"), None, str(tmp_path / "a"))
    listener = AlertListener.__new__(AlertListener)
    sent = []
    listener.cfg = load_config({}, env={})
    listener.jobs = {"j1": {"alert": alert_to_dict(alert), "analysis": "rate_excess", "rule": None}}
    listener._send = lambda topic, value, key=None, headers=None: sent.append(value)
    listener._state = lambda *a, **k: None
    listener._publish("j1", result)
    listener._publish("j1", {"retracted": True})
    published = [valid(v) for v in sent]
    assert published[0]["summary"]["status"] == "no_data" and published[1]["retracted"] is True


def test_dead_letter_headers_are_valid():
    whole = dead_letter(b"2,0,5", "field_count", "5 fields", "dt.hits", 0, 7)
    cut = dead_letter(b"x" * 100, "oversized", "d" * 2000, "dt.hits", 3, 42, max_bytes=10)
    notice = dead_letter(b"{", "not_json", "not_json: ...", "gcn.notices.x", 0, 1)
    for letter in (whole, cut, notice):
        fields = valid_dead_letter(letter.headers)
        assert fields["sha256"] == hashlib.sha256(b"2,0,5").hexdigest() or letter is not whole


# ------------------------------------------------------------------------------- broken messages fail


def broken(msg: dict, path: str, value) -> dict:
    """``msg`` with the field at dotted ``path`` set to ``value`` (``...`` deletes it)."""
    out = copy.deepcopy(msg)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def good_messages() -> dict[str, dict]:
    alert = parse_notice(json.dumps(IGWN), "igwn.gwalert")
    from dtlive.alerts import alert_to_dict
    from dtlive.core.alarms import on_status
    from dtlive.core.judge import judge

    return {
        "monitor": window(3),
        "status": status_message("recorder", run_id="r", state="running", seq=0, now=1.0, host="h", pid=1,
                                 lag=partition_lag({0: 2}, {0: 1})),
        "quality": quality_message(Period(EPOCH, EPOCH + 20, "data_gap", {
            "duration_s": 20.0, "windows_without_hits": 0, "last_window_id": 1, "next_window_id": 11})),
        "alert": alert_to_dict(alert),
        "analysis": AnalysisResult(name="x", version="1", summary={"status": "ok"}).to_dict(),
        "alarm": on_status({}, {"processor": "p", "chamber": 2, "previous": 0, "status": 4, "label": "bad",
                                "reasons": ["dead"], "start": "2026-12-05T10:00:00Z"})[1][0],
        "verdict": json.loads(json.dumps(judge(compute_products(Rows.from_columns(
            head=[2] * 3, fpga=[0] * 3, channel=[3, 70, 9], orbit=[7] * 3, bx=[0] * 3, tdc=[0] * 3)), None))),
    }


BROKEN = [
    ("monitor", "total_hits", "12", "total_hits", "is not of type 'integer'"),
    ("monitor", "hits_per_chamber", [1, 2, 3], "hits_per_chamber", "too short"),
    ("monitor", "counts.late_hits", ..., "counts.late_hits", "required field missing"),
    ("monitor", "counts.rejected.late", -1, "counts.rejected.late", "less than the minimum of 0"),
    ("monitor", "window.start", "2024-01-01 00:00:00", "window.start", "does not match"),
    ("monitor", "histograms.drift_time_ns.chamber_2.overflow", ..., "histograms.drift_time_ns.chamber_2.overflow",
     "required field missing"),
    ("monitor", "histograms.channel_occupancy.chamber_1.bin_counts.5", 1.5,
     "histograms.channel_occupancy.chamber_1.bin_counts[5]", "is not of type 'integer'"),
    ("monitor", "histograms.scint_channel_occupancy.chamber_3.bin_edges.0", 0,
     "histograms.scint_channel_occupancy.chamber_3.bin_edges", "is not the fixed value"),
    ("monitor", "colour", "red", "colour", "unexpected field"),
    ("monitor", "variables.events", -1, "variables.events", "less than the minimum of 0"),
    ("monitor", "variables.timebox_trigger.2", [], "variables.timebox_trigger[2]", "should be non-empty"),
    ("monitor", "variables.event_hits_per_chamber", [1, 2, 3, 4, 5], "variables.event_hits_per_chamber",
     "is too long"),
    ("monitor", "schema", "dtlive.monitor/2", "schema", "unknown schema id"),
    ("status", "state", "sleeping", "state", "is not one of"),
    ("status", "lag.partitions.0.messages", -3, "lag.partitions.0.messages", "less than the minimum of 0"),
    ("status", "errors_total", ..., "errors_total", "required field missing"),
    ("status", "service", "printer", "service", "is not one of"),
    ("quality", "kind", "ugly", "kind", "is not one of"),
    ("alarm", "event", "exploded", "event", "is not one of"),
    ("alarm", "chamber", 4, "chamber", "greater than the maximum of 3"),
    ("alarm", "time", "2026-12-05 10:00:00", "time", "does not match"),
    ("quality", "detail.duration_s", ..., "detail.duration_s", "required field missing"),
    ("quality", "end", 1.7e9, "end", "is not of type 'string'"),
    ("alert", "is_retraction", True, "is_retraction", "False was expected"),
    ("alert", "raw_encoding", "latin-1", "raw_encoding", "is not one of"),
    ("alert", "format", "xml", "format", "is not one of"),
    ("analysis", "summary.status", "great", "summary.status", "is not one of"),
    ("analysis", "published_at", 1.0, "published_at", "not allowed in this kind of message"),
    ("analysis", "data_vars", ..., "data_vars", "required field missing"),
    ("verdict", "chambers.chamber_0.tests.0.status", "fine", "chambers.chamber_0.tests[0].status", "is not one of"),
    ("verdict", "chambers.chamber_0.bad_channels", [64], "chambers.chamber_0.bad_channels[0]",
     "greater than the maximum of 63"),
    ("verdict", "detector.reasons", ..., "detector.reasons", "required field missing"),
    ("verdict", "windows.ids", [1, 2, 3], "windows.ids", "is too long"),
]


@pytest.mark.parametrize(("kind", "path", "value", "field", "reason"), BROKEN)
def test_broken_messages_fail_with_the_field_named(kind, path, value, field, reason):
    msg = broken(good_messages()[kind], path, value)
    with pytest.raises(ContractError) as err:
        validate(msg)
    assert err.value.field == field and reason in err.value.reason, str(err.value)
    assert str(err.value).startswith(f"{msg['schema']}: {field}: ")


def test_broken_dead_letter_headers_fail_with_the_header_named():
    headers = dict(valid_dead_letter(dead_letter(b"abc", "late", "", "dt.hits", 0, 1).headers))
    for name, value, reason in (("sha256", "abc", "does not match"), ("truncated", "yes", "is not one of"),
                                ("reason", "bored", "is not one of"), ("source_offset", "x", "does not match")):
        with pytest.raises(ContractError) as err:
            validate({**headers, name: value}, DEAD_LETTER_SCHEMA)
        assert err.value.field == name and reason in err.value.reason
    with pytest.raises(ContractError, match="original_size: required field missing"):
        validate({k: v for k, v in headers.items() if k != "original_size"}, DEAD_LETTER_SCHEMA)


def test_the_fast_check_and_the_reference_agree():
    """Messages pass the generated fast check exactly when they pass the reference (jsonschema)."""
    from dtlive.core import schemas

    cases = list(good_messages().values())
    for kind, path, value, _, _ in BROKEN:
        cases.append(broken(good_messages()[kind], path, value))
    cases += [broken(good_messages()["analysis"], "retracted", 1), broken(good_messages()["alert"], "is_test", 0)]
    assert schemas._fast("dtlive.monitor/1") is not None  # fastjsonschema is a dependency
    for msg in cases:
        sid = msg.get("schema")
        if sid not in SCHEMA_IDS:
            continue
        try:
            schemas._fast(sid)(msg)
            fast_ok = True
        except Exception:  # noqa: BLE001
            fast_ok = False
        reference_ok = schemas._validator(sid).is_valid(msg)
        assert fast_ok == reference_ok, msg
        if reference_ok:
            validate(msg)
        else:
            pytest.raises(ContractError, validate, msg)
