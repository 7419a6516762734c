"""Training-step time: jitted s5jax ResUNetK vs the official ResUNet30 (PyTorch), one run.

Two measurements, each on the same batch and in train mode (BatchNorm batch statistics):

* forward + backward: masked −SNR loss over the 3·B slots and its gradient with respect to all
  parameters;
* full step: the same plus global-norm clipping 0.5 and an AdamW-AMSGrad update.

Architecture: ResUNetK baseline (β FiLM, no DPRNN, official widths), float32. The PyTorch model is
the official ``ResUNet30(input_channels=4, output_channels=1, target_sources_num=3,
label_len=54)`` (config/separation/resunetk.yaml) imported from a checkout of the official 2025
baseline given with ``--official PATH`` (``src/models/resunet2/resunet_mod.py`` under it; nothing
is copied). Without ``--official``, the fallback is tests/reference/resunet.py, a module written
here from the spec — slower than the official one; the row says which reference ran. After a
warm-up (JAX: compilation), the timed calls alternate s5jax and PyTorch, and each figure is the
median over ``--repeats`` rounds, so load from other processes hits both sides alike.

    python scripts/bench_train_step.py [--batch 1] [--seconds 4] [--repeats 5] \
        [--official PATH] [--append docs/benchmarks.md]
"""

from __future__ import annotations

import importlib
import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.reference

import benchlib  # noqa: E402

from s5jax import labels as labels_lib  # noqa: E402
from s5jax import mesh as mesh_lib  # noqa: E402
from s5jax.models.separator import build_separator, separator_config  # noqa: E402
from s5jax.training import loop, optim, steps  # noqa: E402
from s5jax.training.state import create_state  # noqa: E402

OPTIM = dict(lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=True,
             clip_norm=0.5, schedule="constant", warmup_steps=0)
OFFICIAL_MODULE = "src/models/resunet2/resunet_mod.py"


def make_batch(batch: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.full((batch, 3), -1, np.int32)
    for b in range(batch):
        n = 1 + b % 3
        labels[b, :n] = rng.choice(18, n, replace=False)
    dry = rng.standard_normal((batch, 3, length)).astype(np.float32) * 0.1
    dry *= (labels != -1)[..., None]
    mixture = dry.sum(1, keepdims=True) + 0.02 * rng.standard_normal((batch, 4, length))
    return {"mixture": mixture.astype(np.float32), "dry": dry, "labels": labels}


def jax_runs(data) -> dict[str, object]:
    """``{"fwd_bwd": fn, "step": fn}``: s5jax callables that block until their result is ready."""
    cfg = separator_config(name="resunetk", film="beta", bottleneck="none")
    model = build_separator(cfg)
    variables = loop.init_variables(steps.SEPARATOR, model, cfg, 0)
    tx = optim.build_optimizer(ml_collections.ConfigDict(OPTIM), 1000)
    mesh = mesh_lib.make_mesh()
    step = steps.make_train_step(steps.SEPARATOR, model, tx, mesh)
    batch = mesh_lib.put_batch(data, mesh)
    key = jax.random.key(0)
    grad = jax.jit(jax.grad(
        lambda p, s, d: steps.loss_fn(steps.SEPARATOR, model, p, s, d, key), has_aux=True))
    holder = [create_state(variables, tx, 0)]  # the step donates its state

    def fwd_bwd():
        state = holder[0]
        jax.block_until_ready(grad(state.params, state.batch_stats, batch))

    def full_step():
        holder[0], m = step(holder[0], batch)
        jax.block_until_ready(m["loss"])

    return {"fwd_bwd": fwd_bwd, "step": full_step}


def torch_model(official: Path | None):
    """``(model, call, label)``: ``call(model, mixture, query) → (B, 3, L)``."""
    import torch

    torch.manual_seed(0)
    if official is None:
        from tests.reference.resunet import ResUNet30

        return (ResUNet30(slots=3), lambda m, x, q: m(x, q),
                "tests/reference (written here)")
    official = official.resolve()
    if not (official / OFFICIAL_MODULE).is_file():
        raise SystemExit(f"--official {official}: no {OFFICIAL_MODULE} there (expected a checkout "
                         "of the DCASE 2025 task 4 baseline)")
    sys.path.insert(0, str(official))  # the official code imports itself as the package `src`
    resunet_mod = importlib.import_module("src.models.resunet2.resunet_mod")
    model = resunet_mod.ResUNet30(input_channels=4, output_channels=1, target_sources_num=3,
                                  label_len=54)

    def call(m, x, q):
        out = m({"mixture": x, "label_vector": q})["waveform"]  # (B, 3, 1, L)
        return out[:, :, 0]

    return model, call, f"official ResUNet30 at {official}"


def torch_runs(data, official: Path | None) -> tuple[dict[str, object], str, int]:
    """``({"fwd_bwd": fn, "step": fn}, reference label, torch threads)``."""
    import torch

    model, call, label = torch_model(official)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            amsgrad=True)
    mixture = torch.from_numpy(data["mixture"])
    dry = torch.from_numpy(data["dry"])
    query = torch.from_numpy(np.array(labels_lib.query(jnp.asarray(data["labels"]))))
    active = torch.from_numpy(data["labels"] != -1).float()
    eps = torch.finfo(torch.float32).eps

    def fwd_bwd():
        opt.zero_grad(set_to_none=True)
        est = call(model, mixture, query)
        snr = 10 * torch.log10(((dry**2).sum(-1) + eps) / (((dry - est) ** 2).sum(-1) + eps))
        loss = -(active * snr).sum() / active.numel()
        loss.backward()

    def full_step():
        fwd_bwd()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()

    return {"fwd_bwd": fwd_bwd, "step": full_step}, label, torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    ap = benchlib.parser(__doc__, batch=1, repeats=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--official", type=Path, default=None,
                    help="checkout of the official DCASE 2025 task 4 baseline to compare against")
    args = ap.parse_args(argv)
    length = int(args.seconds * 32000)
    data = make_batch(args.batch, length)
    ours = jax_runs(data)
    theirs, label, threads = torch_runs(data, args.official)
    fns = {f"{side} {kind}": fn for side, runs in (("s5jax", ours), ("torch", theirs))
           for kind, fn in runs.items()}
    times = benchlib.alternating_times(fns, args.repeats, warmup=2)
    for name, ts in times.items():
        print(f"{name:15s} " + " ".join(f"{1000 * x:.0f}" for x in ts) + " ms")
    t = {name: statistics.median(ts) for name, ts in times.items()}
    lines = []
    for kind, title in (("fwd_bwd", "forward+backward"), ("step", "full step")):
        a, b = t[f"s5jax {kind}"], t[f"torch {kind}"]
        lines.append(f"{title}: s5jax {1000 * a:.0f} ms, torch {1000 * b:.0f} ms "
                     f"(s5jax/torch {a / b:.2f})")
        print(lines[-1])
    result = (f"B={args.batch}, {args.seconds:g} s, fp32, CPU, medians of {args.repeats} "
              f"alternating rounds; " + "; ".join(lines) +
              f"; reference: {label}, {threads} torch threads")
    print(result)
    if args.append:
        ratio = t["torch fwd_bwd"] / t["s5jax fwd_bwd"]
        benchlib.append_row(args.append,
                            benchmark="train step (ResUNetK baseline, official widths)",
                            command=benchlib.command("bench_train_step.py", argv),
                            result=result, ratio=f"{ratio:.2f}x (forward+backward)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
