"""Argument groups and output helpers shared by the subcommands."""

from __future__ import annotations

import sys
from typing import Iterable


from .._io import dumps_json, json_default
from ..errors import InputError
from ._types import bandwidth_arg, finite_float, nonneg_float, nonneg_int, positive_int, size_arg

__all__ = ["add_data_arguments", "add_kernel_arguments", "add_solver_arguments",
           "config_from_args", "print_json", "print_table", "positive_int", "bandwidth_arg",
           "json_default"]


def add_data_arguments(p) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits",
                   help="mnist, fashion-mnist, cifar10, digits (bundled, no download), "
                        "imagefolder:PATH (a train/<class>/*, test/<class>/* tree or .tar.gz) "
                        "or npz:PATH (your arrays X_train, y_train[, X_test, y_test])")
    g.add_argument("--data-dir", default=None,
                   help="folder holding the dataset files (else $KERNELFIT_DATA, else the "
                        "per-user cache); missing files are downloaded and verified there")
    g.add_argument("--n-train", type=positive_int, default=None,
                   help="number of training points (default: all)")
    g.add_argument("--n-test", type=nonneg_int, default=None,
                   help="number of test points (default: all)")
    g.add_argument("--balanced", action="store_true", help="class-balanced subsets")
    g.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of subsets and random features")


def add_kernel_arguments(p) -> None:
    from ..kernels import KERNEL_NAMES

    g = p.add_argument_group("kernel")
    g.add_argument("--kernel", default="gaussian", choices=KERNEL_NAMES,
                   help="gaussian exp(-|x-z|^2/(2 h^2)), laplacian exp(-|x-z|/h), linear <x,z>, "
                        "polynomial (gamma <x,z> + coef0)^degree, normalized <x/|x|,z/|z|>^degree")
    g.add_argument("--bandwidth", type=bandwidth_arg, default=None,
                   help="h of the gaussian/laplacian kernels, or 'median' (median pairwise "
                        "distance of a seeded sample); default: chosen for the features "
                        "(pixels of the image datasets 5, gabor 1 x median, other feature "
                        "maps and npz arrays 0.75 x median; see README)")
    g.add_argument("--degree", type=positive_int, default=None,
                   help="degree of the polynomial and normalized kernels (default: 4)")
    g.add_argument("--gamma", type=finite_float, default=None,
                   help="polynomial kernel scale (default: 1)")
    g.add_argument("--coef0", type=finite_float, default=None,
                   help="polynomial kernel offset (default: 1)")


def check_kernel_flags(args) -> None:
    """Refuse a kernel flag the chosen kernel has no parameter for (it would be ignored):
    ``--kernel gaussian --gamma 0.02``, typed as scikit-learn's RBF gamma, names the width
    by --bandwidth instead."""
    # the kernels each flag's parameter applies to; the width scikit-learn's RBF gamma means
    from ..kernel_defaults import KERNEL_PARAMS, rbf_gamma_width

    kernel = getattr(args, "kernel", None)
    for key, kernels in KERNEL_PARAMS.items():
        if kernel is None or kernel in kernels or getattr(args, key, None) is None:
            continue
        flag = f"--{key}"
        which = " and ".join(kernels)
        way = "leave it out"
        if key == "gamma" and kernel == "gaussian":
            h = rbf_gamma_width(args.gamma)
            way = (f"give the width as --bandwidth h instead (scikit-learn's RBF gamma is "
                   f"1/(2 h^2): gamma {args.gamma:g} is --bandwidth {h:.4g})"
                   if h is not None else "give the width as --bandwidth h instead")
        raise InputError(f"{flag} applies to the {which} kernel{'s' if len(kernels) > 1 else ''}"
                         f", not --kernel {kernel}: {way}, or choose --kernel "
                         f"{kernels[0]}", param=key)


