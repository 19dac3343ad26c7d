"""The one parser of WASMHOST_* variables, and the settings that read through it."""

from __future__ import annotations

import pytest

from wasmhost._env import env_flag, env_float, env_int, env_str
from wasmhost.gateway import GatewayConfig
from wasmhost.services import Settings


@pytest.mark.parametrize("text", ["1", "true", "TRUE", " yes ", "On"])
def test_flag_true(text: str) -> None:
    assert env_flag("X", False, env={"X": text}) is True


@pytest.mark.parametrize("text", ["0", "false", "No", " off "])
def test_flag_false(text: str) -> None:
    assert env_flag("X", True, env={"X": text}) is False


@pytest.mark.parametrize("default", [True, False])
def test_unset_or_blank_is_the_default(default: bool) -> None:
    assert env_flag("X", default, env={}) is default
    assert env_flag("X", default, env={"X": "  "}) is default
    assert env_int("X", 7, env={"X": ""}) == 7
    assert env_float("X", 2.5, env={}) == 2.5
    assert env_str("X", "d", env={"X": " "}) == "d"


@pytest.mark.parametrize("text", ["ture", "2", "enabled", "y"])
def test_a_flag_that_does_not_parse_is_an_error_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="WASMHOST_X must be one of"):
        env_flag("WASMHOST_X", False, env={"WASMHOST_X": text})


def test_numbers() -> None:
    assert env_int("X", 1, env={"X": " 42 "}) == 42
    assert env_int("X", 1, minimum=0, env={"X": "0"}) == 0
    assert env_float("X", 1.0, env={"X": "0.25"}) == 0.25
    for text, match in (("lots", "positive integer"), ("0", "positive integer"), ("1e3", "positive integer")):
        with pytest.raises(ValueError, match=f"X must be a {match}"):
            env_int("X", 1, env={"X": text})
    with pytest.raises(ValueError, match="at least 5"):
        env_int("X", 5, minimum=5, env={"X": "4"})
    for text in ("soon", "-1", "inf", "nan"):
        with pytest.raises(ValueError, match="X must be a (finite )?number"):
            env_float("X", 1.0, env={"X": text})


def test_settings_read_through_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMHOST_ALLOW_PRIVATE_ENDPOINTS", "on")
    monkeypatch.setenv("WASMHOST_DEFAULT_OUTBOX", "yes")
    monkeypatch.setenv("WASMHOST_DISPATCHER_TTL", "2.5")
    settings = Settings.from_env("sqlite:///x.db")
    assert settings.allow_private_endpoints and settings.defaults.credentials == {"outbox": {}}
    assert settings.dispatcher_ttl == 2.5
    monkeypatch.setenv("WASMHOST_ALLOW_PRIVATE_ENDPOINTS", "ture")
    with pytest.raises(ValueError, match="WASMHOST_ALLOW_PRIVATE_ENDPOINTS"):
        Settings.from_env("sqlite:///x.db")
    monkeypatch.delenv("WASMHOST_ALLOW_PRIVATE_ENDPOINTS")
    monkeypatch.setenv("WASMHOST_DISPATCHER_TTL", "soon")
    with pytest.raises(ValueError, match="WASMHOST_DISPATCHER_TTL must be a number"):
        Settings.from_env("sqlite:///x.db")
    monkeypatch.setenv("WASMHOST_SENDS_PER_MINUTE", "0")
    with pytest.raises(ValueError, match="WASMHOST_SENDS_PER_MINUTE must be a positive integer"):
        GatewayConfig.from_env()
