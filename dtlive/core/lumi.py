"""Lumi blocks judged live: windows of each processor gathered N at a time, each full block judged against a
reference, and the chamber status changes the verdicts make. Pure: no I/O (the recorder publishes and records).

:class:`LumiJudge` takes parsed ``dtlive.monitor/1`` messages in any batches, keeps a block per processor
(``provenance.processor``; repeats of a window are ignored), and returns the ``dtlive.quality/2`` verdict
(:func:`dtlive.core.judge.judge`) of every block that became full, with a ``processor`` key added. A partial
block waits for its windows. :class:`StatusChanges` turns a stream of verdicts into the changes of each
chamber's status (per processor); a chamber without a judged status (None) keeps its previous one.

>>> from dtlive.core.messages import decode_message, encode_message
>>> from dtlive.core.products import compute_products
>>> from dtlive.core.rows import Rows
>>> def message(i, n=3):
...     ds = compute_products(Rows.from_columns(head=[2] * n, fpga=[0] * n, channel=[3] * n, orbit=[i] * n,
...                                             bx=[0] * n, tdc=[0] * n))
...     ds.attrs.update(window_id=i, first_orbit=100 * i, last_orbit=100 * i + 99,
...                     provenance=json.dumps({"processor": "p"}))
...     return decode_message(encode_message(ds))
>>> lumi = LumiJudge(block=2)
>>> lumi.add([message(0)]), lumi.waiting()
([], {'p': 1})
>>> [(v["processor"], v["windows"]["ids"]) for v in lumi.add([message(0), message(1), message(2)])]
[('p', [0, 1])]
>>> changes = StatusChanges()
>>> v = {"processor": "p", "windows": {"start": "t0"}, "chambers": {"chamber_0": {"status": 2, "label": "degraded",
...      "reasons": ["why"]}}}
>>> [(c["chamber"], c["previous"], c["status"]) for c in changes.update(v)], changes.update(v)
([(0, None, 2)], [])
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict

import xarray as xr

from dtlive.core.judge import ChecksConfig, Masks, judge, load_tests_config
from dtlive.core.messages import to_dataset


class LumiJudge:
    """Blocks of ``block`` windows per processor, judged against ``reference`` when full (see the module docstring).

    ``reference`` may be None (only the tests that need no reference judge) and can be replaced at any time
    (:attr:`reference`); ``config`` as for :func:`~dtlive.core.judge.judge`.

    >>> from dtlive.core.messages import decode_message, encode_message
    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> def message(i):
    ...     ds = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[100 * i], bx=[0], tdc=[0]))
    ...     ds.attrs.update(window_id=i, first_orbit=100 * i, last_orbit=100 * i + 99)
    ...     return decode_message(encode_message(ds))
    >>> [v["windows"]["ids"] for v in LumiJudge(block=2).add([message(i) for i in range(5)])]  # window 4 waits
    [[0, 1], [2, 3]]
    """

    def __init__(self, block: int = 5, reference: xr.Dataset | None = None,
                 config: ChecksConfig | str | os.PathLike | None = None, masks: Masks | None = None,
                 remember: int = 10_000):
        if block < 1:
            raise ValueError(f"a lumi block holds at least one window, got {block}")
        self.block = int(block)
        self.reference = reference
        self.config = config if isinstance(config, ChecksConfig) else load_tests_config(config)
        self.masks = masks
        self.remember = remember
        self._blocks: dict[str, list[dict]] = {}
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.judged = 0

    def add(self, messages: list[dict]) -> list[dict]:
        """Take parsed window messages; return the verdicts of the blocks they completed (oldest first)."""
        out = []
        for msg in messages:
            processor = str((msg.get("provenance") or {}).get("processor") or "")
            key = (processor, int(msg["window"]["id"]))
            if key in self._seen:
                continue
            self._seen[key] = None
            while len(self._seen) > self.remember:
                self._seen.popitem(last=False)
            block = self._blocks.setdefault(processor, [])
            block.append(msg)
            if len(block) >= self.block:
                out.append(self.judge(block, processor))
                self._blocks[processor] = []
        return out

    def judge(self, messages: list[dict], processor: str = "") -> dict:
        """The verdict of one block of messages (windows in id order), with its ``processor``."""
        ordered = sorted(messages, key=lambda m: m["window"]["id"])
        verdict = judge(to_dataset(ordered, stack=True), self.reference, self.config, self.masks)
        self.judged += 1
        return {**verdict, "processor": processor}

    def waiting(self) -> dict[str, int]:
        """Windows waiting in each processor's partial block."""
        return {p: len(b) for p, b in self._blocks.items() if b}


class StatusChanges:
    """The last judged status of each (processor, chamber); :meth:`update` returns what a verdict changed.

    >>> changes = StatusChanges()
    >>> verdict = {"processor": "p", "windows": {"start": "2026-12-05T10:00:00.000Z"},
    ...            "chambers": {"chamber_0": {"status": 0}, "chamber_1": {"status": None}}}
    >>> [(c["chamber"], c["previous"], c["status"]) for c in changes.update(verdict)], changes.update(verdict)
    ([(0, None, 0)], [])
    """

    def __init__(self):
        self.last: dict[tuple[str, int], int] = {}

    def update(self, verdict: dict) -> list[dict]:
        """Changes ``{"processor", "chamber", "previous", "status", "label", "reasons", "start"}`` (None skipped)."""
        processor = str(verdict.get("processor") or "")
        out = []
        for name, c in sorted((verdict.get("chambers") or {}).items()):
            status = c.get("status")
            chamber = int(name.rsplit("_", 1)[-1])
            previous = self.last.get((processor, chamber))
            if status is None or status == previous:
                continue
            self.last[(processor, chamber)] = status
            out.append({"processor": processor, "chamber": chamber, "previous": previous, "status": status,
                        "label": c.get("label"), "reasons": list(c.get("reasons") or []),
                        "start": (verdict.get("windows") or {}).get("start")})
        return out


def verdict_key(verdict: dict) -> bytes:
    """The Kafka key of a verdict: its processor (verdicts of one processor stay in order).

    >>> verdict_key({"processor": "dtlive-processor"})
    b'dtlive-processor'
    """
    return str(verdict.get("processor") or "").encode()


def compact(verdict: dict) -> str:
    """The verdict as compact JSON text.

    >>> compact({"schema": "dtlive.quality/2", "status": None})
    '{"schema":"dtlive.quality/2","status":null}'
    """
    return json.dumps(verdict, separators=(",", ":"), default=str)
