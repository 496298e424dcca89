"""Pure helpers of the ledger: times to UTC, JSON values, secrets masked, offset ranges merged, the source commit.

``_UNSET`` marks an argument that was not given (where None is a value).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_SECRET_KEY = re.compile(r"pass|secret|token|credential|private", re.IGNORECASE)

TimeLike = datetime | float | int | str


def to_utc(t: TimeLike | Any) -> datetime:
    """A timezone-aware UTC datetime from a datetime (naive = UTC), UNIX seconds, an ISO string or datetime64.

    >>> import numpy as np
    >>> to_utc("2024-05-01T14:00:00+02:00")
    datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
    >>> to_utc(1714564800) == to_utc("2024-05-01 12:00"), to_utc(1714564800).tzinfo
    (True, datetime.timezone.utc)
    >>> to_utc(np.datetime64("2024-05-01T12:00")) == to_utc(datetime(2024, 5, 1, 12))  # naive means UTC
    True
    """
    if isinstance(t, datetime):
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    if isinstance(t, str):
        return to_utc(datetime.fromisoformat(t.strip().replace("Z", "+00:00")))
    if isinstance(t, bool):
        raise TypeError(f"not a time: {t!r}")
    if isinstance(t, int | float):
        return datetime.fromtimestamp(float(t), UTC)
    if type(t).__name__ == "datetime64":  # numpy, without importing it
        return datetime.fromtimestamp(int(t.astype("datetime64[us]").astype("int64")) / 1e6, UTC)
    if hasattr(t, "item") and not isinstance(t, type):  # numpy scalars
        return to_utc(t.item())
    raise TypeError(f"not a time: {t!r} (give a datetime, UNIX seconds or an ISO 8601 string)")


def _opt_utc(t: TimeLike | None) -> datetime | None:
    return None if t is None else to_utc(t)


def _jsonable(value: Any) -> Any:
    return None if value is None else json.loads(json.dumps(value, default=str))


def _redact(value: Any) -> Any:
    """Mask secrets (``sasl.password`` ...) in a configuration before it is stored."""
    if isinstance(value, Mapping):
        return {k: "***" if isinstance(k, str) and _SECRET_KEY.search(k) and v else _redact(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def merge_offset_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge inclusive offset ranges that overlap or touch: ``[(0, 9), (10, 19), (30, 39)] -> [(0, 19), (30, 39)]``.

    >>> merge_offset_ranges([(10, 19), (0, 9), (5, 7), (30, 39)])
    [(0, 19), (30, 39)]
    """
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _merge_intervals(intervals: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    from dtlive.core.certification import merge_spans

    return merge_spans(intervals)


@functools.lru_cache(maxsize=1)
def source_git_commit() -> str | None:
    """The git commit of the dtlive source checkout this module runs from, or None (installed, no git...).

    >>> head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
    ...                       text=True).stdout.strip()  # empty outside a git checkout
    >>> source_git_commit() == (head or None)  # None when dtlive is installed, not run from a checkout
    True
    """
    root = Path(__file__).resolve().parents[3]  # the checkout holding dtlive/storage/ledger/
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
        return None  # not a checkout, or the package sits inside some other repository (a venv in a repo)
    return lines[1]


def _chunks(items: Sequence, n: int = 500) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class _Unset:
    def __repr__(self):
        return "<unset>"


_UNSET: Any = _Unset()
