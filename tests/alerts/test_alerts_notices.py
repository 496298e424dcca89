"""dtlive.alerts.notices: GCN JSON, GCN Classic VOEvent and IGWN notices -> one normalised Alert.

The GCN JSON examples are read in place from the alert examples folder (``datafiles.ALERTS``, never
copied). The VOEvent and IGWN payloads below are written for these tests from the public formats
(VOEvent 2.0 as sent by GCN Classic; the igwn-gwalert-schema JSON alert); their numbers are made up.
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

import pytest
from datafiles import ALERTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtlive.alerts import Alert, NoticeError, alert_from_dict, alert_to_dict, parse_notice
from dtlive.alerts.notices import REASONS, parse_time

FILES = sorted(ALERTS.glob("*.json")) if ALERTS.exists() else []
needs_files = pytest.mark.skipif(not FILES, reason="shared alert examples not available")

# file -> (topic it arrives on at GCN, mission, instrument, type, tense)
EXPECTED = {
    "einstein_probe_wxt_alert.json": ("gcn.notices.einstein_probe.wxt.alert", "Einstein Probe", "WXT",
                                      "initial", "observation"),
    "fermi_gbm_trigger.alert.json": ("gcn.notices.fermi.gbm.alert", "Fermi", "GBM", "initial", "observation"),
    "icecube_lvk_nu_track_search.json": ("gcn.notices.icecube.lvk_nu_track_search", "IceCube", "", "initial",
                                         "observation"),
    "km3net_alert.json": ("gcn.notices.km3net.alert", "KM3NeT", "ORCA024", "initial", "observation"),
    "superk_sn_alert.real.json": ("gcn.notices.superk.sn_alert", "Super-Kamiokande", "", "initial", "observation"),
    "superk_sn_alert.test.json": ("gcn.notices.superk.sn_alert", "Super-Kamiokande", "", "initial", "test"),
    "swift_bat_Guano.Retraction.json": ("gcn.notices.swift.bat.guano", "Swift", "BAT-GUANO", "retraction",
                                        "observation"),
    "swift_bat_Guano.json": ("gcn.notices.swift.bat.guano", "Swift", "BAT-GUANO", "initial", "observation"),
}


def unix(iso: str) -> float:
    """The test's own ISO -> UNIX seconds (stdlib fromisoformat; no zone = UTC)."""
    dt = datetime.fromisoformat(iso)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def reason_of(payload, topic: str = "") -> str:
    with pytest.raises(NoticeError) as info:
        parse_notice(payload, topic)
    assert info.value.reason in REASONS and str(info.value).startswith(info.value.reason + ": ")
    return info.value.reason


def check_round_trip(alert: Alert) -> None:
    d = alert_to_dict(alert)
    text = json.dumps(d, allow_nan=False)  # JSON-ready, no NaN
    assert alert_from_dict(json.loads(text)) == alert
    assert hash(alert_from_dict(d)) == hash(alert)


# ------------------------------------------------------------------------------ the real GCN JSON examples


@needs_files
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_example_file_parses(path):
    doc = json.loads(path.read_text())
    topic = EXPECTED.get(path.name, ("",))[0]
    alert = parse_notice(path.read_bytes(), topic)
    assert alert.format == "json" and alert.topic == topic and alert.raw == path.read_bytes()
    assert alert.mission and alert.id.startswith(alert.mission + ":")
    assert alert.trigger_time == pytest.approx(unix(doc["trigger_time"]), abs=1e-6)
    if "alert_datetime" in doc:
        assert alert.alert_time == pytest.approx(unix(doc["alert_datetime"]), abs=1e-6)
    assert alert.record_number == doc.get("record_number", 0)
    assert alert.is_retraction == (doc.get("alert_type") == "retraction")
    assert alert.is_test == (doc.get("alert_tense") in ("test", "injection"))
    check_round_trip(alert)
    assert parse_notice(path.read_text(), topic) == alert.__class__(**{**alert.__dict__, "raw": path.read_text()})


@needs_files
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_mission_type_tense(name):
    topic, mission, instrument, atype, tense = EXPECTED[name]
    alert = parse_notice((ALERTS / name).read_bytes(), topic)
    assert (alert.mission, alert.instrument, alert.type, alert.tense) == (mission, instrument, atype, tense)


