"""PyTorch reference of the DCASE 2026 evaluation metrics, written here from the official
``s5capi_metric.py`` (``S5ClassAwareMetric``) and ``label_metric.py`` (``LabelMetric``).

Used only by parity tests. Labels are class-name strings with ``"silence"`` for an empty slot;
waveforms are ``(n, samples)`` float32 tensors, the mixture is channel 0 ``(samples,)``.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations, permutations

import torch
from torchmetrics.functional.audio import signal_noise_ratio

SILENCE = "silence"


def _paired_improvements(est: torch.Tensor, ref: torch.Tensor, mixture: torch.Tensor):
    """One class with ``n_est, n_ref ≥ 1``: improvements of the best-SDR pairing plus zeros."""
    k = min(est.shape[0], ref.shape[0])
    candidates = [(list(r), list(e)) for r in combinations(range(ref.shape[0]), k)
                  for e in permutations(range(est.shape[0]), k)]
    est_sel = torch.stack([est[e] for _, e in candidates])  # (n_cand, k, samples)
    ref_sel = torch.stack([ref[r] for r, _ in candidates])
    sdr = signal_noise_ratio(est_sel, ref_sel)  # (n_cand, k)
    sdr_mix = signal_noise_ratio(mixture.expand_as(ref_sel), ref_sel)
    best = int(torch.argmax(sdr.mean(dim=1)))  # chosen by SDR, first maximum
    out = sdr[best] - sdr_mix[best]
    extra = abs(est.shape[0] - ref.shape[0])
    return torch.cat([out, torch.zeros(extra)]) if extra else out


def capi_sdri(est_labels, est_wf, ref_labels, ref_wf, mixture):
    """CAPI-SDRi of one mixture (float), or None when neither side names a class."""
    classes = (set(est_labels) | set(ref_labels)) - {SILENCE}
    if not classes:
        return None
    values = []
    for c in classes:
        e = [w for lab, w in zip(est_labels, est_wf, strict=True) if lab == c]
        r = [w for lab, w in zip(ref_labels, ref_wf, strict=True) if lab == c]
        if not e:
            values.append(torch.zeros(len(r)))
        elif not r:
            values.append(torch.zeros(len(e)))
        else:
            values.append(_paired_improvements(torch.stack(e), torch.stack(r), mixture))
    return torch.cat(values).mean().item()


def label_counts(est_labels, ref_labels):
    """``(mixture correct, tp, fp, fn)`` of one mixture, labels as multisets."""
    est = Counter(lab for lab in est_labels if lab != SILENCE)
    ref = Counter(lab for lab in ref_labels if lab != SILENCE)
    tp = sum((est & ref).values())
    return est == ref, tp, sum(est.values()) - tp, sum(ref.values()) - tp


def label_metrics(est_sets, ref_sets):
    """``(accuracy_mix %, accuracy_src %)`` over a set of mixtures."""
    rows = [label_counts(e, r) for e, r in zip(est_sets, ref_sets, strict=True)]
    tp, fp, fn = (sum(r[i] for r in rows) for i in (1, 2, 3))
    return 100 * sum(r[0] for r in rows) / len(rows), 100 * tp / (tp + fp + fn)
