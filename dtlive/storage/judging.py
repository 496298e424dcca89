"""Live judging in the recorder: lumi blocks judged against the configured reference, chamber status changes
kept in the ledger.

:class:`LiveJudging` wraps the pure :class:`dtlive.core.lumi.LumiJudge` with what a service needs: the
reference file (``Config.reference`` under ``<history>/references``, read again when it changes; absent, the
tests that need no reference still judge and the log says so once) and the ledger. Every change of a
chamber's status (per processor) becomes a data-quality period of kind ``chamber_status`` in the ledger: it
starts at the first window of the block that changed it and stays open (end None) until the next change of
that chamber's status ends it. Its ``detail`` holds the chamber, status, label, previous status, reasons,
processor and reference. ``chamber_status`` periods are not ``bad`` periods: history loads never leave
windows out because of them. A restarted recorder goes on from the open ones. Every judged block is also kept
in the ledger (:meth:`~dtlive.storage.ledger.Ledger.record_block`) with the status of each chamber: what
certification (:mod:`dtlive.storage.certification`) makes its good/bad verdicts from. ``on_changes`` (the
recorder's :class:`~dtlive.storage.alarm_desk.AlarmDesk`) is told every verdict's changes before they are
written, so alarms do not wait for the database. Judging never waits for the database: while it is away (or
while the recorder judges ahead, ``deferred``), blocks and status periods wait in an
:class:`~dtlive.storage.ledger.Outbox` and are written in order when it is back; later ones are written after them.

>>> import json, tempfile
>>> from dtlive.config import Config
>>> from dtlive.core.messages import decode_message, encode_message
>>> from dtlive.core.products import compute_products
>>> from dtlive.core.rows import Rows
>>> from dtlive.storage.ledger import Ledger
>>> def message(i):
...     ds = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[i], bx=[0], tdc=[0]))
...     ds.attrs.update(window_id=i, first_orbit=100 * i, last_orbit=100 * i + 99,
...                     window_start="2026-12-05T10:00:00Z", window_end="2026-12-05T10:00:02Z",
...                     provenance=json.dumps({"processor": "p"}))
...     return decode_message(encode_message(ds))
>>> ledger = Ledger("sqlite://")
>>> live = LiveJudging(Config(judge_windows=2), ledger, tempfile.mkdtemp())
>>> [v["schema"] for v in live.handle([message(0), message(1)])]
['dtlive.quality/2']
>>> sorted(p["detail"]["chamber"] for p in ledger.periods(kind=STATUS_KIND))  # silent chambers 1-3 and chamber 0
[0, 1, 2, 3]
>>> [(b["first_window"], b["last_window"]) for b in ledger.lumi_blocks()]
[(0, 1)]
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dtlive.config import Config
from dtlive.core.lumi import LumiJudge, StatusChanges

if TYPE_CHECKING:
    from dtlive.storage.ledger import Outbox

log = logging.getLogger(__name__)

STATUS_KIND = "chamber_status"  # the ledger period kind of a chamber's judged status


class LiveJudging:
    """Judge lumi blocks of ``cfg.judge_windows`` windows and keep chamber status changes in ``ledger``.

    ``history_path``: the history store's folder (references live in its ``references`` folder).

    >>> import tempfile
    >>> from dtlive.config import load_config
    >>> from dtlive.storage.ledger import Ledger
    >>> judging = LiveJudging(load_config({"judge_windows": 2, "reference": ""}, env={}), Ledger("sqlite://"),
    ...                       tempfile.mkdtemp())
    >>> judging.lumi.block, judging.verdicts
    (2, 0)
    """

    def __init__(self, cfg: Config, ledger, history_path: str | os.PathLike | None = None,
                 on_changes: Callable[[list[dict]], object] | None = None):
        from dtlive.storage.references import ReferenceFile, reference_dir

        self.cfg = cfg
        self.ledger = ledger
        self.reference = ReferenceFile(cfg.reference, reference_dir(history_path))
        self.lumi = LumiJudge(cfg.judge_windows, self.reference.get(), cfg.quality_tests or None)
        self.changes = StatusChanges()
        self.on_changes = on_changes  # told each verdict's status changes before they are written to the ledger
        self.open: dict[tuple[str, int], int] = {}  # (processor, chamber) -> id of its open status period
        self.verdicts = 0
        self.status_changes = 0
        self.busy = False  # inside handle(): the recorder does not judge ahead from inside it
        self.deferred = False  # judging ahead while the database is away: changes go to the outbox
        # status periods waiting for the database, written in order on their own thread; what a stopped recorder
        # could not write waits in the spool file, and is written at start (after the open periods it ends are
        # known, before they are taken as the current status)
        self._spool = Path(history_path) / "outbox" / "status-changes.jsonl" if history_path is not None else None
        self._outbox: Outbox | None = None
        self._resume()
        if self._spool is not None and self._spool.exists():
            self._outbox = self._new_outbox()
            self._outbox.drain()
            self._resume()

    def _resume(self) -> None:
        """Go on from the status periods a previous recorder left open."""
        for p in self.ledger.periods(start=time.time(), kind=STATUS_KIND):
            d = p.get("detail") or {}
            if p["end"] is None and "chamber" in d and d.get("status") is not None:
                key = (str(d.get("processor") or ""), int(d["chamber"]))
                self.open[key] = p["id"]
                self.changes.last[key] = int(d["status"])

    def handle(self, messages: list[dict]) -> list[dict]:
        """Take window messages; return the verdicts of the blocks they completed (status changes recorded)."""
        self.lumi.reference = self.reference.get()
        self.busy = True
        try:
            verdicts = self.lumi.add(messages)
            for v in verdicts:
                self.verdicts += 1
                changes = self.changes.update(v)
                if changes and self.on_changes is not None:
                    self.on_changes(changes)
                self._record(None, v)  # the judged block itself
                for change in changes:
                    self._record(change, v)
        finally:
            self.busy = False
        return verdicts

    def _record(self, change: dict | None, verdict: dict) -> None:
        """Keep the change (None: the judged block) in the ledger: at once, or through the outbox while the
        database is away (judging never waits for the database)."""
        from dtlive.storage.ledger import RetryingLedger, is_unreachable

        self.status_changes += change is not None
        plain = self.ledger.ledger if isinstance(self.ledger, RetryingLedger) else self.ledger
        if not (self.deferred or plain.outage.down):
            self._drain()
            try:
                self._write(plain, (change, verdict))
                return
            except Exception as exc:
                if not is_unreachable(exc):
                    raise
                plain.outage.failed(exc)
        if self._outbox is None:
            self._outbox = self._new_outbox()
        self._outbox.put((change, verdict))

    def _new_outbox(self) -> Outbox:
        from dtlive.storage.ledger import Outbox, RetryingLedger

        plain = self.ledger.ledger if isinstance(self.ledger, RetryingLedger) else self.ledger
        return Outbox(plain, self._write, name="status changes", spool=self._spool)

    def _drain(self) -> None:
        """Changes waiting in the outbox are written before later ones."""
        from dtlive.storage.ledger import LedgerUnavailable

        stop, wait = getattr(self.ledger, "stop", None), getattr(self.ledger, "on_wait", None)
        while self._outbox is not None and self._outbox.waiting:
            if stop is not None and stop():
                raise LedgerUnavailable("stopped while status changes waited for the ledger database")
            if wait is not None:
                wait()
            time.sleep(0.05)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write the status changes still waiting for the database (at most ``timeout_s``)."""
        if self._outbox is not None:
            self._outbox.close(timeout_s)

    def _write(self, ledger, item: tuple[dict | None, dict]) -> None:
        change, verdict = item
        if change is None:
            ledger.record_block(verdict)
            return
        key = (change["processor"], change["chamber"])
        start = change["start"] or time.time()
        if key in self.open:
            try:
                ledger.end_period(self.open[key], start)
                del self.open[key]
            except (KeyError, ValueError) as exc:  # deleted by hand, or the new block starts before it
                log.warning("chamber %d: could not end its previous status period: %s", change["chamber"], exc)
        ref = verdict.get("reference") or {}
        reasons = change["reasons"]
        reason = f"chamber {change['chamber']} {change['label']}" + (f": {reasons[0]}" if reasons else "")
        self.open[key] = ledger.add_period(
            start, None, reason, automatic=True, kind=STATUS_KIND,
            detail={"chamber": change["chamber"], "status": change["status"], "label": change["label"],
                    "previous": change["previous"], "reasons": reasons, "processor": change["processor"],
                    "reference": ref.get("label"), "window_ids": (verdict.get("windows") or {}).get("ids")})
        log.info("%s (processor %s)", reason, change["processor"] or "?")
