"""Configuration: CLI > environment > TOML file > defaults, KAFKA_* pass-through, config hash."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest

from dtlive.config import Config, kafka_settings_from_env, load_config


@pytest.fixture
def toml(tmp_path):
    def write(text: str, name: str = "dtlive.toml"):
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return write


def test_defaults_follow_the_design():
    cfg = load_config({}, env={})
    assert (cfg.hits_topic, cfg.monitor_topic, cfg.rejected_topic) == ("dt.hits", "dt.monitor", "dt.hits.rejected")
    assert cfg.window_s == 2.0
    assert cfg.bootstrap is None
    assert cfg.kafka == {}
    assert cfg == Config()


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        ("window_s", ("5", "4", "3"), (5.0, 4.0, 3.0, 2.0)),
        ("hits_topic", ("cli.hits", "env.hits", "file.hits"), ("cli.hits", "env.hits", "file.hits", "dt.hits")),
        ("bootstrap", ("cli:1", "env:2", "file:3"), ("cli:1", "env:2", "file:3", None)),
        ("lateness_s", ("0.4", "0.2", "0.3"), (0.4, 0.2, 0.3, 0.1)),
    ],
)
def test_precedence_cli_env_file_default(toml, name, values, expected):
    cli_v, env_v, file_v = values
    file_text = f'[dtlive]\n{name} = "{file_v}"\n' if not name.endswith("_s") else f"[dtlive]\n{name} = {file_v}\n"
    path = toml(file_text)
    env = {f"DTLIVE_{name.upper()}": env_v}
    layers = [
        ({name: cli_v}, env, path),
        ({name: None}, env, path),  # None means "flag not given"
        ({}, {}, path),
        ({}, {}, None),
    ]
    for (cli, e, f), want in zip(layers, expected):
        got = getattr(load_config(cli, env=e, file=f), name)
        assert got == want, (cli, e, f)
        if isinstance(want, float):
            assert isinstance(got, float)


def test_file_from_dtlive_config_variable(toml):
    path = toml("[dtlive]\nmonitor_topic = 'from.file'\n")
    assert load_config({}, env={"DTLIVE_CONFIG": str(path)}).monitor_topic == "from.file"
    other = toml("[dtlive]\nmonitor_topic = 'explicit'\n", "other.toml")
    assert load_config({}, env={"DTLIVE_CONFIG": str(path)}, file=other).monitor_topic == "explicit"


def test_toml_with_dtlive_and_kafka_tables(toml):
    path = toml(
        """
        [dtlive]
        bootstrap = "broker.example:9092"
        window_s = 3
        default_format = "daq64"

        [dtlive.kafka]
        "sasl.mechanism" = "PLAIN"
        "security.protocol" = "SASL_SSL"
        "linger.ms" = 5
        """
    )
    cfg = load_config({}, env={}, file=path)
    assert cfg.bootstrap == "broker.example:9092"
    assert cfg.window_s == 3.0 and cfg.default_format == "daq64"
    assert cfg.kafka == {"sasl.mechanism": "PLAIN", "security.protocol": "SASL_SSL", "linger.ms": "5"}
    # KAFKA_* variables override the file's kafka table key by key
    cfg = load_config({}, env={"KAFKA_LINGER_MS": "50", "KAFKA_CLIENT_ID": "me"}, file=path)
    assert cfg.kafka == {
        "sasl.mechanism": "PLAIN", "security.protocol": "SASL_SSL", "linger.ms": "50", "client.id": "me"
    }


def test_toml_kafka_table_with_bare_dotted_keys(toml):
    """`linger.ms = 5` in TOML is a dotted key (a nested table): it must still become the librdkafka `linger.ms`."""
    path = toml(
        """
        [dtlive.kafka]
        linger.ms = 5
        enable.idempotence = true
        sasl.mechanism = "PLAIN"
        """
    )
    kafka = load_config({}, env={}, file=path).kafka
    assert set(kafka) == {"linger.ms", "enable.idempotence", "sasl.mechanism"}, kafka
    assert kafka["linger.ms"] == "5" and kafka["sasl.mechanism"] == "PLAIN"
    assert kafka["enable.idempotence"].lower() == "true"


def test_toml_without_dtlive_table(toml):
    cfg = load_config({}, env={}, file=toml("window_s = 4.5\nidle_s = 1\n"))
    assert (cfg.window_s, cfg.idle_s) == (4.5, 1.0)


@pytest.mark.parametrize(
    "text", ["[dtlive]\nwindow = 3\n", "[dtlive]\nwindow_s = 2\nhits_topik = 'x'\n", "colour = 1\n"]
)
def test_unknown_key_in_file_is_an_error(toml, text):
    with pytest.raises(ValueError, match="unknown") as err:
        load_config({}, env={}, file=toml(text))
    bad = text.split("\n")[-2].split("=")[0].strip()
    assert bad in str(err.value)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config({}, env={}, file=tmp_path / "nope.toml")
    with pytest.raises(FileNotFoundError):
        load_config({}, env={"DTLIVE_CONFIG": str(tmp_path / "nope.toml")})


def test_kafka_variables_map_like_gcn_kafka():
    env = {
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "user",
        "KAFKA_BOOTSTRAP_SERVERS": "a:1,b:2",
        "KAFKA_": "ignored",
        "KAFKA": "ignored",
        "MY_KAFKA_X": "ignored",
        "DTLIVE_HITS_TOPIC": "t",
        "PATH": "/bin",
    }
    want = {"sasl.mechanism": "PLAIN", "sasl.username": "user", "bootstrap.servers": "a:1,b:2"}
    assert kafka_settings_from_env(env) == want
    cfg = load_config({}, env=env)
    assert cfg.kafka == want and cfg.hits_topic == "t"


def test_environment_is_read_from_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("DTLIVE_WINDOW_S", "4")
    monkeypatch.setenv("KAFKA_CLIENT_ID", "from-os")
    monkeypatch.delenv("DTLIVE_CONFIG", raising=False)
    cfg = load_config({})
    assert cfg.window_s == 4.0 and cfg.kafka.get("client.id") == "from-os"


@pytest.mark.parametrize("value", [0, -1, -0.5, 0.5, 5.5, 61, 1e9, float("nan"), float("inf"), "abc", ""])
def test_invalid_window_s_is_an_error(value, toml):
    with pytest.raises(ValueError):
        load_config({"window_s": value}, env={})
    with pytest.raises(ValueError):
        load_config({}, env={"DTLIVE_WINDOW_S": str(value)})


@pytest.mark.parametrize("value", [1, 2.5, 5])
def test_window_s_of_one_to_five_seconds_is_valid(value):
    assert load_config({"window_s": value}, env={}).window_s == float(value)


def test_negative_lateness_is_an_error():
    with pytest.raises(ValueError):
        load_config({"lateness_s": -0.1}, env={})


def test_config_hash_is_stable_and_tracks_processing_settings():
    a = load_config({}, env={})
    assert a.config_hash == load_config({}, env={}).config_hash == Config().config_hash
    assert len(a.config_hash) >= 8
    # settings that do not change the published numbers do not change the hash
    same = load_config({"hits_topic": "x", "bootstrap": "h:1"}, env={"KAFKA_LINGER_MS": "1"})
    assert same.config_hash == a.config_hash
    # the window length does; an int and a float of the same length are the same setting
    assert load_config({"window_s": 3}, env={}).config_hash != a.config_hash
    assert load_config({"window_s": 3}, env={}).config_hash == load_config({"window_s": "3.0"}, env={}).config_hash
    assert load_config({"window_s": 2}, env={}).config_hash == a.config_hash
    hashes = {load_config({"window_s": w}, env={}).config_hash for w in (1, 1.5, 2, 2.5, 3, 4, 5)}
    assert len(hashes) == 7
    assert load_config({"lateness_s": 1.0}, env={}).config_hash != a.config_hash


def test_config_hash_is_the_same_in_another_process():
    code = "from dtlive.config import load_config; print(load_config({'window_s': 3}, env={}).config_hash)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == load_config({"window_s": 3}, env={}).config_hash


def test_nan_never_sneaks_in_through_the_file(toml):
    with pytest.raises(ValueError):
        load_config({}, env={}, file=toml("[dtlive]\nwindow_s = nan\n"))
    assert not math.isnan(load_config({}, env={}, file=toml("[dtlive]\nwindow_s = 1\n")).window_s)


def test_unknown_cli_setting_is_an_error():
    with pytest.raises(ValueError, match="window_seconds"):
        load_config({"window_seconds": 2}, env={})


def test_alarm_settings_from_a_toml_list_or_comma_separated_text(toml):
    path = toml('[dtlive]\nalarm_notify = ["json://127.0.0.1:8000/dq", "ntfy://dtlive-shift"]\n'
                "alarm_notify_limit = 3\n")
    cfg = load_config({}, env={}, file=path)
    assert cfg.alarm_notify == ("json://127.0.0.1:8000/dq", "ntfy://dtlive-shift") and cfg.alarm_notify_limit == 3
    assert (cfg.alarm_topic, cfg.alarm_notify_minutes) == ("dt.alarms", 10.0)
    env = {"DTLIVE_ALARM_NOTIFY": "mailto://a@b.org, json://127.0.0.1:1/", "DTLIVE_ALARM_TOPIC": "my.alarms"}
    cfg = load_config({}, env=env, file=path)
    assert cfg.alarm_notify == ("mailto://a@b.org", "json://127.0.0.1:1/") and cfg.alarm_topic == "my.alarms"
    assert load_config({}, env={}).alarm_notify == ()
    with pytest.raises(ValueError, match="alarm_notify_limit"):
        load_config({"alarm_notify_limit": 0}, env={})
