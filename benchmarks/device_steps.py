"""The steps of ``benchmarks/device_check.sh``: one function per step, each writes one JSON.

    python3 benchmarks/device_steps.py STEP --dev gpu --data .devdata --out OUT/STEP.json

``--tiny`` (set by ``DEV=cpu``) shrinks every size so that the whole script runs in seconds
on a CPU: a dry run of the plumbing, not a measurement. A step whose data is missing writes
``{"status": "skipped", "reason": ...}``; one that fails writes ``{"status": "error", ...}``
and exits 1; the shell writes the JSON of a step that timed out or crashed.

Times are wall-clock seconds around work that ends with a device synchronize, after a
warm-up of the same operations. Every record carries the device and the machine.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("gpu_tests", "agreement", "mnist60k", "n100k", "dense_vs_tiles", "gabor70k",
         "randconv", "bench_cli")


class Skip(Exception):
    """The step cannot run here (missing data); the reason goes into its JSON."""


# ------------------------------------------------------------------ helpers
def _sync(be):
    be.synchronize()
    return time.perf_counter()


def _mnist(a, n_train=None, n_test=None):
    from kernelfit.datasets import load_dataset

    if not (Path(a.data) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        raise Skip(f"no MNIST under {a.data}/mnist (stage it as the header of "
                   "benchmarks/device_check.sh says)")
    return load_dataset("mnist", data_dir=a.data, n_train=n_train, n_test=n_test, seed=0,
                        download=False)


def _cifar_images(a, n):
    """The first ``n`` training images of the CIFAR-10 JPEG tarball, decoded (n, 3072)."""
    from PIL import Image

    tar_path = Path(a.data) / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
    if not tar_path.is_file():
        raise Skip(f"no CIFAR-10 tarball at {tar_path} (stage it as the header of "
                   "benchmarks/device_check.sh says)")
    out = []
    with tarfile.open(tar_path) as tf:
        for m in tf:
            if m.isfile() and "/train/" in m.name and m.name.endswith(".jpg"):
                with Image.open(tf.extractfile(m)) as im:
                    out.append(np.asarray(im.convert("RGB"), dtype=np.uint8).reshape(-1))
                if len(out) >= n:
                    break
    return np.stack(out).astype(np.float32) / 255.0


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# ------------------------------------------------------------------ steps
def gpu_tests(a, be) -> dict:
    """The GPU tests (tests/test_gpu.py, and the backend tests on the device)."""
    files = ["tests/test_gpu.py"] + ([] if a.tiny else ["tests/test_backend.py"])
    xml = Path(a.out).with_suffix(".xml")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={xml}", *files] + (["-k", "potrf_returns"] if a.tiny else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    rec = {"command": " ".join(cmd[1:]), "returncode": proc.returncode,
           "seconds": time.perf_counter() - t0, "output_tail": proc.stdout[-4000:],
           "stderr_tail": proc.stderr[-2000:]}
    if xml.is_file():
        import xml.etree.ElementTree as ET

        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        rec["counts"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors",
                                                          "skipped")}
    if proc.returncode not in (0, 5):
        rec["status"] = "failed"
    return rec


def agreement(a, be) -> dict:
    """CPU against GPU on n = 5,000 MNIST points: alphas, predictions, residuals."""
    from kernelfit.backend import to_host
    from kernelfit.estimator import KernelInterpolator

    n, nt = (300, 100) if a.tiny else (5000, 1000)
    ds = _mnist(a, n, nt)
    out = {"n": n, "n_test": nt, "kernel": {"kernel": "gaussian", "bandwidth": 5.0}}
    res = {}
    for dev in ("cpu", be.device):
        X = ds.X_train if dev == "cpu" else be.asarray(ds.X_train)
        t0 = time.perf_counter()
        est = KernelInterpolator(kernel="gaussian", bandwidth=5.0, device=dev,
                                 show_progress=False).fit(X, ds.y_train)
        pred = est.predict(ds.X_test if dev == "cpu" else be.asarray(ds.X_test))
        res[dev] = {"alpha": to_host(est.alpha_), "pred": to_host(pred),
                    "seconds": time.perf_counter() - t0, "device_used": est.device_,
                    "relative_residual": est.relative_residual_,
                    "test_error": float(np.mean(to_host(pred) != ds.y_test))}
    c, g = res["cpu"], res[be.device]
    out.update({"alpha_relative_difference": _rel(g["alpha"], c["alpha"]),
                "predictions_equal_fraction": float(np.mean(g["pred"] == c["pred"])),
                **{f"{d}_{k}": v[k] for d, v in (("cpu", c), ("dev", g))
                   for k in ("seconds", "device_used", "relative_residual", "test_error")}})
    out["agree"] = bool(out["predictions_equal_fraction"] == 1.0
                        and out["alpha_relative_difference"] < 1e-6)
    return out


def mnist60k(a, be) -> dict:
    """benchmarks/bench_gpu.py: MNIST float64 end to end, Gaussian and normalized quartic."""
    _mnist(a, 10, 10)  # skip early without data
    n, nt, nw = (400, 100, 150) if a.tiny else (60000, 10000, 4096)
    res = Path(a.out).with_name("bench_gpu_record.json")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", be.device,
           "--data-dir", a.data, "--n", str(n), "--n-test", str(nt), "--warmup-n", str(nw),
           "--skip-cpu", "--repeats", "2", "--out", str(res)]
    if a.tiny:
        cmd += ["--kernels", "gaussian"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    rec = {"command": " ".join(cmd[1:]), "returncode": proc.returncode,
           "output_tail": proc.stdout[-4000:], "stderr_tail": proc.stderr[-2000:]}
    if res.is_file():
        rec["bench_gpu"] = json.loads(res.read_text())
    if proc.returncode != 0:
        rec["status"] = "failed"
    return rec


def dense_vs_tiles(a, be) -> dict:
    """Gram + factor at one n: dense single call vs tiles, fused finish on/off, devInfo
    read per tile vs once per factorization. Each variant: 2 runs, solve residual checked."""
    from kernelfit.kernels import get_kernel
    from kernelfit.solvers.cholesky import cholesky_inplace, cholesky_solve
    from kernelfit.solvers.products import build_gram, kernel_matvec

    n = 400 if a.tiny else 40000
    try:
        X = _mnist(a, n, 10).X_train
    except Skip:
        X = np.random.default_rng(0).uniform(0, 1, size=(n, 784))
    Xb = be.asarray(np.asarray(X, np.float64))
    k = get_kernel("gaussian", bandwidth=5.0)
    small, mid = (100, 200) if a.tiny else (8192, 16384)
    variants = [("dense", n, "1", False), ("dense_unfused", n, "0", False),
                ("tiles_%d" % small, small, "1", False), ("tiles_%d" % mid, mid, "1", False),
                ("tiles_%d_info_once" % small, small, "1", True)]
    b = be.asarray(np.random.default_rng(1).standard_normal((n, 1)))
    out = {"n": n, "flops_factor": n ** 3 / 3.0, "variants": {}}
    for name, ts, fused, once in variants:
        os.environ["KERNELFIT_FUSED_FINISH"] = fused
        runs = []
        for _ in range(2):
            t0 = _sync(be)
            T = build_gram(k, Xb, tile_size=ts, backend=be, show_progress=False)
            t1 = _sync(be)
            if once and hasattr(be, "pending_info"):
                potrf = be.potrf
                count = iter(range(10 ** 6))
                be.potrf = lambda t, _p=potrf: _p(t, defer=next(count))
                try:
                    cholesky_inplace(T, show_progress=False)
                finally:
                    del be.potrf
                bad = [i for i in be.pending_info() if i[1] != 0]
                if bad:
                    raise RuntimeError(f"potrf failed on tiles {bad}")
            else:
                cholesky_inplace(T, show_progress=False)
            t2 = _sync(be)
            runs.append({"gram_s": t1 - t0, "factor_s": t2 - t1,
                         "factor_tflops": n ** 3 / 3.0 / max(t2 - t1, 1e-12) / 1e12})
        x = cholesky_solve(T, b)
        T.free()
        del T
        r = kernel_matvec(k, Xb, x, tile_size=small, backend=be, show_progress=False) - b
        out["variants"][name] = {"tile_size": ts, "fused_finish": fused == "1",
                                 "devinfo_once": once, "runs": runs,
                                 "solve_relative_residual": float(be.xp.linalg.norm(r)
                                                                  / be.xp.linalg.norm(b))}
        be.free_pool()
    os.environ.pop("KERNELFIT_FUSED_FINISH", None)
    return out


def n100k(a, be) -> dict:
    """n = 100,000 float64 exact in device memory: all 70,000 MNIST images plus 30,000
    training images shifted one pixel right (distinct points, real labels)."""
    from kernelfit.estimator import KernelInterpolator

    n = 600 if a.tiny else 100_000
    ds = _mnist(a, 500, 100) if a.tiny else _mnist(a)
    X = np.concatenate([ds.X_train, ds.X_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    extra = n - X.shape[0]
    if extra > 0:
        imgs = ds.X_train[:extra].reshape(extra, 28, 28)
        shifted = np.zeros_like(imgs)
        shifted[:, :, 1:] = imgs[:, :, :-1]
        X = np.concatenate([X, shifted.reshape(extra, -1)])
        y = np.concatenate([y, ds.y_train[:extra]])
    X, y = X[:n], y[:n]
    Xb = be.asarray(np.asarray(X, np.float64))
    be.reset_peak()
    t0 = _sync(be)
    est = KernelInterpolator(kernel="gaussian", bandwidth=5.0, device=be.device,
                             compute_residual=True, show_progress=False).fit(Xb, y)
    t1 = _sync(be)
    return {"n": n, "d": int(X.shape[1]), "data": "MNIST train+test + shifted train images",
            "fit_s": t1 - t0, "timings": est.timings_, "relative_residual":
            est.relative_residual_, "tile_size": est.fit_info_.get("tile_size"),
            "precision": est.fit_info_.get("precision"),
            "peak_device_memory_bytes": be.peak_memory(), "memory": be.memory_stats()}


def gabor70k(a, be) -> dict:
    """Gabor features of all 70,000 MNIST images on the device (warm-up on 256 first)."""
    from kernelfit.features.gabor import GaborFeatures

    ds = _mnist(a, 400 if a.tiny else None, 100 if a.tiny else None)
    X = np.concatenate([ds.X_train, ds.X_test])
    fmap = GaborFeatures((28, 28), device=be.device, progress=False).fit(X[:256])
    t0 = _sync(be)
    fmap.transform(X[:256])
    t1 = _sync(be)
    F = fmap.transform(X)
    t2 = _sync(be)
    ref = GaborFeatures((28, 28), device="cpu", progress=False).fit(X[:256]).transform(X[:64])
    return {"images": int(X.shape[0]), "features": int(F.shape[1]), "warmup_s": t1 - t0,
            "transform_s": t2 - t1, "images_per_s": X.shape[0] / max(t2 - t1, 1e-12),
            "cpu_agreement_relative_difference": _rel(F[:64], ref)}


def randconv(a, be) -> dict:
    """Random-conv features, 32,000 filters, on a subset of CIFAR-10 training images; the
    time for all 60,000 is extrapolated from the measured rate (said in the record)."""
    from kernelfit.features.random_conv import RandomConvFeatures

    n_img, n_filters = (40, 64) if a.tiny else (3000, 32000)
    X = _cifar_images(a, n_img)
    t0 = time.perf_counter()
    fmap = RandomConvFeatures((32, 32, 3), n_filters=n_filters, device=be.device,
                              progress=False).fit(X)
    fmap.transform(X[:16])
    t1 = _sync(be)
    F = fmap.transform(X)
    t2 = _sync(be)
    rate = X.shape[0] / max(t2 - t1, 1e-12)
    del F
    return {"images": int(X.shape[0]), "filters": n_filters, "features": int(fmap.n_features_out_),
            "fit_and_warmup_s": t1 - t0, "transform_s": t2 - t1, "images_per_s": rate,
            "extrapolated_60000_images_s": 60000 / rate,
            "gram_sums": _randconv_gram(a, be, X),
            "note": "measured on the first images of the JPEG tarball (a lossy re-encoding "
                    "of CIFAR-10); the 60,000-image times are extrapolated, not measured"}


def _randconv_gram(a, be, X) -> dict:
    """cifar-random-conv's Gram sums on ``be`` (accumulate_gram: images, features and sums
    in device memory): agreement with the CPU on a slice, then the rates of a larger run and
    the full pass (n = 50,000 + 10,000 test, 32,000 filters) extrapolated from them."""
    from kernelfit.features.random_conv import RandomConvFeatures
    from kernelfit.features.random_conv_gram import accumulate_gram, chunk_flop

    def run(device, Xtr, Xte, filters):
        fmap = RandomConvFeatures((32, 32, 3), n_filters=filters, standardize=False,
                                  device=device, progress=False).fit(Xtr)
        fmap.standardize = True
        t = _sync(be)
        st = accumulate_gram(fmap, Xtr, Xte, progress=False)
        return st, _sync(be) - t, fmap

    small = (24, 8, 16) if a.tiny else (300, 100, 64)
    Xs, Xst = X[:small[0]], X[small[0]:small[0] + small[1]]
    ref, _, _ = run("cpu", Xs, Xst, small[2])
    got, _, _ = run(be.device, Xs, Xst, small[2])
    agree = {key: _rel(got[key], ref[key]) for key in ("G", "C", "sq", "sq_test")}
    n, m, filters = (30, 10, 32) if a.tiny else (2500, 500, 2048)
    st, secs, fmap = run(be.device, X[:n], X[n:n + m], filters)
    stages = st["stages"]
    full_conv, full_gram = chunk_flop(fmap, 50000, 10000, 32000)
    conv_rate = stages["conv"]["flop"] / max(stages["conv"]["seconds"], 1e-12)
    gram_rate = stages["gram"]["flop"] / max(stages["gram"]["seconds"], 1e-12)
    return {"agreement_with_cpu_max_rel": agree, "agreement_sizes": list(small),
            "host_copy": bool(got.get("host_copy")), "n": n, "n_test": m, "filters": filters,
            "seconds": secs, "stages": stages, "conv_gflops_per_s": conv_rate / 1e9,
            "gram_gflops_per_s": gram_rate / 1e9,
            "extrapolated_full_pass_s": full_conv / conv_rate + full_gram / gram_rate,
            "extrapolated_note": "n = 50,000 + 10,000 test images, 32,000 filters, at these "
                                 "rates (the Gram rate grows with n: an upper bound)"}


def bench_cli(a, be) -> dict:
    """``kernelfit bench`` with its GPU columns (random data; peers: scikit-learn)."""
    ns = "200" if a.tiny else "5000,10000"
    out_dir = Path(a.out).with_name("bench_cli")
    cmd = [sys.executable, "-m", "kernelfit", "bench", "--n", ns, "--device",
           "all" if be.device == "gpu" else "cpu",
           "--peers", "none" if a.tiny else "sklearn", "--repeats", "1" if a.tiny else "2",
           "--peer-repeats", "1", "--budget", "60", "--timeout", "60",
           "--no-progress", "--out", str(out_dir)]
    if a.tiny:
        cmd += ["--no-peaks", "--d", "20"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    rec = {"command": " ".join(cmd[1:]), "returncode": proc.returncode,
           "output_tail": proc.stdout[-4000:], "stderr_tail": proc.stderr[-2000:],
           "results": {p.name: json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))}
           if out_dir.is_dir() else {}}
    if proc.returncode != 0:
        rec["status"] = "failed"
    return rec


# ------------------------------------------------------------------ driver
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=STEPS)
    p.add_argument("--dev", default="gpu", choices=("gpu", "cpu"))
    p.add_argument("--data", default=str(ROOT / ".devdata"))
    p.add_argument("--out", required=True)
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args(argv)
    rec = {"step": a.step, "device_requested": a.dev, "tiny_dry_run": a.tiny,
           "date": _dt.datetime.now().isoformat(timespec="seconds")}
    code = 0
    t0 = time.perf_counter()
    try:
        from kernelfit.backend import get_backend
        from kernelfit.bench.machine import describe_machine

        rec["machine"] = describe_machine()
        be = get_backend(a.dev)
        rec["device"] = be.describe()
        rec.update(globals()[a.step](a, be))
        rec.setdefault("status", "ok")
    except Skip as exc:
        rec.update(status="skipped", reason=str(exc))
    except Exception as exc:  # the record says what failed; the other steps still run
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc()[-4000:])
        code = 1
    rec["step_seconds"] = time.perf_counter() - t0
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(a.out).with_suffix(".tmp")
    from bench_gpu import _json_default  # benchmarks/ is this script's folder

    tmp.write_text(json.dumps(rec, indent=1, default=_json_default))
    tmp.replace(a.out)
    print(f"{a.step}: {rec['status']} ({rec['step_seconds']:.1f} s)")
    return code if rec["status"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
