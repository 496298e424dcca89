"""A sliding-window budget for notifications: at most ``limit`` per ``per_s`` seconds, the rest held back and
counted so that the next one that goes out can summarise them. Pure: the caller gives the time.

>>> budget = Budget(limit=2, per_s=60)
>>> [budget.offer(t, "raised") for t in (0, 1, 2, 3)]
[True, True, False, False]
>>> budget.held, budget.take_held()
(2, {'raised': 2})
>>> budget.offer(61, "cleared"), budget.held
(True, 0)
"""

from __future__ import annotations

from collections import Counter, deque


class Budget:
    """At most ``limit`` sends in any ``per_s`` seconds; what :meth:`offer` refuses is counted by kind.

    >>> b = Budget(limit=1, per_s=10)
    >>> b.offer(0.0), b.offer(5.0), b.ready(9.9), b.ready(10.0)
    (True, False, False, True)
    """

    def __init__(self, limit: int, per_s: float):
        if limit < 1 or per_s <= 0:
            raise ValueError(f"a notification budget needs limit >= 1 and a positive period, got {limit} per {per_s} s")
        self.limit, self.per_s = int(limit), float(per_s)
        self._sent: deque[float] = deque()
        self._held: Counter[str] = Counter()
        self.sent = 0
        self.held_total = 0

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.per_s:
            self._sent.popleft()

    def ready(self, now: float) -> bool:
        """Whether a send at ``now`` is within the budget."""
        self._expire(now)
        return len(self._sent) < self.limit

    def offer(self, now: float, kind: str = "notification") -> bool:
        """True: send it now (counted against the budget); False: held back and counted under ``kind``."""
        if self.ready(now):
            self._sent.append(now)
            self.sent += 1
            return True
        self._held[kind] += 1
        self.held_total += 1
        return False

    @property
    def held(self) -> int:
        """Held back since the last :meth:`take_held`."""
        return sum(self._held.values())

    def take_held(self) -> dict[str, int]:
        """The counts held back by kind, and start counting again."""
        out, self._held = dict(self._held), Counter()
        return out


def summary(held: dict[str, int], minutes: float) -> str:
    """One line saying what was held back.

    >>> summary({"raised": 3, "cleared": 1}, 10)
    '4 more alarm events held back by the limit of notifications per 10 min (3 raised, 1 cleared)'
    """
    parts = ", ".join(f"{n} {k}" for k, n in sorted(held.items(), key=lambda kv: -kv[1]))
    return (f"{sum(held.values())} more alarm events held back by the limit of notifications per {minutes:g} min"
            f" ({parts})")
