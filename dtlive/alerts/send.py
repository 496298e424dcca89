"""``dtlive alerts send``: inject GCN-style notices for demos and tests, trigger time rewritten.

>>> topic_for(b'{"$schema": "https://gcn.nasa.gov/schema/main/gcn/notices/swift/bat/Guano.schema.json"}')
'gcn.notices.swift.bat.guano'
>>> import json
>>> doc = json.loads(retimed(b'{"trigger_time": "2022-12-31T21:46:05.13Z", "alert_datetime": "x"}', 1.7e9))
>>> doc["trigger_time"], doc["alert_datetime"]
('2023-11-14T22:13:20.000Z', '2023-11-14T22:13:20.000Z')
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from dtlive.core.messages import iso_utc

TEMPLATES = {  # built-in notices (gcn-schema shaped) for demos without the example files
    "superk-sn": {"$schema": "https://gcn.nasa.gov/schema/main/gcn/notices/superk/sn_alert.schema.json",
                  "mission": "Super-Kamiokande", "id": ["SN.DEMO"], "alert_tense": "current", "alert_type": "initial",
                  "trigger_time": "2024-01-01T00:00:00Z", "alert_datetime": "2024-01-01T00:00:10Z",
                  "ra": 10.0, "dec": -20.0, "ra_dec_error": 5.0, "n_events": 500},
    "icecube-track": {
        "$schema": "https://gcn.nasa.gov/schema/main/gcn/notices/icecube/lvk_nu_track_search.schema.json",
        "type": "IceCube LVK Nu Track Search", "reference": {"gcn.notices.LVK.alert": "S000000x"},
        "ref_ID": "S000000x", "alert_datetime": "2024-01-01T00:00:10Z", "trigger_time": "2024-01-01T00:00:00Z",
        "observation_start": "2024-01-01T00:00:00Z", "observation_stop": "2024-01-01T00:00:01Z",
        "observation_livetime": 1000, "pval_generic": 0.01, "pval_bayesian": 0.02, "n_events_coincident": 1},
}


def topic_for(payload: bytes | str) -> str:
    """The GCN topic a JSON notice would arrive on, from its ``$schema`` (else ``gcn.notices.unknown``).

    >>> topic_for(b'{"$schema": "https://gcn.nasa.gov/schema/main/gcn/notices/fermi/gbm/trigger.schema.json"}')
    'gcn.notices.fermi.gbm.alert'
    >>> topic_for(b"<voe:VOEvent/>"), topic_for(b'{"mission": "?"}')
    ('gcn.classic.voevent.unknown', 'gcn.notices.unknown')
    """
    try:
        schema = json.loads(payload).get("$schema", "")
    except (ValueError, AttributeError):
        text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
        return "gcn.classic.voevent.unknown" if text.lstrip().startswith("<") else "gcn.notices.unknown"
    m = re.search(r"/gcn/notices/(.+?)(?:\.schema)?\.json$", schema)
    if not m:
        return "gcn.notices.unknown"
    parts = m.group(1).lower().split("/")
    if parts[-1] == "trigger":  # Fermi GBM triggers arrive on the mission's alert topic
        parts[-1] = "alert"
    return "gcn.notices." + ".".join(parts)


def retimed(payload: bytes | str, trigger_time: float) -> bytes:
    """The notice with its trigger (and alert) time set to ``trigger_time`` (UNIX seconds).

    >>> voevent = b"<voe:VOEvent><ISOTime>2020-01-01T00:00:00</ISOTime></voe:VOEvent>"
    >>> retimed(voevent, 1.7e9)
    b'<voe:VOEvent><ISOTime>2023-11-14T22:13:20.000</ISOTime></voe:VOEvent>'
    """
    text = payload.decode() if isinstance(payload, bytes) else payload
    iso = iso_utc(trigger_time)
    if text.lstrip().startswith("<"):  # VOEvent
        return re.sub(r"<ISOTime>[^<]*</ISOTime>", f"<ISOTime>{iso[:-1]}</ISOTime>", text).encode()
    doc = json.loads(text)
    if "superevent_id" in doc and isinstance(doc.get("event"), dict):  # IGWN
        doc["event"]["time"] = iso
        doc["time_created"] = iso
    for key in ("trigger_time", "alert_datetime"):
        if key in doc:
            doc[key] = iso
    return json.dumps(doc).encode()


def load_notice(name: str) -> bytes:
    """A notice file's bytes, or a built-in template by name (``superk-sn``, ``icecube-track``).

    >>> json.loads(load_notice("superk-sn"))["mission"]
    'Super-Kamiokande'
    >>> load_notice("no-such-notice.json")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no notice file 'no-such-notice.json' and no template of that name (superk-sn, icecube-track)
    """
    if name in TEMPLATES:
        return json.dumps(TEMPLATES[name]).encode()
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"no notice file {name!r} and no template of that name ({', '.join(TEMPLATES)})")
    try:
        return path.read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"cannot read notice file {name!r}: {e.strerror or e}") from None


def check_notice(payload: bytes, name: str = "the notice") -> None:
    """Raise ``ValueError`` (one line naming ``name`` and the reason) unless ``payload`` is a notice dtlive parses.

    >>> check_notice(b"not a notice", "x.json")
    Traceback (most recent call last):
    ...
    ValueError: x.json is not a notice dtlive can send: unknown_format: neither JSON nor XML: starts with 'not a notice'
    """
    from dtlive.alerts.notices import NoticeError, parse_notice

    try:
        parse_notice(payload)
    except NoticeError as e:
        raise ValueError(f"{name} is not a notice dtlive can send: {' '.join(str(e).split())}") from None


def send_notice(producer, payload: bytes, topic: str | None = None,
                trigger_time: float | None = None) -> tuple[str, bytes]:
    """Produce one notice (retimed to ``trigger_time``, default now); return its topic and bytes.

    >>> class Producer:  # what send_notice needs of a confluent-kafka Producer
    ...     def produce(self, topic, value, on_delivery): self.sent = (topic, value)
    ...     def flush(self, timeout): return 0
    >>> p = Producer()
    >>> topic, value = send_notice(p, load_notice("superk-sn"), trigger_time=1.7e9)
    >>> topic, json.loads(value)["trigger_time"], p.sent[0]
    ('gcn.notices.superk.sn_alert', '2023-11-14T22:13:20.000Z', 'gcn.notices.superk.sn_alert')
    """
    value = retimed(payload, time.time() if trigger_time is None else trigger_time)
    topic = topic or topic_for(value)
    errors: list = []
    producer.produce(topic, value, on_delivery=lambda err, _msg: errors.append(err) if err else None)
    if producer.flush(10) or errors:
        raise RuntimeError(f"notice not delivered to {topic}: {errors[0] if errors else 'timed out'}")
    return topic, value
