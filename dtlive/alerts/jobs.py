"""One analysis job, as a worker process runs it: the record it returns, or the record of a job that failed.

The alert listener (:mod:`dtlive.alerts.listener`) submits :func:`run_job` to its worker pool
(:mod:`dtlive.alerts.workers`) and publishes what comes back on the analyses topic (``dtlive.analysis/1``); a job
that raised or ran over its time limit is published as :func:`failure_record`, so the shift sees it fail.

>>> failure_record("snapshot", "timed_out", "over its 60 s limit")["summary"]
{'status': 'error', 'reason': 'timed out: over its 60 s limit'}
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dtlive.alerts.notices import alert_from_dict


def run_job(analysis: str, alert: dict, params: dict, history_path: str | None, ledger_url: str | None,
            artifacts_dir: str) -> dict:
    """Worker-side entry: run one canned analysis, save its Dataset as NetCDF, return a JSON-ready record.

    Every attempt writes into a directory of its own under ``artifacts_dir`` (UTC time, pid, random
    suffix), and every file appears there complete (written under a temporary name, then renamed), so a
    re-run never reads or overwrites another attempt's files.

    >>> import tempfile
    >>> from dtlive.alerts.notices import alert_to_dict, parse_notice
    >>> notice = b'{"mission": "IceCube", "id": "7", "trigger_time": "2024-05-01T12:00:00Z"}'
    >>> alert = alert_to_dict(parse_notice(notice))
    >>> tmp = tempfile.mkdtemp()
    >>> rec = run_job("rate_excess", alert, {"background_s": 60.0}, f"{tmp}/history", f"sqlite:///{tmp}/ledger.sqlite",
    ...               f"{tmp}/artifacts")
    >>> rec["name"], rec["summary"]["status"], rec["provenance"]["params"]["background_s"]
    ('rate_excess', 'no_data', 60.0)
    >>> [Path(a).name for a in rec["artifacts"]], Path(rec["artifacts"][0]).parent.name == rec["attempt"]
    (['rate_excess.nc'], True)
    """
    import os
    import uuid

    from dtlive.alerts.analyses import AnalysisContext, get_analysis
    from dtlive.storage.history import HistoryStore
    from dtlive.storage.ledger import Ledger, RetryingLedger

    fn = get_analysis(analysis)
    attempt = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # no connection until the analysis asks the ledger something; then it waits out an outage (within its time limit)
    ledger = RetryingLedger(Ledger(ledger_url, migrate=False))
    ctx = AnalysisContext(history=HistoryStore(history_path), ledger=ledger,
                          artifacts_dir=Path(artifacts_dir) / attempt, params=params, now=time.time())
    ctx.artifacts_dir.mkdir(parents=True, exist_ok=False)
    result = fn(alert_from_dict(alert), ctx)
    artifacts = [str(a) for a in result.artifacts]
    if result.data is not None:
        path = ctx.artifacts_dir / f"{analysis}.nc"
        data = result.data.copy()
        data.attrs["provenance"] = json.dumps(result.provenance, default=str)
        data.attrs["attempt"] = attempt
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        data.to_netcdf(tmp)
        os.replace(tmp, path)
        artifacts.append(str(path))
    return {"name": result.name, "version": result.version, "summary": result.summary,
            "provenance": result.provenance, "artifacts": artifacts, "attempt": attempt}


def failure_record(analysis: str, state: str, error: str | None) -> dict:
    """The record of a job that ``failed`` or ``timed_out``: status error, the reason in one line (the last of the
    traceback), no artifacts, the whole error in the provenance.

    >>> error = "Traceback (most recent call last):\\n  ...\\nValueError: no windows"
    >>> rec = failure_record("rate_excess", "failed", error)
    >>> rec["name"], rec["version"], rec["summary"], rec["artifacts"]
    ('rate_excess', '1', {'status': 'error', 'reason': 'failed: ValueError: no windows'}, [])
    """
    from dtlive.alerts.analyses import get_analysis

    try:
        version = get_analysis(analysis).version
    except KeyError:  # not known in this process
        version = ""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    reason = f"{state.replace('_', ' ')}: {lines[-1] if lines else 'no reason given'}"
    return {"name": analysis, "version": version, "summary": {"status": "error", "reason": reason[:500]},
            "provenance": {"analysis": analysis, "version": version, "state": state, "error": (error or "")[-2000:]},
            "artifacts": [], "attempt": ""}
