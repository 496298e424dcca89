"""A canned analysis that takes a while (``slow_probe``), one that fails (``failing_probe``), and a listener process
that can run them.

Fault tests kill the alert listener while an analysis is in flight; a real analysis on an empty
history ends too quickly to be caught running. ``python tests/slow_analysis.py SETTINGS.json`` runs
an :class:`~dtlive.alerts.listener.AlertListener` whose workers know ``slow_probe``, until SIGTERM.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from dtlive.alerts.analyses import AnalysisResult, analysis


@analysis(name="slow_probe", version="1", defaults={"seconds": 3.0}, replace=True)  # imported under two names
def slow_probe(alert, ctx) -> AnalysisResult:
    """Sleeps ``seconds``, then reports the alert id and when it ran."""
    time.sleep(float(ctx.params["seconds"]))
    return AnalysisResult(summary={"alert": alert.id, "ran_at": time.time()})


@analysis(name="failing_probe", version="3", replace=True)
def failing_probe(alert, ctx) -> AnalysisResult:
    """Fails the way a broken analysis does: an exception deep in its code."""
    raise ZeroDivisionError(f"no background windows for {alert.id}")


RULES = """
[[rule]]
name = "probe"
topics = ["{topic}"]
analyses = ["slow_probe"]
[rule.params.slow_probe]
seconds = {seconds}
"""


def listener(settings: dict):
    """An AlertListener from ``settings`` (bootstrap, ledger_url, config, topic, seconds, artifacts, workers)."""
    from dtlive.alerts.listener import AlertListener
    from dtlive.alerts.rules import load_rules
    from dtlive.alerts.workers import WorkerPool
    from dtlive.config import load_config

    cfg = load_config(settings["config"], env={})
    rules = load_rules(RULES.format(topic=settings["topic"], seconds=settings["seconds"]))
    pool = WorkerPool(settings.get("workers", 1), preload=("dtlive.alerts.analyses", "slow_analysis"))
    return AlertListener(cfg, settings["bootstrap"], rules=rules, ledger_url=settings["ledger_url"],
                         artifacts_dir=settings["artifacts"], timeout_s=60, pool=pool)


def _made(service):
    print("listening", flush=True)
    return service


if __name__ == "__main__":
    from dtlive.service.shutdown import serve

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(sys.argv[1]) as f:
        settings = json.load(f)
    serve(lambda: _made(listener(settings)))
