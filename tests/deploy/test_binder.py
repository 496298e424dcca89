"""Binder, reproduced without Docker: what repo2docker does with binder/, step by step.

A copy of the repository (the files git would hand to Binder), a FRESH virtual environment with
``pip install -r binder/requirements.txt`` run from the repository root (as repo2docker does), then
``binder/postBuild``, then ``binder/start`` with a command that executes every notebook in ``notebooks/``
(``jupyter nbconvert --execute``, standing in for the notebook server). As on Binder, the real data is not there
(no ``DTLIVE_DATA_DIR``, no folder beside the repository): every notebook must run to the end, those that show
run 591 with the simulator in its place and a note saying so. The quickstart must find the stack that
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


@pytest.mark.timeout(2400)  # a fresh environment, then seven notebooks
def test_binder_setup_in_a_fresh_environment_runs_every_notebook(tmp_path):
    repo = repository_copy(tmp_path / "repo")
    venv, home = tmp_path / "venv", tmp_path / "home"
    home.mkdir()
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("DTLIVE_", "KAFKA_", "VIRTUAL_ENV", "PYTHONPATH", "JUPYTER", "IPYTHONDIR"))}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # --no-compile: the .pyc files are written at the first import instead (the same packages, a third quicker)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          "--no-compile", "-r", "binder/requirements.txt"], cwd=repo, env=base_env,
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-4000:]
    installed = time.monotonic() - t0

    tag = uuid.uuid4().hex[:8]
    marker = f"DTLIVE_BINDER_TEST_TAG={tag}"
    env = {"HOME": str(home), "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "DTLIVE_BINDER_TEST_TAG": tag, "DTLIVE_BINDER_BROKER_PORT": str(free_port()),  # never 9092 in tests
           # both example notices go out within 22 s, long before the notebooks end; each notice is a CLI run and
           # the listener's analyses: one every 3 s cost ~1.5 min of CPU over the whole suite's run of this test
           "DTLIVE_BINDER_FIRST_ALERT_S": "2", "DTLIVE_BINDER_ALERT_EVERY_S": "20"}
    state = home / ".dtlive" / "state"
    try:
        post = subprocess.run(["bash", "binder/postBuild"], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=120)
        assert post.returncode == 0, post.stdout + post.stderr
        assert "Tansu broker at" in post.stdout

        notebooks = sorted(p.name for p in (repo / "notebooks").glob("[0-9][0-9]-*.ipynb"))
        assert len(notebooks) >= 7, notebooks
        assert not (tmp_path / "shared").exists()  # nothing beside the repository, as on Binder
        t1 = time.monotonic()
        run = subprocess.run(["binder/start", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                              "--ExecutePreprocessor.timeout=180", "--output-dir", str(tmp_path / "out"),
                              *(f"notebooks/{name}" for name in notebooks)],
                             cwd=repo, env=env, capture_output=True, text=True, timeout=1000)
        started = (state / "binder-start.log").read_text() if (state / "binder-start.log").exists() else ""
        assert run.returncode == 0, f"{run.stderr[-3000:]}\n--- binder-start.log\n{started[-3000:]}"
        ran = time.monotonic() - t1
        assert "dtlive on Binder: Kafka at 127.0.0.1:" in started, started
        assert "started: ['alerts', 'emulator', 'processor', 'recorder'] | reused: ['broker']" in started, started

        texts = {name: notebook_text(tmp_path / "out" / name) for name in notebooks}
        for name, text in texts.items():
            assert text and "ERROR" not in text, f"{name}:\n{text[-3000:]}"
        text = texts["01-quickstart.ipynb"]
        bootstrap = (state / "binder-bootstrap").read_text()
        assert bootstrap == f"127.0.0.1:{env['DTLIVE_BINDER_BROKER_PORT']}"
        assert f"Kafka at {bootstrap} | started: nothing" in text, text  # the notebook reused the Binder stack
        windows = re.search(r"windows so far: (\d+)", text)
        assert windows and int(windows.group(1)) > 0, text
        for name in ("02-static-batch.ipynb", "04-data-vs-simulation.ipynb", "07-reconstruction.ipynb"):
            assert "NOTE: run 591 was not looked for (no path given, data_dir / DTLIVE_DATA_DIR not set): " \
                   "showing simulation (" in texts[name], f"{name}:\n{texts[name][:2000]}"
        assert "| started: nothing" in texts["03-own-streamz-graph.ipynb"]  # the Binder stack, reused
        assert "| listener: reused" in texts["06-alerts.ipynb"]
        assert "analyses published: ['rate_excess', 'snapshot']" in texts["06-alerts.ipynb"], texts["06-alerts.ipynb"]

        # the alert loop injects the example notices (Binder lets no real alert in)
        deadline = time.monotonic() + 20
        log = state / "binder-alerts.log"
        while time.monotonic() < deadline and not (log.exists() and "icecube" in log.read_text()):
            time.sleep(0.5)
        assert log.exists() and "sent" in log.read_text() and "superk" in log.read_text(), \
            log.read_text() if log.exists() else "no alert log"
        print(f"fresh environment installed in {installed:.0f} s; binder/start + {len(notebooks)} notebooks in "
              f"{ran:.0f} s")
    finally:
        left = kill_tagged(marker)
        print(f"stopped {len(left)} processes of the Binder stack")
