"""Shared test set-up."""

import os
from pathlib import Path

import jax
import numpy as np
import pytest

# float32 parity needs full-precision matmuls on every backend.
jax.config.update("jax_default_matmul_precision", "highest")

# XLA compilation dominates the suite's CPU time, and many tests (and the CLI subprocesses they
# start, which inherit the environment) compile the same small models. JAX's persistent
# compilation cache lets every process after the first load the executable instead of compiling
# it again. It lives in pytest's own cache folder (git-ignored) and is keyed by the program, the
# compile options and the jax/jaxlib versions, so a stale entry can never be used.
_JAX_CACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax-compilation-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_JAX_CACHE))
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])


@pytest.fixture(scope="session")
def embedded_small(tmp_path_factory) -> Path:
    """The small embedded dataset (seed 0), built once per test process under pytest's temp dir
    (never in ~/.cache). Read-only: copy it before modifying."""
    from s5jax.data import embedded

    root = tmp_path_factory.mktemp("embedded") / "embedded-small-0"
    return embedded.ensure_embedded(root, "small", 0)


@pytest.fixture(scope="session")
def embedded_2026(tmp_path_factory) -> Path:
    """The small embedded DCASE 2026 dataset (seed 0), like ``embedded_small``. Read-only."""
    from s5jax.data import embedded

    root = tmp_path_factory.mktemp("embedded") / "embedded-dcase2026-small-0"
    return embedded.ensure_embedded(root, "small", 0, task="dcase2026")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    """Model directories of a tiny random tagger (always says Blender + Speech) and ResUNetK."""
    import jax.numpy as jnp

    from s5jax.modeldir import save_model
    from s5jax.models import separator as sep
    from s5jax.models import tagger as tag

    d = tmp_path_factory.mktemp("tiny_models")
    scfg = sep.separator_config(name="resunetk", channels=(4, 4, 8, 8, 8, 8))
    smodel = sep.build_separator(scfg)
    svars = jax.jit(smodel.init)(jax.random.key(0), jnp.zeros((1, 4, 8000)),
                                 jnp.zeros((1, 3), jnp.int32))
    tcfg = tag.tagger_config(embed_dim=32, depth=1, num_heads=2, adapters=False)
    tmodel = tag.build_tagger(tcfg)
    tvars = tag.init_variables(tmodel, seed=0, samples=8000)
    # Push a few classes above threshold so that the tagger detects something plausible.
    bias = np.full(18, -3.0, np.float32)
    bias[[2, 15]] = 3.0
    tvars = jax.tree.map(np.asarray, tvars)
    tvars["params"]["head"]["bias"] = bias
    return save_model(d / "tagger", tcfg, tvars), save_model(d / "separator", scfg, svars)


@pytest.fixture(scope="session")
def tiny_slot_tagger(tmp_path_factory) -> Path:
    """Model directory of a tiny random 2026 slot tagger (4 channels) that always decides
    silence, VacuumCleaner, VacuumCleaner by slot — so ``predict`` moves the silence slot last
    and every mixture gets a repeated class. Pairs with ``tiny_models``' separator."""
    from s5jax.labels import class_index
    from s5jax.modeldir import save_model
    from s5jax.models import tagger as tag

    d = tmp_path_factory.mktemp("tiny_slot_tagger")
    cfg = tag.tagger_config(embed_dim=32, depth=1, num_heads=2, adapters=False, head="slots",
                            in_channels=4, slot_dims=(16, 8))
    variables = jax.tree.map(np.asarray, tag.init_variables(tag.build_tagger(cfg), samples=8000))
    bias = np.zeros((3, tag.SLOT_CLASSES), np.float32)
    bias[0, tag.SILENCE_CLASS] = bias[1, class_index("VacuumCleaner")] \
        = bias[2, class_index("VacuumCleaner")] = 30.0
    variables["params"]["head"]["tracks"]["fc2"]["bias"] = bias
    return save_model(d / "tagger", cfg, variables)
