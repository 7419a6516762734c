"""Quicker XLA:CPU compilation for tests whose programs run once or twice on tiny inputs.

XLA:CPU spends most of a small program's compile time in LLVM's optimisations (the smoke
ResUNetK train run, 2 steps, cold cache: 142 s CPU → 70 s without them). The programs compute
the same things, to float32 rounding (level 0 moves some values by ~5e-7), only more slowly,
which does not matter for a test that checks results. XLA:CPU's older fusion emitters
(``xla_cpu_use_fusion_emitters=false``) compile the same fusions faster than its MLIR ones: the
smoke train step (2 steps, tiny widths, cold cache) 47 → 35–39 s of compilation and the whole run
121 → 106 s wall, the same validation figures; test_remat, test_accumulate, test_quirky_train and
the seed-variant gradient test together 541 → 480 s CPU, 434 → 417 s wall (one run each, cold
caches, 2026-12-01, 2-core VM). Tests opt in, one by one; the library
compiles as always, and the tests that check its own compilation or assert a timing do not use
this (gpu_bench.sh --cpu uses it: it times, but its test checks only that every row runs).
"""

from __future__ import annotations

import os

# For subprocesses (XLA_FLAGS) and for jax.jit(..., compiler_options=OPTIONS).
FLAGS = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
         " --xla_cpu_use_fusion_emitters=false")
OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True,
           "xla_cpu_use_fusion_emitters": False}


def env(**extra: str) -> dict[str, str]:
    """``os.environ`` plus ``extra``, with :data:`FLAGS` appended to ``XLA_FLAGS``."""
    out = dict(os.environ, **extra)
    out["XLA_FLAGS"] = f"{out.get('XLA_FLAGS', '')} {FLAGS}".strip()
    return out
