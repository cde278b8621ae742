"""Subcommands of ``python -m cvaia``."""
