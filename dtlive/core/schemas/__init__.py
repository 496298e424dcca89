"""The message contracts as files: one JSON Schema (draft 2020-12) per JSON message dtlive publishes.

The schema files sit next to this module, named ``<kind>-<version>.schema.json`` after the schema id
``dtlive.<kind>/<version>`` of :mod:`dtlive.core.messages` (``dtlive.monitor/1`` -> ``monitor-1.schema.json``):
the window result, the data-quality period, the quality tests' verdict, the chamber-status alarm event, the
service heartbeat, the parsed alert,
the analysis result, and the headers of a dead-letter record (as an object of header name -> text; its value is
the rejected payload as it was). :func:`schema` gives one as a dict, :func:`validate` checks a message against
the schema its ``"schema"`` field names and raises :class:`ContractError` naming the field that breaks the
contract.
The ``jsonschema`` library is the reference (and names the field); messages are first checked by code that
``fastjsonschema`` generates from the same files (~1 ms instead of ~50 ms for a window result), and only a
message that fails there goes to the reference, which decides. Both are imported on first use.

>>> from dtlive.core.products import compute_products
>>> from dtlive.core.rows import Rows
>>> from dtlive.core.messages import message_dict
>>> msg = message_dict(compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0],
...                                                       tdc=[0])))
>>> validate(msg)["schema"]
'dtlive.monitor/1'
>>> msg["hits_per_chamber"] = [1, 0, 0]
>>> validate(msg)
Traceback (most recent call last):
...
dtlive.core.schemas.ContractError: dtlive.monitor/1: hits_per_chamber: [1, 0, 0] is too short
>>> schema("dtlive.quality/1")["properties"]["reason"]["enum"]
['data_gap', 'chamber_silent', 'noisy_channel', 'rate_jump']
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

from dtlive.core.messages import (
    ALARM_SCHEMA,
    ALERT_SCHEMA,
    ANALYSIS_SCHEMA,
    DEAD_LETTER_SCHEMA,
    MONITOR_SCHEMA,
    QUALITY_SCHEMA,
    QUALITY_TESTS_SCHEMA,
    STATUS_SCHEMA,
)

__all__ = ["SCHEMA_IDS", "ContractError", "dead_letter_fields", "schema", "schema_file", "validate"]

#: every schema id that has a schema file, in the order of the data flow
SCHEMA_IDS = (MONITOR_SCHEMA, QUALITY_SCHEMA, QUALITY_TESTS_SCHEMA, ALARM_SCHEMA, STATUS_SCHEMA, ALERT_SCHEMA,
              ANALYSIS_SCHEMA, DEAD_LETTER_SCHEMA)


class ContractError(ValueError):
    """A message that breaks its contract: ``schema_id``, ``field`` (dotted path, ``[i]`` for list items; ``""``
    for the message itself) and ``reason``.

    >>> e = ContractError("dtlive.status/1", "lag.messages", "-1 is less than the minimum of 0")
    >>> str(e), e.field, isinstance(e, ValueError)
    ('dtlive.status/1: lag.messages: -1 is less than the minimum of 0', 'lag.messages', True)
    """

    def __init__(self, schema_id: str | None, field: str, reason: str):
        super().__init__(schema_id, field, reason)
        self.schema_id, self.field, self.reason = schema_id, field, reason

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.schema_id or 'message'}: {where}{self.reason}"


def schema_file(schema_id: str) -> str:
    """The file name of a schema id's schema: ``dtlive.<kind>/<n>`` -> ``<kind>-<n>.schema.json``.

    >>> schema_file("dtlive.status/1")
    'status-1.schema.json'
    """
    if schema_id not in SCHEMA_IDS:
        raise ContractError(schema_id, "schema", f"unknown schema id {schema_id!r}; known: {', '.join(SCHEMA_IDS)}")
    kind, version = schema_id.removeprefix("dtlive.").split("/")
    return f"{kind}-{version}.schema.json"


@functools.cache
def _load(schema_id: str) -> dict:
    return json.loads(resources.files(__name__).joinpath(schema_file(schema_id)).read_text(encoding="utf-8"))


def schema(schema_id: str) -> dict:
    """The JSON Schema of one schema id, as a dict (a copy: change it freely).

    >>> schema("dtlive.monitor/1")["properties"]["schema"]
    {'const': 'dtlive.monitor/1'}
    """
    return copy.deepcopy(_load(schema_id))


@functools.cache
def _validator(schema_id: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(_load(schema_id))


@functools.cache
def _fast(schema_id: str):
    """The generated validator of a schema, or None without ``fastjsonschema``. The files use nothing beyond
    draft-07 (``$defs`` is only where ``$ref`` points), which is what fastjsonschema knows."""
    try:
        import fastjsonschema
    except ImportError:
        return None
    return fastjsonschema.compile({**_load(schema_id), "$schema": "http://json-schema.org/draft-07/schema#"})


def validate(message: Mapping[str, Any], schema_id: str | None = None) -> Mapping[str, Any]:
    """Check ``message`` (a parsed JSON message) against its contract; return it unchanged.

    ``schema_id``: the contract to check against; default the message's own ``"schema"`` field (the
    dead-letter headers carry none: pass :data:`~dtlive.core.messages.DEAD_LETTER_SCHEMA`, with the headers
    as given by :func:`dead_letter_fields`). Raises :class:`ContractError` naming the first field that
    breaks it (the most specific one when several do).

    >>> validate({"schema": "dtlive.quality/1", "start": "2026-01-01T00:00:00.000Z"})
    Traceback (most recent call last):
    ...
    dtlive.core.schemas.ContractError: dtlive.quality/1: end: required field missing
    >>> validate({"schema": "dtlive.nothing/1"})
    Traceback (most recent call last):
    ...
    dtlive.core.schemas.ContractError: dtlive.nothing/1: schema: unknown schema id 'dtlive.nothing/1'; ...
    """
    if not isinstance(message, Mapping):
        raise ContractError(schema_id, "", f"not a JSON object but {type(message).__name__}")
    sid = schema_id if schema_id is not None else message.get("schema")
    if not isinstance(sid, str):
        raise ContractError(None, "schema", "no schema id (a string) in the message, and none given")
    if sid not in SCHEMA_IDS:
        schema_file(sid)  # raises, naming the known ids
    fast = _fast(sid)
    if fast is not None:
        try:
            fast(message)
            return message
        except Exception:  # noqa: BLE001 - whatever the generated code says, the reference decides
            pass
    from jsonschema.exceptions import best_match

    error = best_match(_validator(sid).iter_errors(message))
    if error is not None:
        field, reason = _describe(error)
        raise ContractError(sid, field, reason)
    return message


def dead_letter_fields(headers: Iterable[tuple[str, bytes | str | None]] | None) -> dict[str, str | None]:
    """A Kafka record's headers as ``{name: text}``, the form the dead-letter schema describes.

    >>> dead_letter_fields([("reason", b"late"), ("truncated", b"false")])
    {'reason': 'late', 'truncated': 'false'}
    """
    out = {}
    for name, value in headers or []:
        out[name] = value.decode(errors="replace") if isinstance(value, bytes | bytearray) else value
    return out


def _path(parts: Iterable[Any]) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def _describe(error) -> tuple[str, str]:
    """(field, reason) of a jsonschema error: a missing or unexpected property is named as the field."""
    where = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, Mapping):
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            return _path([*where, missing[0]]), "required field missing"
    if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(error.instance, Mapping):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            return _path([*where, extra[0]]), "unexpected field"
    if error.validator == "not" and isinstance(error.validator_value, Mapping) and \
            list(error.validator_value) == ["required"]:
        return _path([*where, *error.validator_value["required"][:1]]), "field not allowed in this kind of message"
    if error.validator == "const" and len(repr(error.validator_value)) > 60:
        return _path(where), "is not the fixed value this field must have (see the schema)"
    message, shown = error.message, repr(error.instance)
    if len(shown) > 60 and message.startswith(shown):  # a long value: its beginning is enough to recognise it
        message = shown[:50] + "..." + shown[-1] + message[len(shown):]
    if len(message) > 300:
        message = message[:300] + "..."
    return _path(where), message
