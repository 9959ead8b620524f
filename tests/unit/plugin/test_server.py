"""The plugin's start: settings it cannot work with stop it before it serves, with the variable named."""

from __future__ import annotations

import pytest

from freeflow.config.settings import load_settings
from freeflow.errors import SettingsError
from freeflow.plugin.server import serve


def test_an_alias_socket_in_a_missing_folder_is_refused_before_anything_starts(tmp_path):
    settings = load_settings({"FREEFLOW_ROUTER": "0", "FREEFLOW_SOCKET": str(tmp_path / "run" / "freeflow.sock"),
                              "FREEFLOW_STATE_DIR": str(tmp_path / "state"),
                              "FREEFLOW_ALIAS_SOCKET": str(tmp_path / "missing" / "freeflow.sock")})
    with pytest.raises(SettingsError, match=f"FREEFLOW_ALIAS_SOCKET: folder {tmp_path / 'missing'} is missing"):
        serve(settings)
    assert not (tmp_path / "run" / "freeflow.sock").exists()
