"""Parse GCN / IGWN alert notices into one normalised :class:`Alert` (pure functions, no Kafka).

Three payload families are understood, told apart by their content (the topic is only a hint):

- ``"json"``: GCN notices of the ``nasa-gcn/gcn-schema`` family (``gcn.notices.<mission>...``): ``mission``,
  ``instrument``, ``id`` (string or list), ``record_number``, ``trigger_time`` / ``alert_datetime`` (UTC ISO),
  ``alert_type`` (initial / update / retraction), ``alert_tense`` (current / test / injection ...),
  ``ra`` / ``dec`` / ``ra_dec_error``; the mission may only be named by ``$schema`` or the topic;
- ``"voevent"``: VOEvent 2.0 XML of GCN Classic (``gcn.classic.voevent.*``): ``role``, ``ivorn``, ``Who/Date``,
  ``WhereWhen`` ISOTime and Position2D, ``What`` Params (``TrigID``, ``Sequence_Num``, ``AlertType`` ...);
- ``"igwn"``: IGWN (LIGO/Virgo/KAGRA) JSON alerts (``igwn.gwalert``): ``superevent_id``, ``alert_type``,
  ``time_created``, ``event`` (``time``, ``far``, ``significant`` ...); mock superevents (``M...``) are tests.

Anything broken or unknown raises :class:`NoticeError` (a ``ValueError``) with a short machine ``reason``;
``parse_notice`` never raises anything else.

>>> from dtlive.alerts import parse_notice, alert_to_dict, alert_from_dict
>>> a = parse_notice(b'{"mission": "Swift", "instrument": "BAT-GUANO", "id": ["694215995"], "record_number": 4,'
...                  b' "alert_type": "retraction", "alert_tense": "current",'
...                  b' "trigger_time": "2022-12-31T21:46:05.13Z"}', topic="gcn.notices.swift.bat.guano")
>>> a.id, a.record_number, a.type, a.is_retraction, a.is_test, a.trigger_time
('Swift:694215995', 4, 'retraction', True, False, 1672523165.13)
>>> alert_from_dict(alert_to_dict(a)) == a
True
>>> parse_notice(b'{"mission": "Swift"')
Traceback (most recent call last):
...
dtlive.alerts.notices.NoticeError: not_json: Expecting ',' delimiter: line 1 column 20 (char 19)

Long on purpose: it maps three notice families and their many field spellings onto one :class:`Alert`;
the mapping tables are easier to check side by side than apart.
"""

from __future__ import annotations

import base64
import calendar
import copy
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dtlive.core.messages import ALERT_SCHEMA

__all__ = [
    "FORMATS",
    "REASONS",
    "TEST_TENSES",
    "Alert",
    "NoticeError",
    "alert_from_dict",
    "alert_to_dict",
    "canonical_mission",
    "parse_notice",
    "parse_time",
]

FORMATS = ("json", "voevent", "igwn")
#: machine reasons carried by :class:`NoticeError`
REASONS = frozenset({
    "bad_payload",  # not bytes / str
    "empty",  # nothing but whitespace
    "not_utf8",  # bytes that are not UTF-8 text
    "not_json",  # looks like JSON ("{" / "[") but does not parse
    "not_xml",  # looks like XML ("<") but does not parse
    "unsafe_xml",  # XML with a DTD / entity declarations (never in a VOEvent; refused)
    "unknown_format",  # parses, but is no GCN JSON notice, VOEvent or IGWN alert
    "missing_field",  # a notice without a field it cannot do without (mission, event id, VOEvent time ...)
    "bad_field",  # a field of the wrong type (e.g. a numeric mission)
    "bad_time",  # a time that is not a UTC ISO 8601 date-time
    "internal_error",  # a bug in this module met an odd notice (reported, never raised as anything else)
})
#: tenses that mean "not a real alert"
TEST_TENSES = frozenset({"test", "injection"})

_TYPES = {
    "initial": "initial", "update": "update", "retraction": "retraction", "preliminary": "preliminary",
    "early_warning": "early_warning", "earlywarning": "early_warning", "early warning": "early_warning",
    "retracted": "retraction",
}
# GCN alert_type values that are really tenses (gcn-schema core/Alert: test, injected, commended)
_TYPE_AS_TENSE = {"test": "test", "injected": "injection", "injection": "injection",
                  "commended": "commanded", "commanded": "commanded"}
