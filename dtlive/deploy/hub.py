"""JupyterHub for a detector group: the pieces ``jupyterhub_config.py`` is made of, and the service runner.

The hub runs the dtlive stack as JupyterHub-managed services (the embedded broker unless an external Kafka
is configured, the processor, the recorder, the alert listener and, in demo mode only, the simulated DAQ),
gives every user's server the stream's address, and starts users in a copy of the notebooks.

Settings, read from the hub's environment (:func:`settings_from_env`):

=============================  ==========================================================================
``DTLIVE_HUB_DEMO=1``          demo mode: any name and password log in (DummyAuthenticator), users' servers run
                               as the hub's own user in per-user homes (SimpleLocalProcessSpawner), the
                               simulated DAQ runs. Refused unless the hub and its proxy bind to loopback.
``DTLIVE_HUB_BIND_URL``        where the public proxy listens (default ``http://127.0.0.1:8000`` in demo mode,
                               ``http://:8000`` otherwise)
``DTLIVE_BOOTSTRAP``           an external Kafka: no broker service, everyone uses this one (``KAFKA_*`` settings
                               pass through, as for every dtlive command)
``DTLIVE_HUB_BROKER_PORT``     loopback port of the embedded broker service (default 9092)
``DTLIVE_STATE_DIR``           the stack's shared state directory (default ``./dtlive-state``)
``DTLIVE_DB``                  the ledger, e.g. ``postgresql://dtlive@db/dtlive`` (default: SQLite in the state
                               directory)
``DTLIVE_HUB_NOTEBOOKS``       notebooks copied into each user's ``~/notebooks`` (default: the repository's)
``DTLIVE_HUB_HOMES``           demo mode: where users' homes are made (default ``<state>/homes``)
``DTLIVE_HUB_GROUP``           PAM mode: the Unix group whose members may log in (default ``dtlive``)
``DTLIVE_HUB_ADMINS``          comma-separated admin user names
``DTLIVE_HUB_CULL_TIMEOUT``    seconds of inactivity before the idle culler stops a server (default 3600)
``DTLIVE_HUB_EMULATOR_RATE``   rows/s of the demo's simulated DAQ (default 1000)
``DTLIVE_HUB_API_TOKEN``       optional: a token for operators' scripts (service ``dtlive-operator``: manage
                               users, servers and tokens through the REST API)
=============================  ==========================================================================

Every other ``DTLIVE_*`` and ``KAFKA_*`` variable of the hub (topics, window length, ...) is passed on to the
services and to every user's server, so all of them see the same stream.

``python -m dtlive.deploy.hub run NAME -- ARGS...`` is the service runner the hub starts: it waits (bounded) until
Kafka answers, records its pid as ``NAME`` in the state directory's ``stack.json`` (so a notebook's
``dtlive.deploy.stack.ensure_stack()`` reuses the hub's stack instead of starting its own) and then becomes
``dtlive ARGS...`` (exec: same pid, signals go straight to dtlive).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the environment dtlive is installed in: dtlive, jupyterhub-singleuser
DEMO_BANNER = ("DEMO MODE &mdash; any user name and any password log in (DummyAuthenticator); every user's "
               "server runs as the hub's own user. For a try-out on this machine only: the hub listens on "
               "loopback and must never be exposed.")
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
OPERATOR_SCOPES = ["admin:users", "admin:servers", "tokens", "list:users", "read:users", "read:servers"]
SERVICE_ORDER = ("emulator", "processor", "recorder", "alerts", "broker")


class DemoModeError(RuntimeError):
    """Demo mode was asked for on a hub that is reachable from other machines.

    >>> try:
    ...     check_demo_allowed(HubSettings(demo=True, bind_url="http://0.0.0.0:8000"))
    ... except DemoModeError as e:
    ...     print(str(e).split(",")[0])
    DTLIVE_HUB_DEMO=1 lets anyone log in as anyone
    """


@dataclass
class HubSettings:
    """Everything the hub configuration depends on (see the module docstring).

    >>> s = HubSettings(bootstrap="kafka.lab:9092", state_dir=Path("/srv/dtlive"))
    >>> s.kafka, s.home_template, HubSettings(broker_port=9093).kafka
    ('kafka.lab:9092', '/srv/dtlive/homes/{username}', '127.0.0.1:9093')
    """

    demo: bool = False
    bind_url: str = "http://:8000"
    bootstrap: str | None = None  # external Kafka; None: the embedded broker service
    broker_port: int = 9092
    state_dir: Path = Path("dtlive-state")
    notebooks: Path = ROOT / "notebooks"
    homes: Path | None = None
    group: str = "dtlive"
    admins: set[str] = field(default_factory=set)
    cull_timeout: int = 3600
    emulator_rate: float = 1000.0
    api_token: str | None = None
    stream_env: dict[str, str] = field(default_factory=dict)  # DTLIVE_* / KAFKA_* passed to services and users

    @property
    def kafka(self) -> str:
        """The address every service and user server is given."""
        return self.bootstrap or f"127.0.0.1:{self.broker_port}"

    @property
    def home_template(self) -> str:
        return str((self.homes or self.state_dir / "homes") / "{username}")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def settings_from_env(env: Mapping[str, str] | None = None) -> HubSettings:
    """Read :class:`HubSettings` from the environment (``os.environ`` by default).

    >>> s = settings_from_env({"DTLIVE_HUB_DEMO": "1", "DTLIVE_STATE_DIR": "/tmp/s", "DTLIVE_WINDOW_S": "1"})
    >>> s.demo, s.bind_url, s.kafka, s.home_template
    (True, 'http://127.0.0.1:8000', '127.0.0.1:9092', '/tmp/s/homes/{username}')
    >>> s.stream_env["DTLIVE_WINDOW_S"], s.stream_env["DTLIVE_DB"]
    ('1', 'sqlite:////tmp/s/ledger.sqlite')
    """
    env = os.environ if env is None else env
    demo = _flag(env.get("DTLIVE_HUB_DEMO"))
    state = Path(env.get("DTLIVE_STATE_DIR") or "dtlive-state").absolute()
    s = HubSettings(
        demo=demo,
        bind_url=env.get("DTLIVE_HUB_BIND_URL") or ("http://127.0.0.1:8000" if demo else "http://:8000"),
        bootstrap=env.get("DTLIVE_BOOTSTRAP") or None,
        broker_port=int(env.get("DTLIVE_HUB_BROKER_PORT") or 9092),
        state_dir=state,
        notebooks=Path(env.get("DTLIVE_HUB_NOTEBOOKS") or ROOT / "notebooks"),
        homes=Path(env["DTLIVE_HUB_HOMES"]) if env.get("DTLIVE_HUB_HOMES") else None,
        group=env.get("DTLIVE_HUB_GROUP") or "dtlive",
        admins={a.strip() for a in (env.get("DTLIVE_HUB_ADMINS") or "").split(",") if a.strip()},
        cull_timeout=int(env.get("DTLIVE_HUB_CULL_TIMEOUT") or 3600),
        emulator_rate=float(env.get("DTLIVE_HUB_EMULATOR_RATE") or 1000),
        api_token=env.get("DTLIVE_HUB_API_TOKEN") or None,
    )
    passed = {k: v for k, v in env.items()
              if (k.startswith("DTLIVE_") and not k.startswith("DTLIVE_HUB_")) or k.startswith("KAFKA_")}
    passed.update({"DTLIVE_BOOTSTRAP": s.kafka, "DTLIVE_STATE_DIR": str(state)})
    passed.setdefault("DTLIVE_DB", f"sqlite:///{state / 'ledger.sqlite'}")
    passed.setdefault("DTLIVE_HISTORY", str(state / "history"))
    s.stream_env = passed
    return s


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is a loopback address (an empty host means every interface).

    >>> [is_loopback_url(u) for u in ("http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:8", "http://:8000",
    ...                               "http://0.0.0.0:8000", "http://10.0.0.2:8000")]
    [True, True, True, False, False, False]
    """
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_demo_allowed(settings: HubSettings, hub_bind_url: str = "http://127.0.0.1:8081") -> None:
    """Demo mode only when both the public proxy and the hub itself listen on loopback.

    >>> check_demo_allowed(HubSettings(demo=True, bind_url="http://127.0.0.1:8000"))  # loopback: allowed
    >>> try:
    ...     check_demo_allowed(HubSettings(demo=True, bind_url="http://127.0.0.1:8000"), hub_bind_url="http://:8081")
    ... except DemoModeError as e:
    ...     print(str(e).split(", so ")[1].split(". ")[0])
    the hub must listen on loopback (127.0.0.1), not 'http://:8081'
    """
    for what, url in (("public proxy (DTLIVE_HUB_BIND_URL)", settings.bind_url), ("hub", hub_bind_url)):
        if not is_loopback_url(url):
            raise DemoModeError(f"DTLIVE_HUB_DEMO=1 lets anyone log in as anyone, so the {what} must listen on "
                                f"loopback (127.0.0.1), not {url!r}. Unset DTLIVE_HUB_DEMO for a real hub.")


