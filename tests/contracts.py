"""Check messages read back from Kafka (or built by the code) against the message contracts (dtlive.core.schemas)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from dtlive.core.messages import DEAD_LETTER_SCHEMA
from dtlive.core.schemas import dead_letter_fields, validate


def valid(message, schema_id: str | None = None) -> dict:
    """``message`` (JSON bytes/str, a parsed dict, or a confluent-kafka message) checked against its schema
    (the one its ``"schema"`` field names, or ``schema_id``); returns the parsed dict."""
    if hasattr(message, "value") and callable(message.value):
        message = message.value()
    msg = json.loads(message) if isinstance(message, bytes | bytearray | str) else message
    validate(msg, schema_id)
    return msg


def all_valid(messages: Iterable, schema_id: str | None = None) -> list[dict]:
    """:func:`valid` of every message, in order."""
    return [valid(m, schema_id) for m in messages]


def valid_dead_letter(headers) -> dict[str, str]:
    """A dead letter's headers (a Kafka header list, or a confluent-kafka message) checked against the
    dead-letter schema; returns them as ``{name: text}``."""
    if hasattr(headers, "headers") and callable(headers.headers):
        headers = headers.headers()
    fields = dead_letter_fields(headers)
    validate(fields, DEAD_LETTER_SCHEMA)
    return fields


def read_messages(bootstrap: str, topic: str | None = None, last: int | None = None, cfg=None,
                  timeout: float = 10.0) -> list[dict]:
    """:func:`dtlive.kafka.results.read_messages`, every message checked against the dtlive.monitor/1 contract."""
    from dtlive.kafka import results

    return all_valid(results.read_messages(bootstrap, topic, last, cfg, timeout))


def read_results(bootstrap: str, topic: str | None = None, last: int | None = None, cfg=None, timeout: float = 10.0):
    """:func:`dtlive.kafka.results.read_results` of the checked messages (None when there are none)."""
    from dtlive.core.messages import to_dataset

    msgs = read_messages(bootstrap, topic, last, cfg, timeout)
    return to_dataset(msgs, stack=True) if msgs else None
