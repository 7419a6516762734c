"""Training logs: TensorBoard (tensorboardX) scalars, audio and spectrogram images, plus a JSONL
file (``<workdir>/log.jsonl``, one ``{"step", "time", <scalars>}`` object per line).

A run resumed at step ``N`` drops what an interrupted run logged after its last checkpoint, so
that no step appears twice: ``log.jsonl`` is cut to the records at steps ≤ ``N``, and the new
TensorBoard event file starts with ``purge_step = N + 1`` (a ``SessionLog.START`` event, on which
TensorBoard hides every earlier event at a step > ``N``).

Only process 0 writes; the other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from s5jax.atomic import write_atomic

SAMPLE_RATE = 32000
TB_DIR = "tb"
JSONL_FILE = "log.jsonl"


def spectrogram_image(wave: np.ndarray, n_fft: int = 512, hop: int = 160) -> np.ndarray:
    """Log-magnitude spectrogram of a mono ``(samples,)`` wave as a ``uint8 (freq, time, 3)``
    image (low frequencies at the bottom), scaled to an 80-dB range."""
    x = np.asarray(wave, np.float32)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = 1 + (x.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft), axis=-1)).T  # (freq, time)
    db = 20 * np.log10(spec + 1e-8)
    db = np.clip(db - db.max() + 80.0, 0.0, 80.0) / 80.0
    img = (255 * db[::-1]).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=-1)


def truncate_jsonl(path: str | os.PathLike, step: int) -> int:
    """Keep the records of ``path`` at steps ≤ ``step`` (none if ``step`` is 0), atomically;
    a line cut short by a kill is dropped. Returns the number of records dropped."""
    f = Path(path)
    if not f.is_file():
        return 0
    kept, dropped = [], 0
    for line in f.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            dropped += bool(line.strip())
            continue
        if step > 0 and isinstance(rec, dict) and int(rec.get("step", 0)) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_atomic(f, "".join(line + "\n" for line in kept))
    return dropped


class Logger:
    """Scalars to TensorBoard + JSONL; audio and images to TensorBoard.

    ``start_step``: the step the run starts from (0, or the restored checkpoint's); anything
    logged at a later step by an earlier, interrupted run is dropped (see the module docstring).
    """

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool | None = None,
                 start_step: int = 0):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.workdir = Path(workdir)
        self._tb = None
        self._jsonl = None
        if self.enabled:
            # Deferred: tensorboardX imports torch when it is installed (seconds), and only the
            # process that logs needs it.
            from tensorboardX import SummaryWriter

            self.workdir.mkdir(parents=True, exist_ok=True)
            truncate_jsonl(self.workdir / JSONL_FILE, start_step)
            # The suffix keeps two writers started within one second (tensorboardX names files
            # by the second) from sharing a file; names still sort in start order.
            self._tb = SummaryWriter(str(self.workdir / TB_DIR),
                                     purge_step=start_step + 1 if start_step else 0,
                                     filename_suffix=f".{time.time_ns()}")
            self._jsonl = open(self.workdir / JSONL_FILE, "a", encoding="utf-8")  # noqa: SIM115

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in values.items()}
        for k, v in clean.items():
            self._tb.add_scalar(k, v, step)
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **clean}) + "\n")
        self._jsonl.flush()
        self._tb.flush()  # what the JSONL has, TensorBoard has (a kill loses neither)

    def audio(self, step: int, tag: str, wave: np.ndarray, sr: int = SAMPLE_RATE) -> None:
        """A mono ``(samples,)`` clip (peak-normalised if it would clip) + its spectrogram."""
        if not self.enabled:
            return
        x = np.asarray(wave, np.float32)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak > 1.0:
            x = x / peak
        self._tb.add_audio(tag, x, step, sample_rate=sr)
        self._tb.add_image(f"{tag}/spectrogram", spectrogram_image(x), step, dataformats="HWC")

    def text(self, step: int, tag: str, text: str) -> None:
        if self.enabled:
            self._tb.add_text(tag, text, step)

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self.enabled = False


def read_jsonl(workdir: str | os.PathLike) -> list[dict]:
    """All records of ``<workdir>/log.jsonl`` (empty list if absent)."""
    f = Path(workdir) / JSONL_FILE
    if not f.is_file():
        return []
    out = []
    for line in f.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return out
