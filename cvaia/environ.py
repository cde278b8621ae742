"""The process environment: environment variables set for one block (a notebook kernel's,
a sweep job's torchrun variables)."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def temporary_environ(values):
    """Set the environment variables ``values`` (a mapping) for the block, then restore the
    old values (removing the ones that were unset)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
