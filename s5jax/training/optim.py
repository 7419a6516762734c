"""Optimiser with PyTorch semantics: global-norm clipping + AdamW with AMSGrad.

The baseline trains with ``torch.nn.utils.clip_grad_norm_(0.5)`` followed by
``torch.optim.AdamW(amsgrad=True)`` (spec §5.1). ``optax.amsgrad`` differs (it takes the maximum of
the *bias-corrected* second moment and has no decoupled weight decay), so both pieces are written
here as small optax transformations that follow torch's arithmetic step by step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

TRAINABLE = "trainable"
FROZEN = "frozen"


def global_norm(tree: Any) -> jax.Array:
    """L2 norm over all leaves of ``tree`` (float32)."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    # One reduction over the concatenated leaves, not one per leaf: a model has hundreds of
    # leaves, and each reduction of its own is one more fusion for XLA to compile. Tree order,
    # unlike to_flat: with the optimiser's vector reversed, this order leaves the memory model
    # unchanged (4.41 GB in both, docs/benchmarks.md), and reversed here XLA fused the step so
    # that one and two devices differed ten times more in float32 rounding (test_multidevice).
    flat = jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in leaves])
    return jnp.sqrt(jnp.sum(jnp.square(flat)))


def to_flat(tree: Any) -> jax.Array:
    """All leaves of ``tree`` as one vector, in **reverse** tree order (``(n,)``).

    Why reversed: in a training step every gradient then feeds one concatenation, and the order
    of its operands steers XLA's memory-minimising scheduler through the backward pass. In
    Flax's tree order the separator's step at batch 1, 10 s, needs 6.72 GB by the CPU memory
    model (6.17 GB with remat), against 5.97 (4.39) with the optimiser per tensor; in reverse
    order 5.97 (4.41) (2026-12-02, docs/benchmarks.md "Memory model").
    """
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)[::-1]])


def from_flat(like: Any, flat: jax.Array) -> Any:
    """Inverse of :func:`to_flat`: ``flat`` cut into tensors shaped as ``like``'s leaves."""
    leaves, treedef = jax.tree.flatten(like)
    ends = np.cumsum([np.size(x) for x in leaves[::-1]])[:-1]
    parts = jnp.split(flat, ends)[::-1]
    shaped = [p.reshape(np.shape(x)) for p, x in zip(parts, leaves, strict=True)]
    return jax.tree.unflatten(treedef, shaped)


class FlatState(NamedTuple):
    """The state of an optimiser that works on :func:`to_flat` of the trainable parameters.
    The field's name is the layout: a checkpoint of another layout does not restore into it."""

    reversed_leaves: Any


