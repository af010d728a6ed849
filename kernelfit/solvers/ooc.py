"""Out-of-core Cholesky: K's tiles live on disk, panels stream through memory.

Layout of the folder (``--out-of-core DIR``)::

    manifest.json     fingerprint (sha256 of X, kernel, n, tile size, dtype, ridge,
                      deflation rank) + state
    U.npy             the deflation's low-rank part U (float32 tiles), which a resumed
                      run reads back rather than making again
    A_i_j.npy         tile (i, j) of K (- U U^T in float32: the deflation of
                      :mod:`kernelfit.solvers.deflate`) (+ ridge + shift) I, Fortran
                      order, not yet factored
    L_i_j.npy         tile (i, j) of the Cholesky factor, Fortran order

Left-looking blocked Cholesky by panels of ``w`` tile columns (``w`` chosen from the
memory available, or ``KERNELFIT_OOC_PANEL_TILES``). For panel [k0, k1):

1. read the panel's A tiles (rows >= k0) into memory;
2. factor the window [k0, k1) with :func:`kernelfit.solvers.cholesky.factor_columns`: it
   first streams every finished factor column j < k0 (its L tiles, memory-mapped) and
   subtracts L_ij L_cj^T from the panel, then factors the panel in memory (syrk/gemm,
   potrf, trsm through the backend: CPU, or the GPU when present);
3. write its L tiles (each atomically: temporary file + rename), then the manifest
   (atomically) with ``panels_done = k1``, then delete the panel's A tiles.

A tile file exists only when complete and A tiles are never modified, so an interruption
at any point loses at most the panel in progress: ``--resume`` checks the fingerprint,
skips the Gram tiles already on disk and the finished panels, and continues. The factor
is then used (memory-mapped) for the solve; in mixed precision (float32 tiles, the
default) the solution is refined to float64 accuracy by :mod:`kernelfit.solvers.refine`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .._io import atomic_save_npy, atomic_write_text, check_format
from ..backend import Backend, available_host_memory, get_backend
from ..errors import InputError, NotPositiveDefiniteError
from ..kernels import Kernel
from ..memory import fmt_bytes
from ..progress import progress
from .checkpoint_facts import fingerprint_facts, fingerprint_field
from .checkpoint_lock import (LOW_RANK_FILE, MANIFEST, discard_checkpoint,
                              float64_fits, hold_folder, release_folder)
from .cholesky import cholesky_solve, factor_columns
from .deflate import Deflated, nystrom_landmarks
from .mixed import FLOOR_NOTE, Fallback, float64_floor
from .products import gram_tile, kernel_diagonal, kernel_matvec
from .refine import (ExactSolution, breakdown_facts, direct_solve, refine, refined_solution,
                     retry_with_shift)
from .tiles import BlockBuffer, DiskTiles, TiledSymmetric, default_tile_size, run_tiles

__all__ = ["solve_ooc", "ooc_factor", "fingerprint_X", "MANIFEST", "OOC_FORMAT"]

OOC_FORMAT = "kernelfit-ooc"
OOC_VERSION = 1
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


def _panel_tiles(store: DiskTiles, k0: int, budget: float) -> int:
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


def _panel_budget(memory: Optional[float]) -> float:
    """The bytes a panel of tiles may take: half of ``memory`` (None: what is available)."""
    return 0.5 * (available_host_memory() if memory is None else memory)


def disk_needed(store: DiskTiles, k0: int, budget: float) -> int:
    """The disk pre-flight of :func:`ooc_factor` from tile column ``k0``: K's tiles, one
    panel of L (of ``budget`` bytes at most, :func:`_panel_budget`) written before its A
    tiles go away, 1 MiB."""
    w0 = _panel_tiles(store, k0, budget)
    return (TiledSymmetric.storage_bytes(store.n, store.tile_size, store.dtype)
            + min(w0 * store.tile_size, store.n) * store.n * store.dtype.itemsize + (1 << 20))


def _read_manifest(directory: Path) -> Optional[dict]:
    p = directory / MANIFEST
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"the checkpoint manifest {p} is unreadable ({exc}); use a new "
                         "folder or delete this one") from None
    return check_format(m, p, OOC_FORMAT, OOC_VERSION, "out-of-core checkpoint")


def _damaged(directory: Path, what: str) -> InputError:
    return InputError(f"the checkpoint in {directory} is damaged ({what}); it cannot be "
                      "resumed: delete the folder to start over, or use a new one",
                      param="ooc_dir", path=str(directory), cause="damaged_checkpoint")


def _checked_state(state, nt: int, directory: Path) -> dict:
    """A checkpoint's resume state, refused as damaged unless its fields are what this
    module writes (a hand-edited manifest gave KeyError/ValueError tracebacks)."""
    if not isinstance(state, dict):
        raise _damaged(directory, "its manifest has no state")
    done = state.get("panels_done")
    shift = state.get("shift", 0.0)
    if (isinstance(done, bool) or not isinstance(done, int) or not 0 <= done <= nt
            or not all(isinstance(state.get(k, False), bool) for k in ("gram_done", "factored"))
            or isinstance(shift, bool) or not isinstance(shift, (int, float))
            or not math.isfinite(shift) or shift < 0
            or (state.get("factored") and done != nt)):
        raise _damaged(directory, "its manifest's state is not one kernelfit writes")
    return dict(state)


def _check_tiles(store: DiskTiles, state: dict, directory: Path) -> None:
    """Refuse a checkpoint whose tile files the state needs are missing or not of their
    tile's size (a truncated or deleted file gave a traceback, or 'check the path')."""
    nt, done = store.nt, int(state["panels_done"])
    # the Gram's tiles still to factor: all of them once it is done, else (the Gram in
    # progress) the ones written so far, which must be whole
    gram = bool(state.get("gram_done")) and not state.get("factored")
    need = [("L", i, c) for c in range(done) for i in range(c, nt)]
    need += [("A", i, c) for c in range(done, nt) for i in range(c, nt)
             if gram or store.exists("A", i, c)]
    for kind, i, c in need:
        path = store.path(kind, i, c)
        if not path.is_file():
            raise _damaged(directory, f"{path.name} is missing")
        expected = store.tile_nbytes(i, c)
        if path.stat().st_size < expected:
            raise _damaged(directory, f"{path.name} is truncated: {path.stat().st_size} "
                                      f"bytes, a tile needs {expected}")


