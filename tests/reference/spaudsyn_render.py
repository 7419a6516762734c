"""float64 numpy reference of the DCASE 2026 metadata-mode renderer, written from its semantics.

What ``DatasetS3(config={"mode": "metadata", ...})`` does for one listing entry
(``SpAudSyn.from_metadata`` + ``synthesize`` with ``fg_return={dry: True, dry_channel: 0}``,
``SofaRoom.synthesize``), written here without the official code, reading the files directly
(soundfile, h5py) — independent of s5jax's catalog/recipes/loader:

* every file is read as ``librosa.load(path, sr=32000, offset=, duration=, mono=)``
  (``scaper_render.librosa_load``); paths are ``<config dir>/<source_file>``;
* the mixture starts as zeros ``(nchan, int(duration·sr))``; background events first: a null
  ``source_time`` loads the whole file and loops it (``np.tile``) to the mixture length, else the
  window ``(source_time, event_duration)``; scaled so that its power over all samples and
  channels is ``ref_db + snr`` dB;
* foreground events sorted by ``event_time`` (stable), then interference events sorted the same
  way: ``x`` peak-normalised; the IR = ``Data.IR`` of every measurement whose position is within
  1e-6 of ``event_position`` (``np.isclose``), divided by ``sqrt(mean over (measurements,
  channels) of Σ_t h²)``, the first of them used; wet image = full convolution, gain from the
  power of the whole wet image (``ref_db + snr``); added at ``int(event_time·sr)``, cut at the
  mixture end; dry target (foreground only) = the channel-0 IR kept on
  ``[max(p − ⌊6 ms·sr⌋, 0), min(p + ⌊50 ms·sr⌋, N − 1)]`` (both ends included) around
  ``p = argmax |h₀|``, same gain and placement;
* labels = the sorted foreground events' labels; ``DatasetS3`` pads them with "silence" and the
  dry targets with zeros to 3 slots.

Rooms must be stored at 32 kHz here (SpAudSyn would ``librosa.resample`` them).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import scipy.signal

from tests.reference.scaper_render import librosa_load

SR = 32000


def _gain(target_db: float, x: np.ndarray) -> float:
    return 10 ** ((target_db - 10 * np.log10(np.mean(np.square(x)))) / 20)


def render(root: Path, meta: dict):
    """``(mixture (R, L), dry (n_fg, L), labels)`` float64 for one SpAudSyn JSON; ``root`` is
    the folder its directories are relative to."""
    root = Path(root)
    c = meta["config"]
    sr, length = int(c["sr"]), int(float(c["duration"]) * int(c["sr"]))
    info = meta["room"]["args"]["metadata"]
    assert sr == SR and int(info["sr"]) == sr
    d0, d1 = (int(v * sr / 1000) for v in info["direct_range_ms"])
    mixture = np.zeros((int(info["nchan"]), length))
    with h5py.File(root / info["sofa_path"], "r") as f:
        positions = np.asarray(f["SourcePosition"][()], np.float64)
        ir_all = f["Data.IR"]

        def rirs(position):
            idx = np.nonzero(np.all(np.isclose(positions, np.asarray(position[0]), atol=1e-6),
                                    axis=1))[0]
            assert len(idx) >= 1, position
            h = np.asarray(ir_all[np.sort(idx)], np.float64)  # (k, R, N)
            return h / np.sqrt(np.mean(np.sum(h**2, axis=-1)))

        for ev in meta["bg_events"]:
            path = root / c["background_dir"] / ev["source_file"]
            if ev["source_time"] is not None:
                amb = librosa_load(path, offset=ev["source_time"], duration=ev["event_duration"])
            else:
                amb = librosa_load(path)
                amb = np.tile(amb, (1, -(-length // amb.shape[-1])))[:, :length]
            amb = amb.astype(np.float64)
            mixture += _gain(float(c["ref_db"]) + ev["snr"], amb) * amb

        fg = sorted(meta["fg_events"], key=lambda e: e["event_time"])
        ints = sorted(meta["int_events"], key=lambda e: e["event_time"])
        dry = []
        for role, events in (("fg", fg), ("int", ints)):
            base = c["foreground_dir"] if role == "fg" else c["interference_dir"]
            for ev in events:
                x = librosa_load(root / base / ev["source_file"], mono=True,
                                 offset=ev["source_time"], duration=ev["event_duration"])[0]
                x = x.astype(np.float64)
                scale = 1.0
                if np.max(np.abs(x)) > 0:
                    x = x / np.max(np.abs(x))
                h = rirs(ev["event_position"])
                wet = scipy.signal.fftconvolve(x[None, :], h[0], mode="full", axes=1)
                if np.max(np.abs(x)) > 0:
                    scale = _gain(float(c["ref_db"]) + ev["snr"], wet)
                on = int(ev["event_time"] * sr)
                end = min(on + wet.shape[-1], length)
                mixture[:, on:end] += scale * wet[:, : end - on]
                if role == "fg":
                    h0 = h[:, 0:1, :]  # (k, 1, N): dry_channel 0
                    p = int(np.argmax(np.abs(h0[0, 0])))
                    lo, hi = max(p - d0, 0), min(p + d1, h0.shape[-1] - 1)
                    hd = np.zeros(h0.shape[-1])
                    hd[lo : hi + 1] = h0[0, 0, lo : hi + 1]
                    d = np.zeros(length)
                    d[on:end] = scale * scipy.signal.fftconvolve(x, hd, mode="full")[: end - on]
                    dry.append(d)
    return mixture, np.asarray(dry).reshape(len(fg), length), [e["label"] for e in fg]


def render_listing(listing_json: Path, root: Path | None = None):
    """Render every entry of a ``{metadata_path}`` listing (root: the listing's grandparent);
    yields ``(name, mixture, dry, labels)``."""
    listing_json = Path(listing_json)
    root = Path(root) if root is not None else listing_json.parent.parent
    for entry in json.loads(listing_json.read_text()):
        meta = json.loads((listing_json.parent / entry["metadata_path"]).read_text())
        mix, dry, labels = render(root, meta)
        yield Path(entry["metadata_path"]).stem, mix, dry, labels
