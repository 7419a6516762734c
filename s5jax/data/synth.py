"""Mixture rendering (spec §2.3 step 5 and §2.4): jitted float32 on the accelerator, plus a float64
numpy/scipy reference of the same algorithm.

Both take the fixed-size host arrays the loader builds for one mixture (the reference) or a batch
(the jitted renderer; leading batch axis ``B``). ``E`` event slots = ``S`` target slots first,
then interferer slots:

| key | shape | meaning |
|---|---|---|
| ``source`` | ``(E, Ls)`` | raw mono source window, zero-padded to ``Ls`` (≥ every source length) |
| ``source_len`` | ``(E,)`` int32 | valid samples of ``source`` |
| ``ir`` | ``(E, R, N)`` | raw RIR of the event's position, zero-padded to ``N`` |
| ``ir_len`` | ``(E,)`` int32 | valid samples of ``ir`` |
| ``onset`` | ``(E,)`` int32 | placement frame ``⌊event_time · sr⌋`` |
| ``level_db`` | ``(E,)`` | target level ``ref_db + snr`` of the full wet image |
| ``active`` | ``(E,)`` bool | slot holds an event |
| ``noise`` | ``(R, L)`` | background window (a short file stretched with ``np.repeat``) |
| ``noise_active`` | ``()`` bool | a background is present |
| ``labels`` | ``(S,)`` int32 | target classes in slot order, -1 empty |

Per event: peak-normalise the source; normalise the IR (below); wet image ``w = x * h`` (full linear
convolution); gain ``g = 10^((level − P(w))/20)`` with ``P`` the mean power over all
``Ls + N − 1`` samples and all channels; add ``g·w`` at ``onset``, cut at ``L``. Dry target
(targets only): ``g · (x * h_dir)`` with ``h_dir`` the channel-0 IR kept on a window from 6 ms
before to 50 ms after its peak ``p``. Background: scaled to ``ref_db`` power over all samples and
channels. Inactive slots are exactly 0.

Where the two years' official renderers differ, :data:`RULES` says what each does (the task is a
config value, ``"dcase2025"`` or ``"dcase2026"``):

| | ``dcase2025`` (SpatialScaper) | ``dcase2026`` (SpAudSyn ``SofaRoom``) |
|---|---|---|
| dry-window peak ``p`` | arg-max of the signed ``h₀`` | arg-max of ``|h₀|`` |
| dry window | ``[p − d0, p + d1)`` | ``[p − d0, p + d1]`` (end included) |
| short background (``source_time`` null) | samples repeated (``np.repeat``) | loop (``np.tile``) |

(the last row is applied by the loader, which builds the background window). The IRs are also
normalised differently (2025 ``h / mean_r ‖h_r‖``, 2026 ``h / sqrt(mean_r ‖h_r‖²)``), but that
cannot change the output: the gain is computed from the wet image afterwards, so any scale of
``h`` cancels in the mixture and the dry target alike; the 2025 normalisation is used for both.

The jitted renderer places each source at its onset in the time domain (the loader guarantees
``onset + source_len ≤ L``, so the placed source holds every sample and the wet power is
unchanged), then works in the frequency domain: one rFFT per placed source and per IR channel,
the wet power by Parseval (``Σ_f |X|²·Σ_r |H_r|²``), the sum over events in the spectrum, and one
inverse FFT per mixture channel and per dry target — no scatter, no per-event inverse
transforms.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

from s5jax import labels as labels_lib

SAMPLE_RATE = 32000
REF_DB = -50.0
TASKS = ("dcase2025", "dcase2026")


@dataclasses.dataclass(frozen=True)
class RenderRules:
    """What one year's official renderer does where the years differ (module docstring)."""

    dry_abs_peak: bool  # dry-window anchor: arg-max of |h₀| (2026) instead of h₀ (2025)
    dry_end_inclusive: bool  # window [p − d0, p + d1] (2026) instead of [p − d0, p + d1)
    short_noise: str  # "repeat" (np.repeat, 2025) | "tile" (np.tile, 2026)


RULES: dict[str, RenderRules] = {
    "dcase2025": RenderRules(False, False, "repeat"),
    "dcase2026": RenderRules(True, True, "tile"),
}


def rules(task: str) -> RenderRules:
    """The :class:`RenderRules` of ``task``; ``ValueError`` naming the known tasks."""
    if task not in RULES:
        raise ValueError(f"task {task!r}: expected one of {TASKS}")
    return RULES[task]
INPUT_KEYS = ("source", "source_len", "ir", "ir_len", "onset", "level_db", "active", "noise",
              "noise_active", "labels")