@needs_files
def test_example_details():
    def load(name):
        return parse_notice((ALERTS / name).read_bytes(), EXPECTED[name][0])

    retraction, guano = load("swift_bat_Guano.Retraction.json"), load("swift_bat_Guano.json")
    assert retraction.is_retraction and not retraction.is_test and retraction.record_number == 4
    assert retraction.id == guano.id == "Swift:694215995"  # one event, two records
    assert guano.extra["far_hz"] == 1e-5 and guano.extra["snr"] == 15.8 and guano.localisation is None

    test, real = load("superk_sn_alert.test.json"), load("superk_sn_alert.real.json")
    assert test.is_test and not real.is_test and test.id == real.id == "Super-Kamiokande:SN.095001.000001"
    assert real.localisation == {"ra": 270.82, "dec": 31.46, "error_deg": 0.91, "containment": 0.68}

    ep = load("einstein_probe_wxt_alert.json")  # no "mission" field: named by $schema
    assert ep.id == "Einstein Probe:01708973486" and ep.alert_time is None
    assert ep.localisation == {"ra": 120.0, "dec": 40.0, "error_deg": 0.02, "containment": 0.9}

    fermi = load("fermi_gbm_trigger.alert.json")  # id is a list; latitude/longitude are the spacecraft's
    assert fermi.id == "Fermi:745121685" and fermi.extra["ids"] == ["745121685", "bn240812094"]
    assert fermi.localisation is None and fermi.extra["subtype"] == "INITIAL_ALERT"

    icecube = load("icecube_lvk_nu_track_search.json")  # named by the LVK superevent it followed up
    assert icecube.id == "IceCube:S230914ak" and icecube.extra["p_value"] == 0.0191
    assert icecube.localisation["ra"] == 17.49 and icecube.extra["n_events"] == 2

    km3 = load("km3net_alert.json")
    assert km3.extra["far_hz"] == 8.029e-8 and km3.extra["energy_gev"] == 120000 and km3.extra["event_name"]


def test_mission_from_topic_and_alert_type_as_tense():
    a = parse_notice('{"id": "42", "trigger_time": "2024-01-02T03:04:05Z", "alert_type": "test"}',
                     "gcn.notices.svom.eclairs.alert")
    assert (a.id, a.mission, a.instrument, a.tense, a.type) == ("SVOM:42", "SVOM", "ECLAIRS", "test", "initial")
    a = parse_notice('{"mission": "IceCube", "id": ["7"], "record_number": 3, "retraction": true}')
    assert a.is_retraction and a.record_number == 3 and a.trigger_time is None
    a = parse_notice('{"mission": "Fermi", "event_name": "GRB 240101A", "record_number": 2,'
                     ' "alert_tense": "injection"}')
    assert a.id == "Fermi:GRB 240101A" and a.type == "update" and a.is_test


# ------------------------------------------------------------------------------------------------ VOEvent

SWIFT_BAT = """<?xml version='1.0' encoding='UTF-8'?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    ivorn="ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1234567-321" role="observation" version="2.0">
  <Who>
    <AuthorIVORN>ivo://nasa.gsfc.tan/gcn</AuthorIVORN>
    <Author><shortName>VO-GCN</shortName></Author>
    <Date>2024-05-12T03:05:01</Date>
  </Who>
  <What>
    <Param name="Packet_Type" value="61" />
    <Param name="Pkt_Ser_Num" value="1" />
    <Param name="TrigID" value="1234567" ucd="meta.id" />
    <Param name="Rate_Signif" value="12.50" unit="sigma" ucd="stat.snr" />
    <Param name="Integ_Time" value="0.512" unit="sec" ucd="time.interval" />
    <Group name="Solution_Status">
      <Param name="GRB_Identified" value="true" />
      <Param name="Def_NOT_a_GRB" value="false" />
      <Param name="StarTrack_Lost_Lock" value="false" />
      <Param name="Test_Submission" value="false" />
    </Group>
  </What>
  <WhereWhen>
    <ObsDataLocation>
      <ObservatoryLocation id="GEOLUN" />
      <ObservationLocation>
        <AstroCoordSystem id="UTC-FK5-GEO" />
        <AstroCoords coord_system_id="UTC-FK5-GEO">
          <Time unit="s"><TimeInstant><ISOTime>2024-05-12T03:04:05.67</ISOTime></TimeInstant></Time>
          <Position2D unit="deg">
            <Name1>RA</Name1><Name2>Dec</Name2>
            <Value2><C1>123.4560</C1><C2>-45.6780</C2></Value2>
            <Error2Radius>0.0500</Error2Radius>
          </Position2D>
        </AstroCoords>
      </ObservationLocation>
    </ObsDataLocation>
  </WhereWhen>
  <How><Description>Swift Satellite, BAT Instrument</Description></How>
</voe:VOEvent>
"""

