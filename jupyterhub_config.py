# JupyterHub for a detector group: everyone's notebooks on one live dtlive stream.
#
#   bash scripts/install_hub.sh                           # jupyterhub, the idle culler, configurable-http-proxy
#   DTLIVE_HUB_DEMO=1 .venv/bin/jupyterhub -f jupyterhub_config.py      # try it: http://127.0.0.1:8000
#   sudo DTLIVE_HUB_ADMINS=alice .venv/bin/jupyterhub -f jupyterhub_config.py   # for real: PAM, system users
#
# The dtlive stack runs as JupyterHub-managed services (started with the hub, restarted when they exit,
# stopped with it): the embedded Kafka-protocol broker unless DTLIVE_BOOTSTRAP names an external Kafka, the
# processor, the recorder, the alert listener and, in demo mode only, the simulated DAQ. Every user's server
# gets the stream's address and settings (DTLIVE_BOOTSTRAP, topics, DTLIVE_DB, ...) and starts in JupyterLab
# on the quickstart notebook, from its own copy of notebooks/. All settings and their defaults:
# `python -c "import dtlive.deploy.hub; help(dtlive.deploy.hub)"`.
#
# Authentication is safe by default: PAM (the machine's own accounts), only members of the Unix group
# DTLIVE_HUB_GROUP (default "dtlive") or DTLIVE_HUB_ADMINS may log in. DTLIVE_HUB_DEMO=1 switches to a
# DummyAuthenticator (any name, any password) and is refused unless the hub only listens on loopback.

import os

from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner

from dtlive.deploy import hub

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

s = hub.settings_from_env()
hub.prepare_state_dir(s)

# ---------------------------------------------------------------- where the hub listens
c.JupyterHub.bind_url = s.bind_url  # the public proxy; DTLIVE_HUB_BIND_URL, e.g. https://dt-hub.example.org
c.ConfigurableHTTPProxy.command = hub.proxy_command()  # the project-local one from scripts/install_hub.sh

# ---------------------------------------------------------------- who may log in
if s.demo:
    hub.check_demo_allowed(s)  # again at start-up, after command-line options: DemoAuthenticator
    c.JupyterHub.authenticator_class = hub.demo_authenticator_class()
    c.Authenticator.allow_all = True
    c.JupyterHub.template_vars = {"announcement": hub.DEMO_BANNER}  # on every page, the login page too
    # the hub's own database and cookie secret live in the state directory, not in the working directory
    c.JupyterHub.db_url = f"sqlite:///{s.state_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(s.state_dir / "jupyterhub_cookie_secret")
    c.ConfigurableHTTPProxy.pid_file = str(s.state_dir / "jupyterhub-proxy.pid")
else:
    c.JupyterHub.authenticator_class = "pam"
    c.PAMAuthenticator.allowed_groups = {s.group}
    # Elsewhere, single sign-on instead (pip install oauthenticator), e.g.:
    #   c.JupyterHub.authenticator_class = "generic-oauth"
    #   c.GenericOAuthenticator.client_id / client_secret / oauth_callback_url / authorize_url / token_url ...
    #   c.GenericOAuthenticator.allowed_groups = {"dt-detector"}; c.GenericOAuthenticator.manage_groups = True
c.Authenticator.admin_users = s.admins

# ---------------------------------------------------------------- users' servers
if s.demo:  # no system users needed: everyone runs as the hub's user, each in a home under the state dir
    c.JupyterHub.spawner_class = SimpleLocalProcessSpawner
    c.SimpleLocalProcessSpawner.home_dir_template = s.home_template
    if os.geteuid() == 0:
        c.Spawner.args = ["--ServerApp.allow_root=True"]
else:  # each user's server runs as that system user, in their home directory
    c.JupyterHub.spawner_class = LocalProcessSpawner
c.Spawner.cmd = [str(hub.BIN / "jupyterhub-singleuser")]
c.Spawner.environment = hub.user_environment(s)  # DTLIVE_BOOTSTRAP, topics, DTLIVE_DB, KAFKA_* ...
c.Spawner.pre_spawn_hook = hub.notebooks_hook(s)  # copies notebooks/ into ~/notebooks (keeps users' edits)
c.Spawner.notebook_dir = "~"
c.Spawner.default_url = "/lab/tree/notebooks/01-quickstart.ipynb"
# JupyterLab with the scientific stack takes a while to import on a busy shared machine: wait for it (the
# defaults, 60 s to start and 30 s to answer, fail users' servers there)
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120

# ---------------------------------------------------------------- the dtlive stack and the idle culler
c.JupyterHub.services = hub.services(s)  # dtlive-emulator?, -processor, -recorder, -alerts, -broker?, idle-culler
c.JupyterHub.load_roles = hub.roles(s)  # the culler may only list users and stop their servers
# Service logs go to the hub's log. The ledger is DTLIVE_DB: SQLite in DTLIVE_STATE_DIR by default, fine for the
# demo; with several system users reading it, use PostgreSQL (DTLIVE_DB=postgresql://dtlive@dbhost/dtlive).

# ---------------------------------------------------------------- on Kubernetes (Zero to JupyterHub)
# pip install jupyterhub-kubespawner; the stream is an external Kafka and the ledger PostgreSQL, e.g.
#
#   DTLIVE_BOOTSTRAP=kafka-0.kafka:9092,kafka-1.kafka:9092      # no broker service is started then
#   KAFKA_SECURITY_PROTOCOL=SASL_SSL KAFKA_SASL_MECHANISM=SCRAM-SHA-512 KAFKA_SASL_USERNAME=... (librdkafka)
#   DTLIVE_DB=postgresql://dtlive@postgres.dtlive:5432/dtlive   # the ledger; also what users' notebooks read
#   DTLIVE_HISTORY=/srv/dtlive/history                          # on a shared volume
#
#   c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
#   c.JupyterHub.hub_ip = "0.0.0.0"                             # pods reach the hub over the cluster network
#   c.KubeSpawner.image = "registry.example.org/dt/dtlive-notebook:1.0"   # dtlive + notebooks/ baked in
#   c.KubeSpawner.environment = hub.user_environment(s)         # same stream settings as here
#   c.KubeSpawner.storage_pvc_ensure = True                     # a home volume per user
#   c.KubeSpawner.lifecycle_hooks = {"postStart": {"exec": {"command": [
#       "sh", "-c", "mkdir -p ~/notebooks && cp -n /opt/dtlive/notebooks/*.ipynb ~/notebooks/"]}}}
#   c.JupyterHub.db_url = "postgresql://jupyterhub@postgres.dtlive:5432/jupyterhub"  # the hub's own database
#
# There, run the processor, recorder and alert listener next to the hub as services (as above, with
# DTLIVE_BOOTSTRAP set) or as their own Deployments with the same environment; never the demo emulator.
