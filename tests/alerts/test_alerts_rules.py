"""dtlive.alerts.rules: rules files, the predicate language, matching and the alert decider.

The GCN examples are read in place from the alert examples folder (``datafiles.ALERTS``); the other alerts
are built here (numbers made up).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from datafiles import ALERTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtlive.alerts import Alert, parse_notice
from dtlive.alerts.rules import (
    ACTIONS,
    AlertDecider,
    Job,
    Predicate,
    Rule,
    RuleSet,
    alert_fields,
    default_rules,
    load_rules,
)

TOPICS = {  # the GCN topic each example arrives on
    "einstein_probe_wxt_alert.json": "gcn.notices.einstein_probe.wxt.alert",
    "fermi_gbm_trigger.alert.json": "gcn.notices.fermi.gbm.alert",
    "icecube_lvk_nu_track_search.json": "gcn.notices.icecube.lvk_nu_track_search",
    "km3net_alert.json": "gcn.notices.km3net.alert",
    "superk_sn_alert.real.json": "gcn.notices.superk.sn_alert",
    "superk_sn_alert.test.json": "gcn.notices.superk.sn_alert",
    "swift_bat_Guano.Retraction.json": "gcn.notices.swift.bat.guano",
    "swift_bat_Guano.json": "gcn.notices.swift.bat.guano",
}
needs_files = pytest.mark.skipif(not all((ALERTS / f).exists() for f in TOPICS), reason="no shared alert examples")

NEUTRINO_RULES = """
[[rule]]
name = "neutrino-rate"
topics = ["gcn.notices.icecube.*", "gcn.notices.km3net.*"]   # fnmatch patterns on the alert's topic
when = "p_value < 0.1"
analyses = ["rate_excess", "snapshot"]
params = { rate_excess = { on_before_s = 10 } }
include_tests = false
"""


def example(name: str) -> Alert:
    return parse_notice((ALERTS / name).read_bytes(), TOPICS[name])


def alert(id: str = "IceCube:1", record: int = 1, topic: str = "gcn.notices.icecube.alert", type: str = "initial",
          tense: str = "observation", alert_time: float | None = 1.7e9, **extra) -> Alert:
    mission = id.split(":")[0]
    return Alert(id=id, record_number=record, mission=mission, instrument="", topic=topic, trigger_time=1.7e9,
                 alert_time=alert_time, type=type, tense=tense, localisation=None, extra=extra)


def holds(expr: str, **fields) -> bool:
    p = Predicate(expr)
    assert p(fields) is p.evaluate(fields)
    return p(fields)


# ------------------------------------------------------------------------------------------- topics


def test_topic_patterns_fnmatch_case_insensitive():
    rule = Rule("r", topics=("gcn.notices.icecube.*", "gcn.classic.voevent.FERMI_GBM_*"), analyses=("snapshot",))
    assert rule.matches_topic("gcn.notices.icecube.lvk_nu_track_search")
    assert rule.matches_topic("GCN.Notices.IceCube.alert")
    assert rule.matches_topic("gcn.classic.voevent.fermi_gbm_flt_pos")
    assert not rule.matches_topic("gcn.notices.icecube")  # the pattern needs the dot
    assert not rule.matches_topic("gcn.notices.km3net.alert")
    assert not rule.matches_topic("")
    assert Rule("all", analyses=("snapshot",)).matches_topic("")  # default "*" matches anything, even no topic
    q = Rule("q", topics=("gcn.notices.swift.bat.guan?", "igwn.[gx]walert"), analyses=("snapshot",))
    assert q.matches_topic("gcn.notices.swift.bat.guano") and q.matches_topic("igwn.gwalert")
    assert not q.matches_topic("igwn.awalert")


def test_rules_from_toml_match_topics_and_predicate():
    rules = load_rules(NEUTRINO_RULES)
    nu = alert(p_value=0.05)
    jobs = rules.match(nu)
    assert jobs == [Job("IceCube:1", 1, "rate_excess", {"on_before_s": 10}, "neutrino-rate"),
                    Job("IceCube:1", 1, "snapshot", {}, "neutrino-rate")]
    assert rules.match(replace(nu, topic="gcn.notices.km3net.alert"))
    assert rules.match(alert(p_value=0.5)) == []
    assert rules.match(alert()) == []  # no p-value: the comparison is false
    assert rules.match(replace(nu, topic="gcn.notices.swift.bat.guano")) == []
    jobs[0].params["on_before_s"] = 99  # jobs get their own copy of the params
    assert rules.match(nu)[0].params == {"on_before_s": 10}
    assert rules["neutrino-rate"].when == Predicate("p_value < 0.1")


def test_single_topic_string_and_defaults():
    rules = load_rules('[[rule]]\nname = "one"\ntopics = "igwn.*"\nanalyses = "snapshot"\n')
    rule = rules["one"]
    assert rule.topics == ("igwn.*",) and rule.analyses == ("snapshot",) and rule.when is None
    assert not rule.include_tests and rule.enabled
    assert load_rules('[[rule]]\nname = "all"\nanalyses = ["snapshot"]\n')["all"].topics == ("*",)


# --------------------------------------------------------------------------------------- predicates


@pytest.mark.parametrize("expr, fields, expected", [
    ("p_value < 0.1", {"p_value": 0.05}, True),
    ("p_value < 0.1", {"p_value": 0.1}, False),
    ("p_value <= 0.1", {"p_value": 0.1}, True),
    ("p_value <= 0.1", {"p_value": 0.2}, False),
    ("far_hz > 1e-8", {"far_hz": 1e-7}, True),
    ("far_hz > 1e-8", {"far_hz": 1e-8}, False),
    ("snr >= 5", {"snr": 5}, True),
    ("snr >= 5", {"snr": 4.99}, False),
    ("mission == 'Swift'", {"mission": "Swift"}, True),
    ("mission == 'Swift'", {"mission": "swift"}, False),  # case-sensitive
    ("mission != 'Swift'", {"mission": "Fermi"}, True),
    ("mission != 'Swift'", {"mission": "Swift"}, False),
    ("record_number == 2", {"record_number": 2}, True),
    ("record_number == 2.0", {"record_number": 2}, True),
    ("significant == true", {"significant": True}, True),
    ("significant == true", {"significant": False}, False),
    ("significant == True", {"significant": True}, True),
    ("significant == false", {"significant": False}, True),
    ("significant == true", {"significant": 1}, False),  # true only equals true
    ("significant", {"significant": True}, True),
    ("significant", {"significant": False}, False),
    ("not significant", {"significant": False}, True),
    ("mission in ['IceCube', 'KM3NeT']", {"mission": "KM3NeT"}, True),
    ("mission in ['IceCube', 'KM3NeT']", {"mission": "Swift"}, False),
    ("mission not in ('IceCube', 'KM3NeT')", {"mission": "Swift"}, True),
    ("mission not in ['IceCube', 'KM3NeT']", {"mission": "IceCube"}, False),
    ("record_number in [1, 2, 3]", {"record_number": 2}, True),
    ("'GRB' in classification", {"classification": {"GRB": 0.9}}, True),
    ("'BAT' in instrument", {"instrument": "BAT-GUANO"}, True),
    ("'x' in ids", {"ids": ["x", "y"]}, True),
    ("p_value < 0.1 and mission == 'IceCube'", {"p_value": 0.01, "mission": "IceCube"}, True),
    ("p_value < 0.1 and mission == 'IceCube'", {"p_value": 0.01, "mission": "KM3NeT"}, False),
    ("p_value < 0.1 or far_hz < 1e-7", {"far_hz": 1e-8}, True),
    ("p_value < 0.1 or far_hz < 1e-7", {"far_hz": 1e-6, "p_value": 0.2}, False),
    ("not p_value < 0.1", {"p_value": 0.5}, True),
    ("not (p_value < 0.1 or snr > 10)", {"p_value": 0.5, "snr": 20}, False),
    ("a or b and c", {"a": True, "b": False, "c": False}, True),  # and binds tighter than or
    ("(a or b) and c", {"a": True, "b": False, "c": False}, False),
    ("0.01 < p_value < 0.1", {"p_value": 0.05}, True),
    ("0.01 < p_value < 0.1", {"p_value": 0.001}, False),
    ("dec > -30.5", {"dec": -10}, True),
    ("dec > -30.5", {"dec": -40}, False),
    ("classification.GRB >= 0.5", {"classification": {"GRB": 0.9}}, True),
    ("classification['GRB'] >= 0.5", {"classification": {"GRB": 0.1}}, False),
    ("extra.p_value < 0.1", {"extra": {"p_value": 0.05}}, True),
    ("energy_range_kev[1] > 100", {"energy_range_kev": [15, 350]}, True),
    ("type == 'update'", {"type": "update"}, True),
    ("mission < 'N'", {"mission": "IceCube"}, True),  # strings order lexicographically
    ("true", {}, True),
    ("false or true", {}, True),
    ("p_value < 0.1\n and snr > 1", {"p_value": 0.01, "snr": 2}, True),  # a multi-line TOML string
])
def test_every_operator(expr, fields, expected):
    assert holds(expr, **fields) is expected


@pytest.mark.parametrize("expr", [
    "p_value < 0.1", "p_value <= 0.1", "p_value > 0.1", "p_value >= 0.1", "p_value == 0.1", "p_value != 0.1",
    "p_value in [0.1, 0.2]", "p_value not in [0.1, 0.2]", "0.1 in p_values", "0.1 not in p_values",
    "classification.GRB > 0.5", "classification.GRB != 0.5", "ids[3] == 'x'", "p_value", "p_value < q_value",
])
def test_missing_field_makes_every_comparison_false(expr):
    assert holds(expr) is False
    assert holds(expr, classification={}, ids=["a"], p_values="not a list or dict") is False
    assert holds(f"not ({expr})") is True  # two-valued: not of a false comparison is true


@pytest.mark.parametrize("expr, fields", [
    ("p_value < 0.1", {"p_value": "0.05"}),  # a string is no number
    ("mission > 3", {"mission": "Swift"}),
    ("significant < 2", {"significant": True}),
    ("classification > 0", {"classification": {"GRB": 1.0}}),
    ("p_value < 0.1", {"p_value": float("nan")}),
    ("p_value >= 0.1", {"p_value": float("nan")}),
    ("p_value in [0.1]", {"p_value": [0.1]}),
    ("'a' in n", {"n": 5}),
    ("'a' not in n", {"n": 5}),
    ("1 not in n", {"n": "abc"}),
    ("1 not in n", {"n": {"1": 2}}),
    ("n == 'x'", {"n": None}),
])
def test_mismatched_kinds_are_false_not_errors(expr, fields):
    assert holds(expr, **fields) is False


def test_predicate_on_alert_fields():
    a = alert(p_value=0.05, mission="shadowed")  # extra cannot override a core field
    fields = alert_fields(a)
    assert fields["mission"] == "IceCube" and fields["p_value"] == 0.05 and fields["extra"]["mission"] == "shadowed"
    assert Predicate("mission == 'IceCube' and p_value < 0.1 and not is_test and type == 'initial'")(a)
    assert Predicate("tense == 'test' and is_test")(replace(a, tense="test"))
    assert Predicate("topic == 'gcn.notices.icecube.alert' and record_number == 1")(a)
    assert Predicate("p_value < 0.1").fields == {"p_value"}
    assert Predicate("classification.GRB > 0.5 or x in ['a']").fields == {"classification", "x"}


@pytest.mark.parametrize("expr, why", [
    ("p_value <", "syntax error"),
    ("", "empty"),
    ("   ", "empty"),
    ("p_value = 0.1", "syntax error"),
    ("__import__('os').system('true')", "function calls"),
    ("open('/etc/passwd')", "function calls"),
    ("p_value + 1 < 2", "arithmetic"),
    ("p_value * 2", "arithmetic"),
    ("lambda: 1", "lambda"),
    ("x if y else z", "if"),
    ("(x := 1)", ":="),
    ("[p for p in q]", "comprehensions"),
    ("f'{x}' == y", "f-strings"),
    ("p_value is None", "Is"),
    ("p_value == None", "None"),
    ("p_value == 1j", "complex"),
    ("p_value == b'x'", "bytes"),
    ("p_value", None),  # accepted: a bare field is a condition
    ("'text'", "not a condition"),
    ("42", "not a condition"),
    ("[1, 2] == x", "only allowed after 'in'"),
    ("x in [y]", "literals"),
    ("x in [[1]]", "literals"),
    ("x == {'a': 1}", "dict"),
    ("-x < 1", "sign"),
    ("-1", "not a condition"),
    ("~x", "'~'"),
    ("-" * 1999 + "1", "not a condition"),
    ("[1," * 600, "too complex"),
    ("x[1:2] == 1", "subscripts"),
    ("x[y] == 1", "subscripts"),
    ("f(x).y == 1", "function calls"),
    ("a < b < c and (d == e) == f", "compared again"),
    ("p_value < 0.1; import os", "syntax error"),
    ("not " * 60 + "x", "deeper"),
    ("(" * 300 + "x" + ")" * 300, "syntax error"),
    ("x" * 3000, "longer"),
    ("a\x00b", "invalid expression"),
])
def test_invalid_expressions_rejected(expr, why):
    if why is None:
        Predicate(expr)
        return
    with pytest.raises(ValueError, match="expression") as info:
        Predicate(expr)
    assert why in str(info.value)
    toml_expr = expr.replace("\\", "\\\\").replace('"', '\\"').replace("\x00", "\\u0000")
    with pytest.raises(ValueError, match=r"rule 'my-rule': bad 'when'"):
        load_rules(f'[[rule]]\nname = "my-rule"\nwhen = "{toml_expr}"\nanalyses = ["snapshot"]\n')


# ------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("text, message", [
    ('[[rule]]\nname = "r"\ntopic = ["x.*"]\nanalyses = ["snapshot"]', "rule 'r': unknown keys topic"),
    ('[[rule]]\ntopics = ["x.*"]\nanalyses = ["snapshot"]', "rule #1: needs a name"),
    ('[[rule]]\nname = "r"', "rule 'r': needs analyses"),
    ('[[rule]]\nname = "r"\nanalyses = []', "rule 'r': analyses is empty"),
    ('[[rule]]\nname = "r"\nanalyses = ["a", "a"]', "name one analysis twice"),
    ('[[rule]]\nname = "r"\nanalyses = [1]', "rule 'r': analyses must be"),
    ('[[rule]]\nname = "r"\ntopics = []\nanalyses = ["a"]', "topics is empty"),
    ('[[rule]]\nname = "r"\nwhen = 3\nanalyses = ["a"]', "when must be a string"),
    ('[[rule]]\nname = "r"\nanalyses = ["a"]\nparams = { b = { x = 1 } }', "params for 'b'"),
    ('[[rule]]\nname = "r"\nanalyses = ["a"]\nparams = { a = 1 }', "params.a must be a table"),
    ('[[rule]]\nname = "r"\nanalyses = ["a"]\ninclude_tests = "yes"', "include_tests must be true or false"),
    ('[[rule]]\nname = "r"\nanalyses = ["a"]\n[[rule]]\nname = "r"\nanalyses = ["b"]', "two rules are named 'r'"),
    ('rule = 3', "array of tables"),
    ('[defaults]\nx = 1', "unknown top-level keys defaults"),
    ('[[rule]\nname = "r"', "not valid TOML"),
])
def test_bad_rules_files(text, message):
    with pytest.raises(ValueError) as info:
        load_rules(text)
    assert message in str(info.value)


def test_load_from_path_str_mapping_and_known_analyses(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(NEUTRINO_RULES)
    for source in (path, str(path)):
        assert [r.name for r in load_rules(source)] == ["neutrino-rate"]
    with pytest.raises(FileNotFoundError):
        load_rules(tmp_path / "missing.toml")
    with pytest.raises(FileNotFoundError):
        load_rules(str(tmp_path / "missing.toml"))
    mapping = {"rule": [{"name": "m", "analyses": ["snapshot"], "when": "snr > 5"}]}
    assert load_rules(mapping).match(alert(snr=6))[0].rule == "m"
    assert len(load_rules(NEUTRINO_RULES, known_analyses=["rate_excess", "snapshot", "other"])) == 1
    with pytest.raises(ValueError, match="rule 'neutrino-rate': unknown analyses snapshot"):
        load_rules(NEUTRINO_RULES, known_analyses=["rate_excess"])
    assert len(load_rules("# nothing yet\n")) == 0


def test_first_matching_rule_sets_params_and_disabled_rules_skip():
    rules = load_rules("""