FERMI_GBM_TEST = """<?xml version = '1.0' encoding = 'UTF-8'?>
<voe:VOEvent ivorn="ivo://nasa.gsfc.gcn/Fermi#GBM_Flt_Pos_2024-06-01T10:11:12.34_738929477_2-777"
    role="test" version="2.0" xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0">
  <Who><Date>2024-06-01T10:11:30</Date></Who>
  <What>
    <Param name="Packet_Type" value="111" />
    <Param name="Pkt_Ser_Num" value="9" />
    <Param name="TrigID" value="738929477" ucd="meta.id" />
    <Param name="Sequence_Num" value="2" ucd="meta.id.part" />
    <Param name="Trig_Timescale" value="0.064" unit="sec" />
    <Param name="Data_Signif" value="6.10" unit="sigma" />
    <Group name="Trigger_ID">
      <Param name="Def_NOT_a_GRB" value="false" />
      <Param name="Test_Submission" value="true" />
    </Group>
  </What>
  <WhereWhen><ObsDataLocation><ObservationLocation><AstroCoords coord_system_id="UTC-FK5-GEO">
    <Time unit="s"><TimeInstant><ISOTime>2024-06-01T10:11:12.34</ISOTime></TimeInstant></Time>
    <Position2D unit="deg"><Value2><C1>10.5</C1><C2>20.25</C2></Value2><Error2Radius>7.5</Error2Radius></Position2D>
  </AstroCoords></ObservationLocation></ObsDataLocation></WhereWhen>
  <Citations><EventIVORN cite="followup">ivo://nasa.gsfc.gcn/Fermi#GBM_Alert_2024-06-01T10:11:12.34_738929477_1-776</EventIVORN></Citations>
</voe:VOEvent>
"""

LVC = """<?xml version='1.0' encoding='UTF-8'?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" version="2.0" role="{role}"
    ivorn="ivo://gwnet/LVC#{gid}-{n}-{kind}">
  <Who><Date>2024-04-02T08:31:40Z</Date></Who>
  <What>
    <Param name="Packet_Type" dataType="int" value="151" />
    <Param name="internal" dataType="int" value="0" />
    <Param name="Pkt_Ser_Num" dataType="string" value="{n}" />
    <Param name="GraceID" dataType="string" value="{gid}" ucd="meta.id" />
    <Param name="AlertType" dataType="string" value="{kind}" ucd="meta.version" />
    <Param name="HardwareInj" dataType="int" value="0" />
    <Param name="Instruments" dataType="string" value="H1,L1" />
    <Param name="FAR" dataType="float" value="3.2e-10" unit="Hz" />
    <Param name="Group" dataType="string" value="CBC" />
    <Param name="Pipeline" dataType="string" value="pycbc" />
    <Param name="Search" dataType="string" value="AllSky" />
    <Group type="Classification">
      <Param name="BNS" dataType="float" value="0.02" />
      <Param name="NSBH" dataType="float" value="0.01" />
      <Param name="BBH" dataType="float" value="0.96" />
      <Param name="Terrestrial" dataType="float" value="0.01" />
    </Group>
  </What>
  <WhereWhen><ObsDataLocation><ObservationLocation><AstroCoords coord_system_id="UTC-FK5-GEO">
    <Time unit="s"><TimeInstant><ISOTime>2024-04-02T08:30:12.482</ISOTime></TimeInstant></Time>
  </AstroCoords></ObservationLocation></ObsDataLocation></WhereWhen>
</voe:VOEvent>
"""

