"""Binder, reproduced without Docker: what repo2docker does with binder/, step by step.

A copy of the repository (the files git would hand to Binder), a FRESH virtual environment with
``pip install -r binder/requirements.txt`` run from the repository root (as repo2docker does), then
``binder/postBuild``, then ``binder/start`` with a command that executes the quickstart notebook
(``jupyter nbconvert --execute``, standing in for the notebook server). The notebook must find the stack that
``binder/start`` started (nothing of its own), and show live windows; the alert loop must inject notices.
Everything the stack started is stopped at the end (found by a unique tag in its environment).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from processes import kill_tagged

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def repository_copy(dest: Path) -> Path:
    """The files of the working tree that git tracks or would track (no .venv, no build output)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def notebook_text(path: Path) -> str:
    nb = json.loads(path.read_text())
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                parts.append("".join(out["text"]))
            elif out["output_type"] in ("execute_result", "display_data"):
                parts.append("".join(out.get("data", {}).get("text/plain", "")))
            elif out["output_type"] == "error":
                parts.append(f"ERROR {out['ename']}: {out['evalue']}")
    return "\n".join(parts)


def test_binder_files_are_what_repo2docker_expects():
    binder = ROOT / "binder"
    assert (binder / "requirements.txt").read_text().split("\n")[-2].strip() == ".[all]"  # the project, every extra
    assert (binder / "runtime.txt").read_text().strip().startswith("python-3.1")
    for script in ("postBuild", "start"):
        assert os.access(binder / script, os.X_OK), f"binder/{script} must be executable"
        assert (binder / script).read_text().startswith("#!/bin/bash")
    assert 'exec "$@"' in (binder / "start").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "?labpath=notebooks%2F01-quickstart.ipynb" in readme and "badge_logo.svg" in readme


def test_binder_setup_in_a_fresh_environment_runs_the_quickstart_live(tmp_path):
    repo = repository_copy(tmp_path / "repo")
    venv, home = tmp_path / "venv", tmp_path / "home"
    home.mkdir()
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("DTLIVE_", "KAFKA_", "VIRTUAL_ENV", "PYTHONPATH", "JUPYTER", "IPYTHONDIR"))}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          "-r", "binder/requirements.txt"], cwd=repo, env=base_env, capture_output=True, text=True,
                         timeout=900)
    assert pip.returncode == 0, pip.stderr[-4000:]
    installed = time.monotonic() - t0

    tag = uuid.uuid4().hex[:8]
    marker = f"DTLIVE_BINDER_TEST_TAG={tag}"
    env = {"HOME": str(home), "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "DTLIVE_BINDER_TEST_TAG": tag, "DTLIVE_BINDER_BROKER_PORT": str(free_port()),  # never 9092 in tests
           "DTLIVE_BINDER_FIRST_ALERT_S": "2", "DTLIVE_BINDER_ALERT_EVERY_S": "3"}
    state = home / ".dtlive" / "state"
    try:
        post = subprocess.run(["bash", "binder/postBuild"], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=120)
        assert post.returncode == 0, post.stdout + post.stderr
        assert "Tansu broker at" in post.stdout

        t1 = time.monotonic()
        run = subprocess.run(["binder/start", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                              "--ExecutePreprocessor.timeout=120", "--output-dir", str(tmp_path / "out"),
                              "notebooks/01-quickstart.ipynb"],
                             cwd=repo, env=env, capture_output=True, text=True, timeout=240)
        started = (state / "binder-start.log").read_text() if (state / "binder-start.log").exists() else ""
        assert run.returncode == 0, f"{run.stderr[-3000:]}\n--- binder-start.log\n{started[-3000:]}"
        ran = time.monotonic() - t1
        assert "dtlive on Binder: Kafka at 127.0.0.1:" in started, started
        assert "started: ['alerts', 'emulator', 'processor', 'recorder'] | reused: ['broker']" in started, started

        text = notebook_text(tmp_path / "out" / "01-quickstart.ipynb")
        bootstrap = (state / "binder-bootstrap").read_text()
        assert bootstrap == f"127.0.0.1:{env['DTLIVE_BINDER_BROKER_PORT']}"
        assert f"Kafka at {bootstrap} | started: nothing" in text, text  # the notebook reused the Binder stack
        assert "ERROR" not in text, text
        windows = re.search(r"windows so far: (\d+)", text)
        assert windows and int(windows.group(1)) > 0, text

        # the alert loop injects the example notices (Binder lets no real alert in)
        deadline = time.monotonic() + 20
        log = state / "binder-alerts.log"
        while time.monotonic() < deadline and not (log.exists() and "icecube" in log.read_text()):
            time.sleep(0.5)
        assert log.exists() and "sent" in log.read_text() and "superk" in log.read_text(), \
            log.read_text() if log.exists() else "no alert log"
        print(f"fresh environment installed in {installed:.0f} s; binder/start + quickstart in {ran:.0f} s")
    finally:
        left = kill_tagged(marker)
        print(f"stopped {len(left)} processes of the Binder stack")
