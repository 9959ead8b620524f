"""Settings of every FreeFlow daemon, declared once and validated at start-up."""

from freeflow.config.settings import SETTINGS, Setting, Settings, load_settings

__all__ = ["SETTINGS", "Setting", "Settings", "load_settings"]
