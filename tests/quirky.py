"""A copy of the embedded dataset with the quirks real datasets have and the baseline copes with.

* interference clips (both splits) at 48 kHz and stereo (what EARS / hand-made clips look like
  before ``add_data.sh``); their validation metadata still names them;
* AppleDouble ``._*.wav`` junk beside clips, noise files and rooms (a copy from a Mac);
* a 2-channel noise file among the 4-channel ones in ``noise/train``;
* the first validation mixture's background replaced by a 1.5-s file with ``"source_time":
  null`` (the baseline stretches it with ``np.repeat``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)
SHORT_NOISE = "short_noise.wav"
STEREO_NOISE = "stereo_noise.wav"


def make_quirky(embedded: Path, dst: Path) -> dict:
    """Write the quirky copy of ``embedded`` at ``dst``; returns what was changed (counts)."""
    shutil.copytree(embedded, dst, ignore=shutil.ignore_patterns("embedded.json"))
    interference = sorted(dst.glob("interference/*/*/*.wav"))
    for p in interference:
        x, sr = sf.read(str(p), dtype="float64")
        assert sr == 32000 and x.ndim == 1
        y = soxr.resample(x, 32000, 48000, quality="VHQ")
        sf.write(str(p), np.stack([y, 0.6 * y], axis=1), 48000, subtype="PCM_16")
    junk = [p.parent / f"._{p.name}" for p in sorted(dst.glob("sound_event/train/*/*.wav"))[::7]]
    junk += [p.parent / f"._{p.name}" for p in sorted(dst.glob("noise/*/*.wav"))]
    junk += [p.parent / f"._{p.name}" for p in sorted(dst.glob("room_ir/*/*.sofa"))]
    for p in junk:
        p.write_bytes(APPLEDOUBLE)
    rng = np.random.default_rng(5)
    sf.write(str(dst / "noise" / "train" / STEREO_NOISE), 0.05 * rng.standard_normal((12 * 32000,
                                                                                       2)),
             32000, subtype="PCM_16")
    sf.write(str(dst / "noise" / "valid" / SHORT_NOISE),
             0.05 * rng.standard_normal((48000, 4)), 32000, subtype="PCM_16")
    listing = json.loads((dst / "metadata" / "valid.json").read_text())
    first = dst / "metadata" / listing[0]["metadata_path"]
    meta = json.loads(first.read_text())
    meta["bg_events"][0].update(source_file=SHORT_NOISE, source_time=None)
    first.write_text(json.dumps(meta, indent=4))
    return {"resampled": len(interference), "downmixed": len(interference), "hidden": len(junk)}
