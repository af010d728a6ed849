"""Theorem 1's float64 network (:class:`ReluNetwork`), its depth-k variant
(:class:`DeepReluNetwork`) and the steps of the construction both precisions share:
validation, the direction, the bias placement and the forward substitution (see
:mod:`kernelfit.theory.construction` for the mathematics)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import InputError

__all__ = ["ReluNetwork", "DeepReluNetwork", "validate_points", "choose_direction",
           "place_biases", "solve_weights", "fit_theorem1", "fit_theorem1_deep",
           "float64_figures"]

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