_TENSES = {
    "current": "observation", "observation": "observation", "real": "observation",
    "test": "test", "mock": "test", "injection": "injection", "injected": "injection",
    "archival": "archival", "planned": "planned", "commanded": "commanded", "commended": "commanded",
    "utility": "utility", "prediction": "prediction",
}
_MISSIONS = {
    "swift": "Swift", "fermi": "Fermi", "glast": "Fermi", "superk": "Super-Kamiokande",
    "superkamiokande": "Super-Kamiokande", "icecube": "IceCube", "km3net": "KM3NeT",
    "einsteinprobe": "Einstein Probe", "ep": "Einstein Probe", "lvk": "LVK", "lvc": "LVK", "igwn": "LVK",
    "integral": "INTEGRAL", "maxi": "MAXI", "svom": "SVOM", "agile": "AGILE", "chime": "CHIME", "amon": "AMON",
    "snews": "SNEWS", "antares": "ANTARES", "hawc": "HAWC", "gecam": "GECAM", "calet": "CALET",
    "dsa110": "DSA-110", "konus": "Konus-Wind", "konuswind": "Konus-Wind", "moa": "MOA", "hess": "H.E.S.S.",
}
_GCN_MARKERS = ("mission", "instrument", "trigger_time", "alert_datetime", "alert_type", "alert_tense",
                "record_number")
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,12}))?)?\s*(Z|z|UTC|GMT|[+-]\d{2}:?\d{2})?")
_YEAR = 365.25 * 86400.0
_NOT_INSTRUMENTS = frozenset({"FOM", "SC", "TOO", "ICECUBE", "AMON", "LVC"})  # leading words of GCN Classic kinds
_ENERGY_TO_GEV = {"ev": 1e-9, "kev": 1e-6, "mev": 1e-3, "gev": 1.0, "tev": 1e3, "pev": 1e6, "eev": 1e9}


class NoticeError(ValueError):
    """A notice that cannot be parsed: ``reason`` is a short machine word (see :data:`REASONS`), ``message``
    says what was wrong for a human.

    >>> e = NoticeError("bad_time", "trigger_time '2024-13-01T00:00:00Z' is not a valid date")
    >>> e.reason, isinstance(e, ValueError), str(e)
    ('bad_time', True, "bad_time: trigger_time '2024-13-01T00:00:00Z' is not a valid date")
    """

    def __init__(self, reason: str, message: str):
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True)
class Alert:
    """One parsed notice, whatever its format.

    ``id`` is ``"<mission>:<trigger or event id>"`` and stays the same over every revision of one event
    (``record_number`` tells revisions apart; 0 when the notice carries none). Times are UNIX seconds (UTC).
    ``type`` is one of ``preliminary``, ``early_warning``, ``initial``, ``update``, ``retraction`` (other
    values pass through lower-cased); ``tense`` is ``observation`` (GCN ``current``, VOEvent ``observation``),
    ``test``, ``injection``, ``archival``, ``planned``, ``commanded``, ``utility`` ...
    ``localisation`` is ``{"ra", "dec", "error_deg", "containment"}`` in degrees (error and containment may be
    None) or None. ``extra`` holds notable fields under normalised keys (``far_hz``, ``p_value``,
    ``signalness``, ``snr``, ``significance_sigma``, ``energy_gev``, ``classification``, ``urls`` ...).
    ``raw`` is the payload as received; ``format`` is ``"json"``, ``"voevent"`` or ``"igwn"``.

    >>> a = Alert(id="LVK:S230914ak", record_number=0, mission="LVK", instrument="H1,L1", topic="igwn.gwalert",
    ...           trigger_time=1694689841.0, alert_time=None, type="retraction", tense="observation",
    ...           localisation=None, extra={}, raw=b"{}", format="igwn")
    >>> a.is_retraction, a.is_test
    (True, False)
    """

    id: str
    record_number: int
    mission: str
    instrument: str
    topic: str
    trigger_time: float | None
    alert_time: float | None
    type: str
    tense: str
    localisation: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)
    raw: bytes | str = field(default=b"", repr=False)
    format: str = "json"

    @property
    def is_retraction(self) -> bool:
        """True when this notice withdraws the event (``type == "retraction"``)."""
        return self.type == "retraction"

    @property
    def is_test(self) -> bool:
        """True for test / mock / injected notices (``tense`` in :data:`TEST_TENSES`): not a real alert."""
        return self.tense in TEST_TENSES

    def __hash__(self) -> int:
        return hash((self.id, self.record_number, self.type, self.tense, self.format, self.trigger_time))


# ----------------------------------------------------------------------------------------------- helpers


def parse_time(value: Any, name: str = "time") -> float:
    """UTC ISO 8601 date-time (``Z``, an offset or none = UTC; any number of decimals) -> UNIX seconds.

    Raises :class:`NoticeError` (``bad_time``) for anything else.

    >>> parse_time("2023-08-01T00:00:01.000000Z"), parse_time("2024-08-24T02:14:40.43")
    (1690848001.0, 1724465680.43)
    >>> parse_time("2023-08-01T02:00:01+02:00")
    1690848001.0
    """
    if not isinstance(value, str):
        raise NoticeError("bad_time", f"{name} is {type(value).__name__}, not an ISO 8601 string")
    m = _ISO.fullmatch(value.strip())
    if m is None:
        raise NoticeError("bad_time", f"{name} {value[:60]!r} is not an ISO 8601 UTC date-time")
    year, month, day, hour, minute = (int(m.group(i)) for i in range(1, 6))
    second = int(m.group(6) or 0)
    frac = float("0." + m.group(7)) if m.group(7) else 0.0
    leap = 1 if second == 60 else 0  # a leap second: POSIX time repeats, take the next second
    try:
        datetime(year, month, day, hour, minute, second - leap)
    except ValueError as e:
        raise NoticeError("bad_time", f"{name} {value[:60]!r} is not a valid date-time ({e})") from None
    seconds = calendar.timegm((year, month, day, hour, minute, second - leap, 0, 0, 0)) + leap
    tz = m.group(8)
    if tz and tz[0] in "+-":
        digits = tz[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            raise NoticeError("bad_time", f"{name} {value[:60]!r} has an invalid UTC offset")
        seconds -= (1 if tz[0] == "+" else -1) * (hours * 3600 + minutes * 60)
    return round(seconds + frac, 9) if frac else float(seconds)


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def canonical_mission(name: str) -> str:
    """One spelling per mission, whatever the source calls it (unknown names pass through, stripped).

    >>> canonical_mission("einstein_probe"), canonical_mission("SWIFT"), canonical_mission("superk")
    ('Einstein Probe', 'Swift', 'Super-Kamiokande')
    """
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return _MISSIONS.get(key, name.strip())


def _num(value: Any) -> float | None:
    """A finite float from a JSON number or a numeric string, else None (bools are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            f = float(value)
        except OverflowError:
            return None
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _int(value: Any) -> int | None:
    f = _num(value)
    if f is None or abs(f) > 2**62:
        return None
    return int(f)


def _flag(value: Any) -> bool | None:
    """true/false/1/0/yes/no (any case, JSON bool or number) -> bool, else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return bool(value) if math.isfinite(value) else None
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "t", "yes", "y", "1"):
            return True
        if v in ("false", "f", "no", "n", "0"):
            return False
    return None


