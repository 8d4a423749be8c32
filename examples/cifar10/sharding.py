"""Data parallel on every device: one ``jax.sharding.Mesh``, batches split, state replicated.

The batch is sharded over a mesh of every device of every process (axis
``'data'``), the training state is replicated, and XLA's SPMD partitioner does
the rest under plain ``jax.jit`` (BatchNorm statistics and the probe's losses
are over the global batch). With several processes, call
``jax.distributed.initialize()`` first (``main.py --distributed``; README.md,
"Several hosts"): every process computes the same global batch indices and feeds
the rows of its own devices. tests/test_two_process.py runs two processes on CPU.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class Devices:
    """Every device of every process in one mesh: batches sharded, the state replicated."""

    mesh: jax.sharding.Mesh

    @classmethod
    def all(cls) -> Devices:
        return cls(jax.sharding.Mesh(np.asarray(jax.devices()), ("data",)))

    def shard(self, *arrays: np.ndarray):
        """Global batches (the same on every process) split over the devices on axis 0."""
        return tuple(self._put(a, P("data")) for a in arrays)

    def replicate(self, tree):
        return jax.tree.map(lambda a: self._put(np.asarray(a), P()), tree)

    def _put(self, a: np.ndarray, spec: P):
        sharding = NamedSharding(self.mesh, spec)
        if spec == P():
            return jax.make_array_from_process_local_data(sharding, a, a.shape)
        # This process's rows are those of its own devices' shards (a contiguous block:
        # jax.devices() is ordered by process), whatever the devices per process.
        index = sharding.addressable_devices_indices_map(a.shape).values()
        start = min(i[0].start or 0 for i in index)
        stop = max(a.shape[0] if i[0].stop is None else i[0].stop for i in index)
        return jax.make_array_from_process_local_data(sharding, a[start:stop], a.shape)
