"""The root of FreeFlow's error hierarchy; each component's errors.py derives from it."""


class FreeFlowError(Exception):
    """An error whose message is meant for the operator."""


class SettingsError(FreeFlowError):
    """A setting has a value FreeFlow cannot use."""
