"""Describe the machine a benchmark runs on, and measure the peak rate of its dense kernels.

:func:`describe_machine` is cheap (no measurement, no CUDA initialization) and is what every
benchmark JSON carries, so that results from different machines can be compared.
:func:`measure_cpu_peaks` times square DGEMM/SGEMM products (best of a few) with the BLAS
NumPy uses; :func:`measure_gpu_peaks` does the same with CuPy when a GPU is usable. The
measured rates are the denominators of the "fraction of peak" figures.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["describe_machine", "cpu_model", "cpu_id", "cpu_counts", "memory_info",
           "library_versions", "lapack_info", "nvidia_smi_gpus", "gpu_status",
           "measure_cpu_peaks", "measure_gpu_peaks", "host_tag"]


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":  # pragma: no cover - not exercised on Linux
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                 capture_output=True, text=True, timeout=5)
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags() -> list:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    keep = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "sve")
                    return [f for f in keep if f in flags]
    except OSError:
        pass
    return []


def cpu_id() -> dict:
    """The CPU's vendor, family and model numbers from ``/proc/cpuinfo`` (x86 Linux; empty
    elsewhere): a virtual machine's model name may say only "AMD EPYC", and these tell
    its generation apart (family 25 Zen 3 and Zen 4, 26 Zen 5; the kernels OpenBLAS picks
    differ between them)."""
    keys = {"vendor_id": "vendor", "cpu family": "family", "model": "model_number"}
    out: dict = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor's block is enough
                name, _, value = line.partition(":")
                key = keys.get(name.strip())
                if key:
                    value = value.strip()
                    out[key] = int(value) if value.isdigit() else value
    except OSError:
        pass
    return out


def cpu_counts() -> dict:
    """Logical and physical cores, and the cores this process may run on."""
    import psutil

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS
        usable = os.cpu_count()
    return {"logical": os.cpu_count(), "physical": psutil.cpu_count(logical=False),
            "usable": usable}


def memory_info() -> dict:
    """Total and available host memory, in bytes (available honours cgroups and
    ``KERNELFIT_MEMORY_LIMIT``, like kernelfit's memory pre-flight)."""
    import psutil

    from ..backend import available_host_memory

    vm = psutil.virtual_memory()
    return {"total_bytes": int(vm.total), "available_bytes": int(available_host_memory()),
            "memory_limit_env": os.environ.get("KERNELFIT_MEMORY_LIMIT")}


def _version_of(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict:
    """Versions of Python and the libraries a benchmark depends on (None when absent).

    Read from package metadata: nothing is imported (CuPy in particular is not).
    """
    from .. import __version__

    out = {"kernelfit": __version__, "python": platform.python_version()}
    for name, dist in (("numpy", "numpy"), ("scipy", "scipy"), ("scikit-learn", "scikit-learn"),
                       ("threadpoolctl", "threadpoolctl"), ("matplotlib", "matplotlib")):
        out[name] = _version_of(dist)
    cupy = None
    for dist in ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"):
        v = _version_of(dist)
        if v:
            cupy = f"{dist} {v}"
            break
    out["cupy"] = cupy
    return out


def lapack_info() -> dict:
    """The BLAS/LAPACK libraries NumPy and SciPy were built against (their build config)."""
    out = {}
    try:
        cfg = np.show_config(mode="dicts")
        deps = cfg.get("Build Dependencies", {})
        out["numpy_blas"] = _dep(deps.get("blas"))
        out["numpy_lapack"] = _dep(deps.get("lapack"))
    except Exception:  # pragma: no cover - older NumPy without mode='dicts'
        pass
    try:
        import scipy

        cfg = scipy.show_config(mode="dicts")
        deps = cfg.get("Build Dependencies", {})
        out["scipy_blas"] = _dep(deps.get("blas"))
        out["scipy_lapack"] = _dep(deps.get("lapack"))
    except Exception:  # pragma: no cover
        pass
    return out


def _dep(d) -> Optional[dict]:
    if not isinstance(d, dict):
        return None
    return {k: d.get(k) for k in ("name", "version", "openblas configuration") if d.get(k)}


def _blas_runtime() -> list:
    """Every BLAS loaded in this process (threadpoolctl), e.g. NumPy's and SciPy's OpenBLAS,
    each with ``owner``: the package whose wheel bundles it (``numpy``, ``scipy``) where its
    path says. SciPy's is loaded first: the tiled Cholesky (potrf, trsm, syrk, GEMM on the
    tiles) runs in it, the Gram and kernel products in NumPy's."""
    try:
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS/LAPACK, the factorization's)
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    except Exception:  # pragma: no cover
        return []
    keys = ("internal_api", "version", "architecture", "threading_layer", "num_threads",
            "filepath")
    out = []
    for p in pools:
        rec = {k: p.get(k) for k in keys}
        parts = Path(str(p.get("filepath") or "")).parts
        rec["owner"] = next((name for name in ("numpy", "scipy")
                             if f"{name}.libs" in parts or name in parts), None)
        out.append(rec)
    return out


def nvidia_smi_gpus() -> list:
    """GPUs listed by ``nvidia-smi`` (name, memory, driver), or [] without it. No CUDA init."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            try:
                mem = int(float(parts[1])) * 1024 * 1024
            except ValueError:
                mem = None
            gpus.append({"name": parts[0], "memory_bytes": mem, "driver": parts[2]})
    return gpus


def gpu_status() -> dict:
    """Whether kernelfit's GPU backend is usable here and, when not, why (initializes CUDA:
    call it in a child process when the caller must stay CUDA-free)."""
    from ..backend import get_backend, gpu_available, gpu_unavailable_reason

    if not gpu_available():
        return {"available": False, "reason": gpu_unavailable_reason()}
    try:
        desc = get_backend("gpu").describe()
    except Exception as exc:  # pragma: no cover - needs a broken CUDA install
        return {"available": False, "reason": f"{exc.__class__.__name__}: {exc}"}
    desc["available"] = True
    return desc


def host_tag() -> str:
    """A file-name-safe short name of this machine (the host name)."""
    name = platform.node().split(".")[0] or "host"
    safe = "".join(c if (c.isalnum() or c in "-_") else "-" for c in name)
    return safe[:40] or "host"


def describe_machine() -> dict:
    """What the machine is: CPU, cores, memory, BLAS/LAPACK, GPUs, OS and library versions.

    Cheap: nothing is measured and CUDA is not initialized (GPUs come from ``nvidia-smi``).
    """
    from ..backend import blas_info

    return {
        "host": platform.node(),
        "host_tag": host_tag(),
        "os": platform.platform(),
        "cpu": {"model": cpu_model(), **cpu_id(), "arch": platform.machine(),
                "flags": _cpu_flags(), **cpu_counts()},
        "memory": memory_info(),
        "blas": blas_info(),
        "blas_loaded": _blas_runtime(),
        "lapack": lapack_info(),
        "blas_env": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")
                     if k in os.environ},
        "gpus": nvidia_smi_gpus(),
        "versions": library_versions(),
        "load_average": _load_average(),
    }


def _load_average():
    """1, 5 and 15 minute load averages (other work running on the machine), if known."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


# ------------------------------------------------------------------- peaks
def _time_gemm_cpu(n: int, dtype, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype=dtype)
    np.matmul(a, b, out=c)  # warm-up: thread pool start, page faults
    times = []
    for _ in range(max(int(repeats), 1)):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"size": n, "repeats": len(times), "best_s": best, "times_s": times,
            "gflops": 2.0 * n ** 3 / best / 1e9}


def measure_cpu_peaks(size: int = 4096, repeats: int = 3) -> dict:
    """Best-of-``repeats`` rate of ``size`` x ``size`` DGEMM and SGEMM with NumPy's BLAS."""
    d = _time_gemm_cpu(size, np.float64, repeats)
    s = _time_gemm_cpu(size, np.float32, repeats)
    return {"dgemm_gflops": d["gflops"], "sgemm_gflops": s["gflops"], "dgemm": d, "sgemm": s}


def measure_gpu_peaks(size: int = 8192, repeats: int = 5) -> dict:
    """Best-of-``repeats`` FP64/FP32 matrix-product rate on the GPU (CuPy, CUDA events).

    Returns ``{'available': False, 'reason': ...}`` when no GPU backend is usable.
    """
    status = gpu_status()
    if not status.get("available"):
        return status
    from ..backend import get_backend

    out = dict(status)
    out.update(get_backend("gpu").measure_gemm_peaks(size, repeats))
    return out
