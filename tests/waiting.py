"""Waiting on a condition in a test, never a fixed sleep standing for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str | Callable[[], str], every: float = 0.2) -> T:
    """Call ``condition`` until it returns something truthy (returned) or ``timeout`` seconds pass (the test fails).

    ``what`` names the condition in the failure message (a callable: asked then, e.g. for a service's log).

    >>> wait_for(lambda: 42, 1, "the answer")
    42
    """
    import pytest

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what() if callable(what) else what}")
        time.sleep(every)
