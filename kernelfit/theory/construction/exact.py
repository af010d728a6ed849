"""Theorem 1 in exact arithmetic: integer projections, fixed-point weights in units of
2^-P, and the exactly computed residual (see :mod:`kernelfit.theory.construction`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ...errors import InputError
from .network import _RHO, ReluNetwork, _check_ties, _split, validate_points

__all__ = ["ExactReluNetwork", "ExactDeepReluNetwork", "integer_grid",
           "choose_integer_direction", "fit_theorem1_exact", "fit_theorem1_exact_deep",
           "exact_relative_residual"]


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
