"""Data parallel on every device: one ``jax.sharding.Mesh``, batches split, state replicated.

The batch is sharded over a mesh of every device of every process (axis
``'data'``), the training state is replicated, and XLA's SPMD partitioner does
the rest under plain ``jax.jit`` (BatchNorm statistics and the probe's losses
are over the global batch). With several processes, call
``jax.distributed.initialize()`` first: every process computes the same global
batch indices and feeds its own rows.
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
        rows = np.array_split(a, jax.process_count())[jax.process_index()]
        return jax.make_array_from_process_local_data(sharding, rows, a.shape)
