"""Peak memory (RSS high-water mark) of ``python -m s5jax.separate`` against the input length.

Full-size random models are saved as model directories (the official ResUNetK widths and the
M2D-AT ViT-B tagger, unless ``--small``), 4-channel 32 kHz noise inputs of each length are
written, and each ``separate`` run is a fresh process whose peak RSS is read with
``getrusage(RUSAGE_CHILDREN)`` by a wrapper process of its own (so the runs do not mix). The
figure is the whole process: Python, JAX, compilation, models, audio buffers. The acceptance
target (issue 16): the longest input's peak within 1.5 × the 10-s peak.

    python scripts/bench_separate_memory.py [--seconds 10 60 600] [--batch-chunks 1]
        [--labels Speech,Dishes] [--small] [--append docs/benchmarks.md]

Without ``--labels`` the tagger runs (streamed one 10-s encoder chunk at a time); with it the
separator gets those labels and the tagger is not loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SR = 32000

WRAPPER = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
           "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "print(json.dumps({'rc': r.returncode, 'seconds': time.perf_counter() - t, "
           "'max_rss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
           "'stderr': r.stderr[-2000:]}))")


def make_models(root: Path, small: bool) -> tuple[Path, Path]:
    from s5jax.modeldir import save_model
    from s5jax.models import separator as S
    from s5jax.models import tagger as T

    scfg = S.separator_config(name="resunetk", **({"channels": (4, 4, 8, 8, 8, 8)} if small
                                                   else {}))
    smodel = S.build_separator(scfg)
    svars = jax.jit(smodel.init)(jax.random.key(0), jnp.zeros((1, 4, 3200)),
                                 jnp.zeros((1, 3), jnp.int32))
    tcfg = T.tagger_config(adapters=False, **({"embed_dim": 32, "depth": 1, "num_heads": 2}
                                              if small else {}))
    tvars = T.init_variables(T.build_tagger(tcfg), seed=0, samples=3200)
    return (save_model(root / "tagger", tcfg, jax.device_get(tvars)),
            save_model(root / "separator", scfg, jax.device_get(svars)))


def write_input(path: Path, seconds: float) -> None:
    """4-channel noise, written in 10-s blocks (the writer itself stays small)."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    n = int(round(seconds * SR))
    with sf.SoundFile(str(path), "w", SR, 4, subtype="FLOAT") as f:
        for s in range(0, n, 10 * SR):
            f.write((0.1 * rng.standard_normal((min(10 * SR, n - s), 4))).astype(np.float32))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=benchlib.positive_float, nargs="+",
                   default=[10.0, 60.0, 600.0])
    p.add_argument("--batch-chunks", type=benchlib.positive_int, default=1)
    p.add_argument("--labels", default=None, help="oracle labels (the tagger is not loaded)")
    p.add_argument("--small", action="store_true", help="tiny widths (a smoke run)")
    p.add_argument("--append", type=benchlib.output_file, default=None,
                   help="benchmarks.md to append a row to")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="s5jax_mem_") as tmp:
        tmp = Path(tmp)
        tagger, separator = make_models(tmp, a.small)
        rows = []
        for seconds in a.seconds:
            wav_path = tmp / f"in_{seconds:g}s.wav"
            write_input(wav_path, seconds)
            cmd = [sys.executable, "-m", "s5jax.separate", "--separator", str(separator),
                   "--out", str(tmp / f"out_{seconds:g}s"), "--batch-chunks",
                   str(a.batch_chunks), str(wav_path)]
            cmd += ["--labels", a.labels] if a.labels else ["--tagger", str(tagger)]
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True,
                               text=True, env=env, cwd=ROOT)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            if res["rc"] != 0:
                print(res["stderr"], file=sys.stderr)
                return 1
            gb = res["max_rss_kb"] / 1024**2
            rows.append((seconds, gb, res["seconds"]))
            print(f"{seconds:7g} s input: peak RSS {gb:6.2f} GB, {res['seconds']:7.1f} s wall "
                  f"({time.perf_counter() - t0:.0f} s incl. the wrapper)", flush=True)
            wav_path.unlink()

    base = rows[0][1]
    longest = rows[-1]
    ratio = longest[1] / base
    what = "tagger + separator" if not a.labels else f"separator, --labels {a.labels}"
    size = "tiny widths" if a.small else "full size (ResUNetK 32…384, M2D-AT ViT-B)"
    result = (f"{what}, {size}, --batch-chunks {a.batch_chunks}: peak RSS "
              + ", ".join(f"{s:g} s {g:.2f} GB ({t:.0f} s wall)" for s, g, t in rows))
    print(f"ratio {longest[0]:g} s / {rows[0][0]:g} s: {ratio:.2f}")
    if a.append:
        benchlib.append_row(a.append, benchmark="separate peak memory",
                            command=benchlib.command("bench_separate_memory.py", argv),
                            result=result,
                            ratio=f"{ratio:.2f}× ({longest[0]:g} s / {rows[0][0]:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
