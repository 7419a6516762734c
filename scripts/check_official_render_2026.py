"""Render a DCASE 2026 dataset's test metadata with the official code and compare with s5jax's.

    python scripts/check_official_render_2026.py --official PATH/dcase2026_task4_baseline \
        --spaudsyn PATH/SpAudSyn --data DIR [--min-snr 60]

Runs the official ``DatasetS3`` in metadata mode (on SpAudSyn, ``fg_return={dry: True,
dry_channel: 0}``, as the baseline's validation configs do) on ``DIR/metadata/test.json`` and
reports, per mixture, the SNR of s5jax's ``synthesized/test/soundscape/<name>.wav`` and of each
``synthesized/test/oracle_target/<name>_<i>_<Label>.wav`` against the official mixture and dry
target ``i``: ``10·log10(Σ official² / Σ (official − s5jax)²)``; it also checks that a mixture
without targets has no oracle file and that there are no other oracle files. Exits 1 if any
SNR is below ``--min-snr`` or a file is missing or extra.

The official code expects SpAudSyn copied into ``src/modules/spatial_audio_synthesizer`` (its
README); this is done in a temporary copy, so neither checkout is modified. Not part of the test
suite: it needs the official code's dependencies (torch, librosa, python-sofa, pyyaml, pytz,
scipy, soundfile), e.g. in a separate virtual environment; it imports nothing from s5jax. The
metadata's folders are relative to the dataset root (as s5jax writes them), so the official code
runs with ``DIR`` as its working directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf


def snr_db(official: np.ndarray, mine: np.ndarray) -> float:
    err = np.sum((np.asarray(official, np.float64) - mine) ** 2)
    sig = np.sum(np.asarray(official, np.float64) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(sig / err))


def official_dataset(official: Path, spaudsyn: Path, listing: Path, workdir: Path):
    """The official ``DatasetS3`` (metadata mode) from a copy of ``official/src`` with SpAudSyn
    at ``src/modules/spatial_audio_synthesizer``."""
    shutil.copytree(official / "src", workdir / "src")
    shutil.copytree(spaudsyn / "src", workdir / "src" / "modules" / "spatial_audio_synthesizer",
                    dirs_exist_ok=True)
    sys.path.insert(0, str(workdir))
    from src.datamodules.dataset import DatasetS3  # the official code (temporary copy)

    config = {"mode": "metadata", "metadata_list": str(listing), "sr": 32000,
              "fg_return": {"dry": True, "dry_channel": 0, "metadata": True}}
    return DatasetS3(config=config, n_sources=3, label_set="dcase2026t4", return_source=True,
                     label_vector_mode="stack", silence_label_mode="zeros", return_meta=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True,
                        help="the dcase2026_task4_baseline checkout")
    parser.add_argument("--spaudsyn", type=Path, required=True, help="the SpAudSyn checkout")
    parser.add_argument("--data", type=Path, required=True, help="dataset root written by s5jax")
    parser.add_argument("--listing", default="metadata/test.json",
                        help="listing relative to --data (default metadata/test.json)")
    parser.add_argument("--min-snr", type=float, default=60.0)
    args = parser.parse_args(argv)

    data = args.data.resolve()
    listing = data / args.listing
    test = data / "synthesized" / "test"
    if not listing.is_file() or not (test / "soundscape").is_dir():
        print(f"error: {data}: expected {args.listing} and synthesized/test/soundscape/",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="official2026-") as tmp:
        ds = official_dataset(args.official.resolve(), args.spaudsyn.resolve(), listing,
                              Path(tmp))
        os.chdir(data)  # the metadata's folders are relative to the dataset root
        worst, problems, seen = float("inf"), [], set()
        print(f"{'mixture':24s} {'mixture SNR':>12s}  dry targets (i_label: SNR dB)")
        for i in range(len(ds)):
            item = ds[i]
            name = item["soundscape"]  # soundscape_%04d, the listing's order
            mine, rate = sf.read(str(test / "soundscape" / f"{name}.wav"), dtype="float32",
                                 always_2d=True)
            official_mix = item["mixture"].numpy()
            if rate != 32000 or mine.T.shape != official_mix.shape:
                problems.append(f"{name}.wav: {mine.T.shape} at {rate} Hz, expected "
                                f"{official_mix.shape} at 32000 Hz")
                continue
            m = snr_db(official_mix, mine.T)
            worst = min(worst, m)
            dry = []
            for s, label in enumerate(item["label"]):
                if label == "silence":
                    continue
                ref = test / "oracle_target" / f"{name}_{s}_{label}.wav"
                seen.add(ref.name)
                if not ref.is_file():
                    problems.append(f"{ref.name}: missing")
                    continue
                x, _ = sf.read(str(ref), dtype="float32")
                d = snr_db(item["dry_sources"][s, 0].numpy(), x)
                worst = min(worst, d)
                dry.append(f"{s}_{label}: {d:.1f}")
            print(f"{name:24s} {m:12.1f}  {', '.join(dry) or '(no targets)'}")
        extra = sorted(p.name for p in (test / "oracle_target").glob("*.wav")
                       if p.name not in seen)
        problems += [f"{e}: no such target in the official rendering" for e in extra]
    for p in problems:
        print(f"problem: {p}")
    print(f"{len(ds)} mixtures; lowest SNR {worst:.1f} dB (threshold {args.min_snr:g} dB); "
          f"{len(problems)} problem(s)")
    return 0 if worst >= args.min_snr and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
