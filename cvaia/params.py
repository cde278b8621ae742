"""Per-module parameter tables (the report's "parameters per module" table).

One row per top-level module group of a model: ``encoder``, ``aspp``, ``decoder``, …;
per-task modules (entries of a :class:`~torch.nn.ModuleDict`) get their own rows such as
``aspp.semseg`` or ``decoder.depth``, and heads that mark themselves with
``table_groups = True`` (the adaptive-depth and transformer heads) are split into their parts
(``depth_head.query_conv``, ``depth_head.transformer``, ``depth_head.bin_depth``, …).
Parameters held directly by a model get a row each. Rows with no parameters are left out.
"""

from __future__ import annotations

import torch
from torch import nn


def _count(module: nn.Module, seen: set) -> int:
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _rows(prefix: str, module: nn.Module, seen: set, table: dict) -> None:
    for name, p in module.named_parameters(recurse=False):
        if id(p) not in seen:
            seen.add(id(p))
            table[f"{prefix}{name}"] = p.numel()
    for name, child in module.named_children():
        if isinstance(child, nn.ModuleDict) or getattr(child, "table_groups", False):
            _rows(f"{prefix}{name}.", child, seen, table)
        else:
            n = _count(child, seen)
            if n:
                table[f"{prefix}{name}"] = n


def parameter_table(model: nn.Module) -> dict[str, int]:
    """``{row name: number of parameters}`` for ``model`` (shared parameters counted once).

    The values sum to the model's total number of parameters.
    """
    table: dict[str, int] = {}
    _rows("", model, set(), table)
    return table


def format_parameter_table(table: dict[str, int]) -> str:
    """A plain-text table with a share column and a total row."""
    total = sum(table.values())
    width = max([len("total")] + [len(k) for k in table])
    lines = [f"{'module':<{width}}  {'parameters':>12}  {'share':>6}", "-" * (width + 22)]
    for name, n in table.items():
        lines.append(f"{name:<{width}}  {n:>12,}  {100.0 * n / max(total, 1):>5.1f}%")
    lines.append("-" * (width + 22))
    lines.append(f"{'total':<{width}}  {total:>12,}  {100.0 if total else 0.0:>5.1f}%")
    lines.append(f"{'':<{width}}  {total / 1e6:>11.2f}M")
    return "\n".join(lines)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters()))