def fast_fft_length(n: int) -> int:
    """Smallest ``2^a · 3^b · 5^c ≥ n``."""
    if n < 1:
        raise ValueError(f"FFT length {n}: expected a positive integer")
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def dry_window(sr: int, window_ms: tuple[float, float] = (6.0, 50.0)) -> tuple[int, int]:
    """``(d0, d1)`` samples before/after the IR peak kept in the dry target."""
    return int(window_ms[0] * sr / 1000), int(window_ms[1] * sr / 1000)


# ----------------------------------------------------------------------------------------------
# float64 reference (one mixture)


def render_reference(
    item: dict[str, np.ndarray],
    *,
    length: int,
    num_targets: int = labels_lib.MAX_SOURCES,
    ref_db: float = REF_DB,
    sr: int = SAMPLE_RATE,
    window_ms: tuple[float, float] = (6.0, 50.0),
    task: str = "dcase2025",
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline rendering in float64 with ``scipy.signal.fftconvolve`` (``task``: :data:`RULES`).

    Returns ``mixture (R, length)`` and ``dry (num_targets, length)`` float64.
    """
    rule = rules(task)
    d0, d1 = dry_window(sr, window_ms)
    r = item["ir"].shape[-2]
    y = np.zeros((r, length), np.float64)
    dry = np.zeros((num_targets, length), np.float64)
    if bool(item["noise_active"]):
        n = np.asarray(item["noise"], np.float64)[:, :length]
        p = 10 * np.log10(np.mean(n**2))
        y += 10 ** ((ref_db - p) / 20) * n
    for e in range(item["source"].shape[0]):
        if not bool(item["active"][e]):
            continue
        x = np.asarray(item["source"][e, : int(item["source_len"][e])], np.float64)
        peak = np.max(np.abs(x))
        if peak > 0:
            x = x / peak
        h = np.asarray(item["ir"][e, :, : int(item["ir_len"][e])], np.float64)
        h = h / np.mean(np.linalg.norm(h, axis=-1))
        w = scipy.signal.fftconvolve(x[None, :], h, axes=-1)
        g = 10 ** ((float(item["level_db"][e]) - 10 * np.log10(np.mean(w**2))) / 20)
        on = int(item["onset"][e])
        end = min(on + w.shape[-1], length)
        y[:, on:end] += g * w[:, : end - on]
        if e < num_targets:
            hd = h[0].copy()
            p = int(np.argmax(np.abs(hd) if rule.dry_abs_peak else hd))
            stop = p + d1 + int(rule.dry_end_inclusive)  # first sample after the window
            if stop < hd.shape[0]:
                hd[stop:] = 0
            if p - d0 > 0:
                hd[: p - d0] = 0
            d = g * scipy.signal.fftconvolve(x, hd)
            dry[e, on:end] = d[: end - on]
    return y, dry


# ----------------------------------------------------------------------------------------------
# jitted float32 renderer (batch)


def _parseval_weights(nfft: int) -> np.ndarray:
    f = nfft // 2 + 1
    w = np.full(f, 2.0, np.float32)
    w[0] = 1.0
    if nfft % 2 == 0:
        w[-1] = 1.0
    return w / nfft


def _sum_last(x: jnp.ndarray) -> jnp.ndarray:
    """Sum over the last axis in two stages (keeps float32 rounding error small)."""
    f = x.shape[-1]
    block = 1024
    pad = (-f) % block
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
    return x.reshape(*x.shape[:-1], -1, block).sum(-1).sum(-1)


@functools.partial(
    jax.jit,
    static_argnames=("length", "num_targets", "with_dry", "ref_db", "d0", "d1", "nfft", "rule"),
)
def _render(batch, *, length, num_targets, with_dry, ref_db, d0, d1, nfft, rule):
    f32 = jnp.float32
    x = batch["source"].astype(f32)  # (B, E, Ls)
    h = batch["ir"].astype(f32)  # (B, E, R, N)
    r, n_ir = h.shape[-2], h.shape[-1]
    active = batch["active"]
    peak = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    x = x / jnp.where(peak > 0, peak, 1.0)
    norm = jnp.mean(jnp.sqrt(jnp.sum(h * h, axis=-1)), axis=-1)  # (B, E)
    h = h / jnp.where(norm > 0, norm, 1.0)[..., None, None]

    # Place each source at its onset: placed[t] = x[t − onset] on [0, L).
    idx = jnp.arange(length, dtype=jnp.int32) - batch["onset"].astype(jnp.int32)[..., None]
    ls = x.shape[-1]
    x = jnp.where(idx >= 0, jnp.take_along_axis(x, jnp.clip(idx, 0, ls - 1), axis=-1), 0.0)

    xf = jnp.fft.rfft(x, n=nfft, axis=-1)  # (B, E, F)
    hf = jnp.fft.rfft(h, n=nfft, axis=-1)  # (B, E, R, F)
    pw = jnp.asarray(_parseval_weights(nfft))
    # Sums over the small E and R axes are unrolled: XLA:CPU reduces over a non-minor axis (or
    # contracts it in an einsum) 20–30× slower than it adds the slices.
    h_pow = sum(jnp.real(hf[:, :, i]) ** 2 + jnp.imag(hf[:, :, i]) ** 2 for i in range(r))
    energy = _sum_last((jnp.real(xf) ** 2 + jnp.imag(xf) ** 2) * h_pow * pw)  # (B, E)
    count = r * (batch["source_len"] + batch["ir_len"] - 1).astype(f32)
    power = energy / jnp.maximum(count, 1.0)
    safe = active & (power > 0)
    gain_db = batch["level_db"].astype(f32) - 10.0 * jnp.log10(jnp.where(safe, power, 1.0))
    gain = jnp.where(safe, 10.0 ** (gain_db / 20.0), 0.0)  # (B, E)

    xg = xf * gain[..., None].astype(xf.dtype)  # (B, E, F)
    yf = sum(hf[:, e] * xg[:, e, None] for e in range(hf.shape[1]))  # (B, R, F)
    y = jnp.fft.irfft(yf, n=nfft, axis=-1)[..., :length]

    noise = batch["noise"].astype(f32)[..., :length]  # (B, R, L)
    npow = jnp.mean(noise * noise, axis=(-2, -1))
    nok = batch["noise_active"] & (npow > 0)
    nlog = 10.0 * jnp.log10(jnp.where(nok, npow, 1.0))
    g_bg = jnp.where(nok, 10.0 ** ((ref_db - nlog) / 20.0), 0.0)
    y = y + g_bg[:, None, None] * noise
    out = {"mixture": y, "labels": batch["labels"].astype(jnp.int32)}
    if not with_dry:
        return out

    h0 = h[:, :num_targets, 0, :]  # (B, S, N)
    t = jnp.arange(n_ir, dtype=jnp.int32)
    valid = t < batch["ir_len"][:, :num_targets, None]
    peak_of = jnp.abs(h0) if rule.dry_abs_peak else h0
    p = jnp.argmax(jnp.where(valid, peak_of, -jnp.inf), axis=-1)[..., None]
    stop = p + d1 + int(rule.dry_end_inclusive)  # first sample after the window
    hd = jnp.where((t >= p - d0) & (t < stop), h0, 0.0)
    df = xg[:, :num_targets] * jnp.fft.rfft(hd, n=nfft, axis=-1)
    out["dry"] = jnp.fft.irfft(df, n=nfft, axis=-1)[..., :length]
    return out


def render(
    batch: dict,
    *,
    length: int,
    num_targets: int = labels_lib.MAX_SOURCES,
    with_dry: bool = True,
    ref_db: float = REF_DB,
    sr: int = SAMPLE_RATE,
    window_ms: tuple[float, float] = (6.0, 50.0),
    nfft: int | None = None,
    task: str = "dcase2025",
) -> dict[str, jax.Array]:
    """Render a batch on the default device (or wherever ``batch`` is sharded).

    Args:
      batch: host or device arrays with a leading batch axis (module docstring).
      length: mixture length ``L`` in samples.
      task: whose renderer to follow where the years differ (:data:`RULES`).
      nfft: FFT length; default the fast length ≥ ``Ls + N − 1`` (no wrap-around because the
        loader guarantees ``onset + source_len ≤ L ≤ Ls``).

    Returns:
      ``{"mixture": (B, R, L), "dry": (B, S, L) (if with_dry), "labels": (B, S) int32}``, float32.
    """
    ls, n_ir = batch["source"].shape[-1], batch["ir"].shape[-1]
    if ls < length:
        raise ValueError(f"source windows ({ls} samples) shorter than the mixture ({length})")
    need = ls + n_ir - 1
    nfft = nfft or fast_fft_length(need)
    if nfft < need or nfft > 1 << 21:
        raise ValueError(f"nfft {nfft}: expected {need} ≤ nfft ≤ 2^21")
    d0, d1 = dry_window(sr, window_ms)
    return _render(
        batch, length=length, num_targets=num_targets, with_dry=with_dry, ref_db=float(ref_db),
        d0=d0, d1=d1, nfft=nfft, rule=rules(task),
    )
