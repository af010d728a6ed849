"""Fixtures shared by the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared real datasets (``../shared/data`` next to the repository); skip when absent."""
    path = (REPO_ROOT / ".." / "shared" / "data").resolve()
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
