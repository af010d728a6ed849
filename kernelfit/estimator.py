"""scikit-learn style estimator for exact kernel interpolation.

>>> from kernelfit import KernelInterpolator
>>> model = KernelInterpolator(kernel="gaussian", bandwidth=5.0).fit(X_train, y_train)
>>> model.score(X_test, y_test)            # accuracy for class labels, R^2 for real targets

``fit`` solves K alpha = Y exactly (Y one-hot for class labels), with no regularization
unless ``ridge`` is set, and records how exact the solve was (``relative_residual_``),
the RKHS norm of the interpolant (``rkhs_norm_``), the training error and the time of
each stage. The estimator works in scikit-learn pipelines, ``clone`` and cross-validation.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import replace

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from .backend import BlasOneThread, array_namespace, get_backend, is_device_array, to_host
from .errors import InexactFitWarning, InputError, InputTypeError
from .grid import lookup_exp_faster
from .kernel_defaults import exactness, refinement_of
from .kernels import active_columns, check_array, median_distance, to_integer_grid
from .labels import check_label_types, continuous_summary, label_kind
from .options import KernelOptions, SolverOptions
from .solvers.exact import duplicate_points, rank_deficiency, solve_exact
from .solvers.products import cross_kernel_matmul, kernel_diagonal, kernel_matvec

__all__ = ["KernelInterpolator", "sklearn_expected_failed_checks", "EXPECTED_FAILED_CHECKS",
           "check_magnitude"]

#: float64's unit roundoff
_EPS = float(np.finfo(np.float64).eps)
#: causes of an inexact fit that its options asked for (a ridge, a refinement target above
#: the threshold, float32 storage): no warning then
_ASKED_INEXACT = ("ridge", "tol", "float32")


class KernelInterpolator(BaseEstimator):
    """Exact kernel interpolation: solve k(X, X) alpha = Y, predict k(x, X) alpha.

    Parameters
    ----------
    kernel : {'gaussian', 'laplacian', 'linear', 'polynomial', 'normalized'}
        See :mod:`kernelfit.kernels`.
    bandwidth : float or 'median'
        Gaussian/Laplacian bandwidth; ``'median'`` uses the median pairwise distance of
        (a seeded sample of) the training data.
    degree, gamma, coef0 : polynomial kernel parameters.
    ridge : float, default 0
        Added to the diagonal of K (0 = exact interpolation).
    solver : {'cholesky', 'eigh', 'lstsq'}
        Tiled in-place Cholesky, or an explicit minimum-norm fallback for singular K.
    dtype : {'float64', 'float32'} or None, default None
        Storage and factorization precision of K (None: what ``precision`` says, under
        'auto' float64 or mixed precision's float32; a dtype given with 'auto' fixes that
        precision, a plain float32 or float64 solve; a dtype that contradicts a
        ``precision`` given is refused).
    device : {'cpu', 'gpu', 'auto'}
    tile_size : int or None
        Tile edge of the blocked Gram matrix and factorization (None: automatic).
    task : {'auto', 'classification', 'regression'}
        'auto' follows kernelfit's one label rule (:mod:`kernelfit.labels`): integer,
        boolean, string and whole-number float labels are classes (one-hot targets);
        floats with a fractional part are fitted as a regression, with a warning
        ('regression' says so and silences it).
    compute_residual : bool, default True
        Form K alpha after the solve to report the relative residual, the training error
        and the RKHS norm. The float64 Cholesky on the CPU keeps a copy of K through the
        factorization when memory allows (K alpha then costs one pass over memory);
        otherwise K alpha is recomputed tile by tile (half a Gram matrix of work).
    estimate_condition : bool, default False
        Estimate cond(K) from the factor (power and inverse iteration);
        sets ``condition_number_``.
    random_state : int or None, default 0
        Seed of the sample used by ``bandwidth='median'`` (None: a fresh sample each fit;
        the bandwidth it gives is kept in ``kernel_``). The condition estimate starts from
        seed 0 whatever this is (recorded in ``fit_info_['condition']``).
    show_progress : bool or None
        Progress bars (None: only on a terminal).
    precision : {'auto', 'float64', 'float32', 'mixed'}, default 'auto'
        'mixed' stores and factors K in float32 and refines the solution to float64
        accuracy (preconditioned CG or iterative refinement against exact float64 kernel
        products); 'auto' picks mixed when its plan fits and it is expected faster, with a
        fallback to float64 when refinement cannot reach the float64 residual or would
        reach it later than a float64 factorization, else float64 (an explicit
        ``dtype='float32'`` keeps the plain float32 solve).
    tol : float, default 1e-10
        Relative residual ||Y - K alpha|| / ||Y|| at which refinement stops.
    max_iter : int or None
        Refinement steps at most (None: 30).
    refinement : {'cg', 'ir'}
        Preconditioned conjugate gradients or classic iterative refinement.
    ooc_dir : str or None
        Out-of-core Cholesky: K's tiles and checkpoints live in this folder.
    resume : bool
        Continue an interrupted out-of-core run in ``ooc_dir`` (same data and parameters).
    scheduler : str or None
        Address of a Dask scheduler to run the tiled work on.
    distributed : {None, 'local'}
        'local' starts a local Dask cluster.
    memory_budget : int or None
        The most bytes the solve plans for on its device, at most what is available
        (None: what is available, mixed precision keeping tiles of K for its refinement
        within 40% of it, or up to the float64 solve's memory where ``precision='auto'``
        takes mixed precision only so). Mixed precision's kept tiles fill a larger budget:
        a faster refinement, the same answer.

    Fitted attributes: ``alpha_`` (coefficients, one column per class or target),
    ``X_fit_`` (the training inputs restricted to ``support_``, the columns that are
    non-zero in some training row; ``support_`` is None when that is all of them; on the
    CPU, inputs on an integer grid such as 8-bit pixels scaled to [0, 1] are stored as the
    exact integers ``x * fit_kernel_.int_scale`` in float32, see :mod:`kernelfit.kernels`),
    ``fit_kernel_`` (the kernel in the units of ``X_fit_``: ``kernel_`` with ``int_scale``
    on such a grid, else ``kernel_`` itself); ``kernel_`` is in the units of the inputs,
    so ``kernel_(X)`` is the Gram matrix of ``X``,
    ``relative_residual_``, ``rkhs_norm_``, ``train_error_``, ``timings_``,
    ``classes_``, ``kernel_`` and ``n_features_in_``; ``exact_`` (the certified residual
    is at most 1e-8) and ``inexact_reason_`` (the likely cause when it is not; a fit
    that does not interpolate although no ``ridge``, ``tol`` or ``dtype='float32'`` asked
    for that also warns, :class:`kernelfit.errors.InexactFitWarning`); both None with
    ``compute_residual=False``.

    Fitted attributes of the beyond-memory solvers: ``precision_`` (what was used),
    ``refinement_history_`` (relative residual after each step, as the steps track it: by
    recurrence after a CG step, so below the certified ``relative_residual_`` at the end),
    ``refinement_iterations_`` and ``fit_info_`` (shift, checkpoint state, cluster).
    """

    def __init__(self, kernel="gaussian", bandwidth=5.0, degree=4, gamma=1.0, coef0=1.0,
                 ridge=0.0, solver="cholesky", dtype=None, device="cpu",
                 tile_size=None, task="auto", compute_residual=True, estimate_condition=False,
                 random_state=0, show_progress=None, precision="auto", tol=1e-10,
                 max_iter=None, refinement="cg", ooc_dir=None, resume=False, scheduler=None,
                 distributed=None, memory_budget=None):
        self.memory_budget = memory_budget
        self.precision = precision
        self.tol = tol
        self.max_iter = max_iter
        self.refinement = refinement
        self.ooc_dir = ooc_dir
        self.resume = resume
        self.scheduler = scheduler
        self.distributed = distributed
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.degree = degree
        self.gamma = gamma
        self.coef0 = coef0
        self.ridge = ridge
        self.solver = solver
        self.dtype = dtype
        self.device = device
        self.tile_size = tile_size
        self.task = task
        self.compute_residual = compute_residual
        self.estimate_condition = estimate_condition
        self.random_state = random_state
        self.show_progress = show_progress

    #: the meaning of ``dtype`` this class pickles with: 2, a dtype given fixes the
    #: precision (before 2026-12-06 'float64' under 'auto' still let auto choose, and the
    #: command line saved every model so)
    _DTYPE_RULE = 2

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: BaseEstimator's may be __dict__ itself
        state["_kernelfit_dtype_rule"] = self._DTYPE_RULE
        return state

    def __setstate__(self, state):
        state = dict(state)
        rule = state.pop("_kernelfit_dtype_rule", 1)
        super().__setstate__(state)
        # model files saved before memory_budget existed load with its default
        self.__dict__.setdefault("memory_budget", None)
        # ... and before dtype's default became None with its old default, 'float64', which
        # then left K's storage to a float32 or mixed precision (now a contradiction), or,
        # before the dtype rule 2, to auto (now: a float64 factorization)
        if rule < 2 and self.__dict__.get("dtype") == "float64" and self.__dict__.get(
                "precision") in ("mixed", "float32", "auto"):
            self.dtype = None

    # ------------------------------------------------------------ helpers
    def _solver_options(self) -> SolverOptions:
        """The solver options of these parameters (validated once, by the options tree:
        ``dtype`` None, the default, leaves K's storage to a float ``precision``)."""
        return SolverOptions.from_params(self.get_params(deep=False))

    def _targets(self, y):
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] == 0:
            raise InputError("y is empty")
        task = self.task
        if task not in ("auto", "classification", "regression"):
            raise InputError("task must be 'auto', 'classification' or 'regression', got "
                             f"{task!r}", param="task")
        if y.ndim == 2 and y.shape[1] == 1 and task != "regression" and (
                task == "classification" or label_kind(y.ravel()) == "classes"):
            # a column of class labels is the labels (it fell through to a regression,
            # silently): used as 1-D, as scikit-learn's classifiers do, with its warning
            warnings.warn("a column-vector y was passed where 1-D class labels were "
                          "expected; it is used as y.ravel()", UserWarning, stacklevel=3)
            y = y.ravel()
        if task == "auto":
            # the one label rule (kernelfit.labels): whole numbers and strings are classes
            kind = label_kind(y) if y.ndim == 1 else type_of_target(y)
            task = "classification" if kind == "classes" else "regression"
            if kind == "continuous":
                warnings.warn(f"y looks continuous ({continuous_summary(y)}): fitting a "
                              "regression; pass task='regression' to say so, or give class "
                              "labels (integers or strings)", UserWarning, stacklevel=3)
        if task == "classification":
            if y.ndim != 1:
                raise InputError(f"class labels must be 1-D, got shape {y.shape}")
            if y.dtype.kind == "O":
                label_kind(y)  # objects that are not class labels: refused, named
            classes, codes = np.unique(y, return_inverse=True)
            if classes.shape[0] < 2:
                numeric = classes.dtype.kind in "biuf"
                raise InputError(f"y has only one class ({classes[0]}): a classifier "
                                 "needs at least two" + ("; task='regression' interpolates "
                                                         "a constant target" if numeric else ""))
            Y = np.zeros((y.shape[0], classes.shape[0]), dtype=np.float64)
            Y[np.arange(y.shape[0]), codes] = 1.0
            return task, classes, Y
        try:
            Y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(f"regression targets must be numbers, got dtype {y.dtype} "
                             f"(e.g. {str(y.ravel()[0])!r})") from None
        if not np.isfinite(Y).all():
            raise InputError("y contains NaN, infinite or missing (None) values")
        return task, None, Y

    # ------------------------------------------------------------ API
    def fit(self, X, y, plan=None):
        """Solve K alpha = Y exactly on the training data.

        ``plan``: the solve's plan (:class:`kernelfit.solvers.plan.SolvePlan`) when the
        caller made it already for these options and data (the run layer's memory
        pre-flight); None: the solve plans its route and memory itself.
        """
        t_start = time.perf_counter()
        solver_opts = self._solver_options()
        if y is None:
            raise InputError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None")
        check_label_types(y)  # before NumPy turns ['a', 1] into ['a', '1']
        y = to_host(y)  # CuPy forbids np.asarray on its arrays; the targets live on the host
        if is_device_array(X):  # device arrays: kernelfit's own checks
            X = check_array(X, "X")
            self.n_features_in_ = X.shape[1]
        else:
            X, y = _validate(self, X, y, reset=True)
        check_magnitude(X)
        if X.shape[0] != np.asarray(y).shape[0]:
            raise InputError(f"X has {X.shape[0]} rows but y has {np.asarray(y).shape[0]}")
        task, classes, Y = self._targets(y)
        kernel_opts = KernelOptions.from_params(self.get_params(deep=False))
        seed = self.random_state
        if seed is not None and (isinstance(seed, bool) or not isinstance(
                seed, (int, np.integer)) or seed < 0):
            raise InputError(f"random_state must be a non-negative integer or None, got "
                             f"{seed!r}", param="random_state")
        kernel = kernel_opts.resolve(X, seed=seed)
        _warn_narrow(kernel, X, self.bandwidth, seed)
        be = get_backend(self.device)
        Xf = np.ascontiguousarray(X, dtype=np.float64) if be.device == "cpu" else X
        opts = replace(solver_opts, device=be.device).solve_options(
            estimate_condition=self.estimate_condition, residual=self.compute_residual)
        xp = be.xp
        Xb = xp.asarray(Xf)
        # columns that are zero in every training row add nothing to any kernel value
        support = active_columns(Xb)
        self.kernel_ = kernel  # in the units of the user's X
        if be.device == "cpu":  # 8-bit pixels: exact inner products at the float32 rate
            kernel, Xb = to_integer_grid(kernel, Xb, columns=support)
        elif support is not None:
            Xb = xp.take(Xb, support, axis=1)
        sol = solve_exact(kernel, Xb, Y, opts, backend=be, plan=plan)
        if kernel.int_scale is not None:
            sol.info["inner_products"] = _inner_products_note(kernel, sol.info)
        timings = dict(sol.timings)
        self.fit_kernel_ = kernel  # in the units of X_fit_
        self.task_ = task
        self.y_ndim_ = int(np.ndim(y))
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        self.device_ = be.device
        self.backend_ = be.name
        self.solver_ = sol.solver
        self.memory_plan_ = sol.memory_plan
        self.fit_info_ = sol.info
        self.X_fit_ = Xb
        self.support_ = None if support is None else be.to_numpy(support)
        cond = sol.info.get("condition")
        self.condition_number_ = None if cond is None else cond["condition_number"]
        self.alpha_ = sol.alpha
        self.precision_ = sol.info.get("precision", sol.dtype)
        self.refinement_history_ = sol.info.get("refinement_history")
        self.refinement_iterations_ = sol.info.get("iterations")
        self.relative_residual_ = None
        self.rkhs_norm_ = None
        self.train_error_ = None
        self.exact_ = None
        self.inexact_reason_ = None
        if self.compute_residual:
            t0 = time.perf_counter()
            KA = sol.K_alpha  # formed by the solver (kept copy of K, or refinement), float64
            if KA is None:
                KA = kernel_matvec(kernel, Xb, sol.alpha, tile_size=sol.info.get("tile_size"),
                                   backend=be, show_progress=self.show_progress)
            be.synchronize()
            # norms on one BLAS thread: a (threaded) dot product here would leave BLAS
            # threads spinning beside the tile threads of a prediction that follows
            with BlasOneThread(be.device == "cpu"):
                self._certify(KA, Y, sol.alpha, task, xp, be,
                              kmax=float(xp.max(kernel_diagonal(kernel, Xb))))
            timings["residual"] = timings.get("residual", 0.0) + time.perf_counter() - t0
            del KA
            self._judge(X, Y)
        timings["fit_total"] = time.perf_counter() - t_start
        self.timings_ = timings
        return self

    def _certify(self, KA, Y, alpha, task: str, xp, be, kmax: float) -> None:
        """The relative residual, RKHS norm and training error from ``KA`` = K alpha.

        The norm sqrt(alpha^T K alpha) is None where the rounding of that sum could be as
        large as the sum itself: about u * max|K_ij| * ||alpha||_1^2 per column, with
        ``kmax`` = max diag K (>= every |K_ij| of a positive semi-definite K). Huge
        coefficients (a tiny ridge on a singular K) had given a sum that cancelled to
        below zero, reported as a norm of 0."""
        # a 1-D regression target against the solver's (n, 1) columns: compared as
        # columns (broadcasting them gave an n x n difference and a residual of ~10)
        Yb = xp.asarray(Y).reshape(KA.shape)
        ynorm = float(xp.linalg.norm(Yb))  # all-zero targets: the residual's own norm
        rnorm = float(xp.linalg.norm(KA - Yb))
        self.relative_residual_ = rnorm / ynorm if ynorm > 0 else rnorm
        quad = float(xp.sum(alpha * KA))
        noise = _EPS * kmax * float(xp.sum(xp.sum(xp.abs(alpha), axis=0) ** 2))
        # (all-zero targets: alpha = 0, the norm exactly 0)
        self.rkhs_norm_ = float(np.sqrt(quad)) if quad > noise or noise == 0 else None
        if task == "classification":
            pred = be.to_numpy(xp.argmax(KA, axis=1))
            true = np.argmax(Y, axis=1)
            self.train_error_ = float(np.mean(pred != true))
        else:
            self.train_error_ = float(xp.sqrt(xp.mean((KA - Yb) ** 2)))

    def _judge(self, X, Y) -> None:
        """``exact_`` and ``inexact_reason_`` from the certified residual
        (:func:`kernelfit.kernel_defaults.exactness`); an :class:`InexactFitWarning` where
        the fit does not interpolate and nothing asked for that (a ridge, a refinement
        target ``tol`` above the threshold, float32 storage). The facts that need the data
        (training points repeated with another target, a kernel singular by construction)
        are gathered only then, and kept (``_exactness_inputs``) for the run layer's and
        the randomization test's verdicts."""
        common = dict(kernel_params=self.kernel_.params(),
                      condition_number=self.condition_number_,
                      ridge=float(self.ridge or 0.0), refinement=refinement_of(self.fit_info_),
                      precision=self.precision_)
        facts = exactness(self.relative_residual_, **common)
        self._exactness_inputs = {}
        if not facts["exact"] and facts.get("cause") not in ("ridge", "tol"):
            Xh = to_host(X)
            low = rank_deficiency(self.kernel_, Xh)
            self._exactness_inputs = {"conflicting": duplicate_points(Xh, Y)[1],
                                      "low_rank": None if low is None else low[1]}
            facts = exactness(self.relative_residual_, **common, **self._exactness_inputs)
        self.exact_ = bool(facts["exact"])
        self.inexact_reason_ = facts.get("inexact_reason")
        if not self.exact_ and facts.get("cause") not in _ASKED_INEXACT:
            warnings.warn(f"the fit does not interpolate the labels: {self.inexact_reason_}",
                          InexactFitWarning, stacklevel=3)

    def decision_function(self, X):
        """k(X, X_fit) alpha: one column per class (or target), as a NumPy array."""
        check_is_fitted(self, "alpha_")
        be = get_backend(self.device_)
        if is_device_array(X):
            X = check_array(X, "X")
        else:
            X = _validate(self, X, reset=False)
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input")
        check_magnitude(X)
        xp = be.xp
        # the kernel in X_fit_'s units (grid integers for 8-bit pixels; files saved before
        # the grid storage have only kernel_)
        kernel = getattr(self, "fit_kernel_", self.kernel_)
        # the fitted columns, with the norms over all of the query's columns
        Xb, a_stats = kernel.query(xp.asarray(X, dtype=xp.float64),
                                   columns=getattr(self, "support_", None))
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite: refused below
            P = cross_kernel_matmul(kernel, Xb, self.X_fit_, self.alpha_,
                                    tile_size=self.fit_info_.get("tile_size"), backend=be,
                                    show_progress=self.show_progress, a_stats=a_stats)
        P = be.to_numpy(P)
        if not np.isfinite(P).all():  # (NaN predictions became class 0, silently)
            ax = array_namespace(X)  # (a device array: its own namespace)
            raise InputError(f"the kernel values of X against the training points overflow "
                             f"float64 (X's largest magnitude {float(ax.max(ax.abs(X))):.3g}); "
                             "rescale X as the training inputs were")
        return P

    def predict(self, X):
        """Class labels (argmax of the decision function) or real predictions."""
        P = self.decision_function(X)
        if self.task_ == "classification":
            return self.classes_[np.argmax(P, axis=1)]
        return P[:, 0] if self.y_ndim_ == 1 else P

    def score(self, X, y, sample_weight=None):
        """Accuracy for classification, R^2 for regression (scikit-learn's conventions)."""
        if self.task_ == "classification":
            from sklearn.metrics import accuracy_score

            return accuracy_score(y, self.predict(X), sample_weight=sample_weight)
        from sklearn.metrics import r2_score

        return r2_score(y, self.predict(X), sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.input_tags.sparse = False
        tags.target_tags.required = True
        return tags


def _inner_products_note(kernel, info: dict) -> str:
    """The record of the inner products of a solve on integer-grid inputs: the float32 GEMM
    in memory; the out-of-core and Dask placements build K's tiles from a float64 copy of
    the integers (only the predictions multiply the stored float32 integers). The Gaussian's
    exp of the exact squared distances: by table lookups where this CPU does that faster
    (:func:`kernelfit.grid.gaussian_of_exact`)."""
    stored = f"inputs stored as the integers x * {kernel.int_scale:g}"
    lookup = ("; Gaussian values by table lookups of the exact squared distances"
              if kernel.name == "gaussian" and lookup_exp_faster() else "")
    if info.get("out_of_core") or info.get("distributed"):
        return (f"float64 GEMM for K (its tiles are built from a float64 copy); {stored}, "
                f"predictions by exact float32 GEMM{lookup and ' (and lookups)'}")
    return f"float32 GEMM, exact: {stored}{lookup}"


#: inputs whose magnitude reaches this overflow the float64 squared distances and inner
#: products (1e150^2 times a few thousand features is near float64's 1.8e308)
MAX_MAGNITUDE = 1e150


#: below this kernel value at the median distance of the training points, K is the
#: identity to float64's eye: a fixed bandwidth far too small for the data
NARROW_KERNEL_VALUE = 1e-12


def _warn_narrow(kernel, X, bandwidth, seed) -> None:
    """Warn where a bandwidth given as a number is so small against the training points'
    distances that K is the identity to float64 (the kernel at their median distance below
    NARROW_KERNEL_VALUE): the fit interpolates trivially and predictions away from the
    training points are about 0 (every class then scores alike: the first one wins).
    The estimator's default 5 is for [0, 1] pixels: on 0-255 pixels it is 255 times too
    small, and 10% accuracy came without a word."""
    if (kernel.name not in ("gaussian", "laplacian") or isinstance(bandwidth, (str, bool))
            or bandwidth is None or X.shape[0] < 2):
        return
    try:  # (on one BLAS thread: threads it woke would spin beside the Gram's tile threads)
        with BlasOneThread(True):
            med = median_distance(X, sample=200, seed=0 if seed is None else int(seed))
    except InputError:  # all sampled rows identical: no distance to compare with
        return
    h = float(kernel.bandwidth)
    value = (math.exp(-0.5 * (med / h) ** 2) if kernel.name == "gaussian"
             else math.exp(-med / h))
    if value < NARROW_KERNEL_VALUE:
        warnings.warn(f"bandwidth {h:g} is {med / h:.3g} times below the median distance of "
                      f"the training points ({med:.3g}): the kernel there is {value:.1e}, so "
                      "K is the identity to float64, the fit interpolates trivially and "
                      "predictions away from the training points are about 0; give no "
                      "bandwidth (None: chosen from the data) or the median, or rescale X",
                      UserWarning, stacklevel=3)


def check_magnitude(X, name: str = "X") -> None:
    """Refuse finite inputs too large for float64 kernel arithmetic: their squared norms
    overflow, and the bandwidth rule then saw 'identical points', the solve NaN."""
    if X.size == 0:
        return
    xp = array_namespace(X)
    # the largest magnitude from the extremes: no |X| copy (a whole X of new memory each
    # fit and predict)
    top = max(float(xp.max(X)), -float(xp.min(X)))
    if top >= MAX_MAGNITUDE:
        raise InputError(f"{name} has values up to {top:.3g}: their squares overflow float64 "
                         f"kernel arithmetic; rescale the inputs (e.g. divide by {top:.0e})")


def _validate(est, X, y=None, *, reset: bool):
    """scikit-learn's input validation (its messages: sparse, complex, empty, 1-D, NaN, the
    number of features), raised as :class:`InputError` (a ValueError)."""
    from sklearn.utils.validation import validate_data

    try:
        if y is None:
            return validate_data(est, X, reset=reset, dtype=np.float64,
                                 ensure_all_finite=True)
        return validate_data(est, X, y, reset=reset, dtype=np.float64, ensure_all_finite=True,
                             multi_output=True, y_numeric=False)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        cls = InputTypeError if isinstance(exc, TypeError) else InputError
        raise cls(str(exc)) from None


#: scikit-learn checks that an exact interpolator cannot pass, and why. Use with
#: ``parametrize_with_checks(..., expected_failed_checks=sklearn_expected_failed_checks)``
#: or ``check_estimator(..., expected_failed_checks=sklearn_expected_failed_checks(est))``.
_NOT_PD = ("the check's random data give a kernel matrix that is not numerically positive "
           "definite at the default bandwidth, and exact interpolation (no ridge) refuses to "
           "factor it rather than return a non-interpolating answer")
EXPECTED_FAILED_CHECKS = {
    "check_fit2d_1feature": _NOT_PD + " (10 points on one feature)",
    "check_fit_idempotent": _NOT_PD,
    "check_fit_check_is_fitted": _NOT_PD,
    "check_n_features_in": _NOT_PD,
    "check_estimators_pickle": (
        "the check's data make K ill-conditioned, so the interpolating coefficients are "
        "huge and predictions amplify last-bit differences of the BLAS kernels (which "
        "depend on array alignment) beyond the check's 1e-7 tolerance"),
}


def sklearn_expected_failed_checks(estimator=None) -> dict:
    """The scikit-learn checks expected to fail (check name -> reason)."""
    return dict(EXPECTED_FAILED_CHECKS)
