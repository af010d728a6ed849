"""Refinement to a float64 residual, the diagonal-shift retry, and the solution record.

A factorization in low precision (float32), out of core or on a cluster gives a
preconditioner M = L L^T; the float64 system K alpha = Y is then solved by

``refinement='cg'`` (default)  preconditioned conjugate gradients, one independent CG
                               recurrence per right-hand side sharing every K product;
``refinement='ir'``            classic iterative refinement alpha += M^-1 (Y - K alpha)
                               (LAPACK's dsposv scheme).

A CG pass over K multiplies several columns at once: the search directions of all
classes *and* the current iterate, so the residual of every iterate is formed from
freshly computed float64 products (residual replacement: the steps track
``Y - (K x_k + a_k K p_k)``, one rounding away from ``Y - K x_{k+1}``, never a
recurrence that drifts), and the iterate returned is certified by a direct product. An
iterative-refinement pass is the direct product of the new iterate itself, certified as
it is made; CG takes its last step that way (the closing step) where one more step is
expected to reach tol, saving the pass a CG step's own K p would take. The iteration
stops at a relative residual ``||Y - K alpha||_F / ||Y||_F <= tol``.

When a factorization breaks down (K too ill-conditioned for its precision),
:func:`retry_with_shift` rebuilds it with a diagonal shift that grows from
``1e-6 * mean(diag K)`` until it succeeds; the shifted factor is then only a
preconditioner of the *unshifted* system, and the solution info says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from ..backend import Backend
from ..errors import InputError, NotPositiveDefiniteError
from .options import REFINEMENTS

__all__ = ["ExactSolution", "refine", "refinement_info", "retry_with_shift", "refined_solution",
           "direct_solve", "unrefined_info",
           "PATIENCE", "DRIFT_STEPS", "DRIFT", "FAST_GAIN", "SHIFT_START", "SHIFT_GROWTH",
           "SHIFT_MAX_TRIES"]

#: shifts tried after a breakdown, as multiples of mean(diag K)
SHIFT_START = 1e-6
SHIFT_GROWTH = 10.0
SHIFT_MAX_TRIES = 7
#: passes over K after the last step: the direct product that certifies the iterate
#: returned (the steps track a recurrence residual; see :func:`refine`). The time model
#: counts it; where CG's closing step reaches tol it is that step's own pass, and the
#: model one pass high (full MNIST: 6 products, 7 expected)
CERTIFY_PASSES = 1
#: refinement stops after this many passes without a new best residual (CG minimizes the
#: K-norm of the error, so with a weak preconditioner, e.g. a shifted factor, its residual
#: may wander for several steps before falling again)
PATIENCE = {"cg": 10, "ir": 3}
#: the cheap application of the preconditioner (``fast_precond``: the triangular solves in
#: float32) is used while every pass cuts the residual at least this many times; the first
#: pass that does not switches to the float64 application for good
FAST_GAIN = 10.0
#: ... or as soon as the residual has risen this many passes in a row to at least DRIFT
#: times the best: past its floor (the float64 rounding of the products) CG's residual
#: drifts steadily up, and each further pass costs a K product for nothing
DRIFT_STEPS = 3
DRIFT = 3.0
RECOMPUTED = ("float64 K products recomputed from X tile by tile (K never stored in "
              "float64), residual replaced each pass")


@dataclass
class ExactSolution:
    """The coefficients of an exact solve and what it took."""

    alpha: object                      # (n, m) array on the solve's backend
    solver: str
    dtype: str
    device: str
    timings: Dict[str, float] = field(default_factory=dict)
    memory_plan: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    K_alpha: object = None             # K alpha in float64 when the solver formed it

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("alpha")
        d.pop("K_alpha")
        return d


def _rel(R, ynorm: float) -> float:
    return float(np.linalg.norm(R) / ynorm) if ynorm > 0 else float(np.linalg.norm(R))


def closing_step_enough(history: List[float], tol: float) -> bool:
    """Whether one more step is expected to reach ``tol``: the residual is within the
    smallest gain any step so far has made (a step that did not gain makes it False)."""
    gains = [a / b if b > 0 else math.inf for a, b in zip(history, history[1:])]
    return bool(gains) and history[-1] <= tol * min(gains)


def refine(matvec: Callable, precond: Callable, Y, *, tol: float = 1e-10,
           max_iter: int = 30, method: str = "cg", x0=None, show_progress=None,
           log: Optional[list] = None, give_up_slow: bool = False,
           fast_precond: Optional[Callable] = None,
           give_up_after: Optional[float] = None, Kx0=None, _go_on: bool = True) -> dict:
    """Solve K X = Y to ``||Y - K X||_F <= tol ||Y||_F`` with K products from ``matvec``.

    ``matvec(V)`` returns K V in float64 (V is (n, c)); ``precond(R)`` applies M^-1 (the
    float32 or float64 Cholesky solve) as a fixed operator. ``fast_precond``: a cheaper,
    inexact application of the same M^-1 (a float32 factor's triangular solves in float32,
    half the bytes and no upcast), used first: each application is then perturbed by
    about cond(K) times the float32 rounding unit, the size of the factor's own error, so
    while that is small the passes gain as much as with ``precond`` (CG then takes the
    flexible, Polak-Ribiere form of beta, which tolerates a preconditioner that varies).
    The first pass that cuts the residual less than ``FAST_GAIN`` times switches to
    ``precond`` for good (CG restarts from the current iterate): the float64 products and
    the float64 residual are the same either way, so the answer is certified alike.
    Returns a dict with ``alpha``, ``K_alpha``, ``history`` (relative residual after each
    pass, as the steps track it: by recurrence after the first), ``iterations`` (updates of
    alpha after the initial solve), ``matvecs`` (passes over K), ``converged``,
    ``fast_passes`` (passes whose step came from ``fast_precond``), ``relative_residual``
    (of the iterate returned, from a direct product with K: where its K x came from the
    recurrence one more pass certifies it, ``certify_seconds``) and ``tracked_residual``
    (the steps' figure for it). CG's closing step (see :func:`closing_step_enough`):
    alpha += M^-1 R with the direct product of the new iterate, so a closing step that
    reaches tol needs no pass to certify it; one that falls short restarts CG from its
    certified iterate (once a solve). ``x0`` with ``Kx0``: start from x0 whose direct product is
    Kx0 (no pass spent on it).
    ``give_up_slow``: stop as soon as the last three steps' rate of decrease cannot reach
    ``tol`` within ``max_iter`` steps (the caller then has a better way), or, with
    ``give_up_after`` (seconds: what that better way is expected to cost), as soon as the
    passes still needed at that rate would take longer, at the seconds a pass has taken so
    far (its K product and preconditioner solve); ``gave_up`` then says why (else None).
    """
    if method not in REFINEMENTS:
        raise InputError(f"refinement must be one of {', '.join(REFINEMENTS)}, got {method!r}")
    Y = np.asarray(Y, dtype=np.float64)
    m = Y.shape[1]
    ynorm = float(np.linalg.norm(Y))
    history: List[float] = []
    times: List[float] = []
    t0 = time.perf_counter()
    fast = fast_precond is not None
    fast_passes = 0
    apply = fast_precond if fast else precond
    x = apply(Y) if x0 is None else np.array(x0, dtype=np.float64)
    if Kx0 is None:
        KX = matvec(x)
        matvecs = 1
    else:  # the caller's direct product of x0 (a certification: see the end)
        KX, matvecs = np.asarray(Kx0, dtype=np.float64), 0
    R = Y - KX
    history.append(_rel(R, ynorm))
    times.append(time.perf_counter() - t0)
    iterations = 0
    converged = history[-1] <= tol
    stalled = rising = 0
    best = (history[-1], x, KX)
    best_direct = True  # the best iterate's K x is a direct product (not a recurrence)
    gave_up = None
    fresh = True  # KX is a direct product of x
    R_prev = R
    closing = closing_tried = False  # CG's last step as an iterative-refinement step
    if not converged and method == "cg":
        Z = apply(R)
        P = Z.copy()
        rz = np.einsum("ij,ij->j", R, Z)
    while not converged and iterations < max_iter:
        t1 = time.perf_counter()
        if method == "ir" or closing:
            # alpha += M^-1 R, and the pass is a direct product of the new iterate: its
            # residual is certified in the same pass (no recurrence, no pass to certify it)
            x = x + (Z if closing else apply(R))
            KX = matvec(x)
            matvecs += 1
            fresh = True
            R = Y - KX
        else:
            if fresh:
                KP = matvec(P)
            else:  # refresh K x in the same pass (nearly free: the tiles are the cost)
                both = matvec(np.concatenate([P, x], axis=1))
                KP, KX = both[:, :m], both[:, m:]
            matvecs += 1
            pKp = np.einsum("ij,ij->j", P, KP)
            a = np.where(pKp > 0, rz / np.where(pKp > 0, pKp, 1.0), 0.0)
            x = x + P * a
            KX = KX + KP * a
            fresh = False
            R = Y - KX
        iterations += 1
        fast_passes += fast
        history.append(_rel(R, ynorm))
        times.append(time.perf_counter() - t1)
        if log is not None:
            step = "closing ir" if closing else method
            log.append(f"{step} step {iterations}: relative residual {history[-1]:.3e}"
                       + (" (float32 preconditioner)" if fast else ""))
        restart = False
        if fast and history[-1] > history[-2] / FAST_GAIN:
            fast, apply, restart = False, precond, True
            if log is not None:
                log.append(f"step {iterations} gained less than {FAST_GAIN:g}x: the "
                           "preconditioner is applied in float64 from here")
        rising = rising + 1 if history[-1] > history[-2] else 0
        if history[-1] < best[0]:
            best, best_direct = (history[-1], x, KX), fresh
            stalled = 0
        else:
            stalled += 1
        if rising >= DRIFT_STEPS and history[-1] >= DRIFT * best[0]:
            stalled = PATIENCE[method]
        converged = history[-1] <= tol
        if give_up_slow and not converged and iterations >= 3:
            gave_up = _too_slow(history, (time.perf_counter() - t0) / len(history), tol,
                                max_iter - iterations, give_up_after)
            if gave_up:
                stalled = PATIENCE[method]
                break
        if converged or stalled >= PATIENCE[method]:
            break
        if method == "cg":
            if closing:  # the closing step fell short: CG again, from its certified
                closing, restart = False, True  # iterate or, had it lost ground, the best
                if best[1] is not x:
                    _, x, KX = best
                    fresh, R = best_direct, Y - KX
            Z = apply(R)
            if not closing_tried and closing_step_enough(history, tol):
                # one more step gains enough: take it as an iterative-refinement step
                # (x + Z), whose pass certifies it; a CG step needs a pass for its K p
                # and then one more for the direct product of the iterate it returns
                closing = closing_tried = True
            if not closing:
                rz_new = np.einsum("ij,ij->j", R, Z)
                if restart:
                    P = Z
                else:
                    # flexible (Polak-Ribiere) beta while the preconditioner varies
                    num = rz_new - np.einsum("ij,ij->j", R_prev, Z) if fast else rz_new
                    beta = np.where(rz > 0, num / np.where(rz > 0, rz, 1.0), 0.0)
                    P = Z + P * beta
                rz = rz_new
        R_prev = R
    res, x, KX = best
    tracked = res
    if not best_direct:
        # the residual the steps track is updated by recurrence (K x + a K p): it drifts
        # from the true one by the rounding of x itself, about cond(K) times the float64
        # unit, and keeps falling below that floor (a float64 preconditioner: 1e-10 true
        # against 2e-20 tracked). The iterate returned is certified by a direct product.
        t1 = time.perf_counter()
        KX = matvec(x)
        matvecs += 1
        res = _rel(Y - KX, ynorm)
        if log is not None:
            log.append(f"certified: relative residual {res:.3e} from a direct product "
                       f"(the steps tracked {tracked:.3e})")
        certify_s = time.perf_counter() - t1
        if (_go_on and res > tol >= tracked and iterations < max_iter and not gave_up
                and res <= 0.1 * history[0]):
            # only the recurrence had reached tol, and the steps did cut the true residual
            # (at the floor they do not: a float64 preconditioner's first residual is
            # there already): go on, once, from the certified iterate (its product is the
            # new start's)
            more = refine(matvec, precond, Y, tol=tol, max_iter=max_iter - iterations,
                          method=method, x0=x, Kx0=KX, log=log, give_up_slow=give_up_slow,
                          give_up_after=give_up_after, _go_on=False)
            more["history"] = history + more["history"][1:]
            more["step_seconds"] = times + more["step_seconds"][1:]
            more["iterations"] += iterations
            more["matvecs"] += matvecs
            more["certify_seconds"] += certify_s
            more["fast_passes"] += fast_passes
            more["fast_precond"] = fast_precond is not None
            if more["relative_residual"] > res:  # past the floor: the earlier iterate stays
                more.update(alpha=x, K_alpha=KX, relative_residual=res, tracked_residual=tracked,
                            converged=False)
            return more
    else:
        certify_s = 0.0
    return {"alpha": x, "K_alpha": KX, "history": history, "step_seconds": times,
            "certify_seconds": certify_s,
            "iterations": iterations, "matvecs": matvecs, "converged": bool(res <= tol),
            "fast_passes": fast_passes, "fast_precond": fast_precond is not None,
            "relative_residual": res, "tracked_residual": tracked,
            "stalled": stalled >= PATIENCE[method] and res > tol, "gave_up": gave_up}


def direct_solve(matvec: Callable, solve: Callable, Y) -> dict:
    """A float32 factor's own solution, unrefined: ``alpha = solve(Y)`` and one direct
    float64 product with K (``matvec``) that certifies its residual (the residual a plain
    float32 solve in memory reports). The keys :func:`refined_solution` reads."""
    Y = np.asarray(Y, dtype=np.float64)
    t0 = time.perf_counter()
    x = np.asarray(solve(Y), dtype=np.float64)
    KX = matvec(x)
    return {"alpha": x, "K_alpha": KX, "relative_residual": _rel(Y - KX, float(np.linalg.norm(Y))),
            "seconds": time.perf_counter() - t0}


def unrefined_info(out: dict, *, shift: float = 0.0, attempts=None, log=None) -> dict:
    """The JSON-ready part of :func:`direct_solve`'s result (precision float32): its
    residual and how it was computed, and no refinement field (none ran)."""
    info = {"relative_residual": float(out["relative_residual"]),
            "factor_attempts": attempts or [],
            "residual_method": ("one float64 product of the solution with K, recomputed "
                                "from X tile by tile (K never stored in float64)"),
            "note_precision": "float32: no refinement (the residual is reported)"}
    if shift > 0:  # a plain float32 solve in memory would have stopped at the breakdown
        info["shift"] = float(shift)
        info["note"] = (f"float32 Cholesky broke down; K + {shift:.3e} I was factored and its "
                        "solution is returned unrefined: the residual is against K")
    if log:
        info["log"] = list(log)
    return info


def _too_slow(history, pass_s, tol, steps_left, seconds_left) -> Optional[str]:
    """Why the refinement should give up (see :func:`refine`'s ``give_up_slow``), or None:
    at the last three passes' rate of decrease, reaching ``tol`` takes more than
    ``steps_left`` passes, or more than ``seconds_left`` seconds (None: no limit) at
    ``pass_s`` seconds a pass."""
    rate = (history[-1] / max(history[-4], 1e-300)) ** (1.0 / 3.0)
    if rate >= 1.0:
        return f"the residual did not fall over the last three passes ({history[-1]:.2e})"
    needed = math.log(tol / history[-1]) / math.log(rate)
    if needed > steps_left:
        return (f"at {rate:.2g} per pass it would need {needed:.0f} more passes, "
                f"more than the {steps_left} allowed")
    if seconds_left is not None and needed * pass_s > seconds_left:
        return (f"at {rate:.2g} per pass its {needed:.0f} more passes of {pass_s:.3g} s "
                f"would take longer than the {seconds_left:.3g} s the other way is "
                "expected to")
    return None


def refinement_info(out: dict, opts, *, shift: float = 0.0, attempts=None, log=None,
                    residual_method: str = RECOMPUTED) -> dict:
    """The JSON-ready part of a refinement result."""
    info = {
        "refinement": opts.refinement,
        "tol": opts.tol,
        "max_iter": opts.max_iter,
        "iterations": out["iterations"],
        "matvecs": out["matvecs"],
        "refinement_history": [float(h) for h in out["history"]],
        "refinement_step_seconds": [float(s) for s in out["step_seconds"]],
        "relative_residual": float(out["relative_residual"]),
        # the steps' own (recurrence) residual of the iterate returned; relative_residual
        # is its direct float64 product with K
        "tracked_residual": float(out.get("tracked_residual", out["relative_residual"])),
        "certify_seconds": float(out.get("certify_seconds", 0.0)),
        "converged": out["converged"],
        "shift": float(shift),
        "preconditioner_only": bool(shift > 0),
        "factor_attempts": attempts or [],
        "residual_method": residual_method,
    }
    if out.get("fast_precond"):
        info["preconditioner_application"] = {
            "float32_passes": int(out.get("fast_passes", 0)),
            "float64_passes": int(out["iterations"] - out.get("fast_passes", 0)),
            "rule": (f"triangular solves in float32 while each pass cuts the residual at "
                     f"least {FAST_GAIN:g}x, then in float64 (K products and residuals are "
                     "float64 throughout)")}
    if shift > 0:
        info["note"] = (f"float32 Cholesky broke down; K + {shift:.3e} I was factored and used "
                        f"only as a preconditioner of the unshifted system")
    if out.get("stalled"):
        info["note_stalled"] = "residual stopped decreasing; the best iterate was kept"
    if log:
        info["log"] = list(log)
    return info


def breakdown_facts(kernel, X, ridge: float, n_outputs: int = 1) -> dict:
    """The facts a failed factorization's error carries about the problem (see
    :class:`~kernelfit.errors.NotPositiveDefiniteError`)."""
    return {"n": int(X.shape[0]), "d": int(X.shape[1]), "ridge": float(ridge),
            "kernel": kernel.name, "n_outputs": int(n_outputs)}


def retry_with_shift(attempt: Callable[[float], object], mean_diagonal: Callable[[], float],
                     *, allow_shift: bool = True, dtype_name: str = "float32",
                     start: float = 0.0, log: Optional[list] = None,
                     facts: Optional[dict] = None):
    """Run ``attempt(shift)`` until it factors; after a breakdown grow the diagonal shift.

    Returns ``(result, shift, attempts)``; ``attempts`` lists each try (shift, ok, pivot).
    Without ``allow_shift`` the first breakdown is raised as is. ``facts`` (``n``, ``d``,
    ``ridge``, ``kernel``, ...) go on the error raised when every shift fails.
    """
    shift = float(start)
    attempts: list = []
    mean = None
    for _ in range(SHIFT_MAX_TRIES + 1):
        try:
            result = attempt(shift)
        except NotPositiveDefiniteError as exc:
            attempts.append({"shift": shift, "ok": False, "pivot": exc.index})
            if not allow_shift:  # (with the precision that failed and the caller's facts:
                # the ridge offered is sized for it, 3e-14 for a float32 factor otherwise)
                for key, value in dict(facts or {}, dtype=dtype_name).items():
                    exc.facts.setdefault(key, value)
                raise
            if mean is None:
                mean = float(mean_diagonal())
                if not (mean > 0 and math.isfinite(mean)):
                    raise
            shift = SHIFT_START * mean if shift == 0.0 else shift * SHIFT_GROWTH
            if log is not None:
                log.append(f"{dtype_name} Cholesky broke down at row {exc.index}; "
                           f"retrying with diagonal shift {shift:.3e}")
            continue
        attempts.append({"shift": shift, "ok": True})
        return result, shift, attempts
    raise NotPositiveDefiniteError(
        f"the {dtype_name} factorization failed even with a diagonal shift of "
        f"{shift:.3e} ({SHIFT_MAX_TRIES} tries): the kernel matrix is probably not positive "
        "definite (duplicate points, a low-rank kernel)", index=-1, causes=["shift_failed"],
        dtype=dtype_name, mean_diagonal=float(mean or 0.0), **(facts or {}))


def refined_solution(out: dict, opts, be: Backend, *, n: int, precision: str,
                     storage_dtype, tile_size: int, timings: dict, shift: float = 0.0,
                     attempts=None, log=None, memory_plan: Optional[dict] = None,
                     residual_method: str = RECOMPUTED,
                     extra: Optional[dict] = None, factor_rate: bool = True) -> ExactSolution:
    """The solution record of a refined solve (mixed precision, out of core, Dask); for
    ``precision='float32'`` that of :func:`direct_solve` (``out``), without refinement.
    ``factor_rate=False``: the factorization was not all done in this run (a resumed
    checkpoint), so its time gives no rate."""
    if precision == "float32":  # out of core or on Dask: no refinement ran
        info = unrefined_info(out, shift=shift, attempts=attempts, log=log)
    else:
        info = refinement_info(out, opts, shift=shift, attempts=attempts, log=log,
                               residual_method=residual_method)
    info.update({"tile_size": tile_size, "ridge": opts.ridge, "precision": precision,
                 "storage_dtype": np.dtype(storage_dtype).name})
    if "factor" in timings and factor_rate:
        info["factor_flops"] = n ** 3 / 3.0
        info["factor_gflops_per_s"] = n ** 3 / 3.0 / max(timings["factor"], 1e-12) / 1e9
    info.update(extra or {})
    xp = be.xp
    # the refinement's products are of K + ridge I (the system it solves); K_alpha is K's
    # alone, as the float64 path gives it: the residual against K, the RKHS norm and the
    # training error are then the same whatever the precision (a ridge solve's residual
    # against K was reported as 1e-14, "exact", in mixed precision, 0.06 in float64)
    KA = np.asarray(out["K_alpha"], dtype=np.float64)
    if opts.ridge:
        KA = KA - opts.ridge * np.asarray(out["alpha"], dtype=np.float64)
    return ExactSolution(alpha=xp.asarray(out["alpha"]), solver="cholesky", dtype=precision,
                         device=be.device, timings=timings, memory_plan=memory_plan or {},
                         info=info, K_alpha=xp.asarray(KA))