[[rule]]
name = "off"
enabled = false
analyses = ["snapshot"]
params = { snapshot = { s = 0 } }
[[rule]]
name = "specific"
topics = ["gcn.notices.superk.*"]
analyses = ["rate_excess"]
params = { rate_excess = { on_before_s = 60 } }
[[rule]]
name = "general"
topics = ["gcn.notices.*"]
analyses = ["rate_excess", "snapshot"]
params = { rate_excess = { on_before_s = 10 }, snapshot = { s = 1 } }
""")
    sn = alert("Super-Kamiokande:SN.1", topic="gcn.notices.superk.sn_alert")
    assert [(j.analysis, j.params, j.rule) for j in rules.match(sn)] == [
        ("rate_excess", {"on_before_s": 60}, "specific"), ("snapshot", {"s": 1}, "general")]
    assert [r.name for r in rules.matching_rules(sn)] == ["specific", "general"]
    assert rules.analyses == {"rate_excess", "snapshot"}
    assert rules.match(sn)[0].to_dict() == {"alert_id": "Super-Kamiokande:SN.1", "record_number": 1,
                                            "analysis": "rate_excess", "params": {"on_before_s": 60},
                                            "rule": "specific"}


# -------------------------------------------------------------------------------------- default rules


@needs_files
def test_default_rules_match_shared_examples():
    rules = default_rules()
    for name in TOPICS:
        a = example(name)
        jobs = rules.match(a, run_tests=True)
        assert {j.analysis for j in jobs} == {"rate_excess", "snapshot"}, name
        assert all(j.alert_id == a.id and j.record_number == a.record_number for j in jobs)
        rate = next(j for j in jobs if j.analysis == "rate_excess")
        if name.startswith("superk_sn"):
            assert rate.rule == "supernova" and rate.params["on_before_s"] > 10 and rate.params["on_after_s"] > 10
        else:
            assert rate.rule == "gcn-notices" and rate.params == {}  # the analysis' defaults
    assert rules.match(example("superk_sn_alert.test.json")) == []  # a test notice: only when asked


def igwn(sid: str = "S230914ak", significant: bool = True, alert_type: str = "PRELIMINARY",
         created: str = "2023-09-14T16:30:00Z") -> Alert:
    return parse_notice(f'{{"superevent_id": "{sid}", "alert_type": "{alert_type}", "time_created": "{created}",'
                        f' "event": {{"time": "2023-09-14T16:29:50Z", "far": 1e-10, "significant":'
                        f' {"true" if significant else "false"}, "instruments": ["H1", "L1"]}}}}', "igwn.gwalert")


def test_default_rules_igwn_significant_only():
    rules = default_rules()
    assert [(j.analysis, j.rule) for j in rules.match(igwn())] == [("rate_excess", "igwn-significant")]
    assert rules.match(igwn(significant=False)) == []
    assert rules.match(igwn("MS230914ak")) == []  # a mock superevent is a test
    assert rules.match(igwn("MS230914ak"), run_tests=True)


# -------------------------------------------------------------------------------------------- decider


def test_tests_and_injections_run_only_when_asked():
    decider = AlertDecider(load_rules(NEUTRINO_RULES))
    for tense in ("test", "injection"):
        a = alert(f"IceCube:{tense}", tense=tense, p_value=0.01)
        d = decider.decide(a)
        assert d.action == "ignore_test" and d.jobs == () and d.is_test and tense in d.reason
        assert decider.decide(a).action == "ignore_test"  # ignoring remembers nothing
        d = decider.decide(a, run_tests=True)
        assert d.action == "run" and len(d.jobs) == 2
        assert decider.decide(a, run_tests=True).action == "ignore_duplicate"
    unmatched_test = alert("IceCube:t2", tense="test", p_value=0.5)
    assert decider.decide(unmatched_test).action == "ignore_unmatched"  # no rule would take it anyway
    with_tests = load_rules(NEUTRINO_RULES.replace("include_tests = false", "include_tests = true"))
    assert AlertDecider(with_tests).decide(alert(tense="injection", p_value=0.01)).action == "run"


def test_duplicates_run_once_updates_run_again_stale_ignored():
    decider = AlertDecider(load_rules(NEUTRINO_RULES))
    first = decider.decide(alert(record=1, p_value=0.05))
    assert first.action == "run" and [j.record_number for j in first.jobs] == [1, 1]
    assert decider.decide(alert(record=1, p_value=0.05)).action == "ignore_duplicate"
    assert decider.decide(alert(record=1, p_value=0.01, alert_time=2e9)).action == "ignore_duplicate"
    update = decider.decide(alert(record=3, type="update", p_value=0.02))
    assert update.action == "run" and {j.record_number for j in update.jobs} == {3}
    late = decider.decide(alert(record=2, type="update", p_value=0.02))
    assert late.action == "ignore_duplicate" and "older than record 3" in late.reason
    assert decider.decide(alert(record=4, type="update", p_value=0.5)).action == "ignore_unmatched"
    assert decider.decide(alert("IceCube:2", record=1, p_value=0.05)).action == "run"  # another event
    assert decider.decide(alert("IceCube:2", record=1, p_value=0.05, tense="test"), run_tests=True).action == "run"
    assert all(d in ACTIONS for d in ("run", "cancel"))


def test_notices_without_record_number_told_apart_by_type_and_time():
    decider = AlertDecider()
    assert decider.decide(igwn()).action == "run"
    assert decider.decide(igwn()).action == "ignore_duplicate"  # redelivered
    assert decider.decide(igwn(created="2023-09-14T16:31:00Z")).action == "run"  # second preliminary
    assert decider.decide(igwn(alert_type="UPDATE", created="2023-09-14T17:00:00Z")).action == "run"


def test_an_unmatched_notice_is_not_remembered():
    decider = AlertDecider()
    assert decider.decide(igwn(significant=False)).action == "ignore_unmatched"
    assert decider.decide(igwn(significant=True)).action == "run"  # same key, now significant


def test_retraction_cancels_and_later_notices_ignored():
    decider = AlertDecider(load_rules(NEUTRINO_RULES))
    assert decider.decide(alert(record=1, p_value=0.05)).action == "run"
    d = decider.decide(alert(record=2, type="retraction"))
    assert d.action == "cancel" and d.alert_id == "IceCube:1" and d.jobs == () and "retract" in d.reason
    assert decider.decide(alert(record=2, type="retraction")).action == "ignore_duplicate"
    after = decider.decide(alert(record=3, type="update", p_value=0.01))
    assert after.action == "ignore_duplicate" and "retracted" in after.reason
    # a real retraction of an id never seen still cancels (results may predate a restart), even unmatched topics
    other = decider.decide(alert("Swift:9", record=5, type="retraction", topic="somewhere.else"))
    assert other.action == "cancel" and other.alert_id == "Swift:9"


def test_test_retraction_cancels_only_the_test_stream_that_ran():
    decider = AlertDecider(load_rules(NEUTRINO_RULES))
    retract_test = alert(record=2, type="retraction", tense="test")
    assert decider.decide(retract_test).action == "ignore_test"
    assert decider.decide(alert(record=1, tense="test", p_value=0.01), run_tests=True).action == "run"
    d = decider.decide(retract_test)
    assert d.action == "cancel" and d.is_test
    assert decider.decide(alert(record=1, p_value=0.01)).action == "run"  # the real stream is untouched
    assert AlertDecider().decide(retract_test, run_tests=True).action == "cancel"


@needs_files
def test_decider_on_shared_examples():
    decider = AlertDecider()
    d = decider.decide(example("swift_bat_Guano.json"))
    assert d.action == "run" and {j.analysis for j in d.jobs} == {"rate_excess", "snapshot"}
    assert decider.decide(example("swift_bat_Guano.json")).action == "ignore_duplicate"
    d = decider.decide(example("swift_bat_Guano.Retraction.json"))
    assert (d.action, d.alert_id, d.record_number) == ("cancel", "Swift:694215995", 4)
    assert decider.decide(example("superk_sn_alert.test.json")).action == "ignore_test"
    real = decider.decide(example("superk_sn_alert.real.json"))
    assert real.action == "run" and next(j for j in real.jobs if j.analysis == "rate_excess").rule == "supernova"
    # the test notice shares id and record number with the real one: still its own notice
    assert decider.decide(example("superk_sn_alert.test.json"), run_tests=True).action == "run"
    for name in ("icecube_lvk_nu_track_search.json", "km3net_alert.json", "einstein_probe_wxt_alert.json",
                 "fermi_gbm_trigger.alert.json"):
        assert decider.decide(example(name)).action == "run", name


def test_memory_is_bounded():
    decider = AlertDecider(load_rules('[[rule]]\nname = "all"\nanalyses = ["snapshot"]'), max_keys=50)
    for i in range(500):
        assert decider.decide(alert(f"X:{i}", record=1)).action == "run"
    assert len(decider) == 50 and decider.streams_remembered == 50
    assert decider.decide(alert("X:499", record=1)).action == "ignore_duplicate"  # recent ones are remembered
    assert decider.decide(alert("X:0", record=1)).action == "run"  # the oldest were forgotten
    with pytest.raises(ValueError):
        AlertDecider(max_keys=0)


def test_ruleset_is_iterable_and_indexable():
    rules = default_rules()
    assert len(rules) == 3 and isinstance(rules, RuleSet)
    assert rules["supernova"].description
    with pytest.raises(KeyError):
        rules["nope"]


# ---------------------------------------------------------------------------------------- properties

TOKENS = ["p_value", "far_hz", "mission", "classification", ".", "GRB", "[", "]", "(", ")", ",", "<", "<=", ">",
          ">=", "==", "!=", "=", "in", "not", "and", "or", "true", "false", "True", "None", "0.1", "-", "1e-7", "3",
          "'IceCube'", '"x"', "+", "*", "lambda", ":", "if", "else", "is", "__import__", "'", "{", "}", "1j", "@",
          ";", "\\", "\n", "#", "0", "'a'[0]", "x[1:2]", "f(", "**", "~", "`"]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
    st.lists(st.one_of(st.integers(), st.text(max_size=3), st.floats()), max_size=3),
    st.dictionaries(st.text(max_size=4), st.one_of(st.floats(), st.text(max_size=3)), max_size=3),
    st.integers(min_value=10**30, max_value=10**40), st.just(object()), st.just(b"bytes"), st.just(1 + 2j),
)
FIELDS = st.dictionaries(st.sampled_from(["p_value", "far_hz", "mission", "classification", "GRB", "x"]), VALUES)


def compile_or_value_error(text: str) -> Predicate | None:
    try:
        return Predicate(text)
    except ValueError:
        return None  # the only exception allowed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60))
def test_random_text_only_value_error(text):
    compile_or_value_error(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=14), FIELDS)
def test_random_expressions_load_or_value_error_and_evaluation_never_raises(tokens, fields):
    text = " ".join(tokens)
    predicate = compile_or_value_error(text)
    if predicate is not None:
        assert predicate.evaluate(fields) in (True, False)  # no safety net needed
        assert predicate(fields) is predicate.evaluate(fields)
    toml_text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    try:
        load_rules(f'[[rule]]\nname = "fuzz"\nwhen = "{toml_text}"\nanalyses = ["snapshot"]\n')
    except ValueError as e:
        assert "rule 'fuzz'" in str(e) or "not valid TOML" in str(e)


LITERALS = st.one_of(st.sampled_from(["0.1", "-3", "1e-7", "'IceCube'", "true", "false", "2"]),
                     st.floats(allow_nan=False).map(repr).filter(lambda r: "inf" not in r))
OPERANDS = st.one_of(st.sampled_from(["p_value", "far_hz", "mission", "classification.GRB", "x['a']"]), LITERALS)


@st.composite
def conditions(draw, depth: int = 0) -> str:
    """Well-formed expressions of the language: each must compile, and evaluate to a bool."""
    kind = draw(st.sampled_from(["cmp", "in", "field"] + (["and", "or", "not"] if depth < 4 else [])))
    if kind == "cmp":
        op = draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
        return f"{draw(OPERANDS)} {op} {draw(OPERANDS)}"
    if kind == "in":
        items = ", ".join(draw(st.lists(LITERALS, max_size=3)))
        return f"{draw(OPERANDS)} {draw(st.sampled_from(['in', 'not in']))} [{items}]"
    if kind == "field":
        return draw(st.sampled_from(["p_value", "significant", "classification"]))
    if kind == "not":
        return f"not ({draw(conditions(depth + 1))})"
    return f"({draw(conditions(depth + 1))}) {kind} ({draw(conditions(depth + 1))})"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conditions(), FIELDS)
def test_well_formed_expressions_compile_and_evaluate(text, fields):
    predicate = Predicate(text)
    assert predicate.evaluate(fields) in (True, False)
    negated = Predicate(f"not ({text})")
    assert negated.evaluate(fields) is (not predicate.evaluate(fields))


@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=True), st.floats(allow_nan=False, allow_infinity=False))
def test_numeric_comparisons_agree_with_python(value, threshold):
    for op in ("<", "<=", ">", ">=", "==", "!="):
        expected = eval(f"value {op} threshold")  # noqa: S307 - the reference, on two floats
        got = Predicate(f"v {op} {threshold!r}")({"v": value})
        assert got is expected, (value, op, threshold)
