"""Out-of-core Cholesky: K's tiles live on disk, panels stream through memory.

Layout of the folder (``--out-of-core DIR``)::

    manifest.json     fingerprint (sha256 of X, kernel, n, tile size, dtype, ridge) + state
    A_i_j.npy         tile (i, j) of K (+ ridge + shift) I, Fortran order, not yet factored
    L_i_j.npy         tile (i, j) of the Cholesky factor, Fortran order

Left-looking blocked Cholesky by panels of ``w`` tile columns (``w`` chosen from the
memory available, or ``KERNELFIT_OOC_PANEL_TILES``). For panel [k0, k1):

1. read the panel's A tiles (rows >= k0) into memory;
2. stream every finished factor column j < k0 (its L tiles, memory-mapped) and subtract
   L_ij L_cj^T from the panel (syrk/gemm through the backend: CPU, or the GPU when present);
3. factor the panel in memory (potrf, trsm, in-panel updates);
4. write its L tiles (each atomically: temporary file + rename), then the manifest
   (atomically) with ``panels_done = k1``, then delete the panel's A tiles.

A tile file exists only when complete and A tiles are never modified, so an interruption
at any point loses at most the panel in progress: ``--resume`` checks the fingerprint,
skips the Gram tiles already on disk and the finished panels, and continues. The factor
is then used (memory-mapped) for the solve; in mixed precision (float32 tiles, the
default) the solution is refined to float64 accuracy exactly as in
:mod:`kernelfit.solvers.mixed`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .._io import atomic_write_text, atomic_writer
from ..backend import Backend, get_backend
from ..errors import InputError, NotPositiveDefiniteError
from ..kernels import Kernel
from ..memory import fmt_bytes
from ..progress import progress
from .mixed import (SHIFT_GROWTH, SHIFT_MAX_TRIES, SHIFT_START, kernel_diagonal, refine,
                    refinement_info)
from .tiled import (TiledSymmetric, _run_tiles, cholesky_solve, default_tile_size, gram_tile,
                    kernel_matvec, tile_bounds)

__all__ = ["solve_ooc", "ooc_factor", "fingerprint_X", "MANIFEST", "OOC_FORMAT"]

MANIFEST = "manifest.json"
OOC_FORMAT = "kernelfit-ooc"
OOC_VERSION = 1
#: test hook: SIGKILL this process after this many panels (simulates an interruption)
KILL_ENV = "KERNELFIT_OOC_KILL_AFTER_PANELS"
PANEL_ENV = "KERNELFIT_OOC_PANEL_TILES"


def fingerprint_X(X) -> str:
    """sha256 of X's float64 bytes (C order) with its shape."""
    A = np.ascontiguousarray(np.asarray(X), dtype=np.float64)
    h = hashlib.sha256()
    h.update(repr(A.shape).encode())
    flat = A.reshape(-1).view(np.uint8)
    step = 1 << 26
    for s in range(0, flat.shape[0], step):
        h.update(memoryview(flat[s:s + step]))
    return h.hexdigest()


class _Store:
    def __init__(self, directory: Path, n: int, tile_size: int, dtype):
        self.dir = directory
        self.n = n
        self.tile_size = tile_size
        self.dtype = np.dtype(dtype)
        self.bounds = tile_bounds(n, tile_size)

    @property
    def nt(self) -> int:
        return len(self.bounds)

    def path(self, kind: str, i: int, j: int) -> Path:
        return self.dir / f"{kind}_{i}_{j}.npy"

    def exists(self, kind, i, j) -> bool:
        return self.path(kind, i, j).is_file()

    def write(self, kind, i, j, arr) -> None:
        arr = np.asfortranarray(arr, dtype=self.dtype)
        with atomic_writer(self.path(kind, i, j), "wb") as fh:
            np.save(fh, arr, allow_pickle=False)

    def mmap(self, kind, i, j):
        a = np.load(self.path(kind, i, j), mmap_mode="r", allow_pickle=False)
        if not a.flags.f_contiguous:  # pragma: no cover - we only write Fortran tiles
            a = np.asfortranarray(a)
        return a

    def remove(self, kind, i, j) -> None:
        try:
            self.path(kind, i, j).unlink()
        except FileNotFoundError:
            pass

    def clear(self) -> None:
        for p in self.dir.glob("[AL]_*_*.npy"):
            p.unlink()
        for p in self.dir.glob(".[AL]_*.tmp"):
            p.unlink()

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("[AL]_*_*.npy"))


