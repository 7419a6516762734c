"""PyTorch reference of the DCASE 2026 baseline losses, written here from the official
``class_aware_pit.py`` (separator) and ``label_loss.py`` (tagger).

Used only by parity tests. Labels follow the official encodings: the separator's per-slot
18-dim one-hots with an all-zero vector for silence (``silence_label_mode="zeros"``), the
tagger's 19-dim one-hots with silence as the last class (``"onehot"``).
"""

from __future__ import annotations

from itertools import permutations

import torch
import torch.nn.functional as F
from torchmetrics.functional.audio import permutation_invariant_training, signal_noise_ratio

EXCLUDED = 1e9


def class_aware_pit(pred: torch.Tensor, target: torch.Tensor, onehots: torch.Tensor):
    """``pred, target (B, S, L)``, ``onehots (B, S, 18)`` → per-mixture loss ``(B,)`` float64.

    Cost ``[b, i, j]`` = −SNR(pred j, target i) for equal, non-silent labels; 0 on a silent
    diagonal; +1e9 elsewhere; the minimum over permutations of the mean over slots.
    """
    b, s = pred.shape[:2]
    cost = torch.full((b, s, s), EXCLUDED, dtype=torch.float64)
    silent = (onehots == 0).all(dim=2)
    either_silent = silent[:, :, None] | silent[:, None, :]
    diag = torch.arange(s)
    cost[:, diag, diag] = torch.where(silent, 0.0, cost[:, diag, diag])
    same = (onehots[:, :, None, :] == onehots[:, None, :, :]).all(dim=3) & ~either_silent
    for i in range(s):
        for j in range(s):
            value = -signal_noise_ratio(pred[:, j], target[:, i]).to(torch.float64)
            cost[:, i, j] = torch.where(same[:, i, j], value, cost[:, i, j])
    perms = torch.tensor(list(permutations(range(s))))  # (P, S)
    per_perm = torch.stack([cost[:, diag, p].mean(dim=1) for p in perms], dim=1)  # (B, P)
    return per_perm.min(dim=1).values


def slot_pit_cross_entropy(logits: torch.Tensor, onehots: torch.Tensor):
    """``logits (B, S, 19)``, one-hot targets ``(B, S, 19)`` → per-mixture loss ``(B,)``."""

    def ce(pred, target):  # (B, C) logits vs (B, C) probabilities → (B,)
        return F.cross_entropy(pred, target, reduction="none")

    best, _ = permutation_invariant_training(logits, onehots, ce, mode="speaker-wise",
                                             eval_func="min")
    return best
