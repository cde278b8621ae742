"""Errors shared by modules at every level (kept here, below all of them, so imports run downward)."""


class ConfigError(ValueError):
    """A configuration value (flag, papermill parameter or keyword) is unknown or invalid."""