def _write_manifest(directory: Path, fp: dict, state: dict) -> None:
    doc = {"format": OOC_FORMAT, "version": OOC_VERSION, "fingerprint": fp, "state": state,
           "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(directory / MANIFEST, json.dumps(doc, indent=1))


def ooc_factor(kernel: Kernel, X, directory, *, tile_size: int, dtype=np.float32,
               ridge: float = 0.0, resume: bool = False, backend: Backend = None,
               allow_shift: bool = True, memory: Optional[float] = None,
               show_progress=None, on_panel: Optional[Callable[[int], None]] = None,
               low_rank=None, keep_lock: bool = False):
    """Factor K = k(X, X) + ridge I out of core into ``directory``.

    ``memory``: the bytes the factorization plans in (None: the available host memory;
    :func:`solve_ooc` gives a memory budget set in its options); a panel of tiles takes half.

    ``low_rank`` (float32 tiles only): a host (n, r) float64 array U; the factor is then
    of ``K - U U^T + ridge I`` (mixed precision's deflation, :mod:`kernelfit.solvers.deflate`),
    and the fingerprint says so. Returns ``(T, info)`` where ``T`` is a factored
    :class:`TiledSymmetric` whose tiles are read-only memory maps of the L files, and
    ``info`` the checkpoint report. The folder is held for this process while it factors
    (:func:`~kernelfit.solvers.checkpoint_lock.hold_folder`: another process solving into
    it meanwhile is refused); with ``keep_lock`` also after, ``info['lock']`` holding it
    until :func:`~kernelfit.solvers.checkpoint_lock.release_folder`
    (:func:`solve_ooc`: through its refinement).
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
                         "does not exist; create it first (mkdir -p), or give a folder "
                         "whose parent exists", param="ooc_dir", path=str(directory))
    if not os.access(directory if directory.exists() else directory.parent, os.W_OK | os.X_OK):
        raise InputError(f"out-of-core folder {directory} is not writable",
                         param="ooc_dir", path=str(directory))
    if low_rank is not None and dtype != np.float32:
        raise InputError("low_rank applies to float32 tiles only")
    created = not directory.exists()
    try:
        directory.mkdir(exist_ok=True)
    except OSError as exc:  # /proc, /sys: the parent is there, a folder cannot be made
        raise InputError(f"out-of-core folder {directory} cannot be made "
                         f"({exc.strerror or exc}); choose a folder you can write to",
                         param="ooc_dir", path=str(directory)) from None
    lock = None
    try:
        lock = hold_folder(directory)  # before anything there is read or written
        fp = {"X_sha256": fingerprint_X(X), "n": int(n), "d": int(d),
              "kernel": kernel.params(), "tile_size": int(tile_size), "dtype": dtype.name,
              "ridge": float(ridge),
              "deflation_rank": 0 if low_rank is None else int(low_rank.shape[1])}
        store = DiskTiles(directory, n, tile_size, dtype)
        nt = store.nt
        manifest = _read_manifest(directory)
        resumed_from = None
        if manifest is not None:
            old = manifest.get("fingerprint", {})
            if not isinstance(old, dict) or fingerprint_facts(old, directory) is None:
                # (n, tile_size, dtype unreadable: a way out naming them would not work)
                raise _damaged(directory, "its manifest's fingerprint is not what kernelfit "
                                          "writes")
            old, ranked = dict(old), "deflation_rank" in old  # (older ones: no rank field)
            old.setdefault("deflation_rank", 0)  # older checkpoints: tiles of K itself
            diff = sorted(k for k in set(fp) | set(old) if fp.get(k) != old.get(k))
            if diff:
                # only the precision differs (auto picks mixed out of core): name the one
                # that resumes it first (float32 tiles with no rank field: a plain float32
                # checkpoint or an older mixed one, no guess)
                was = "float64" if old.get("dtype") == "float64" else (
                    ("mixed" if old["deflation_rank"] else "float32" if ranked else None)
                    if old.get("dtype") == "float32" else None)
                now = "float64" if dtype == np.float64 else "mixed" if low_rank is not None else 0
                same = set(diff) <= {"dtype", "deflation_rank"} and was not in (None, now)
                also = "" if resume else " and resume=True"
                keep = (f"It was made with precision={was!r}: give that{also} to resume it; "
                        "or use" if same else
                        f"It was made with tile_size={old['tile_size']}: leave tile_size out "
                        f"(the checkpoint's is then used){also} to resume it; or use"
                        if diff == ["tile_size"] else "Use")
                how = f"{keep} a new folder, or delete this one to start over"
                raise InputError(f"the checkpoint in {directory} was made from different "
                                 f"data or parameters (differs in: {', '.join(diff)}); "
                                 f"refusing to {'resume' if resume else 'use'} it. {how}",
                                 param="ooc_dir", path=str(directory))
            if not resume:  # (offered only where resuming would work: the same fingerprint)
                st = manifest["state"]
                raise InputError(f"{directory} already holds an out-of-core checkpoint "
                                 f"({st.get('panels_done', 0)} of {st.get('n_panels', '?')} "
                                 "tile columns done); continue it with resume=True, or choose "
                                 "an empty folder", param="ooc_dir", path=str(directory),
                                 checkpoint=True)
            state = _checked_state(manifest.get("state"), nt, directory)
            _check_tiles(store, state, directory)
            resumed_from = int(state.get("panels_done", 0))
        else:
            if any(directory.glob("[AL]_*_*.npy")):
                raise InputError(f"{directory} holds tile files but no manifest; use an empty "
                                 "folder")
            state = {"n_panels": nt, "panels_done": 0, "gram_done": False, "shift": 0.0,
                     "factored": False}
        budget = _panel_budget(memory)
        need = disk_needed(store, state["panels_done"] if state["panels_done"] < nt else 0,
                           budget) - store.bytes_on_disk()
        free = shutil.disk_usage(directory).free
        if not state.get("factored") and need > free:
            half = (", or store the tiles in float32 (mixed precision: half the disk)"
                    if dtype.itemsize == 8 else "")
            raise InputError(f"not enough disk space in {directory}: the out-of-core factor "
                             f"needs about {fmt_bytes(need)} more, {fmt_bytes(free)} is free; "
                             f"nothing was written. Free space, choose another folder{half}",
                             param="ooc_dir", path=str(directory), required_bytes=int(need),
                             available_bytes=int(free))
    except BaseException:  # refused before anything was written: no folder left behind
        release_folder(lock)
        if created:
            try:
                directory.rmdir()
            except OSError:
                pass
        raise
    try:
        if manifest is None:
            if low_rank is not None:  # before the manifest: a resumed run reads it back
                atomic_save_npy(directory / LOW_RANK_FILE, np.asarray(low_rank, dtype=np.float64))
            _write_manifest(directory, fp, state)
        stats = kernel.prepare(X)
        log: list = []
        timings = {"gram": 0.0, "factor": 0.0}
        computed = [0]

        def attempt(shift):
            if shift != float(state.get("shift", 0.0)):  # a breakdown: start over, shifted
                store.clear()
                state.update({"panels_done": 0, "gram_done": False, "shift": shift})
                _write_manifest(directory, fp, state)
            if state.get("factored"):
                return None
            t0 = time.perf_counter()
            if not state.get("gram_done"):
                _gram_to_disk(kernel, X, stats, store, state, float(ridge) + shift,
                              show_progress, low_rank)
                state["gram_done"] = True
                _write_manifest(directory, fp, state)
            t1 = time.perf_counter()
            timings["gram"] += t1 - t0
            try:
                computed[0] += _factor_panels(store, state, fp, be, budget, show_progress,
                                              on_panel)
            finally:
                timings["factor"] += time.perf_counter() - t1
            state["factored"] = True
            _write_manifest(directory, fp, state)
            return None

        def mean_diagonal():
            return float(np.mean(kernel_diagonal(kernel, X))) + ridge

        _, shift, _ = retry_with_shift(attempt, mean_diagonal, allow_shift=allow_shift,
                                       dtype_name=dtype.name, start=float(state.get("shift", 0.0)),
                                       log=log, facts=breakdown_facts(kernel, X, ridge))
        T = store.factor_in_memory_maps(get_backend("cpu"))
        info = {"directory": str(directory), "n_panels": nt, "panels_done": state["panels_done"],
                "resumed_from_panel": resumed_from, "panels_computed_this_run": computed[0],
                "shift": float(state.get("shift", 0.0)), "bytes_on_disk": store.bytes_on_disk(),
                "manifest": str(directory / MANIFEST), "fingerprint": fp, "log": log,
                "timings": timings}
        if keep_lock:  # solve_ooc holds the folder through its refinement
            info["lock"] = lock
        else:
            release_folder(lock)
        return T, info
    except BaseException:  # the folder is free again for a later run (or a resume)
        release_folder(lock)
        raise


def _gram_to_disk(kernel, X, stats, store: DiskTiles, state: dict, shift: float,
                  show_progress, low_rank=None) -> None:
    """Write the Gram tiles not yet on disk (tile columns >= panels_done)."""
    nt = store.nt
    todo = [(i, j) for j in range(state["panels_done"], nt) for i in range(j, nt)
            if not store.exists("A", i, j)]
    bar = progress(total=len(todo), desc="gram (to disk)", enabled=show_progress, unit="tile")

    edge = max(e - s for s, e in store.bounds)

    def work(_t, part):
        scratch = BlockBuffer(None, edge, edge)  # one per thread, reused by every tile
        for i, j in part:
            store.write("A", i, j, gram_tile(kernel, X, stats, store.bounds, i, j,
                                             store.dtype, shift, low_rank=low_rank,
                                             scratch=scratch))
            bar.update(1)

    try:
        run_tiles(todo, work, get_backend("cpu"), None)  # tiles come from host X
    finally:
        bar.close()


class _PanelOps:
    """Tile operations of one panel: its tiles in memory, finished columns from disk."""

    def __init__(self, store: DiskTiles, be: Backend, k0: int, k1: int):
        self.store, self.be, self.k0 = store, be, k0
        self.P = {(i, c): self._dev(store.mmap("A", i, c), copy=True)
                  for c in range(k0, k1) for i in range(c, store.nt)}
        self._col = (None, {})

    def _dev(self, a, copy=False):
        if self.be.device == "cpu":
            return np.array(a, dtype=self.store.dtype, order="F", copy=True) if copy else a
        xp = self.be.xp
        return xp.asfortranarray(xp.asarray(np.asarray(a)))

    def _L(self, i: int, k: int):
        if k >= self.k0:
            return self.P[(i, k)]
        if self._col[0] != k:  # stream one finished column of L at a time
            self._col = (k, {r: self._dev(self.store.mmap("L", r, k))
                             for r in range(self.k0, self.store.nt)})
        return self._col[1][i]

    def potrf(self, k: int) -> int:
        return self.be.potrf(self.P[(k, k)])

    def trsm(self, i: int, k: int) -> None:
        self.be.trsm_rlt(self.P[(k, k)], self.P[(i, k)])

    def update(self, i: int, c: int, k: int) -> None:
        if i == c:
            self.be.syrk_sub(self._L(i, k), self.P[(i, i)])
        else:
            self.be.gemm_nt_sub(self._L(i, k), self._L(c, k), self.P[(i, c)])


def _factor_panels(store: DiskTiles, state: dict, fp: dict, be: Backend, budget: float,
                   show_progress, on_panel) -> int:
    nt = store.nt
    done_here = 0
    bar = progress(total=nt, desc="cholesky (out of core)", enabled=show_progress,
                   unit="col")
    bar.update(state["panels_done"])
    try:
        while state["panels_done"] < nt:
            k0 = state["panels_done"]
            k1 = min(nt, k0 + _panel_tiles(store, k0, budget))
            ops = _PanelOps(store, be, k0, k1)
            factor_columns(ops, store.bounds, k0, k1,
                           what=f"K (in {store.dtype.name})")
            be.synchronize()
            for (i, c), t in ops.P.items():
                store.write("L", i, c, be.to_numpy(t))
            del ops
            state["panels_done"] = k1
            _write_manifest(store.dir, fp, state)
            for c in range(k0, k1):
                for i in range(c, nt):
                    store.remove("A", i, c)
            done_here += k1 - k0
            bar.update(k1 - k0)
            if on_panel is not None:
                on_panel(k1)
    finally:
        bar.close()
    return done_here


def _landmarks(kernel: Kernel, Xh, dtype, opts):
    """The deflation's U and record (:func:`kernelfit.solvers.deflate.nystrom_landmarks`):
    a resumed checkpoint's own (``U.npy``), or, for a checkpoint made before that file
    (rank one), the rows' mean alone, as then; else made afresh. A checkpoint of other
    rows gets a fresh U here: :func:`ooc_factor`'s fingerprint check then refuses it."""
    folder = Path(opts.ooc_dir).expanduser() if opts.ooc_dir else None
    if opts.resume and folder is not None and folder.is_dir() and np.dtype(dtype) == np.float32:
        manifest = _read_manifest(folder) or {}
        fp = manifest.get("fingerprint", {})
        try:
            r = int(fp.get("deflation_rank", 0) or 0) if isinstance(fp, dict) else -1
        except (TypeError, ValueError):
            r = -1
        if r < 0:
            raise _damaged(folder, "its manifest's fingerprint or deflation_rank is not "
                                   "what kernelfit writes")
        n = Xh.shape[0]
        path = folder / LOW_RANK_FILE
        if r and fp.get("n") == n:
            if not path.is_file():
                if r > 1:  # made again it would be another U than the tiles hold
                    raise _damaged(folder, f"{LOW_RANK_FILE}, the deflation of its tiles, "
                                           "is missing")
                return nystrom_landmarks(kernel, Xh, None, get_backend("cpu"), tiles=dtype,
                                         rank=1)
            try:
                U = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise _damaged(folder, f"{LOW_RANK_FILE} unreadable: {exc}") from None
            if (U.dtype != np.float64 or U.shape != (n, r)
                    or not np.isfinite(U).all()):
                raise _damaged(folder, f"{LOW_RANK_FILE} is not the float64 rank-{r} part "
                                       f"of {n} rows")
            return U, {"rank": r, "landmark": f"the checkpoint's ({LOW_RANK_FILE})"}
    return nystrom_landmarks(kernel, Xh, None, get_backend("cpu"), tiles=dtype)


def solve_ooc(kernel: Kernel, X, Y, opts, be: Optional[Backend] = None,
              splan=None) -> ExactSolution:
    """Out-of-core exact solve (float32 tiles + float64 refinement unless float64 asked).

    Where 'auto' took mixed precision and float64 tiles would fit on the disk, a float32
    factor that breaks down or a refinement that ends above its target and float64's own
    reach raises :class:`~.mixed.Fallback`, the float32 checkpoint removed: the caller
    solves again in float64, as in memory; ``resume`` continues a float64 checkpoint."""
    be = be if be is not None else get_backend(opts.device)
    n = X.shape[0]
    if Y.ndim == 1:
        Y = Y[:, None]
    precision = splan.precision if splan is not None else opts.route_precision()
    folder = Path(opts.ooc_dir).expanduser()
    auto = opts.precision == "auto" and precision == "mixed"
    resumed64 = auto and opts.resume and fingerprint_field(folder, "dtype") == "float64"
    if resumed64:  # the checkpoint of an earlier fallback (or a float64 solve)
        precision, auto = "float64", False
    dtype = np.float64 if precision == "float64" else np.float32
    ts = splan.tile_size if splan is not None else (opts.tile_size
                                                    or default_tile_size(n, be.device))
    # float64 tiles must fit where the float32 ones are, or there is nothing to fall back to
    room = auto and float64_fits(folder, disk_needed(DiskTiles(folder, n, ts, np.float64),
                                                     0, _panel_budget(opts.memory_budget)))
    no_room, auto = auto and not room, room
    Xh = np.ascontiguousarray(be.to_numpy(X), dtype=np.float64)
    U, deflation = (None, None) if precision == "float32" else (  # float32: K's own factor
        _landmarks(kernel, Xh, dtype, opts))  # unrefined, as in memory: nothing to deflate
    try:
        T, ck = ooc_factor(kernel, Xh, opts.ooc_dir, tile_size=ts, dtype=dtype,
                           ridge=opts.ridge, resume=opts.resume, backend=be,
                           allow_shift=precision == "mixed" and not auto,  # (as in memory)
                           show_progress=opts.show_progress, low_rank=U,
                           memory=opts.memory_budget, keep_lock=True)
    except NotPositiveDefiniteError as exc:
        # a factor that broke down (no shift taken) is of no use to any run, and its
        # fingerprint would refuse the ways out (a ridge) in this folder: removed
        discard_checkpoint(folder, hold=True)  # (ooc_factor let go of the folder)
        if not auto:
            raise
        raise Fallback(f"the float32 factorization broke down at row {exc.index} (K is too "
                       "ill-conditioned for float32)", {}) from None
    lock = ck.pop("lock")
    try:
        sol = _refine_ooc(kernel, Xh, Y, T, ck, U, deflation, opts, be, ts, precision, dtype)
        if auto and not sol.info.get("converged"):
            discard_checkpoint(folder)
            steps = sol.info.get("iterations") or 0
            because = (f"it used all {steps} step{'' if steps == 1 else 's'} max_iter "
                       "allows" if opts.max_iter and
                       steps >= opts.max_iter else "cond(K) times float32's rounding unit "
                       "is too large")
            raise Fallback(f"the refinement from the float32 factor ended at a relative "
                           f"residual of {sol.info.get('relative_residual', math.nan):.1e}, "
                           f"above its target {opts.tol:g} and above float64's own reach: "
                           f"{because}", dict(sol.timings))
        if resumed64:
            sol.info["precision_note"] = ("precision auto continued the folder's float64 "
                                          "checkpoint (a float64 solve's or a fallback's)")
        elif no_room and not sol.info.get("converged"):
            sol.info["precision_note"] = ("no float64 fallback: float64 tiles would not "
                                          "fit on this folder's disk")
        return sol
    finally:  # the tiles are read to the end: the folder is free for the next run
        release_folder(lock)


def _refine_ooc(kernel, Xh, Y, T, ck, U, deflation, opts, be, ts, precision, dtype):
    """:func:`solve_ooc`'s refinement against the factor on disk, while it holds the folder."""
    n = Xh.shape[0]
    Yh = np.asarray(be.to_numpy(Y), dtype=np.float64)
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
    if U is not None:  # the factor is of K - U U^T: M = L L^T + U U^T
        precond = Deflated(U, precond)
    out = direct_solve(matvec, precond, Yh) if precision == "float32" else refine(
        matvec, precond, Yh, tol=opts.tol, max_iter=opts.max_iter, method=opts.refinement,
        show_progress=opts.show_progress)
    extra = {"out_of_core": True, "checkpoint": ck,
             **({} if deflation is None else {"deflation": deflation})}
    if precision == "mixed" and not out["converged"]:  # auto: within float64's reach counts
        floor = float64_floor(kernel, Xb, opts.ridge, out["alpha"], Yh, be)
        extra["float64_floor"] = floor
        if opts.precision == "auto" and out["relative_residual"] <= floor:
            out["converged"], extra["note_target"] = True, FLOOR_NOTE
    timings = dict(ck.pop("timings"))
    timings["solve"] = time.perf_counter() - t0
    if U is not None:
        deflation["woodbury_c"] = precond.c
    T.free()
    return refined_solution(out, opts, be, n=n, precision=precision, storage_dtype=dtype,
                            tile_size=ts, timings=timings, shift=ck["shift"],
                            log=ck.pop("log"), extra=extra,
                            factor_rate=ck["panels_computed_this_run"] == ck["n_panels"])
