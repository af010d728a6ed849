"""Canonical download locations and published checksums of the datasets kernelfit fetches.

Every file has a SHA-256 of its bytes as published. MNIST files additionally carry the
SHA-256 of their *decompressed* content: gzip output depends on the compressor, so a copy
that was re-compressed (for example the shared development copy of
``train-images-idx3-ubyte.gz``, whose gzip bytes differ from LeCun's file) is accepted when its
decompressed bytes are the published ones. The same content hash verifies uncompressed
(``.gz``-less) copies. Fashion-MNIST has no published content hash, so an uncompressed
Fashion-MNIST copy is checked for structure only.

Sources: the MD5s published with each dataset were cross-checked against the SHA-256s that
TensorFlow Datasets, torchvision and others pin for the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

__all__ = ["RemoteFile", "SOURCES", "MNIST_MIRRORS", "FASHION_MNIST_MIRRORS", "CIFAR10_URLS"]


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its name, where to get it and how to verify it."""

    filename: str
    urls: Tuple[str, ...]
    sha256: Optional[str]
    #: SHA-256 of the gunzipped content, accepted in place of ``sha256`` (see module docs).
    content_sha256: Optional[str] = None
    size: Optional[int] = None
    md5: Optional[str] = field(default=None, compare=False)


MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://yann.lecun.com/exdb/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MNIST_MIRRORS = (
    "https://fashion-mnist.s3.eu-central-1.amazonaws.com/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
CIFAR10_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)


def _mirrored(mirrors, filename, **kw) -> RemoteFile:
    return RemoteFile(filename=filename, urls=tuple(m + filename for m in mirrors), **kw)


#: dataset name -> role -> file. Tests may monkeypatch entries.
SOURCES: Dict[str, Dict[str, RemoteFile]] = {
    "mnist": {
        "train_images": _mirrored(
            MNIST_MIRRORS, "train-images-idx3-ubyte.gz", size=9912422,
            sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            content_sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train_labels": _mirrored(
            MNIST_MIRRORS, "train-labels-idx1-ubyte.gz", size=28881,
            sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            content_sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            md5="d53e105ee54ea40749a09fcbcd1e9432"),
        "test_images": _mirrored(
            MNIST_MIRRORS, "t10k-images-idx3-ubyte.gz", size=1648877,
            sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            content_sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            md5="9fb629c4189551a2d022fa330f9573f3"),
        "test_labels": _mirrored(
            MNIST_MIRRORS, "t10k-labels-idx1-ubyte.gz", size=4542,
            sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            content_sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            md5="ec29112dd5afa0611ce80d1b7f02629c"),
    },
    "fashion-mnist": {
        "train_images": _mirrored(
            FASHION_MNIST_MIRRORS, "train-images-idx3-ubyte.gz", size=26421880,
            sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": _mirrored(
            FASHION_MNIST_MIRRORS, "train-labels-idx1-ubyte.gz", size=29515,
            sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            md5="25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": _mirrored(
            FASHION_MNIST_MIRRORS, "t10k-images-idx3-ubyte.gz", size=4422102,
            sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            md5="bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": _mirrored(
            FASHION_MNIST_MIRRORS, "t10k-labels-idx1-ubyte.gz", size=5148,
            sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            md5="bb300cfdad3c16e7a12a480ee83cd310"),
    },
    "cifar10": {
        "archive": RemoteFile(
            filename="cifar-10-python.tar.gz", urls=CIFAR10_URLS, size=170498071,
            sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            md5="c58f30108f718f92721af3b95e74349a"),
    },
}
