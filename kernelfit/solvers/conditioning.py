"""Before a float32 factorization: how fast will its refinement converge, or will it break
down? A float64 Cholesky of K on a seeded sample of rows, its smallest pivot extrapolated
to all n rows, and the refinement rate that predicts.

The facts behind the model (MNIST, Gaussian kernel, float64 Cholesky in the data's random
row order; ``benchmarks/bench_conditioning_probe.py``, results in
``benchmarks/results/conditioning_probe_zen4_avx512.json``):

- the pivots ``p_j = L_jj^2 / K_jj`` fall with j, and the smallest of the first j falls
  like a power of j: pixels (h = 5) 4.1e-3 at j = 10,000, 1.6e-3 at 20,000 and 4.7e-4 at
  40,000; Gabor features (0.49 = the median distance) 2.5e-5, 8.7e-6 and 2.8e-6;
- mixed precision's refinement cuts the residual by about ``rho = C u32 / p_min(n)`` a
  pass (``u32`` float32's rounding unit, ``C`` about 60): pixels 1e-3 at n = 10,000,
  2-5e-3 at 20,000 and 0.015 at 60,000 (4, 4-5 and 6 passes to 1e-12); Gabor 0.12-0.15
  at 10,000 (14 passes); at 20,000 (rho ~ 0.4) the float32 factorization of the Gabor
  kernel broke down, or, where it did not, 18 passes left the residual at 1e-5.

The first m pivots of a random row order are the pivots of a random sample of m rows, so
the running minimum over a seeded sample, fitted as a power of j from j = m/8 to m,
extrapolates to n. On both kernels at n = 10,000-40,000 (samples of 639-4,096 rows, four
seeds) that fit came out 0.8 to 4.3 times the true smallest pivot, from the first quarter
of the sample 0.6 to 15 times (the running minimum steepens with j): the rate is taken
with :data:`RATE_CONSTANT` = 100 rather than 60, and a quarter sample's with a margin.
Mixed precision now factors K less its Nystrom part on 32 landmarks
(:mod:`kernelfit.solvers.deflate`), whose refinement converges faster than that rate:
those solves count their passes at :data:`DEFLATED_RATE_CONSTANT` = 25
(:func:`rate_constant`), while the risk gates below (:data:`RISKY_RATE`,
:data:`BREAKDOWN_RATE`) stay on the rate with :data:`RATE_CONSTANT`, K's own factor's, for
which they were measured.

Where ``precision='auto'`` chose mixed precision by time
(:func:`kernelfit.solvers.plan.plan_solve`, before the features exist) and the probe
predicts passes that make mixed precision slower than a float64 factorization by the
plan's own time model, the solve factors in float64 instead, without trying mixed
precision. From a predicted rate of :data:`RISKY_RATE` the passes are costed as the
refinement then runs them (its preconditioner solves in float64) at :data:`RATE_ERROR`
times the rate, the far end of the prediction's measured error; from
:data:`BREAKDOWN_RATE`, where the true rate may reach the float32 factorization's
breakdown, or where those passes exceed the refinement's steps, float64 without trying.
(The refit Gabor map, 2^-11 grid, median bandwidth, at n = 60,000, its factor deflated by
the mean alone: predicted 0.098, measured about 0.3 a pass, no breakdown.) Where auto
chose float64 by time only because it hedges on the pass count (its worst case,
:data:`~kernelfit.solvers.plan.WORST_PASSES`, weighed against its best), the same
prediction picks mixed precision when it is expected faster (MNIST pixels at n = 10,000
on 2 Zen 3 cores: the plan expected 4.7 s for float64, 3.3-7.3 s mixed, and kept float64;
mixed took 3 s, float64 4.8 s). The sample costs at most :data:`PROBE_SHARE` of the
float64 factorization's flops (at most :data:`PROBE_MAX_ROWS` rows); smaller solves are not
probed, and a refinement the probe let through still gives up and falls back when it
stalls (:mod:`kernelfit.solvers.mixed`).
"""