def base_environment() -> dict[str, str]:
    """What every hub-started process needs besides the stream: a PATH that finds dtlive's environment first.

    >>> env = base_environment()
    >>> env["PATH"].split(os.pathsep)[0] == str(BIN), set(env) <= {"PATH", "LANG", "LC_ALL", "TZ"}
    (True, True)
    """
    path = os.pathsep.join([str(BIN), os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin"])
    env = {"PATH": path}
    for key in ("LANG", "LC_ALL", "TZ"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def service_command(name: str, *dtlive_args: str) -> list[str]:
    """The command of one stack service: the service runner, then ``dtlive ARGS``.

    >>> service_command("processor", "process")[1:]
    ['-m', 'dtlive.deploy.hub', 'run', 'processor', '--', 'process']
    """
    return [sys.executable, "-m", "dtlive.deploy.hub", "run", name, "--", *dtlive_args]


def services(settings: HubSettings) -> list[dict]:
    """``c.JupyterHub.services``: the dtlive stack, the idle culler and the optional operator token.

    >>> demo = settings_from_env({"DTLIVE_HUB_DEMO": "1", "DTLIVE_STATE_DIR": "/tmp/s"})
    >>> [s["name"] for s in services(demo)]
    ['dtlive-emulator', 'dtlive-processor', 'dtlive-recorder', 'dtlive-alerts', 'dtlive-broker', 'idle-culler']
    >>> real = settings_from_env({"DTLIVE_BOOTSTRAP": "kafka.lab:9092", "DTLIVE_HUB_API_TOKEN": "t"})
    >>> [s["name"] for s in services(real)], services(real)[0]["environment"]["DTLIVE_BOOTSTRAP"]
    (['dtlive-processor', 'dtlive-recorder', 'dtlive-alerts', 'idle-culler', 'dtlive-operator'], 'kafka.lab:9092')
    """
    env = {**base_environment(), **settings.stream_env}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    # JupyterHub stops services in this order: the data source first, the broker last (the others flush to it)
    stack = []
    if settings.demo:
        stack.append(("emulator", ["emulate", "--simulate", "--rate", f"{settings.emulator_rate:g}",
                                   "--format", "daq64"]))
    stack += [("processor", ["process"]), ("recorder", ["record"]), ("alerts", ["alerts", "listen"])]
    if settings.bootstrap is None:
        stack.append(("broker", ["broker", "--port", str(settings.broker_port)]))
    out = [{"name": f"dtlive-{name}", "command": service_command(name, *args), "environment": env,
            "cwd": str(settings.state_dir), "display": False} for name, args in stack]
    out.append({"name": "idle-culler", "display": False,
                "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={settings.cull_timeout}",
                            f"--cull-every={max(60, settings.cull_timeout // 10)}"]})
    if settings.api_token:
        out.append({"name": "dtlive-operator", "api_token": settings.api_token, "display": False})
    return out


def roles(settings: HubSettings) -> list[dict]:
    """``c.JupyterHub.load_roles``: only the scopes each service needs.

    >>> [r["name"] for r in roles(HubSettings())], [r["name"] for r in roles(HubSettings(api_token="t"))]
    (['idle-culler'], ['idle-culler', 'dtlive-operator'])
    """
    out = [{"name": "idle-culler", "scopes": CULLER_SCOPES, "services": ["idle-culler"]}]
    if settings.api_token:
        out.append({"name": "dtlive-operator", "scopes": OPERATOR_SCOPES, "services": ["dtlive-operator"]})
    return out


def user_environment(settings: HubSettings) -> dict[str, str]:
    """``c.Spawner.environment``: the stream's address and settings for every user's server.

    >>> env = user_environment(settings_from_env({"DTLIVE_BOOTSTRAP": "kafka.lab:9092", "KAFKA_SASL_USERNAME": "dq",
    ...                                          "DTLIVE_HUB_ADMINS": "ana"}))
    >>> env["DTLIVE_BOOTSTRAP"], env["KAFKA_SASL_USERNAME"], "DTLIVE_HUB_ADMINS" in env
    ('kafka.lab:9092', 'dq', False)
    """
    return {**base_environment(), **settings.stream_env}


def prepare_state_dir(settings: HubSettings) -> Path:
    """Create the shared state directory; users' notebooks may take its lock (they reuse the hub's stack).

    >>> import tempfile
    >>> d = prepare_state_dir(HubSettings(state_dir=Path(tempfile.mkdtemp()) / "state"))
    >>> (d / ".lock").exists(), oct(d.stat().st_mode & 0o777)
    (True, '0o755')
    """
    d = settings.state_dir
    d.mkdir(parents=True, exist_ok=True)
    lock = d / ".lock"
    lock.touch(exist_ok=True)
    with contextlib.suppress(OSError):
        d.chmod(0o755)
        lock.chmod(0o666)
    return d


def _home_of(spawner) -> Path | None:
    home = getattr(spawner, "home_dir", None)  # SimpleLocalProcessSpawner
    if home:
        return Path(home)
    with contextlib.suppress(ImportError, KeyError):
        import pwd

        return Path(pwd.getpwnam(spawner.user.name).pw_dir)  # LocalProcessSpawner: a system user
    return None


def copy_notebooks(source: Path, home: Path, owner: str | None = None) -> list[str]:
    """Copy the ``*.ipynb`` files of ``source`` missing from ``home/notebooks`` (a user's edits are kept).

    Returns the names copied. ``owner``: chown the copies to this system user (when the hub runs as root).

    >>> import tempfile
    >>> source, home = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    >>> for name in ("live.ipynb", "history.ipynb"):
    ...     _ = (source / name).write_text("{}")
    >>> copy_notebooks(source, home)
    ['history.ipynb', 'live.ipynb']
    >>> _ = (home / "notebooks" / "live.ipynb").write_text("my edits")
    >>> copy_notebooks(source, home), (home / "notebooks" / "live.ipynb").read_text()  # a user's edits are kept
    ([], 'my edits')
    """
    target = home / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for nb in sorted(Path(source).glob("*.ipynb")):
        dest = target / nb.name
        if not dest.exists():
            shutil.copyfile(nb, dest)
            copied.append(nb.name)
    if owner and hasattr(os, "geteuid") and os.geteuid() == 0:
        with contextlib.suppress(KeyError, OSError):
            for path in (home, target, *target.glob("*.ipynb")):
                shutil.chown(path, user=owner)
    return copied


def notebooks_hook(settings: HubSettings):
    """A ``c.Spawner.pre_spawn_hook`` that puts the notebooks in the user's home before the server starts.

    >>> import logging, tempfile
    >>> from types import SimpleNamespace
    >>> source, home = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    >>> _ = (source / "live.ipynb").write_text("{}")
    >>> hook = notebooks_hook(HubSettings(notebooks=source))
    >>> hook(SimpleNamespace(home_dir=str(home), log=logging.getLogger("spawner")))  # a SimpleLocalProcessSpawner
    >>> sorted(p.name for p in (home / "notebooks").iterdir())
    ['live.ipynb']
    """

    def pre_spawn_hook(spawner) -> None:
        home = _home_of(spawner)
        if home is None:  # e.g. KubeSpawner: bake the notebooks into the image instead
            return
        owner = None if getattr(spawner, "home_dir", None) else spawner.user.name
        copied = copy_notebooks(settings.notebooks, home, owner)
        if copied:
            spawner.log.info("dtlive: copied %d notebooks into %s/notebooks", len(copied), home)

    return pre_spawn_hook


def demo_authenticator_class():
    """DummyAuthenticator that re-checks, once the whole configuration is loaded, that the hub is on loopback.

    >>> c.JupyterHub.authenticator_class = demo_authenticator_class()  # in jupyterhub_config.py  # doctest: +SKIP
    """
    from jupyterhub.auth import DummyAuthenticator

    class DemoAuthenticator(DummyAuthenticator):
        """Any user name and password log in. Demo mode only (DTLIVE_HUB_DEMO=1), loopback only."""

        def check_allow_config(self):
            super().check_allow_config()
            app = self.parent
            if app is not None:
                s = HubSettings(bind_url=getattr(app, "bind_url", "") or "http://:8000")
                check_demo_allowed(s, getattr(app, "hub_bind_url", "") or f"http://{app.hub_ip or '127.0.0.1'}:1")
            self.log.warning("dtlive DEMO MODE: any user name and password log in; loopback only")

    return DemoAuthenticator


def proxy_command() -> list[str]:
    """configurable-http-proxy: the project-local one (scripts/install_hub.sh), else the one on PATH.

    >>> cmd = proxy_command()
    >>> len(cmd), Path(cmd[0]).name
    (1, 'configurable-http-proxy')
    """
    local = ROOT / ".node" / "node_modules" / ".bin" / "configurable-http-proxy"
    return [str(local)] if local.exists() else ["configurable-http-proxy"]


# ---------------------------------------------------------------- the service runner


def wait_for_kafka(bootstrap: str, timeout: float = 120.0) -> bool:
    """Wait until a TCP connection to one of the bootstrap servers succeeds; False after ``timeout``.

    >>> server = socket.create_server(("127.0.0.1", 0))  # something listening
    >>> port = server.getsockname()[1]
    >>> wait_for_kafka(f"127.0.0.1:{port}", timeout=1)
    True
    >>> server.close()
    >>> wait_for_kafka(f"127.0.0.1:{port}", timeout=0)  # nothing listens there any more
    False
    """
    hosts = []
    for part in bootstrap.split(","):
        host, _, port_text = part.strip().rpartition(":")
        hosts.append((host.strip("[]") or "127.0.0.1", int(port_text)))
    deadline = time.monotonic() + timeout
    while True:
        for host, port in hosts:
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def record_pid(state_dir: Path, name: str, pid: int) -> None:
    """Record ``name -> pid`` in ``stack.json`` (where ``ensure_stack`` looks for a running stack).

    >>> import tempfile
    >>> state = Path(tempfile.mkdtemp())
    >>> record_pid(state, "processor", os.getpid())
    >>> record_pid(state, "recorder", 2**22 + 1)  # a dead pid: kept only as the one just recorded
    >>> sorted(json.loads((state / "stack.json").read_text()))
    ['processor', 'recorder']
    >>> record_pid(state, "alerts", os.getpid())  # the dead recorder is dropped, and so is this pid's old name
    >>> json.loads((state / "stack.json").read_text()) == {"alerts": os.getpid()}
    True
    """
    from dtlive.kafka.broker import state_lock
    from dtlive.service.processes import pid_alive

    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "stack.json"
    with state_lock(state_dir):
        try:
            pids = json.loads(path.read_text())
        except (OSError, ValueError):
            pids = {}
        pids = {k: v for k, v in pids.items() if isinstance(v, int) and pid_alive(v) and v != pid}
        pids[name] = pid
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(pids))
        tmp.replace(path)


def run_service(name: str, dtlive_args: list[str], wait_s: float = 120.0) -> int:
    """Wait for Kafka (except the broker itself), record the pid, then exec ``dtlive ARGS``.

    >>> run_service("processor", ["process"], wait_s=120)  # becomes `dtlive process` (exec)  # doctest: +SKIP
    """
    from dtlive.kafka.broker import default_state_dir

    bootstrap = os.environ.get("DTLIVE_BOOTSTRAP")
    if name != "broker" and bootstrap and not wait_for_kafka(bootstrap, wait_s):
        print(f"dtlive-{name}: Kafka at {bootstrap} did not answer in {wait_s:.0f} s; starting anyway",
              file=sys.stderr, flush=True)
    if name != "broker":
        record_pid(default_state_dir(), name, os.getpid())
    print(f"dtlive-{name}: dtlive {' '.join(dtlive_args)} (Kafka {bootstrap or 'embedded'})", file=sys.stderr,
          flush=True)
    sys.stdout.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # an inherited "ignore" (e.g. `hub &` in a script) would stick
    os.execv(sys.executable, [sys.executable, "-m", "dtlive", *dtlive_args])
    return 1  # pragma: no cover - execv does not return


def main(argv: list[str] | None = None) -> int:
    """The service runner's command line, ``run NAME [--wait S] -- DTLIVE_ARGS...`` (see :func:`run_service`).

    >>> main(["run", "processor", "--", "process"])  # what the hub's service starts  # doctest: +SKIP
    >>> main(["run", "processor"])  # no dtlive command line after --
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    ours, dtlive_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(prog="python -m dtlive.deploy.hub", description="dtlive's JupyterHub service runner.",
                                epilog="example: python -m dtlive.deploy.hub run processor -- process")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="wait for Kafka, record the pid in stack.json, then exec `dtlive ARGS`",
                       usage="python -m dtlive.deploy.hub run NAME [--wait S] -- DTLIVE_ARGS...")
    r.add_argument("name", choices=SERVICE_ORDER)
    r.add_argument("--wait", type=float, default=120.0, help="seconds to wait for Kafka (default 120)")
    a = p.parse_args(ours)
    if not dtlive_args:
        p.error("give the dtlive command line after --, e.g. run processor -- process")
    return run_service(a.name, dtlive_args, a.wait)


if __name__ == "__main__":
    sys.exit(main())