def _panel_tiles(store: _Store, k0: int, budget: float) -> int:
    env = os.environ.get(PANEL_ENV)
    if env:
        try:
            w = int(env)
        except ValueError:
            raise InputError(f"{PANEL_ENV} must be a positive integer, got {env!r}") from None
        if w < 1:
            raise InputError(f"{PANEL_ENV} must be a positive integer, got {env!r}")
        return w
    b = store.tile_size
    rows = store.n - store.bounds[k0][0]
    per_col = rows * b * store.dtype.itemsize
    # panel + one streamed column of L + a float64 copy of a tile
    w = int(max(1, (budget - per_col - 16.0 * b * b) // max(per_col, 1)))
    return max(1, min(w, store.nt - k0))


def _read_manifest(directory: Path) -> Optional[dict]:
    p = directory / MANIFEST
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"the checkpoint manifest {p} is unreadable ({exc}); use a new "
                         "folder or delete this one") from None
    if not isinstance(m, dict) or m.get("format") != OOC_FORMAT:
        raise InputError(f"{p} is not a kernelfit out-of-core checkpoint")
    if m.get("version") != OOC_VERSION:
        raise InputError(f"{p} has checkpoint version {m.get('version')}, this kernelfit "
                         f"reads version {OOC_VERSION}")
    return m


def _write_manifest(directory: Path, fp: dict, state: dict) -> None:
    doc = {"format": OOC_FORMAT, "version": OOC_VERSION, "fingerprint": fp, "state": state,
           "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(directory / MANIFEST, json.dumps(doc, indent=1))


def ooc_factor(kernel: Kernel, X, directory, *, tile_size: int, dtype=np.float32,
               ridge: float = 0.0, resume: bool = False, backend: Backend = None,
               allow_shift: bool = True, memory_budget: Optional[float] = None,
               show_progress=None, on_panel: Optional[Callable[[int], None]] = None):
    """Factor K = k(X, X) + ridge I out of core into ``directory``.

    Returns ``(T, info)`` where ``T`` is a factored :class:`TiledSymmetric` whose tiles are
    read-only memory maps of the L files, and ``info`` the checkpoint report.
    """
    be = backend if backend is not None else get_backend("cpu")
    X = np.ascontiguousarray(be.to_numpy(X), dtype=np.float64)
    n, d = X.shape
    dtype = np.dtype(dtype)
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise InputError(f"out-of-core folder {directory} exists and is not a folder",
                         param="ooc_dir", path=str(directory))
    if not directory.parent.exists():
        raise InputError(f"out-of-core folder {directory}: parent folder {directory.parent} "
                         "does not exist", param="ooc_dir", path=str(directory))
    if not os.access(directory if directory.exists() else directory.parent, os.W_OK | os.X_OK):
        raise InputError(f"out-of-core folder {directory} is not writable",
                         param="ooc_dir", path=str(directory))
    directory.mkdir(exist_ok=True)
    fp = {"X_sha256": fingerprint_X(X), "n": int(n), "d": int(d),
          "kernel": kernel.params(), "tile_size": int(tile_size), "dtype": dtype.name,
          "ridge": float(ridge)}
    store = _Store(directory, n, tile_size, dtype)
    nt = store.nt
    manifest = _read_manifest(directory)
    resumed_from = None
    if manifest is not None:
        if not resume:
            raise InputError(f"{directory} already holds an out-of-core checkpoint "
                             f"({manifest['state'].get('panels_done', 0)} of "
                             f"{manifest['state'].get('n_panels', '?')} tile columns done); "
                             "continue it with resume=True, or choose an empty folder",
                             param="ooc_dir",
                             path=str(directory), checkpoint=True)
        old = manifest.get("fingerprint", {})
        diff = sorted(k for k in set(fp) | set(old) if fp.get(k) != old.get(k))
        if diff:
            raise InputError(f"the checkpoint in {directory} was made from different data or "
                             f"parameters (differs in: {', '.join(diff)}); refusing to resume. "
                             "Use a new folder, or delete this one to start over")
        state = dict(manifest["state"])
        resumed_from = int(state.get("panels_done", 0))
    else:
        if any(directory.glob("[AL]_*_*.npy")):
            raise InputError(f"{directory} holds tile files but no manifest; use an empty "
                             "folder")
        state = {"n_panels": nt, "panels_done": 0, "gram_done": False, "shift": 0.0,
                 "factored": False}
    # disk pre-flight: K's tiles + one panel of L written before its A tiles go away
    total = TiledSymmetric.storage_bytes(n, tile_size, dtype)
    if memory_budget is None:
        from ..backend import available_host_memory

        memory_budget = 0.5 * available_host_memory()
    w0 = _panel_tiles(store, state["panels_done"] if state["panels_done"] < nt else 0,
                      memory_budget)
    panel_bytes = min(w0 * tile_size, n) * n * dtype.itemsize
    need = total + panel_bytes + (1 << 20) - store.bytes_on_disk()
    free = shutil.disk_usage(directory).free
    if not state.get("factored") and need > free:
        raise InputError(f"not enough disk space in {directory}: the out-of-core factor needs "
                         f"about {fmt_bytes(need)} more, {fmt_bytes(free)} is free; nothing "
                         "was written. Free space, choose another folder, or store the tiles "
                         "in float32 (mixed precision: half the disk)", param="ooc_dir",
                         path=str(directory), required_bytes=int(need),
                         available_bytes=int(free))
    if manifest is None:
        _write_manifest(directory, fp, state)
    stats = kernel.prepare(X)
    log = []
    timings = {"gram": 0.0, "factor": 0.0}
    computed = 0
    kill_after = os.environ.get(KILL_ENV)
    kill_after = int(kill_after) if kill_after else None
    mean_diag = None
    tries = 0
    while not state.get("factored"):
        shift = float(state.get("shift", 0.0))
        total_shift = float(ridge) + shift
        # ---- Gram tiles not yet on disk (tile columns >= panels_done)
        t0 = time.perf_counter()
        if not state.get("gram_done"):
            todo = [(i, j) for j in range(state["panels_done"], nt) for i in range(j, nt)
                    if not store.exists("A", i, j)]
            bar = progress(total=len(todo), desc="gram (to disk)", enabled=show_progress,
                           unit="tile")

            def work(_t, part):
                for i, j in part:
                    store.write("A", i, j, gram_tile(kernel, X, stats, store.bounds, i, j,
                                                     dtype, total_shift))
                    bar.update(1)

            try:
                _run_tiles(todo, work, get_backend("cpu"), None)  # tiles come from host X
            finally:
                bar.close()
            state["gram_done"] = True
            _write_manifest(directory, fp, state)
        timings["gram"] += time.perf_counter() - t0
        # ---- panels
        t1 = time.perf_counter()
        try:
            computed += _factor_panels(store, state, fp, be, memory_budget, show_progress,
                                       on_panel, kill_after, computed)
        except NotPositiveDefiniteError as exc:
            timings["factor"] += time.perf_counter() - t1
            if not allow_shift or tries >= SHIFT_MAX_TRIES:
                raise
            tries += 1
            if mean_diag is None:
                mean_diag = float(np.mean(kernel_diagonal(kernel, X))) + ridge
            new = SHIFT_START * mean_diag if shift == 0.0 else shift * SHIFT_GROWTH
            log.append(f"{dtype.name} Cholesky broke down at row {exc.index}; restarting "
                       f"out of core with diagonal shift {new:.3e}")
            store.clear()
            state.update({"panels_done": 0, "gram_done": False, "shift": new})
            _write_manifest(directory, fp, state)
            continue
        timings["factor"] += time.perf_counter() - t1
        state["factored"] = True
        _write_manifest(directory, fp, state)
    # ---- the factor, memory-mapped
    cpu = get_backend("cpu")
    T = TiledSymmetric(n, tile_size, dtype, cpu)
    for i in range(nt):
        for j in range(i + 1):
            T.tiles[i][j] = store.mmap("L", i, j)
    T.factored = True
    info = {"directory": str(directory), "n_panels": nt, "panels_done": state["panels_done"],
            "resumed_from_panel": resumed_from, "panels_computed_this_run": computed,
            "shift": float(state.get("shift", 0.0)), "bytes_on_disk": store.bytes_on_disk(),
            "manifest": str(directory / MANIFEST), "fingerprint": fp, "log": log,
            "timings": timings}
    return T, info


def _factor_panels(store: _Store, state: dict, fp: dict, be: Backend, budget: float,
                   show_progress, on_panel, kill_after, already: int) -> int:
    xp = be.xp
    nt = store.nt
    dtype = store.dtype
    done_here = 0
    bar = progress(total=nt, desc="cholesky (out of core)", enabled=show_progress,
                   unit="col")
    bar.update(state["panels_done"])

    def dev(a, copy=False):
        if be.device == "cpu":
            return np.array(a, dtype=dtype, order="F", copy=True) if copy else a
        return xp.asfortranarray(xp.asarray(np.asarray(a)))

    try:
        while state["panels_done"] < nt:
            k0 = state["panels_done"]
            k1 = min(nt, k0 + _panel_tiles(store, k0, budget))
            P = {(i, c): dev(store.mmap("A", i, c), copy=True)
                 for c in range(k0, k1) for i in range(c, nt)}
            # left-looking: updates from every finished column
            for j in range(k0):
                Lcol = {i: dev(store.mmap("L", i, j)) for i in range(k0, nt)}
                for c in range(k0, k1):
                    for i in range(c, nt):
                        if i == c:
                            be.syrk_sub(Lcol[c], P[(c, c)])
                        else:
                            be.gemm_nt_sub(Lcol[i], Lcol[c], P[(i, c)])
                del Lcol
            # factor the panel in memory
            for c in range(k0, k1):
                info = be.potrf(P[(c, c)])
                if info != 0:
                    glob = store.bounds[c][0] + info - 1
                    raise NotPositiveDefiniteError(
                        f"K is not numerically positive definite in {dtype.name}: pivot at "
                        f"row {glob}", index=glob)
                for i in range(c + 1, nt):
                    be.trsm_rlt(P[(c, c)], P[(i, c)])
                for c2 in range(c + 1, k1):
                    for i in range(c2, nt):
                        if i == c2:
                            be.syrk_sub(P[(i, c)], P[(c2, c2)])
                        else:
                            be.gemm_nt_sub(P[(i, c)], P[(c2, c)], P[(i, c2)])
            be.synchronize()
            for (i, c), t in P.items():
                store.write("L", i, c, be.to_numpy(t))
            del P
            state["panels_done"] = k1
            _write_manifest(store.dir, fp, state)
            for c in range(k0, k1):
                for i in range(c, nt):
                    store.remove("A", i, c)
            done_here += k1 - k0
            bar.update(k1 - k0)
            if on_panel is not None:
                on_panel(k1)
            if kill_after is not None and already + done_here >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # test hook: a hard interruption
    finally:
        bar.close()
    return done_here


def solve_ooc(kernel: Kernel, X, Y, opts, be: Optional[Backend] = None):
    """Out-of-core exact solve (float32 tiles + float64 refinement unless float64 asked)."""
    from .exact import ExactSolution

    be = be if be is not None else get_backend(opts.device)
    n = X.shape[0]
    if Y.ndim == 1:
        Y = Y[:, None]
    precision = "mixed" if opts.precision == "auto" else opts.precision
    dtype = np.float64 if precision == "float64" else np.float32
    ts = opts.tile_size or default_tile_size(n, be.device)
    Xh = np.ascontiguousarray(be.to_numpy(X), dtype=np.float64)
    Yh = np.asarray(be.to_numpy(Y), dtype=np.float64)
    T, ck = ooc_factor(kernel, Xh, opts.ooc_dir, tile_size=ts, dtype=dtype, ridge=opts.ridge,
                       resume=opts.resume, backend=be, allow_shift=(precision != "float64"),
                       show_progress=opts.show_progress)
    xp = be.xp
    Xb = xp.asarray(Xh)
    stats = kernel.prepare(Xb)

    def matvec(V):
        KV = be.to_numpy(kernel_matvec(kernel, Xb, xp.asarray(V), tile_size=ts,
                                       backend=be, stats=stats,
                                       show_progress=opts.show_progress))
        return KV + opts.ridge * np.asarray(V) if opts.ridge else KV

    def precond(R):
        return cholesky_solve(T, R, np.float64)

    t0 = time.perf_counter()
    max_iter = 0 if precision == "float32" else opts.max_iter
    out = refine(matvec, precond, Yh, tol=opts.tol, max_iter=max_iter,
                 method=opts.refinement, show_progress=opts.show_progress)
    timings = dict(ck.pop("timings"))
    timings["solve"] = time.perf_counter() - t0
    info = refinement_info(out, opts, shift=ck["shift"], log=ck.pop("log"))
    info.update({"tile_size": ts, "ridge": opts.ridge, "precision": precision,
                 "storage_dtype": np.dtype(dtype).name, "out_of_core": True,
                 "checkpoint": ck,
                 "factor_flops": n ** 3 / 3.0,
                 "factor_gflops_per_s": n ** 3 / 3.0 / max(timings["factor"], 1e-12) / 1e9})
    if precision == "float32":
        info["note_precision"] = "float32: no refinement (the residual is reported)"
    T.free()
    sol = ExactSolution(alpha=xp.asarray(out["alpha"]), solver="cholesky", dtype=precision,
                        device=be.device, timings=timings, memory_plan={}, info=info)
    sol.K_alpha = xp.asarray(out["K_alpha"])
    return sol
