"""The few collectives the analyzer needs, over mpi4py or in one process.

Under ``mpiexec`` (MPICH sets ``PMI_RANK``/``PMI_SIZE``, Open MPI ``OMPI_COMM_WORLD_*``) the
analyzer uses ``mpi4py.MPI.COMM_WORLD``; otherwise it runs as a single process and never
imports mpi4py, so the library works where no MPI is installed.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def launched_by_mpi() -> bool:
    """True when this process was started by mpiexec/mpirun."""
    return any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                                         "PMIX_RANK"))


class Comm:
    """Thin wrapper: ``Comm(None)`` is one process, ``Comm(mpi_comm)`` uses MPI."""

    def __init__(self, mpi_comm: Any = None) -> None:
        self._c = mpi_comm
        self.rank = 0 if mpi_comm is None else mpi_comm.Get_rank()
        self.size = 1 if mpi_comm is None else mpi_comm.Get_size()

    def barrier(self) -> None:
        if self._c is not None:
            self._c.Barrier()

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj if self._c is None else self._c.bcast(obj, root=root)

    def allgather(self, obj: Any) -> list:
        """Small picklable objects from every rank, in rank order."""
        return [obj] if self._c is None else self._c.allgather(obj)

    def allreduce_max(self, value: Any) -> Any:
        if self._c is None:
            return value
        from mpi4py import MPI
        return self._c.allreduce(value, op=MPI.MAX)

    def allreduce_sum(self, value: Any) -> Any:
        if self._c is None:
            return value
        from mpi4py import MPI
        return self._c.allreduce(value, op=MPI.SUM)

    def sum_arrays_(self, arr: np.ndarray) -> np.ndarray:
        """In-place elementwise sum of a contiguous int64/float64 array over all ranks."""
        if self._c is not None and arr.size:
            from mpi4py import MPI
            self._c.Allreduce(MPI.IN_PLACE, arr, op=MPI.SUM)
        return arr

    def alltoallv(self, send: np.ndarray, send_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Send ``send[displs[r]:displs[r]+send_counts[r]]`` to rank r.

        Returns:
            (received array ordered by source rank, counts received from each rank).
        """
        if self._c is None:
            return send.copy(), np.asarray(send_counts, dtype=np.int64)
        send_counts = np.asarray(send_counts, dtype=np.int64)
        recv_counts = np.empty(self.size, dtype=np.int64)
        self._c.Alltoall(send_counts, recv_counts)
        if max(send_counts.max(), recv_counts.max()) >= 2 ** 31:
            raise ValueError("alltoallv: more than 2^31 items between two ranks; use more ranks")
        sd = np.concatenate(([0], np.cumsum(send_counts)[:-1]))
        rd = np.concatenate(([0], np.cumsum(recv_counts)[:-1]))
        recv = np.empty(int(recv_counts.sum()), dtype=send.dtype)
        send = np.ascontiguousarray(send)
        self._c.Alltoallv([send, (send_counts.astype(np.int32), sd.astype(np.int32))],
                          [recv, (recv_counts.astype(np.int32), rd.astype(np.int32))])
        return recv, recv_counts


def world() -> Comm:
    """COMM_WORLD when launched by MPI, else a one-process Comm."""
    if not launched_by_mpi():
        return Comm(None)
    from mpi4py import MPI
    return Comm(MPI.COMM_WORLD)
