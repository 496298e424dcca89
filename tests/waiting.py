"""Waiting on a condition in tests, with a bounded deadline and a clear failure, instead of a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str | Callable[[], str], interval: float = 0.05) -> T:
    """Call ``predicate`` until it returns something true; return that. Fails the test after ``timeout`` s.

    ``what`` names the condition in the failure message (a callable is called then, to show the state reached).

    >>> wait_for(lambda: 42, 1.0, "the answer")
    42
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)
