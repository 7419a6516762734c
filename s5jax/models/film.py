"""Label embedding and FiLM conditioning of the ResUNet (spec §3.5, seed §2).

The query vector goes through a shared embedding (Linear–LN–ReLU ×2, 512-d). Every conditioned
point of the trunk (the input of each BatchNorm → LeakyReLU pair) gets its own Dense layers from
that embedding:

* ``film="beta"`` (baseline): ``y = BN(x) + β``;
* ``film="gamma_beta"`` (seed): ``y = (1 + γ)·BN(x) + β`` with the γ Dense zero-initialised, so
  baseline weights give the baseline output.

Parameters live under ``film/<block>/<child>/beta1`` (and ``gamma1``), the same tree as the
official keys ``film.<block>-><child>->beta1.*``. The decoders' ``beta2`` is never used by the
baseline's forward pass and is not created here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from s5jax.models.layers import torch_linear_init

EMBED_DIM = 512
FILM_MODES = ("beta", "gamma_beta")

# (gamma or None, beta), each (batch, size).
FilmPair = tuple[jnp.ndarray | None, jnp.ndarray]


def film_meta(channels: Sequence[int]) -> dict[str, Any]:
    """Nested ``{block: {child: {"beta1": size, "beta2": size}}}`` of the used FiLM points.

    ``channels`` are the six encoder widths ``(32, 64, 128, 256, 384, 384)`` of ResUNet30.
    """
    c = list(channels)
    if len(c) != 6:
        raise ValueError(f"channels={tuple(channels)}: expected six encoder widths")
    meta: dict[str, Any] = {}
    cin = c[0]  # pre_conv output
    for i, cout in enumerate(c):
        meta[f"encoder_block{i + 1}"] = {"conv_block1": {"beta1": cin, "beta2": cout}}
        cin = cout
    meta["conv_block7a"] = {"conv_block1": {"beta1": c[5], "beta2": c[5]}}
    dec_out = [c[5], c[4], c[3], c[2], c[1], c[0]]
    for j, cout in enumerate(dec_out):
        meta[f"decoder_block{j + 1}"] = {
            "beta1": cin,
            "conv_block2": {"beta1": 2 * cout, "beta2": cout},
        }
        cin = cout
    return meta


def _freeze(meta: dict[str, Any]) -> tuple:
    return tuple((k, v if isinstance(v, int) else _freeze(v)) for k, v in meta.items())


def apply_film(x: jnp.ndarray, film: FilmPair) -> jnp.ndarray:
    """``(1 + γ)·x + β`` (or ``x + β``) with ``x (batch, time, freq, channels)``."""
    gamma, beta = film
    y = x if gamma is None else x * (1.0 + gamma[:, None, None, :].astype(x.dtype))
    return y + beta[:, None, None, :].astype(x.dtype)


class LabelEmbedding(nn.Module):
    """``(batch, label_len)`` query → ``(batch, 512)`` condition (PyTorch-default inits)."""

    features: int = EMBED_DIM

    @nn.compact
    def __call__(self, query: jnp.ndarray) -> jnp.ndarray:
        x = query.astype(jnp.float32)
        for i, fan_in in enumerate((x.shape[-1], self.features)):
            k_init, b_init = torch_linear_init(fan_in)
            x = nn.Dense(self.features, kernel_init=k_init, bias_init=b_init, name=f"Dense_{i}")(x)
            x = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=f"LayerNorm_{i}")(x)
            x = nn.relu(x)
        return x


class FilmNode(nn.Module):
    """One level of the FiLM tree; leaves are ``betaX`` (and ``gammaX``) Dense layers.

    ``meta`` is a frozen ``film_meta`` (nested tuples of ``(name, size | subtree)``).
    """

    meta: tuple
    mode: str = "beta"

    @nn.compact
    def __call__(self, cond: jnp.ndarray) -> dict[str, Any]:
        if self.mode not in FILM_MODES:
            raise ValueError(f"film={self.mode!r}: expected one of {FILM_MODES}")
        out: dict[str, Any] = {}
        for name, spec in self.meta:
            if isinstance(spec, int):
                beta = nn.Dense(
                    spec,
                    kernel_init=nn.initializers.xavier_uniform(),
                    bias_init=nn.initializers.zeros,
                    name=name,
                )(cond)
                gamma = None
                if self.mode == "gamma_beta":
                    gamma = nn.Dense(
                        spec,
                        kernel_init=nn.initializers.zeros,
                        bias_init=nn.initializers.zeros,
                        name="gamma" + name[len("beta") :],
                    )(cond)
                out[name] = (gamma, beta)
            else:
                out[name] = FilmNode(spec, self.mode, name=name)(cond)
        return out


def film_tree(channels: Sequence[int], mode: str, name: str = "film") -> FilmNode:
    """The FiLM generator for a trunk with encoder widths ``channels``."""
    return FilmNode(_freeze(film_meta(channels)), mode, name=name)
