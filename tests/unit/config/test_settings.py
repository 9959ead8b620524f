"""Settings are read from the environment and validated with messages naming the variable."""

import re

import pytest

from freeflow.config.settings import SETTINGS, Settings, load_settings
from freeflow.errors import SettingsError


def test_defaults_match_the_declarations():
    settings = load_settings({})
    for setting in SETTINGS:
        assert getattr(settings, setting.name) == setting.parse(setting.default)
    assert settings == Settings()


def test_values_come_from_the_environment():
    settings = load_settings({"FREEFLOW_SCOPE": "global", "FREEFLOW_RECONCILE_INTERVAL": "0.5"})
    assert settings.scope == "global" and settings.reconcile_interval == 0.5


@pytest.mark.parametrize("env, value, said", [
    ("FREEFLOW_SCOPE", "planet", "must be 'local'"),
    ("FREEFLOW_RECONCILE_INTERVAL", "-1", "must be greater than zero"),
    ("FREEFLOW_LOG_LEVEL", "LOUD", "must be one of DEBUG"),
    ("FREEFLOW_GRAFT_PORT", "0", "must be a TCP port"),
    ("FREEFLOW_GRAFT_PORT", "70000", "must be a TCP port"),
    ("FREEFLOW_GRAFT_PORT", "x", "invalid literal"),
    ("FREEFLOW_ROUTER", "maybe", "must be 1 or 0"),
    ("FREEFLOW_CHANNEL_MEMORY", "0", "whole number greater than zero"),
    ("FREEFLOW_BRIDGE_TIMEOUT", "1.5", "invalid literal"),
    ("FREEFLOW_ORCHESTRATOR_THREADS", "0", "whole number greater than zero"),
    ("FREEFLOW_LEASE_TTL", "0", "must be greater than zero"),
    ("FREEFLOW_GRAFT_BUFFER", "-4", "whole number greater than zero"),
    ("FREEFLOW_GRAFT_WAIT", "0", "must be greater than zero"),
    ("FREEFLOW_GRAFT_WAIT", "2", "at most 1.5 s: the preload library and the Python client wait 2 s"),
])
def test_bad_values_name_the_variable_and_what_it_takes(env, value, said):
    with pytest.raises(SettingsError, match=env) as raised:
        load_settings({env: value})
    assert said in str(raised.value) and f"{value!r} is invalid" in str(raised.value)


@pytest.mark.parametrize("value, expected", [("1", True), ("on", True), ("YES", True), ("0", False), ("off", False)])
def test_switches_take_the_usual_spellings(value, expected):
    assert load_settings({"FREEFLOW_ROUTER": value}).router is expected


def test_an_unknown_override_is_refused():
    with pytest.raises(SettingsError, match="unknown settings: bogus"):
        load_settings({}, bogus=1)


def test_the_longest_graft_wait_ends_before_the_clients_give_up():
    """The router decides whether a connection is grafted, not a client that stopped waiting for its answer."""
    from pathlib import Path

    from freeflow.client.graft import ROUTER_TIMEOUT
    from freeflow.config.settings import MAX_GRAFT_WAIT

    header = (Path(__file__).parents[3] / "client" / "preload" / "router.h").read_text()
    [library_ms] = re.findall(r"#define FF_GRAFT_MS (\d+)", header)
    assert min(ROUTER_TIMEOUT, int(library_ms) / 1000) >= MAX_GRAFT_WAIT + 0.5