ICECUBE_GOLD = """<?xml version='1.0' encoding='UTF-8'?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" role="observation" version="2.0"
    ivorn="ivo://nasa.gsfc.gcn/AMON#ICECUBE_GOLD_Event2024-03-03T05:06:07.89_24_139001_012345678_1">
  <Who><Date>2024-03-03T05:07:30</Date></Who>
  <What>
    <Param name="Packet_Type" value="173" />
    <Param name="AMON_ID" value="13900112345678" ucd="meta.id" />
    <Param name="Rev" value="1" />
    <Param name="signalness" value="0.61" unit="dn" />
    <Param name="FAR" value="0.5" unit="yr^-1" />
    <Param name="energy" value="250.0" unit="TeV" />
    <Group name="Trigger_ID">
      <Param name="Test" value="false" />
      <Param name="Retraction" value="{retraction}" />
    </Group>
  </What>
  <WhereWhen><ObsDataLocation><ObservationLocation><AstroCoords coord_system_id="UTC-FK5-GEO">
    <Time unit="s"><TimeInstant><ISOTime>2024-03-03T05:06:07.89</ISOTime></TimeInstant></Time>
    <Position2D unit="deg"><Value2><C1>77.25</C1><C2>5.75</C2></Value2><Error2Radius>1.1</Error2Radius></Position2D>
  </AstroCoords></ObservationLocation></ObsDataLocation></WhereWhen>
</voe:VOEvent>
"""


def test_voevent_swift_observation():
    a = parse_notice(SWIFT_BAT.encode(), "gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK")
    assert (a.format, a.id, a.mission, a.instrument, a.type, a.tense) == (
        "voevent", "Swift:1234567", "Swift", "BAT", "initial", "observation")
    assert not a.is_retraction and not a.is_test and a.record_number == 1
    assert a.trigger_time == pytest.approx(unix("2024-05-12T03:04:05.67"), abs=1e-6)
    assert a.alert_time == unix("2024-05-12T03:05:01")
    assert a.localisation == {"ra": 123.456, "dec": -45.678, "error_deg": 0.05, "containment": None}
    assert a.extra["significance_sigma"] == 12.5 and a.extra["duration_s"] == 0.512
    assert a.extra["notice_type"] == "BAT_GRB_Pos" and a.extra["grb_identified"] is True
    check_round_trip(a)
    slew = parse_notice(SWIFT_BAT.replace("BAT_GRB_Pos_1234567-321", "SC_Slew_1234567-322"))
    assert slew.instrument == "" and slew.id == "Swift:1234567" and slew.extra["notice_type"] == "SC_Slew"
    maxi = parse_notice(SWIFT_BAT.replace("SWIFT#BAT_GRB_Pos", "MAXI#Known_Source").replace("1234567", "9001"))
    assert (maxi.mission, maxi.instrument, maxi.id) == ("MAXI", "", "MAXI:9001")


def test_voevent_swift_fermi_retraction_conventions():
    # Swift / Fermi GCN Classic: a retraction notice of a trigger carries Def_NOT_a_GRB = true
    a = parse_notice(SWIFT_BAT.replace('"Def_NOT_a_GRB" value="false"', '"Def_NOT_a_GRB" value="true"'))
    assert a.is_retraction and a.id == "Swift:1234567" and a.extra["not_a_grb"] is True
    # VOEvent 2.0: a citation with cite="retraction"
    cited = SWIFT_BAT.replace("</WhereWhen>", '</WhereWhen><Citations><EventIVORN cite="retraction">'
                              "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1234567-320</EventIVORN></Citations>")
    assert parse_notice(cited).is_retraction
    # IceCube (AMON): the Retraction flag of the Trigger_ID group
    gold = parse_notice(ICECUBE_GOLD.format(retraction="false"))
    assert (gold.mission, gold.id, gold.type, gold.record_number) == ("IceCube", "IceCube:13900112345678",
                                                                       "initial", 1)
    assert gold.extra["far_hz"] == pytest.approx(0.5 / (365.25 * 86400)) and gold.extra["energy_gev"] == 250e3
    assert gold.extra["signalness"] == 0.61 and gold.localisation["error_deg"] == 1.1
    assert parse_notice(ICECUBE_GOLD.format(retraction="true")).is_retraction


