"""Jitted train and eval steps over a 1-D ``data`` mesh.

The batch is sharded along ``data``, the state replicated; under ``jit`` the BatchNorm batch
statistics are global means (SyncBN semantics) and gradients are reduced by the compiler.
Losses, all in float32, by ``task`` (separator/tagger) and the challenge ``edition``
(``config.task``, "dcase2025" | "dcase2026"):

* ResUNetK, 2025 (spec §5.4): ``−(1/(3B)) Σ active·SNR`` over all 3B slots;
* ResUNetK, 2026: the batch mean of the class-aware PIT −SNR (``metrics.class_aware_pit_loss``:
  only same-label slots may swap, silence slots 0, mean over the 3 slots, min over the 6
  permutations); with distinct labels it equals the 2025 loss;
* ResUNet: per example one active slot drawn uniformly with the step key is the query,
  ``−mean_b SNR`` (spec §5.3; the 2026 loss of one slot is the same);
* tagger, by its head: ``"sigmoid18"`` (2025) BCE of the probabilities against the multi-hot
  labels; ``"slots"`` (2026) the batch mean of the slot-PIT cross-entropy
  (``metrics.slot_pit_cross_entropy``, silence = class 19).

Gradient accumulation (``accumulate = k``): the global batch is split into k micro-batches
(micro-batch i holds rows ``i, i+k, i+2k, …``, so every device keeps its share of each) and a
``lax.scan`` sums their gradients, losses and BatchNorm updates; the step then uses the means.
Every loss above is a mean over equal-sized micro-batches, so this equals one step on the whole
batch except for BatchNorm, whose batch statistics are per micro-batch. The running averages
are updated once per step, with the mean of the k micro-batch updates, each computed from the
step's old running averages: the running mean moves exactly as with the whole batch, the running
variance by the mean of the micro-batch variances (docs/training.md, "Gradient accumulation").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from s5jax import labels as labels_lib
from s5jax import metrics
from s5jax.data.synth import TASKS as EDITIONS
from s5jax.mesh import DATA, batch_sharding, on_mesh
from s5jax.training import optim
from s5jax.training.state import TrainState

SEPARATOR, TAGGER = "separator", "tagger"

Render = Callable[[dict[str, Any]], dict[str, jax.Array]]


def task_of(model_config) -> str:
    """``"separator"`` or ``"tagger"`` from a model config's ``name``."""
    name = model_config.get("name")
    if name in ("resunet", "resunetk"):
        return SEPARATOR
    if name == "m2d_at":
        return TAGGER
    raise ValueError(f"config.model.name={name!r}: expected 'resunet', 'resunetk' or 'm2d_at'")


