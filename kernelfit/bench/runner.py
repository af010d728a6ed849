"""One measurement per child process, with a timeout and a memory guard.

A peer library can crash the whole interpreter (OpenBLAS segfaults in a large
multithreaded ``dsyrk``/``dpotrf`` on some CPUs) or use more memory than the machine has,
so every measurement runs in its own process::

    python -m kernelfit.bench.runner --spec '{"task": "solve", "impl": "scipy", "n": 5000}'

The child prints exactly one result line, ``@@kernelfit-bench@@ {json}``, on standard output.
The parent (:func:`run_child`) waits with ``os.wait4`` (so it gets the child's peak resident
memory even when the child dies), kills the child's process group on timeout or when its
resident memory passes a guard, and classifies the outcome:

``ok``           the child printed a result with status ok
``crashed``      the child died of a signal (``signal`` holds e.g. ``SIGSEGV``)
``timeout``      killed after ``timeout`` seconds
``memory``       killed by the memory guard, by the kernel's OOM killer (SIGKILL we did not
                 send), or the child reported a MemoryError / a refused memory plan
``unavailable``  the implementation cannot run here (library not installed, no GPU)
``error``        anything else (non-zero exit, an exception in the child)

Tasks a child runs (``spec['task']``):

``solve``     time one implementation at one n (``impl``: ``kernelfit``, ``sklearn``,
              ``scipy``), ``repeats`` times in the same process, on seeded random data
              (``dataset='random'``, ``d`` features in [0, 1], 10 classes) or a real
              dataset (``dataset='mnist'``, ``data_dir``); loading is not timed.
              ``deflate`` (kernelfit, optional): mixed precision's deflation off (False,
              0), on (True) or with at most this many landmarks (``deflate.RANK``).
``peaks``     GEMM peak rates (:mod:`kernelfit.bench.machine`), CPU and optionally GPU.
``selftest``  ``mode``: ``ok``, ``segv`` (kill itself with SIGSEGV), ``sleep`` (``seconds``),
              ``alloc`` (touch ``bytes`` of memory), ``exit`` (``code``): used by the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .._io import json_default as _json_default

__all__ = ["RESULT_PREFIX", "IMPLEMENTATIONS", "PEERS", "run_child", "child_main",
           "run_solve_task", "sklearn_kernel_params", "peer_unavailable_reason",
           "dense_bytes_needed", "auto_plan", "make_random_data"]

#: marks the child's one result line on standard output
RESULT_PREFIX = "@@kernelfit-bench@@ "

#: every implementation a solve task knows; the peers are the ones that are not kernelfit
IMPLEMENTATIONS = ("kernelfit", "sklearn", "scipy")
PEERS = ("sklearn", "scipy")

_PEER_MODULES = {"sklearn": "sklearn.kernel_ridge", "scipy": "scipy.linalg"}
_PEER_PACKAGES = {"sklearn": "scikit-learn", "scipy": "scipy"}


# ====================================================================== helpers
def peer_unavailable_reason(peer: str, kernel: str = "gaussian") -> Optional[str]:
    """Why ``peer`` cannot run here with ``kernel`` (not installed, no equivalent kernel),
    or None when it can. Does not import the peer."""
    import importlib.util

    modname = _PEER_MODULES[peer]
    try:
        found = importlib.util.find_spec(modname.split(".")[0]) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return f"{_PEER_PACKAGES[peer]} is not installed (pip install {_PEER_PACKAGES[peer]})"
    if peer == "sklearn" and kernel == "laplacian":
        return ("scikit-learn's 'laplacian' kernel uses the L1 distance, kernelfit's the "
                "Euclidean one: no equivalent kernel")
    return None


def sklearn_kernel_params(kernel: str, bandwidth: float = 5.0, degree: int = 4,
                          gamma: float = 1.0, coef0: float = 1.0) -> dict:
    """KernelRidge arguments that give the same kernel as kernelfit's ``kernel``.

    ``normalized`` maps to a polynomial kernel (gamma 1, coef0 0) on rows scaled to unit
    norm (the caller normalizes the rows; ``'normalize_rows': True`` says so).
    """
    if kernel == "gaussian":
        return {"kernel": "rbf", "gamma": 1.0 / (2.0 * float(bandwidth) ** 2)}
    if kernel == "linear":
        return {"kernel": "linear"}
    if kernel == "polynomial":
        return {"kernel": "poly", "degree": int(degree), "gamma": float(gamma),
                "coef0": float(coef0)}
    if kernel == "normalized":
        return {"kernel": "poly", "degree": int(degree), "gamma": 1.0, "coef0": 0.0,
                "normalize_rows": True}
    from ..errors import InputError

    raise InputError(f"no scikit-learn equivalent of kernelfit's {kernel!r} kernel")


def _data_bytes(n: int, d: int, n_test: int, n_outputs: int) -> float:
    """The bytes of a child's data: training and test inputs (float64), targets and their
    buffers."""
    return 8.0 * (n + n_test) * d + 8.0 * 4 * n * n_outputs


def auto_plan(n: int, d: int, n_test: int, n_outputs: int = 10, *, device: str = "cpu",
              tile_size: Optional[int] = None, device_bytes: int):
    """The plan a kernelfit child's pre-flight makes under ``precision='auto'``: the child
    loads its data first and plans within what ``device_bytes`` leaves (the pre-flight's
    plan leaves the data out: the command line has them loaded already)."""
    from ..solvers.plan import plan_request

    data = _data_bytes(n, d, n_test, n_outputs)
    return plan_request({"n": n, "d": d, "n_outputs": n_outputs, "n_test": n_test,
                         "precision": "auto", "device": device, "tile_size": tile_size},
                        max(int(device_bytes - data), 0))


def dense_bytes_needed(impl: str, n: int, d: int, n_test: int, n_outputs: int = 10,
                       dtype=np.float64, tile_size: Optional[int] = None,
                       device: str = "cpu", device_bytes: Optional[int] = None,
                       auto: bool = False) -> int:
    """Peak bytes an implementation needs at n (the memory pre-flight of one run).

    kernelfit: its own plan (:func:`kernelfit.memory.plan_exact_solve`, lower tiles of K)
    on ``device``: on the GPU with the GPU's tile rule for ``device_bytes`` of free memory
    (one dense call where it fits, a whole n x n K); with ``auto`` (bench's float64, which
    runs ``precision='auto'``) the data plus the plan its pre-flight makes within what
    ``device_bytes`` leaves beside them (:func:`kernelfit.solvers.plan.plan_request`: mixed
    precision where float64 does not fit; tiles on a GPU too, where the child may take one
    dense call). sklearn: a dense float64 K plus the
    copy ``scipy.linalg.solve`` makes, plus the test kernel. scipy: one dense K (factored
    in place) plus a test-kernel chunk.
    """
    data = _data_bytes(n, d, n_test, n_outputs)
    if impl == "kernelfit" and auto and device_bytes is not None:
        return int(data + auto_plan(n, d, n_test, n_outputs, device=device,
                                    tile_size=tile_size, device_bytes=device_bytes).memory.total)
    if impl == "kernelfit":
        from ..memory import plan_exact_solve

        if device == "gpu":
            from ..backend import gpu_tile_size

            ts = tile_size or gpu_tile_size(n, np.dtype(dtype).itemsize, device_bytes)
        else:
            from ..solvers.tiles import default_tile_size

            ts = tile_size or default_tile_size(n, "cpu")
        return plan_exact_solve(n, d, n_outputs, n_test=n_test, dtype=dtype,
                                tile_size=ts, device=device).total
    if impl == "sklearn":
        return int(data + 2 * 8.0 * n * n + 8.0 * n_test * n)
    if impl == "scipy":
        item = np.dtype(dtype).itemsize
        return int(data + 8.0 * n * n + (item * n * n if item != 8 else 0)
                   + 8.0 * min(n_test, 2048) * n)
    raise ValueError(f"unknown implementation {impl!r}")


def make_random_data(n: int, n_test: int, d: int, seed: int = 0, n_classes: int = 10):
    """Seeded random data like MNIST: features uniform in [0, 1], integer labels."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    y = rng.integers(0, n_classes, size=n)
    rng_t = np.random.default_rng(seed + 1_000_003)
    Xt = rng_t.random((n_test, d))
    yt = rng_t.integers(0, n_classes, size=n_test)
    return X, y, Xt, yt