def test_voevent_fermi_test_update():
    a = parse_notice(FERMI_GBM_TEST)
    assert (a.id, a.mission, a.instrument, a.type, a.tense, a.record_number) == (
        "Fermi:738929477", "Fermi", "GBM", "update", "test", 2)
    assert a.is_test and not a.is_retraction and a.raw == FERMI_GBM_TEST
    assert a.extra["significance_sigma"] == 6.1 and a.localisation["dec"] == 20.25
    # role="test" alone is enough; role="utility" is neither test nor observation
    assert parse_notice(SWIFT_BAT.replace('role="observation"', 'role="test"')).is_test
    assert parse_notice(SWIFT_BAT.replace('role="observation"', 'role="utility"')).tense == "utility"


def test_voevent_lvk_observation_test_retraction():
    a = parse_notice(LVC.format(role="observation", gid="S240402ab", n=2, kind="Initial"))
    assert (a.id, a.mission, a.instrument, a.type, a.tense, a.record_number) == (
        "LVK:S240402ab", "LVK", "H1,L1", "initial", "observation", 2)
    assert a.extra["far_hz"] == 3.2e-10 and a.extra["classification"]["BBH"] == 0.96 and a.localisation is None
    assert a.trigger_time == pytest.approx(unix("2024-04-02T08:30:12.482"), abs=1e-6)
    mock = parse_notice(LVC.format(role="observation", gid="MS240402ab", n=1, kind="Preliminary"))
    assert mock.is_test and mock.type == "preliminary"
    retraction = parse_notice(LVC.format(role="observation", gid="S240402ab", n=3, kind="Retraction"))
    assert retraction.is_retraction and retraction.id == a.id and retraction.record_number == 3


def test_voevent_default_namespace_and_declared_encoding():
    qualified = SWIFT_BAT.replace("voe:VOEvent", "VOEvent").replace(
        'xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0"', 'xmlns="http://www.ivoa.net/xml/VOEvent/v2.0"')
    assert parse_notice(qualified).localisation["ra"] == 123.456
    latin1 = SWIFT_BAT.replace("UTF-8", "ISO-8859-1").replace("VO-GCN", "VO-GCN \u00e9").encode("latin-1")
    assert parse_notice(latin1).id == "Swift:1234567"


# ------------------------------------------------------------------------------------------------ IGWN


def igwn(sid="S240501ab", alert_type="PRELIMINARY", event=True, coinc=None, **event_fields):
    doc = {
        "alert_type": alert_type, "time_created": "2024-05-01T12:03:30Z", "superevent_id": sid,
        "urls": {"gracedb": f"https://gracedb.ligo.org/superevents/{sid}/view/"},
        "event": None if not event else {
            "time": "2024-05-01T12:01:02.345Z", "far": 2.5e-9, "significant": True,
            "instruments": ["H1", "L1", "V1"], "group": "CBC", "pipeline": "gstlal", "search": "AllSky",
            "properties": {"HasNS": 0.05, "HasRemnant": 0.0, "HasMassGap": 0.01},
            "classification": {"BNS": 0.0, "NSBH": 0.03, "BBH": 0.95, "Terrestrial": 0.02},
            "duration": None, "central_frequency": None, "skymap": "U0lNUExFICA9ICAgICAgICAgICAgICAgICAgICBU",
            **event_fields},
        "external_coinc": coinc,
    }
    return json.dumps(doc).encode()


def test_igwn_observation():
    a = parse_notice(igwn(), "igwn.gwalert")
    assert (a.format, a.id, a.mission, a.instrument, a.type, a.tense, a.record_number) == (
        "igwn", "LVK:S240501ab", "LVK", "H1,L1,V1", "preliminary", "observation", 0)
    assert a.trigger_time == pytest.approx(unix("2024-05-01T12:01:02.345+00:00"), abs=1e-6)
    assert a.alert_time == unix("2024-05-01T12:03:30+00:00")
    assert a.extra["far_hz"] == 2.5e-9 and a.extra["significant"] is True and a.extra["skymap"] is True
    assert a.extra["classification"]["BBH"] == 0.95 and a.extra["urls"]["gracedb"].endswith("/view/")
    check_round_trip(a)


