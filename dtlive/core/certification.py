"""Certification: a good/bad verdict per chamber for every lumi block and every detector run. Pure: no I/O.

The rule, automatic first:

- a **lumi block** (the windows the recorder judged together) is **good** for a chamber when the quality tests
  gave that chamber a status ``<= max_status`` (setting ``certify_max_status``, default 2: ok, minor or
  degraded are good; poor (3), bad (4) and no status at all (None: not enough statistics) are bad);
- a person's **override** (good or bad, with who, when and why) replaces the automatic verdict of every block it
  covers: blocks of its detector run (``run``) and/or overlapping its time range ``[start, end)`` (``end`` None:
  open), for one chamber or all (``chamber`` None). Overrides apply in the order they were made (``at``, then
  ``id``): where two cover the same block and chamber, the later one wins; none is ever dropped, and automatic
  verdicts computed again (another ``max_status``, blocks judged again) never undo one;
- a **detector run** is good for a chamber when it has at least one block and every one of its blocks is good
  for that chamber.

A block belongs to the detector run in which it starts (the newest run started at or before it and not ended
by then; none: ``run`` None, it still counts for the time ranges). Blocks are numbered 1, 2, ... by start
within their run and processor: the "lumi section" numbers of the good ranges (:func:`good_blocks`).

>>> blocks = [Block(10.0 * i, 10.0 * i + 10, {0: 0, 1: 4 if i == 2 else 1}) for i in range(4)]
>>> runs = [Run(7, 0.0, None)]
>>> v = certify(blocks, runs, chambers=[0, 1])
>>> good_blocks(v, 0), good_blocks(v, 1)
({7: [[1, 4]]}, {7: [[1, 2], [4, 4]]})
>>> later = Override(good=True, reason="HV was fine, the test misfired", who="shifter", at=100.0, run=7, chamber=1)
>>> good_blocks(certify(blocks, runs, [later], chambers=[0, 1]), 1)
{7: [[1, 4]]}
>>> [(r["run"], r["chamber"], r["good"], r["good_blocks"]) for r in run_verdicts(v)]
[(7, 0, True, 4), (7, 1, False, 3)]
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dtlive.config import Config
from dtlive.core import detector as det

DEFAULT_MAX_STATUS = Config.certify_max_status  # the worst chamber status still good (2: ok, minor, degraded)
MAX_STATUS = 4  # the status scale of dtlive.core.judge: 0 (ok) .. 4 (bad)
ALL = "all"  # the key of the ranges in which every chamber is good


def is_good(status: int | None, max_status: int = DEFAULT_MAX_STATUS) -> bool:
    """The automatic verdict of one status: good when judged and ``status <= max_status``.

    >>> is_good(0), is_good(2), is_good(3), is_good(None), is_good(3, max_status=3)
    (True, True, False, False, True)
    """
    return status is not None and int(status) <= max_status


@dataclass(frozen=True)
class Block:
    """One judged lumi block: ``[start, end)`` in UNIX seconds and the status of each chamber (None: not judged).

    >>> Block(0.0, 10.0, {0: 0, 1: None}, processor="p", first_window=0, last_window=4).statuses[1] is None
    True
    """

    start: float
    end: float
    statuses: Mapping[int, int | None] = field(hash=False)
    processor: str = ""
    first_window: int | None = None
    last_window: int | None = None


@dataclass(frozen=True)
class Run:
    """A detector run: its number and ``[start, end)`` in UNIX seconds (``end`` None: still going on).

    >>> Run(3, 0.0, None).contains(1e9), Run(3, 0.0, 10.0).contains(10.0)
    (True, False)
    """

    number: int
    start: float
    end: float | None = None

    def contains(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True)
class Override:
    """A person's verdict: ``good`` or bad for the blocks of ``run`` and/or overlapping ``[start, end)``.

    ``chamber`` None: every chamber. ``at``: when it was made (UNIX seconds), which orders overrides.

    >>> o = Override(False, "gas leak", "shifter", at=5.0, start=20.0, end=30.0, chamber=2)
    >>> b, after = Block(25.0, 35.0, {}), Block(30.0, 40.0, {})
    >>> o.covers(b, None, 2), o.covers(after, None, 2), o.covers(b, None, 1)
    (True, False, False)
    """

    good: bool
    reason: str
    who: str
    at: float
    chamber: int | None = None
    run: int | None = None
    start: float | None = None
    end: float | None = None
    id: int | None = None

    def __post_init__(self):
        if self.run is None and self.start is None:
            raise ValueError("an override names a detector run or a time range (start, and end or open)")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"an override's time range ends ({self.end}) at or before its start ({self.start})")
        if not str(self.reason).strip() or not str(self.who).strip():
            raise ValueError("an override needs a reason and who made it")

    def covers(self, block: Block, run: int | None, chamber: int) -> bool:
        """Whether this override decides ``chamber`` in ``block`` (which belongs to detector run ``run``)."""
        if self.chamber is not None and self.chamber != chamber:
            return False
        if self.run is not None and self.run != run:
            return False
        if self.start is not None:
            return block.end > self.start and (self.end is None or block.start < self.end)
        return True


@dataclass(frozen=True)
class Verdict:
    """The verdict of one chamber in one block: automatic, final, and the override that decided it (if any).

    >>> v = certify([Block(0.0, 10.0, {0: 3})], [Run(1, 0.0)], chambers=[0])[0]
    >>> v.run, v.number, v.status, v.automatic, v.good, v.override is None
    (1, 1, 3, False, False, True)
    """

    block: Block
    run: int | None
    number: int | None
    chamber: int
    status: int | None
    automatic: bool
    good: bool
    override: Override | None = None


def run_of(runs: Sequence[Run], t: float) -> int | None:
    """The number of the detector run holding time ``t``: the newest started at or before it and not ended by then.

    >>> run_of([Run(1, 0.0, 10.0), Run(2, 10.0)], 9.9), run_of([Run(1, 0.0, 10.0)], 10.0), run_of([Run(1, 5.0)], 1.0)
    (1, None, None)
    """
    ordered = sorted(runs, key=lambda r: (r.start, r.number))
    return _run_at(ordered, [r.start for r in ordered], t)


def _run_at(ordered: Sequence[Run], starts: Sequence[float], t: float) -> int | None:
    for r in reversed(ordered[:bisect.bisect_right(starts, t)]):
        if r.contains(t):
            return r.number
    return None


def certify(blocks: Iterable[Block], runs: Iterable[Run] = (), overrides: Iterable[Override] = (),
            max_status: int = DEFAULT_MAX_STATUS, chambers: Iterable[int] | None = None) -> list[Verdict]:
    """Every (block, chamber) verdict, blocks in (processor, start) order: see the module docstring for the rule.

    >>> blocks = [Block(0.0, 10.0, {0: 4}), Block(10.0, 20.0, {0: 0})]
    >>> bad_by_hand = Override(False, "noise seen on the scope", "expert", at=1.0, start=12.0, end=13.0)
    >>> [(v.number, v.automatic, v.good) for v in certify(blocks, [Run(1, 0.0)], [bad_by_hand], chambers=[0])]
    [(1, False, False), (2, True, False)]
    """
    if not 0 <= max_status <= MAX_STATUS:
        raise ValueError(f"max_status must be 0 to {MAX_STATUS}, got {max_status}")
    chambers = [int(c) for c in (det.CHAMBERS if chambers is None else chambers)]
    runs = sorted(runs, key=lambda r: (r.start, r.number))
    starts = [r.start for r in runs]
    ordered = sorted(overrides, key=lambda o: (o.at, o.id if o.id is not None else 0))
    numbers: dict[tuple[int | None, str], int] = {}
    out = []
    for block in sorted(blocks, key=lambda b: (b.processor, b.start, b.end)):
        run = _run_at(runs, starts, block.start)
        number = None
        if run is not None:
            number = numbers[(run, block.processor)] = numbers.get((run, block.processor), 0) + 1
        for c in chambers:
            status = block.statuses.get(c)
            automatic = is_good(status, max_status)
            decided = None
            for o in ordered:
                if o.covers(block, run, c):
                    decided = o
            good = automatic if decided is None else bool(decided.good)
            out.append(Verdict(block, run, number, c, status, automatic, good, decided))
    return out


def run_verdicts(verdicts: Iterable[Verdict]) -> list[dict]:
    """Per (detector run, chamber): ``{"run", "chamber", "blocks", "good_blocks", "good", "overridden"}``.

    ``good``: at least one block and all of them good; ``overridden``: blocks a person decided. Blocks outside
    every run are left out.

    >>> v = certify([Block(0.0, 1.0, {0: 0}), Block(1.0, 2.0, {0: 4})], [Run(1, 0.0)], chambers=[0])
    >>> run_verdicts(v)
    [{'run': 1, 'chamber': 0, 'blocks': 2, 'good_blocks': 1, 'good': False, 'overridden': 0}]
    """
    acc: dict[tuple[int, int], dict] = {}
    for v in verdicts:
        if v.run is None:
            continue
        r = acc.setdefault((v.run, v.chamber), {"run": v.run, "chamber": v.chamber, "blocks": 0, "good_blocks": 0,
                                                "good": False, "overridden": 0})
        r["blocks"] += 1
        r["good_blocks"] += int(v.good)
        r["overridden"] += int(v.override is not None)
    for r in acc.values():
        r["good"] = r["blocks"] > 0 and r["good_blocks"] == r["blocks"]
    return [acc[k] for k in sorted(acc)]


def _selected(verdicts: Iterable[Verdict], chamber: int | str) -> list[tuple[Block, int | None, int | None, bool]]:
    """(block, run, number, good) of one chamber, or of :data:`ALL` (good in every chamber), blocks in order."""
    if chamber != ALL:
        return [(v.block, v.run, v.number, v.good) for v in verdicts if v.chamber == int(chamber)]
    out: dict[int, tuple[Block, int | None, int | None, bool]] = {}
    for v in verdicts:
        b, run, number, good = out.get(id(v.block), (v.block, v.run, v.number, True))
        out[id(v.block)] = (b, run, number, good and v.good)
    return list(out.values())


def good_blocks(verdicts: Iterable[Verdict], chamber: int | str) -> dict[int, list[list[int]]]:
    """The good blocks of ``chamber`` (or :data:`ALL`: good in every chamber) as ``{run: [[first, last], ...]}``.

    Consecutive good block numbers make one range (the "golden JSON" form); runs with no good block are left out.

    >>> v = certify([Block(float(i), i + 1.0, {0: 4 if i == 1 else 0, 1: 0}) for i in range(4)], [Run(5, 0.0)],
    ...             chambers=[0, 1])
    >>> good_blocks(v, 0), good_blocks(v, 1), good_blocks(v, ALL)
    ({5: [[1, 1], [3, 4]]}, {5: [[1, 4]]}, {5: [[1, 1], [3, 4]]})
    """
    numbers: dict[int, list[int]] = {}
    for _, run, number, good in _selected(verdicts, chamber):
        if good and run is not None and number is not None:
            numbers.setdefault(run, []).append(number)
    out = {}
    for run in sorted(numbers):
        ranges: list[list[int]] = []
        for n in sorted(set(numbers[run])):
            if ranges and n == ranges[-1][1] + 1:
                ranges[-1][1] = n
            else:
                ranges.append([n, n])
        out[run] = ranges
    return out


def good_times(verdicts: Iterable[Verdict], chamber: int | str) -> list[tuple[float, float]]:
    """The time ranges ``[(start, end), ...]`` (UNIX seconds) of the good blocks of ``chamber`` (or :data:`ALL`).

    Sorted and merged: blocks that touch or overlap make one range. Blocks outside every run count too.

    >>> v = certify([Block(0.0, 10.0, {0: 0}), Block(10.0, 20.0, {0: 0}), Block(30.0, 40.0, {0: 0})], chambers=[0])
    >>> good_times(v, 0)
    [(0.0, 20.0), (30.0, 40.0)]
    """
    return merge_spans((b.start, b.end) for b, _, _, good in _selected(verdicts, chamber) if good)


def merge_spans(spans: Iterable[tuple]) -> list[tuple]:
    """``(start, end)`` spans (numbers or datetimes) sorted and merged where they touch or overlap.

    >>> merge_spans([(5, 6), (0, 2), (2, 3), (1, 2.5)])
    [(0, 3), (5, 6)]
    """
    out: list[tuple] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