def _one_hot(y, n_classes: int):
    Y = np.zeros((y.shape[0], n_classes))
    Y[np.arange(y.shape[0]), y] = 1.0
    return Y


def _options(spec: dict):
    """The run options of a solve spec (its flat names; ``n`` is the training size)."""
    from ..options import RunOptions

    flat = {k: v for k, v in spec.items() if k in RunOptions.flat_names()}
    flat.update(n_train=int(spec["n"]), n_test=int(spec.get("n_test", 1000)),
                show_progress=False)
    flat.setdefault("dataset", "random")
    return RunOptions.from_flat(**flat)


def _load(spec: dict, opts):
    if opts.data.dataset == "random":
        X, y, Xt, yt = make_random_data(opts.data.n_train, opts.data.n_test,
                                        int(spec.get("d", 784)), opts.seed)
        return X, y, Xt, yt, {"dataset": "random", "source": "numpy default_rng seeded uniform"}
    from ..run import load

    ds = load(opts)
    return ds.X_train, ds.y_train, ds.X_test, ds.y_test, {"dataset": ds.name,
                                                          "source": ds.source}


# ====================================================================== solve task
def _repeat_kernelfit(opts, kernel, X, y, Xt, yt) -> dict:
    from .. import run
    from ..backend import get_backend

    be = get_backend(opts.solver.device)
    if hasattr(be, "reset_peak"):
        be.reset_peak()  # GPU: peak of this repetition only
    est = run.fit(opts, X, y, compute_residual=True)
    t = dict(est.timings_)
    test_error, t["predict"] = run.evaluate(est, Xt, yt)
    rec = {"gram": t.get("gram"), "factor": t.get("factor"), "solve": t.get("solve"),
           "residual": t.get("residual"), "fit": t.get("fit_total"), "predict": t["predict"],
           "relative_residual": est.relative_residual_, "train_error": est.train_error_,
           "tile_size": est.fit_info_.get("tile_size"),
           "precision": est.fit_info_.get("precision"),
           "precision_reason": est.fit_info_.get("precision_reason"),
           "plan_choice": est.fit_info_.get("plan_choice"),
           "inner_products": est.fit_info_.get("inner_products"),
           "iterations": est.fit_info_.get("iterations"),
           "refinement_history": est.fit_info_.get("refinement_history"),
           "deflation": est.fit_info_.get("deflation")}
    rec["total"] = rec["fit"] + rec["predict"]
    rec["test_error"] = test_error
    gpu_peak = be.peak_memory()
    if gpu_peak is not None:
        rec["peak_gpu_bytes"] = int(gpu_peak)
    return rec


