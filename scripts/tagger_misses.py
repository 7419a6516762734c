"""Where a tagger's mistakes fall on a labelled test set: by event SNR and by event duration.

A 2025 (18-sigmoid) tagger decides each soundscape's classes with ``evaluate``'s rule
(``models.tagger.predict``: threshold 0.5, at least the arg-max class); this script counts the
target events it misses (false negatives) against the ``snr`` and ``event_duration`` that the
soundscape's metadata JSON gives each of them, and the false positives. It reads the metadata
the embedded datasets (and the DCASE generators) write: ``<root>/metadata/test/<soundscape>.json``
with ``fg_events`` (``label``, ``snr``, ``event_duration``).

    python scripts/tagger_misses.py --tagger MODEL [--root DIR] [--json FILE]

``--root``: a dataset root with ``test/`` and ``metadata/test/`` (default: the embedded ``full``
dataset). Prints one table; ``--json`` writes the counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import benchlib
import jax
import jax.numpy as jnp
import numpy as np

from s5jax import labels as labels_lib
from s5jax.audio import wav
from s5jax.data.embedded import ensure_embedded
from s5jax.data.testset import TestSet
from s5jax.inference.loading import load_tagger_any
from s5jax.models.tagger import predict

SNR_BINS = ((5.0, 10.0), (10.0, 15.0), (15.0, float("inf")))
DURATION_BINS = ((0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, float("inf")))


def _bins(values: np.ndarray, missed: np.ndarray, edges) -> list[dict]:
    rows = []
    for lo, hi in edges:
        inside = (values >= lo) & (values < hi)
        rows.append({"from": lo, "to": hi, "events": int(inside.sum()),
                     "missed": int(missed[inside].sum())})
    low = values < edges[0][0]
    if low.any():
        rows.insert(0, {"from": float("-inf"), "to": edges[0][0], "events": int(low.sum()),
                        "missed": int(missed[low].sum())})
    return rows


def misses(tagger: str, root: Path, batch: int = 10) -> dict:
    """The counts (see the module docstring) of ``tagger`` on ``root``'s test split."""
    model, variables, cfg = load_tagger_any(tagger)
    if cfg.get("head") == "slots":
        raise ValueError(f"{tagger}: a 2026 slot tagger; this script reads 18-sigmoid taggers")
    ts = TestSet(root / "test")
    meta_dir = root / "metadata" / "test"
    apply = jax.jit(lambda x: model.apply(variables, x, train=False))
    snr, dur, missed = [], [], []
    exact = false_pos = 0
    for i in range(0, len(ts), batch):
        items = [ts[k] for k in range(i, min(i + batch, len(ts)))]
        x = np.stack([wav.load(it.path, channels=4) for it in items])
        decided = np.asarray(predict(apply(jnp.asarray(x))))
        for it, row in zip(items, decided, strict=True):
            pred = {int(c) for c in row if c >= 0}
            truth = {labels_lib.class_index(lab) for lab in it.labels}
            exact += pred == truth
            false_pos += len(pred - truth)
            meta_file = meta_dir / f"{it.name}.json"
            if not meta_file.is_file():
                raise ValueError(f"{meta_file}: no metadata for soundscape {it.name}")
            for ev in json.loads(meta_file.read_text())["fg_events"]:
                snr.append(float(ev["snr"]))
                dur.append(float(ev["event_duration"]))
                missed.append(labels_lib.class_index(ev["label"]) not in pred)
    missed_a = np.asarray(missed, bool)
    return {
        "tagger": str(tagger), "test": str(root / "test"), "mixtures": len(ts),
        "mixture_accuracy": 100.0 * exact / len(ts), "events": len(missed),
        "missed": int(missed_a.sum()), "false_positives": false_pos,
        "by_snr": _bins(np.asarray(snr), missed_a, SNR_BINS),
        "by_duration": _bins(np.asarray(dur), missed_a, DURATION_BINS),
    }


def _table(res: dict) -> str:
    lines = [f"{res['tagger']} on {res['test']}: mixture accuracy "
             f"{res['mixture_accuracy']:.1f} % of {res['mixtures']}; {res['missed']} of "
             f"{res['events']} target events missed, {res['false_positives']} false positives"]
    for key, unit in (("by_snr", "dB SNR"), ("by_duration", "s")):
        for r in res[key]:
            share = f"{100 * r['missed'] / r['events']:.0f} %" if r["events"] else "–"
            lines.append(f"  {r['from']:g}–{r['to']:g} {unit}: {r['missed']} of {r['events']} "
                         f"missed ({share})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tagger", required=True, help="tagger model dir, work dir or checkpoint")
    p.add_argument("--root", type=Path, help="dataset root (default: embedded full)")
    p.add_argument("--json", type=benchlib.new_output_file,
                   help="write the counts here (its folder is created if missing)")
    args = p.parse_args(argv)
    try:
        root = args.root or ensure_embedded(scale="full")
        res = misses(args.tagger, Path(root))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_table(res))
    if args.json:
        benchlib.write_output(args.json, json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
