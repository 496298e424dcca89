"""A processing run recorded by a child process (dtlive.storage.run_record): start, heartbeats and end in a real
SQLite or PostgreSQL ledger, the parent's pid and host, a killed parent, a dead child, signals to the group."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from waiting import wait_for

from dtlive.config import load_config
from dtlive.storage.ledger import Ledger
from dtlive.storage.run_record import ChildRun, start_fields

ROOT = Path(__file__).resolve().parents[2]


def exited(pid: int) -> bool:
    """Whether process ``pid`` is gone or a zombie (read from /proc; it may vanish while being read)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return True


def child_env(db: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "DTLIVE_DB": db}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    url, _ = request.getfixturevalue("pg_db")
    return url


def test_the_child_records_the_start_with_this_process_as_the_run_s_and_the_end_on_stop(db):
    cfg = load_config({"group_id": "proc-child"}, env={})
    run = ChildRun("run-child-1", env=child_env(db), kind="processing", config=cfg, inputs=[{"topic": "t"}])
    ledger = Ledger(db)
    shown = wait_for(lambda: next((r for r in ledger.runs() if r["run_id"] == "run-child-1"), None), 60,
                     "the run started by the child")
    assert (shown["status"], shown["pid"], shown["host"]) == ("running", os.getpid(), socket.gethostname())
    assert (shown["processor"], shown["config_hash"]) == ("proc-child", cfg.config_hash)
    assert shown["config"]["window_s"] == cfg.window_s
    assert run.stop("finished", timeout_s=10) is True
    assert run.child is not None and run.child.returncode == 0
    assert ledger.run("run-child-1")["status"] == "finished"


def test_a_killed_parent_leaves_the_run_running_then_died_and_its_child_exits(tmp_path):
    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    code = textwrap.dedent("""
        import sys, time
        from dtlive.storage.run_record import ChildRun
        run = ChildRun("run-orphan", config={"window_s": 2.0}, processor="p")
        print(run.child.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], env=child_env(db), stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        child_pid = int(parent.stdout.readline())
        ledger = wait_for(lambda: (tmp_path / "ledger.sqlite").exists() and Ledger(db), 60, "the child's ledger")
        wait_for(lambda: any(r["run_id"] == "run-orphan" for r in ledger.runs()), 60, "the run recorded")
        assert ledger.run("run-orphan")["pid"] == parent.pid
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
    wait_for(lambda: exited(child_pid), 10, "the child to exit once its parent is gone")
    assert ledger.run("run-orphan")["status"] == "died"  # its pid is gone: shown so, no end recorded by the child


def test_the_child_ignores_interrupt_and_terminate_and_a_dead_child_s_end_is_recorded_by_the_parent(tmp_path):
    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    run = ChildRun("run-signals", env=child_env(db), config={"window_s": 2.0}, processor="p")
    assert run.child is not None
    ledger = wait_for(lambda: (tmp_path / "ledger.sqlite").exists() and Ledger(db), 60, "the child's ledger")
    wait_for(lambda: any(r["run_id"] == "run-signals" for r in ledger.runs()), 60, "the run recorded")
    for sig in (signal.SIGINT, signal.SIGTERM):  # a terminal's Ctrl-C, a kill of the process group
        run.child.send_signal(sig)
    with pytest.raises(subprocess.TimeoutExpired):
        run.child.wait(1.0)
    run.child.kill()  # now it is gone for good: the parent records the end itself
    run.child.wait(10)
    assert run.stop("failed", timeout_s=10) is True
    shown = ledger.run("run-signals")
    assert (shown["status"], shown["pid"]) == ("failed", os.getpid())


def test_keeping_a_run_in_an_up_to_date_ledger_imports_neither_alembic_nor_numpy(db):
    """The child's CPU is bookkeeping its service pays for: in a ledger already at the newest schema it needs
    SQLAlchemy and the ledger's models only (~0.4 s of CPU; ~0.8 s with Alembic's migration check and numpy)."""
    Ledger(db).close()  # migrated to the newest schema
    lines = [json.dumps({"run_id": "run-light", "start": start_fields(kind="processing", inputs=[])}),
             json.dumps({"stop": "finished", "timeout_s": 10})]
    code = ("import sys; from dtlive.storage import run_record; run_record.main(); "
            "print(sorted({'alembic', 'numpy', 'pandas', 'xarray'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], input="\n".join(lines) + "\n", capture_output=True, text=True,
                         env=child_env(db), timeout=60, check=True)
    answer, loaded = out.stdout.splitlines()
    assert loaded == "[]"
    assert json.loads(answer)["stopped"] is True and 0 < json.loads(answer)["cpu_s"] < 30  # its own CPU, reported
    assert Ledger(db).run("run-light")["status"] == "finished"


@pytest.mark.parametrize("answer,stopped,cpu_s", [('{"stopped": true, "cpu_s": 0.25}', True, 0.25),
                                                  ('{"stopped": true, "cpu_s": "lots"}', True, None),
                                                  ('{"stopped": true}', True, None)])
def test_the_child_s_answer_gives_the_stop_and_a_cpu_time_only_when_it_is_a_number(tmp_path, answer, stopped, cpu_s):
    run = ChildRun("run-answer", env=child_env(f"sqlite:///{tmp_path / 'ledger.sqlite'}"), kind="processing")
    assert run.child is not None
    run.child.kill()  # stands in for the real child: one that answers as given
    run.child.wait()
    run.child = subprocess.Popen([sys.executable, "-c", f"import sys; sys.stdin.readline(); print({answer!r})"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert run.stop("finished", timeout_s=10) is stopped
    assert run.cpu_s == cpu_s
