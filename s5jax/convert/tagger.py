"""Official tagger weights (PyTorch) → s5jax tagger variables (spec §4.1, §4.7, §8.1, App. B).

Two inputs are understood:

* the baseline's AudioTagging Lightning checkpoint (``m2dat.ckpt``): ``state_dict`` with keys
  ``model.backbone.*``, ``model.head_norm.*``, ``model.head.*``, ``model.to_spec.*``. Every key
  must be known; the nnAudio buffers are recomputed and must match the stored ones (abs ≤ 1e-6).
* an M2D AudioSet-fine-tuned ``.pth`` (what the baseline starts stage 1 from): keys possibly under
  ``model`` and prefixed ``module.ar.runtime.backbone.``. As in the baseline, keys that are not
  encoder parameters are dropped, except the EVAR head: ``module.head.mlp.mlp.0.weight`` decides
  flat (last dim = D) vs stacked features and ``module.head.norm.running_mean/var`` become the
  head BatchNorm statistics. The 527-way AudioSet head is discarded and a fresh 18-way head is
  initialised from ``seed``.

* the DCASE 2026 AudioTagging checkpoints (``m2dat_1c.ckpt``, ``m2dat_4c.ckpt``): the slot head
  ``HeadAvgLinear`` (``model.head.{m2d_out_norm, linear.{0,1}, tracks.N.{0,1,3}}``) on
  ``model.backbone.*`` (``M2dAt``, 1 channel) or on ``model.m2d.backbone.*`` (``M2dAtSpatial``,
  features of channels ``0..C−1`` concatenated). → ``head="slots"``; ``in_channels``, flat vs
  stacked and the slot widths are read from the shapes. The encoder's own 527-class
  ``head_norm`` statistics (``[m2d.]head_norm.*``), which the 2026 forward never uses, are
  dropped; the BatchNorm the head does use is ``head.m2d_out_norm``.

An M2D ``.pth`` converted with ``head="slots"`` (and ``in_channels``) gets a fresh slot head and
fresh head statistics, as the official 2026 ``M2dAt`` starts (the EVAR statistics go to the
unused encoder BatchNorm there).

The result is a baseline model (``adapters=False``) unless ``adapters=True`` is passed, which adds
fresh zero-output adapters (identical outputs).

Every tensor that is used is checked: official keys against the shapes the encoder width D implies,
the converted variables against the model's ``init`` shapes, the dtype (float16 and bfloat16 are
converted to float32, the nnAudio buffers compared with a tolerance that fits their precision;
integer weights are refused). The attention head count is not stored: the default ``D // 64`` is
the official ViTs' 64-wide heads, and a width that is not a multiple of 64 needs ``num_heads``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.traverse_util as traverse_util
import jax
import ml_collections
import ml_dtypes
import numpy as np

from s5jax import modeldir, torch_io
from s5jax.audio import mel
from s5jax.cli import first_few
from s5jax.convert.checks import buffer_mismatch, check_float_weights
from s5jax.models import tagger as tagger_lib

PTH_PREFIX = "module.ar.runtime.backbone."
HEAD_WIDTH_KEY = "module.head.mlp.mlp.0.weight"
BLOCK_PARTS = (
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
    "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
    "mlp.fc2.weight", "mlp.fc2.bias",
)
TO_SPEC_KEYS = ("mel_basis", "stft.wsin", "stft.wcos", "stft.window_mask")
BUFFER_TOL = 1e-6
HEAD_DIM = 64  # the official ViTs' attention head width: num_heads defaults to D // 64


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, when the caller used torch.load
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has none: the same bits as ml_dtypes'
            int16 = sys.modules[type(x).__module__.split(".")[0]].int16
            return x.contiguous().view(int16).numpy().view(ml_dtypes.bfloat16)
        x = x.numpy()
    return np.asarray(x)


def _unwrap(obj: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
    """→ (flat state dict, is_lightning)."""
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    elif "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    # Only tensors matter; torch_io turns any other pickled object into an inert placeholder.
    sd = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray) or hasattr(v, "detach")}
    lightning = any(k.startswith(("model.backbone.", "model.m2d.backbone.")) for k in sd)
    if lightning:
        bad = sorted(k for k in sd if not k.startswith("model."))
        if bad:
            raise ValueError(f"Lightning tagger checkpoint: unexpected keys {bad[:10]}")
        sd = {k[len("model.") :]: v for k, v in sd.items()}
    return {k: _np(v) for k, v in sd.items()}, lightning


def _block_count(keys) -> int:
    idx = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def _encoder_shapes(enc: dict[str, np.ndarray], d: int, depth: int, where: str) -> None:
    """``ValueError`` naming the encoder keys whose shapes do not fit the width ``d`` (read from
    ``cls_token``), the patch size (``patch_embed.proj.weight``) and the MLP width (``fc1``)."""
    for key, ndim, want in (("patch_embed.proj.weight", 4, "(D, 1, patch, patch)"),
                            ("blocks.0.mlp.fc1.weight", 2, "(hidden, D)")):
        if key in enc and enc[key].ndim != ndim:
            raise ValueError(f"{where}: {key} has shape {enc[key].shape}, expected {want} with "
                             f"D = {d}")
    patch = enc["patch_embed.proj.weight"].shape[-1]
    hidden = enc["blocks.0.mlp.fc1.weight"].shape[0] if depth else 0
    want = {"patch_embed.proj.weight": (d, 1, patch, patch), "patch_embed.proj.bias": (d,),
            "norm.weight": (d,), "norm.bias": (d,)}
    for i in range(depth):
        b = f"blocks.{i}."
        want |= {b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "norm2.weight": (d,),
                 b + "norm2.bias": (d,), b + "attn.qkv.weight": (3 * d, d),
                 b + "attn.qkv.bias": (3 * d,), b + "attn.proj.weight": (d, d),
                 b + "attn.proj.bias": (d,), b + "mlp.fc1.weight": (hidden, d),
                 b + "mlp.fc1.bias": (hidden,), b + "mlp.fc2.weight": (d, hidden),
                 b + "mlp.fc2.bias": (d,)}
    bad = [f"{k} {enc[k].shape} (expected {shape})" for k, shape in want.items()
           if enc[k].shape != shape]
    if bad:
        raise ValueError(f"{where}: wrong shapes for embedding width D = {d}: {first_few(bad)}")


def _encoder_params(enc: dict[str, np.ndarray], num_heads: int | None, where: str):
    """Backbone state dict (no prefix) → (sizes, encoder params tree). Checks every key."""
    for k in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if k not in enc:
            raise ValueError(f"{where}: missing key {k!r}")
    if enc["cls_token"].ndim != 3 or enc["cls_token"].shape[:2] != (1, 1):
        raise ValueError(f"{where}: cls_token has shape {enc['cls_token'].shape}, expected "
                         "(1, 1, D) (D = embedding width)")
    d = enc["cls_token"].shape[-1]
    depth = _block_count(enc)
    expected = {"cls_token", "pos_embed", "norm_stats", "patch_embed.proj.weight",
                "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    expected |= {f"blocks.{i}.{p}" for i in range(depth) for p in BLOCK_PARTS}
    missing = sorted(expected - set(enc) - {"norm_stats"})
    unexpected = sorted(set(enc) - expected)
    if missing or unexpected:
        raise ValueError(f"{where}: missing keys {missing[:10]}, unexpected keys {unexpected[:10]}")
    _encoder_shapes(enc, d, depth, where)
    if num_heads is None:
        if d % HEAD_DIM:
            raise ValueError(
                f"{where}: cannot infer the attention head count from embedding width D = {d}: "
                f"the default D // {HEAD_DIM} (the official ViTs' {HEAD_DIM}-wide heads) needs a "
                f"multiple of {HEAD_DIM}; pass num_heads (--num-heads)")
        heads = d // HEAD_DIM
    else:
        heads = num_heads
    if heads < 1 or d % heads:
        raise ValueError(f"{where}: embedding width {d} not divisible by num_heads={heads}")
    hd = d // heads
    f32 = np.float32

    def lin(w):
        return w.T.astype(f32)

    p: dict[str, Any] = {
        "cls_token": enc["cls_token"].astype(f32),
        "pos_embed": enc["pos_embed"].astype(f32),
        # (O, I, mel, time) → (mel, time, I, O): the encoder convolves (batch, mel, time, 1).
        "patch_embed": {"kernel": enc["patch_embed.proj.weight"].transpose(2, 3, 1, 0).astype(f32),
                        "bias": enc["patch_embed.proj.bias"].astype(f32)},
        "norm": {"scale": enc["norm.weight"].astype(f32), "bias": enc["norm.bias"].astype(f32)},
    }
    mlp_hidden = None
    for i in range(depth):
        g = {k: enc[f"blocks.{i}.{k}"] for k in BLOCK_PARTS}
        qkv_w, qkv_b = g["attn.qkv.weight"], g["attn.qkv.bias"]  # shapes checked above
        attn = {}
        for j, name in enumerate(("query", "key", "value")):
            attn[name] = {"kernel": lin(qkv_w[j * d : (j + 1) * d]).reshape(d, heads, hd),
                          "bias": qkv_b[j * d : (j + 1) * d].reshape(heads, hd).astype(f32)}
        attn["out"] = {"kernel": lin(g["attn.proj.weight"]).reshape(heads, hd, d),
                       "bias": g["attn.proj.bias"].astype(f32)}
        mlp_hidden = g["mlp.fc1.weight"].shape[0]
        p[f"blocks_{i}"] = {
            "norm1": {"scale": g["norm1.weight"].astype(f32), "bias": g["norm1.bias"].astype(f32)},
            "norm2": {"scale": g["norm2.weight"].astype(f32), "bias": g["norm2.bias"].astype(f32)},
            "attn": attn,
            "mlp": {"fc1": {"kernel": lin(g["mlp.fc1.weight"]), "bias": g["mlp.fc1.bias"]},
                    "fc2": {"kernel": lin(g["mlp.fc2.weight"]), "bias": g["mlp.fc2.bias"]}},
        }
    if mlp_hidden is None or mlp_hidden % d:
        raise ValueError(f"{where}: cannot infer the MLP ratio (fc1 width {mlp_hidden}, D = {d})")
    patch = enc["patch_embed.proj.weight"].shape[-1]
    sizes = dict(embed_dim=int(d), depth=depth, num_heads=int(heads),
                 mlp_ratio=int(mlp_hidden // d), patch=int(patch))
    return sizes, jax.tree.map(lambda a: np.asarray(a, f32), p)


def _check_to_spec(sd: dict[str, np.ndarray], where: str) -> None:
    wsin, wcos, win = mel.fourier_kernels()
    ours = {"mel_basis": mel.mel_basis(), "stft.wsin": wsin, "stft.wcos": wcos,
            "stft.window_mask": win}
    for k in TO_SPEC_KEYS:
        stored = sd[f"to_spec.{k}"]
        if stored.shape != ours[k].shape:
            raise ValueError(f"{where}: to_spec.{k} has shape {stored.shape}, expected "
                             f"{ours[k].shape} (front end is not the 32 kHz 80-mel nnAudio one)")
        why = buffer_mismatch(stored, ours[k], BUFFER_TOL)
        if why:
            raise ValueError(f"{where}: stored to_spec.{k} differs from the recomputed front end "
                             f"{why}")


SLOT_NORM = ("head.m2d_out_norm.running_mean", "head.m2d_out_norm.running_var")


def _slot_head(rest: dict[str, np.ndarray], where: str):
    """2026 ``HeadAvgLinear`` keys (``head.*``) → ``(params, {key: mean, key: var}, width,
    slot_dims)``.

    Checks every ``head.*`` key and the shapes chaining the layers together.
    """
    n_slots = len({m.group(1) for k in rest if (m := re.match(r"head\.tracks\.(\d+)\.", k))})
    expected = {*SLOT_NORM, "head.m2d_out_norm.num_batches_tracked"}
    expected |= {f"head.linear.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")}
    expected |= {f"head.tracks.{s}.{i}.{p}" for s in range(n_slots) for i in (0, 1, 3)
                 for p in ("weight", "bias")}
    got = {k for k in rest if k.startswith("head.")}
    missing = sorted(expected - got - {"head.m2d_out_norm.num_batches_tracked"})
    unexpected = sorted(got - expected)
    if missing or unexpected:
        raise ValueError(f"{where}: slot head: missing keys {missing[:10]}, unexpected keys "
                         f"{unexpected[:10]} (expected HeadAvgLinear with per-slot "
                         "Linear-LayerNorm-ReLU-Linear tracks)")
    if n_slots != tagger_lib.MAX_SOURCES:
        raise ValueError(f"{where}: slot head has {n_slots} tracks, expected "
                         f"{tagger_lib.MAX_SOURCES}")
    w0 = rest["head.linear.0.weight"]
    width, hidden = rest["head.tracks.0.0.weight"].shape[1], rest["head.tracks.0.0.weight"].shape[0]
    shapes = {"head.linear.0.weight": (n_slots * width, w0.shape[1]),
              "head.linear.0.bias": (n_slots * width,), "head.linear.1.weight": (n_slots * width,),
              "head.linear.1.bias": (n_slots * width,), SLOT_NORM[0]: (w0.shape[1],),
              SLOT_NORM[1]: (w0.shape[1],)}
    for s in range(n_slots):
        t = f"head.tracks.{s}."
        shapes |= {t + "0.weight": (hidden, width), t + "0.bias": (hidden,),
                   t + "1.weight": (hidden,), t + "1.bias": (hidden,),
                   t + "3.weight": (tagger_lib.SLOT_CLASSES, hidden),
                   t + "3.bias": (tagger_lib.SLOT_CLASSES,)}
    for k, shape in shapes.items():
        if rest[k].shape != shape:
            raise ValueError(f"{where}: {k} has shape {rest[k].shape}, expected {shape}")

    def track(i, p):
        return np.stack([rest[f"head.tracks.{s}.{i}.{p}"] for s in range(n_slots)])

    f32 = np.float32
    params = {
        "linear": {"kernel": w0.T, "bias": rest["head.linear.0.bias"]},
        "linear_norm": {"scale": rest["head.linear.1.weight"], "bias": rest["head.linear.1.bias"]},
        "tracks": {
            "fc1": {"kernel": track(0, "weight").transpose(0, 2, 1), "bias": track(0, "bias")},
            "norm": {"scale": track(1, "weight"), "bias": track(1, "bias")},
            "fc2": {"kernel": track(3, "weight").transpose(0, 2, 1), "bias": track(3, "bias")},
        },
    }
    params = jax.tree.map(lambda a: np.asarray(a, f32), params)
    return params, {k: rest[k] for k in SLOT_NORM}, w0.shape[1], (width, hidden)


def _features_and_channels(width: int | None, d: int, n_f: int, max_channels: int, where: str):
    """Head input width → ``(features, in_channels)``: ``C·D`` is flat, ``C·n_f·D`` stacked."""
    if width is None:
        return "stacked", 1  # the baseline's choice when the EVAR head is absent
    for features, unit in (("flat", d), ("stacked", n_f * d)):
        if width % unit == 0 and 1 <= width // unit <= max_channels:
            return features, width // unit
    allowed = "D" if max_channels == 1 else f"C·D (C ≤ {max_channels})"
    raise ValueError(f"{where}: head input width {width} is neither {allowed} nor "
                     f"{n_f}·{allowed} (D={d})")


def convert_state_dict(
    sd: Mapping[str, Any],
    *,
    num_heads: int | None = None,
    adapters: bool = False,
    seed: int = 0,
    where: str = "tagger state dict",
    **config_overrides: Any,
) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """Convert a tagger state dict (Lightning ``.ckpt`` or M2D ``.pth`` layout).

    Args:
      sd: a state dict of arrays (numpy or torch), or the loaded checkpoint holding one under
        ``state_dict`` (Lightning) or ``model`` (M2D).
      num_heads: attention heads (not recoverable from the weights); default ``D // 64``.
      adapters: add fresh (identity) adapters to every block.
      seed: PRNG seed for the parts that are initialised here (fresh 18-way or slot head for
        an M2D ``.pth``, adapters).
      where: file name used in error messages.
      config_overrides: further ``tagger_config`` fields (e.g. ``adapter_ratio``; for an M2D
        ``.pth`` also ``head="slots"``, ``in_channels``, ``slot_dims``). ``head`` and
        ``in_channels`` of a Lightning checkpoint are read from its weights; a different
        requested value is an error.

    Returns:
      ``(model_config, {"params": ..., "batch_stats": {"head_norm": {"mean", "var"}}})``.
    """
    flat, lightning = _unwrap(sd)
    torch_io.check_finite(flat, where)
    head_stats = None
    head = None
    slot_dims = None
    spatial = False
    requested_head = config_overrides.pop("head", None)
    head_kind = requested_head or "sigmoid18"
    if lightning:
        check_float_weights(flat, where)
        spatial = any(k.startswith("m2d.backbone.") for k in flat)  # M2dAtSpatial
        pre = "m2d." if spatial else ""
        enc = {k[len(pre + "backbone.") :]: v for k, v in flat.items()
               if k.startswith(pre + "backbone.")}
        rest = {k: v for k, v in flat.items() if not k.startswith(pre + "backbone.")}
        spec_keys = {f"{pre}to_spec.{k}" for k in TO_SPEC_KEYS}
        norm_keys = {f"{pre}head_norm.{k}" for k in
                     ("running_mean", "running_var", "num_batches_tracked")}
        optional = {f"{pre}head_norm.num_batches_tracked"}
        if "head.linear.0.weight" in rest or spatial:
            known = spec_keys | norm_keys
            extra = {k: v for k, v in rest.items() if not k.startswith("head.")}
            missing = sorted(known - set(extra) - optional)
            unexpected = sorted(set(extra) - known)
            if missing or unexpected:
                raise ValueError(f"{where}: missing keys {missing}, unexpected keys {unexpected}")
            head, head_stats, width, slot_dims = _slot_head(rest, where)
        else:
            known = norm_keys | {"head.weight", "head.bias"} | spec_keys
            missing = sorted(known - set(rest) - optional)
            unexpected = sorted(set(rest) - known)
            if missing or unexpected:
                raise ValueError(f"{where}: missing keys {missing}, unexpected keys {unexpected}")
            head_stats = {k: rest[k] for k in ("head_norm.running_mean",
                                               "head_norm.running_var")}
            if rest["head.weight"].ndim != 2:
                raise ValueError(f"{where}: head.weight has shape {rest['head.weight'].shape}, "
                                 f"expected ({tagger_lib.NUM_CLASSES}, features)")
            head = {"kernel": rest["head.weight"].T, "bias": rest["head.bias"]}
            width = rest["head.weight"].shape[1]
        found = "slots" if slot_dims is not None else "sigmoid18"
        if requested_head not in (None, found):
            raise ValueError(f"{where}: the weights are for head={found!r}, not "
                             f"{requested_head!r}")
        head_kind = found
        _check_to_spec({k[len(pre):]: v for k, v in rest.items() if k in spec_keys}, where)
    else:
        # M2D .pth: strip the EVAR prefix, keep the encoder keys, use the EVAR head extras.
        enc = {}
        for k, v in flat.items():
            k2 = k[len(PTH_PREFIX) :] if k.startswith(PTH_PREFIX) else k
            if k2 in ("cls_token", "pos_embed", "norm_stats") or k2.startswith(
                ("patch_embed.", "blocks.", "norm.")
            ):
                enc[k2] = v
        check_float_weights(enc, where)
        # The official 2026 M2dAt puts the EVAR statistics into its unused encoder BatchNorm;
        # the slot head's own BatchNorm starts fresh.
        stat_keys = ("module.head.norm.running_mean", "module.head.norm.running_var")
        present = [k for k in stat_keys if k in flat]
        if present and head_kind == "sigmoid18":
            if len(present) == 1:
                absent = next(k for k in stat_keys if k not in flat)
                raise ValueError(f"{where}: {present[0]} without {absent}: the EVAR head norm "
                                 "statistics come in pairs")
            check_float_weights({k: flat[k] for k in stat_keys}, where)
            head_stats = {k: flat[k] for k in stat_keys}
        width = None
        if HEAD_WIDTH_KEY in flat:
            if flat[HEAD_WIDTH_KEY].ndim != 2:
                raise ValueError(f"{where}: {HEAD_WIDTH_KEY} has shape "
                                 f"{flat[HEAD_WIDTH_KEY].shape}, expected (classes, width)")
            width = flat[HEAD_WIDTH_KEY].shape[-1]

    sizes, enc_params = _encoder_params(enc, num_heads, where)
    d = sizes["embed_dim"]
    n_mels = config_overrides.pop("n_mels", mel.N_MELS)
    frames = config_overrides.pop("frames", 1001)
    n_f, n_t = n_mels // sizes["patch"], frames // sizes["patch"]
    if enc["pos_embed"].shape != (1, 1 + n_f * n_t, d):
        raise ValueError(f"{where}: pos_embed has shape {enc['pos_embed'].shape}, expected "
                         f"{(1, 1 + n_f * n_t, d)} for {n_mels} mels × {frames} frames")
    requested = config_overrides.pop("in_channels", None)
    if lightning:
        features, in_channels = _features_and_channels(width, d, n_f, 4 if spatial else 1, where)
        if requested not in (None, in_channels):
            raise ValueError(f"{where}: the weights are for in_channels={in_channels}, not "
                             f"{requested}")
    else:  # the M2D .pth head is single-channel; in_channels is the caller's choice
        features, _ = _features_and_channels(width, d, n_f, 1, where)
        in_channels = 1 if requested is None else requested
    if slot_dims is not None:
        config_overrides["slot_dims"] = slot_dims
    stats = enc.get("norm_stats")
    norm_stats = (tuple(float(np.float32(v)) for v in stats.reshape(-1)) if stats is not None
                  else mel.DEFAULT_NORM_STATS)
    if len(norm_stats) != 2:
        raise ValueError(f"{where}: norm_stats has {len(norm_stats)} values, expected 2")
    cfg = tagger_lib.tagger_config(
        **sizes, n_mels=n_mels, frames=frames, features=features, adapters=adapters,
        norm_stats=norm_stats, head=head_kind, in_channels=in_channels, **config_overrides,
    )
    feat = tagger_lib.feature_dim(cfg)

    model = tagger_lib.build_tagger(cfg)
    fresh = jax.tree.map(np.asarray, tagger_lib.init_variables(model, seed=seed, samples=8000))
    params = dict(fresh["params"])
    enc_fresh = traverse_util.flatten_dict(fresh["params"]["encoder"])
    enc_conv = traverse_util.flatten_dict(enc_params)
    for k, v in enc_conv.items():
        if k not in enc_fresh or enc_fresh[k].shape != v.shape:
            raise ValueError(f"{where}: encoder parameter {'/'.join(k)} has shape {v.shape}, "
                             f"model expects {getattr(enc_fresh.get(k), 'shape', None)}")
    # Converted values everywhere; the model's fresh values only for adapters.
    params["encoder"] = traverse_util.unflatten_dict({**enc_fresh, **enc_conv})
    if slot_dims is not None:
        params["head"] = head  # shapes checked in _slot_head, width = feat by construction
    elif head is not None:
        if head["kernel"].shape != (feat, tagger_lib.NUM_CLASSES):
            raise ValueError(f"{where}: head.weight has shape {head['kernel'].T.shape}, expected "
                             f"{(tagger_lib.NUM_CLASSES, feat)}")
        if head["bias"].shape != (tagger_lib.NUM_CLASSES,):
            raise ValueError(f"{where}: head.bias has shape {head['bias'].shape}, expected "
                             f"{(tagger_lib.NUM_CLASSES,)}")
        params["head"] = {k: np.asarray(v, np.float32) for k, v in head.items()}
    batch_stats = dict(fresh["batch_stats"])
    if head_stats is not None:
        for k, s in head_stats.items():
            if s.shape != (feat,):
                raise ValueError(f"{where}: head norm statistics {k} have shape {s.shape}, "
                                 f"expected {(feat,)}")
        mean, var = (np.asarray(s, np.float32) for s in head_stats.values())
        batch_stats = {"head_norm": {"mean": mean, "var": var}}
    variables = {"params": params, "batch_stats": batch_stats}
    _check_variables(variables, fresh, where)
    return cfg, variables


def _check_variables(variables: Mapping[str, Any], fresh: Mapping[str, Any], where: str) -> None:
    """``ValueError`` unless ``variables`` have exactly the leaves and shapes of the model's own
    ``init`` (``fresh``): the last guard, so that no unusable model directory is written."""
    problems = modeldir.variable_problems(fresh, variables)
    if problems:
        raise ValueError(f"{where}: the converted variables do not fit the model ("
                         + "; ".join(problems) + ")")


def convert_file(
    in_path: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False, **kwargs: Any
) -> Path:
    """Convert an official tagger file (``.ckpt`` or ``.pth``) into an s5jax model directory.

    Nothing is written if reading or converting fails. ``kwargs`` go to ``convert_state_dict``.
    """
    modeldir.check_output(out_dir, overwrite)  # before any work
    cfg, variables = convert_path(in_path, **kwargs)
    return modeldir.save_model(out_dir, cfg, variables, overwrite=overwrite)


def convert_path(
    in_path: str | os.PathLike, **kwargs: Any
) -> tuple[ml_collections.ConfigDict, dict]:
    """``(model_config, variables)`` of an official tagger file; errors name the file.

    ``kwargs`` go to ``convert_state_dict``.
    """
    in_path = Path(in_path)
    if not in_path.is_file():
        raise ValueError(f"{in_path}: no such file")
    try:
        obj = torch_io.load(in_path)
        if not isinstance(obj, Mapping):
            raise ValueError(
                f"{in_path}: expected a checkpoint dictionary, got {type(obj).__name__}"
            )
        return convert_state_dict(obj, where=str(in_path), **kwargs)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if str(in_path) in msg else f"{in_path}: {msg}") from e
