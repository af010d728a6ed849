"""Checks against the real datasets kept in the shared data directory (skipped when absent)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kernelfit.datasets import load_dataset, load_raw

pytestmark = pytest.mark.data

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(autouse=True)
def _isolated(isolated_data_env):
    return isolated_data_env


@pytest.fixture
def shared_mnist(shared_data_dir):
    if not (shared_data_dir / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("shared MNIST files not available")
    return shared_data_dir


def test_real_mnist_sanity_figures(shared_mnist):
    # verifies the re-compressed train-images file through its content checksum
    raw = load_raw("mnist", data_dir=shared_mnist, download=False)
    assert raw.X_train.shape == (60000, 28, 28) and raw.X_test.shape == (10000, 28, 28)
    assert np.bincount(raw.y_train, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    pixels = raw.X_train.astype(np.float64) / 255.0
    assert pixels.mean() == pytest.approx(0.1307, abs=5e-5)
    assert pixels.std() == pytest.approx(0.3081, abs=5e-5)


def test_real_mnist_through_env_and_subset(shared_mnist, monkeypatch):
    monkeypatch.setenv("KERNELFIT_DATA", str(shared_mnist))
    ds = load_dataset("mnist", n_train=1000, n_test=500, balanced=True, seed=0,
                      download=False, dtype=np.float32)
    assert ds.X_train.shape == (1000, 784) and ds.X_train.dtype == np.float32
    assert ds.class_counts().tolist() == [100] * 10
    assert ds.class_counts("test").tolist() == [50] * 10
    assert 0.0 <= ds.X_train.min() and ds.X_train.max() == 1.0


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("KERNELFIT_SLOW_TESTS"),
                    reason="decodes 60,000 JPEGs (~15 s); set KERNELFIT_SLOW_TESTS=1")
def test_real_cifar10_jpeg_tarball(shared_data_dir, tmp_path):
    archive = shared_data_dir / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip("shared CIFAR-10 JPEG archive not available")
    ds = load_dataset(f"imagefolder:{archive}", data_dir=tmp_path, dtype=np.float32)
    assert ds.X_train.shape == (50000, 3072) and ds.X_test.shape == (10000, 3072)
    assert ds.class_counts().tolist() == [5000] * 10
    assert ds.class_counts("test").tolist() == [1000] * 10
    assert ds.class_names[0] == "airplane" and ds.image_shape == (32, 32, 3)
    assert float(ds.X_train.mean(dtype=np.float64)) == pytest.approx(0.4734, abs=2e-3)
