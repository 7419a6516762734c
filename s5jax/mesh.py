"""The one device mesh of s5jax: a 1-D axis ``data`` (batch sharded, parameters replicated).

Training, the data loader and evaluation all place batches through here. Under ``jit`` over this
mesh a batch mean is a global mean, so BatchNorm statistics are synchronised across devices and
gradients are reduced by the compiler, with no extra code (design.md, Parallelism).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    """1-D mesh over all (or the given) devices, axis ``data``, Auto axis type.

    Explicit axes would require sharding annotations inside ``nn.RNN`` (the DPRNN).
    """
    devices = list(devices or jax.devices())
    return jax.make_mesh(
        (len(devices),), (DATA,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local batch slice → global arrays sharded along ``data``.

    Each process passes its own slice (``global batch / process_count`` rows); with one process
    this is the whole batch.
    """
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }


def per_device(fn: Callable[..., Any], *, check_vma: bool = True) -> Callable[..., Any]:
    """``fn`` run by each device on its own slice of the arguments' leading axis (``shard_map``).

    For functions that are independent along that axis but that XLA's SPMD partitioner would
    replicate: it all-gathers the whole batch onto every device before an FFT (openxla/xla#24,
    jax-ml/jax#15680) and before the renderer's data-dependent gathers. The mesh is the one the
    caller is traced under (:func:`on_mesh`); with none, a ``data`` axis of one device, or a
    leading axis that does not divide over it, ``fn`` itself runs. All arguments and outputs
    are split along their leading axis, so ``fn`` must be independent along it.
    """

    def wrapped(*args):
        m = jax.sharding.get_abstract_mesh()
        n = m.shape[DATA] if not m.empty and DATA in m.axis_names else 0
        if n <= 1 or any(not np.ndim(a) or np.shape(a)[0] % n for a in jax.tree.leaves(args)):
            return fn(*args)
        spec = PartitionSpec(DATA)
        return jax.shard_map(fn, mesh=m, in_specs=spec, out_specs=spec, check_vma=check_vma)(*args)

    return wrapped


def on_mesh(fn: Callable[..., Any], mesh: Mesh) -> Callable[..., Any]:
    """``fn`` traced under ``mesh``: the :func:`per_device` functions it calls (the render, the
    STFT and log-mel FFTs) split their work over the mesh's ``data`` axis. Wrap a function with
    it before ``jax.jit`` (as the train and eval steps do)."""

    @functools.wraps(fn)
    def traced(*args):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args)

    return traced