def _text(value: Any) -> str | None:
    """A non-empty stripped string from a string or a number, else None."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _first_text(value: Any) -> str | None:
    """The id of a GCN ``id`` / ``event_name`` field: a string, a number or the first usable list entry."""
    if isinstance(value, list):
        for v in value:
            t = _text(v)
            if t:
                return t
        return None
    return _text(value)


def _type(value: str) -> str:
    v = value.strip().lower().replace("-", "_")
    return _TYPES.get(v, v)


def _tense(value: str) -> str:
    v = value.strip().lower()
    return _TENSES.get(v, v)


def _localisation(ra: Any, dec: Any, error: Any = None, containment: Any = None) -> dict[str, Any] | None:
    r, d = _num(ra), _num(dec)
    if r is None or d is None or not (-360.0 <= r <= 360.0) or not (-90.0 <= d <= 90.0):
        return None
    e, c = _num(error), _num(containment)
    return {"ra": r % 360.0, "dec": d, "error_deg": e if e is not None and e >= 0 else None,
            "containment": c if c is not None and 0 < c <= 1 else None}


def _put(extra: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and key not in extra:
        extra[key] = value


# --------------------------------------------------------------------------------------------- dispatch


def parse_notice(payload: bytes | bytearray | memoryview | str, topic: str = "") -> Alert:
    """Parse one notice (GCN JSON, GCN Classic VOEvent XML or IGWN JSON) into an :class:`Alert`.

    ``topic`` is recorded and only used as a hint (mission / instrument of ``gcn.notices.<mission>.<instr>...``
    notices that do not name them). Raises :class:`NoticeError` and nothing else for broken or unknown input.

    >>> a = parse_notice('{"superevent_id": "MS181101ab", "alert_type": "RETRACTION",'
    ...                  ' "time_created": "2018-11-01T22:34:49Z", "event": null, "urls": {}}', "igwn.gwalert")
    >>> a.id, a.type, a.tense, a.is_retraction, a.is_test, a.format
    ('LVK:MS181101ab', 'retraction', 'test', True, True, 'igwn')
    >>> try:
    ...     parse_notice(b"\\x89PNG\\r\\n\\x1a\\n\\x00\\x00")
    ... except NoticeError as e:
    ...     print(e.reason)
    not_utf8
    """
    try:
        return _parse(payload, topic if isinstance(topic, str) else "")
    except NoticeError:
        raise
    except RecursionError:
        raise NoticeError("unknown_format", "notice nested too deeply") from None
    except Exception as e:  # a bug of ours must still surface as "this notice could not be parsed"
        raise NoticeError("internal_error", f"unexpected {type(e).__name__} while parsing: {e}") from e


def _parse(payload: Any, topic: str) -> Alert:
    if isinstance(payload, bytearray | memoryview):
        payload = bytes(payload)
    if isinstance(payload, bytes):
        raw: bytes | str = payload
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as e:
            stripped = payload.lstrip()
            if stripped.startswith(b"<?xml") and b"encoding" in stripped[:100]:  # XML in a declared encoding
                return _parse_voevent(_xml_root(payload), raw, topic)
            raise NoticeError("not_utf8", f"payload is not UTF-8 text ({e.reason} at byte {e.start})") from None
    elif isinstance(payload, str):
        raw = text = payload
    else:
        raise NoticeError("bad_payload", f"payload must be bytes or str, not {type(payload).__name__}")
    text = text.lstrip("\ufeff").strip()
    if not text:
        raise NoticeError("empty", "empty notice")
    if text[0] == "<":
        return _parse_voevent(_xml_root(text), raw, topic)
    if text[0] not in "{[":
        raise NoticeError("unknown_format", f"neither JSON nor XML: starts with {text[:20]!r}")
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except NoticeError:
        raise
    except RecursionError:
        raise NoticeError("not_json", "JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and int strings beyond Python's digit limit
        raise NoticeError("not_json", str(e)[:200]) from None
    if not isinstance(doc, dict):
        raise NoticeError("unknown_format", f"JSON {type(doc).__name__} is no notice (expected an object)")
    if "superevent_id" in doc:
        return _parse_igwn(doc, raw, topic)
    schema = doc.get("$schema")
    if (isinstance(schema, str) and "/gcn/notices/" in schema) or any(k in doc for k in _GCN_MARKERS):
        return _parse_gcn_json(doc, raw, topic)
    keys = ", ".join(sorted(str(k) for k in doc)[:8])
    raise NoticeError("unknown_format", f"JSON object of unknown schema (keys: {keys})")


def _no_constant(name: str) -> Any:
    raise NoticeError("not_json", f"{name} is not valid JSON")


# ------------------------------------------------------------------------------------------- GCN JSON


def _schema_parts(doc: dict) -> list[str]:
    """``.../gcn/notices/swift/bat/Guano.schema.json`` -> ``["swift", "bat", "Guano"]``."""
    schema = doc.get("$schema")
    if not isinstance(schema, str) or "/gcn/notices/" not in schema:
        return []
    path = schema.split("/gcn/notices/", 1)[1].split("?")[0].split("#")[0]
    parts = [p for p in path.split("/") if p]
    if parts and parts[-1].endswith(".json"):
        parts[-1] = parts[-1].removesuffix(".json").removesuffix(".schema")
    return parts


def _topic_parts(topic: str, prefix: str) -> list[str]:
    return topic[len(prefix):].split(".") if topic.startswith(prefix) else []


_GCN_STRINGS = ("mission", "instrument", "alert_type", "alert_tense", "ref_ID")
_GCN_TIMES = ("trigger_time", "alert_datetime", "datetime_of_notice")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_gcn_types(doc: dict) -> None:
    """Reject a GCN notice whose core fields are present with the wrong type (null included).

    Optional fields may be left out; a field that is there must be usable, or the notice says nothing
    reliable about what it is or when it happened.
    """
    for key in _GCN_STRINGS:
        if key in doc and not isinstance(doc[key], str):
            raise NoticeError("bad_field", f"{key} is {_kind(doc[key])}, not a string")
    for key in _GCN_TIMES:
        if key in doc and not isinstance(doc[key], str):
            raise NoticeError("bad_time", f"{key} is {_kind(doc[key])}, not an ISO 8601 string")
    for key in ("id", "event_name"):
        if key not in doc:
            continue
        value = doc[key]
        entries = value if isinstance(value, list) else [value]
        if not entries or not all(isinstance(v, str) and v.strip() for v in entries):
            raise NoticeError("bad_field", f"{key} is {_kind(value)} {_shown(value)}, not a non-empty string "
                                           "(or a list of them)")
    if "trigger_number" in doc and _text(doc["trigger_number"]) is None:
        raise NoticeError("bad_field", f"trigger_number is {_kind(doc['trigger_number'])}, not a string or integer")
    if "record_number" in doc and _record_number(doc["record_number"]) is None:
        value = doc["record_number"]
        raise NoticeError("bad_field", f"record_number is {_kind(value)} {_shown(value)}, not an integer >= 0")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _record_number(value: Any) -> int | None:
    """A record (revision) number: a JSON integer >= 0 (4.0 and "4" included), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 2**62 else None
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() and 0 <= value <= 2**62 else None
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 18:
        return int(value.strip())
    return None


