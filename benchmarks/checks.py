"""Counting checks of the benchmarks: a verdict is only met when every hit of the input was counted.

The expected count always comes from the input (the rows handed to the emulator, or the files written before a
run), never from a run being measured. :class:`CountedInput` counts the hits (HEAD 2 rows) of a chunk stream as
it is sent; :func:`count_check` compares a count with its expectation; :func:`verdict` turns a performance
result and the count checks into one line, where a miscount fails the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

HIT_HEAD = 2  # dtlive.core.detector.HIT_HEAD: rows with this HEAD are hits, every other row is ancillary


def count_hits(head: np.ndarray) -> int:
    """Hits among rows with these HEAD values.

    >>> count_hits(np.array([2, 2, 0, 2, 5]))
    3
    """
    return int(np.count_nonzero(np.asarray(head) == HIT_HEAD))


class CountedInput:
    """Iterate ``chunks`` (``dtlive.kafka.emulator.Chunk``), cut to ``rows`` rows in all if given, counting hits.

    ``rows_seen`` and ``hits`` are what was handed out; :meth:`hits_in_first` gives the hits among the first
    ``n`` rows (an emulator stopped by time sends a prefix of what it was given, one message at a time).

    >>> from dtlive.kafka.emulator import Chunk
    >>> from dtlive.core.rows import Rows
    >>> def chunk(heads):
    ...     zeros = {c: np.zeros(len(heads)) for c in ("fpga", "channel", "orbit", "bx", "tdc")}
    ...     return Chunk(Rows.from_columns(head=np.array(heads), **zeros))
    >>> counted = CountedInput(iter([chunk([2, 2, 0]), chunk([2, 0, 2, 2])]), rows=5)
    >>> [len(c.rows) for c in counted], counted.rows_seen, counted.hits, counted.hits_in_first(4)
    ([3, 2], 5, 3, 3)
    """

    def __init__(self, chunks: Iterable, rows: int | None = None):
        self.chunks, self.limit = iter(chunks), rows
        self.rows_seen = 0
        self.hits = 0
        self._sizes: list[int] = []
        self._hits: list[int] = []
        self._is_hit: list[np.ndarray] = []  # packed bits, one array per chunk

    def __iter__(self) -> Iterator:
        from dtlive.kafka.emulator import Chunk

        for chunk in self.chunks:
            if self.limit is not None and self.rows_seen >= self.limit:
                return
            n = len(chunk.rows.head)
            if self.limit is not None and self.rows_seen + n > self.limit:
                keep = slice(0, self.limit - self.rows_seen)
                chunk = Chunk(chunk.rows.select(keep), None if chunk.raw_lines is None else chunk.raw_lines[keep])
                n = len(chunk.rows.head)
            is_hit = np.asarray(chunk.rows.head) == HIT_HEAD
            self._sizes.append(n)
            self._hits.append(int(is_hit.sum()))
            self._is_hit.append(np.packbits(is_hit))
            self.rows_seen += n
            self.hits += self._hits[-1]
            yield chunk

    def hits_in_first(self, n: int) -> int:
        """Hits among the first ``n`` rows handed out."""
        if n > self.rows_seen:
            raise ValueError(f"only {self.rows_seen} rows were handed out, not {n}")
        total = 0
        for size, hits, packed in zip(self._sizes, self._hits, self._is_hit):
            if n >= size:
                total, n = total + hits, n - size
                continue
            return total + int(np.unpackbits(packed, count=size)[:n].sum())
        return total


def count_check(expected: int, counted: int, what: str = "hits", late: int = 0) -> dict:
    """Compare a count with what the input holds; ``late``: of the missing ones, dead-lettered as late.

    >>> count_check(100, 100)["ok"], count_check(100, 97, late=2)["problem"], count_check(5, 6)["problem"]
    (True, '3 hits missing (2 of them dead-lettered as late)', '1 hits extra')
    """
    diff = int(counted) - int(expected)
    problem = None
    if diff < 0:
        problem = f"{-diff:,} {what} missing" + (f" ({late:,} of them dead-lettered as late)" if late else "")
    elif diff > 0:
        problem = f"{diff:,} {what} extra"
    return {"what": what, "expected": int(expected), "counted": int(counted), "ok": diff == 0, "problem": problem}


def verdict(met: bool | None, checks: Iterable[dict]) -> tuple[bool | None, str]:
    """The overall result: (met, text). A failed count check fails the target whatever the figures say.

    ``met`` None means the figures have no target; the counts still decide.

    >>> verdict(True, [count_check(10, 10)]), verdict(True, [count_check(10, 8)])
    ((True, 'MET'), (False, 'not met: 2 hits missing'))
    >>> verdict(None, [count_check(3, 3)]), verdict(False, [])
    ((None, 'no target; all counted'), (False, 'MISSED'))
    """
    problems = [c["problem"] for c in checks if not c["ok"]]
    if problems:
        return False, "not met: " + "; ".join(problems)
    if met is None:
        return None, "no target; all counted"
    return bool(met), "MET" if met else "MISSED"
