"""Host facts and host buffers: available memory (cgroups honoured), the BLAS in use,
and large host arrays without transparent huge pages."""

from __future__ import annotations

import math
import os
import sys
import threading

import numpy as np

from ..errors import InputError

__all__ = ["available_host_memory", "blas_info", "host_empty", "usable_cores", "BlasOneThread"]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: (number of imported modules, threadpoolctl.ThreadpoolController) of the last scan
_CONTROLLER: list = [None, None]


def _blas_controller():
    """A ThreadpoolController over the loaded BLAS libraries, scanned again only when new
    modules were imported since (a scan walks every loaded library: about 3.5 ms, which a
    solve paid about ten times over)."""
    from threadpoolctl import ThreadpoolController

    mods = len(sys.modules)
    if _CONTROLLER[1] is None or _CONTROLLER[0] != mods:
        _CONTROLLER[:] = [mods, ThreadpoolController()]
    return _CONTROLLER[1]


class BlasOneThread:
    """Limit BLAS to one thread while our own threads run pieces of work in parallel.

    Also around small BLAS calls made just before such threads start: a call on several
    BLAS threads leaves them spinning for a while after it returns (OpenBLAS: until its
    OPENBLAS_THREAD_TIMEOUT), taking a core from the threads that follow.

    The limit is the process's (threadpoolctl's): scopes entered at once, nested or from
    several threads (two fits in threads), count as one, set by the first to enter and
    undone by the last to leave (each restoring its own predecessor's limits, the order
    A in, B in, A out, B out had left BLAS on one thread for good)."""

    _lock = threading.Lock()
    _depth = 0
    _ctx = None

    def __init__(self, active: bool):
        self.active = active
        self._entered = 0  # times this scope is entered (one object may be nested)

    def __enter__(self):
        if self.active:
            cls = type(self)
            with cls._lock:
                if cls._depth == 0:
                    try:
                        cls._ctx = _blas_controller().limit(limits=1, user_api="blas")
                    except Exception:  # pragma: no cover - threadpoolctl comes with sklearn
                        cls._ctx = None
                cls._depth += 1
                self._entered += 1
        return self

    def __exit__(self, *exc):
        if self._entered:
            cls = type(self)
            with cls._lock:
                cls._depth -= 1
                self._entered -= 1
                if cls._depth == 0 and cls._ctx is not None:
                    cls._ctx.restore_original_limits()
                    cls._ctx = None
        return False


def available_host_memory(reserve: int = 0) -> int:
    """Bytes of host memory available to a new allocation (MemAvailable, honouring cgroups).

    ``reserve``: bytes that arrays not made yet will take first (a plan made before the
    data it solves exists), subtracted from what the machine has; ``KERNELFIT_MEMORY_LIMIT``
    caps the result as it is.
    """
    avail = None
    try:
        import psutil

        avail = int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil is a dependency, /proc is the fallback
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
        except OSError:
            avail = None
    limit = _cgroup_limit()
    if limit is not None:
        used = _cgroup_usage() or 0
        cg_avail = max(limit - used, 0)
        avail = cg_avail if avail is None else min(avail, cg_avail)
    if avail is not None:
        avail = max(avail - int(reserve), 0)
    override = os.environ.get("KERNELFIT_MEMORY_LIMIT")
    if override:
        try:
            lim = int(float(override))
        except ValueError:
            raise InputError(f"KERNELFIT_MEMORY_LIMIT must be a number of bytes, got {override!r}")
        avail = lim if avail is None else min(avail, lim)
    return int(avail if avail is not None else max((8 << 30) - int(reserve), 0))


def _read_int(path: str):
    try:
        with open(path) as fh:
            txt = fh.read().strip()
    except OSError:
        return None
    if not txt or txt == "max":
        return None
    try:
        val = int(txt)
    except ValueError:
        return None
    return val if val < (1 << 60) else None


def _cgroup_limit():
    return _read_int("/sys/fs/cgroup/memory.max") or _read_int(
        "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _cgroup_usage():
    return _read_int("/sys/fs/cgroup/memory.current") or _read_int(
        "/sys/fs/cgroup/memory/memory.usage_in_bytes")


def blas_info() -> dict:
    """The BLAS library NumPy uses (its GEMM runs the products), with version and thread
    count; the same one whatever order NumPy and SciPy loaded theirs in."""
    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    except Exception:  # pragma: no cover
        pools = []
    if not pools:
        return {"library": "unknown"}
    # NumPy's own BLAS first (its GEMM is the products' and the peaks'), whatever order
    # the libraries were loaded in (SciPy's OpenBLAS may be another build)
    pools.sort(key=lambda q: ("numpy" not in str(q.get("filepath", "")).lower(),
                              str(q.get("filepath", ""))))
    p = pools[0]
    return {
        "library": p.get("internal_api"),
        "version": p.get("version"),
        "threading_layer": p.get("threading_layer"),
        "architecture": p.get("architecture"),
        "num_threads": p.get("num_threads"),
        "filepath": p.get("filepath"),
    }


# Host buffers of at least this size get their own anonymous mapping (see host_empty).
_HOST_MAP_MIN_BYTES = 4 << 20


def _huge_pages_wanted() -> bool:
    val = os.environ.get("KERNELFIT_HUGEPAGES", "0").strip().lower()
    if val in ("", "0", "no", "false", "off"):
        return False
    if val in ("1", "yes", "true", "on"):
        return True
    raise InputError(f"KERNELFIT_HUGEPAGES must be 0 or 1, got {val!r}")


def host_empty(shape, dtype=np.float64, order: str = "C") -> np.ndarray:
    """``np.empty`` for kernelfit's large host buffers, without transparent huge pages.

    NumPy asks the kernel for transparent huge pages on every large array
    (``madvise(MADV_HUGEPAGE)``). With the common ``defrag=madvise`` setting the first
    touch of such memory then waits for the kernel (or a VM's host) to assemble 2 MiB
    pages. Measured on this project's 2-core VM, first writes to 600 MB took 0.04-1.24 s
    with huge pages (0.7 s typical) against a steady 0.27 s with 4 KiB pages, while a
    float64 Cholesky ran about 4% slower without them: the Gram build at n = 10,000 went
    from 1.2-1.4 s to 0.75 s. So buffers of 4 MiB and more (Gram tiles, kernel blocks) get
    a private anonymous mapping marked ``MADV_NOHUGEPAGE``; the memory returns to the
    system when the array is freed. ``KERNELFIT_HUGEPAGES=1`` restores NumPy's behaviour
    (worth trying on a bare-metal machine with plenty of free memory).
    """
    dtype = np.dtype(dtype)
    count = math.prod(shape) if isinstance(shape, tuple) else int(shape)
    nbytes = count * dtype.itemsize
    if nbytes < _HOST_MAP_MIN_BYTES or _huge_pages_wanted():
        return np.empty(shape, dtype=dtype, order=order)
    try:
        import mmap

        mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        mm.madvise(mmap.MADV_NOHUGEPAGE)
    except (AttributeError, OSError, ValueError):  # not Linux, or no such advice
        return np.empty(shape, dtype=dtype, order=order)
    return np.frombuffer(mm, dtype=dtype, count=count).reshape(shape, order=order)
