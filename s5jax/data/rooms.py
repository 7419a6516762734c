"""First-order Ambisonics room impulse responses of shoebox rooms by the image-source method.

Each image source contributes a pressure impulse ``β^k / r`` (k wall reflections, r metres)
at delay ``r / c`` seconds, drawn with a short windowed-sinc fractional delay, and is encoded
in ACN order with SN3D normalisation: W = p, Y = p·u_y, Z = p·u_z, X = p·u_x, where u is the
unit vector from the microphone towards the image. Frequency-independent walls keep it simple;
the point is a plausible, exactly known spatial structure (direct path, early reflections,
a decaying tail), not acoustic realism.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SPEED_OF_SOUND = 343.0  # m/s
SAMPLE_RATE = 32000
_HALF_TAPS = 4  # fractional-delay kernel: 2·4 taps of a Hann-windowed sinc


@dataclasses.dataclass(frozen=True)
class Shoebox:
    """A rectangular room [0, size] with one wall reflection coefficient and a microphone."""

    size: tuple[float, float, float]  # metres (x, y, z)
    reflection: float  # pressure reflection coefficient β of every wall, in (0, 1)
    mic: tuple[float, float, float]  # microphone position inside the room, metres


def _axis_images(length: float, s: float, m: float, reach: float):
    """Image coordinates along one axis relative to the mic, and their reflection counts."""
    n_max = int(np.ceil(reach / (2.0 * length))) + 1
    n = np.arange(-n_max, n_max + 1)
    coords, counts = [], []
    for p in (0, 1):
        coords.append((1 - 2 * p) * s + 2 * n * length - m)
        counts.append(np.abs(n - p) + np.abs(n))
    return np.concatenate(coords), np.concatenate(counts)


def foa_rir(
    room: Shoebox, source: np.ndarray, frames: int, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """FOA (ACN/SN3D) impulse response from ``source`` (3,) to the room's microphone.

    Image sources more than 80 dB below the strongest one are left out.

    Returns:
      ``(4, frames)`` float64; channel 0 (W) has its largest value at the direct path,
      ``|source − mic| / c · sample_rate`` samples (±1, from the fractional-delay kernel).
    """
    source = np.asarray(source, dtype=np.float64)
    mic = np.asarray(room.mic, dtype=np.float64)
    reach = (frames + _HALF_TAPS) / sample_rate * SPEED_OF_SOUND
    axes = [_axis_images(room.size[a], source[a], mic[a], reach) for a in range(3)]
    dx, dy, dz = np.meshgrid(axes[0][0], axes[1][0], axes[2][0], indexing="ij")
    kx, ky, kz = np.meshgrid(axes[0][1], axes[1][1], axes[2][1], indexing="ij")
    d = np.stack([dx.ravel(), dy.ravel(), dz.ravel()], axis=1)
    k = (kx + ky + kz).ravel()
    r = np.linalg.norm(d, axis=1)
    r = np.maximum(r, 1e-3)
    amp = room.reflection**k / r
    # Images below −80 dB of the strongest are inaudible; skipping them makes long IRs cheap.
    keep = (r <= reach) & (amp >= 1e-4 * amp.max())
    d, r, amp = d[keep], r[keep], amp[keep]
    delay = r / SPEED_OF_SOUND * sample_rate
    base = np.floor(delay).astype(np.int64)
    frac = delay - base
    offsets = np.arange(-_HALF_TAPS + 1, _HALF_TAPS + 1)
    t = offsets[None, :] - frac[:, None]  # (images, taps), distance of each tap from the delay
    kernel = np.sinc(t) * (0.5 + 0.5 * np.cos(np.pi * t / (_HALF_TAPS + 1)))
    idx = (base[:, None] + offsets[None, :]).ravel()
    ok = (idx >= 0) & (idx < frames)
    unit = d / r[:, None]
    gains = (amp, amp * unit[:, 1], amp * unit[:, 2], amp * unit[:, 0])  # W, Y, Z, X
    out = np.empty((4, frames))
    for c, g in enumerate(gains):
        w = (g[:, None] * kernel).ravel()
        out[c] = np.bincount(idx[ok], weights=w[ok], minlength=frames)[:frames]
    return out


def random_room(rng: np.random.Generator, *, size_range=((3.0, 8.0), (3.0, 7.0), (2.4, 3.5)),
                reflection_range=(0.6, 0.85)) -> Shoebox:
    """A random shoebox with the microphone at least 0.8 m from every wall."""
    size = tuple(float(rng.uniform(lo, hi)) for lo, hi in size_range)
    mic = tuple(float(rng.uniform(0.8, s - 0.8)) if s > 1.6 else s / 2 for s in size)
    return Shoebox(size=size, reflection=float(rng.uniform(*reflection_range)), mic=mic)


def random_sources(
    rng: np.random.Generator, room: Shoebox, count: int, frames: int,
    sample_rate: int = SAMPLE_RATE, distance=(1.0, 3.0),
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` source positions (relative to the mic, (count, 3)) and their RIRs (count, 4, N).

    Positions are redrawn until the direct path is the signed maximum of channel 0 (the
    baseline's dry-window anchor, spec §7 item 8) — coinciding reflections can rarely beat it.
    """
    mic = np.asarray(room.mic)
    size = np.asarray(room.size)
    positions, irs = [], []
    while len(positions) < count:
        p = rng.uniform(0.3, size - 0.3)
        rel = p - mic
        dist = float(np.linalg.norm(rel))
        if not distance[0] <= dist <= distance[1]:
            continue
        h = foa_rir(room, p, frames, sample_rate)
        expected = dist / SPEED_OF_SOUND * sample_rate
        if abs(int(np.argmax(h[0])) - expected) > 1.0:
            continue
        positions.append(rel)
        irs.append(h)
    return np.asarray(positions), np.asarray(irs)


def ring_sources(
    rng: np.random.Generator, room: Shoebox, count: int, frames: int,
    sample_rate: int = SAMPLE_RATE, distance=(0.8, 2.5), elevation_deg: float = 20.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` positions around the mic (relative to it) and their RIRs, like
    :func:`random_sources` but spread in azimuth as measured SOFA sets are: source ``k`` at
    azimuth ``360°·k/count`` (± a quarter step), elevation within ±``elevation_deg``, distance
    up to ``distance[1]`` (and 0.3 m inside the walls), so that every direction has measurements
    more than 60° away (the DCASE 2026 repeat rule needs them)."""
    mic = np.asarray(room.mic)
    size = np.asarray(room.size)
    step = 2 * np.pi / count
    positions, irs = [], []
    while len(positions) < count:
        az = step * len(positions) + rng.uniform(-step / 4, step / 4)
        el = np.deg2rad(rng.uniform(-elevation_deg, elevation_deg))
        u = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        with np.errstate(divide="ignore"):
            to_wall = np.where(u > 0, (size - 0.3 - mic) / u, np.where(u < 0, (0.3 - mic) / u,
                                                                          np.inf))
        reach = min(float(to_wall.min()), distance[1])
        dist = float(rng.uniform(min(distance[0], reach), reach))
        p = mic + dist * u
        h = foa_rir(room, p, frames, sample_rate)
        if abs(int(np.argmax(h[0])) - dist / SPEED_OF_SOUND * sample_rate) > 1.0:
            continue
        positions.append(p - mic)
        irs.append(h)
    return np.asarray(positions), np.asarray(irs)
