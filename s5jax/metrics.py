"""Separation and tagging metrics and losses (spec §5.2–5.5, §6.2; DCASE 2026: dcase2026.md).

``snr``, ``si_snr``, ``snr_loss`` and ``bce`` accept numpy or JAX arrays: with JAX inputs they
use ``jax.numpy`` (jit-able, batched over leading axes, differentiable); with numpy inputs they
stay in numpy and keep the input dtype. The DCASE 2026 losses ``class_aware_pit_loss``
(separator) and ``slot_pit_cross_entropy`` (tagger) are JAX, jit-able and vectorised over the
slot permutations. ``class_aware_sdri`` (CA-SDRi 2025 = CAPI-SDRi 2026), ``label_accuracy``,
``source_accuracy``, ``average_precision`` (the tagger's validation mAP) and ``per_class`` are
numpy-only evaluation helpers for one mixture / a list of mixtures; they serve both years.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from s5jax import labels as L

# PyTorch's binary_cross_entropy clamps each log term from below at -100.
_LOG_FLOOR = -100.0
# ... and its backward divides by max(p·(1 − p), 1e-12).
_BCE_GRAD_EPS = 1e-12


def _xp(*arrays: Any):
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _eps(x) -> float:
    # torchmetrics uses the machine epsilon of the estimate's dtype (1.1920929e-07 for float32).
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    return float(jnp.finfo(dtype).eps)


def _as_float(xp, x):
    x = xp.asarray(x)
    return x if xp.issubdtype(x.dtype, xp.floating) else x.astype(xp.float32)


def _signal_pair(name: str, estimate, reference):
    """``(xp, estimate, reference, eps)``: float arrays of one shape and torchmetrics' epsilon."""
    xp = _xp(estimate, reference)
    est, ref = _as_float(xp, estimate), _as_float(xp, reference)
    if est.shape != ref.shape:
        raise ValueError(f"{name}: estimate {est.shape} and reference {ref.shape} differ in shape")
    return xp, est, ref, _eps(est)


def snr(estimate, reference):
    """SNR in dB over the last axis, as torchmetrics ``signal_noise_ratio(zero_mean=False)``.

    ``10·log10((Σ s² + ε) / (Σ (s − ŝ)² + ε))`` with ε the machine epsilon of the estimate's
    dtype (float32: 1.1920929e-07); no mean removal, no rescaling.

    Args:
      estimate, reference: ``(..., samples)``, same shape.

    Returns:
      ``(...)`` in the inputs' float dtype.
    """
    xp, est, ref, eps = _signal_pair("snr", estimate, reference)
    num = xp.sum(ref**2, axis=-1) + eps
    den = xp.sum((ref - est) ** 2, axis=-1) + eps
    return 10 * xp.log10(num / den)


def si_snr(estimate, reference):
    """Scale-invariant SNR (SI-SDR) in dB, as torchmetrics ``scale_invariant_signal_noise_ratio``.

    Both signals are made zero-mean over the last axis; then with ``α = (⟨ŝ, s⟩ + ε) / (‖s‖² + ε)``
    the value is ``10·log10((‖α s‖² + ε) / (‖α s − ŝ‖² + ε))``.

    Args:
      estimate, reference: ``(..., samples)``, same shape.

    Returns:
      ``(...)`` in the inputs' float dtype.
    """
    xp, est, ref, eps = _signal_pair("si_snr", estimate, reference)
    ref = ref - xp.mean(ref, axis=-1, keepdims=True)
    est = est - xp.mean(est, axis=-1, keepdims=True)
    alpha = (xp.sum(est * ref, axis=-1, keepdims=True) + eps) / (
        xp.sum(ref**2, axis=-1, keepdims=True) + eps
    )
    target = alpha * ref
    num = xp.sum(target**2, axis=-1) + eps
    den = xp.sum((target - est) ** 2, axis=-1) + eps
    return 10 * xp.log10(num / den)