from __future__ import annotations

import math
import time
from typing import Optional

import numpy as np
import scipy.linalg

from ..backend import Backend
from ..backend._host import BlasOneThread
from ..kernels import Kernel
from . import deflate
from .options import DEFAULT_MAX_ITER
from .refine import CERTIFY_PASSES, FAST_GAIN

__all__ = ["probe_rows", "sample_pivots", "extrapolate_min_pivot", "predicted_rate",
           "predicted_passes", "conditioning_probe", "PROBE_SHARE", "PROBE_MIN_ROWS",
           "PROBE_MAX_ROWS", "ONE_THREAD_ROWS", "PROBE_SEED", "RATE_CONSTANT", "RISKY_RATE",
           "DEFLATED_RATE_CONSTANT", "rate_constant",
           "RATE_ERROR", "BREAKDOWN_RATE",
           "FIRST_MIN_ROWS", "FIRST_MARGIN"]

U32 = float(np.finfo(np.float32).eps) / 2.0
#: the sample's flops (its Gram and float64 Cholesky) at most this share of the float64
#: factorization's n^3/3
PROBE_SHARE = 0.01
#: fewer rows than this extrapolate too far to decide: no probe (MNIST, 635-1,050 rows, six
#: seeds: the prediction 0.5 to 6.4 times the truth at n = 6,000-14,000)
PROBE_MIN_ROWS = 512
#: the most rows sampled (a float64 m x m matrix, 134 MB at 4,096)
PROBE_MAX_ROWS = 4096
#: samples of at most this many rows run on one BLAS thread (CPU): the sample's kernel
#: (NumPy's BLAS) and its Cholesky (SciPy's) come from two libraries, whose threads keep
#: spinning for a while after each call, so with two threads each slowed the other
#: (MNIST, 1,024 rows on 2 Zen 3 cores: 0.03 s on one thread, 0.03-0.13 s on two; 4,096
#: rows: 0.93 s on one, 0.64-0.72 s on two)
ONE_THREAD_ROWS = 2048
PROBE_SEED = 0
#: a first sample of a quarter of the rows (at least this many) decides alone where its
#: predicted rate, taken FIRST_MARGIN times worse, still favours mixed precision
FIRST_MIN_ROWS = 256
FIRST_MARGIN = 10.0
#: rate = RATE_CONSTANT * u32 / smallest pivot (about 60 measured; 100 covers the
#: extrapolation's usual optimism), for a float32 factor of K itself (or of K less its
#: mean alone: rank-one deflation, small n)
RATE_CONSTANT = 100.0
#: the same for the factor mixed precision makes of K less its Nystrom part on
#: :data:`~kernelfit.solvers.deflate.RANK` landmarks (:mod:`kernelfit.solvers.deflate`).
#: MNIST on 2 Zen 5 cores (``benchmarks/results/auto_choice_zen5_s29_after.json``: pixels
#: at h = 5 and 10, the Laplacian kernel, random Fourier and Gabor features, n = 10,000 and
#: 20,000): the first pass's residual 0.002-0.1 times RATE_CONSTANT's rate, later passes
#: to a residual of 1e-11 at most 0.56 times it (the Laplacian kernel; below about 1e-11
#: the passes stall at the float32 application's and float64's floors), and the pass counts this
#: constant predicts at the sample's own rate within 2 of the measured 3-7 (RATE_CONSTANT's:
#: up to 4 too many); Gabor features at n = 60,000: passes at most 0.3 times the predicted
#: 0.098. Not every pass is that fast: MNIST pixels at n = 60,000
#: (``mnist_full_deflation_rank_zen5.json``) passed 1.6e-3 to 6.9e-3 after a first pass to
#: 2.9e-5, 0.8-3.4 times the rate 100 predicts (3-4 passes all told): so the risk gates stay
#: on RATE_CONSTANT's rate. With 100 the probe costed Gabor features at n = 20,000 as 17
#: float64 passes and factored in float64 in one run (19.9 s; mixed precision to 1e-12, in
#: the other run's auto: 14.8 s against 19.2 s; ``auto_choice_zen5_s29_before*.json``).
#: It assumes the landmarks planned (:func:`rate_constant`); fewer (left out at a row, or
#: dependent) make the refinement slower than predicted, which then gives up and falls
#: back where that would not pay
DEFLATED_RATE_CONSTANT = 25.0
#: from a predicted rate this poor (half of 1 / FAST_GAIN, the rate from which the
#: refinement applies its factor in float64) the passes are costed as float64 ones
#: (``pass64_s`` of :func:`kernelfit.solvers.plan.expected_times`) at RATE_ERROR times the
#: rate, no more than DEFAULT_MAX_ITER of them (Gabor features at n = 10,000, predicted
#: 0.098: 14 passes of 0.26 s against the model's float32 0.16 s, 12.6 s in all against 9.3
#: s for float64; at n = 60,000 with every tile kept, predicted 0.098 and 0.3 measured: 17
#: passes of 4.1 s to 1e-10, 282 s in all against 425 s for float64, 2 Zen 5 cores)
RISKY_RATE = 0.5 / FAST_GAIN
#: how much worse than predicted a rate may come out: the extrapolated pivot was up to 4.3
#: times the true one, of which RATE_CONSTANT (100 against about 60 measured) covers 1.7
#: (the Gabor kernel at n = 60,000 came out about 3 times its predicted 0.098, and still
#: converged in 17 passes)
RATE_ERROR = 4.3 * 60.0 / RATE_CONSTANT
#: the float32 factorization broke down near a rate of 0.4 (the unrounded Gabor kernel at
#: n = 20,000): a predicted rate that may be that poor (0.4 / RATE_ERROR) rules mixed
#: precision out without trying it
BREAKDOWN_RATE = 0.4 / RATE_ERROR


