"""float64 numpy reference of the baseline's metadata-mode renderer, written from its semantics.

What ``DatasetS5(config=<valid.json>)`` does for one entry (``SemgSegScaper2.from_metadata`` +
``generate``; baseline_spec.md §2.3–§2.7), written here without the official code, reading the
files directly (soundfile, h5py) — independent of s5jax's catalog/recipes/loader:

* every file is read as ``librosa.load(path, sr=32000, offset=, duration=, mono=)``: frames
  ``[⌊offset·r⌋, +⌊duration·r⌋)`` at the file's own rate ``r``, averaged to mono if asked, then
  soxr "HQ" resampled to ``⌈n·32000/r⌉`` samples;
* background (``get_background_noise``): ``source_time`` null → the whole file, every sample
  repeated ``⌈L/len⌉`` times, cut to ``L``; else the window ``(source_time, event_duration)``,
  which must then be exactly ``L`` samples long (the official code fails otherwise); scaled so
  that its power over all samples and channels is ``ref_db + snr`` dB;
* each foreground event (sorted by onset) and interferer: ``x[: int(event_duration·sr)]``
  peak-normalised; the IR of the measurement nearest ``event_position``, divided by the mean of
  its per-channel L2 norms, used at the rate it is stored (the baseline never resamples IRs);
  wet image = full convolution, gain from the power of the whole wet image; added at
  ``int(event_time·sr)``, cut at ``L``; dry target (foreground only) = the channel-0 IR kept on
  ``[p − ⌊6 ms·sr⌋, p + ⌊50 ms·sr⌋)`` around its signed arg-max, same gain and placement;
* slots in ``ref_event`` order (``list.index`` over the onset-ordered labels padded with
  "silence").
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import scipy.signal
import soundfile as sf
import soxr

SR = 32000


def librosa_load(path, *, offset=0.0, duration=None, mono=False, sr=SR) -> np.ndarray:
    """``(channels, n)`` float32 (``(1, n)`` if mono), librosa.load's semantics."""
    with sf.SoundFile(str(path)) as f:
        rate = f.samplerate
        if offset:
            f.seek(int(offset * rate))
        n = -1 if duration is None else int(duration * rate)
        y = f.read(frames=n, dtype="float32", always_2d=True).T
    if mono:
        y = y.mean(axis=0, keepdims=True)
    if rate != sr:
        want = int(np.ceil(y.shape[1] * sr / rate))
        y = np.stack([soxr.resample(c, rate, sr, quality="soxr_hq") for c in y])
        y = np.pad(y, ((0, 0), (0, max(0, want - y.shape[1]))))[:, :want].astype(np.float32)
    return y


def _db_gain(target_db: float, x: np.ndarray) -> float:
    p = 10 * np.log10(np.mean(np.square(x)))
    return 1.0 if not np.isfinite(p) else 10 ** ((target_db - p) / 20)


def _resolve(root: Path, directory: str, source_file: str) -> Path:
    return root / directory / source_file


def render(root: Path, meta: dict, ref_event: list[str], n_sources: int = 3):
    """``(mixture (R, L), dry (n_sources, L), labels in ref_event order)`` float64.

    ``root``: the folder the ``config`` directories are relative to (the dataset root).
    """
    c = meta.get("config") or meta["init_args"]
    sr, length = int(c["sr"]), int(float(c["duration"]) * int(c["sr"]))
    assert sr == SR
    with h5py.File(root / c["rir_dir"] / meta["room"], "r") as f:
        assert float(np.ravel(f["Data.SamplingRate"][()])[0]) == sr
        ir_all = f["Data.IR"]
        positions = np.asarray(f["SourcePosition"][()], np.float64)
        nch = ir_all.shape[1]

        def ir_of(position):
            idx = int(np.argmin(np.sum((positions - np.asarray(position[0])) ** 2, axis=1)))
            h = np.asarray(ir_all[idx], np.float64)  # (R, N)
            return h / np.mean(np.sqrt(np.sum(h**2, axis=-1)))

        out = np.zeros((length, nch))
        for ev in meta["bg_events"]:
            path = _resolve(root, c["background_dir"], ev["source_file"])
            if ev["source_time"] is not None:
                amb = librosa_load(path, offset=ev["source_time"], duration=ev["event_duration"])
            else:
                amb = librosa_load(path)
                amb = np.repeat(amb, -(-length // amb.shape[-1]), axis=-1)[:, :length]
            amb = amb.T.astype(np.float64)
            if amb.shape != out.shape:
                raise ValueError(f"operands could not be broadcast together with shapes "
                                 f"{out.shape} {amb.shape}")
            out += _db_gain(float(c["ref_db"]) + ev["snr"], amb) * amb

        d0, d1 = (int(v * sr / 1000) for v in c["spatialize_direct_path_time_ms"])
        fg = sorted(meta["fg_events"], key=lambda e: e["event_time"])
        dry_by_event = []
        for role, events in (("fg", fg), ("int", meta.get("int_events", []))):
            base = c["foreground_dir"] if role == "fg" else c["interference_dir"]
            for ev in events:
                x = librosa_load(_resolve(root, base, ev["source_file"]), mono=True,
                                 offset=ev["source_time"], duration=ev["event_duration"])[0]
                x = x[: int(ev["event_duration"] * sr)].astype(np.float64)
                if np.max(np.abs(x)) > 0:
                    x = x / np.max(np.abs(x))
                h = ir_of(ev["event_position"])
                wet = scipy.signal.fftconvolve(x[:, None], h.T, mode="full", axes=0)
                g = _db_gain(float(c["ref_db"]) + ev["snr"], wet)
                on = int(ev["event_time"] * sr)
                end = min(on + len(wet), length)
                out[on:end] += g * wet[: end - on]
                if role == "fg":
                    hd = h[int(c.get("ref_channel", 0))].copy()
                    p = int(np.argmax(hd))
                    if p + d1 < hd.shape[0]:
                        hd[p + d1 :] = 0
                    if p - d0 > 0:
                        hd[: p - d0] = 0
                    dry = np.zeros(length)
                    dry[on:end] = scipy.signal.fftconvolve(x, hd, mode="full")[: end - on] * g
                    dry_by_event.append(dry)

    labels = [e["label"] for e in fg] + ["silence"] * (n_sources - len(fg))
    dry_by_event += [np.zeros(length)] * (n_sources - len(fg))
    assert set(ref_event) == set(labels)
    order = [labels.index(lab) for lab in ref_event]
    return out.T, np.stack([dry_by_event[i] for i in order]), list(ref_event)


def render_listing(root: Path, listing_json: Path):
    """Render every entry of a ``valid.json``-style listing; yields (name, mixture, dry, labels)."""
    for entry in json.loads(Path(listing_json).read_text()):
        meta = json.loads((Path(listing_json).parent / entry["metadata_path"]).read_text())
        mix, dry, labels = render(Path(root), meta, entry["ref_event"])
        yield Path(entry["metadata_path"]).stem, mix, dry, labels
