"""Time the official generator (``DatasetS5`` in generate mode) on a dataset root.

Run by ``scripts/bench_synthesis.py --dataset --official PATH`` in the Python that has the official
baseline's dependencies (torch, librosa, python-sofa, pysofaconventions, spatialscaper); it imports
the official code from ``--official`` (and SpatialScaper from ``--spatialscaper`` if given) and
copies nothing. Prints one JSON line: per-mixture wall seconds of each timed batch, and the
CPU seconds of this process (all its threads; with workers the work is in child processes).

    python scripts/official_synthesis.py --official /path/to/dcase2025_task4_baseline \
        --root DATASET [--spatialscaper /path/to/SpatialScaper] [--batch 4] [--batches 8] \
        [--workers 0] [--seed 0]

The generator config is the baseline's training config (config/separation/resunetk.yaml):
10-s mixtures, 1–3 targets at 5–20 dB, 1–2 interferers at 0–15 dB, background, dry targets.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", required=True)
    p.add_argument("--spatialscaper", default=None)
    p.add_argument("--root", required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    sys.path[:0] = [x for x in (a.spatialscaper, a.official) if x]

    import numpy as np
    import torch
    from src.datamodules.dataset.s5.dataset_s5 import DatasetS5

    random.seed(a.seed)
    np.random.seed(a.seed)  # noqa: NPY002 (the official code draws from the global RNGs)
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)

    def folder(kind: str) -> str:
        return os.path.join(a.root, kind, "train")

    config = {
        "spatialscaper": {
            "foreground_dir": folder("sound_event"), "background_dir": folder("noise"),
            "rir_dir": folder("room_ir"), "interference_dir": folder("interference"),
            "duration": 10.0, "sr": 32000, "max_event_overlap": 3, "ref_db": -50,
            "return_dry": True, "return_wet": False, "return_ir": False,
            "return_background": False, "ref_channel": 0,
            "spatialize_direct_path_time_ms": [6, 50],
        },
        "snr_range": [5, 20], "nevent_range": [1, 3], "inteference_snr_range": [0, 15],
        "ninterference_range": [1, 2], "dataset_length": 100_000, "shuffle_label": False,
    }
    ds = DatasetS5(config, n_sources=3, label_set="dcase2025t4", return_dry=True,
                   label_vector_mode="concat", checking=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, num_workers=a.workers,
                                         collate_fn=ds.collate_fn)
    it = iter(loader)
    next(it)  # warm-up: worker start, file caches
    times, cpu = [], []
    for _ in range(a.batches):
        t0, c0 = time.perf_counter(), time.process_time()
        batch = next(it)
        times.append((time.perf_counter() - t0) / a.batch)
        cpu.append((time.process_time() - c0) / a.batch)
    assert tuple(batch["mixture"].shape) == (a.batch, 4, 320_000), batch["mixture"].shape
    print(json.dumps({"per_mixture_s": times, "per_mixture_cpu_s": cpu, "workers": a.workers,
                      "batch": a.batch}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
