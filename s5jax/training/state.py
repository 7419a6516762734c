"""The training state: one pytree holding everything a resumed run needs (besides the data
iterator, which the checkpoint stores next to it)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """Replicated training state.

    ``rng`` is a raw ``uint32 (2,)`` key (checkpointable as a plain array); the step's key is
    ``fold_in(rng, step)``, so a resumed run draws the same numbers as an uninterrupted one.
    ``skipped`` counts updates dropped for a non-finite loss or gradient, ``bad_streak`` the
    current run of them.
    """

    step: jax.Array  # int32 ()
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # uint32 (2,)
    skipped: jax.Array  # int32 ()
    bad_streak: jax.Array  # int32 ()

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_state(
    variables: dict[str, Any], tx: optax.GradientTransformation, seed: int
) -> TrainState:
    """Fresh state from model ``variables`` (``params`` and optional ``batch_stats``)."""
    params = variables["params"]
    def zero():  # distinct buffers: the state is donated, aliases would be donated twice
        return jnp.zeros((), jnp.int32)

    return TrainState(
        step=zero(),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(seed),
        skipped=zero(),
        bad_streak=zero(),
    )
