"""Shared fixtures: the real embedded Kafka-protocol broker, the shared real data, unique topics."""

from __future__ import annotations

import os
import uuid

import pytest
from faults import free_port, own_broker, services  # noqa: F401  (fixtures for every test file)
from ledger_dbs import db_url, pg_admin  # noqa: F401  (fixtures: an empty ledger database, SQLite and PostgreSQL)
from pgserver import pg_db, pg_server  # noqa: F401  (fixtures: a private PostgreSQL server to stop and start)


@pytest.fixture(scope="session", autouse=True)
def private_data_dirs(tmp_path_factory):
    """Ledger, history and state directory (pid and log files) of the session live in a temporary directory.

    Set once for the whole session, before any test, and by no other fixture: what a test sees never depends
    on which tests ran before it.
    """
    data = tmp_path_factory.mktemp("dtlive-data")
    old = {k: os.environ.get(k) for k in ("DTLIVE_DB", "DTLIVE_HISTORY", "DTLIVE_STATE_DIR")}
    os.environ["DTLIVE_DB"] = f"sqlite:///{data / 'ledger.sqlite'}"
    os.environ["DTLIVE_HISTORY"] = str(data / "history")
    os.environ["DTLIVE_STATE_DIR"] = str(data / "state")
    yield data
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A real Tansu broker on a free loopback port for the whole test session (tests pass its address explicitly)."""
    from dtlive.kafka.broker import EmbeddedBroker

    state = tmp_path_factory.mktemp("broker-state")
    b = EmbeddedBroker(port=free_port(), state_dir=state)  # never 9092: a developer's own broker may want it
    b.start()
    yield b.bootstrap
    b.stop()


@pytest.fixture
def topics():
    """Unique topic names for one test."""
    tag = uuid.uuid4().hex[:8]
    return {"hits_topic": f"hits-{tag}", "monitor_topic": f"monitor-{tag}", "rejected_topic": f"rejected-{tag}",
            "group_id": f"proc-{tag}"}


# Test tiers (markers, see pyproject.toml): by the real parts a test needs, then by the files whose tests run for
# seconds each. What needs none of them is a unit test (``pytest -m unit``: the tier to run while editing).
_TIER_BY_FIXTURE = {"broker": "kafka", "own_broker": "kafka", "services": "kafka", "chromium": "browser",
                    "pg_server": "pg", "pg_db": "pg", "pg_admin": "pg"}
_TIER_BY_FILE = {
    "test_hub.py": ("hub", "slow"), "test_binder.py": ("hub", "slow"), "test_core_install.py": ("hub", "slow"),
    "test_browser.py": ("browser", "slow"), "test_dashboard_lifecycle.py": ("browser", "slow"),
    "test_event_display_browser.py": ("browser", "slow"),
    "test_notebooks.py": ("kafka", "slow"), "test_alerts_analyses.py": ("kafka",),
    "test_broker.py": ("kafka",), "test_broker_faults.py": ("kafka", "slow"),
    "test_process_faults.py": ("kafka", "slow"),
    "test_db_faults.py": ("kafka", "pg", "slow"), "test_exactly_once.py": ("kafka", "slow"),
    "test_scale.py": ("kafka", "slow"), "test_stack_stop.py": ("kafka", "slow"), "test_health.py": ("kafka",),
    "test_live.py": ("kafka",), "test_poison_cli.py": ("kafka",), "test_deadletter.py": ("kafka",),
    "test_alerts_rejoin.py": ("kafka", "slow"), "test_watchdog.py": ("kafka",),
}
# waits 10 s for a broker that is not there
_TIER_BY_DOCTEST = {"dtlive.kafka.emulator.emulator_producer": ("kafka", "slow")}
TIERS = ("kafka", "browser", "hub", "pg", "slow")


# The files that take minutes, longest first (measured with ``--durations``): collected first, and run in that order
# by ``scripts/test.sh`` (pytest-xdist's ``--no-loadscope-reorder``; by default it starts with the files holding the
# most tests), so that the three workers start with them and the short files fill in at the end.
_LONGEST_FIRST = ("test_binder.py", "test_db_faults.py", "test_notebooks.py", "test_docs.py", "test_broker_faults.py",
                  "test_browser.py", "test_core_install.py", "test_dashboard_lifecycle.py", "test_hub.py",
                  "test_alerts_kafka.py", "test_health.py", "test_scale.py", "test_exactly_once.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest in collection order
    for item in items:
        tiers = set(_TIER_BY_FILE.get(item.path.name, ())) | set(_TIER_BY_DOCTEST.get(item.name, ()))
        tiers |= {t for f, t in _TIER_BY_FIXTURE.items() if f in getattr(item, "fixturenames", ())}
        if "[postgresql" in item.name or "-postgresql" in item.name:
            tiers.add("pg")
        if item.get_closest_marker("slow"):
            tiers.add("slow")
        for tier in tiers or ("unit",):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium (Debian's, driven by Playwright) for the session: a second synchronous Playwright
    cannot start in the same thread while one runs, so every browser test shares this one."""
    from browser_fixtures import ensure_chromium
    from playwright.sync_api import sync_playwright

    path = ensure_chromium()
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
    yield browser
    browser.close()
    pw.stop()