def probe_rows(n: int, d: int) -> int:
    """The rows to sample for a solve of n rows in d columns: the most (up to
    :data:`PROBE_MAX_ROWS`) whose Gram (2 m^2 d flop) and Cholesky (m^3/3) cost at most
    :data:`PROBE_SHARE` of n^3/3; 0 where that is fewer than :data:`PROBE_MIN_ROWS`."""
    budget = PROBE_SHARE * n ** 3 / 3.0
    lo, hi = 0, min(PROBE_MAX_ROWS, n // 2)
    while lo < hi:  # the cost is increasing in m
        mid = (lo + hi + 1) // 2
        if mid ** 3 / 3.0 + 2.0 * mid * mid * max(d, 1) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo if lo >= PROBE_MIN_ROWS else 0


def sample_pivots(kernel: Kernel, X, rows: np.ndarray, be: Backend) -> Optional[np.ndarray]:
    """The pivots ``L_jj^2 / K_jj`` of a float64 Cholesky of K on the rows ``rows`` of
    ``X``, in that order; None where K on those rows is not positive definite in float64."""
    Xs = be.xp.asarray(X[rows] if isinstance(X, np.ndarray) else X[be.xp.asarray(rows)])
    K = np.asarray(be.to_numpy(kernel(Xs)), dtype=np.float64)
    diag = np.diag(K).copy()
    if not np.all(diag > 0):
        return None
    try:  # K is symmetric: its transpose is the Fortran-ordered matrix LAPACK factors
        L = scipy.linalg.cholesky(K.T, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    piv = np.diag(L) ** 2 / diag
    return piv if np.all(np.isfinite(piv)) else None


def extrapolate_min_pivot(pivots: np.ndarray, n: int) -> dict:
    """The smallest pivot expected among n rows, from the running minimum of ``pivots``
    (a random order) fitted as a power of j at j = m/8, m/4, m/2 and m."""
    m = len(pivots)
    running = np.minimum.accumulate(np.asarray(pivots, dtype=np.float64))
    js = np.array([max(1, m // 8), max(1, m // 4), max(1, m // 2), m])
    y = np.log(np.maximum(running[js - 1], np.finfo(np.float64).tiny))
    slope, _ = np.polyfit(np.log(js), y, 1)
    slope = min(float(slope), 0.0)  # a running minimum never grows
    at_n = float(np.exp(y[-1] + slope * (math.log(n) - math.log(m))))
    return {"sample_min_pivot": float(running[-1]), "slope": slope,
            "min_pivot_predicted": min(at_n, float(running[-1]))}


def rate_constant(kernel: Kernel, n: int) -> float:
    """The rate's constant for a mixed-precision solve of ``n`` rows with ``kernel``:
    :data:`DEFLATED_RATE_CONSTANT` where its float32 factor is of K less a full-rank
    Nystrom part (:data:`~kernelfit.solvers.deflate.RANK` landmarks), else
    :data:`RATE_CONSTANT`."""
    deflated = (deflate.ENABLED and kernel.name in deflate.LANDMARK_KERNELS
                and deflate.planned_rank(n) >= deflate.RANK)
    return DEFLATED_RATE_CONSTANT if deflated else RATE_CONSTANT


def predicted_rate(min_pivot: float, constant: float = RATE_CONSTANT) -> float:
    """The residual's reduction a pass, ``constant * u32 / min_pivot`` (at most 1;
    ``constant``: :func:`rate_constant`)."""
    return 1.0 if min_pivot <= 0 else min(1.0, constant * U32 / min_pivot)


def predicted_passes(rate: float, tol: float) -> Optional[int]:
    """Passes to bring the relative residual from 1 to ``tol`` at ``rate`` a pass (None
    when the rate is 1: never)."""
    if rate >= 1.0:
        return None
    return max(1, math.ceil(math.log(tol) / math.log(max(rate, 1e-300))))


def _expect(rate: float, tol: float, once: float, pass_s: float) -> dict:
    passes = predicted_passes(rate, tol)
    return {"rate_predicted": rate, "passes_predicted": passes,
            "mixed_s_predicted": None if passes is None
            else once + (passes + CERTIFY_PASSES) * pass_s}


def conditioning_probe(kernel: Kernel, X, be: Backend, times: dict, tol: float, *,
                       planned: str = "mixed", max_iter: Optional[int] = None) -> dict:
    """The probe's record for a solve of ``X`` (kernel input units, on ``be``) that
    ``precision='auto'`` planned by time in ``planned`` precision ('mixed', or 'float64'
    where mixed precision's fewest passes would beat it): ``verdict`` ('mixed' or
    'float64'; ``planned`` where the solve is too small to probe), ``why`` (one line) and
    the facts. ``times``: the plan's expected times
    (:func:`kernelfit.solvers.plan.expected_times`); ``tol``: the refinement's target;
    ``max_iter``: its steps (None: :data:`DEFAULT_MAX_ITER`). The record's
    ``passes_predicted`` and ``mixed_s_predicted`` are those the verdict was weighed on
    (the float64-costed ones, ``pessimistic``, where they decided), ``rate_predicted`` the
    sample's own.

    A first sample of a quarter of the rows (a sixteenth of the cost) decides alone where
    its rate, taken :data:`FIRST_MARGIN` times worse, still favours mixed precision; the
    full sample (the same rows and more, in the same order) decides otherwise."""
    n, d = X.shape
    m = probe_rows(n, d)
    most = DEFAULT_MAX_ITER if max_iter is None else int(max_iter)
    constant = rate_constant(kernel, n)
    rec = {"rows": m, "seed": PROBE_SEED, "rate_constant": constant,
           "risky_rate": RISKY_RATE, "rate_error": RATE_ERROR,
           "breakdown_rate": BREAKDOWN_RATE, "max_iter": most, "samples": []}
    if not m:
        rec.update(verdict=planned, why=f"not probed: n = {n:,} too small for a sample of "
                                        f"{PROBE_MIN_ROWS:,} rows to cost under "
                                        f"{PROBE_SHARE:.0%} of the factorization")
        return rec
    rows = np.random.default_rng(PROBE_SEED).choice(n, size=m, replace=False)
    once = times["once_s"]
    sizes = [m // 4, m] if m // 4 >= FIRST_MIN_ROWS else [m]
    for size in sizes:
        decided = None  # this sample's figures, where it weighs passes
        margin = FIRST_MARGIN if size < m else 1.0
        t0 = time.perf_counter()
        with BlasOneThread(be.device == "cpu" and size <= ONE_THREAD_ROWS):
            piv = sample_pivots(kernel, X, rows[:size], be)
        sample = {"rows": size, "margin": margin, "seconds": time.perf_counter() - t0}
        rec["samples"].append(sample)
        if piv is None:
            rec.update(verdict="float64", why=(
                f"K on {size:,} sampled rows is not positive definite in float64, so not in "
                "float32"))
            break
        sample.update(extrapolate_min_pivot(piv, n))
        raw = predicted_rate(sample["min_pivot_predicted"], constant)
        # the risk gates (RISKY_RATE, BREAKDOWN_RATE) stay on the rate of K's own factor,
        # for which they were measured: a deflated factor's smaller rate counts passes only
        gate_raw = predicted_rate(sample["min_pivot_predicted"], RATE_CONSTANT)
        sample.update(_expect(raw, tol, once, times["pass_s"]))
        if gate_raw != raw:
            sample["gate_rate"] = gate_raw
        rate = min(1.0, margin * raw)  # what decides: the rate taken margin times worse
        gate = min(1.0, margin * gate_raw)
        decide = sample
        if margin != 1.0:
            decide = sample["with_margin"] = _expect(rate, tol, once, times["pass_s"])
        passes, mixed_s = decide["passes_predicted"], decide["mixed_s_predicted"]
        facts = (f"a float64 Cholesky of K on {size:,} sampled rows predicts a smallest "
                 f"pivot of {sample['min_pivot_predicted']:.2g} of the diagonal at n = {n:,}, "
                 f"a refinement rate of {raw:.2g} a pass"
                 + (f" ({rate:.2g} with a {margin:g}x margin)" if margin != 1.0 else "")
                 + (f" (K's own factor: {gate:.2g}, which the risk gates take)"
                    if gate_raw != raw else ""))
        slow = None
        if RISKY_RATE <= gate < BREAKDOWN_RATE and times.get("pass64_s"):
            # passes in float64, at the far end of the prediction's error, within the
            # refinement's steps (beyond them it falls back: no gain)
            slow = _expect(min(1.0, RATE_ERROR * rate), tol, once, times["pass64_s"])
            decide["pessimistic"] = slow
            if slow["passes_predicted"] is None or slow["passes_predicted"] > most:
                slow = None
        if gate >= RISKY_RATE and slow is None:  # passes and mixed_s may be None (rate 1)
            if size == m:
                rec.update(verdict="float64", why=(
                    f"{facts}: K is too ill-conditioned for a float32 factorization to pay"))
            continue
        if slow is not None:
            passes, mixed_s = slow["passes_predicted"], slow["mixed_s_predicted"]
        decided = {"passes_predicted": passes, "mixed_s_predicted": mixed_s}
        versus = (f"{passes} passes"
                  + (f" (at {RATE_ERROR:.2g}x that rate, in float64)" if slow else "")
                  + f": {mixed_s:.3g} s mixed against {times['float64_s']:.3g} s float64")
        if mixed_s < times["float64_s"]:
            rec.update(verdict="mixed", why=f"{facts}, {versus}")
            break
        if size == m:
            rec.update(verdict="float64", why=f"{facts}, {versus}")
    rec["seconds"] = sum(s["seconds"] for s in rec["samples"])
    last = rec["samples"][-1]
    for key in ("min_pivot_predicted", "rate_predicted", "passes_predicted",
                "mixed_s_predicted"):
        rec[key] = last.get(key)
    if decided is not None:  # the figures the verdict was weighed on
        rec.update(decided)
    return rec