def snr_loss(estimate, reference, active=None):
    """Negative SNR averaged over all ``batch·slots`` slots, inactive slots contributing 0.

    ``−(1/(B·S)) Σ_{b,s} m_{b,s} SNR(ŝ_{b,s}, s_{b,s})`` (spec §5.4, ResUNetK: the mean is over
    all slots, not over active ones). With one slot and everything active this is the ResUNet
    loss ``−mean_b SNR`` (§5.3).

    Args:
      estimate, reference: ``(batch, slots, samples)``.
      active: bool ``(batch, slots)``; None means all active.

    Returns:
      scalar loss.
    """
    xp = _xp(estimate, reference, active)
    values = snr(estimate, reference)
    if active is not None:
        active = xp.asarray(active)
        if active.shape != values.shape:
            raise ValueError(f"snr_loss: active {active.shape}, expected {values.shape}")
        values = xp.where(active, values, xp.zeros((), values.dtype))
    return -xp.mean(values)


def bce(probabilities, targets):
    """Binary cross-entropy on probabilities, mean over all elements (PyTorch semantics).

    ``mean[−y·max(log p, −100) − (1 − y)·max(log(1 − p), −100)]``: the clamp makes p = 0 or 1
    finite (a wrong certain prediction costs 100).

    Args:
      probabilities: ``(..., classes)`` in [0, 1].
      targets: same shape, in [0, 1] (multi-hot in practice).
    """
    xp = _xp(probabilities, targets)
    p = _as_float(xp, probabilities)
    y = xp.asarray(targets).astype(p.dtype)
    if p.shape != y.shape:
        raise ValueError(f"bce: probabilities {p.shape} and targets {y.shape} differ in shape")
    if xp is jnp:
        return jnp.mean(_bce_terms(p, y))
    with np.errstate(divide="ignore"):  # log(0) = -inf before the clamp, as in PyTorch
        return np.mean(_clamped_terms(np, p, y))


def _clamped_terms(xp, p, y):
    """Element-wise ``−y·max(log p, −100) − (1 − y)·max(log(1 − p), −100)``."""
    log_p, log_1mp = xp.maximum(xp.log(p), _LOG_FLOOR), xp.maximum(xp.log1p(-p), _LOG_FLOOR)
    return -(y * log_p) - (1 - y) * log_1mp


@jax.custom_vjp
def _bce_terms(p: jax.Array, y: jax.Array) -> jax.Array:
    """Element-wise BCE with PyTorch's gradient. Differentiating the clamped logs instead gives
    0 · ∞ = NaN wherever a probability is exactly 0 or 1 (a sigmoid of a logit above ~17 in
    float32), so the training step guarding against NaN skipped a trained tagger's steps."""
    return _clamped_terms(jnp, p, y)


def _bce_terms_fwd(p, y):
    return _bce_terms(p, y), (p, y)


def _bce_terms_bwd(res, g):
    # ATen's binary_cross_entropy_backward and binary_cross_entropy_target_backward (whose logs
    # are not clamped: ±inf at p = 0 or 1, as in PyTorch; targets are data in training).
    p, y = res
    return g * (p - y) / jnp.maximum(p * (1 - p), _BCE_GRAD_EPS), g * (jnp.log1p(-p) - jnp.log(p))


_bce_terms.defvjp(_bce_terms_fwd, _bce_terms_bwd)


# --------------------------------------------------------------------------------------------
# Permutation-invariant losses of the DCASE 2026 baseline (jit-able, batched, differentiable).

# Value of a forbidden estimate↔reference pairing (the official fills its metric matrix with
# +1e9); any permutation using one loses to the identity, which is always allowed.
PIT_EXCLUDED = 1e9


@functools.cache
def _permutations(n: int) -> np.ndarray:
    """``int32 (n!, n)``: ``itertools.permutations(range(n))`` in its order."""
    return np.asarray(list(itertools.permutations(range(n))), np.int32).reshape(-1, n)


def _min_over_permutations(cost: jnp.ndarray) -> jnp.ndarray:
    """``cost (B, S_ref, S_est)`` → ``(B,)``: ``min_p mean_s cost[:, s, p[s]]`` over all S! p."""
    s = cost.shape[-1]
    perms = _permutations(s)  # (P, S)
    per_perm = cost[:, np.arange(s)[None, :], perms]  # (B, P, S): reference s ↔ estimate p[s]
    return jnp.min(jnp.mean(per_perm, axis=-1), axis=-1)