def _parse_gcn_json(doc: dict, raw: bytes | str, topic: str) -> Alert:
    _check_gcn_types(doc)
    schema = _schema_parts(doc)
    from_topic = _topic_parts(topic, "gcn.notices.")

    mission = doc.get("mission")
    if mission is not None and not isinstance(mission, str):
        raise NoticeError("bad_field", f"mission is {type(mission).__name__}, not a string")
    mission = (mission or "").strip() or (schema[0] if len(schema) > 1 else "") or (from_topic[0] if from_topic
                                                                                     else "")
    if not mission:
        raise NoticeError("missing_field", "GCN notice names no mission (no 'mission', $schema or gcn.notices topic)")
    mission = canonical_mission(mission)

    instrument = doc.get("instrument")
    if instrument is not None and not isinstance(instrument, str):
        raise NoticeError("bad_field", f"instrument is {type(instrument).__name__}, not a string")
    instrument = (instrument or "").strip()
    if not instrument and len(schema) > 2:  # .../gcn/notices/<mission>/<instrument>/<kind>.schema.json
        instrument = schema[1].upper()
    if not instrument and len(from_topic) > 2:  # gcn.notices.<mission>.<instrument>.<kind>
        instrument = from_topic[1].upper()

    trigger_time = parse_time(doc["trigger_time"], "trigger_time") if "trigger_time" in doc else None
    alert_key = "alert_datetime" if "alert_datetime" in doc else "datetime_of_notice"
    alert_time = parse_time(doc[alert_key], alert_key) if alert_key in doc else None

    ident = (_first_text(doc.get("id")) or _first_text(doc.get("event_name")) or _text(doc.get("ref_ID"))
             or _text(doc.get("trigger_number")))
    if ident is None:
        if trigger_time is None:
            raise NoticeError("missing_field", "GCN notice has neither an id/event_name nor a trigger_time")
        ident = _iso(trigger_time) or repr(trigger_time)
    record_number = _record_number(doc.get("record_number", 0)) or 0  # an integer >= 0: _check_gcn_types

    tense = "observation"
    if isinstance(doc.get("alert_tense"), str) and doc["alert_tense"].strip():
        tense = _tense(doc["alert_tense"])
    atype = ""
    if isinstance(doc.get("alert_type"), str) and doc["alert_type"].strip():
        atype = _type(doc["alert_type"])
        if atype in _TYPE_AS_TENSE:  # alert_type "test" / "injected" / "commended" describe the tense
            if tense == "observation":
                tense = _TYPE_AS_TENSE[atype]
            atype = ""
    if any(_flag(doc.get(k)) for k in ("retraction", "retracted", "is_retraction")):
        atype = "retraction"
    if not atype:  # no type given: a first record is a new alert, later ones update it
        atype = "update" if record_number > 1 else "initial"

    loc = _localisation(doc.get("ra"), doc.get("dec"),
                        doc["ra_dec_error"] if doc.get("ra_dec_error") is not None else doc.get("position_a_error"),
                        doc.get("containment_probability"))
    if loc is not None and loc["error_deg"] is not None and loc["containment"] is None:
        loc["containment"] = 0.9  # gcn-schema core/Localization: "if absent, default is 0.9"
    if loc is None and isinstance(doc.get("most_probable_direction"), dict):
        mpd = doc["most_probable_direction"]
        loc = _localisation(mpd.get("ra"), mpd.get("dec"), mpd.get("ra_dec_error"),
                            mpd.get("containment_probability"))

    return Alert(id=f"{mission}:{ident}", record_number=record_number, mission=mission, instrument=instrument,
                 topic=topic, trigger_time=trigger_time, alert_time=alert_time, type=atype, tense=tense,
                 localisation=loc, extra=_gcn_extra(doc, schema), raw=raw, format="json")