def add_solver_arguments(p) -> None:
    from ..solvers.exact import DTYPES, SOLVERS

    g = p.add_argument_group("solver")
    g.add_argument("--solver", default="cholesky", choices=SOLVERS,
                   help="cholesky: tiled in-place Cholesky (exact, K positive definite); "
                        "eigh/lstsq: explicit minimum-norm solution for singular K, computed "
                        "in float64")
    g.add_argument("--dtype", default=None, choices=DTYPES,
                   help="precision in which the Cholesky solver stores and factors K; "
                        "naming one fixes it, as --precision float32/float64 does (default: "
                        "what --precision says; auto: float64, or a float32 factor refined "
                        "in float64 where that is faster; eigh and lstsq always compute in "
                        "float64)")
    g.add_argument("--ridge", type=nonneg_float, default=0.0,
                   help="added to K's diagonal (0: exact interpolation)")
    g.add_argument("--device", default="cpu", choices=("auto", "cpu", "gpu"),
                   help="auto uses a GPU when CuPy and a CUDA device are usable")
    g.add_argument("--tile-size", type=positive_int, default=None,
                   help="tile edge of the blocked Gram/Cholesky (default: automatic)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    b = p.add_argument_group("beyond memory")
    b.add_argument("--precision", default="auto", choices=("auto", "float64", "float32", "mixed"),
                   help="mixed: K stored/factored in float32, solution refined to float64 "
                        "accuracy against float64 kernel products; auto: mixed when it fits "
                        "and is expected faster (falls back to float64 when it cannot reach "
                        "the float64 residual, or would reach it later than a float64 "
                        "factorization), else float64")
    b.add_argument("--memory-budget", type=size_arg, default=None, metavar="SIZE",
                   help="the most memory the solve plans for, e.g. 16GiB (at most what is "
                        "available; default: what is available, mixed precision keeping "
                        "tiles of K for its refinement within 40%% of it, or up to the "
                        "float64 solve's memory where --precision auto takes mixed only so); "
                        "a larger budget "
                        "keeps more of K: a faster refinement, the same answer")
    b.add_argument("--tol", type=finite_float, default=None,
                   help="relative residual at which mixed-precision refinement stops "
                        "(default 1e-10)")
    b.add_argument("--max-iter", type=positive_int, default=None,
                   help="refinement steps at most (default 30)")
    b.add_argument("--refine", dest="refinement", default=None, choices=("cg", "ir"),
                   help="cg (default): CG preconditioned by the low-precision factor; ir: "
                        "iterative refinement")
    b.add_argument("--out-of-core", dest="ooc_dir", default=None, metavar="DIR",
                   help="out-of-core Cholesky: tiles and checkpoints in DIR")
    b.add_argument("--resume", action="store_true",
                   help="continue an interrupted out-of-core run in DIR")
    b.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the tiled work on the Dask scheduler at ADDRESS")
    b.add_argument("--distributed", default=None, choices=("local",),
                   help="local: run the tiled work on a local Dask cluster")


def check_output_paths(args) -> None:
    """Refuse unwritable output paths before any work (nothing is created)."""
    from .._io import check_not_overwriting, check_writable_file, check_writable_folder

    # an empty path ('') is refused too: it would write nothing, or into the current folder
    for param in ("save", "output"):
        if getattr(args, param, None) is not None:
            check_writable_file(getattr(args, param), param=param)
            check_not_overwriting(getattr(args, param), input_files(args), param=param)
    folders = [("ooc_dir", getattr(args, "ooc_dir", None)), ("out", getattr(args, "out", None))]
    if getattr(args, "feature_cache_dir", None) is not None \
            and not getattr(args, "no_feature_cache", False) \
            and getattr(args, "features", "raw") != "raw":
        folders.append(("cache_dir", args.feature_cache_dir))
    for param, folder in folders:
        if folder is None:
            continue
        try:
            check_writable_folder(folder, param=param)
        except InputError as exc:
            if param != "cache_dir":
                raise
            # a cache already filled elsewhere is still written to (new entries, rebuilt
            # damaged ones): the way out is computing the features without it
            raise InputError(f"{exc.message}; or leave --feature-cache-dir out and give "
                             "--no-feature-cache (the features are then computed, not "
                             "stored)", **exc.facts) from None


def input_files(args) -> list:
    """The files a command reads, as ``(what, path)`` pairs for
    :func:`kernelfit._io.check_not_overwriting`: ``--input``, ``--model``, and the file of an
    ``npz:PATH`` or ``imagefolder:PATH`` dataset (an archive; a folder is never a file)."""
    out = [("the --input file", getattr(args, "input", None)),
           ("the --model file", getattr(args, "model", None))]
    dataset = getattr(args, "dataset", None)
    if isinstance(dataset, str) and dataset.strip():
        out.append((f"the file of --dataset {dataset.strip()}", dataset_file(dataset)))
    return out


def dataset_file(name):
    """The absolute path of the file or folder of an ``npz:PATH`` or ``imagefolder:PATH``
    dataset, else None (a dataset name, or one that is not valid: refused later)."""
    from ..datasets import dataset_location

    try:
        return dataset_location(name)
    except InputError:
        return None


def config_from_args(args):
    """The :class:`~kernelfit.options.RunOptions` tree of the parsed arguments (argparse
    destinations carry the options' flat names)."""
    from ..options import RunOptions

    check_kernel_flags(args)
    names = RunOptions.flat_names()
    flat = {k: v for k, v in vars(args).items() if k in names}
    for key in ("degree", "gamma", "coef0", "tol", "refinement"):  # not given: the options'
        if key in flat and flat[key] is None:                         # defaults
            del flat[key]
    if getattr(args, "features", None) is not None:
        from ._features import feature_params_from_args

        flat["features"], flat["feature_params"] = feature_params_from_args(args)
    else:
        flat.pop("features", None)
    flat["feature_cache"] = not getattr(args, "no_feature_cache", False)
    flat["cache_dir"] = getattr(args, "feature_cache_dir", None)
    if flat["cache_dir"] is not None:  # a folder for a cache that would not be used
        if flat.get("features", "raw") == "raw":
            raise InputError("--feature-cache-dir is the folder of a feature map's cache; "
                             "--features raw has none: add --features NAME, or leave "
                             "--feature-cache-dir out")
        if not flat["feature_cache"]:
            raise InputError("--feature-cache-dir and --no-feature-cache cannot be combined: "
                             "give one of them")
    flat["show_progress"] = (False if (args.no_progress or getattr(args, "json", False))
                             else None)
    opts = RunOptions.from_flat(**flat)
    # refinement flags typed at their default values (--tol 1e-10, --refine cg) are given
    # too: refused where nothing refines, as other values are (the options tree sees values)
    opts.solver.check_refinement_given(typed_refinement_flags(args))
    return opts


def typed_refinement_flags(args) -> list:
    """The refinement options typed on the command line (``tol``, ``max_iter``,
    ``refinement``), whatever their values."""
    return [k for k in ("tol", "max_iter", "refinement") if getattr(args, k, None) is not None]


def print_json(obj, file=None) -> None:
    """``obj`` as strict JSON (a non-finite number as null, :func:`~kernelfit._io.dumps_json`)."""
    print(dumps_json(obj, indent=2), file=file or sys.stdout)


def print_table(rows: Iterable, title: str = "", file=None) -> None:
    """Two-column aligned table of (label, value) rows."""
    from ..report import two_column

    out = file or sys.stdout
    if title:
        print(title, file=out)
    for line in two_column(rows):
        print(line, file=out)
