"""The documentation site builds with ``scripts/docs.sh`` (every Sphinx warning an error), with the notebooks
executed against a stack of their own (a real embedded broker, as on Binder), and holds what it promises: the
guides, the command reference generated from the parser, the API reference from the docstrings, the message
contracts from the schema files, the notebooks with their outputs; the stack is gone afterwards.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from datafiles import RUN_CSV
from processes import kill_tagged, tagged_pids

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


@pytest.mark.timeout(1900)  # ~4 min on a quiet machine; far more when it is shared
def test_the_site_builds_strictly_with_executed_notebooks(tmp_path):
    out = tmp_path / "html"
    marker = f"DOCS_TEST_TAG={uuid.uuid4().hex[:8]}"  # inherited by the notebooks' stack: found, never left over
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DTLIVE_", "KAFKA_"))}
    env.update({"PYTHON": sys.executable, "DTLIVE_DATA_DIR": str(RUN_CSV.parent), "TMPDIR": str(tmp_path),
                marker.split("=")[0]: marker.split("=")[1]})
    started = time.monotonic()
    try:
        run = subprocess.run(["bash", "scripts/docs.sh", "--out", str(out)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=1800)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 15  # scripts/docs.sh stopped the stack on its way out
        while tagged_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = tagged_pids(marker)
    finally:
        kill_tagged(marker)
    assert run.returncode == 0, run.stdout[-3000:] + "\n" + run.stderr[-6000:]
    print(f"docs built in {elapsed:.0f} s")

    def page(name: str) -> str:
        path = out / name
        assert path.is_file(), f"{name} missing; built: {sorted(p.name for p in out.glob('*.html'))}"
        return re.sub(r"\s+", " ", html.unescape(path.read_text()))

    index = page("index.html")
    assert "https://mybinder.org/v2/gh/" in index and "labpath=notebooks%2F01-quickstart.ipynb" in index
    for name in ("getting-started.html", "guides/shifter.html", "guides/analyst.html", "guides/operator.html",
                 "architecture.html", "scaling.html", "performance.html"):
        page(name)

    cli = page("cli.html")  # from build_parser(): every command and its flags
    for text in ("process", "--no-reconstruction", "emulate", "--from-beginning", "dashboard", "reference"):
        assert text in cli, text

    api = page("api/dtlive.core.html")  # from the docstrings
    assert "EventTimeWindows" in api and "dtlive.core.windows.EventTimeWindows" in api
    assert "Watermark" in api or "watermark" in api
    assert "Processor" in page("api/dtlive.streaming.html")
    assert "load_run591" in page("api/dtlive.core.html")
    assert "EventTimeWindows" in page("api/index.html")

    contracts = page("contracts.html")  # from the schema files
    for text in ("dtlive.monitor/1", "dtlive.status/1", "dtlive.deadletter/1", "window.first_orbit",
                 "dtlive/core/schemas/quality-2.schema.json"):
        assert text in contracts, text

    # the notebooks with the outputs of this build's run: run 591 found through DTLIVE_DATA_DIR
    static = page("notebooks/02-static-batch.html")
    assert "total hits: 159,616" in static and "reading run 591 from" in static
    assert re.search(r"windows so far: [1-9]", page("notebooks/01-quickstart.html"))
    assert re.search(r"run 591: [\d,]+ events, [\d,]+ with a trigger word", page("notebooks/07-reconstruction.html"))
    assert "analyses published: ['rate_excess', 'snapshot']" in page("notebooks/06-alerts.html")

    # the notebooks' stack is stopped, its temporary folder removed
    assert not left, left
    assert not list(tmp_path.glob("dtlive-docs.*"))