def _gcn_extra(doc: dict, schema: list[str]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    _put(extra, "far_hz", _num(doc.get("far")))
    for key in ("p_value", "pval_generic", "pvalue"):
        _put(extra, "p_value", _num(doc.get(key)))
    _put(extra, "p_value_bayesian", _num(doc.get("pval_bayesian")))
    _put(extra, "p_astro", _num(doc.get("p_astro")))
    _put(extra, "signalness", _num(doc.get("signalness")))
    for key in ("rate_snr", "image_snr", "snr"):
        _put(extra, "snr", _num(doc.get(key)))
    _put(extra, "significance_sigma", _num(doc.get("significance")))
    _put(extra, "duration_s", _num(doc.get("rate_duration")))
    for key in ("rate_energy_range", "image_energy_range", "energy_range"):
        rng = doc.get(key)
        if isinstance(rng, list) and len(rng) == 2 and all(_num(v) is not None for v in rng):
            _put(extra, "energy_range_kev", [_num(v) for v in rng])
    details = given if isinstance(given := doc.get("event_details"), list) else []
    energies = [_num(e.get(k)) for e in details if isinstance(e, dict)
                for k in ("energy_measured", "proxy_energy", "energy")]
    measured = [e for e in energies if e is not None]
    _put(extra, "energy_gev", max(measured) if measured else None)
    for key in ("n_events", "number_of_events", "n_events_coincident"):
        _put(extra, "n_events", _int(doc.get(key)))
    _put(extra, "distance_mpc", _num(doc.get("luminosity_distance")))
    cls = doc.get("classification")
    if isinstance(cls, dict):
        probs = {str(k): _num(v) for k, v in cls.items() if _num(v) is not None}
        _put(extra, "classification", probs or None)
    ids = doc.get("id")
    if isinstance(ids, list) and len(ids) > 1:
        _put(extra, "ids", [t for t in (_text(v) for v in ids) if t])
    for key, out in (("event_name", "event_name"), ("ref_ID", "ref_id"), ("follow_up_event", "follow_up_event"),
                     ("follow_up_type", "follow_up_type"), ("pipeline", "pipeline"), ("messenger", "messenger"),
                     ("subtype", "subtype"), ("trigger_type", "trigger_type"), ("alert_topology", "topology")):
        _put(extra, out, _first_text(doc.get(key)) if key == "event_name" else _text(doc.get(key)))
    if schema:
        _put(extra, "notice_type", schema[-1])
    urls = {k: doc[k].strip() for k in ("data_archive_page", "light_curve_url", "healpix_url")
            if isinstance(doc.get(k), str) and doc[k].strip()}
    _put(extra, "urls", urls or None)
    return extra


# ------------------------------------------------------------------------------------------------ IGWN


def _parse_igwn(doc: dict, raw: bytes | str, topic: str) -> Alert:
    sid = doc.get("superevent_id")
    if not isinstance(sid, str) or not sid.strip():
        raise NoticeError("missing_field" if sid in (None, "") else "bad_field",
                          "IGWN alert without a superevent_id string")
    sid = sid.strip()
    alert_type = doc.get("alert_type")
    if alert_type is not None and not isinstance(alert_type, str):
        raise NoticeError("bad_field", f"IGWN alert {sid}: alert_type is {_kind(alert_type)}, not a string")
    if not isinstance(alert_type, str) or not alert_type.strip():
        raise NoticeError("missing_field", f"IGWN alert {sid} has no alert_type")
    atype = _type(alert_type)
    alert_time = parse_time(doc["time_created"], "time_created") if "time_created" in doc else None
    event = doc.get("event")
    if event is not None and not isinstance(event, dict):
        raise NoticeError("bad_field", f"IGWN alert {sid}: event is {type(event).__name__}, not an object")
    event = event or {}
    trigger_time = parse_time(event["time"], "event.time") if "time" in event else None

    search = _text(event.get("search")) or ""
    tense = "test" if sid[0] in "MT" or search.upper() == "MDC" else "observation"  # mock / test superevents
    instruments = event.get("instruments")
    instrument = ",".join(t for t in (_text(i) for i in instruments) if t) if isinstance(instruments, list) else ""

    extra: dict[str, Any] = {}
    _put(extra, "far_hz", _num(event.get("far")))
    significant = event.get("significant")
    _put(extra, "significant", significant if isinstance(significant, bool) else None)
    for key in ("group", "pipeline", "search"):
        _put(extra, key, _text(event.get(key)))
    for key in ("classification", "properties"):
        if isinstance(event.get(key), dict):
            probs = {str(k): _num(v) for k, v in event[key].items() if _num(v) is not None}
            _put(extra, key, probs or None)
    _put(extra, "duration_s", _num(event.get("duration")))
    _put(extra, "central_frequency_hz", _num(event.get("central_frequency")))
    if event.get("skymap"):
        extra["skymap"] = True
    coinc = doc.get("external_coinc")
    if isinstance(coinc, dict):
        ext = {"observatory": _text(coinc.get("observatory")), "search": _text(coinc.get("search")),
               "time_difference_s": _num(coinc.get("time_difference")),
               "time_coincidence_far_hz": _num(coinc.get("time_coincidence_far")),
               "time_sky_position_coincidence_far_hz": _num(coinc.get("time_sky_position_coincidence_far"))}
        _put(extra, "external_coinc", {k: v for k, v in ext.items() if v is not None} or None)
    urls = doc.get("urls")
    if isinstance(urls, dict):
        _put(extra, "urls", {str(k): v for k, v in urls.items() if isinstance(v, str)} or None)

    return Alert(id=f"LVK:{sid}", record_number=0, mission="LVK", instrument=instrument, topic=topic,
                 trigger_time=trigger_time, alert_time=alert_time, type=atype, tense=tense, localisation=None,
                 extra=extra, raw=raw, format="igwn")


# --------------------------------------------------------------------------------------------- VOEvent


def _xml_root(text: str | bytes) -> ET.Element:
    upper = text.upper()
    if ("<!DOCTYPE" in upper or "<!ENTITY" in upper) if isinstance(upper, str) else (b"<!DOCTYPE" in upper
                                                                                     or b"<!ENTITY" in upper):
        raise NoticeError("unsafe_xml", "XML with a DTD or entity declarations is not accepted")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise NoticeError("not_xml", f"XML does not parse: {e}") from None
    except (ValueError, LookupError) as e:  # e.g. an unknown declared encoding
        raise NoticeError("not_xml", f"XML does not parse: {e}") from None
    for el in root.iter():  # namespaces play no part in telling VOEvent elements apart
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.rsplit("}", 1)[1]
    if root.tag != "VOEvent":
        raise NoticeError("unknown_format", f"XML document <{root.tag}> is not a VOEvent")
    return root


def _param_value(p: ET.Element) -> str | None:
    value = p.get("value")
    if value is None:
        v = p.find("Value")
        value = v.text if v is not None else None
    return value.strip() if isinstance(value, str) else None


def _parse_voevent(root: ET.Element, raw: bytes | str, topic: str) -> Alert:
    ivorn = (root.get("ivorn") or "").strip()
    role = (root.get("role") or "observation").strip()
    stream, _, fragment = ivorn.partition("#")
    stream = stream.rstrip("/").rsplit("/", 1)[-1] if "://" in stream else ""

    what = root.find("What")
    params: dict[str, str] = {}  # lower-cased name -> value; top-level Params win over those inside Groups
    groups: dict[str, dict[str, str]] = {}  # lower-cased Group name or type -> its Params (names as given)
    if what is not None:
        for p in what.findall("Param"):
            if (name := p.get("name")) and (value := _param_value(p)) is not None:
                params.setdefault(name.strip().lower(), value)
        for g in what.iter("Group"):
            inner = {name.strip(): value for p in g.findall("Param")
                     if (name := p.get("name")) and (value := _param_value(p)) is not None}
            for key in (g.get("name"), g.get("type")):
                if key:
                    groups.setdefault(key.strip().lower(), inner)
            for k, v in inner.items():
                params.setdefault(k.lower(), v)

    # when
    wherewhen = root.find("WhereWhen")
    iso = None
    if wherewhen is not None:
        iso = wherewhen.find("ObsDataLocation/ObservationLocation/AstroCoords/Time/TimeInstant/ISOTime")
        if iso is None:
            iso = wherewhen.find(".//ISOTime")
    if iso is None or not (iso.text or "").strip():
        raise NoticeError("missing_field", "VOEvent has no WhereWhen ISOTime (the event time)")
    trigger_time = parse_time(iso.text, "WhereWhen ISOTime")
    date = root.find("Who/Date")
    alert_time = parse_time(date.text, "Who/Date") if date is not None and (date.text or "").strip() else None

    # who
    kind = re.match(r"[A-Za-z_]*[A-Za-z]", fragment)
    kind_text = kind.group(0) if kind else ""
    mission = ""
    if stream.upper() == "AMON" and "ICECUBE" in fragment.upper():
        mission = "IceCube"
    elif stream:
        mission = stream
    if not mission:
        short = root.find("Who/Author/shortName")
        if short is not None and (short.text or "").strip():
            mission = (short.text or "").split("(")[0].strip()
    voe_topic = _topic_parts(topic, "gcn.classic.voevent.")
    if not mission and voe_topic:
        mission = voe_topic[0].split("_")[0]
    if not mission:
        raise NoticeError("missing_field", "VOEvent names no mission (no ivorn stream, Author shortName or topic)")
    mission = canonical_mission(mission)
    is_lvk = mission == "LVK"

    instrument = params.get("instruments", "") if is_lvk else ""
    if not instrument and "_" in kind_text:  # BAT_GRB_Pos, GBM_Flt_Pos, XRT_Pos ... but not Known_Source, SC_Slew
        first = kind_text.split("_", 1)[0]
        if first.isupper() and first not in _NOT_INSTRUMENTS and canonical_mission(first) != mission:
            instrument = first

    ident = (params.get("trigid") or params.get("graceid") or params.get("amon_id") or params.get("event_id")
             or params.get("eventid") or fragment or ivorn)
    if not ident:
        raise NoticeError("missing_field", "VOEvent has no TrigID/GraceID Param and no ivorn")
    record_number = 0
    for key in ("rev", "sequence_num", "pkt_ser_num"):
        if key in params:
            number = _record_number(params[key])
            if number is None:
                raise NoticeError("bad_field", f"VOEvent Param {key} {_shown(params[key])} is not an integer >= 0")
            record_number = number
            break

    # what kind of notice
    tense = _tense(role)
    if any(_flag(params.get(k)) for k in ("test_submission", "test", "test_notice", "internaltest")):
        tense = "test"
    if _flag(params.get("hardwareinj")):
        tense = "injection"
    if is_lvk and ident[:1] in ("M", "T"):
        tense = "test"
    citations = [(e.get("cite") or "").strip().lower() for e in root.findall("Citations/EventIVORN")]
    alert_type = params.get("alerttype") or params.get("alert_type")
    retraction = (
        (alert_type is not None and _type(alert_type) == "retraction")
        or "retraction" in fragment.lower()
        or any(_flag(params.get(k)) for k in ("retraction", "retracted"))
        or _flag(params.get("def_not_a_grb")) is True  # Swift / Fermi: the "not a GRB" flag marks retractions
        or "retraction" in citations
    )
    if retraction:
        atype = "retraction"
    elif alert_type:
        atype = _type(alert_type)
    elif any(c in ("followup", "supersedes") for c in citations):
        atype = "update"
    else:
        atype = "initial"

    loc = None
    pos = wherewhen.find(".//Position2D") if wherewhen is not None else None
    if pos is not None:
        unit = (pos.get("unit") or "deg").strip().lower()
        scale = 180.0 / math.pi if unit.startswith("rad") else 1.0
        c1, c2, err = (pos.find(path) for path in ("Value2/C1", "Value2/C2", "Error2Radius"))
        vals = [_num(e.text) if e is not None else None for e in (c1, c2, err)]
        if vals[0] is not None and vals[1] is not None:
            loc = _localisation(vals[0] * scale, vals[1] * scale, vals[2] * scale if vals[2] is not None else None)

    extra = _voevent_extra(root, params, groups, ivorn, kind_text if not is_lvk else "")
    return Alert(id=f"{mission}:{ident}", record_number=record_number, mission=mission, instrument=instrument,
                 topic=topic, trigger_time=trigger_time, alert_time=alert_time, type=atype, tense=tense,
                 localisation=loc, extra=extra, raw=raw, format="voevent")


def _param_units(root: ET.Element) -> dict[str, str]:
    return {name.strip().lower(): (p.get("unit") or "").strip().lower()
            for p in root.iter("Param") if (name := p.get("name"))}


def _voevent_extra(root: ET.Element, params: dict[str, str], groups: dict[str, dict[str, str]], ivorn: str,
                   kind: str) -> dict[str, Any]:
    units = _param_units(root)
    extra: dict[str, Any] = {}
    far = _num(params.get("far"))
    if far is not None:
        unit = units.get("far", "").replace(" ", "")
        if "yr" in unit or "year" in unit:
            far /= _YEAR
        elif "day" in unit or unit in ("d^-1", "/d", "d-1"):
            far /= 86400.0
        extra["far_hz"] = far
    _put(extra, "signalness", _num(params.get("signalness")))
    for key in ("p_value", "pvalue", "p-value"):
        _put(extra, "p_value", _num(params.get(key)))
    for key in ("rate_signif", "data_signif", "image_signif", "signif", "significance"):
        _put(extra, "significance_sigma", _num(params.get(key)))
    energy = _num(params.get("energy"))
    if energy is not None:
        scale = _ENERGY_TO_GEV.get(units.get("energy", "") or "tev")  # IceCube reports TeV
        _put(extra, "energy_gev", energy * scale if scale is not None else None)
    for key in ("trig_timescale", "integ_time"):
        _put(extra, "duration_s", _num(params.get(key)))
    _put(extra, "packet_type", _int(params.get("packet_type")))
    for key in ("group", "pipeline", "search"):
        _put(extra, key, params.get(key) or None)
    for key in ("classification", "properties"):
        if key in groups:
            probs = {k: _num(v) for k, v in groups[key].items() if _num(v) is not None}
            _put(extra, key, probs or None)
    flags = (("def_not_a_grb", "not_a_grb"), ("grb_identified", "grb_identified"),
             ("startrack_lost_lock", "star_tracker_lost_lock"))
    for key, out in flags:
        _put(extra, out, _flag(params.get(key)))
    urls = {k: params[k] for k in ("lightcurve_url", "eventpage", "skymap_fits") if params.get(k)}
    _put(extra, "urls", urls or None)
    if kind:
        extra["notice_type"] = kind
    if ivorn:
        extra["ivorn"] = ivorn
    return extra


# ------------------------------------------------------------------------------------------ dict round trip


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    """A JSON-ready dict of ``alert`` (``"schema": "dtlive.alert/1"``): raw payload as text when it is UTF-8,
    else base64 (``raw_encoding`` says which); ISO times and the two flags are added for readers.

    >>> a = parse_notice(b'{"mission": "KM3NeT", "id": "1", "trigger_time": "2024-09-01T01:16:47.0Z"}')
    >>> d = alert_to_dict(a)
    >>> d["id"], d["trigger_time_iso"], d["raw_encoding"], alert_from_dict(d) == a
    ('KM3NeT:1', '2024-09-01T01:16:47.000000Z', 'utf-8', True)
    """
    raw = alert.raw
    if isinstance(raw, str):
        raw_text, encoding = raw, "text"
    else:
        try:
            raw_text, encoding = bytes(raw).decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            raw_text, encoding = base64.b64encode(bytes(raw)).decode("ascii"), "base64"
    return {
        "schema": ALERT_SCHEMA, "id": alert.id, "record_number": alert.record_number, "mission": alert.mission,
        "instrument": alert.instrument, "topic": alert.topic, "format": alert.format,
        "type": alert.type, "tense": alert.tense, "is_retraction": alert.is_retraction, "is_test": alert.is_test,
        "trigger_time": alert.trigger_time, "trigger_time_iso": _iso(alert.trigger_time),
        "alert_time": alert.alert_time, "alert_time_iso": _iso(alert.alert_time),
        "localisation": copy.deepcopy(alert.localisation), "extra": copy.deepcopy(alert.extra),
        "raw": raw_text, "raw_encoding": encoding,
    }


def alert_from_dict(d: dict[str, Any]) -> Alert:
    """Inverse of :func:`alert_to_dict` (derived keys are ignored); raises :class:`NoticeError` if fields lack.

    >>> a = parse_notice(b'{"mission": "IceCube", "id": "7", "trigger_time": "2024-05-01T12:00:00Z"}')
    >>> alert_from_dict(alert_to_dict(a)) == a
    True
    >>> alert_from_dict({"id": "x"})
    Traceback (most recent call last):
    ...
    dtlive.alerts.notices.NoticeError: missing_field: alert dict lacks mission, type, tense, format
    """
    if not isinstance(d, dict):
        raise NoticeError("bad_field", f"expected a dict, not {type(d).__name__}")
    missing = [k for k in ("id", "mission", "type", "tense", "format") if not isinstance(d.get(k), str)]
    if missing:
        raise NoticeError("missing_field", f"alert dict lacks {', '.join(missing)}")
    raw_text, encoding = d.get("raw", ""), d.get("raw_encoding", "text")
    if not isinstance(raw_text, str):
        raise NoticeError("bad_field", "raw must be a string")
    try:
        decoders: dict[str, Callable[[], bytes | str]] = {
            "text": lambda: raw_text, "utf-8": raw_text.encode,
            "base64": lambda: base64.b64decode(raw_text, validate=True)}
        raw: bytes | str = decoders[encoding]()
    except (KeyError, ValueError) as e:
        raise NoticeError("bad_field", f"raw_encoding {encoding!r} / raw do not decode ({e})") from None

    def opt_time(key: str) -> float | None:
        v = d.get(key)
        if v is None:
            return None
        if _num(v) is None or isinstance(v, str):
            raise NoticeError("bad_time", f"{key} {v!r} is not UNIX seconds")
        return float(v)

    return Alert(id=d["id"], record_number=_int(d.get("record_number")) or 0, mission=d["mission"],
                 instrument=d.get("instrument") or "", topic=d.get("topic") or "",
                 trigger_time=opt_time("trigger_time"), alert_time=opt_time("alert_time"),
                 type=d["type"], tense=d["tense"], localisation=copy.deepcopy(d.get("localisation")),
                 extra=copy.deepcopy(d.get("extra") or {}), raw=raw, format=d["format"])