def flattened(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` on one vector of all the parameters (:func:`to_flat`), like ``optax.flatten``
    but in reverse leaf order (see :func:`to_flat`): a model has hundreds of tensors, and per
    tensor the update is ~10 small fusions each, compiled separately (the separator's step
    compiles ~40 % faster flat; docs/benchmarks.md)."""

    def init_fn(params):
        return FlatState(inner.init(to_flat(params)))

    def update_fn(updates, state, params=None):
        flat_params = None if params is None else to_flat(params)
        out, new = inner.update(to_flat(updates), state.reversed_leaves, flat_params)
        return from_flat(updates, out), FlatState(new)

    return optax.GradientTransformation(init_fn, update_fn)


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """``g ← g·min(1, max_norm/(‖g‖₂ + 1e-6))`` exactly as ``torch.nn.utils.clip_grad_norm_``.

    Unlike ``optax.clip_by_global_norm`` torch adds 1e-6 to the norm and always multiplies (the
    factor is 1 below the threshold), which matters for bit-level parity.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        coef = jnp.minimum(1.0, max_norm / (global_norm(updates) + 1e-6))
        return jax.tree.map(lambda g: (g * coef).astype(g.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


class AdamWTorchState(NamedTuple):
    count: jax.Array  # int32 (): steps taken (torch keeps one per tensor; all advance together)
    mu: Any
    nu: Any
    nu_max: Any  # running max of the RAW second moment (torch AMSGrad); None-like zeros if off


def adamw_torch(
    learning_rate: float | Callable[[jax.Array], jax.Array],
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = True,
) -> optax.GradientTransformation:
    """``torch.optim.AdamW`` (optionally with ``amsgrad=True``) as an optax transformation.

    Per step t (1-based), for every tensor, the returned update realises
    ``θ ← θ − lr·wd·θ`` then ``θ ← θ − lr/(1−β1^t) · m / (sqrt(v̂)/sqrt(1−β2^t) + eps)`` with
    ``v̂ = max(v̂, v)`` over the raw ``v`` when ``amsgrad`` (else ``v̂ = v``). ``learning_rate`` may
    be a schedule of the 0-based step count. Requires ``params`` in ``update``.
    """

    def lr_at(count):
        return learning_rate(count) if callable(learning_rate) else learning_rate

    def init_fn(params):
        def zeros():  # separate buffers per moment (states get donated)
            return jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), params)

        return AdamWTorchState(
            count=jnp.zeros((), jnp.int32),
            mu=zeros(),
            nu=zeros(),
            nu_max=zeros() if amsgrad else optax.EmptyState(),
        )

    def update_fn(grads, state, params=None):
        if params is None:
            raise ValueError("adamw_torch needs params (decoupled weight decay)")
        lr = lr_at(state.count)
        t = (state.count + 1).astype(jnp.float32)
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g.astype(jnp.float32), state.mu, grads)
        nu = jax.tree.map(
            lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g.astype(jnp.float32)), state.nu, grads
        )
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else state.nu_max
        denom_src = nu_max if amsgrad else nu
        # 1 − β^t via expm1: float32 `1 - 0.999**t` loses ~5 digits at small t (torch uses doubles).
        step_size = lr / -jnp.expm1(t * math.log(b1))
        bc2_sqrt = jnp.sqrt(-jnp.expm1(t * math.log(b2)))

        def upd(p, m, v):
            p32 = p.astype(jnp.float32)
            step = step_size * (m / (jnp.sqrt(v) / bc2_sqrt + eps))
            return (-(lr * weight_decay) * p32 - step).astype(p.dtype)

        updates = jax.tree.map(upd, params, mu, denom_src)
        return updates, AdamWTorchState(count=state.count + 1, mu=mu, nu=nu, nu_max=nu_max)

    return optax.GradientTransformation(init_fn, update_fn)


SCHEDULES = ("constant", "cosine")


def check_config(optim: ml_collections.ConfigDict) -> None:
    """``ValueError`` naming the field of ``config.optim`` whose value cannot train (checked
    before any work, also by ``--dry_run``)."""

    def value(name, default=None) -> float:
        v = optim.get(name, default)
        try:
            return float(v)
        except (TypeError, ValueError):
            raise ValueError(f"config.optim.{name}={v!r}: expected a number") from None

    def need(name, ok: bool, expected: str) -> None:
        if not ok:
            raise ValueError(f"config.optim.{name}={optim.get(name)!r}: expected {expected}")

    lr, b1, b2, eps = value("lr"), value("b1", 0.9), value("b2", 0.999), value("eps", 1e-8)
    need("lr", math.isfinite(lr) and lr > 0, "a finite rate > 0")
    need("b1", 0 <= b1 < 1, "0 ≤ b1 < 1")
    need("b2", 0 <= b2 < 1, "0 ≤ b2 < 1")
    need("eps", math.isfinite(eps) and eps > 0, "a finite value > 0")
    wd = value("weight_decay", 0.0)
    need("weight_decay", math.isfinite(wd) and wd >= 0, "a finite value ≥ 0")
    if optim.get("clip_norm") is not None:
        clip = value("clip_norm")
        need("clip_norm", math.isfinite(clip) and clip >= 0, "a finite norm (0: no clipping)")
    warmup = value("warmup_steps", 0)
    need("warmup_steps", warmup >= 0 and warmup == int(warmup), "a whole number ≥ 0")
    final = value("final_lr_ratio", 0.0)
    need("final_lr_ratio", 0 <= final <= 1, "0 ≤ ratio ≤ 1")
    need("schedule", optim.get("schedule", "constant") in SCHEDULES, f"one of {SCHEDULES}")


def make_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> Callable[[Any], Any]:
    """Learning-rate schedule of the 0-based update count from ``config.optim``.

    ``schedule``: ``"constant"`` (the baseline) or ``"cosine"`` (decay to ``lr·final_lr_ratio``
    at ``num_steps``); both with an optional linear warm-up over ``warmup_steps``.
    """
    lr = float(optim.lr)
    warmup = int(optim.get("warmup_steps", 0))
    kind = optim.get("schedule", "constant")
    if kind == "constant":
        main = optax.constant_schedule(lr)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(
            lr, max(1, num_steps - warmup), alpha=float(optim.get("final_lr_ratio", 0.0))
        )
    else:
        raise ValueError(f"config.optim.schedule={kind!r}: expected 'constant' or 'cosine'")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def build_optimizer(
    optim: ml_collections.ConfigDict,
    num_steps: int,
    param_labels: Any | Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    """Clip (torch global norm) → AdamW-AMSGrad (torch) on trainable parameters.

    Args:
      optim: ``config.optim`` (lr, b1, b2, eps, weight_decay, amsgrad, clip_norm, schedule…).
      num_steps: total training steps (for decaying schedules).
      param_labels: pytree (or function of params) of ``"trainable"``/``"frozen"``; frozen leaves
        get a zero update and no optimiser state, and are excluded from the clipping norm, as
        torch does for parameters with ``requires_grad=False``. ``None``: everything trains.
    """
    parts = []
    if optim.get("clip_norm") is not None and float(optim.clip_norm) > 0:
        parts.append(clip_by_global_norm_torch(float(optim.clip_norm)))
    parts.append(
        adamw_torch(
            make_schedule(optim, num_steps),
            b1=float(optim.b1),
            b2=float(optim.b2),
            eps=float(optim.eps),
            weight_decay=float(optim.weight_decay),
            amsgrad=bool(optim.amsgrad),
        )
    )
    # On one flat vector of the trainable parameters (flattened); the moments are flat vectors too.
    tx = flattened(optax.chain(*parts))
    if param_labels is None:
        return tx
    return optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()}, param_labels)


def count_trainable(params: Any, param_labels: Any | None) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(int(x.size) for x in jax.tree.leaves(params))
    if param_labels is None:
        return total, total
    labels = param_labels(params) if callable(param_labels) else param_labels
    sizes = jax.tree.map(lambda p, lab: int(p.size) if lab == TRAINABLE else 0, params, labels)
    return sum(jax.tree.leaves(sizes)), total
