"""Rematerialisation (gradient checkpointing) of the separator's encoder/decoder blocks.

``train.remat`` is a training value, not a model value: it changes what the backward pass keeps
in memory, never the outputs or the parameters, so it is not saved with a model and does not
block a resume.

* ``"none"``: autodiff keeps every intermediate the backward pass needs (fastest, most memory).
* ``"blocks"``: each ``EncoderBlock``/``DecoderBlock`` (and ``conv_block7a``) is wrapped in
  ``nn.remat`` with ``jax.checkpoint_policies.nothing_saveable``: only a block's inputs are kept,
  everything inside it is recomputed during the backward pass (about one extra forward pass).
* ``"blocks:<policy>"``: the same blocks with another argument-free policy of
  ``jax.checkpoint_policies`` (``dots_saveable``, ``everything_saveable``, …).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

NONE, BLOCKS = "none", "blocks"
DEFAULT_POLICY = "nothing_saveable"
# Argument-free policies of jax.checkpoint_policies (the others are factories taking names).
POLICIES = (
    "nothing_saveable",
    "everything_saveable",
    "dots_saveable",
    "dots_with_no_batch_dims_saveable",
)


def parse(spec: str) -> Callable | None:
    """The ``jax.checkpoint_policies`` policy of a ``train.remat`` value; ``None`` for ``"none"``.

    ``ValueError`` naming the value and the accepted ones otherwise.
    """
    kind, _, policy = str(spec).partition(":")
    if kind == NONE and not policy:
        return None
    if kind == BLOCKS and (policy or DEFAULT_POLICY) in POLICIES:
        return getattr(jax.checkpoint_policies, policy or DEFAULT_POLICY)
    raise ValueError(
        f"train.remat={spec!r}: expected 'none', 'blocks' or 'blocks:<policy>' with <policy> one "
        f"of {', '.join(POLICIES)}"
    )


def wrap(block: type[nn.Module], spec: str, static_argnums: tuple[int, ...]) -> type[nn.Module]:
    """``block`` itself, or ``nn.remat(block)`` with the policy of ``spec``.

    ``static_argnums`` counts ``self`` as argument 0 (flax's convention) and must name the
    Python-valued arguments (``train``). Parameter and ``batch_stats`` paths are unchanged.
    """
    policy = parse(spec)
    if policy is None:
        return block
    return nn.remat(block, policy=policy, static_argnums=static_argnums)
