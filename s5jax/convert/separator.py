"""Official ResUNet / ResUNetK Lightning checkpoints → s5jax separator variables.

Rules (spec §8.1): Conv2d ``(O, I, kh, kw)`` → kernel ``(kh, kw, I, O)``; ConvTranspose2d
``(I, O, kh, kw)`` → kernel ``(kh, kw, O, I)`` (``transpose_kernel=True``), i.e. the same axis
permutation; Linear ``.T``; BatchNorm ``weight/bias`` → params ``scale/bias``,
``running_mean/var`` → batch_stats ``mean/var``; ``film.<a>-><b>->betaX`` → ``film/<a>/<b>/betaX``;
``label_embedding.{0,1,3,4}`` → ``Dense_0, LayerNorm_0, Dense_1, LayerNorm_1``.

Dropped on purpose: ``num_batches_tracked``, the dead decoder ``bn2`` and FiLM ``beta2`` (never
used by the official forward pass), and the frozen STFT/ISTFT kernels, which are recomputed and
checked against the stored ones (P5) instead of loaded.

Every weight must be floating point: float16 and bfloat16 checkpoints are converted (to float32),
their frozen buffers compared with a tolerance that fits their precision; integer weights are
refused (``s5jax.convert.checks``, shared with the tagger converter).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from s5jax import modeldir, torch_io
from s5jax.audio.stft import N_BINS, N_FFT, hann
from s5jax.convert.checks import buffer_mismatch, check_float_weights
from s5jax.models.dprnn import DPRNN
from s5jax.models.separator import build_separator, separator_config, validate_config

KERNEL_ATOL = 1e-6
_LE = {"Dense_0": "0", "LayerNorm_0": "1", "Dense_1": "3", "LayerNorm_1": "4"}
# The channel widths are read from the encoder blocks' first convolutions: encoder_block1 keeps
# pre_conv's width, and each later one (and conv_block7a) takes its predecessor's output width.
WIDTH_KEYS = tuple(f"base.encoder_block{i}.conv_block1.conv1.weight" for i in range(1, 7))
_WIDTH_CHAIN = (*WIDTH_KEYS, "base.conv_block7a.conv_block1.conv1.weight")


def stft_kernels() -> dict[str, np.ndarray]:
    """The torchlibrosa STFT/ISTFT buffers of the official state dict, recomputed (float32)."""
    n = np.arange(N_FFT)
    w = hann()
    ang_f = 2 * np.pi * np.outer(np.arange(N_BINS), n) / N_FFT  # (k, n)
    ang_i = 2 * np.pi * np.outer(n, n) / N_FFT  # (n, k)
    f32 = np.float32
    return {
        "base.stft.conv_real.weight": (np.cos(ang_f) * w)[:, None, :].astype(f32),
        "base.stft.conv_imag.weight": (-np.sin(ang_f) * w)[:, None, :].astype(f32),
        "base.istft.ola_window": (w**2).astype(f32),
        "base.istft.conv_real.weight": (np.cos(ang_i) * w[:, None] / N_FFT)[:, :, None].astype(f32),
        "base.istft.conv_imag.weight": (np.sin(ang_i) * w[:, None] / N_FFT)[:, :, None].astype(f32),
    }


def torch_key(collection: str, path: tuple[str, ...]) -> tuple[str, str] | None:
    """Official key and transform kind of one Flax leaf; ``None`` for seed-only parameters."""
    leaf, mods = path[-1], path[:-1]
    if "dprnn" in mods or (mods and mods[-1].startswith("gamma")):
        return None
    if collection == "batch_stats":
        return ".".join(mods) + {"mean": ".running_mean", "var": ".running_var"}[leaf], "copy"
    name = {"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]
    if mods[0] == "film":
        key = "film." + "->".join(mods[1:]) + "." + name
        return key, "T" if leaf == "kernel" else "copy"
    if mods[0] == "label_embedding":
        key = f"label_embedding.{_LE[mods[1]]}.{name}"
        return key, "T" if leaf == "kernel" else "copy"
    key = ".".join(mods) + "." + name
    return key, "conv" if leaf == "kernel" else "copy"


def _to_flax(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":  # (O, I, kh, kw) / ConvT (I, O, kh, kw) → (kh, kw, I, O) / (kh, kw, O, I)
        return value.transpose(2, 3, 1, 0)
    if kind == "T":
        return value.T
    return value


def _torch_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    if kind == "conv":
        return (shape[3], shape[2], shape[0], shape[1])
    if kind == "T":
        return tuple(reversed(shape))
    return tuple(shape)


def read_channels(sd: dict[str, np.ndarray]) -> tuple[int, ...]:
    """The six encoder widths, from ``WIDTH_KEYS``; ``ValueError`` naming the one missing or
    mis-shaped key (rather than every key whose expected shape it would change)."""
    shapes = []
    for key in _WIDTH_CHAIN:
        if key not in sd:
            raise ValueError(f"cannot read the channel widths: missing key {key}")
        shape = tuple(int(n) for n in np.shape(sd[key]))
        if len(shape) != 4:
            raise ValueError(f"cannot read the channel widths from {key}: shape {shape}, "
                             "expected a 4-D convolution kernel (out, in, kh, kw)")
        shapes.append(shape)
    # breaks: j when key j's output width is not key j + 1's input width; -1 when
    # encoder_block1 changes the width.
    breaks = {j for j in range(len(shapes) - 1) if shapes[j][0] != shapes[j + 1][1]}
    breaks |= {-1} if shapes[0][0] != shapes[0][1] else set()
    for j in sorted(breaks):
        if j + 1 in breaks:  # the key between two breaks is the odd one out
            key, shape = _WIDTH_CHAIN[j + 1], shapes[j + 1]
            width_in = shapes[j + 2][1] if j < 0 else shapes[j][0]
            want = (shapes[j + 2][1], width_in, *shape[2:])
            fits = ("" if j < 0 else f"{_WIDTH_CHAIN[j]} and ") + _WIDTH_CHAIN[j + 2]
            raise ValueError(f"cannot read the channel widths from {key}: shape {shape}, "
                             f"expected {want} to fit {fits}")
    if -1 in breaks:
        raise ValueError(f"cannot read the channel widths from {_WIDTH_CHAIN[0]}: shape "
                         f"{shapes[0]}, expected as many input as output channels")
    if breaks:
        j = min(breaks)
        raise ValueError(f"cannot read the channel widths: {_WIDTH_CHAIN[j]} has {shapes[j][0]} "
                         f"output channels but {_WIDTH_CHAIN[j + 1]} has {shapes[j + 1][1]} "
                         "input channels")
    return tuple(s[0] for s in shapes[:6])


def infer_config(sd: dict[str, np.ndarray]) -> ml_collections.ConfigDict:
    """Baseline config (name, slots, channels) read from the state dict's shapes."""
    slots = 1
    if "base.after_conv.weight" in sd:
        out = int(np.shape(sd["base.after_conv.weight"])[0])
        if out not in (12, 36):
            raise ValueError(
                f"base.after_conv.weight has {out} output channels: expected 12 (ResUNet, 1 slot) "
                "or 36 (ResUNetK, 3 slots)"
            )
        slots = out // 12
    elif "label_embedding.0.weight" in sd:
        slots = 3 if np.shape(sd["label_embedding.0.weight"])[-1] == 54 else 1
    channels = read_channels(sd)
    return separator_config(name="resunet" if slots == 1 else "resunetk", channels=channels)


