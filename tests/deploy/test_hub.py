"""JupyterHub: jupyterhub_config.py, run for real.

* the configuration itself (fast): PAM by default, the demo's DummyAuthenticator only on loopback, which
  services run with and without an external Kafka, what users' servers are given;
* the real hub in demo mode on loopback free ports (configurable-http-proxy from scripts/install_hub.sh),
  its dtlive services on the session broker with unique topics: a user and a token made through the REST
  API, the user's server spawned through it, the quickstart notebook found in the server and run cell by
  cell in a kernel of that server (websocket through the proxy), reusing the hub's stack, windows arriving;
* a browser (Chromium) logging in on the hub's login page, landing in JupyterLab on the quickstart, running
  it and watching the dashboard update.

Every process the hub started (services, proxy, users' servers, kernels) is found by a unique tag in its
environment and stopped at the end, whatever happened; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from processes import kill_tagged

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "jupyterhub_config.py"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the configuration, without a hub


def load_config(monkeypatch, tmp_path, **env):
    """jupyterhub_config.py loaded the way JupyterHub loads it, with only ``env`` as DTLIVE_* settings."""
    from traitlets.config import PyFileConfigLoader

    ensure_hub_installed()
    for key in list(os.environ):
        if key.startswith(("DTLIVE_", "KAFKA_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DTLIVE_STATE_DIR", str(tmp_path / "state"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return PyFileConfigLoader(CONFIG.name, path=str(ROOT)).load_config()


def service_names(c) -> list[str]:
    return [s["name"] for s in c.JupyterHub.services]


def test_default_is_pam_with_the_embedded_broker_and_no_emulator(monkeypatch, tmp_path):
    c = load_config(monkeypatch, tmp_path, DTLIVE_HUB_ADMINS="alice, bob")
    assert c.JupyterHub.authenticator_class == "pam"
    assert c.PAMAuthenticator.allowed_groups == {"dtlive"}
    assert c.Authenticator.admin_users == {"alice", "bob"}
    assert c.JupyterHub.bind_url == "http://:8000"
    assert c.JupyterHub.spawner_class.__name__ == "LocalProcessSpawner"
    assert service_names(c) == ["dtlive-processor", "dtlive-recorder", "dtlive-alerts", "dtlive-broker",
                                "idle-culler"]
    broker = c.JupyterHub.services[3]
    assert broker["command"][-4:] == ["--", "broker", "--port", "9092"]
    env = c.Spawner.environment
    assert env["DTLIVE_BOOTSTRAP"] == "127.0.0.1:9092"
    assert env["DTLIVE_STATE_DIR"] == str(tmp_path / "state")
    assert env["DTLIVE_DB"].startswith("sqlite:///")
    assert c.Spawner.default_url == "/lab/tree/notebooks/01-quickstart.ipynb"
    assert (c.Spawner.start_timeout, c.Spawner.http_timeout) == (180, 120)  # patient with a busy machine
    culler = next(s for s in c.JupyterHub.services if s["name"] == "idle-culler")
    assert "--timeout=3600" in culler["command"]
    role = next(r for r in c.JupyterHub.load_roles if r["name"] == "idle-culler")
    assert set(role["scopes"]) == {"list:users", "read:users:activity", "read:servers", "delete:servers"}
    assert "template_vars" not in c.JupyterHub  # no demo banner


def test_external_kafka_means_no_broker_service_and_settings_reach_everyone(monkeypatch, tmp_path):
    c = load_config(monkeypatch, tmp_path, DTLIVE_BOOTSTRAP="kafka-1:9093,kafka-2:9093",
                    KAFKA_SECURITY_PROTOCOL="SASL_SSL", DTLIVE_DB="postgresql://dtlive@db/dtlive",
                    DTLIVE_MONITOR_TOPIC="dt.monitor.v2", DTLIVE_HUB_API_TOKEN="operator-secret")
    assert "dtlive-broker" not in service_names(c)
    for env in [c.Spawner.environment] + [s["environment"] for s in c.JupyterHub.services if "environment" in s]:
        assert env["DTLIVE_BOOTSTRAP"] == "kafka-1:9093,kafka-2:9093"
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["DTLIVE_DB"] == "postgresql://dtlive@db/dtlive"
        assert env["DTLIVE_MONITOR_TOPIC"] == "dt.monitor.v2"
        assert not any(k.startswith("DTLIVE_HUB_") for k in env), "hub settings (the operator token) leak"
    operator = next(s for s in c.JupyterHub.services if s["name"] == "dtlive-operator")
    assert operator["api_token"] == "operator-secret" and "command" not in operator


def test_demo_mode_is_loopback_only_and_labelled(monkeypatch, tmp_path):
    c = load_config(monkeypatch, tmp_path, DTLIVE_HUB_DEMO="1")
    assert c.JupyterHub.authenticator_class.__name__ == "DemoAuthenticator"
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8000"
    assert "DEMO MODE" in c.JupyterHub.template_vars["announcement"]
    assert c.JupyterHub.spawner_class.__name__ == "SimpleLocalProcessSpawner"
    assert c.SimpleLocalProcessSpawner.home_dir_template == str(tmp_path / "state" / "homes" / "{username}")
    assert "dtlive-emulator" in service_names(c)
    from dtlive.deploy.hub import DemoModeError

    for url in ("http://:8000", "http://0.0.0.0:8000", "http://192.0.2.7:8000"):
        with pytest.raises(DemoModeError, match="loopback"):
            load_config(monkeypatch, tmp_path, DTLIVE_HUB_DEMO="1", DTLIVE_HUB_BIND_URL=url)


def test_demo_authenticator_refuses_a_public_bind_given_on_the_command_line(tmp_path):
    """``jupyterhub --JupyterHub.bind_url=http://0.0.0.0:8000`` in demo mode: the hub refuses to start."""
    ensure_hub_installed()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DTLIVE_", "KAFKA_"))}
    env.update(DTLIVE_HUB_DEMO="1", DTLIVE_STATE_DIR=str(tmp_path / "state"), DTLIVE_BOOTSTRAP="127.0.0.1:1")
    proc = subprocess.run([sys.executable, "-m", "jupyterhub", "-f", str(CONFIG), "--JupyterHub.bind_url=http://0.0.0.0:"
                           f"{free_port()}", f"--JupyterHub.hub_bind_url=http://127.0.0.1:{free_port()}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "must listen on loopback" in proc.stdout + proc.stderr


def test_notebooks_are_copied_without_overwriting_edits(tmp_path):
    from dtlive.deploy.hub import copy_notebooks

    home = tmp_path / "home"
    assert "01-quickstart.ipynb" in copy_notebooks(ROOT / "notebooks", home)
    (home / "notebooks" / "01-quickstart.ipynb").write_text("my edits")
    assert copy_notebooks(ROOT / "notebooks", home) == []
    assert (home / "notebooks" / "01-quickstart.ipynb").read_text() == "my edits"


def test_service_runner_records_its_pid_and_becomes_dtlive(tmp_path):
    env = {**os.environ, "DTLIVE_STATE_DIR": str(tmp_path), "DTLIVE_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    out = subprocess.run([sys.executable, "-m", "dtlive.deploy.hub", "run", "recorder", "--wait", "0.5", "--",
                          "--version"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("dtlive ")  # it became `dtlive --version`
    assert "did not answer" in out.stderr  # a bounded wait for Kafka, then on
    assert set(json.loads((tmp_path / "stack.json").read_text())) <= {"recorder"}  # recorded (then exited)


# ---------------------------------------------------------------- the real hub


def _unavailable(msg: str):
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(msg)


def ensure_hub_installed() -> None:
    """jupyterhub, the idle culler and configurable-http-proxy; scripts/install_hub.sh when missing."""
    from dtlive.deploy.hub import proxy_command

    def ok() -> bool:
        try:
            import jupyterhub  # noqa: F401
            import jupyterhub_idle_culler  # noqa: F401
        except ImportError:
            return False
        cmd = proxy_command()[0]
        return os.access(cmd, os.X_OK) or bool(subprocess.run(["which", cmd], capture_output=True).returncode == 0)

    if ok():
        return
    r = subprocess.run(["bash", str(ROOT / "scripts" / "install_hub.sh")], capture_output=True, text=True,
                       timeout=600)
    if not ok():
        _unavailable(f"JupyterHub pieces missing and scripts/install_hub.sh failed: {(r.stderr or r.stdout)[-2000:]}")


def api(url: str, token: str, method: str = "GET", body: dict | None = None, timeout: float = 30.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback)
        text = resp.read().decode()
    return json.loads(text) if text else None


@pytest.fixture(scope="module")
def hub(broker, tmp_path_factory):
    """The real JupyterHub from jupyterhub_config.py in demo mode, on loopback free ports and the session broker."""
    ensure_hub_installed()
    work = tmp_path_factory.mktemp("hub")
    tag = uuid.uuid4().hex[:8]
    port, hub_port, proxy_api = free_port(), free_port(), free_port()
    token = secrets.token_hex(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DTLIVE_", "KAFKA_", "JUPYTERHUB_"))}
    env.update({
        "DTLIVE_HUB_DEMO": "1", "DTLIVE_HUB_BIND_URL": f"http://127.0.0.1:{port}", "DTLIVE_HUB_API_TOKEN": token,
        "DTLIVE_BOOTSTRAP": broker, "DTLIVE_STATE_DIR": str(work / "state"),
        "DTLIVE_HITS_TOPIC": f"hubhits-{tag}", "DTLIVE_MONITOR_TOPIC": f"hubmon-{tag}",
        "DTLIVE_REJECTED_TOPIC": f"hubrej-{tag}", "DTLIVE_QUALITY_TOPIC": f"hubdq-{tag}",
        "DTLIVE_ANALYSES_TOPIC": f"hubanalyses-{tag}", "DTLIVE_ALERTS_REJECTED_TOPIC": f"hubalertsrej-{tag}",
        "DTLIVE_GROUP_ID": f"hubproc-{tag}", "DTLIVE_ALERTS_GROUP_ID": f"hubalerts-{tag}",
        "DTLIVE_WINDOW_S": "1", "DTLIVE_LATENESS_S": "0.2", "DTLIVE_ARTIFACTS": str(work / "artifacts"),
        "DTLIVE_DB": f"sqlite:///{work / 'ledger.sqlite'}", "DTLIVE_HISTORY": str(work / "history"),
    })
    marker = f"DTLIVE_GROUP_ID=hubproc-{tag}"  # passed on to every service, server and kernel
    log = work / "jupyterhub.log"
    cmd = [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG), f"--JupyterHub.hub_bind_url=http://127.0.0.1:{hub_port}",
           f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{proxy_api}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    try:
        while True:
            try:
                api(f"{base}/hub/api/", token, timeout=2)
                break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() - t0 > 120:
                    raise AssertionError(f"the hub did not come up on {base}:\n{log.read_text()[-4000:]}") from None
                time.sleep(0.2)
        print(f"hub up in {time.monotonic() - t0:.1f} s at {base}")
        yield SimpleNamespace(base=base, token=token, env=env, state=work / "state", log=log, proc=proc, tag=tag)
    except BaseException:
        print(log.read_text()[-4000:])
        raise
    finally:
        t1 = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the hub stops its services, users' servers and the proxy
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        left = kill_tagged(marker)
        print(f"hub stopped in {time.monotonic() - t1:.1f} s; stragglers stopped by the test: {left}")


def spawn_server(hub, user: str, timeout: float = 180.0) -> str:
    """Create ``user``, give them a token, start their server through the REST API; return the user's token."""
    api(f"{hub.base}/hub/api/users/{user}", hub.token, "POST")
    user_token = api(f"{hub.base}/hub/api/users/{user}/tokens", hub.token, "POST",
                     {"note": "test_hub", "expires_in": 900})["token"]
    api(f"{hub.base}/hub/api/users/{user}/server", hub.token, "POST")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = api(f"{hub.base}/hub/api/users/{user}", hub.token)["servers"].get("", {})
        if server.get("ready"):
            return user_token
        time.sleep(0.3)
    raise AssertionError(f"{user}'s server not ready in {timeout:.0f} s:\n{hub.log.read_text()[-3000:]}")


class Kernel:
    """A kernel of a user's server, driven over its websocket through the hub's proxy (Jupyter protocol 5)."""

    def __init__(self, base: str, user: str, token: str):
        import websocket

        self.server = f"{base}/user/{user}/"
        model = api(f"{self.server}api/kernels", token, "POST", {"name": "python3"})
        self.url = f"{self.server}api/kernels/{model['id']}"
        self.token = token
        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(self.url.replace("http", "ws", 1) + "/channels", timeout=60,
                                              header=[f"Authorization: token {token}"])

    def run(self, code: str, timeout: float = 120.0) -> tuple[str, str]:
        """Execute ``code``; return (status, text of its streams, results and errors)."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": self.session,
                       "date": "", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        out, status, idle = [], None, False
        deadline = time.monotonic() + timeout
        while not (status and idle):
            if time.monotonic() > deadline:
                raise AssertionError(f"no reply in {timeout:.0f} s to:\n{code}\nso far: {''.join(out)}")
            raw = self.ws.recv()
            if isinstance(raw, bytes):  # widget messages with binary buffers: not output
                continue
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                out.append(f"{content['ename']}: {content['evalue']}\n" + "\n".join(content["traceback"]))
            elif kind == "execute_reply":
                status = content["status"]
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        return status, "".join(out)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        with contextlib.suppress(Exception):
            api(self.url, self.token, "DELETE")


@pytest.mark.kafka
@pytest.mark.slow
def test_hub_spawns_a_server_that_runs_the_quickstart_on_the_hubs_stack(hub):
    t0 = time.monotonic()
    login = urllib.request.urlopen(f"{hub.base}/hub/login", timeout=10).read().decode()  # noqa: S310 (loopback)
    assert "DEMO MODE" in login and "any password" in login
    user_token = spawn_server(hub, "alice")
    spawned = time.monotonic() - t0

    # the notebooks are in the user's server, with the quickstart where default_url points
    nb = api(f"{hub.base}/user/alice/api/contents/notebooks/01-quickstart.ipynb", user_token)
    assert nb["type"] == "notebook"
    assert {"01-quickstart.ipynb", "06-alerts.ipynb"} <= {
        f["name"] for f in api(f"{hub.base}/user/alice/api/contents/notebooks", user_token)["content"]}

    # the hub's services run the stack: their pids are where ensure_stack() looks
    stack = json.loads((hub.state / "stack.json").read_text())
    assert {"processor", "recorder", "alerts", "emulator"} <= set(stack), stack

    kernel = Kernel(hub.base, "alice", user_token)
    try:
        text = ""
        for cell in nb["content"]["cells"]:
            if cell["cell_type"] != "code":
                continue
            status, out = kernel.run(cell["source"])
            text += out
            assert status == "ok", out
        assert f"Kafka at {hub.env['DTLIVE_BOOTSTRAP']} | started: nothing" in text, text  # the hub's stack
        assert "'processor'" in text.split("reused:")[1].splitlines()[0]
        windows = re.search(r"windows so far: (\d+)", text)
        assert windows and int(windows.group(1)) > 0, text
        # live: more windows keep arriving from the hub-managed processor, in the user's dashboard
        status, out = kernel.run(
            "import time\nn0 = dashboard.live.status()['windows']\ndeadline = time.time() + 45\n"
            "while dashboard.live.status()['windows'] < n0 + 3 and time.time() < deadline:\n    time.sleep(0.2)\n"
            "import os\nprint('windows', n0, '->', dashboard.live.status()['windows'], '|',"
            " os.environ['DTLIVE_MONITOR_TOPIC'], os.environ['HOME'])\ndashboard.stop()")
        got = re.search(r"windows (\d+) -> (\d+) \| (\S+) (\S+)", out)
        assert status == "ok" and got, out
        assert int(got.group(2)) >= int(got.group(1)) + 3, out
        assert got.group(3) == hub.env["DTLIVE_MONITOR_TOPIC"]
        assert got.group(4) == str(hub.state / "homes" / "alice")
    finally:
        kernel.close()
    print(f"alice's server ready {spawned:.1f} s after the first request; quickstart done after "
          f"{time.monotonic() - t0:.1f} s")


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.browser
def test_browser_logs_in_and_the_dashboard_updates(hub):
    """Chromium on the hub's login page: log in as bob, land in JupyterLab on the quickstart, run it, see it live.

    Playwright runs in its own thread: tests/ui/test_browser.py may hold a session-wide sync Playwright in this one.
    """
    from browser_fixtures import ensure_chromium

    path = ensure_chromium()
    t0 = time.monotonic()
    errors: list[BaseException] = []

    def guarded():
        try:
            _login_and_watch(hub, path)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    thread = threading.Thread(target=guarded, name="hub-browser", daemon=True)
    thread.start()
    thread.join(240)
    assert not thread.is_alive(), "the browser session did not finish in 240 s"
    if errors:
        raise errors[0]
    print(f"login to a live dashboard in {time.monotonic() - t0:.1f} s")


def _login_and_watch(hub, chromium_path: str) -> None:
    from browser_fixtures import run_all_cells, screenshot, state_text, wait_window_id, window_id
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            page.goto(f"{hub.base}/hub/login", timeout=30_000)
            assert "DEMO MODE" in page.inner_text(".announcement")
            screenshot(page, "hub-login")
            page.fill("#username_input", "bob")
            page.fill("#password_input", "anything")
            page.click("#login_submit")
            # the spawn: up to the hub's start_timeout
            page.wait_for_url(re.compile(r".*/user/bob/lab/tree/notebooks/01-quickstart\.ipynb.*"), timeout=180_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            run_all_cells(page)
            started = page.locator(".jp-OutputArea-output", has_text="Kafka at").first
            started.wait_for(timeout=120_000)
            assert "started: nothing" in started.inner_text(), started.inner_text()  # the hub's stack, reused
            page.wait_for_selector(".dtlive-window-id", timeout=120_000)
            first = window_id(page)
            assert wait_window_id(page, first, timeout=30) > first
            assert "LIVE" in state_text(page)
            screenshot(page, "hub-jupyterlab-quickstart")
        except Exception:
            screenshot(page, "hub-jupyterlab-quickstart-FAILED")
            print(hub.log.read_text()[-3000:])
            raise
        finally:
            page.close()
            browser.close()