def _repeat_sklearn(opts, kernel, X, y, Xt, yt, sklearn_alpha: float = 1e-10,
                    residual: bool = True) -> dict:
    from sklearn.kernel_ridge import KernelRidge

    from ..run import relative_residual


    params = sklearn_kernel_params(kernel.name, kernel.bandwidth, kernel.degree, kernel.gamma,
                                   kernel.coef0)
    normalize = params.pop("normalize_rows", False)
    Y = _one_hot(y, int(max(y.max(), yt.max() if yt.shape[0] else 0)) + 1)
    t0 = time.perf_counter()
    Xf = X / np.linalg.norm(X, axis=1, keepdims=True) if normalize else X
    model = KernelRidge(alpha=float(sklearn_alpha), **params)
    model.fit(Xf, Y)
    t1 = time.perf_counter()
    Xtf = Xt / np.linalg.norm(Xt, axis=1, keepdims=True) if (normalize and Xt.shape[0]) else Xt
    P = model.predict(Xtf) if Xt.shape[0] else np.empty((0, Y.shape[1]))
    t2 = time.perf_counter()
    rec = {"gram": None, "factor": None, "solve": None, "fit": t1 - t0, "predict": t2 - t1,
           "total": t2 - t0, "sklearn_alpha": float(sklearn_alpha)}
    rec["test_error"] = float(np.mean(np.argmax(P, axis=1) != yt)) if yt.shape[0] else None
    if residual:
        t3 = time.perf_counter()
        rec["relative_residual"] = relative_residual(kernel, X, model.dual_coef_, Y)
        rec["residual_check_s"] = time.perf_counter() - t3  # not part of "total"
    return rec


