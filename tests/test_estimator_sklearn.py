"""scikit-learn's own estimator checks on KernelInterpolator (scikit-learn >= 1.6).

The checks an exact interpolator cannot pass are marked expected-to-fail with their reason
(``kernelfit.estimator.EXPECTED_FAILED_CHECKS``), never skipped silently.
"""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from kernelfit import KernelInterpolator
from kernelfit.estimator import EXPECTED_FAILED_CHECKS, sklearn_expected_failed_checks


@parametrize_with_checks([KernelInterpolator()],
                         expected_failed_checks=sklearn_expected_failed_checks,
                         xfail_strict=False)
def test_sklearn_check(estimator, check):
    check(estimator)


def test_every_expected_failure_has_a_reason():
    assert EXPECTED_FAILED_CHECKS
    for name, reason in EXPECTED_FAILED_CHECKS.items():
        assert name.startswith("check_") and len(reason) > 40


@pytest.mark.parametrize("bad,match", [
    ("sparse", "[Ss]parse"),
    ("complex", "[Cc]omplex"),
    ("empty", "0 sample"),
    ("1d", "2D array"),
])
def test_clear_messages_for_bad_x(bad, match):
    import numpy as np
    import scipy.sparse as sp

    from kernelfit.errors import InputError

    X = np.random.default_rng(0).random((6, 3))
    y = np.arange(6) % 2
    Xb = {"sparse": sp.csr_matrix(X), "complex": X + 1j, "empty": X[:0], "1d": X[:, 0]}[bad]
    yb = y[:0] if bad == "empty" else y
    with pytest.raises(InputError, match=match) as info:
        KernelInterpolator().fit(Xb, yb)
    assert "--" not in str(info.value)
