"""Where cvaia reads and writes: repository root, data, runs and figures directories.

Every location can be overridden by an environment variable so that tests and batch jobs
never touch a user's own runs or figures:

- ``CVAIA_DATA_DIR``    default ``<repo>/data``
- ``CVAIA_RUNS_DIR``    default ``<repo>/runs``
- ``CVAIA_FIGURES_DIR`` default ``<repo>/figures``

A relative value is resolved against the current directory of the process that reads it;
processes cvaia starts (notebook kernels, which run in ``notebooks/``; cluster jobs) get the
absolute folders the starting process resolved (:func:`absolute_environ`), so every one of
them reads and writes the same place.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (the folder holding ``cvaia/``, ``notebooks/`` and ``data/``).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Name of the default synthetic data set below the data directory.
SYNTHETIC_NAME = "synthetic"
#: Name under which the real course data set is expected below the data directory.
MINISCAPES_NAME = "miniscapes"


def _env_dir(var: str, default: Path) -> Path:
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    """Folder holding the data sets (``CVAIA_DATA_DIR`` or ``<repo>/data``)."""
    return _env_dir("CVAIA_DATA_DIR", REPO_ROOT / "data")


def runs_dir() -> Path:
    """Folder of the run store (``CVAIA_RUNS_DIR`` or ``<repo>/runs``)."""
    return _env_dir("CVAIA_RUNS_DIR", REPO_ROOT / "runs")


def figures_dir() -> Path:
    """Folder where exported figures go (``CVAIA_FIGURES_DIR`` or ``<repo>/figures``)."""
    return _env_dir("CVAIA_FIGURES_DIR", REPO_ROOT / "figures")


#: The environment variables of the locations.
LOCATION_VARIABLES = ("CVAIA_DATA_DIR", "CVAIA_RUNS_DIR", "CVAIA_FIGURES_DIR")


def absolute_environ() -> dict[str, str]:
    """``{variable: absolute folder}`` for :data:`LOCATION_VARIABLES`, resolved here and now
    (against this process's current directory): what a child process is handed so that a
    relative ``CVAIA_RUNS_DIR=runs`` means the same folder there, whatever its directory."""
    return {"CVAIA_DATA_DIR": str(data_dir()), "CVAIA_RUNS_DIR": str(runs_dir()),
            "CVAIA_FIGURES_DIR": str(figures_dir())}


def synthetic_root() -> Path:
    """Root of the default synthetic data set."""
    return data_dir() / SYNTHETIC_NAME


def miniscapes_root() -> Path:
    """Where the real course data set is expected."""
    return data_dir() / MINISCAPES_NAME


def default_dataset_root() -> Path:
    """The real miniscapes data set when it is present, else the synthetic set."""
    real = miniscapes_root()
    if (real / "train" / "rgb").is_dir():
        return real
    return synthetic_root()


def resolve_dataset_root(root: str | os.PathLike | None) -> Path:
    """``root`` as an absolute path; an empty value means :func:`default_dataset_root`."""
    if root is None or str(root).strip() == "":
        return default_dataset_root()
    return Path(root).expanduser().resolve()
