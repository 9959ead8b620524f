"""The README's settings table is the one `freeflow settings` prints from the declarations."""

from pathlib import Path

from freeflow.config.settings import SETTINGS

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_lists_every_setting_as_declared():
    text = README.read_text()
    for setting in SETTINGS:
        assert f"| `{setting.env}` | `{setting.default}` | {setting.help} |" in text, setting.env
