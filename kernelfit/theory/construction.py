r"""The finite-sample expressivity construction of Zhang et al. (ICLR 2017), Theorem 1.

**Theorem 1.** For any :math:`n` distinct points :math:`x_1,\dots,x_n\in\mathbb R^d` and any
real labels :math:`y_1,\dots,y_n` there is a two-layer ReLU network with :math:`2n+d` weights

.. math::  c(x) = \sum_{j=1}^n w_j \max(\langle a, x\rangle - b_j, 0)

with :math:`c(x_i) = y_i` for every :math:`i`.

Construction (the proof of the paper, written for linear time):

1. choose :math:`a` so the projections :math:`z_i = \langle a, x_i\rangle` are distinct and
   relabel the points so that :math:`z_1 < z_2 < \dots < z_n`;
2. interleave the biases, :math:`b_1 < z_1 < b_2 < z_2 < \dots < b_n < z_n`;
3. then :math:`A_{ij} = \max(z_i - b_j, 0)` is lower triangular with positive diagonal
   :math:`z_i - b_i`, and :math:`w = A^{-1} y` by forward substitution.

Forward substitution needs no matrix: with running sums :math:`S_i=\sum_{j\le i} w_j` and
:math:`T_i=\sum_{j\le i} w_j b_j`, row :math:`i` reads :math:`y_i = z_i S_i - T_i`, so

.. math::  w_i = \frac{y_i - z_i S_{i-1} + T_{i-1}}{z_i - b_i},

:math:`O(n)` time and memory. Evaluation at any :math:`t=\langle a,x\rangle` is
:math:`c = t\,S_k - T_k` with :math:`k = \#\{j : b_j < t\}` (a binary search), so
:math:`m` inputs cost :math:`O(m \log n)` after the projections. In floating point the same
piecewise-linear function is evaluated in *knot form*
:math:`c(t) = v_k + S_k (t - b_k)`, :math:`v_{k+1} = v_k + S_k (b_{k+1}-b_k)`, which avoids the
cancellation of :math:`t S_k - T_k`.

Freedom the theorem leaves, used here to limit floating-point damage:

* **direction** ``a``: ``'gaussian'`` (plain: one random Gaussian direction) or ``'best'``
  (among ``n_candidates`` random directions, the one with the largest smallest gap between
  sorted projections relative to their spread);
* **biases**: ``'midpoint'`` (plain: :math:`b_i = (z_{i-1}+z_i)/2`) or ``'contractive'``.
  With :math:`v_i = c(b_i)`, the fit satisfies
  :math:`v_{i+1} = y_i + r_i (y_i - v_i)` with :math:`r_i = (b_{i+1}-z_i)/(z_i-b_i)`.
  Midpoints give :math:`r_i = g_i/g_{i-1}` (ratio of consecutive gaps), whose products grow
  without bound on real data (weights of 1e9 on MNIST). The contractive placement takes
  :math:`b_{i+1} - z_i = \min(g_i/2,\ \rho (z_i-b_i))`, so :math:`|r_i|\le\rho=1/2`, the knot
  values stay within :math:`3\max|y|` and :math:`|w_i| = O(\max|y| / \min_i g_i)`.

The exact (high-precision) variant works on integer projections: MNIST pixels are integers over
255, so for an integer direction ``a`` the numbers :math:`255\langle a,x\rangle` are exact
integers. Weights are kept as integers in units of :math:`2^{-P}` (fixed point, ``P`` bits);
every product and sum is then exact, and the only rounding is the division defining
:math:`w_i`, which leaves a residual at most :math:`(z_i-b_i)/2^{P+1}` per point — with
``P = 256`` far below 1e-30 relative. The residual reported is computed exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..errors import InputError

__all__ = [
    "ReluNetwork", "DeepReluNetwork", "ExactReluNetwork", "ExactDeepReluNetwork",
    "validate_points", "choose_direction", "place_biases", "solve_weights",
    "fit_theorem1", "fit_theorem1_deep",
    "integer_grid", "choose_integer_direction", "fit_theorem1_exact", "fit_theorem1_exact_deep",
    "float64_figures",
]

_RHO = 0.5


# ----------------------------------------------------------------------------- validation
def validate_points(X, y=None, *, name="X"):
    """Return ``(X, y)`` as float64 arrays, or raise :class:`InputError` with a clear message.

    ``X`` must be 2-D with ``n >= 1`` rows and ``d >= 1`` columns, finite; ``y`` (optional)
    must be finite with exactly ``n`` entries.
    """
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a numeric array: {exc}") from None
    if X.ndim != 2:
        raise InputError(f"{name} must be 2-D (n points x d dims), got shape {X.shape}")
    n, d = X.shape
    if n == 0:
        raise InputError(f"{name} has no points (n = 0): nothing to fit")
    if d == 0:
        raise InputError(f"{name} has points of dimension d = 0")
    if not np.all(np.isfinite(X)):
        raise InputError(f"{name} contains NaN or infinite values")
    if y is None:
        return X, None
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"labels must be numeric: {exc}") from None
    if y.ndim != 1:
        y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1:
        raise InputError(f"labels must be 1-D, got shape {y.shape}")
    if y.shape[0] != n:
        raise InputError(f"labels have length {y.shape[0]} but there are {n} points")
    if not np.all(np.isfinite(y)):
        raise InputError("labels contain NaN or infinite values")
    return X, y


def _check_ties(X, y, order, z_sorted):
    """Inspect tied projections: identical points with different labels cannot be fitted.

    Returns True when some *distinct* points tie (the direction must change); raises
    :class:`InputError` for duplicate points with different labels.
    """
    ties = np.flatnonzero(np.diff(z_sorted) == 0)
    if ties.size == 0:
        return False
    distinct_tie = False
    for t in ties:
        i, j = order[t], order[t + 1]
        if np.array_equal(X[i], X[j]):
            if y is not None and y[i] != y[j]:
                raise InputError(
                    f"points {min(i, j)} and {max(i, j)} are identical but have different labels "
                    f"({y[min(i, j)]!r} vs {y[max(i, j)]!r}): no function can fit both")
            raise InputError(
                f"points {min(i, j)} and {max(i, j)} are identical: Theorem 1 needs distinct "
                "points (drop the duplicate; its label is the same)")
        distinct_tie = True
    return distinct_tie


# ----------------------------------------------------------------------------- choices
def _relative_min_gap(z_sorted):
    g = np.diff(z_sorted)
    spread = z_sorted[-1] - z_sorted[0]
    if g.size == 0 or spread <= 0:
        return np.inf if g.size == 0 else 0.0
    return float(g.min() / spread)


def choose_direction(X, method="best", *, n_candidates=16, seed=0, y=None):
    """A direction ``a`` (unit norm) with distinct projections ``X @ a``.

    ``'gaussian'``: one standard Gaussian draw. ``'best'``: ``n_candidates`` Gaussian draws,
    keep the one maximizing ``min gap / spread`` of the sorted projections. An explicit
    array is accepted as is (validated). Raises :class:`InputError` for duplicate points.
    Returns ``(a, info)`` with the relative smallest gap of each candidate in ``info``.
    """
    X, y = validate_points(X, y)
    n, d = X.shape
    if not isinstance(method, str):
        a = np.asarray(method, dtype=np.float64).reshape(-1)
        if a.shape[0] != d or not np.all(np.isfinite(a)):
            raise InputError(f"direction must be a finite vector of length d = {d}")
        return a, {"method": "given", "seed": None, "candidate_rel_gaps": []}
    if method not in ("gaussian", "best"):
        raise InputError(f"unknown direction method {method!r} (use 'gaussian' or 'best')")
    rng = np.random.default_rng(seed)
    m = 1 if method == "gaussian" else max(1, int(n_candidates))
    best, best_gap, gaps = None, -1.0, []
    for _attempt in range(8):
        A = rng.standard_normal((d, m))
        A /= np.linalg.norm(A, axis=0)
        Z = X @ A
        for c in range(m):
            order = np.argsort(Z[:, c], kind="stable")
            zs = Z[order, c]
            if _check_ties(X, y, order, zs):
                gaps.append(0.0)
                continue
            gap = _relative_min_gap(zs)
            gaps.append(gap)
            if gap > best_gap:
                best, best_gap = A[:, c].copy(), gap
        if best is not None:
            break
    if best is None:
        raise InputError("could not find a direction with distinct projections")
    return best, {"method": method, "seed": seed, "n_candidates": m, "candidate_rel_gaps": gaps,
                  "rel_min_gap": best_gap}


def place_biases(z_sorted, method="contractive", rho=_RHO):
    r"""Biases interleaved with sorted distinct projections: ``b_1 < z_1 < b_2 < ... < b_n < z_n``.

    ``'midpoint'``: :math:`b_1 = z_1 - g_1/2` (or ``z_1 - 1`` when n = 1),
    :math:`b_i = (z_{i-1}+z_i)/2`. ``'contractive'``: :math:`b_1 = z_1 - g_1/2`,
    :math:`b_{i+1} = z_i + \min(g_i/2, \rho(z_i - b_i))` (see the module notes).
    """
    z = np.asarray(z_sorted, dtype=np.float64)
    n = z.shape[0]
    g = np.diff(z)
    if np.any(g <= 0):
        raise InputError("projections must be strictly increasing to place biases")
    first = g[0] / 2 if n > 1 else max(1.0, abs(z[0]))
    b = np.empty(n)
    b[0] = z[0] - first
    if method == "midpoint":
        b[1:] = z[:-1] + g / 2
    elif method == "contractive":
        prev = first
        for i in range(n - 1):
            h = min(g[i] / 2, rho * prev)
            b[i + 1] = z[i] + h
            prev = z[i + 1] - b[i + 1]
    else:
        raise InputError(f"unknown bias placement {method!r} (use 'midpoint' or 'contractive')")
    if not np.all((b < z)) or not np.all(b[1:] > z[:-1]):
        raise InputError("biases do not interleave the projections in float64 "
                         "(gaps below rounding); use the exact construction")
    return b


def solve_weights(z_sorted, b, y_sorted):
    r"""Solve the lower-triangular system :math:`\sum_{j\le i} w_j (z_i - b_j) = y_i` in O(n).

    Knot form: :math:`v_1 = 0`, slope :math:`S_i = (y_i - v_i)/(z_i - b_i)`,
    :math:`v_{i+1} = y_i + S_i (b_{i+1} - z_i)`, and :math:`w_i = S_i - S_{i-1}`.
    """
    z = np.asarray(z_sorted, dtype=np.float64)
    n = z.shape[0]
    S = np.empty(n)
    v = 0.0
    zl, bl, yl = z.tolist(), np.asarray(b, dtype=np.float64).tolist(), \
        np.asarray(y_sorted, dtype=np.float64).tolist()
    for i in range(n):
        s = (yl[i] - v) / (zl[i] - bl[i])
        S[i] = s
        if i + 1 < n:
            v = yl[i] + s * (bl[i + 1] - zl[i])
    w = np.empty(n)
    w[0] = S[0]
    w[1:] = np.diff(S)
    return w


# ----------------------------------------------------------------------------- networks
@dataclass
class ReluNetwork:
    r""":math:`c(x) = \sum_j w_j \max(\langle a,x\rangle - b_j, 0)` with sorted ``b``: 2n+d weights."""

    a: np.ndarray
    b: np.ndarray
    w: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def n_weights(self) -> int:
        """Number of parameters: ``d`` (direction) + ``n`` (biases) + ``n`` (output weights)."""
        return int(self.a.size + self.b.size + self.w.size)

    def project(self, X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.a.size:
            raise InputError(f"inputs must have shape (m, {self.a.size}), got {X.shape}")
        return X @ self.a

    def predict_projection(self, t):
        """Evaluate at projections ``t`` in O(m log n): binary search + knot-form prefix sums."""
        t = np.asarray(t, dtype=np.float64)
        S = np.cumsum(self.w)
        v = np.zeros_like(self.b)
        v[1:] = np.cumsum(S[:-1] * np.diff(self.b))
        k = np.searchsorted(self.b, t, side="left") - 1  # largest j with b_j < t
        out = np.zeros_like(t)
        on = k >= 0
        kk = k[on]
        out[on] = v[kk] + S[kk] * (t[on] - self.b[kk])
        return out

    def predict(self, X, method="prefix", chunk=1024):
        """Network output. ``'prefix'``: O(m log n). ``'direct'``: the literal sum of n ReLU
        terms per input (O(m n), chunked; nothing m x n beyond one chunk)."""
        t = self.project(X)
        if method == "prefix":
            return self.predict_projection(t)
        if method != "direct":
            raise InputError(f"unknown evaluation method {method!r}")
        out = np.empty_like(t)
        for s in range(0, t.size, chunk):
            blk = t[s:s + chunk, None] - self.b[None, :]
            np.maximum(blk, 0.0, out=blk)
            out[s:s + chunk] = blk @ self.w
        return out


def fit_theorem1(X, y, *, direction="best", biases="contractive", n_candidates=16, seed=0):
    """Build the Theorem 1 network in float64 (O(n) after the projection and one sort).

    Returns a :class:`ReluNetwork`; ``info`` records the choices, the seed, the smallest and
    median gap of sorted projections and the permutation ``order``.
    """
    X, y = validate_points(X, y)
    a, dinfo = choose_direction(X, direction, n_candidates=n_candidates, seed=seed, y=y)
    z = X @ a
    order = np.argsort(z, kind="stable")
    zs = z[order]
    if _check_ties(X, y, order, zs):
        raise InputError("the given direction maps distinct points to the same projection")
    b = place_biases(zs, biases)
    w = solve_weights(zs, b, y[order])
    g = np.diff(zs)
    info = dict(dinfo, biases=biases, order=order,
                min_gap=float(g.min()) if g.size else float("inf"),
                median_gap=float(np.median(g)) if g.size else float("inf"),
                spread=float(zs[-1] - zs[0]))
    return ReluNetwork(a=a, b=b, w=w, info=info)


def float64_figures(net, X, y, *, subset=2000, seed=0):
    """Float64 behaviour of a fitted network: weight size, gaps, residuals (max abs error).

    ``residual_direct`` evaluates the literal sum on a random subset of ``subset`` points;
    ``residual_prefix`` uses the O(n log n) knot form on all points.
    """
    X, y = validate_points(X, y)
    rng = np.random.default_rng(seed)
    idx = rng.choice(X.shape[0], size=min(subset, X.shape[0]), replace=False)
    direct = net.predict(X[idx], method="direct")
    prefix = net.predict(X, method="prefix")
    return {
        "max_abs_weight": float(np.max(np.abs(net.w))),
        "min_gap": net.info.get("min_gap"),
        "median_gap": net.info.get("median_gap"),
        "rel_min_gap": net.info.get("min_gap", 0.0) / max(net.info.get("spread", 1.0), 1e-300),
        "residual_direct_max": float(np.max(np.abs(direct - y[idx]))),
        "residual_prefix_max": float(np.max(np.abs(prefix - y))),
        "direct_subset_size": int(idx.size),
        "subset_seed": seed,
    }


# ----------------------------------------------------------------------------- depth k
@dataclass
class DeepReluNetwork:
    r"""Depth-``k`` variant: width :math:`\lceil n/k\rceil + 3`, :math:`O(n + d + k)` weights.

    Hidden layer 0: :math:`u = \max(\langle a,x\rangle - c_0, 0)` with :math:`c_0 < b_1`.
    Hidden layer :math:`l = 1..k` holds the units :math:`h_j = \max(u - (b_j - c_0), 0)` of the
    :math:`l`-th block :math:`G_l` of consecutive biases, a copy :math:`\max(u,0) = u`, and the
    partial sum so far split as :math:`p = \max(s,0)`, :math:`q = \max(-s, 0)` with
    :math:`s_{l} = p_{l} - q_{l} + \sum_{j\in G_l} w_j h_j`; the output is :math:`s_k`.
    Since :math:`\max(s,0)-\max(-s,0)=s` and :math:`u - (b_j - c_0) = t - b_j`, the network
    computes exactly the shallow :math:`c(x)` everywhere.

    ``layers`` is a list of ``(W, beta)`` (``W`` a SciPy CSR matrix) applied as
    ``h <- relu(W h + beta)``, the last one without ReLU: a literal forward pass.
    """

    a: np.ndarray
    c0: float
    groups: list
    layers: list
    info: dict = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return len(self.groups)

    @property
    def width(self) -> int:
        return max(W.shape[0] for W, _ in self.layers[:-1])

    @property
    def n_weights(self) -> int:
        return int(self.a.size + 1 + sum(W.nnz + np.count_nonzero(beta)
                                         for W, beta in self.layers))

    def predict(self, X, chunk=1024):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.a.size:
            raise InputError(f"inputs must have shape (m, {self.a.size}), got {X.shape}")
        out = np.empty(X.shape[0])
        for s in range(0, X.shape[0], chunk):
            h = np.maximum(X[s:s + chunk] @ self.a - self.c0, 0.0)[None, :]
            for li, (W, beta) in enumerate(self.layers):
                h = W @ h + beta[:, None]
                if li + 1 < len(self.layers):
                    np.maximum(h, 0.0, out=h)
            out[s:s + chunk] = h[0]
        return out


def _split(n, k):
    if k < 1:
        raise InputError(f"depth k must be at least 1, got {k}")
    k = min(k, n)
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(k)]


def fit_theorem1_deep(X, y, k, **kwargs):
    """Depth-``k`` network equal to the Theorem 1 network (see :class:`DeepReluNetwork`)."""
    from scipy import sparse

    shallow = fit_theorem1(X, y, **kwargs)
    b, w = shallow.b, shallow.w
    n = b.size
    c0 = float(b[0] - max(1.0, abs(b[0])))
    groups = _split(n, k)
    layers = []
    # input to layer 1 is [u]; later inputs are [u, p, q, h_G(prev)...]
    prev = None
    for gi, (s, e) in enumerate(groups):
        m = e - s
        rows, cols, vals = [], [], []
        in_dim = 1 if prev is None else 3 + (prev[1] - prev[0])
        out_dim = 3 + m
        # row 0: copy of u; rows 1,2: p, q of the partial sum; rows 3..: block units
        rows.append(0); cols.append(0); vals.append(1.0)
        if prev is not None:
            ps, pe = prev
            for sign, r in ((1.0, 1), (-1.0, 2)):
                rows += [r, r]; cols += [1, 2]; vals += [sign, -sign]
                rows += [r] * (pe - ps); cols += list(range(3, 3 + pe - ps))
                vals += list(sign * w[ps:pe])
        rows += list(range(3, 3 + m)); cols += [0] * m; vals += [1.0] * m
        W = sparse.csr_matrix((vals, (rows, cols)), shape=(out_dim, in_dim))
        beta = np.zeros(out_dim)
        beta[3:] = -(b[s:e] - c0)
        layers.append((W, beta))
        prev = (s, e)
    ps, pe = prev
    W = sparse.csr_matrix(
        (np.concatenate([[1.0, -1.0], w[ps:pe]]),
         (np.zeros(2 + pe - ps, dtype=int), np.concatenate([[1, 2], np.arange(3, 3 + pe - ps)]))),
        shape=(1, 3 + pe - ps))
    layers.append((W, np.zeros(1)))
    return DeepReluNetwork(a=shallow.a, c0=c0, groups=groups, layers=layers,
                           info=dict(shallow.info, shallow=shallow))


# ----------------------------------------------------------------------------- exact variant
def integer_grid(X, denominators=(1, 255, 256, 2 ** 16, 2 ** 32)):
    """Find ``q`` with ``q * X`` integral (exactly, within int64); return ``(X_int, q)``.

    MNIST pixels in [0, 1] are integers over 255. Raises :class:`InputError` when no listed
    denominator makes ``X`` integral (the exact check then needs rational inputs).
    """
    X, _ = validate_points(X)
    for q in denominators:
        Xq = X * q
        R = np.rint(Xq)
        if np.all(np.abs(R) < 2 ** 40) and np.array_equal(R, Xq):
            return R.astype(np.int64), int(q)
    raise InputError("inputs are not integers over any of the denominators "
                     f"{list(denominators)}; the exact check needs such rational inputs")


def choose_integer_direction(X_int, method="best", *, n_candidates=16, seed=0, bits=30, y=None):
    """Integer direction ``a`` (entries below ``2**bits``) with distinct integer projections.

    Returns ``(a_int, t_int, info)`` with ``t_int = X_int @ a_int`` exact in int64 (checked).
    ``'gaussian'`` rounds one scaled Gaussian draw; ``'best'`` keeps, among ``n_candidates``,
    the largest relative smallest gap.
    """
    X_int = np.asarray(X_int)
    n, d = X_int.shape
    amax = 2 ** bits
    if np.abs(X_int).max(initial=0) * amax * d >= 2 ** 62:
        raise InputError("integer projections would overflow int64; lower `bits`")
    if isinstance(method, str) and method not in ("gaussian", "best"):
        raise InputError(f"unknown direction method {method!r}")
    rng = np.random.default_rng(seed)
    m = 1 if method == "gaussian" else max(1, int(n_candidates))
    best = None
    Xf = X_int.astype(np.float64)
    for _attempt in range(8):
        A = rng.standard_normal((d, m))
        A = np.rint(A / np.abs(A).max(axis=0) * (amax - 1)).astype(np.int64)
        Z = Xf @ A.astype(np.float64)  # for ranking only; exact values below
        for c in range(m):
            t = X_int @ A[:, c]
            order = np.argsort(t, kind="stable")
            ts = t[order]
            if _check_ties(X_int, y, order, ts):
                continue
            gap = np.diff(ts).min() / max(ts[-1] - ts[0], 1) if n > 1 else np.inf
            if best is None or gap > best[0]:
                best = (gap, A[:, c].copy(), t)
        del Z
        if best is not None:
            break
    if best is None:
        raise InputError("could not find an integer direction with distinct projections")
    return best[1], best[2], {"method": method, "seed": seed, "bits": bits,
                              "rel_min_gap": float(best[0])}


def _place_integer_biases(ts, method):
    """Integer biases in units where projections are ``4 * t`` (so gaps are at least 4)."""
    Z = ts * 4
    n = Z.size
    g = np.diff(Z)
    B = np.empty(n, dtype=np.int64)
    first = int(g[0] // 2) if n > 1 else 4
    B[0] = Z[0] - first
    if method == "midpoint":
        B[1:] = Z[:-1] + g // 2
    elif method == "contractive":
        prev = first
        Zl, gl = Z.tolist(), g.tolist()
        Bl = [int(B[0])]
        for i in range(n - 1):
            h = max(1, min(gl[i] // 2, int(_RHO * prev)))
            Bl.append(Zl[i] + h)
            prev = Zl[i + 1] - Bl[-1]
        B = np.asarray(Bl, dtype=np.int64)
    else:
        raise InputError(f"unknown bias placement {method!r}")
    return Z, B


def _fixed_labels(y, precision_bits):
    """Labels as integers in units of 2**-P (exact for floats that are multiples of 2**-P)."""
    Y = []
    for v in np.asarray(y, dtype=np.float64).tolist():
        num, den = float(v).as_integer_ratio()
        shift = precision_bits - (den.bit_length() - 1)
        if shift < 0:
            raise InputError("labels need more fractional bits than precision_bits")
        Y.append(num << shift)
    return Y


@dataclass
class ExactReluNetwork:
    r"""Theorem 1 network with rational parameters, held as integers.

    In units where the projection is ``Z = 4 q <a_int, x>`` (an integer for inputs on the grid
    ``X_int / q``), biases ``B`` are integers and weights are ``W / 2**P``:
    :math:`c(x) = 2^{-P}\sum_j W_j \max(Z - B_j, 0)`.
    """

    a_int: np.ndarray
    q: int
    B: np.ndarray
    W: list
    precision_bits: int
    order: np.ndarray
    info: dict = field(default_factory=dict)

    def _prefix(self):
        if "_S" not in self.__dict__:
            S, T, s, t = [], [], 0, 0
            for Wj, Bj in zip(self.W, self.B.tolist()):
                s += Wj
                t += Wj * Bj
                S.append(s)
                T.append(t)
            self.__dict__["_S"], self.__dict__["_T"] = S, T
        return self.__dict__["_S"], self.__dict__["_T"]

    def outputs_scaled(self, Z):
        """Exact outputs times ``2**P`` at integer projections ``Z`` (prefix sums, O(m log n))."""
        S, T = self._prefix()
        Z = np.asarray(Z, dtype=np.int64)
        k = (np.searchsorted(self.B, Z, side="left") - 1).tolist()
        return [0 if kk < 0 else z * S[kk] - T[kk] for z, kk in zip(Z.tolist(), k)]

    def outputs_scaled_direct(self, Z):
        """The literal term-by-term sum :math:`\\sum_j W_j \\max(Z - B_j, 0)`, exactly."""
        Wo = np.array(self.W, dtype=object)
        Bo = self.B.astype(object)
        out = []
        for z in np.asarray(Z, dtype=np.int64).tolist():
            k = int(np.searchsorted(self.B, z, side="left"))
            out.append(int(np.dot(Wo[:k], z - Bo[:k])) if k else 0)
        return out

    def to_float(self):
        """The same network rounded to float64 (``a`` scaled back to input units)."""
        scale = 4.0 * self.q
        a = self.a_int.astype(np.float64) * scale
        b = self.B.astype(np.float64)
        w = np.array([float(Fraction(Wj, 1 << self.precision_bits)) for Wj in self.W])
        return ReluNetwork(a=a, b=b, w=w, info={"from_exact": True})


def fit_theorem1_exact(X_int, q, y, *, direction="best", biases="contractive",
                       n_candidates=16, seed=0, precision_bits=256, bits=30):
    r"""Theorem 1 network in fixed-point integer arithmetic (``P = precision_bits``).

    :math:`W_i = \operatorname{round}\big((Y_i - Z_i S_{i-1} + T_{i-1})/(Z_i - B_i)\big)`
    with exact integer running sums :math:`S, T`; O(n) big-integer operations of a few hundred
    bits each.
    """
    X_int = np.asarray(X_int)
    n = X_int.shape[0]
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (n,):
        raise InputError(f"labels have shape {y.shape} but there are {n} points")
    a_int, t, dinfo = choose_integer_direction(X_int, direction, n_candidates=n_candidates,
                                               seed=seed, bits=bits, y=y)
    order = np.argsort(t, kind="stable")
    Z, B = _place_integer_biases(t[order], biases)  # Z = 4 <a_int, X_int> = 4 q <a_int, x>
    Y = _fixed_labels(y[order], precision_bits)
    W, S, T = [], 0, 0
    for Zi, Bi, Yi in zip(Z.tolist(), B.tolist(), Y):
        num = Yi - Zi * S + T
        den = Zi - Bi
        Wi = (2 * num + den) // (2 * den)  # round to nearest
        W.append(Wi)
        S += Wi
        T += Wi * Bi
    info = dict(dinfo, biases=biases, precision_bits=precision_bits)
    net = ExactReluNetwork(a_int=a_int, q=q, B=B, W=W, precision_bits=precision_bits,
                           order=order, info=info)
    net.info["Z_sorted"] = Z
    net.info["Y_sorted"] = Y
    return net


def exact_relative_residual(scaled_out, Y):
    """``max |out - Y| / max |Y|`` computed exactly, returned as a float (0 for exact fits)."""
    num = max((abs(o - t) for o, t in zip(scaled_out, Y)), default=0)
    den = max((abs(t) for t in Y), default=0) or 1
    return float(Fraction(num, den))


__all__.append("exact_relative_residual")


@dataclass
class ExactDeepReluNetwork:
    """Depth-``k`` variant of :class:`ExactReluNetwork`, evaluated layer by layer exactly."""

    shallow: ExactReluNetwork
    C0: int
    groups: list

    def outputs_scaled(self, Z, direct=False):
        r"""Layer-by-layer exact forward pass at integer projections ``Z`` (times ``2**P``).

        Layer 0: :math:`U = \max(Z - C_0, 0)`; block layer :math:`l`:
        :math:`H_j = \max(U - (B_j - C_0), 0)`, :math:`p, q = \max(\pm s, 0)`,
        :math:`s \leftarrow p - q + \sum_{j\in G_l} W_j H_j`. ``direct=False`` sums a block with
        its prefix sums (O(log n) per input), ``direct=True`` term by term.
        """
        net = self.shallow
        Bl = net.B.tolist()
        Wo = np.array(net.W, dtype=object)
        pref = []
        for s, e in self.groups:
            S, T, a, bsum = [0], [0], 0, 0
            for j in range(s, e):
                a += net.W[j]
                bsum += net.W[j] * (Bl[j] - self.C0)
                S.append(a)
                T.append(bsum)
            pref.append((S, T, np.asarray([Bl[j] - self.C0 for j in range(s, e)], dtype=np.int64),
                         Wo[s:e]))
        U = np.maximum(np.asarray(Z, dtype=np.int64) - self.C0, 0)
        Ul = U.tolist()
        p = [0] * len(Ul)
        q_ = [0] * len(Ul)
        total = [0] * len(Ul)
        for gi, (S, T, Bg, Wg) in enumerate(pref):
            ks = np.searchsorted(Bg, U, side="left").tolist()  # active units of this block
            if direct:
                Bo = Bg.astype(object)
                block = [int(np.dot(Wg[:k], u - Bo[:k])) if k else 0 for u, k in zip(Ul, ks)]
            else:
                block = [u * S[k] - T[k] for u, k in zip(Ul, ks)]
            total = [pi - qi + bi for pi, qi, bi in zip(p, q_, block)]
            if gi + 1 < len(pref):
                p = [t if t > 0 else 0 for t in total]
                q_ = [-t if t < 0 else 0 for t in total]
        return total


def fit_theorem1_exact_deep(X_int, q, y, k, **kwargs):
    """Exact depth-``k`` network built from :func:`fit_theorem1_exact`."""
    shallow = fit_theorem1_exact(X_int, q, y, **kwargs)
    C0 = int(shallow.B[0]) - 1
    return ExactDeepReluNetwork(shallow=shallow, C0=C0, groups=_split(shallow.B.size, k))
