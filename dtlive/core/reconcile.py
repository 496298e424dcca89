"""Which published results never reached the recorder. Pure bookkeeping, no I/O.

Every result a processor run publishes carries ``provenance.result_seq``: 1, 2, 3, ... within that run (a
transaction the broker lost is produced again with the same numbers). The recorder hands every result it reads
to :class:`ResultGaps`; a number skipped inside a run is a result that was published and then lost before it was
recorded (a broker that restarted empty loses what it held), and is reported once, as a range. Numbers before
the first result seen of a run are not judged (a restarted recorder starts after what it recorded before).

>>> gaps = ResultGaps()
>>> gaps.add([{"provenance": {"run_id": "a", "result_seq": n}} for n in (1, 2, 5, 6)])
[('a', 3, 4)]
>>> gaps.add([{"provenance": {"run_id": "a", "result_seq": 3}}]), gaps.missing
([], {'a': {4}})
"""

from __future__ import annotations

from collections.abc import Iterable

#: Missing numbers remembered per run (older ones are forgotten; they were reported when found).
KEEP = 10_000


class ResultGaps:
    """Per processor run: the highest result number seen and the numbers still missing below it.

    >>> gaps = ResultGaps()
    >>> gaps.add([{"provenance": {"run_id": "r1", "result_seq": n}} for n in (7, 8, 11)])
    [('r1', 9, 10)]
    >>> gaps.highest, gaps.lost
    ({'r1': 11}, 2)
    """

    def __init__(self):
        self.highest: dict[str, int] = {}
        self.missing: dict[str, set[int]] = {}
        self.lost = 0  # results reported missing so far (some may turn up later, out of order)

    def add(self, messages: Iterable[dict]) -> list[tuple[str, int, int]]:
        """Take results in the order read; return the new gaps as ``(run id, first, last)`` missing numbers."""
        found = []
        for msg in messages:
            prov = msg.get("provenance") or {}
            run, seq = prov.get("run_id"), prov.get("result_seq")
            if run is None or not isinstance(seq, int):
                continue
            top = self.highest.get(run)
            if top is None:  # the first seen of this run: what came before was recorded before a restart, or not
                self.highest[run] = seq
                continue
            if seq > top + 1:
                found.append((run, top + 1, seq - 1))
                missing = self.missing.setdefault(run, set())
                missing.update(range(max(top + 1, seq - KEEP), seq))
                self.lost += seq - 1 - top
            elif seq <= top:
                pending = self.missing.get(run)
                if pending and seq in pending:
                    pending.discard(seq)
                    self.lost -= 1
            self.highest[run] = max(top, seq)
        return found
