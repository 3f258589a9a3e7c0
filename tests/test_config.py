from pathlib import Path

import pytest

from edge.config import ENV_ALIASES, ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_yaml_equals_the_built_in_defaults():
    shipped = load_settings(ROOT / "config.yaml", environ={"DEVICE_ID": "d"})
    # An empty file means "all defaults"; the commented config.yaml must say the same thing.
    empty = load_settings(environ={"FACEMATCH_CONFIG": str(ROOT / "tests" / "empty.yaml"), "DEVICE_ID": "d"})
    assert shipped == empty
    assert shipped.matching.similarity_threshold == 0.6
    assert shipped.liveness.area_duration == 3.0
    assert shipped.liveness.accuracy_threshold == 0.8
    assert shipped.redis.session_ttl == 300
    assert shipped.http.max_image_size == 10 * 1024 * 1024


def test_device_id_defaults_to_the_host_name():
    import socket

    assert load_settings(environ={}).device_id == socket.gethostname()


@pytest.mark.parametrize(
    ("variable", "raw", "attribute", "expected"),
    [
        ("REDIS_URL", "redis://10.0.0.5:6380/2", ("redis", "url"), "redis://10.0.0.5:6380/2"),
        ("SESSION_TTL", "120", ("redis", "session_ttl"), 120),
        ("SIMILARITY_THRESHOLD", "0.7", ("matching", "similarity_threshold"), 0.7),
        ("MAX_IMAGE_SIZE", "2048", ("http", "max_image_size"), 2048),
        ("REQUEST_TIMEOUT", "5", ("http", "request_timeout"), 5.0),
        ("MAX_IMAGE_DIMENSION", "640", ("http", "max_image_dimension"), 640),
        ("PORT", "9000", ("http", "port"), 9000),
        ("AREA_DURATION", "2.5", ("liveness", "area_duration"), 2.5),
        ("ACCURACY_THRESHOLD", "0.9", ("liveness", "accuracy_threshold"), 0.9),
        ("DEVICE_ID", "door-7", ("device_id",), "door-7"),
        ("MQTT_URL", "mqtt://broker:1884", ("mqtt", "url"), "mqtt://broker:1884"),
        ("CENTRAL_MQTT_URL", "mqtts://fleet.example:8883", ("mqtt", "central_url"), "mqtts://fleet.example:8883"),
        ("FACEMATCH_MODELS_DIR", "/srv/models", ("models", "source_dir"), Path("/srv/models")),
    ],
)
def test_every_environment_variable_overrides(variable, raw, attribute, expected):
    value = load_settings(environ={variable: raw})
    for name in attribute:
        value = getattr(value, name)
    assert value == expected


def test_every_seed_variable_is_honoured():
    seed = {
        "REDIS_URL",
        "SESSION_TTL",
        "SIMILARITY_THRESHOLD",
        "MAX_IMAGE_SIZE",
        "REQUEST_TIMEOUT",
        "MAX_IMAGE_DIMENSION",
        "PORT",
        "AREA_DURATION",
        "ACCURACY_THRESHOLD",
    }
    assert seed <= set(ENV_ALIASES)


def test_environment_beats_the_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("http:\n  port: 8100\n")
    assert load_settings(config, environ={}).http.port == 8100
    assert load_settings(config, environ={"PORT": "8200"}).http.port == 8200


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("paths:\n  state_dir: here\nmodels:\n  dir: w\n")
    settings = load_settings(config, environ={})
    assert settings.paths.state_dir == tmp_path / "here"
    assert settings.models.dir == tmp_path / "w"


def test_onnx_providers_from_environment():
    settings = load_settings(environ={"FACEMATCH_ONNX_PROVIDERS": "CUDAExecutionProvider, CPUExecutionProvider"})
    assert settings.models.onnx_providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"AREA_DURATION": "-1"}, ["liveness.area_duration", "'-1'", "AREA_DURATION", "greater than or equal to 1"]),
        ({"PORT": "http"}, ["http.port", "'http'", "PORT", "integer"]),
        ({"PORT": "70000"}, ["http.port", "'70000'", "less than or equal to 65535"]),
        ({"REDIS_URL": "http://x"}, ["redis.url", "'http://x'", "REDIS_URL", "pattern"]),
        ({"ACCURACY_THRESHOLD": "1.5"}, ["liveness.accuracy_threshold", "'1.5'", "less than or equal to 1"]),
        ({"SESSION_TTL": "0"}, ["redis.session_ttl", "'0'", "greater than or equal to 10"]),
    ],
)
def test_bad_value_is_one_line_naming_key_value_and_rule(env, fragments):
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_unknown_key_in_file_is_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("http:\n  prot: 8000\n")
    with pytest.raises(ConfigError, match=r"unknown key http\.prot"):
        load_settings(config, environ={})


def test_broken_yaml_and_missing_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("http: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(config, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"FACEMATCH_CONFIG": str(tmp_path / "nope.yaml")})


def test_bad_value_stops_the_cli_with_exit_code_2(capsys):
    import os
    from unittest import mock

    from edge.cli import main

    with mock.patch.dict(os.environ, {"PORT": "-5"}):
        assert main(["doctor"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: http.port = '-5' (from PORT)")
