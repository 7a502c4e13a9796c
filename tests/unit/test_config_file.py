"""Settings from a TOML file (``llmrec --config``, ``LLMREC_CONFIG``): the environment wins over the file
and the file over the defaults, sections are the nested settings, a key the settings do not know is an
error; ``llmrec config show`` masks every secret and ``llmrec config validate`` reports each problem."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.config_commands import MASK, settings_toml, toml_string
from cli.main import cli
from llmrec.settings import REPO_ROOT, Settings, SettingsError, load_settings, unknown_keys

EXAMPLE = REPO_ROOT / "llmrec.example.toml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LLMREC_* variable of the machine running the tests takes part."""
    for name in list(os.environ):
        if name.startswith("LLMREC_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "llmrec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_environment_over_file_over_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path, 'log_level = "WARNING"\n[kafka]\nbootstrap = "file:9092"\npartitions = 8\n')
    monkeypatch.setenv("LLMREC_KAFKA__BOOTSTRAP", "env:9092")
    settings = load_settings(config)
    assert settings.kafka.bootstrap == "env:9092"  # environment over file
    assert settings.kafka.partitions == 8 and settings.log_level == "WARNING"  # file over default
    assert settings.kafka.consumer_group == "llmrec-worker"  # default
    assert load_settings().kafka.bootstrap == "env:9092"  # no file: as before
    monkeypatch.delenv("LLMREC_KAFKA__BOOTSTRAP")
    assert load_settings(config).kafka.bootstrap == "file:9092"
    assert Settings().kafka.partitions == 4  # Settings() alone never reads a file


def test_sections_fill_the_nested_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(
        tmp_path,
        "[api]\nport = 6000\nrate_limit_per_s = 20.5\n[postgres]\npool_max_size = 3\n"
        'sslmode = "verify-full"\n[worker]\nfast_delivery = false\n',
    )
    # An environment variable of one section's field merges with the file's other fields of that section.
    monkeypatch.setenv("LLMREC_API__MAX_K", "50")
    settings = load_settings(config)
    assert (settings.api.port, settings.api.rate_limit_per_s, settings.api.max_k) == (6000, 20.5, 50)
    assert settings.postgres.pool_max_size == 3 and settings.postgres.sslmode == "verify-full"
    assert settings.worker.fast_delivery is False
    assert settings.api.host == "127.0.0.1"