def test_igwn_test_retraction_update():
    mock = parse_notice(igwn(sid="MS240501ab", search="MDC"))
    assert mock.is_test and mock.id == "LVK:MS240501ab"
    retraction = parse_notice(igwn(alert_type="RETRACTION", event=False))
    assert retraction.is_retraction and not retraction.is_test and retraction.trigger_time is None
    assert retraction.id == "LVK:S240501ab" and retraction.instrument == ""
    coinc = {"gcn_notice_id": 738929477, "ivorn": "ivo://nasa.gsfc.gcn/Fermi#GBM_Fin_Pos", "observatory": "Fermi",
             "search": "GRB", "time_difference": -1.6, "time_coincidence_far": 7.5e-12,
             "time_sky_position_coincidence_far": 1.1e-13, "combined_skymap": None}
    update = parse_notice(igwn(alert_type="UPDATE", coinc=coinc))
    assert update.type == "update" and update.extra["external_coinc"]["observatory"] == "Fermi"
    assert parse_notice(igwn(alert_type="EARLY_WARNING")).type == "early_warning"


# ------------------------------------------------------------------------------------------ broken notices


@needs_files
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_truncated_json(path):
    data = path.read_bytes()
    assert reason_of(data[: len(data) // 2]) == "not_json"
    assert reason_of(data[:-3]) == "not_json"


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", "empty"), ("  \n\t", "empty"), (b"\xef\xbb\xbf", "empty"),
    (b"\x80\x81\xfe\xff\x00\x13garbage\xc3", "not_utf8"), (bytes(range(256)), "not_utf8"),
    (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", "not_utf8"),  # gzip (or an Avro blob)
    (b"TITLE: GCN/SWIFT NOTICE\nNOTICE_DATE: Sun 12 May 24", "unknown_format"),
    (b'{"schema": "dtlive.monitor/1", "window": {"id": 3}}', "unknown_format"),
    (b'[{"mission": "Swift"}]', "unknown_format"), (b'"Swift"', "unknown_format"), (b"42", "unknown_format"),
    (b'{"mission": "Swift", "id": "1", "far": NaN}', "not_json"), (b'{"mission": "Swift", "id": 1,}', "not_json"),
    (b'{"id": "1", "trigger_time": "2024-01-01T00:00:00Z"}', "missing_field"),
    (b'{"mission": "Swift", "alert_type": "initial"}', "missing_field"),
    (b'{"mission": 7, "id": "1"}', "bad_field"),
    (b'{"mission": "Swift", "id": "1", "trigger_time": "yesterday"}', "bad_time"),
    (b'{"mission": "Swift", "id": "1", "trigger_time": "2024-13-01T00:00:00Z"}', "bad_time"),
    (b'{"mission": "Swift", "id": "1", "trigger_time": 1704067200}', "bad_time"),
    (b'{"superevent_id": "S240501ab", "time_created": "2024-05-01T12:03:30Z"}', "missing_field"),
    (b'{"superevent_id": 5, "alert_type": "INITIAL"}', "bad_field"),
    (b'{"superevent_id": "S1", "alert_type": "INITIAL", "event": {"time": "noon"}}', "bad_time"),
    (b"<VOEvent><Who>", "not_xml"), (b"<<>>", "not_xml"),
    (b"<html><body>502 Bad Gateway</body></html>", "unknown_format"),
    (b'<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaa">]><VOEvent>&a;</VOEvent>', "unsafe_xml"),
    (b'<VOEvent ivorn="ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1-1" role="observation"><What/></VOEvent>',
     "missing_field"),
])
def test_broken_notices(payload, reason):
    assert reason_of(payload) == reason


def test_voevent_without_time_or_with_bad_time():
    no_time = SWIFT_BAT.replace("<Time unit=\"s\"><TimeInstant><ISOTime>2024-05-12T03:04:05.67</ISOTime>"
                                "</TimeInstant></Time>", "")
    assert "ISOTime" not in no_time and reason_of(no_time) == "missing_field"
    assert reason_of(SWIFT_BAT.replace("2024-05-12T03:04:05.67", "12 May 2024")) == "bad_time"
    assert reason_of(SWIFT_BAT[: len(SWIFT_BAT) // 2]) == "not_xml"


def test_bad_payload_type_and_error_api():
    assert reason_of(12345) == "bad_payload"
    e = NoticeError("not_json", "Expecting value")
    assert isinstance(e, ValueError) and pickle.loads(pickle.dumps(e)).reason == "not_json"
    with pytest.raises(NoticeError) as info:
        alert_from_dict({"id": "x"})
    assert info.value.reason == "missing_field"


def test_parse_time():
    assert parse_time("2024-03-01T21:46:05.13Z") == pytest.approx(unix("2024-03-01T21:46:05.130+00:00"), abs=1e-6)
    assert parse_time("2024-03-01 23:46:05.13+02:00") == parse_time("2024-03-01T21:46:05.13Z")
    assert parse_time("2016-12-31T23:59:60Z") == parse_time("2017-01-01T00:00:00Z")  # leap second
    for bad in ("2024-03-01", "2024-02-30T00:00:00Z", "2024-03-01T25:00:00Z", "2024-03-01T00:00:00+25:00", ""):
        with pytest.raises(NoticeError, match="bad_time"):
            parse_time(bad)


def test_raw_kept_and_base64_round_trip():
    a = parse_notice(SWIFT_BAT.encode())
    assert a.raw == SWIFT_BAT.encode() and alert_to_dict(a)["raw"] == SWIFT_BAT
    latin1 = Alert(**{**a.__dict__, "raw": "caf\u00e9".encode("latin-1")})
    d = alert_to_dict(latin1)
    assert d["raw_encoding"] == "base64" and alert_from_dict(d).raw == b"caf\xe9"
    assert "raw" not in repr(a)


# ---------------------------------------------------------------------------------------- property tests

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)
NOTICE_KEYS = ("mission", "instrument", "id", "record_number", "alert_type", "alert_tense", "trigger_time",
               "alert_datetime", "ra", "dec", "ra_dec_error", "containment_probability", "far", "pval_generic",
               "classification", "rate_energy_range", "event_details", "most_probable_direction", "retraction",
               "$schema", "superevent_id", "time_created", "event", "external_coinc", "urls", "event_name")
times = st.one_of(st.text(max_size=30), st.datetimes().map(lambda d: d.isoformat()), json_values)


def check_outcome(payload, topic: str = "") -> None:
    """parse_notice either returns an Alert that serialises and round-trips, or raises a NoticeError."""
    try:
        alert = parse_notice(payload, topic)
    except NoticeError as e:
        assert e.reason in REASONS and e.reason != "internal_error", e
        return
    assert isinstance(alert, Alert) and alert.format in ("json", "voevent", "igwn")
    check_round_trip(alert)


@PROPERTY
@given(st.binary(max_size=400))
def test_property_arbitrary_bytes(payload):
    check_outcome(payload)


@PROPERTY
@given(st.text(max_size=200), st.text(max_size=40))
def test_property_arbitrary_text(payload, topic):
    check_outcome(payload, topic)


@PROPERTY
@given(json_values)
def test_property_arbitrary_json(value):
    check_outcome(json.dumps(value).encode())


@PROPERTY
@given(st.dictionaries(st.sampled_from(NOTICE_KEYS), json_values | times, max_size=8),
       st.sampled_from(["", "gcn.notices.swift.bat.guano", "igwn.gwalert", "gcn.notices.x"]))
def test_property_notice_like_json(doc, topic):
    check_outcome(json.dumps(doc), topic)


@needs_files
@PROPERTY
@given(st.sampled_from(FILES or [None]), st.sampled_from(NOTICE_KEYS), json_values | times)
def test_property_mutated_examples(path, key, value):
    doc = json.loads(path.read_text())
    doc[key] = value
    check_outcome(json.dumps(doc).encode())


@PROPERTY
@given(st.sampled_from(["2024-05-12T03:04:05.67", "123.4560", "-45.6780", "0.0500", "1234567", "12.50", "false",
                        "observation", "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1234567-321"]),
       st.text(max_size=40))
def test_property_mutated_voevent(field_value, replacement):
    doc = SWIFT_BAT.replace(f">{field_value}<", f">{escape(replacement)}<").replace(
        f'"{field_value}"', quoteattr(replacement))
    check_outcome(doc.encode())
