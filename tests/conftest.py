"""Fixtures shared by the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """Keep the suite out of the user's caches: per-session XDG cache, no progress bars."""
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "KERNELFIT_PROGRESS",
                                            "KERNELFIT_CACHE", "MPLBACKEND")}
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    os.environ["KERNELFIT_PROGRESS"] = "0"
    os.environ.pop("KERNELFIT_CACHE", None)
    os.environ["MPLBACKEND"] = "Agg"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real datasets: ``$KERNELFIT_TEST_DATA``, else ``../shared/data`` next to the
    repository; the test is skipped when neither exists."""
    env = os.environ.get("KERNELFIT_TEST_DATA")
    path = Path(env) if env else (REPO_ROOT / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(f"shared data directory {path} is not available")
    return path


@pytest.fixture
def isolated_data_env(tmp_path, monkeypatch) -> Path:
    """Point the per-user cache at a fresh temporary folder and unset ``KERNELFIT_DATA``.

    Returns the cache directory kernelfit will use (``$XDG_CACHE_HOME/kernelfit``).
    """
    cache_home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.delenv("KERNELFIT_DATA", raising=False)
    monkeypatch.setenv("KERNELFIT_PROGRESS", "0")
    return cache_home / "kernelfit"


@pytest.fixture
def plan_calls(monkeypatch) -> list:
    """The calls of the solvers' one planner (``plan_solve``, wherever it is called from),
    as the list of the n each was made for."""
    import kernelfit.solvers.exact as exact_mod
    import kernelfit.solvers.plan as plan_mod

    calls = []
    real = plan_mod.plan_solve

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(plan_mod, "plan_solve", counting)
    monkeypatch.setattr(exact_mod, "plan_solve", counting)
    return calls


@pytest.fixture
def keep_values(monkeypatch):
    """``keep_values(on)``: mixed precision keeps K's float64 values (True) or the exact
    integers K is finished from (False) whatever its budget holds: ``values_fit`` patched
    where the planner and the Gram build ask it."""
    import kernelfit.solvers.plan as plan_mod
    import kernelfit.solvers.products as products_mod

    def force(on: bool) -> None:
        for mod in (plan_mod, products_mod):
            monkeypatch.setattr(mod, "values_fit", lambda *a, **k: on)
    return force


@pytest.fixture
def rff_touched(monkeypatch) -> list:
    """The names of the random Fourier feature map's methods called (``fit``,
    ``transform``, ``fit_transform``; none of them computes anything any more)."""
    from kernelfit.features.random_fourier import RandomFourierFeatures

    touched = []
    for name in ("fit", "transform", "fit_transform"):
        monkeypatch.setattr(RandomFourierFeatures, name,
                            lambda self, *a, _n=name, **k: touched.append(_n))
    return touched