def test_an_unknown_key_is_an_error_with_its_path(tmp_path: Path) -> None:
    config = write(tmp_path, 'colour = "blue"\n[kafka]\nbootstrapp = "x:1"\n[api]\nport = "high"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    problems = dict(caught.value.problems)
    assert set(problems) == {"colour", "kafka.bootstrapp", "api.port"}  # all at once, not one per run
    assert problems["kafka.bootstrapp"].startswith("unknown setting")
    assert "valid integer" in problems["api.port"]
    assert "kafka.bootstrapp: unknown setting" in str(caught.value)


def test_a_file_that_is_not_toml_says_so(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(write(tmp_path, "[kafka\nbootstrap = 1\n"))


def test_the_example_file_is_valid_and_every_key_in_it_is_known() -> None:
    """llmrec.example.toml loads to the defaults, and the keys it shows commented out are settings too."""
    assert load_settings(EXAMPLE).model_dump() == Settings().model_dump()
    text = EXAMPLE.read_text()
    uncommented = re.sub(r"^# (\w+ = )", r"\1", text, flags=re.MULTILINE)
    assert uncommented != text
    assert unknown_keys(tomllib.loads(uncommented)) == []


def test_show_masks_every_secret_and_says_where_values_came_from(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_username = "svc"\nsasl_password = "kafka-pw-1"\n'
        'ssl_key_password = "key-pw-2"\n[postgres]\ndsn = "postgresql://u:dsn-pw-3@db/llmrec"\n',
    )
    result = run("--config", str(config), "config", "show", env={"LLMREC_POSTGRES__PASSWORD": "env-pw-4"})
    assert result.exit_code == 0, result.output
    for secret in ("kafka-pw-1", "key-pw-2", "dsn-pw-3", "env-pw-4"):
        assert secret not in result.output
    shown = tomllib.loads(result.output)
    assert shown["kafka"]["sasl_password"] == shown["kafka"]["ssl_key_password"] == "**********"
    assert shown["postgres"]["dsn"] == shown["postgres"]["password"] == "**********"
    assert shown["kafka"]["sasl_username"] == "svc" and shown["api"]["port"] == 50051
    lines = result.output.splitlines()
    assert f'sasl_username = "svc"  # file {config}' in lines
    assert 'password = "**********"  # env LLMREC_POSTGRES__PASSWORD' in lines
    assert "port = 50051" in lines  # a default: no comment
    assert "# sasl_password_file is not set" in lines


def test_show_output_is_a_config_file_that_loads_back(tmp_path: Path) -> None:
    settings = Settings(log_level="DEBUG")
    copy = write(tmp_path, settings_toml(settings, {}), "copy.toml")
    loaded = load_settings(copy)
    assert loaded.log_level == "DEBUG" and loaded.api == settings.api and loaded.triton == settings.triton
    assert loaded.postgres.dsn.get_secret_value() == "**********"  # masked, not carried
    assert toml_string('a "q" \\ \x7f é') == '"a \\"q\\" \\\\ \\u007f é"'
    assert tomllib.loads(f"s = {toml_string(chr(0x1F600) + chr(1))}")["s"] == chr(0x1F600) + chr(1)
    assert MASK == '"**********"'


def test_the_log_level_option_is_shown_as_its_origin(tmp_path: Path) -> None:
    result = run("--log-level", "INFO", "config", "show")
    assert result.exit_code == 0, result.output
    assert 'log_level = "INFO"  # option --log-level' in result.output.splitlines()


def test_validate_a_good_and_a_bad_file(tmp_path: Path) -> None:
    good = write(tmp_path, '[kafka]\nbootstrap = "broker:9092"\n', "good.toml")
    result = run("config", "validate", str(good))
    assert result.exit_code == 0 and result.output.startswith("valid"), result.output

    bad = write(
        tmp_path, '[kafka]\nbootstrapp = "x"\nsecurity_protocol = "SSL"\n[api]\nport = "x"\n', "bad.toml"
    )
    result = run("config", "validate", str(bad))
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0].startswith("kafka.bootstrapp: unknown setting")
    assert lines[1].startswith("api.port: Input should be a valid integer")
    assert len(lines) == 2

    broken = write(tmp_path, "[api\n", "broken.toml")
    result = run("config", "validate", str(broken))
    assert result.exit_code == 2 and result.output.startswith(f"{broken}: not valid TOML")


def test_validate_defaults_to_the_group_file_even_when_it_does_not_load(tmp_path: Path) -> None:
    bad = write(tmp_path, "[worker]\nbatch_size = -\n")
    for args, env in (
        (["--config", str(bad), "config", "validate"], None),
        (["config", "validate"], {"LLMREC_CONFIG": str(bad)}),
    ):
        result = run(*args, env=env)
        assert result.exit_code == 2 and "not valid TOML" in result.output, result.output
    # Without any file: the environment alone.
    result = run("config", "validate", env={"LLMREC_API__PORT": "nope"})
    assert result.exit_code == 2 and result.output.startswith("api.port:")
    assert run("config", "validate").output.startswith("valid")


def test_a_command_with_an_invalid_config_stops_with_status_2(tmp_path: Path) -> None:
    bad = write(tmp_path, "[api]\nprocesses = 0\n")
    for args in (["--config", str(bad), "status"], ["--config", str(bad), "config", "show"]):
        result = run(*args)
        assert result.exit_code == 2
        assert "api.processes: Input should be greater than or equal to 1" in result.output
    result = run("--config", str(tmp_path / "missing.toml"), "status")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_the_group_reads_llmrec_config(tmp_path: Path) -> None:
    config = write(tmp_path, "[api]\nport = 6001\n")
    result = run("config", "show", env={"LLMREC_CONFIG": str(config)})
    assert result.exit_code == 0 and f"port = 6001  # file {config}" in result.output.splitlines()


def test_load_settings_reads_llmrec_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every entry point (python -m stream, python -m deploy.bootstrap, the CLI) through load_settings."""
    monkeypatch.setenv("LLMREC_CONFIG", str(write(tmp_path, "[worker]\nbatch_size = 99\n")))
    assert load_settings().worker.batch_size == 99
    assert Settings().worker.batch_size == 2048  # Settings() alone reads no file