def _expected_extra(channels) -> dict[str, tuple[int, ...] | None]:
    """Official keys that are dropped: dead decoder bn2 / beta2 (shape), frozen kernels."""
    dec_in = [channels[5], channels[5], channels[4], channels[3], channels[2], channels[1]]
    out: dict[str, tuple[int, ...] | None] = {}
    for j, cin in enumerate(dec_in):
        p = f"base.decoder_block{j + 1}.bn2."
        for n in ("weight", "bias", "running_mean", "running_var"):
            out[p + n] = (cin,)
        out[p + "num_batches_tracked"] = None
        out[f"film.decoder_block{j + 1}->beta2.weight"] = (cin, 512)
        out[f"film.decoder_block{j + 1}->beta2.bias"] = (cin,)
    for k, v in stft_kernels().items():
        out[k] = v.shape
    return out


def _shapes(cfg: ml_collections.ConfigDict) -> dict[tuple[str, ...], Any]:
    model = build_separator(cfg)
    s = int(cfg.slots)
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, 4, 3200)), jnp.zeros((1, s), jnp.int32)
    )
    return traverse_util.flatten_dict(jax.tree.map(lambda x: x, dict(shapes)))


def _fresh_extras(cfg: ml_collections.ConfigDict, shapes: dict) -> dict[tuple[str, ...], Any]:
    """Initial values of the seed-only parameters, without running the whole network.

    FiLM γ layers start at zero; the DPRNN comes from its own init (its zero output conv makes it
    the identity whatever the LSTM weights).
    """
    c = int(cfg.channels[5])
    dprnn = DPRNN(int(cfg.dprnn_hidden), int(cfg.dprnn_repeats))
    d = dprnn.init(jax.random.key(0), jnp.zeros((1, 2, 2, c), jnp.float32))
    flat_d = traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(d)))
    out = {}
    for leaf, sds in shapes.items():
        if "dprnn" in leaf:
            i = leaf.index("dprnn")
            out[leaf] = flat_d[(leaf[0], *leaf[i + 1 :])]
        else:
            out[leaf] = np.zeros(sds.shape, np.float32)
    return out


