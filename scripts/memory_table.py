"""The memory-model table of docs/benchmarks.md: scripts/memory.py over models × precision × remat.

For each setting it compiles the training step (no run) at global batches 1, 2 and 3 (10-s clips,
``accumulate = 1``), fits ``peak = fixed + batch × per_example`` through batches 1 and 2, checks
the fit against batch 3 (the residual is printed: the extrapolation is only trusted where it is
small), and gives the largest batch that fits each memory budget. Then it compiles the
``baseline_1gpu`` preset at its full global batch, fp32 and bf16, for each model (no
extrapolation). Each compile of a full-size step takes minutes on a 2-core CPU.

    python scripts/memory_table.py [--quick] [--out table.md] [--jsonl results.jsonl]

``--quick`` (tests): tiny widths, 1-s clips, one model and setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import memory  # scripts/ is first on sys.path when run as a script

from s5jax import cli

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = {"80 GB": 80e9, "141 GB": 141e9}  # decimal bytes: below the cards' 85.5e9 / 150.7e9
MODELS = (("ResUNetK baseline", "resunetk", "baseline"), ("ResUNetK seed", "resunetk", ""),
          ("ResUNet baseline", "resunet", "baseline"))


def load_config(name: str, presets: str):
    return cli.load_config(f"{ROOT / 'configs' / name}.py:{presets}")


def _presets(*names: str) -> str:
    return ",".join(n for n in names if n)


def run(name: str, presets: str, *, batch: int, seconds: float, remat: str | None = None,
        accumulate: int | None = None, channels=None, log=None) -> dict:
    cfg = load_config(name, presets)
    cfg.data.batch_size, cfg.data.clip_seconds = batch, seconds
    if remat is not None:
        cfg.train.remat = remat
    if accumulate is not None:
        cfg.optim.accumulate = accumulate
    if channels is not None:
        cfg.model.channels = channels
    t0 = time.perf_counter()
    res = memory.analyse(cfg)
    res.update(config=f"configs/{name}.py:{presets}", batch=batch, seconds=seconds,
               remat=cfg.train.remat, accumulate=int(cfg.optim.accumulate),
               precision=cfg.precision, compile_s=round(time.perf_counter() - t0, 1))
    print(json.dumps(res), flush=True)
    if log is not None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(res) + "\n")
    return res


def fit(points: dict[int, int]) -> tuple[float, float, float]:
    """``(fixed, per_example, residual at batch 3 relative to its peak)``."""
    per = points[2] - points[1]
    fixed = points[1] - per
    return fixed, per, (points[3] - (fixed + 3 * per)) / points[3]


def max_batch(fixed: float, per: float, budget: float) -> int:
    return int((budget - fixed) // per) if per > 0 else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny widths, 1-s clips (tests)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    p.add_argument("--jsonl", type=Path, default=None, help="append every result here")
    a = p.parse_args(argv)
    memory.model_flags()
    seconds, channels = (1.0, (2, 4, 4, 8, 8, 8)) if a.quick else (10.0, None)
    models = MODELS[:1] if a.quick else MODELS
    precisions = ("",) if a.quick else ("", "bf16")
    remats = ("none", "blocks") if not a.quick else ("blocks",)
    batches = (1, 2, 3)
    gb = memory.GB
    rows = ["| model | precision | remat | peak at batch 1 / 2 / 3 (GB) | per example (GB) | "
            "fixed (GB) | batch-3 residual | TFLOP per example | max batch 80 GB | "
            "max batch 141 GB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, name, base in models:
        for prec in precisions:
            for remat in remats:
                res = {b: run(name, _presets(base, prec), batch=b, seconds=seconds, remat=remat,
                              accumulate=1, channels=channels, log=a.jsonl) for b in batches}
                fixed, per, resid = fit({b: r["peak"] for b, r in res.items()})
                tflop = res[1]["flops"] / 1e12
                fits = [max_batch(fixed, per, v) for v in BUDGETS.values()]
                rows.append(
                    f"| {label} | {res[1]['precision']} | {remat} | "
                    + " / ".join(f"{res[b]['peak'] / gb:.2f}" for b in batches)
                    + f" | {per / gb:.3f} | {fixed / gb:.2f} | {resid:+.1%} | {tflop:.3f} | "
                    f"{fits[0]} | {fits[1]} |")
    rows += ["", "| preset | precision | global batch = accumulate × micro | remat | peak (GB) | "
             "fits 80 GB | TFLOP per step |", "|---|---|---|---|---|---|---|"]
    for _, name, base in models:
        if not base:
            continue
        for prec in precisions:
            presets = _presets("baseline_1gpu", prec)
            cfg = load_config(name, presets)
            batch = 4 if a.quick else int(cfg.data.batch_size)
            r = run(name, presets, batch=batch, seconds=seconds, channels=channels, log=a.jsonl)
            k = r["accumulate"]
            rows.append(f"| `configs/{name}.py:{presets}` | {r['precision']} | {batch} = {k} × "
                        f"{batch // k} | {r['remat']} | {r['peak'] / gb:.2f} | "
                        f"{'yes' if r['peak'] <= BUDGETS['80 GB'] else 'no'} | "
                        f"{r['flops'] / 1e12:.2f} |")
    table = "\n".join(rows)
    print(table)
    if a.out:
        a.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
