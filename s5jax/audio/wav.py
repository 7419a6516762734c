"""Checked WAV reading and atomic writing (soundfile).

Every problem with a file — unreadable, corrupt, truncated, wrong sample rate or channel count,
non-finite samples, a window outside the file — is one ``ValueError`` that names the file and
what was expected. Writes go to a temporary file next to the target and are renamed into place,
so a failed or interrupted write never leaves a half-written file behind.

Arrays are channels-first: ``(channels, frames)`` float32, as in the rest of s5jax.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from s5jax.atomic import atomic_path

SAMPLE_RATE = 32000
# Largest value representable in 16-bit PCM after soundfile's float → int16 scaling (×32768).
_PCM16_MAX = 32767 / 32768


@dataclasses.dataclass(frozen=True)
class WavInfo:
    sample_rate: int
    channels: int
    frames: int


def _riff_declared_frames(path: Path) -> int | None:
    """Frames that a RIFF/WAVE header declares, or None if it cannot be told from the header.

    libsndfile silently shortens a file whose ``data`` chunk is cut off (it trusts the file
    size), so a truncated download would otherwise read as a shorter, valid clip.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None  # not plain RIFF (RF64, FLAC, …): nothing to cross-check
            block_align = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size)
                    if len(fmt) >= 14:
                        block_align = struct.unpack("<H", fmt[12:14])[0]
                    if size % 2:
                        f.seek(1, os.SEEK_CUR)
                elif cid == b"data":
                    # 0 and 0xFFFFFFFF are "size unknown" markers left by streaming writers.
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    f.seek(size + (size % 2), os.SEEK_CUR)
    except OSError:
        return None


def _open_info(path: Path) -> WavInfo:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        i = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise ValueError(f"{path}: not a readable audio file ({e})") from None
    declared = _riff_declared_frames(path)
    if declared is not None and declared > i.frames:
        raise ValueError(
            f"{path}: truncated file: header declares {declared} frames, only {i.frames} present"
        )
    return WavInfo(sample_rate=int(i.samplerate), channels=int(i.channels), frames=int(i.frames))


def info(path: str | os.PathLike) -> WavInfo:
    """Sample rate, channel count and length in frames; ``ValueError`` if unreadable/truncated."""
    return _open_info(Path(path))


def read(
    path: str | os.PathLike,
    *,
    sample_rate: int = SAMPLE_RATE,
    channels: int | None = None,
    start: int = 0,
    frames: int | None = None,
) -> np.ndarray:
    """Read ``frames`` frames starting at frame ``start`` (seeking: only that window is read).

    Args:
      path: an audio file soundfile can read (WAV in practice).
      sample_rate: required sample rate; there is no resampling.
      channels: required channel count, or None to accept any.
      start: first frame of the window.
      frames: window length; None reads to the end of the file.

    Returns:
      ``(channels, frames)`` float32; PCM is scaled to [−1, 1) as soundfile/librosa do.
    """
    path = Path(path)
    i = _open_info(path)
    if i.sample_rate != sample_rate:
        raise ValueError(f"{path}: sample rate {i.sample_rate} Hz, expected {sample_rate} Hz")
    if channels is not None and i.channels != channels:
        raise ValueError(f"{path}: {i.channels} channels, expected {channels}")
    if frames is None:
        frames = i.frames - start
    if start < 0 or frames < 0 or start + frames > i.frames:
        raise ValueError(
            f"{path}: window [{start}, {start + frames}) is outside the file's {i.frames} frames"
        )
    try:
        with sf.SoundFile(str(path)) as f:
            if start:
                f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise ValueError(f"{path}: read failed ({e})") from None
    if data.shape[0] != frames:
        raise ValueError(
            f"{path}: truncated file: expected {frames} frames from frame {start}, "
            f"got {data.shape[0]}"
        )
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: non-finite samples (NaN or inf); expected finite audio")
    return np.ascontiguousarray(data.T)


def write(
    path: str | os.PathLike,
    audio: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    subtype: str = "FLOAT",
) -> Path:
    """Write a WAV file atomically (temp file in the same directory, then ``os.replace``).

    Args:
      path: target file; its directory must exist.
      audio: ``(channels, frames)`` or ``(frames,)``, finite.
      sample_rate: in Hz.
      subtype: ``"FLOAT"`` (exact float32) or ``"PCM_16"`` (clipped to [−1, 1) and quantised,
        which is what the baseline's submission writer produces).

    Returns:
      the path written.
    """
    path = Path(path)
    a = np.asarray(audio)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(
            f"{path}: audio of shape {np.shape(audio)}, expected (channels, frames) or (frames,)"
        )
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{path}: audio dtype {a.dtype}, expected a float array")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{path}: audio has non-finite samples (NaN or inf); expected finite")
    if subtype not in ("FLOAT", "PCM_16"):
        raise ValueError(f"{path}: subtype {subtype!r}, expected 'FLOAT' or 'PCM_16'")
    if subtype == "PCM_16":
        a = np.clip(a, -1.0, _PCM16_MAX)
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {path.parent} does not exist")
    try:
        with atomic_path(path) as tmp:
            sf.write(tmp, a.T, sample_rate, subtype=subtype, format="WAV")
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise ValueError(f"{path}: write failed ({e})") from None
    return path
