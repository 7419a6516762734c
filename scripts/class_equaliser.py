"""The per-class equaliser: the simplest label-queried separator, a yardstick for learning curves.

It learns one gain per (class, frequency bin), 18 × 513 parameters, and answers the query
``label_k`` with ``ISTFT(sigmoid(table[label_k]) · STFT(mixture channel 0))``. It knows nothing
about time, space or the other sources: all it can learn is which frequencies each class tends
to occupy, against the mixtures'. It is trained on the same stream as a separator preset (the
preset's dataset, clip length, batch and mixture recipe), with the same train step
(``steps.make_train_step``, so the same loss), and scored on the same held-out soundscapes by the
same evaluation as the training loop (``s5jax.training.heldout.HeldOutEvaluator``: CA-SDRi,
CA-SI-SDRi with oracle labels, the scaled-mixture floor). A separator that has learned anything
class-conditional should score at least what this scores; docs/learning.md reads the ``small``
ResUNetK runs against it.

    python scripts/class_equaliser.py [--config configs/resunetk.py:small] [--root DIR]
        [--steps 400] [--lr 0.01] [--eval-every 100] [--valid-limit 40] [--seed 0] [--json FILE]

``--root``: a dataset root instead of the preset's (the embedded ``full`` dataset); it needs a
labelled ``test/`` split.

The untrained equaliser (every gain 0.5) is a scaled copy of the mixture: step 0 scores the floor.
Prints one line per evaluation; ``--json`` writes ``[{step, seconds, ca_sdri, ca_si_sdri, sdri,
floor_ca_sdri, floor_ca_si_sdri}, …]``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from benchlib import SEPARATOR_KEYS
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from s5jax import labels as labels_lib
from s5jax import mesh as mesh_lib
from s5jax.audio.stft import istft, stft
from s5jax.cli import ArgumentParser, fail, load_config
from s5jax.data import loader
from s5jax.data.recipes import task_config
from s5jax.training import heldout, loop, steps
from s5jax.training.state import create_state


class ClassEqualiser(nn.Module):
    """``(mixture (B, C, L), labels (B, 3) int32, train) → (B, 3, L)``, the separator's
    interface; empty slots (−1) give zeros."""

    slots: int = 3

    @nn.compact
    def __call__(self, mixture: jnp.ndarray, labels: jnp.ndarray, train: bool = False):
        table = self.param("table", nn.initializers.zeros,
                           (labels_lib.NUM_CLASSES, 513))  # logits: gain 0.5 at the start
        re, im = stft(mixture[:, 0].astype(jnp.float32))  # (B, T, 513)
        gain = jax.nn.sigmoid(table[jnp.maximum(labels, 0)])[:, :, None, :]  # (B, S, 1, 513)
        out = istft(gain * re[:, None], gain * im[:, None], mixture.shape[-1])
        return out * labels_lib.active(labels).astype(out.dtype)[..., None]


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/resunetk.py:small",
                    help="separator preset whose data, batch and held-out split to use")
    ap.add_argument("--root", help="dataset root (default: the preset's)")
    ap.add_argument("--steps", type=benchlib.positive_int, default=400)
    ap.add_argument("--lr", type=benchlib.positive_float, default=1e-2, help="Adam learning rate")
    ap.add_argument("--eval-every", type=benchlib.positive_int, default=100)
    ap.add_argument("--valid-limit", type=benchlib.nonnegative_int, default=40,
                    help="held-out soundscapes scored (0: all)")
    ap.add_argument("--seed", type=benchlib.nonnegative_int, default=0)
    ap.add_argument("--json", type=benchlib.new_output_file,
                    help="write the points here (its folder is created if missing)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ValueError as e:
        ap.error(f"--config {e}")
    if cfg.data.get("valid_split", "valid") != "test":
        ap.error(f"--config {args.config}: expected a separator preset that validates on the "
                 "held-out test split (data.valid_split='test'), e.g. configs/resunetk.py:small")
    if args.root:
        cfg.data.root = args.root
    try:
        with tempfile.TemporaryDirectory() as tmp:  # validate() checks a work directory
            plan = loop.validate(cfg, Path(tmp))
    except (OSError, ValueError) as e:
        return fail(e)
    mesh = mesh_lib.make_mesh()
    model = ClassEqualiser()
    mix_cfg = task_config(cfg.task, steps.SEPARATOR, cfg.data.clip_seconds)
    batches = loader.make_train_iterator(plan.catalog, batch_size=int(cfg.data.batch_size),
                                         seed=args.seed, mode=steps.SEPARATOR, num_workers=0,
                                         config=mix_cfg)
    variables = {"params": model.init(jax.random.key(args.seed), jnp.zeros((1, 4, 3200)),
                                      jnp.zeros((1, 3), jnp.int32))["params"], "batch_stats": {}}
    tx = optax.adam(args.lr)
    state = jax.device_put(create_state(variables, tx, args.seed), NamedSharding(mesh, P()))
    step = steps.make_train_step(
        steps.SEPARATOR, model, tx, mesh, edition=cfg.task,
        render=lambda b: loader.render_batch(b, mix_cfg, mode=steps.SEPARATOR))
    evaluate = heldout.HeldOutEvaluator(steps.SEPARATOR, model, mesh, plan.valid,
                                        batch_size=int(cfg.data.valid_batch_size),
                                        limit=args.valid_limit or None)
    out, seconds, it = [], 0.0, iter(batches)

    def record(n: int) -> None:
        m = evaluate(state)
        out.append({"step": n, "seconds": round(seconds, 1),
                    **{v: m[k] for k, v in SEPARATOR_KEYS.items()}})
        print(f"step {n}: held-out CA-SI-SDRi {m['valid/ca_si_sdri']:+.2f} dB, CA-SDRi "
              f"{m['valid/ca_sdri']:.2f} dB (floor {m['valid/floor_ca_sdri']:.2f}), "
              f"{seconds:.0f} s of training", flush=True)

    record(0)
    for n in range(1, args.steps + 1):
        t0 = time.perf_counter()
        state, metrics = step(state, mesh_lib.put_batch(next(it), mesh))
        jax.block_until_ready(metrics["loss"])
        seconds += time.perf_counter() - t0
        if n % args.eval_every == 0 or n == args.steps:
            record(n)
    if args.json:
        benchlib.write_output(args.json, json.dumps(out, indent=1) + "\n")  # e.g. runs/
    return 0


if __name__ == "__main__":
    sys.exit(main())
