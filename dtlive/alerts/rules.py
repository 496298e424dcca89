"""Which canned analyses an alert starts: rules from a TOML file, and a pure decider.

A rules file is a list of ``[[rule]]`` tables. Each rule names topic patterns (``fnmatch``, case-insensitive;
default ``["*"]``), an optional predicate ``when`` over the alert's fields, the ``analyses`` to run and their
``params``; ``include_tests = true`` lets test / injection notices through it even when the caller did not ask
for tests; ``enabled = false`` switches it off; ``description`` is free text. Unknown keys are errors::

    [[rule]]
    name = "neutrino-rate"
    topics = ["gcn.notices.icecube.*", "gcn.notices.km3net.*"]
    when = "p_value < 0.1 or far_hz < 1e-7"
    analyses = ["rate_excess", "snapshot"]
    params = { rate_excess = { on_before_s = 10 } }
    include_tests = false

**Predicates** (``when``) are the small, safe expression language of :mod:`dtlive.alerts.expressions`.

**Matching**: rules are tried in file order; an analysis runs at most once per alert, with the params of the
first matching rule that names it (so put specific rules before general ones). A test / injection notice
(``alert.is_test``) only matches rules with ``include_tests = true`` unless ``run_tests=True`` is passed.

**Deciding**: :class:`AlertDecider` turns alerts, in arrival order, into :class:`Decision` s: ``run`` (start
``jobs``), ``cancel`` (a retraction: cancel pending jobs of ``alert_id`` and mark its finished results
retracted), or one of the ``ignore_*`` actions. It does no I/O and remembers a bounded number of alerts.

>>> rules = load_rules('''
... [[rule]]
... name = "neutrino-rate"
... topics = ["gcn.notices.icecube.*"]
... when = "p_value < 0.1"
... analyses = ["rate_excess", "snapshot"]
... params = { rate_excess = { on_before_s = 10 } }
... ''')
>>> from dtlive.alerts import parse_notice
>>> nu = parse_notice('{"mission": "IceCube", "id": "S230914ak", "p_value": 0.02,'
...                   ' "trigger_time": "2023-09-14T16:30:00Z"}', "gcn.notices.icecube.lvk_nu_track_search")
>>> [(j.analysis, j.params) for j in rules.match(nu)]
[('rate_excess', {'on_before_s': 10}), ('snapshot', {})]
>>> decider = AlertDecider(rules)
>>> decider.decide(nu).action, decider.decide(nu).action
('run', 'ignore_duplicate')
"""

from __future__ import annotations

import copy
import fnmatch
import os
import tomllib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtlive.alerts.expressions import Predicate, alert_fields
from dtlive.alerts.notices import Alert

__all__ = [
    "ACTIONS",
    "DEFAULT_RULES_TOML",
    "AlertDecider",
    "Decision",
    "Job",
    "Predicate",
    "Rule",
    "RuleSet",
    "alert_fields",
    "default_rules",
    "load_rules",
]

#: what :meth:`AlertDecider.decide` can answer
ACTIONS = ("run", "ignore_test", "ignore_duplicate", "ignore_unmatched", "cancel")
#: The rules :func:`default_rules` loads: every GCN notice -> rate_excess and snapshot, significant IGWN alerts
#: -> rate_excess, supernova alerts -> rate_excess over a longer window (first rule naming an analysis wins).
#: Params not given here are the analyses' own defaults (dtlive.alerts.analyses).
DEFAULT_RULES_TOML = """\
[[rule]]
name = "supernova"
description = "Supernova neutrino bursts: rate excess over a longer window"
topics = ["gcn.notices.superk.sn_alert*", "gcn.notices.snews.*", "gcn.classic.voevent.snews*"]
analyses = ["rate_excess"]
params = { rate_excess = { on_before_s = 60, on_after_s = 300, background_s = 1800 } }

[[rule]]
name = "igwn-significant"
description = "Significant gravitational-wave alerts from IGWN"
topics = ["igwn.gwalert*"]
when = "significant == true"
analyses = ["rate_excess"]

[[rule]]
name = "gcn-notices"
description = "Every GCN notice (JSON topics)"
topics = ["gcn.notices.*"]
analyses = ["rate_excess", "snapshot"]
"""

