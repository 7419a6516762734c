"""The one device mesh of s5jax: a 1-D axis ``data`` (batch sharded, parameters replicated).

Training, the data loader and evaluation all place batches through here. Under ``jit`` over this
mesh a batch mean is a global mean, so BatchNorm statistics are synchronised across devices and
gradients are reduced by the compiler, with no extra code (design.md, Parallelism).
"""

from __future__ import annotations

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