def pick_query_slot(labels: jax.Array, key: jax.Array) -> jax.Array:
    """Uniform index of one active slot per row of ``labels (B, S)`` → ``int32 (B,)``.

    Rows without an active slot get index 0 (an empty slot: zero query, zero loss weight).
    """
    logits = jnp.where(labels_lib.active(labels), 0.0, -1e9)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def draw_queries(model, data: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
    """ResUNet training: keep one drawn active slot per example of ``labels``/``dry``.

    A no-op for ResUNetK and for data already reduced to one slot, so a batch drawn whole and
    then split into micro-batches keeps the whole batch's draws.
    """
    labels, dry = data["labels"], data["dry"]
    if model.slots != 1 or labels.shape[1] == 1:
        return data
    idx = pick_query_slot(labels, key)[:, None]
    return dict(data, labels=jnp.take_along_axis(labels, idx, axis=1),
                dry=jnp.take_along_axis(dry, idx[..., None], axis=1))


def separator_forward(model, variables, data, key, *, train: bool):
    """→ ``(estimate (B, S', L), reference (B, S', L), labels (B, S'), new batch_stats)``.

    ``S' = 3`` for ResUNetK; for ResUNet in training ``S' = 1`` (one drawn query per example),
    in evaluation all slots (the model runs one pass per slot).
    """
    if train:
        data = draw_queries(model, data, key)
    mixture, dry, labels = data["mixture"], data["dry"], data["labels"]
    kwargs = {"mutable": ["batch_stats"]} if train else {}
    out = model.apply(variables, mixture, labels, train=train, **kwargs)
    est, updates = out if train else (out, {})
    return est.astype(jnp.float32), dry, labels, updates.get("batch_stats", {})


def tagger_forward(model, variables, data, *, train: bool):
    """→ ``(outputs, new batch_stats)``: probabilities ``(B, 18)`` (head ``"sigmoid18"``) or
    slot logits ``(B, 3, 19)`` (head ``"slots"``), float32."""
    kwargs = {"mutable": ["batch_stats"]} if train else {}
    out = model.apply(variables, data["mixture"], train=train, **kwargs)
    out, updates = out if train else (out, {})
    return out.astype(jnp.float32), updates.get("batch_stats", {})


def loss_fn(task, model, params, batch_stats, data, key, *, train: bool = True,
            edition: str = "dcase2025"):
    """Scalar float32 loss and the new ``batch_stats``."""
    variables = {"params": params, "batch_stats": batch_stats}
    if task == SEPARATOR:
        est, ref, labels, new_stats = separator_forward(model, variables, data, key, train=train)
        if edition == "dcase2026":
            return jnp.mean(metrics.class_aware_pit_loss(est, ref, labels)), new_stats
        return metrics.snr_loss(est, ref, labels_lib.active(labels)), new_stats
    out, new_stats = tagger_forward(model, variables, data, train=train)
    if out.ndim == 3:  # the slot head's logits (B, 3, 19)
        return jnp.mean(metrics.slot_pit_cross_entropy(out, data["labels"])), new_stats
    return metrics.bce(out, labels_lib.multi_hot(data["labels"])), new_stats


def _check_edition(edition: str) -> None:
    if edition not in EDITIONS:
        raise ValueError(f"edition (config.task) {edition!r}: expected one of {EDITIONS}")


def _masked_norm(tree, labels) -> jax.Array:
    if labels is None:
        return optim.global_norm(tree)
    kept = jax.tree.map(lambda x, lab: x if lab == optim.TRAINABLE else None, tree, labels)
    return optim.global_norm(kept)


def _select(ok, new, old):
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def split_micro(data: dict[str, jax.Array], k: int, mesh: Mesh) -> dict[str, jax.Array]:
    """``(B, …)`` → ``(k, B/k, …)`` with micro-batch ``i`` = rows ``i::k``.

    Strided rows keep the ``data`` sharding: with the batch split over devices in contiguous
    blocks, every device holds ``B/(k·devices)`` rows of every micro-batch.
    """
    micro = NamedSharding(mesh, P(None, DATA))

    def split(x):
        y = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(y, micro)

    return jax.tree.map(split, data)


def accumulated_grads(grad_fn, params, batch_stats, data, k: int, mesh: Mesh):
    """``((mean loss, mean new batch_stats), mean gradient)`` of
    ``grad_fn(params, micro) → ((loss, new batch_stats), grads)`` over the k micro-batches of
    ``data``: one ``lax.scan``, one micro-batch's activations live at a time."""

    def body(carry, micro):
        (loss, stats), grads = grad_fn(params, micro)
        return jax.tree.map(jnp.add, carry, (loss, stats, grads)), None

    init = jax.tree.map(jnp.zeros_like, (jnp.zeros((), jnp.float32), batch_stats, params))
    total, _ = jax.lax.scan(body, init, split_micro(data, k, mesh))
    loss, stats, grads = jax.tree.map(lambda x: x / k, total)
    return (loss, stats), grads


def make_train_step(
    task: str,
    model,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    *,
    render: Render | None = None,
    param_labels: Any = None,
    lr_schedule: Callable[[Any], Any] | None = None,
    donate: bool = True,
    accumulate: int = 1,
    edition: str = "dcase2025",
) -> Callable[[TrainState, dict[str, Any]], tuple[TrainState, dict[str, jax.Array]]]:
    """One jitted training step ``(state, batch) → (state, metrics)``.

    ``batch`` is either the loader's host-array dict, turned into ``mixture``/``dry``/``labels``
    by ``render`` inside the step (synthesis on the accelerator), or already those three arrays
    (``render=None``). A non-finite loss or gradient norm keeps the old params, optimiser state
    and batch_stats and counts the step as skipped. ``metrics`` are device scalars.
    ``accumulate = k > 1`` splits the global batch into k micro-batches (module docstring); the
    batch size must be a multiple of k × the device count. ``edition`` (``config.task``) picks
    the separator loss (module docstring).
    """
    if accumulate < 1:
        raise ValueError(f"accumulate={accumulate}: expected ≥ 1")
    _check_edition(edition)
    replicated = NamedSharding(mesh, P())
    sharded = batch_sharding(mesh)

    def step(state: TrainState, batch):
        data = render(batch) if render is not None else batch
        key = jax.random.fold_in(state.rng, state.step)
        if accumulate == 1:
            grad_fn = jax.value_and_grad(
                lambda p: loss_fn(task, model, p, state.batch_stats, data, key, edition=edition),
                has_aux=True,
            )
            (loss, new_stats), grads = grad_fn(state.params)
        else:
            if task == SEPARATOR:
                data = draw_queries(model, data, key)  # the whole batch's draws
            grad_fn = jax.value_and_grad(
                lambda p, mb: loss_fn(task, model, p, state.batch_stats, mb, key,
                                      edition=edition),
                has_aux=True,
            )
            (loss, new_stats), grads = accumulated_grads(
                grad_fn, state.params, state.batch_stats, data, accumulate, mesh
            )
        grad_norm = _masked_norm(grads, param_labels)
        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new_state = state.replace(
            step=state.step + 1,
            params=_select(ok, new_params, state.params),
            batch_stats=_select(ok, new_stats, state.batch_stats),
            opt_state=_select(ok, new_opt, state.opt_state),
            skipped=state.skipped + (~ok).astype(jnp.int32),
            bad_streak=jnp.where(ok, 0, state.bad_streak + 1),
        )
        out = {
            "loss": loss,
            "grad_norm": grad_norm,
            "update_norm": _masked_norm(updates, param_labels),
            "param_norm": optim.global_norm(new_state.params),
            "skipped": new_state.skipped,
            "bad_streak": new_state.bad_streak,
        }
        if lr_schedule is not None:
            # The optimiser's rate: its update count, which a skipped step does not advance.
            out["learning_rate"] = jnp.asarray(lr_schedule(state.step - state.skipped),
                                               jnp.float32)
        return new_state, out

    return jax.jit(
        on_mesh(step, mesh),
        in_shardings=(replicated, sharded),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,) if donate else (),
    )