_RULE_KEYS = ("name", "topics", "when", "analyses", "params", "include_tests", "enabled", "description")


# ------------------------------------------------------------------------------------------------ rules


@dataclass(frozen=True)
class Job:
    """One analysis to start for one alert revision. ``params`` is the rule's table for that analysis (a fresh
    copy per job); ``rule`` is the name of the rule that asked for it.

    >>> Job("Swift:694215995", 1, "snapshot", {}, "gcn-notices").key
    ('Swift:694215995', 1, 'snapshot')
    """

    alert_id: str
    record_number: int
    analysis: str
    params: dict[str, Any]
    rule: str

    @property
    def key(self) -> tuple[str, int, str]:
        """``(alert_id, record_number, analysis)``: unique among the jobs of one decider."""
        return (self.alert_id, self.record_number, self.analysis)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the job."""
        return {"alert_id": self.alert_id, "record_number": self.record_number, "analysis": self.analysis,
                "params": copy.deepcopy(self.params), "rule": self.rule}


@dataclass(frozen=True, eq=False)
class Rule:
    """One ``[[rule]]`` table, validated. ``topics`` are fnmatch patterns matched case-insensitively against
    ``alert.topic``; ``when`` is a :class:`Predicate` or None (always); ``params`` maps analysis -> its table.

    >>> r = Rule("swift", topics=("gcn.notices.swift.*",), analyses=("snapshot",))
    >>> r.matches_topic("gcn.notices.swift.bat.guano"), r.matches_topic("gcn.notices.fermi.gbm.alert")
    (True, False)
    """

    name: str
    topics: tuple[str, ...] = ("*",)
    when: Predicate | None = None
    analyses: tuple[str, ...] = ()
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    include_tests: bool = False
    enabled: bool = True
    description: str = ""

    def matches_topic(self, topic: str) -> bool:
        """True when ``topic`` matches one of the patterns (case-insensitive; ``*`` also matches no topic)."""
        t = (topic or "").lower()
        return any(fnmatch.fnmatchcase(t, p.lower()) for p in self.topics)

    def matches(self, alert: Alert, run_tests: bool = False, fields: Mapping[str, Any] | None = None) -> bool:
        """Topic, ``when`` and test handling: does this rule start its analyses for ``alert``?"""
        if not self.enabled or (alert.is_test and not (run_tests or self.include_tests)):
            return False
        if not self.matches_topic(alert.topic):
            return False
        return self.when is None or self.when(alert_fields(alert) if fields is None else fields)


@dataclass(frozen=True)
class RuleSet:
    """Rules in order. :meth:`match` gives the jobs an alert starts (each analysis once, first rule wins).

    >>> rules = default_rules()
    >>> [r.name for r in rules]
    ['supernova', 'igwn-significant', 'gcn-notices']
    """

    rules: tuple[Rule, ...] = ()

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __getitem__(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    @property
    def analyses(self) -> frozenset[str]:
        """Every analysis some rule can start."""
        return frozenset(a for r in self.rules for a in r.analyses)

    def matching_rules(self, alert: Alert, run_tests: bool = False) -> list[Rule]:
        """The rules that match ``alert``, in order."""
        fields = alert_fields(alert)
        return [r for r in self.rules if r.matches(alert, run_tests, fields)]

    def match(self, alert: Alert, run_tests: bool = False) -> list[Job]:
        """Jobs for ``alert``: for each matching rule in order, each of its analyses not yet claimed.

        Test / injection notices only match rules with ``include_tests`` unless ``run_tests`` is True.
        Retractions are matched like any notice; :class:`AlertDecider` handles them before matching.

        >>> from dtlive.alerts import parse_notice
        >>> sn = parse_notice('{"mission": "Super-Kamiokande", "id": "SN.1", "record_number": 1}',
        ...                   "gcn.notices.superk.sn_alert")
        >>> [(j.analysis, j.rule, j.params) for j in default_rules().match(sn)]  # doctest: +NORMALIZE_WHITESPACE
        [('rate_excess', 'supernova', {'on_before_s': 60, 'on_after_s': 300, 'background_s': 1800}),
         ('snapshot', 'gcn-notices', {})]
        """
        jobs: list[Job] = []
        claimed: set[str] = set()
        for rule in self.matching_rules(alert, run_tests):
            for analysis in rule.analyses:
                if analysis not in claimed:
                    claimed.add(analysis)
                    jobs.append(Job(alert.id, alert.record_number, analysis,
                                    copy.deepcopy(dict(rule.params.get(analysis, {}))), rule.name))
        return jobs


def _string_list(value: Any, what: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{where}: {what} must be a non-empty string or a list of them, got {value!r}")
    return tuple(v.strip() for v in value)


def _rule_from_table(table: Any, index: int, known_analyses: frozenset[str] | None) -> Rule:
    where = f"rule #{index + 1}"
    if not isinstance(table, Mapping):
        raise ValueError(f"{where}: expected a [[rule]] table, got {type(table).__name__}")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: needs a name (a non-empty string)")
    name = name.strip()
    where = f"rule {name!r}"
    unknown = sorted(str(k) for k in table if k not in _RULE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(_RULE_KEYS)})")

    topics = _string_list(table.get("topics", ["*"]), "topics", where)
    if not topics:
        raise ValueError(f"{where}: topics is empty (use [\"*\"] for every topic)")
    when = None
    if table.get("when") is not None:
        text = table["when"]
        if not isinstance(text, str):
            raise ValueError(f"{where}: when must be a string, got {type(text).__name__}")
        try:
            when = Predicate(text)
        except ValueError as e:
            raise ValueError(f"{where}: bad 'when': {e}") from None
    if "analyses" not in table:
        raise ValueError(f"{where}: needs analyses (a list of analysis names)")
    analyses = _string_list(table["analyses"], "analyses", where)
    if not analyses:
        raise ValueError(f"{where}: analyses is empty")
    if len(set(analyses)) != len(analyses):
        raise ValueError(f"{where}: analyses {list(analyses)} name one analysis twice")
    if known_analyses is not None:
        strange = [a for a in analyses if a not in known_analyses]
        if strange:
            raise ValueError(f"{where}: unknown analyses {', '.join(strange)} "
                             f"(known: {', '.join(sorted(known_analyses))})")
    params = table.get("params", {})
    if not isinstance(params, Mapping):
        raise ValueError(f"{where}: params must be a table of analysis -> table, got {type(params).__name__}")
    for analysis, p in params.items():
        if analysis not in analyses:
            raise ValueError(f"{where}: params for {analysis!r}, which is not in its analyses {list(analyses)}")
        if not isinstance(p, Mapping):
            raise ValueError(f"{where}: params.{analysis} must be a table, got {type(p).__name__}")
    flags = {}
    for key, default in (("include_tests", False), ("enabled", True)):
        flags[key] = table.get(key, default)
        if not isinstance(flags[key], bool):
            raise ValueError(f"{where}: {key} must be true or false, got {flags[key]!r}")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"{where}: description must be a string")
    return Rule(name=name, topics=topics, when=when, analyses=analyses,
                params={a: copy.deepcopy(dict(p)) for a, p in params.items()},
                include_tests=flags["include_tests"], enabled=flags["enabled"], description=description)


def load_rules(source: str | os.PathLike[str] | Mapping[str, Any],
               known_analyses: Iterable[str] | None = None) -> RuleSet:
    """Rules from a TOML file (a path, or a one-line string ending in ``.toml`` / naming an existing file),
    TOML text, or an already parsed mapping with a ``rule`` list. Raises :class:`ValueError` naming the rule
    for anything invalid (a bad ``when``, unknown keys, params for an analysis the rule does not run, an
    analysis outside ``known_analyses`` when given, duplicate names), :class:`FileNotFoundError` for a
    missing file.

    >>> load_rules('[[rule]]\\nname = "x"\\nwhen = "p_value <"\\nanalyses = ["snapshot"]')
    Traceback (most recent call last):
    ...
    ValueError: rule 'x': bad 'when': invalid expression 'p_value <': syntax error (invalid syntax)
    >>> len(load_rules(""))
    0
    """
    origin = "rules"
    if isinstance(source, Mapping):
        data: Any = source
    else:
        if isinstance(source, os.PathLike) or (
                isinstance(source, str) and "\n" not in source and "=" not in source
                and (source.strip().lower().endswith(".toml") or Path(source).is_file())):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"rules file {path} does not exist")
            origin, text = str(path), path.read_text(encoding="utf-8")
        elif isinstance(source, str):
            text = source
        else:
            raise ValueError(f"rules must be a path, TOML text or a mapping, not {type(source).__name__}")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{origin}: not valid TOML ({e})") from None
    unknown = sorted(str(k) for k in data if k != "rule")
    if unknown:
        raise ValueError(f"{origin}: unknown top-level keys {', '.join(unknown)} (rules go in [[rule]] tables)")
    tables = data.get("rule", [])
    if not isinstance(tables, list):
        raise ValueError(f"{origin}: 'rule' must be an array of tables ([[rule]]), got {type(tables).__name__}")
    known = frozenset(known_analyses) if known_analyses is not None else None
    rules = [_rule_from_table(t, i, known) for i, t in enumerate(tables)]
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ValueError(f"{origin}: two rules are named {rule.name!r}")
        seen.add(rule.name)
    return RuleSet(tuple(rules))


def default_rules() -> RuleSet:
    """The built-in rules (:data:`DEFAULT_RULES_TOML`): supernova alerts -> ``rate_excess`` over
    60 s before / 300 s after (30 min background); significant IGWN alerts -> ``rate_excess``; every GCN JSON
    notice (``gcn.notices.*``) -> ``rate_excess`` and ``snapshot`` (the analyses' default params).

    >>> sorted(default_rules().analyses)
    ['rate_excess', 'snapshot']
    """
    return load_rules(DEFAULT_RULES_TOML)


# ---------------------------------------------------------------------------------------------- decider


@dataclass(frozen=True)
class Decision:
    """What to do with one alert. ``action`` is one of :data:`ACTIONS`:

    - ``run``: start ``jobs``;
    - ``cancel``: the alert is a retraction: cancel pending jobs of ``alert_id`` and mark its finished results
      retracted (``is_test`` tells whether the test or the real stream of that id is meant);
    - ``ignore_test``: a test / injection notice, and tests were not asked for;
    - ``ignore_duplicate``: nothing new: a repeat of a notice already handled, a record older than one already
      run, or a notice of an event already retracted;
    - ``ignore_unmatched``: no rule matches.

    ``reason`` says why, for a log.

    >>> from dtlive.alerts import parse_notice
    >>> d = AlertDecider().decide(parse_notice('{"mission": "Swift", "id": "42", "record_number": 1}',
    ...                                        "gcn.notices.swift.bat.guano"))
    >>> d.action, d.alert_id, d.record_number, [j.analysis for j in d.jobs], d.is_test
    ('run', 'Swift:42', 1, ['rate_excess', 'snapshot'], False)
    """

    action: str
    alert_id: str
    record_number: int
    jobs: tuple[Job, ...] = ()
    reason: str = ""
    is_test: bool = False


@dataclass
class _Stream:
    """What the decider remembers of one alert id (test and real notices of one id are separate streams)."""

    last_record: int = -1  # highest record number run or retracted
    runs: int = 0  # notices that started jobs
    retracted_at: int | None = None


class AlertDecider:
    """A pure state machine: alerts in arrival order -> :class:`Decision` s. No I/O, no clock, no threads.

    Duplicates (same id, same record number) run once; a higher record number runs again; an older one is
    ignored. Notices without a record number (0: IGWN alerts, some GCN ones) are told apart by type and alert
    time, so an IGWN update runs again but a redelivered one does not. A retraction always answers ``cancel``
    (real ones even for ids it does not remember: the caller may hold results from before a restart); later
    notices of a retracted id are ignored. Test / injection notices are a stream of their own (Super-K sends
    tests with real ids): they run only with ``run_tests=True`` or through a rule with ``include_tests``, and
    their retraction cancels only if tests are asked for or a test notice of that id ran. Memory is bounded:
    at most ``max_keys`` notice keys and ``max_keys`` ids, the oldest forgotten first.

    >>> from dtlive.alerts import parse_notice
    >>> notice = '{"mission": "Swift", "id": "694215995", "record_number": %d, "alert_type": "%s"}'
    >>> decider = AlertDecider()
    >>> for record, kind in [(1, "initial"), (1, "initial"), (2, "update"), (4, "retraction")]:
    ...     d = decider.decide(parse_notice(notice % (record, kind), "gcn.notices.swift.bat.guano"))
    ...     print(d.action, [j.analysis for j in d.jobs])
    run ['rate_excess', 'snapshot']
    ignore_duplicate []
    run ['rate_excess', 'snapshot']
    cancel []
    """

    def __init__(self, rules: RuleSet | None = None, *, max_keys: int = 10_000):
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.rules = default_rules() if rules is None else rules
        self.max_keys = int(max_keys)
        self._handled: OrderedDict[tuple, None] = OrderedDict()  # notice keys that ran or cancelled
        self._streams: OrderedDict[tuple[str, bool], _Stream] = OrderedDict()

    def __len__(self) -> int:
        """Number of notice keys remembered (at most ``max_keys``)."""
        return len(self._handled)

    @property
    def streams_remembered(self) -> int:
        """Number of alert streams whose history is remembered (at most ``max_keys``)."""
        return len(self._streams)

    @staticmethod
    def notice_key(alert: Alert) -> tuple:
        """What makes two notices the same: id, test or not, record number, and for record number 0 also
        the type and alert time."""
        if alert.record_number > 0:
            return (alert.id, alert.is_test, alert.record_number)
        return (alert.id, alert.is_test, 0, alert.type, alert.alert_time)

    def _remember(self, key: tuple, stream_key: tuple[str, bool]) -> _Stream:
        self._handled[key] = None
        self._handled.move_to_end(key)
        while len(self._handled) > self.max_keys:
            self._handled.popitem(last=False)
        stream = self._streams.pop(stream_key, None) or _Stream()
        self._streams[stream_key] = stream
        while len(self._streams) > self.max_keys:
            self._streams.popitem(last=False)
        return stream

    def decide(self, alert: Alert, run_tests: bool = False) -> Decision:
        """The decision for the next alert (see the class docstring); updates the decider's memory."""
        key = self.notice_key(alert)
        stream_key = (alert.id, alert.is_test)
        stream = self._streams.get(stream_key)
        label = f"{alert.id} record {alert.record_number}" + (f" ({alert.tense})" if alert.is_test else "")

        def decision(action: str, reason: str, jobs: Iterable[Job] = ()) -> Decision:
            return Decision(action, alert.id, alert.record_number, tuple(jobs), reason, alert.is_test)

        if key in self._handled:
            self._handled.move_to_end(key)
            return decision("ignore_duplicate", f"{label} ({alert.type}) was already handled")

        if alert.is_retraction:
            if alert.is_test and not run_tests and not (stream and stream.runs):
                return decision("ignore_test", f"{label} is a test retraction and no test of it ran")
            ran = stream.runs if stream else 0
            stream = self._remember(key, stream_key)
            stream.retracted_at = alert.record_number
            stream.last_record = max(stream.last_record, alert.record_number)
            return decision("cancel", f"{label} retracts {alert.id}: cancel its pending jobs and mark its results "
                            f"retracted ({ran} notice(s) of it ran here)")

        if stream is not None and stream.retracted_at is not None:
            return decision("ignore_duplicate", f"{alert.id} was retracted (record {stream.retracted_at}); "
                            f"{label} is ignored")
        if stream is not None and 0 < alert.record_number < stream.last_record:
            return decision("ignore_duplicate", f"{label} is older than record {stream.last_record} already run")

        jobs = self.rules.match(alert, run_tests=run_tests)
        if not jobs:
            if alert.is_test and not run_tests and self.rules.match(alert, run_tests=True):
                return decision("ignore_test", f"{label} is a {alert.tense} notice and tests were not asked for")
            return decision("ignore_unmatched", f"no rule matches {label} on topic {alert.topic!r}")
        stream = self._remember(key, stream_key)
        stream.runs += 1
        stream.last_record = max(stream.last_record, alert.record_number)
        rules = sorted({j.rule for j in jobs})
        return decision("run", f"{label} ({alert.type}) matches {', '.join(rules)}: "
                        f"{', '.join(j.analysis for j in jobs)}", jobs)