def class_aware_pit_loss(estimates, references, labels) -> jnp.ndarray:
    """Class-aware PIT negative SNR per mixture (DCASE 2026 separator loss), jit-able.

    As the official ``class_aware_permutation_invariant_training`` with ``−SNR``: a cost matrix
    ``[i, j]`` (reference slot i, estimate slot j) holds ``−SNR(ŝ_j, s_i)`` (torchmetrics SNR,
    no mean removal) where slots i and j carry the same non-silence label, 0 on the diagonal
    of a silence slot, and ``PIT_EXCLUDED`` elsewhere; the loss is the minimum over the S!
    permutations of the mean over all S slots (silence slots count in the divisor with 0). The
    identity permutation is always allowed, so the minimum is finite. The official training
    loss is the batch mean of this.

    Args:
      estimates: ``(B, S, L)`` separated waveforms, slot j answering the query ``labels[:, j]``.
      references: ``(B, S, L)`` dry targets (zeros in silence slots).
      labels: ``int32 (B, S)`` class per slot, ``-1`` for silence (repeats allowed).

    Returns:
      ``(B,)`` float32 loss per mixture.
    """
    est = jnp.asarray(estimates, jnp.float32)
    ref = jnp.asarray(references, jnp.float32)
    labels = jnp.asarray(labels)
    if est.ndim != 3 or est.shape != ref.shape or labels.shape != est.shape[:2]:
        raise ValueError(
            f"class_aware_pit_loss: estimates {est.shape}, references {ref.shape}, labels "
            f"{labels.shape}: expected (B, S, L), (B, S, L), (B, S)"
        )
    s = est.shape[1]
    e, r = jnp.broadcast_arrays(est[:, None, :, :], ref[:, :, None, :])  # (B, S_ref, S_est, L)
    neg_snr = -snr(e, r)  # (B, S_ref, S_est)
    silent = labels < 0
    allowed = (labels[:, :, None] == labels[:, None, :]) & ~silent[:, :, None] & ~silent[:, None, :]
    cost = jnp.where(allowed, neg_snr, jnp.float32(PIT_EXCLUDED))
    cost = jnp.where(jnp.eye(s, dtype=bool) & silent[:, :, None], jnp.float32(0.0), cost)
    return _min_over_permutations(cost)


