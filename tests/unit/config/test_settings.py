"""Settings are read from the environment and validated with messages naming the variable."""

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


@pytest.mark.parametrize("env, value", [("FREEFLOW_SCOPE", "planet"), ("FREEFLOW_RECONCILE_INTERVAL", "-1"),
                                        ("FREEFLOW_LOG_LEVEL", "LOUD")])
def test_bad_values_name_the_variable(env, value):
    with pytest.raises(SettingsError, match=env):
        load_settings({env: value})
