"""Certification from the ledger: its judged lumi blocks, detector runs and overrides -> verdicts, the
certification JSON (:mod:`dtlive.core.golden`) written and read, and the good time ranges
:func:`dtlive.storage.history.load` selects windows with (``certified=True`` or a JSON file).

The rule is :mod:`dtlive.core.certification`'s: a block is good for a chamber judged with a status
``<= certify_max_status`` (default 2) unless a person's later override says otherwise; a detector run is good
for a chamber when all its blocks are.

>>> from dtlive.storage.ledger import Ledger
>>> led = Ledger("sqlite://")
>>> run = led.open_detector_run("2026-12-05T10:00Z", first_orbit=0)
>>> for i, status in enumerate([0, 4, 0]):
...     _ = led.record_block({"processor": "p", "windows": {"ids": [5 * i, 5 * i + 4], "count": 5,
...         "start": f"2026-12-05T10:00:{10 * i:02d}Z", "end": f"2026-12-05T10:00:{10 * i + 10:02d}Z"},
...         "chambers": {"chamber_0": {"status": 0}, "chamber_1": {"status": status}}})
>>> doc = export(led, created=0.0)
>>> doc["runs"]["chamber_0"], doc["runs"]["chamber_1"]
({'1': [[1, 3]]}, {'1': [[1, 1], [3, 3]]})
>>> _ = led.add_override(good=True, reason="spark, data fine", who="expert", run=run, chamber=1)
>>> export(led, created=0.0)["runs"]["chamber_1"]
{'1': [[1, 3]]}
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from dtlive.core import detector as det
from dtlive.core.certification import Block, Override, Run, Verdict, certify
from dtlive.core.golden import document, times_ms


def max_status_setting(max_status: int | None = None) -> int:
    """``max_status`` or the ``certify_max_status`` setting (flags > ``DTLIVE_CERTIFY_MAX_STATUS`` > file).

    >>> max_status_setting(3)
    3
    """
    if max_status is not None:
        return int(max_status)
    from dtlive.config import load_config

    return load_config().certify_max_status


def _blocks(rows: list[dict]) -> list[Block]:
    return [Block(b["start"].timestamp(), b["end"].timestamp(), b["statuses"], b["processor"], b["first_window"],
                  b["last_window"]) for b in rows]


def _runs(rows: list[dict]) -> list[Run]:
    return [Run(r["id"], r["start"].timestamp(), r["end"].timestamp() if r["end"] is not None else None)
            for r in rows]


def _overrides(rows: list[dict]) -> list[Override]:
    return [Override(o["good"], o["reason"], o["who"], o["at"].timestamp(), o["chamber"], o["run"],
                     o["start"].timestamp() if o["start"] is not None else None,
                     o["end"].timestamp() if o["end"] is not None else None, o["id"]) for o in rows]


def choose_processor(ledger, processor: str | None = None) -> str | None:
    """The processor whose blocks to certify: ``processor``, else the only one that has blocks (None: no blocks).

    ValueError, naming them, when blocks of several processors are kept and none is chosen.

    >>> from dtlive.storage.ledger import Ledger
    >>> choose_processor(Ledger("sqlite://")) is None
    True
    """
    if processor is not None:
        return processor
    found = ledger.block_processors()
    if len(found) > 1:
        raise ValueError(f"lumi blocks of several processors are kept ({', '.join(found)}): choose one")
    return found[0] if found else None


def verdicts(ledger, max_status: int | None = None, processor: str | None = None) -> list[Verdict]:
    """Every (block, chamber) verdict of one processor's blocks (see :func:`choose_processor`), blocks in order.

    >>> from dtlive.storage.ledger import Ledger
    >>> verdicts(Ledger("sqlite://"), max_status=2)
    []
    """
    processor = choose_processor(ledger, processor)
    if processor is None:
        return []
    return certify(_blocks(ledger.lumi_blocks(processor=processor)), _runs(ledger.detector_runs()),
                   _overrides(ledger.overrides()), max_status_setting(max_status), det.CHAMBERS)


def export(ledger, max_status: int | None = None, processor: str | None = None,
           created: float | None = None) -> dict:
    """The certification JSON (:mod:`dtlive.core.golden`) of the ledger's blocks, runs and overrides.

    >>> from dtlive.storage.ledger import Ledger
    >>> export(Ledger("sqlite://"), created=0.0)["runs"]["all"]
    {}
    """
    processor = choose_processor(ledger, processor)
    m = max_status_setting(max_status)
    return document(verdicts(ledger, m, processor), m, time.time() if created is None else created, processor or "",
                    det.CHAMBERS)


def write(doc: Mapping, path: str | os.PathLike) -> Path:
    """Write a certification JSON to ``path`` whole or not at all (a temporary file renamed); returns the path.

    >>> import tempfile
    >>> p = write({"schema": "dtlive.certification/1", "times": {}}, Path(tempfile.mkdtemp()) / "good.json")
    >>> read(p)["schema"]
    'dtlive.certification/1'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(source: str | os.PathLike | Mapping) -> Mapping:
    """A certification JSON from a file (or a dict as is).

    >>> read({"schema": "dtlive.certification/1"})["schema"]
    'dtlive.certification/1'
    """
    if isinstance(source, Mapping):
        return source
    with open(source) as fh:
        return json.load(fh)


def good_times(certified: bool | str | os.PathLike | Mapping, ledger=None,
               max_status: int | None = None) -> dict[int | str, list[tuple[int, int]]]:
    """Chamber -> good ``[start, end)`` ranges in int ms: from the ledger (``certified=True``) or a JSON file/dict.

    Both go through the same JSON document, so a file exported and read back selects exactly the same windows.

    >>> good_times({"schema": "dtlive.certification/1", "times": {"chamber_0": []}})
    {0: []}
    """
    if certified is True:
        if ledger is None:
            from dtlive.storage.ledger import Ledger

            ledger = Ledger()
        return times_ms(json.loads(json.dumps(export(ledger, max_status))))
    assert certified is not False  # False: no selection, callers do not ask
    return times_ms(read(certified))
