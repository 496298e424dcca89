"""The certification JSON: the good ranges of every chamber, by detector run and lumi block and by time. Pure.

The format, ``dtlive.certification/1``::

    {"schema": "dtlive.certification/1",
     "created": "2026-12-05T14:00:00.000Z",
     "rule": {"max_status": 2, "text": "...", "overridden": 1},
     "processor": "dtlive-processor",
     "runs":  {"chamber_0": {"1": [[1, 12], [14, 30]], "2": [[1, 8]]},
               "chamber_1": {...}, "chamber_2": {...}, "chamber_3": {...},
               "all": {...}},
     "good_runs": {"chamber_0": [2], ..., "all": []},
     "times": {"chamber_0": [["2026-12-05T10:00:00.000Z", "2026-12-05T10:00:24.000Z"], ...],
               ..., "all": [...]}}

``runs[chamber]`` is exactly a CMS "golden JSON": detector run number (a string, as JSON keys are) -> sorted,
disjoint, inclusive ``[first, last]`` ranges of good lumi block numbers (blocks are numbered from 1 by start
within their run). ``all`` holds the blocks good in every chamber. ``times[chamber]`` gives the same good
blocks as sorted, disjoint ``[start, end)`` UTC time ranges (ISO 8601, milliseconds, ``Z``): dtlive is
time-based, and the time ranges are what :func:`dtlive.storage.history.load` selects windows with.
``good_runs[chamber]`` lists the detector runs whose every block is good for the chamber (the run verdict).
``rule`` says how the verdicts were made (see :mod:`dtlive.core.certification`; ``overridden``: how many
(block, chamber) verdicts a person decided), ``processor`` whose blocks they are.

>>> from dtlive.core.certification import Block, Run, certify
>>> v = certify([Block(1.7e9 + 10 * i, 1.7e9 + 10 * i + 10, {0: 0, 1: 4 * (i == 1)}) for i in range(3)],
...             [Run(1, 1.7e9)], chambers=[0, 1])
>>> doc = document(v, max_status=2, created=1.7e9, processor="p")
>>> doc["runs"]["chamber_1"], doc["runs"]["all"], doc["times"]["chamber_0"]
({'1': [[1, 1], [3, 3]]}, {'1': [[1, 1], [3, 3]]}, [['2023-11-14T22:13:20.000Z', '2023-11-14T22:13:50.000Z']])
>>> doc["good_runs"]
{'chamber_0': [1], 'chamber_1': [], 'all': []}
>>> times_ms(doc)[0]
[(1700000000000, 1700000030000)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from dtlive.core.certification import ALL, Verdict, good_blocks, good_times, run_verdicts
from dtlive.core.messages import iso_utc

SCHEMA = "dtlive.certification/1"


def chamber_key(chamber: int | str) -> str:
    """The key of a chamber in the document (``chamber_N``, or ``all``).

    >>> chamber_key(2), chamber_key("all")
    ('chamber_2', 'all')
    """
    return ALL if chamber == ALL else f"chamber_{int(chamber)}"


def document(verdicts: Iterable[Verdict], max_status: int, created: float, processor: str = "",
             chambers: Iterable[int] | None = None) -> dict:
    """The certification JSON (a dict, see the module docstring) of the verdicts of :func:`certify`.

    ``chambers``: the chambers to list (default: those in the verdicts).

    >>> from dtlive.core.certification import Block, certify
    >>> sorted(document(certify([Block(0.0, 1.0, {0: 0})], chambers=[0]), 2, 0.0)["runs"])
    ['all', 'chamber_0']
    """
    verdicts = list(verdicts)
    keys: list[int | str] = sorted({v.chamber for v in verdicts} if chambers is None else {int(c) for c in chambers})
    keys.append(ALL)
    runs = run_verdicts(verdicts)
    good_runs = {c: {r["run"] for r in runs if r["chamber"] == c and r["good"]} for c in keys[:-1]}
    good_runs[ALL] = set.intersection(*good_runs.values()) if good_runs else set()
    return {
        "schema": SCHEMA,
        "created": iso_utc(created),
        "rule": {"max_status": int(max_status), "overridden": sum(1 for v in verdicts if v.override is not None),
                 "text": f"a lumi block is good for a chamber when its status is <= {int(max_status)} "
                         "(0 ok .. 4 bad; none judged: bad) unless a person's later override says otherwise; "
                         "'all': good in every chamber"},
        "processor": processor,
        "runs": {chamber_key(c): {str(r): ranges for r, ranges in good_blocks(verdicts, c).items()} for c in keys},
        "times": {chamber_key(c): [[iso_utc(a), iso_utc(b)] for a, b in good_times(verdicts, c)] for c in keys},
        "good_runs": {chamber_key(c): sorted(runs) for c, runs in good_runs.items()},
    }


def check(doc: Mapping) -> Mapping:
    """Raise ValueError naming what is wrong unless ``doc`` is a certification JSON with time ranges.

    >>> check({"schema": "something else"})
    Traceback (most recent call last):
    ...
    ValueError: not a dtlive.certification/1 document (schema 'something else')
    """
    if not isinstance(doc, Mapping) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, Mapping) else type(doc).__name__
        raise ValueError(f"not a {SCHEMA} document (schema {got!r})")
    times = doc.get("times")
    if not isinstance(times, Mapping):
        raise ValueError(f"a {SCHEMA} document needs 'times': the good time ranges of each chamber")
    for key, ranges in times.items():
        if key != ALL and not (isinstance(key, str) and key.startswith("chamber_") and key[8:].isdigit()):
            raise ValueError(f"unknown key {key!r} in 'times' (chamber_N or {ALL})")
        if not isinstance(ranges, list) or any(not isinstance(r, list) or len(r) != 2 for r in ranges):
            raise ValueError(f"'times' of {key} must be a list of [start, end] pairs")
    return doc


def times_ms(doc: Mapping) -> dict[int | str, list[tuple[int, int]]]:
    """The good time ranges of each chamber (int key; :data:`ALL` as is) in integer ms since the epoch (UTC).

    >>> times_ms({"schema": SCHEMA, "times": {"chamber_3": [["1970-01-01T00:00:01.000Z", "1970-01-01T00:00:02.5Z"]]}})
    {3: [(1000, 2500)]}
    """
    out: dict[int | str, list[tuple[int, int]]] = {}
    for key, ranges in check(doc)["times"].items():
        chamber: int | str = ALL if key == ALL else int(key[8:])
        out[chamber] = [(_ms(a), _ms(b)) for a, b in ranges]
    return out


def _ms(iso: str) -> int:
    try:
        return int(np.datetime64(str(iso).rstrip("Z"), "ms").astype(np.int64))
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 UTC time: {iso!r}") from exc
