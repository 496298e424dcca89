"""Install time and size of dtlive's core and of ``dtlive[all]``, each in a fresh virtual environment.

    .venv/bin/python -m benchmarks.install_size                  # core, then all -> results/install_size.json
    .venv/bin/python -m benchmarks.install_size --only core --repeat 2

Each case: ``python -m venv`` (pip only), then ``pip install <copy>[extras]`` from a copy of the repository (the
files git tracks or would track), timed from pip's start to its exit. Size: ``du`` of the environment's
site-packages after the install, and what the install added to the empty environment's (pip itself). pip uses
the machine's configuration (pip.conf, ``PIP_*`` variables: indexes, local wheels, its cache), as
``scripts/setup.sh`` does, so the first run of a case may download and later runs install from the cache: each
run is reported, in order. The distributions installed are listed too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "install_size.json"
CASES = {"core": "", "all": "[all]"}
_OWN_ENV = ("DTLIVE_", "KAFKA_", "VIRTUAL_ENV", "PYTHONPATH", "JUPYTER", "IPYTHONDIR")


def clean_env(**extra: str) -> dict[str, str]:
    """This process' environment without dtlive's, Kafka's, virtualenv and Jupyter settings (pip's are kept)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_ENV)}
    env.update(extra)
    return env


def project_copy(dest: Path) -> Path:
    """The files of the working tree that git tracks or would track (no .venv, no build output), under ``dest``."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def fresh_venv(dest: Path) -> Path:
    """A new virtual environment at ``dest`` (pip only); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(dest)], check=True, timeout=180, env=clean_env())
    return dest / "bin" / "python"


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True, timeout=60, env=clean_env())
    return Path(out.stdout.strip())


def disk_mb(path: Path) -> float:
    """Disk usage of ``path`` in MB (``du -sk``)."""
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.split()[0]) / 1024


def pip_install(python: Path, target: str, cwd: Path, timeout: float = 1200,
                compile_bytecode: bool = True) -> tuple[float, str]:
    """``pip install target`` with ``python``; returns (seconds, pip's stderr). Raises when pip fails.

    ``compile_bytecode=False`` leaves the ``.pyc`` files to the first import of each module (``--no-compile``:
    about a third quicker; what is installed is the same).
    """
    t0 = time.monotonic()
    flags = [] if compile_bytecode else ["--no-compile"]
    run = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *flags, target],
                         cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - t0
    if run.returncode != 0:
        raise RuntimeError(f"pip install {target} failed ({run.returncode}):\n{run.stderr[-4000:]}")
    return took, run.stderr


def distributions(python: Path) -> list[str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                         capture_output=True, text=True, check=True, timeout=120, env=clean_env())
    return sorted(f"{d['name']}=={d['version']}" for d in json.loads(out.stdout))


def measure(case: str, work: Path, project: Path, timeout: float = 1200) -> dict:
    """One fresh environment with dtlive ``case`` installed from ``project``: time, sizes, distributions."""
    python = fresh_venv(work / f"venv-{case}")
    site = site_packages(python)
    empty = disk_mb(site)
    cache = pip_cache_mb(python)
    seconds, _ = pip_install(python, f".{CASES[case]}", cwd=project, timeout=timeout)
    dists = distributions(python)
    size = disk_mb(site)
    return {"case": case, "install_s": round(seconds, 1), "site_packages_mb": round(size, 1),
            "added_mb": round(size - empty, 1), "empty_venv_site_packages_mb": round(empty, 1),
            "pip_cache_mb_before": cache, "distributions": len(dists), "installed": dists}


def pip_cache_mb(python: Path) -> float | None:
    """Size of pip's cache (None when it has none yet): a full cache means no download."""
    out = subprocess.run([str(python), "-m", "pip", "cache", "dir"], capture_output=True, text=True, timeout=60,
                         env=clean_env())
    path = Path(out.stdout.strip())
    return round(disk_mb(path), 1) if out.returncode == 0 and path.is_dir() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(CASES), help="cases, comma-separated (core, all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each case (the first may fill pip's cache)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds one pip install may take (default 1200)")
    args = ap.parse_args(argv)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dtlive-install-") as tmp:
        project = project_copy(Path(tmp) / "project")
        for case in args.only.split(","):
            for i in range(args.repeat):
                work = Path(tmp) / f"{case}-{i}"
                r = measure(case, work, project, timeout=args.timeout)
                shutil.rmtree(work, ignore_errors=True)
                runs.append({**r, "run": i + 1, "loadavg_after": os.getloadavg()[0]})
                print(f"{case} run {i + 1}: {r['install_s']:.1f} s, site-packages {r['site_packages_mb']:.0f} MB "
                      f"({r['added_mb']:.0f} MB added), {r['distributions']} distributions", file=sys.stderr)
                write(runs)  # after every run: a later one that fails keeps what was measured
    return 0


def write(runs: list[dict]) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "python": sys.version.split()[0], "runs": runs}, indent=1))
    print(f"written {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
