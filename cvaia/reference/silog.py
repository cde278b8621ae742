"""The SILog loss in a few readable lines (the course's depth loss).

Checked for equality against :func:`cvaia.losses.silog`, which adds shape checks, dtype
promotion and a finite gradient at a perfect prediction.
"""

import torch


def silog(pred_m: torch.Tensor, target_m: torch.Tensor, lam: float = 0.15) -> torch.Tensor:
    """sqrt(Var(e) + λ·E[e]²) with e = log target − log pred, over the batch's valid pixels."""
    valid = target_m > 0                               # 0 marks invalid depth (sky, out of range)
    e = torch.log(target_m[valid]) - torch.log(pred_m[valid].clamp_min(1e-3))
    mean = e.mean()                                    # E[e]: the log of a global scale error
    var = (e * e).mean() - mean * mean                 # Var(e): unchanged by pred → s·pred
    return torch.sqrt(var + lam * mean * mean)         # = sqrt(E[e²] − (1 − λ)·E[e]²)