def _repeat_scipy(opts, kernel, X, y, Xt, yt, residual: bool = True) -> dict:
    from scipy.linalg import cho_factor, cho_solve

    from ..run import relative_residual

    dtype = np.dtype(opts.solver.dtype or "float64")  # None: kernelfit's auto; here float64
    Y = _one_hot(y, int(max(y.max(), yt.max() if yt.shape[0] else 0)) + 1)
    t0 = time.perf_counter()
    K = kernel(X)                      # one dense n x n block (X @ X.T inside)
    if K.dtype != dtype:
        K = K.astype(dtype)
    t1 = time.perf_counter()
    # K is symmetric, so K.T (a Fortran-ordered view) is the same matrix: LAPACK gets it
    # without a copy and dpotrf runs in place.
    c = cho_factor(K.T, lower=True, overwrite_a=True, check_finite=False)
    t2 = time.perf_counter()
    alpha = cho_solve(c, Y.astype(dtype), check_finite=False).astype(np.float64)
    t3 = time.perf_counter()
    del c, K
    preds = []
    for s in range(0, Xt.shape[0], 2048):
        preds.append(kernel(Xt[s:s + 2048], X) @ alpha)
    P = np.concatenate(preds) if preds else np.empty((0, Y.shape[1]))
    t4 = time.perf_counter()
    rec = {"gram": t1 - t0, "factor": t2 - t1, "solve": t3 - t2, "fit": t3 - t0,
           "predict": t4 - t3, "total": t4 - t0}
    rec["test_error"] = float(np.mean(np.argmax(P, axis=1) != yt)) if yt.shape[0] else None
    if not np.isfinite(alpha).all():
        raise np.linalg.LinAlgError("cho_solve returned non-finite coefficients")
    if residual:
        t5 = time.perf_counter()
        rec["relative_residual"] = relative_residual(kernel, X, alpha, Y)
        rec["residual_check_s"] = time.perf_counter() - t5
    return rec


_REPEATERS = {"kernelfit": _repeat_kernelfit, "sklearn": _repeat_sklearn,
              "scipy": _repeat_scipy}


#: rows of the untimed GPU warm-up solve before the timed repeats
GPU_WARMUP_ROWS = 1024


def run_solve_task(spec: dict, on_repeat: Optional[Callable[[dict], None]] = None) -> dict:
    """Time one implementation at one n, ``spec['repeats']`` times (in this process)."""
    import gc

    from ..memory import peak_rss_bytes

    impl = spec.get("impl", "kernelfit")
    if impl not in _REPEATERS:
        raise ValueError(f"unknown implementation {impl!r}")
    if impl != "kernelfit":
        reason = peer_unavailable_reason(impl, spec.get("kernel", "gaussian"))
        if reason:
            return {"status": "unavailable", "reason": reason}
    if impl == "kernelfit" and spec.get("device", "cpu") == "gpu":
        from ..backend import get_backend

        get_backend("gpu")  # BackendUnavailableError -> 'unavailable' with the reason
    opts = _options(spec)
    t0 = time.perf_counter()
    X, y, Xt, yt, data_info = _load(spec, opts)
    load_s = time.perf_counter() - t0
    kernel = opts.kernel.resolve(X)
    extra = {} if impl == "kernelfit" else {"residual": bool(spec.get("residual", True))}
    if impl == "sklearn":
        extra["sklearn_alpha"] = float(spec.get("sklearn_alpha", 1e-10))
    # imports every implementation pays once per session stay out of the timings
    import scipy.linalg  # noqa: F401
    import scipy.linalg.blas  # noqa: F401
    import scipy.linalg.lapack  # noqa: F401

    if impl == "kernelfit":
        from .. import estimator  # noqa: F401
        if "deflate" in spec:  # before/after comparisons of mixed precision's deflation
            from ..solvers import deflate

            deflate.ENABLED = bool(spec["deflate"])
            deflate.RANK = deflate.RANK if spec["deflate"] is True else int(spec["deflate"])
    warmup_s = m = None
    if impl == "kernelfit" and spec.get("device", "cpu") == "gpu":
        # a fresh process's first GPU solve pays one-off costs (CuPy compiling or loading
        # its kernels, the CUDA libraries' first calls; on an H200 the first of two runs
        # at n = 5,000 took 8.9 s, the second 0.21 s): pay them on a slice, untimed
        m = min(int(X.shape[0]), GPU_WARMUP_ROWS)
        t0 = time.perf_counter()
        _REPEATERS[impl](opts, kernel, X[:m], y[:m], Xt[:m], yt[:m], **extra)
        warmup_s = time.perf_counter() - t0
    baseline = peak_rss_bytes()
    reps = []
    for _ in range(max(int(spec.get("repeats", 1)), 1)):
        rec = _REPEATERS[impl](opts, kernel, X, y, Xt, yt, **extra)
        reps.append(rec)
        if on_repeat is not None:
            on_repeat(rec)
        gc.collect()
    return {"status": "ok", "impl": impl, "n": int(X.shape[0]), "n_test": int(Xt.shape[0]),
            "d": int(X.shape[1]), "data": data_info, "load_s": load_s,
            "kernel_params": kernel.params(), "repeats": reps, "warmup_s": warmup_s,
            "warmup_rows": m,
            "baseline_rss_bytes": int(baseline), "peak_rss_bytes": int(peak_rss_bytes())}


