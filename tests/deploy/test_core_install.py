"""``pip install dtlive`` (the core, no extras) in a FRESH virtual environment does what a streamz user needs.

A copy of the repository is installed into a new virtual environment with pip configured as on this machine (as
``scripts/setup.sh`` installs). Then: none of the extras' packages is there (SQLAlchemy, Alembic, pyarrow, Dask,
ipywidgets, bqplot, Voilà, JupyterLab, papermill); ``dtlive broker`` runs the embedded broker, ``dtlive emulate``
replays the real run-591 file onto it, and a user's own streamz graph of dtlive nodes (found through streamz's
entry points, without importing dtlive) turns it into windows; ``dtlive process`` gives the same windows, saying in
one line that the run goes unrecorded without the ``ledger`` extra; ``ensure_stack()`` starts what the core can run
and names the extras of the rest; the features of missing extras say so in one line naming the extra.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from datafiles import RUN_CSV
from faults import free_port
from processes import kill_tagged

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the benchmarks package lives next to tests/

from benchmarks.install_size import clean_env, fresh_venv, pip_install, project_copy  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # a fresh install: minutes on a busy machine

RUN_ROWS = 159_616  # rows of run 591, every one a hit
NOT_IN_THE_CORE = ("sqlalchemy", "alembic", "psycopg", "pyarrow", "dask", "distributed", "ipywidgets", "bqplot",
                   "ipykernel", "voila", "jupyterlab", "jupyter_server", "papermill", "jupyterhub")

# what a user writes: streamz's Stream gets dtlive's nodes from the entry points of the installed package
USERS_GRAPH = r'''
import importlib.util, json, sys
from streamz import Stream

present = [m for m in sys.argv[3].split(",") if importlib.util.find_spec(m) is not None]
assert "dtlive" not in sys.modules
src = Stream.dt_from_kafka_batched_consumer(sys.argv[2], {"bootstrap.servers": sys.argv[1],
                                                          "auto.offset.reset": "earliest"})
windows = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0.5)
out = windows.dt_histogram().map(lambda ds: [int(ds.attrs["window_id"]), int(ds.total_hits)]).sink_to_list()
polls = 0
while polls < 300 and (src.poll(timeout=2.0) or polls == 0):
    polls += 1
windows.flush()
src.close()
print(json.dumps({"present": present, "windows": out}))
'''

STACK = r'''
import json
from dtlive.deploy.stack import ensure_stack, fresh_windows, stop_stack
stack = ensure_stack(rate=1000, fmt="daq64", wait_for_window_s=30)
fresh = fresh_windows(stack.bootstrap, "dt.monitor.stack", within_s=60)
print(json.dumps({"started": sorted(stack.started), "reused": stack.reused, "left_out": stack.left_out,
                  "fresh": fresh, "stopped": [str(s) for s in stop_stack()]}))
'''


def run(cmd: list, env: dict, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=timeout, **kw)


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"dtlive broker did not listen on {port} (exit {proc.poll()})")


def test_the_core_installs_without_the_extras_and_runs_dtlive_nodes_on_the_embedded_broker(tmp_path):
    project = project_copy(tmp_path / "project")
    python = fresh_venv(tmp_path / "venv")
    seconds, _ = pip_install(python, ".", cwd=project, compile_bytecode=False)  # what is installed is the same
    bindir, home = python.parent, tmp_path / "home"
    home.mkdir()
    tag = uuid.uuid4().hex[:12]
    env = clean_env(HOME=str(home), PATH=f"{bindir}:/usr/local/bin:/usr/bin:/bin", LANG="C.UTF-8",
                    DTLIVE_CORE_TEST_TAG=tag, DTLIVE_STATE_DIR=str(home / "state"))
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = subprocess.Popen([str(bindir / "dtlive"), "broker", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, broker)
        sent = run([bindir / "dtlive", "emulate", RUN_CSV, "--bootstrap", bootstrap, "--rate", "max",
                    "--format", "csv-batch", "--rows-per-message", "1000", "--topic", "dt.hits"], env)
        assert sent.returncode == 0 and f"sent {RUN_ROWS} rows" in sent.stderr, sent.stderr[-2000:]

        graph = run([python, "-c", USERS_GRAPH, bootstrap, "dt.hits", ",".join(NOT_IN_THE_CORE)], env, cwd=tmp_path)
        assert graph.returncode == 0, graph.stderr[-3000:]
        found = json.loads(graph.stdout.strip().splitlines()[-1])
        assert found["present"] == [], f"installed with the core: {found['present']}"
        windows = found["windows"]
        assert len(windows) >= 5 and sum(n for _, n in windows) == RUN_ROWS, windows

        proc = run([bindir / "dtlive", "process", "--bootstrap", bootstrap, "--from-beginning", "--until-end"], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        notes = [line for line in proc.stderr.splitlines() if "extra" in line]
        assert notes == ["dtlive process: the run is not recorded: the ledger needs the 'ledger' extra: "
                         "pip install 'dtlive[ledger]' (not installed: sqlalchemy, alembic); "
                         "--no-ledger leaves this note out"], proc.stderr
        assert f"published {len(windows)} windows" in proc.stderr, proc.stderr

        nc = tmp_path / "results.nc"
        res = run([bindir / "dtlive", "results", "--bootstrap", bootstrap, "--last", "100", "--netcdf", nc], env)
        assert res.returncode == 0, res.stderr[-3000:]
        totals = run([python, "-c", "import sys, xarray as xr; ds = xr.open_dataset(sys.argv[1]); "
                      "print([[int(w), int(t)] for w, t in zip(ds.window_id.values, ds.total_hits.values)])", nc],
                     env)
        assert totals.returncode == 0, totals.stderr[-3000:]
        assert json.loads(totals.stdout) == windows  # the processor's windows are the user's graph's

        for command, extra, modules in ((["dashboard"], "dashboard", "ipywidgets, bqplot, ipykernel, voila"),
                                        (["runs"], "ledger", "sqlalchemy, alembic, pyarrow"),
                                        (["alerts", "listen"], "alerts",
                                         "sqlalchemy, alembic, pyarrow, papermill, nbformat"),
                                        (["process", "--dask", "local:1", "--no-ledger"], "dask", "dask, distributed")):
            out = run([bindir / "dtlive", *command, "--bootstrap", bootstrap], env, timeout=60)
            name = " ".join(c for c in command if not c.startswith("-") and ":" not in c)
            assert out.returncode == 1 and out.stderr.splitlines() == [
                f"dtlive {name} needs the '{extra}' extra: pip install 'dtlive[{extra}]' (not installed: {modules})"
            ], out.stderr
        widgets = run([python, "-c", "import dtlive; dtlive.Dashboard"], env)
        assert widgets.returncode == 1 and widgets.stderr.splitlines()[-1] == (
            "dtlive.service.extras.MissingExtra: dtlive.ui.widgets needs the 'dashboard' extra: "
            "pip install 'dtlive[dashboard]' (not installed: ipywidgets, bqplot, ipykernel, voila)"), widgets.stderr

        # a notebook's ensure_stack(): the processor and a simulated DAQ run; recorder and listener are named
        stack_env = {**env, "DTLIVE_BOOTSTRAP": bootstrap, "DTLIVE_HITS_TOPIC": "dt.hits.stack",
                     "DTLIVE_MONITOR_TOPIC": "dt.monitor.stack", "DTLIVE_GROUP_ID": "stack-processor"}
        stack = run([python, "-c", STACK], stack_env, timeout=180)
        assert stack.returncode == 0, stack.stderr[-3000:]
        got = json.loads(stack.stdout.strip().splitlines()[-1])
        assert got["started"] == ["emulator", "processor"] and got["reused"] == ["broker"], got
        assert got["fresh"], got
        assert got["left_out"] == {
            "recorder": "dtlive record needs the 'ledger' extra: pip install 'dtlive[ledger]' "
                        "(not installed: sqlalchemy, alembic, pyarrow)",
            "alerts": "dtlive alerts listen needs the 'alerts' extra: pip install 'dtlive[alerts]' "
                      "(not installed: sqlalchemy, alembic, pyarrow, papermill, nbformat)"}, got
        print(f"core installed in {seconds:.0f} s")
    finally:
        broker.terminate()
        try:
            broker.wait(15)
        except subprocess.TimeoutExpired:
            broker.kill()
        kill_tagged(f"DTLIVE_CORE_TEST_TAG={tag}")
