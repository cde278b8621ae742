"""Errors shared by modules at every level (kept here, below all of them, so imports run downward)."""


class ConfigError(ValueError):
    """A configuration value (flag, papermill parameter or keyword) is unknown or invalid."""


class ConfigNotice(UserWarning):
    """A configuration decision the user should know about (issued with :func:`warnings.warn`):
    e.g. ``--pretrained true`` using the shipped synthetic encoder because ImageNet weights are
    not cached, or a course flag that has no effect here. The CLI prints it as one line."""