def convert_state_dict(
    sd: dict[str, np.ndarray], target_config: ml_collections.ConfigDict | None = None
) -> tuple[ml_collections.ConfigDict, dict]:
    """Official separator state dict (``model.`` prefix stripped) → ``(model_config, variables)``.

    Args:
      sd: key → array, e.g. from ``s5jax.torch_io.state_dict``.
      target_config: optional seed config (``film="gamma_beta"`` and/or ``bottleneck="dprnn"``)
        with the same name/slots/channels; its extra parameters come from a fresh init, which is
        the identity, so the converted model reproduces the baseline.

    Raises:
      ValueError naming every missing, unexpected or mis-shaped key (only the one key when the
      channel widths cannot be read), a non-floating-point weight, or a differing STFT kernel.
    """
    if not any(k.startswith("base.") for k in sd):
        first = ", ".join(sorted(sd)[:3]) or "none"
        raise ValueError(
            f"not a ResUNet/ResUNetK state dict: no 'base.*' keys (first keys: {first}); a tagger "
            "checkpoint is converted with `python -m s5jax.convert tagger`"
        )
    check_float_weights(sd)
    cfg = infer_config(sd)
    if target_config is not None:
        validate_config(target_config)
        for field in ("name", "slots", "channels"):
            if tuple(np.atleast_1d(target_config[field])) != tuple(np.atleast_1d(cfg[field])):
                raise ValueError(
                    f"target_config.{field}={target_config[field]!r} does not match the "
                    f"checkpoint ({cfg[field]!r})"
                )
        cfg = ml_collections.ConfigDict(target_config.to_dict())

    shapes = _shapes(cfg)
    mapping = {leaf: torch_key(leaf[0], leaf[1:]) for leaf in shapes}
    expected: dict[str, tuple[int, ...] | None] = {}
    for leaf, m in mapping.items():
        if m is not None:
            expected[m[0]] = _torch_shape(shapes[leaf].shape, m[1])
            if leaf[0] == "batch_stats":
                expected[m[0].rsplit(".", 1)[0] + ".num_batches_tracked"] = None
    dropped = _expected_extra(cfg.channels)
    expected.update(dropped)

    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    bad_shape = sorted(
        f"{k} {tuple(np.shape(sd[k]))} (expected {expected[k]})"
        for k in expected
        if k in sd and expected[k] is not None and tuple(np.shape(sd[k])) != expected[k]
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if bad_shape:
        problems.append(f"wrong shapes: {', '.join(bad_shape)}")
    if problems:
        raise ValueError(f"{cfg.name} state dict does not match: " + "; ".join(problems))

    for key, ref in stft_kernels().items():
        why = buffer_mismatch(sd[key], ref, KERNEL_ATOL)
        if why:
            raise ValueError(
                f"{key}: stored kernel differs from the recomputed STFT/ISTFT kernel {why}; this "
                "checkpoint does not use the baseline's STFT"
            )

    fresh = _fresh_extras(cfg, {leaf: shapes[leaf] for leaf, m in mapping.items() if m is None})
    flat = {}
    for leaf, m in mapping.items():
        if m is None:
            flat[leaf] = fresh[leaf]
        else:
            flat[leaf] = np.ascontiguousarray(_to_flax(np.asarray(sd[m[0]], np.float32), m[1]))
    return cfg, traverse_util.unflatten_dict(flat)


def dropped_keys(sd: dict[str, np.ndarray]) -> list[str]:
    """Keys of ``sd`` that conversion drops on purpose (dead, frozen, counters)."""
    dead = set(_expected_extra(infer_config(sd).channels))
    return sorted(k for k in sd if k in dead or k.endswith("num_batches_tracked"))


def bilstm_from_torch(sd: dict[str, np.ndarray], prefix: str = "") -> dict:
    """``torch.nn.LSTM(bidirectional=True)`` weights → ``BiLSTM`` params (spec §8.1).

    Gate chunks ``i, f, g, o`` → ``ii/if/ig/io`` (input kernels, no bias) and ``hi/hf/hg/ho``
    (hidden kernels with bias ``b_ih + b_hh``); ``*_reverse`` → ``backward_rnn``.
    """
    out = {}
    for suffix, rnn in (("", "forward_rnn"), ("_reverse", "backward_rnn")):
        w_ih = np.asarray(sd[f"{prefix}weight_ih_l0{suffix}"], np.float32)
        w_hh = np.asarray(sd[f"{prefix}weight_hh_l0{suffix}"], np.float32)
        b = np.asarray(sd[f"{prefix}bias_ih_l0{suffix}"], np.float32) + np.asarray(
            sd[f"{prefix}bias_hh_l0{suffix}"], np.float32
        )
        cell = {}
        for g, (wi, wh, bg) in zip(
            "ifgo", zip(np.split(w_ih, 4), np.split(w_hh, 4), np.split(b, 4), strict=True),
            strict=True,
        ):
            cell[f"i{g}"] = {"kernel": wi.T.copy()}
            cell[f"h{g}"] = {"kernel": wh.T.copy(), "bias": bg}
        out[rnn] = {"cell": cell}
    return {"lstm": out}


def convert_path(in_path: str | os.PathLike) -> tuple[ml_collections.ConfigDict, dict]:
    """``(model_config, variables)`` of an official ``.ckpt``; errors name the file."""
    try:
        obj = torch_io.load(in_path)
        sd = torch_io.state_dict(obj, strip_prefix="model.")
        torch_io.check_finite(sd, str(in_path))
        return convert_state_dict({k: np.asarray(v) for k, v in sd.items()})
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if str(in_path) in msg else f"{in_path}: {msg}") from e


def convert_file(
    in_path: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Convert an official ``.ckpt`` into an s5jax model directory; nothing written on error."""
    modeldir.check_output(out_dir, overwrite)  # before any work
    cfg, variables = convert_path(in_path)
    return modeldir.save_model(out_dir, cfg, variables, overwrite=overwrite)
