"""Render a dataset's test metadata with the official baseline and compare with s5jax's wav files.

    python scripts/check_official_render.py --official PATH/dcase2025_task4_baseline --data DIR \
        [--spatialscaper PATH/SpatialScaper] [--min-snr 60]

Runs the official ``DatasetS5`` in metadata mode (SpatialScaper-based, ``return_dry=True``) on
``DIR/metadata/test.json`` and reports, per mixture, the SNR of s5jax's
``test/soundscape/<name>.wav`` and of each ``test/oracle_target/<name>_<Label>.wav`` against the
official mixture and dry target: ``10·log10(Σ official² / Σ (official − s5jax)²)``. Exits 1 if
any is below ``--min-snr``.

Not part of the test suite: it needs the official code and its dependencies (torch, librosa,
python-sofa, pysofaconventions, netCDF4, mat73, pyyaml, pytz, SpatialScaper), e.g. in a separate
virtual environment; it imports nothing from s5jax. The metadata's directories are relative to
the dataset root (as s5jax writes them), so the official code runs with ``DIR`` as its working
directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf


def snr_db(official: np.ndarray, mine: np.ndarray) -> float:
    err = np.sum((np.asarray(official, np.float64) - mine) ** 2)
    sig = np.sum(np.asarray(official, np.float64) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(sig / err))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True,
                        help="the dcase2025_task4_baseline checkout")
    parser.add_argument("--data", type=Path, required=True, help="dataset root written by s5jax")
    parser.add_argument("--spatialscaper", type=Path, default=None,
                        help="SpatialScaper source checkout, if it is not installed")
    parser.add_argument("--listing", default="metadata/test.json",
                        help="listing relative to --data (default metadata/test.json)")
    parser.add_argument("--min-snr", type=float, default=60.0)
    args = parser.parse_args(argv)

    data = args.data.resolve()
    listing = data / args.listing
    if not listing.is_file():
        print(f"error: {listing}: no such listing", file=sys.stderr)
        return 2
    paths = [str(args.official.resolve())]
    if args.spatialscaper:
        paths.append(str(args.spatialscaper.resolve()))
    sys.path[:0] = paths
    os.chdir(data)  # the metadata's directories are relative to the dataset root
    from src.datamodules.dataset.s5.dataset_s5 import DatasetS5  # the official code

    ds = DatasetS5(config=str(listing), n_sources=3, label_set="dcase2025t4", return_dry=True,
                   label_vector_mode="stack")
    worst = float("inf")
    print(f"{'mixture':24s} {'mixture SNR':>12s}  dry targets (label: SNR dB)")
    for i in range(len(ds)):
        name = Path(ds.data[i]["metadata_path"]).stem
        item = ds[i]
        official_mix = item["mixture"].numpy()
        mine, rate = sf.read(str(data / "test" / "soundscape" / f"{name}.wav"), dtype="float32",
                             always_2d=True)
        assert rate == 32000 and mine.T.shape == official_mix.shape, (name, mine.shape)
        m = snr_db(official_mix, mine.T)
        worst = min(worst, m)
        dry = []
        for s, label in enumerate(item["label"]):
            ref = data / "test" / "oracle_target" / f"{name}_{label}.wav"
            if label == "silence":
                assert not ref.exists(), ref
                continue
            x, _ = sf.read(str(ref), dtype="float32")
            d = snr_db(item["dry_sources"][s, 0].numpy(), x)
            worst = min(worst, d)
            dry.append(f"{label}: {d:.1f}")
        print(f"{name:24s} {m:12.1f}  {', '.join(dry)}")
    print(f"{len(ds)} mixtures; lowest SNR {worst:.1f} dB (threshold {args.min_snr:g} dB)")
    return 0 if worst >= args.min_snr else 1


if __name__ == "__main__":
    sys.exit(main())