# ====================================================================== child side
def _selftest(spec: dict) -> dict:
    mode = spec.get("mode", "ok")
    if mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)  # pragma: no cover - the signal ends the process
    if mode == "sleep":
        time.sleep(float(spec.get("seconds", 60)))
    if mode == "alloc":
        a = np.ones(int(spec.get("bytes", 1 << 30)) // 8)
        time.sleep(float(spec.get("seconds", 0)))
        del a
    if mode == "exit":
        sys.exit(int(spec.get("code", 1)))
    if mode == "raise":
        raise RuntimeError("selftest error")
    return {"status": "ok", "mode": mode}


def _peaks(spec: dict) -> dict:
    from .machine import measure_cpu_peaks, measure_gpu_peaks

    out = {"status": "ok"}
    if spec.get("describe", False):
        # the machine as this child sees it: its environment (OPENBLAS_CORETYPE, threads)
        # may differ from the parent's, and with it the BLAS kernel the peaks measure
        from .machine import describe_machine

        out["machine"] = describe_machine()
    if spec.get("cpu", True):
        out["cpu"] = measure_cpu_peaks(int(spec.get("size", 4096)), int(spec.get("repeats", 3)))
    if spec.get("gpu", False):
        try:
            out["gpu"] = measure_gpu_peaks(int(spec.get("gpu_size", 8192)),
                                           int(spec.get("repeats", 3)))
        except Exception as exc:  # pragma: no cover - needs a GPU
            out["gpu"] = {"available": False, "reason": f"{exc.__class__.__name__}: {exc}"}
    return out


def _execute(spec: dict) -> dict:
    from ..errors import BackendUnavailableError, MemoryPlanError

    task = spec.get("task", "solve")
    try:
        if task == "selftest":
            return _selftest(spec)
        if task == "peaks":
            return _peaks(spec)
        if task == "solve":
            return run_solve_task(spec)
        return {"status": "error", "reason": f"unknown task {task!r}"}
    except BackendUnavailableError as exc:
        return {"status": "unavailable", "reason": str(exc)}
    except (MemoryError, MemoryPlanError) as exc:
        return {"status": "memory", "reason": f"{exc.__class__.__name__}: {exc}"}
    except Exception as exc:
        import traceback

        return {"status": "error", "reason": f"{exc.__class__.__name__}: {exc}",
                "traceback": traceback.format_exc(limit=6)}


def child_main(argv=None) -> int:
    """Entry point of ``python -m kernelfit.bench.runner --spec JSON`` (the only argument;
    this is a parent-to-child protocol, not a user command)."""
    import faulthandler

    faulthandler.enable()  # a segfault leaves a Python traceback in the stderr tail
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] != "--spec":
        sys.stderr.write("usage: python -m kernelfit.bench.runner --spec JSON\n")
        return 2
    spec = json.loads(argv[1])
    result = _execute(spec)
    result["kernelfit_path"] = str(Path(__file__).resolve().parents[1])  # the code that ran
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, default=_json_default) + "\n")
    sys.stdout.flush()
    return 0


# ====================================================================== parent side
def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _reader(stream, sink: list) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line)
    stream.close()


def _rss_of(pid: int) -> int:
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0


