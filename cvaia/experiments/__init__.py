"""Notebook parameters and the experiments of each course problem.

Every notebook has one cell tagged ``parameters`` holding UPPER_CASE names: ``PROFILE``
("smoke" | "quick" | "full"), ``DATASET_ROOT``, ``DEVICE``, ``SEED`` and the experiment
sizes. A value left as ``None`` is filled in from the profile; papermill (or the workbook
runner) may inject any of them. The next cell calls::

    P = experiments.resolve("01", globals())

which collects the UPPER_CASE names, **fails loudly on unknown names** (papermill itself only
warns), fills every ``None`` from ``cvaia.experiments.pNN.PROFILES[PROFILE]`` and returns a
:class:`Params` (attribute and item access).

Each problem module ``pNN.py`` defines ``PROFILES = {"smoke": {...}, "quick": {...},
"full": {...}}`` (every profile names the same keys) and the functions the notebook calls to
build its experiment configs.
"""

from __future__ import annotations

import importlib
import os
from types import MappingProxyType
from typing import Any, Mapping

PROFILE_NAMES = ("smoke", "quick", "full")

#: Parameters every notebook has, with their defaults (None = decided at resolve time).
COMMON = MappingProxyType({
    "PROFILE": None,        # smoke | quick | full; default: $CVAIA_PROFILE, else quick on CPU, full on CUDA
    "DATASET_ROOT": "",     # "" = data/miniscapes when present, else data/synthetic
    "DEVICE": "auto",       # auto | cpu | cuda | mps
    "SEED": 0,
    "EXECUTOR": "inprocess",  # inprocess | local | slurm: where the grids' runs train (cvaia.cluster)
    "EXECUTOR_OPTIONS": None,  # e.g. {"partition": "gpu", "gpus_per_node": 1, "timeout_min": 120} for slurm
    "SOLUTIONS": True,      # exercise cells: True fills in cvaia's reference, False keeps the student's stubs
})


class ParameterError(ValueError):
    """A notebook parameter is unknown or has a bad value."""


class Params(dict):
    """The resolved parameters of a notebook: a dict with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.items())
        return f"Params({body})"


def problem_module(problem: str):
    """The module ``cvaia.experiments.p<problem>`` (``problem`` like "01")."""
    name = f"cvaia.experiments.p{problem}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise ParameterError(f"unknown problem {problem!r}: no module {name}") from exc
        raise


def default_profile(device: str = "auto") -> str:
    """``$CVAIA_PROFILE`` when set, else "full" on CUDA and "quick" elsewhere."""
    env = os.environ.get("CVAIA_PROFILE", "").strip()
    if env:
        return env
    if device.startswith("cuda"):
        return "full"
    if device == "auto":
        try:
            import torch

            if torch.cuda.is_available():
                return "full"
        except ImportError:  # pragma: no cover
            pass
    return "quick"


def _kind(value) -> str | None:
    """The parameter kind a default value asks for (None: anything goes)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    return None


def _check_type(problem: str, key: str, value, default) -> None:
    """A given parameter must have its default's kind (an int is fine for a float)."""
    want, got = _kind(default), _kind(value)
    if want is None or got == want or (want == "float" and got == "int"):
        return
    names = {"bool": "a boolean (True/False)", "int": "an integer", "float": "a number", "str": "a string",
             "list": "a list"}
    raise ParameterError(f"notebook {problem}: parameter {key} must be {names[want]} like its default "
                         f"{default!r}, got {value!r} ({type(value).__name__})")


def resolve(problem: str, namespace: Mapping[str, Any]) -> Params:
    """Resolve a notebook's parameters.

    ``namespace`` is usually the notebook's ``globals()``: every UPPER_CASE name in it is a
    parameter. Unknown names raise :class:`ParameterError` listing the known ones; ``None``
    values are filled from the profile.
    """
    module = problem_module(problem)
    profiles: Mapping[str, Mapping[str, Any]] = module.PROFILES
    known = set(COMMON) | set(profiles["quick"])
    given = {k: v for k, v in namespace.items()
             if k.isupper() and not k.startswith("_") and not callable(v)
             and not hasattr(v, "__file__")}  # skip modules imported under upper-case names
    unknown = sorted(set(given) - known)
    if unknown:
        raise ParameterError(
            f"notebook {problem}: unknown parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}")
    device = given.get("DEVICE") or COMMON["DEVICE"]
    profile = given.get("PROFILE") or default_profile(str(device))
    if profile not in PROFILE_NAMES:
        raise ParameterError(f"notebook {problem}: PROFILE must be one of {', '.join(PROFILE_NAMES)}, "
                             f"got {profile!r}")
    values: dict[str, Any] = dict(COMMON)
    values.update(profiles[profile])
    for key, value in given.items():
        if value is not None:
            _check_type(problem, key, value, values.get(key))
            values[key] = value
    values["PROFILE"] = profile
    missing = sorted(k for k in profiles["quick"] if k not in profiles[profile])
    if missing:  # pragma: no cover - guards the profile tables themselves
        raise ParameterError(f"profile {profile!r} of problem {problem} lacks {', '.join(missing)}")
    return Params(values)
from .common import record_headline  # noqa: E402,F401  (re-export for the notebooks)
