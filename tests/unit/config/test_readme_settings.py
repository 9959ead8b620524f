"""The README's settings table is the one `freeflow settings` prints from the declarations."""

from pathlib import Path

from freeflow.cli import main
from freeflow.config.settings import SETTINGS

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_lists_every_setting_as_declared():
    text = README.read_text()
    for setting in SETTINGS:
        assert f"| `{setting.env}` | `{setting.default}` | {setting.help} |" in text, setting.env


def test_freeflow_settings_prints_the_readmes_table(capsys):
    """What an operator runs prints the table the README shows, header included, in the same order."""
    assert main(["settings"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == len(SETTINGS) + 2
    assert printed in README.read_text()