def run_child(spec: dict, *, timeout: float = 600.0, env: Optional[dict] = None,
              memory_limit: Optional[int] = None, poll: float = 0.05,
              python: Optional[str] = None, cwd: Optional[str] = None) -> dict:
    """Run one measurement in a child process; never raises for the child's failures.

    ``env`` entries are added to the child's environment (e.g. ``OPENBLAS_CORETYPE``); an
    entry whose value is None removes that variable. ``cwd``: the child's working folder
    (``python -m`` puts it first on the import path: a checkout given as both ``cwd`` and
    ``PYTHONPATH`` is the kernelfit the child runs; its result's ``kernelfit_path`` says
    which one it was).
    ``memory_limit`` (bytes of resident memory) arms the memory guard. Returns a dict with
    ``status`` (see the module docstring), ``reason``, ``returncode``, ``signal``,
    ``wall_s``, ``max_rss_bytes`` (the child's ru_maxrss), ``result`` (the child's JSON,
    or None) and ``stderr_tail``.
    """
    child_env = dict(os.environ)
    child_env["KERNELFIT_PROGRESS"] = "0"
    child_env["PYTHONUNBUFFERED"] = "1"
    # the child imports the same kernelfit as this process, wherever it was started from
    here = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (here, child_env.get("PYTHONPATH")) if p)
    for key, val in (env or {}).items():
        if val is None:
            child_env.pop(str(key), None)
        else:
            child_env[str(key)] = str(val)
    cmd = [python or sys.executable, "-m", "kernelfit.bench.runner", "--spec",
           json.dumps(spec, default=_json_default)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env, start_new_session=True, cwd=cwd)
    out_lines, err_lines = [], []
    threads = [threading.Thread(target=_reader, args=(proc.stdout, out_lines), daemon=True),
               threading.Thread(target=_reader, args=(proc.stderr, err_lines), daemon=True)]
    for t in threads:
        t.start()
    killed_for = None
    guard_rss = 0
    status = 0
    rusage = None
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            elapsed = time.perf_counter() - t0
            if killed_for is None:
                if elapsed > timeout:
                    killed_for = "timeout"
                    _kill_group(proc.pid)
                elif memory_limit:
                    rss = _rss_of(proc.pid)
                    guard_rss = max(guard_rss, rss)
                    if rss > memory_limit:
                        killed_for = "memory"
                        _kill_group(proc.pid)
            time.sleep(poll if elapsed > 1.0 else poll / 5)
    except BaseException:
        # Ctrl-C or SIGTERM reach this process only (the child has its own session, so
        # that a crash or a kill takes its whole group): it must not keep the cores busy
        _kill_group(proc.pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, 0)
        proc.returncode = -9
        raise
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc  # os.wait4 reaped the child: tell Popen
    for t in threads:
        t.join(timeout=5)
    max_rss = int(rusage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)) if rusage else 0
    stderr = "".join(err_lines)
    result = None
    for line in reversed(out_lines):
        if line.startswith(RESULT_PREFIX):
            try:
                result = json.loads(line[len(RESULT_PREFIX):])
            except json.JSONDecodeError:
                result = None
            break
    rec = {"returncode": rc, "signal": _signal_name(-rc) if rc < 0 else None, "wall_s": wall,
           "max_rss_bytes": max_rss, "result": result, "stderr_tail": stderr[-3000:],
           "reason": None}
    from ..memory import fmt_bytes

    if killed_for == "timeout":
        rec["status"] = "timeout"
        rec["reason"] = f"no result after {timeout:g} s: killed"
    elif killed_for == "memory":
        rec["status"] = "memory"
        rec["reason"] = (f"resident memory {fmt_bytes(guard_rss)} passed the guard of "
                         f"{fmt_bytes(memory_limit)}: killed")
    elif rc < 0:
        if rc == -signal.SIGKILL:
            rec["status"] = "memory"
            rec["reason"] = (f"killed by SIGKILL it was not sent by the benchmark (most likely "
                             f"the kernel's out-of-memory killer; peak RSS {fmt_bytes(max_rss)})")
        else:
            rec["status"] = "crashed"
            rec["reason"] = f"crashed with {rec['signal']} after {wall:.1f} s"
    elif result is not None:
        rec["status"] = result.get("status", "error")
        rec["reason"] = result.get("reason")
    else:
        rec["status"] = "error"
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        rec["reason"] = f"exit code {rc} without a result ({last[:300]})"
    return rec


def _kill_group(pid: int) -> None:
    """Kill the child's process group (it was started in its own session)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    sys.exit(child_main())
