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

The package: :mod:`.network` (the float64 network, its depth-k variant and the shared
steps: validation, direction, biases, weights) and :mod:`.exact` (the fixed-point integer
versions).

The exact (high-precision) variant works on integer projections: MNIST pixels are integers over
255, so for an integer direction ``a`` the numbers :math:`255\langle a,x\rangle` are exact
integers. Weights are kept as integers in units of :math:`2^{-P}` (fixed point, ``P`` bits);
every product and sum is then exact, and the only rounding is the division defining
:math:`w_i`, which leaves a residual at most :math:`(z_i-b_i)/2^{P+1}` per point — with
``P = 256`` far below 1e-30 relative. The residual reported is computed exactly.
"""

from __future__ import annotations

from .exact import (ExactDeepReluNetwork, ExactReluNetwork, choose_integer_direction,
                    exact_relative_residual, fit_theorem1_exact, fit_theorem1_exact_deep,
                    integer_grid)
from .network import (DeepReluNetwork, ReluNetwork, choose_direction, fit_theorem1,
                      fit_theorem1_deep, float64_figures, place_biases, solve_weights,
                      validate_points)

__all__ = [
    "ReluNetwork", "DeepReluNetwork", "ExactReluNetwork", "ExactDeepReluNetwork",
    "validate_points", "choose_direction", "place_biases", "solve_weights",
    "fit_theorem1", "fit_theorem1_deep",
    "integer_grid", "choose_integer_direction", "fit_theorem1_exact", "fit_theorem1_exact_deep",
    "exact_relative_residual", "float64_figures",
]