def make_eval_step(task: str, model, mesh: Mesh, *, render: Render | None = None,
                   edition: str = "dcase2025"):
    """Jitted eval-mode forward ``(variables, batch) → outputs`` (sharded along ``data``).

    Separators: ``{"estimate" (B, S, L), "reference" (B, S, L), "mixture" (B, C, L),
    "labels" (B, S), "snr" (B, S)}`` with the oracle labels as queries (every slot), plus
    ``"loss" (B,)`` (the class-aware PIT loss) for ``edition`` "dcase2026".
    Tagger: ``{"probabilities" (B, 18), "labels" (B, S), "bce" (B,)}``, or for the slot head
    ``{"logits" (B, 3, 19), "labels" (B, S), "loss" (B,)}``.
    """
    _check_edition(edition)
    replicated = NamedSharding(mesh, P())
    sharded = batch_sharding(mesh)

    def step(variables, batch):
        data = render(batch) if render is not None else batch
        if task == SEPARATOR:
            est, ref, labels, _ = separator_forward(model, variables, data, None, train=False)
            out = {
                "estimate": est,
                "reference": ref,
                "mixture": data["mixture"],
                "labels": data["labels"],
                "snr": metrics.snr(est, ref),
            }
            if edition == "dcase2026":
                out["loss"] = metrics.class_aware_pit_loss(est, ref, labels)
            return out
        out, _ = tagger_forward(model, variables, data, train=False)
        if out.ndim == 3:
            return {"logits": out, "labels": data["labels"],
                    "loss": metrics.slot_pit_cross_entropy(out, data["labels"])}
        target = labels_lib.multi_hot(data["labels"])
        per_example = jax.vmap(metrics.bce)(out[:, None], target[:, None])
        return {"probabilities": out, "labels": data["labels"], "bce": per_example}

    return jax.jit(on_mesh(step, mesh), in_shardings=(replicated, sharded),
                   out_shardings=sharded)