def slot_pit_cross_entropy(logits, labels) -> jnp.ndarray:
    """Slot-permutation-invariant cross-entropy per mixture (DCASE 2026 tagger loss), jit-able.

    As the official ``label_loss`` (torchmetrics ``permutation_invariant_training``,
    speaker-wise, ``eval_func="min"``, metric ``F.cross_entropy(reduction="none")`` on one-hot
    targets): ``cost[i, j] = −log softmax(logits_j)[y_i]``, the minimum over the S!
    permutations of the mean over slots. A silence slot's target is the last class
    (``silence_label_mode="onehot"``: class 18 of 19).

    Args:
      logits: ``(B, S, C)`` slot outputs (``C`` = 18 classes + silence).
      labels: ``int32 (B, S)`` class per slot, ``-1`` for silence.

    Returns:
      ``(B,)`` float32 loss per mixture (the official training loss is its batch mean).
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"slot_pit_cross_entropy: logits {logits.shape}, labels {labels.shape}: expected "
            "(B, S, C) and (B, S)"
        )
    c = logits.shape[-1]
    target = jnp.where(labels < 0, c - 1, labels)
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    # A gather, not a one-hot matmul: exact at any matmul precision (TF32 on GPUs).
    cost = -jax.vmap(lambda lp, y: lp[:, y].T)(log_p, target)  # (B, S_ref, S_est)
    return _min_over_permutations(cost)


# --------------------------------------------------------------------------------------------
# Class-aware evaluation of one mixture (spec §6.2), generalised to repeated classes.


@dataclasses.dataclass(frozen=True)
class ClassAwareResult:
    """CA-SDRi (or CA-SI-SDRi) of one mixture.

    Attributes:
      value: mean over TP ∪ FP ∪ FN of the improvement (TP) or 0 (FP, FN), in dB; NaN when
        the mixture has neither estimates nor references (such mixtures are excluded from
        :func:`mean_value`).
      tp, fp, fn: counts (a class present twice counts twice).
      improvements: class index → improvements (dB) of its true-positive pairs.
      fp_classes, fn_classes: class index of every false positive / false negative.
    """

    value: float
    tp: int
    fp: int
    fn: int
    improvements: dict[int, list[float]]
    fp_classes: list[int]
    fn_classes: list[int]


_METRICS = {"snr": snr, "si_snr": si_snr}


def _present(label_list: Iterable[Any], rows: np.ndarray, what: str):
    """Class indices and rows of the non-empty slots (``-1`` and ``"silence"`` are skipped)."""
    label_list = list(label_list)
    if len(label_list) != rows.shape[0]:
        raise ValueError(f"{what}: {len(label_list)} labels for {rows.shape[0]} signals")
    keep = [
        (L.class_index(lab), i)
        for i, lab in enumerate(label_list)
        if not (lab == L.SILENCE or (isinstance(lab, (int, np.integer)) and lab == L.EMPTY))
    ]
    return [c for c, _ in keep], rows[[i for _, i in keep]]


def _signals(x: Any, samples: int, what: str) -> np.ndarray:
    """``(n, samples)`` float32; accepts ``(n, 1, samples)`` (the baseline's layout) and ``[]``."""
    a = np.asarray(x, np.float32)
    if a.size == 0:
        return a.reshape(0, samples)
    if a.ndim == 3 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 2 or a.shape[1] != samples:
        raise ValueError(f"{what} of shape {a.shape}: expected (n, {samples})")
    return a


def _best_pairing(score: np.ndarray) -> tuple[list[tuple[int, int]], float]:
    """Pairs (est, ref) of a score matrix ``(n_est, n_ref)`` with the highest mean score.

    ``k = min(n_est, n_ref)`` pairs, searched as the official CAPI-SDRi does: references
    ``itertools.combinations(range(n_ref), k)`` (outer) × estimates
    ``itertools.permutations(range(n_est), k)`` (inner), reference ``r[m]`` paired with
    estimate ``e[m]``; the float32 mean over the k pairs is compared and the first maximum wins
    (``torch.argmax``), which decides ties such as two all-zero estimates. At most 6 candidates
    for 3 sources.

    Returns:
      ``(pairs sorted by estimate, summed score of the pairs)``.
    """
    n_est, n_ref = score.shape
    k = min(n_est, n_ref)
    s32 = np.asarray(score, np.float32)
    best, best_pairs = -math.inf, []
    for rp in itertools.combinations(range(n_ref), k):
        for ep in itertools.permutations(range(n_est), k):
            mean = float(np.mean(s32[list(ep), list(rp)], dtype=np.float32))
            if mean > best or not best_pairs:
                best, best_pairs = mean, list(zip(ep, rp, strict=True))
    return sorted(best_pairs), float(sum(float(score[i, j]) for i, j in best_pairs))


def class_aware_sdri(
    est_labels: Sequence[int | str],
    estimates: np.ndarray,
    ref_labels: Sequence[int | str],
    references: np.ndarray,
    mixture_ref: np.ndarray,
    metric: str = "snr",
) -> ClassAwareResult:
    """Class-aware SDR improvement of one mixture (spec §6.2; ``metric="si_snr"``: CA-SI-SDRi).

    For each class c with ``e`` estimates and ``r`` references: ``min(e, r)`` true positives,
    paired estimate↔reference as the official DCASE 2026 CAPI-SDRi (``S5ClassAwareMetric``)
    does: the pairing with the highest mean ``metric(ŝ, s)`` (the SDR itself, not the
    improvement; ties to the first candidate in the official search order, see
    ``_best_pairing``), each pair then reporting its improvement ``metric(ŝ, s) − metric(y₀, s)``;
    the other ``e − min`` are false positives and ``r − min`` false negatives, each contributing
    0. The value is the sum of TP improvements divided by ``TP + FP + FN``. With distinct labels
    this is exactly the DCASE 2025 ``ca_metric``; with repeats it is the 2026 CAPI-SDRi. A
    mixture without any (non-silence) estimate or reference is not scored (NaN; the official
    returns None), and :func:`mean_value` skips it.

    Signals are cast to float32 and the metric is computed in float32 (as the baseline does on
    its float32 tensors); the sums over pairs are float64.

    Args:
      est_labels: class of each estimate (indices or names; ``-1``/``"silence"`` rows skipped).
      estimates: ``(n_est, samples)``.
      ref_labels: class of each reference, same conventions.
      references: ``(n_ref, samples)``.
      mixture_ref: ``(samples,)`` mixture reference channel (channel 0).
      metric: ``"snr"`` (CA-SDRi) or ``"si_snr"`` (CA-SI-SDRi).

    Returns:
      a :class:`ClassAwareResult`; ``value`` is NaN if there are no estimates and no references.
    """
    if metric not in _METRICS:
        raise ValueError(f"metric {metric!r}: expected one of {sorted(_METRICS)}")
    fn_metric = _METRICS[metric]
    mix = np.asarray(mixture_ref, np.float32)
    if mix.ndim != 1:
        raise ValueError(f"mixture_ref of shape {mix.shape}: expected (samples,)")
    est = _signals(estimates, mix.shape[0], "estimates")
    ref = _signals(references, mix.shape[0], "references")
    est_c, est = _present(est_labels, est, "estimates")
    ref_c, ref = _present(ref_labels, ref, "references")

    improvements: dict[int, list[float]] = {}
    fp_classes: list[int] = []
    fn_classes: list[int] = []
    total = 0.0
    for c in sorted(set(est_c) | set(ref_c)):
        ei = [i for i, k in enumerate(est_c) if k == c]
        ri = [j for j, k in enumerate(ref_c) if k == c]
        if ei and ri:
            e, r = est[ei], ref[ri]
            e_all, r_all = np.broadcast_arrays(e[:, None, :], r[None, :, :])
            score = fn_metric(e_all, r_all)  # (n_est, n_ref) float32: pairs by SDR, not SDRi
            mix_score = fn_metric(np.broadcast_to(mix, r.shape), r)  # (n_ref,)
            pairs, _ = _best_pairing(score)
            improvements[c] = [float(score[i, j]) - float(mix_score[j]) for i, j in pairs]
            total += sum(improvements[c])
        n_tp = min(len(ei), len(ri))
        fp_classes += [c] * (len(ei) - n_tp)
        fn_classes += [c] * (len(ri) - n_tp)
    tp = sum(len(v) for v in improvements.values())
    count = tp + len(fp_classes) + len(fn_classes)
    return ClassAwareResult(
        value=total / count if count else math.nan,
        tp=tp,
        fp=len(fp_classes),
        fn=len(fn_classes),
        improvements=improvements,
        fp_classes=fp_classes,
        fn_classes=fn_classes,
    )


def scaled_mixture(mixture_ref: np.ndarray, references: np.ndarray) -> np.ndarray:
    """The "scaled-mixture floor" estimates: ``mixture_ref`` times the least-squares gain of each
    reference, ``g_k = ⟨m, s_k⟩ / ⟨m, m⟩`` (the best a separator that outputs a scaled copy of the
    mixture can do).

    Its SNR improvement is what a do-nothing separator scores on CA-SDRi (positive, since the dry
    reference is quieter than the mixture); its SI-SNR improvement is exactly 0 dB.

    Args:
      mixture_ref: ``(samples,)``, the mixture's reference channel (channel 0).
      references: ``(K, samples)``.

    Returns:
      ``(K, samples)`` float32.
    """
    m = np.asarray(mixture_ref, np.float64)
    r = np.asarray(references, np.float64)
    gain = r @ m / max(float(m @ m), np.finfo(np.float64).tiny)
    return (gain[:, None] * m[None, :]).astype(np.float32)


def mean_value(results: Iterable[ClassAwareResult]) -> float:
    """Unweighted mean of ``value`` over mixtures, skipping NaN (empty) mixtures."""
    values = [r.value for r in results if not math.isnan(r.value)]
    return float(np.mean(values)) if values else math.nan


def _label_multiset(row: Iterable[Any]) -> list[int]:
    return sorted(
        L.class_index(lab)
        for lab in row
        if not (lab == L.SILENCE or (isinstance(lab, (int, np.integer)) and lab == L.EMPTY))
    )


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over classes with at least one positive of the (non-interpolated) AP.

    ``scores``, ``targets``: ``(mixtures, classes)``; a target counts as positive above 0.5.
    AP = Σ_n (R_n − R_{n−1}) P_n over the distinct scores taken as thresholds, as
    ``sklearn.metrics.average_precision_score``: tied scores are one threshold, so the value
    does not depend on the mixtures' order (a trained sigmoid saturates to exactly 1.0).
    """
    aps = []
    for c in range(scores.shape[1]):
        y = targets[:, c] > 0.5
        if not y.any():
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        tp = np.cumsum(y[order])
        last = np.r_[np.flatnonzero(np.diff(scores[order, c])), len(order) - 1]  # per threshold
        recall = tp[last] / tp[-1]
        aps.append(float(np.sum(np.diff(recall, prepend=0.0) * tp[last] / (last + 1))))
    return float(np.mean(aps)) if aps else float("nan")


def label_accuracy(
    est_label_sets: Sequence[Iterable[int | str]], ref_label_sets: Sequence[Iterable[int | str]]
) -> float:
    """Mixture accuracy: percentage of mixtures whose estimated labels equal the references.

    Labels are compared as multisets (order-free, repeats counted; ``-1``/``"silence"``
    ignored): the DCASE 2026 ``LabelMetric`` ``accuracy_mix`` (``Counter`` equality). With
    distinct labels (every DCASE 2025 tagger and reference) this is the 2025 baseline's set
    equality. Rows may be label lists or slot-array rows. NaN for no mixtures.
    """
    if len(est_label_sets) != len(ref_label_sets):
        raise ValueError(
            f"label_accuracy: {len(est_label_sets)} estimated vs {len(ref_label_sets)} reference "
            "label sets"
        )
    if not len(ref_label_sets):
        return math.nan
    hits = sum(
        _label_multiset(e) == _label_multiset(r)
        for e, r in zip(est_label_sets, ref_label_sets, strict=True)
    )
    return 100.0 * hits / len(ref_label_sets)


def source_accuracy(
    est_label_sets: Sequence[Iterable[int | str]], ref_label_sets: Sequence[Iterable[int | str]]
) -> float:
    """Source accuracy ``100·TP / (TP + FP + FN)``, counts pooled over all mixtures.

    Per mixture (DCASE 2026 ``LabelMetric`` ``accuracy_src``): TP = size of the multiset
    intersection of estimated and reference labels (a class estimated twice and present once is
    one TP and one FP), FP = estimates − TP, FN = references − TP; ``-1``/``"silence"``
    ignored. NaN when there is nothing to count (no labels anywhere).
    """
    if len(est_label_sets) != len(ref_label_sets):
        raise ValueError(
            f"source_accuracy: {len(est_label_sets)} estimated vs {len(ref_label_sets)} "
            "reference label sets"
        )
    tp = fp = fn = 0
    for e, r in zip(est_label_sets, ref_label_sets, strict=True):
        est, ref = Counter(_label_multiset(e)), Counter(_label_multiset(r))
        hit = sum((est & ref).values())
        tp, fp, fn = tp + hit, fp + est.total() - hit, fn + ref.total() - hit
    count = tp + fp + fn
    return 100.0 * tp / count if count else math.nan


def per_class(results: Iterable[ClassAwareResult]) -> dict[str, dict[str, float]]:
    """Per-class breakdown over mixtures.

    Returns:
      class name → ``{"tp", "fp", "fn"}`` counts, ``"tp_improvement"`` (mean improvement over
      that class's true positives, dB, NaN if none) and ``"ca_sdri"`` (sum of its TP
      improvements over ``tp + fp + fn``: the class's share of the class-aware metric). Only
      classes that occur are listed, in class-index order.
    """
    gains: dict[int, list[float]] = {}
    fps: dict[int, int] = {}
    fns: dict[int, int] = {}
    for r in results:
        for c, g in r.improvements.items():
            gains.setdefault(c, []).extend(g)
        for c in r.fp_classes:
            fps[c] = fps.get(c, 0) + 1
        for c in r.fn_classes:
            fns[c] = fns.get(c, 0) + 1
    out: dict[str, dict[str, float]] = {}
    for c in sorted(set(gains) | set(fps) | set(fns)):
        g = gains.get(c, [])
        tp, fp, fn = len(g), fps.get(c, 0), fns.get(c, 0)
        out[L.CLASSES[c]] = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tp_improvement": float(np.mean(g)) if g else math.nan,
            "ca_sdri": float(np.sum(g)) / (tp + fp + fn),
        }
    return out
