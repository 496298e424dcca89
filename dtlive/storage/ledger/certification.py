"""Judged lumi blocks and people's certification overrides: the :class:`CertificationMixin` part of :class:`Ledger`.

The verdicts themselves are computed from these rows when asked (:mod:`dtlive.core.certification`, through
:mod:`dtlive.storage.certification`), so a changed rule or a block judged again never loses an override.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dtlive.storage.ledger.models import CertificationOverride, LumiBlock, _now
from dtlive.storage.ledger.values import TimeLike, _jsonable, _opt_utc, to_utc


class CertificationMixin:
    """Lumi blocks and certification overrides of a :class:`~dtlive.storage.ledger.Ledger`, which inherits them.

    Uses the ledger's ``_tx`` (a session in a transaction) and ``_retry`` (a write retried on a unique-key race).

    >>> from dtlive.storage.ledger import Ledger
    >>> led = Ledger("sqlite://")
    >>> verdict = {"processor": "p", "windows": {"ids": [0, 4], "count": 5, "start": "2026-12-05T10:00:00.000Z",
    ...            "end": "2026-12-05T10:00:10.000Z"}, "chambers": {"chamber_0": {"status": 0, "label": "ok"}}}
    >>> led.record_block(verdict), led.record_block(verdict)  # idempotent
    (True, False)
    >>> [(b["first_window"], b["statuses"]) for b in led.lumi_blocks()]
    [(0, {0: 0})]
    >>> oid = led.add_override(good=False, reason="gas leak", who="shifter", chamber=0, start="2026-12-05T10:00Z",
    ...                        end="2026-12-05T11:00Z")
    >>> [(o["good"], o["who"], o["chamber"]) for o in led.overrides()]
    [(False, 'shifter', 0)]
    """

    if TYPE_CHECKING:  # given by the Ledger

        def _tx(self, write: bool = True) -> AbstractContextManager[Session]: ...

        def _retry(self, fn: Callable[[Session], Any], attempts: int = 3) -> Any: ...

    def record_block(self, verdict: dict) -> bool:
        """Keep the block of a ``dtlive.quality/2`` verdict (its processor, windows, times, chamber statuses).

        Idempotent on (processor, start, first window): returns False when the block was already kept, or when
        the verdict has no time range (windows without a start time cannot be certified).
        """
        w = verdict.get("windows") or {}
        ids = w.get("ids") or []
        if not ids or not w.get("start") or not w.get("end"):
            return False
        statuses, detail = {}, {}
        for name, c in sorted((verdict.get("chambers") or {}).items()):
            chamber = name.rsplit("_", 1)[-1]
            statuses[chamber] = c.get("status")
            detail[chamber] = {"label": c.get("label"), "reason": next(iter(c.get("reasons") or []), None)}
        row = dict(processor=str(verdict.get("processor") or ""), first_window=int(ids[0]), last_window=int(ids[-1]),
                   windows=int(w.get("count") or 0), start_time=to_utc(w["start"]), end_time=to_utc(w["end"]),
                   statuses=statuses, detail=_jsonable({"chambers": detail,
                                                        "reference": (verdict.get("reference") or {}).get("label")}))

        def write(s) -> bool:
            known = s.scalars(sa.select(LumiBlock.id).where(
                LumiBlock.processor == row["processor"], LumiBlock.start_time == row["start_time"],
                LumiBlock.first_window == row["first_window"])).first()
            if known is not None:
                return False
            s.add(LumiBlock(**row, recorded_at=_now()))
            s.flush()
            return True

        return self._retry(write)

    def lumi_blocks(self, start: TimeLike | None = None, end: TimeLike | None = None,
                    processor: str | None = None) -> list[dict]:
        """Judged blocks overlapping [start, end), oldest first; ``statuses`` keyed by chamber number."""
        q = sa.select(LumiBlock).order_by(LumiBlock.start_time, LumiBlock.id)
        if end is not None:
            q = q.where(LumiBlock.start_time < to_utc(end))
        if start is not None:
            q = q.where(LumiBlock.end_time > to_utc(start))
        if processor is not None:
            q = q.where(LumiBlock.processor == processor)
        with self._tx(write=False) as s:
            return [{"id": b.id, "processor": b.processor, "first_window": b.first_window,
                     "last_window": b.last_window, "windows": b.windows, "start": b.start_time, "end": b.end_time,
                     "statuses": {int(k): v for k, v in (b.statuses or {}).items()}, "detail": b.detail,
                     "recorded_at": b.recorded_at} for b in s.scalars(q)]

    def block_processors(self) -> list[str]:
        """The processors whose lumi blocks are kept, sorted."""
        with self._tx(write=False) as s:
            return list(s.scalars(sa.select(LumiBlock.processor).distinct().order_by(LumiBlock.processor)))

    def add_override(self, *, good: bool, reason: str, who: str, chamber: int | None = None, run: int | None = None,
                     start: TimeLike | None = None, end: TimeLike | None = None, at: TimeLike | None = None) -> int:
        """Record a person's verdict (``good`` or bad) for detector run ``run`` and/or ``[start, end)``; its id.

        ``chamber`` None: every chamber. Overrides are never changed or deleted: a later one replaces an earlier
        one where they overlap, and both stay in the record.
        """
        from dtlive.core.certification import Override

        start_t, end_t = _opt_utc(start), _opt_utc(end)
        Override(bool(good), str(reason or ""), str(who or ""), 0.0, chamber, run,  # refuses what cannot apply
                 None if start_t is None else start_t.timestamp(), None if end_t is None else end_t.timestamp())
        with self._tx() as s:
            o = CertificationOverride(good=bool(good), chamber=None if chamber is None else int(chamber),
                                      detector_run=None if run is None else int(run), start_time=start_t,
                                      end_time=end_t, reason=reason, who=who,
                                      created_at=to_utc(at) if at is not None else _now())
            s.add(o)
            s.flush()
            return o.id

    def overrides(self) -> list[dict]:
        """Every override, in the order they apply (made first, first)."""
        q = sa.select(CertificationOverride).order_by(CertificationOverride.created_at, CertificationOverride.id)
        with self._tx(write=False) as s:
            return [{"id": o.id, "good": o.good, "chamber": o.chamber, "run": o.detector_run, "start": o.start_time,
                     "end": o.end_time, "reason": o.reason, "who": o.who, "at": o.created_at} for o in s.scalars(q)]
