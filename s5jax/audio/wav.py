"""Checked WAV reading, resampling and atomic writing (soundfile, soxr).

Every problem with a file — unreadable, corrupt, truncated, wrong sample rate or channel count,
non-finite samples, a window outside the file — is one ``ValueError`` that names the file and
what was expected. Writes go to a temporary file next to the target and are renamed into place,
so a failed or interrupted write never leaves a half-written file behind.

``read`` wants the file at the given rate; ``load`` takes any rate and resamples the window it
reads, exactly as the baseline's ``librosa.load(sr=32000, offset=, duration=, mono=)`` does.

Arrays are channels-first: ``(channels, frames)`` float32, as in the rest of s5jax.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from s5jax.atomic import write_atomic

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


def _checked_info(path: Path, rate: int, channels: int, frames: int) -> WavInfo:
    declared = _riff_declared_frames(path)
    if declared is not None and declared > frames:
        raise ValueError(
            f"{path}: truncated file: header declares {declared} frames, only {frames} present"
        )
    return WavInfo(sample_rate=int(rate), channels=int(channels), frames=int(frames))


def _open_info(path: Path) -> WavInfo:
    with _opened(path) as (_, i):
        return i


@contextlib.contextmanager
def _opened(path: Path):
    """``(soundfile, WavInfo)`` of a checked file, open once for its header and its samples."""
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            raise ValueError(f"{path}: a broken symbolic link (to {os.readlink(path)})")
        raise ValueError(f"{path}: no such file")
    try:
        # As bytes: soundfile encodes a str path strictly as UTF-8, so a name that is not
        # (a Latin-1 name on a UTF-8 system, kept by Python as surrogates) could not be opened.
        f = sf.SoundFile(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise ValueError(f"{path}: not a readable audio file ({e})") from None
    with f:
        yield f, _checked_info(path, f.samplerate, f.channels, f.frames)


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
    with _opened(path) as (f, i):
        if i.sample_rate != sample_rate:
            raise ValueError(f"{path}: sample rate {i.sample_rate} Hz, expected {sample_rate} Hz")
        if channels is not None and i.channels != channels:
            raise ValueError(f"{path}: {i.channels} channels, expected {channels}")
        if frames is None:
            frames = i.frames - start
        if start < 0 or frames < 0 or start + frames > i.frames:
            raise ValueError(
                f"{path}: window [{start}, {start + frames}) is outside the file's {i.frames} "
                "frames"
            )
        return _read_window(f, path, start, frames)


def _read_window(f: sf.SoundFile, path: Path, start: int, frames: int) -> np.ndarray:
    """Frames ``[start, start + frames)`` (checked to lie in the file) of the open ``f`` as
    ``(channels, frames)`` float32."""
    # 16-bit PCM is read as integers and scaled here: the same float32 values as soundfile's own
    # conversion (x / 32768, exact), written straight into channels-first order, and integers
    # cannot be non-finite.
    pcm16 = f.subtype == "PCM_16"
    try:
        if start:
            f.seek(start)
        data = f.read(frames, dtype="int16" if pcm16 else "float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise ValueError(f"{path}: read failed ({e})") from None
    if data.shape[0] != frames:
        raise ValueError(
            f"{path}: truncated file: expected {frames} frames from frame {start}, "
            f"got {data.shape[0]}"
        )
    if pcm16:
        out = np.empty((data.shape[1], frames), np.float32)
        np.multiply(data.T, np.float32(1.0 / 32768.0), out=out)
        return out
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: non-finite samples (NaN or inf); expected finite audio")
    return np.ascontiguousarray(data.T)


def resample(x: np.ndarray, from_rate: float, to_rate: float) -> np.ndarray:
    """Resample ``(channels, frames)`` along the last axis, as librosa.resample's default.

    soxr at its "HQ" quality (librosa's ``res_type="soxr_hq"``), each channel independently, then
    zero-padded or cut to ``ceil(frames · to_rate / from_rate)`` samples (librosa's ``fix=True``).
    Returns ``x`` itself when the rates are equal; float32 in, float32 out.
    """
    if from_rate == to_rate:
        return x
    if not (from_rate > 0 and to_rate > 0):
        raise ValueError(f"resample {from_rate} Hz → {to_rate} Hz: expected positive rates")
    x = np.asarray(x)
    n = int(np.ceil(x.shape[-1] * float(to_rate) / from_rate))
    y = soxr.resample(np.ascontiguousarray(x.T), from_rate, to_rate, quality="HQ").T
    if y.shape[-1] < n:
        y = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, n - y.shape[-1])])
    return np.ascontiguousarray(y[..., :n], dtype=x.dtype)


def load(
    path: str | os.PathLike,
    *,
    sample_rate: int = SAMPLE_RATE,
    offset: float = 0.0,
    duration: float | None = None,
    mono: bool = False,
    channels: int | None = None,
) -> np.ndarray:
    """Read a window of a file at any rate and resample it to ``sample_rate``.

    The semantics of ``librosa.load(path, sr=sample_rate, offset=, duration=, mono=)``, which
    the baseline uses for every clip and background: frames ``[⌊offset·r⌋, ⌊offset·r⌋ +
    ⌊duration·r⌋)`` at the file's own rate ``r``, cut at the end of the file; averaged over
    channels if ``mono``; then resampled (:func:`resample`) if ``r ≠ sample_rate``. Only that
    window is read and resampled.

    Args:
      path: an audio file soundfile can read.
      sample_rate: the rate of the returned samples.
      offset: start, in seconds of the file.
      duration: length in seconds; None reads to the end.
      mono: average the channels (librosa.to_mono).
      channels: required channel count of the file, or None to accept any.

    Returns:
      ``(channels, frames)`` float32 (``(1, frames)`` if ``mono``).
    """
    path = Path(path)
    with _opened(path) as (f, i):
        if channels is not None and i.channels != channels:
            raise ValueError(f"{path}: {i.channels} channels, expected {channels}")
        start = int(offset * i.sample_rate)
        frames = i.frames - start if duration is None else int(duration * i.sample_rate)
        if start < 0 or frames < 0 or start >= i.frames:
            raise ValueError(f"{path}: window of {duration} s at {offset} s is outside the "
                             f"file's {i.frames / i.sample_rate:.6g} s")
        x = _read_window(f, path, start, min(frames, i.frames - start))
    if mono and x.shape[0] > 1:
        x = x.mean(axis=0, keepdims=True)
    return resample(x, i.sample_rate, sample_rate)


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
    # Encoded in memory, then written by Python: a full disk or a permission problem is then an
    # OSError with its reason ("No space left on device"), not libsndfile's "System error".
    buf = io.BytesIO()
    try:
        sf.write(buf, a.T, sample_rate, subtype=subtype, format="WAV")
    except (sf.LibsndfileError, RuntimeError) as e:
        raise ValueError(f"{path}: cannot encode the audio as WAV ({e})") from None
    try:
        write_atomic(path, buf.getbuffer())
    except OSError as e:
        raise ValueError(f"{path}: write failed ({e.strerror or e})") from None
    return path
