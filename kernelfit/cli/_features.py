"""The feature-map options of ``kernelfit solve`` and ``kernelfit randomize``.

:func:`add_feature_arguments` declares ``--features`` and every map's options;
:func:`feature_params_from_args` turns the parsed flags into ``(name, params)`` for
:func:`kernelfit.features.make_feature_map`.
"""

from __future__ import annotations

from ..errors import InputError
from ..features import FEATURE_NAMES, default_params
from ._types import (bandwidth_arg, finite_float, grid_bits_arg, positive_float_or_none,
                     positive_int)

__all__ = ["add_feature_arguments", "feature_params_from_args"]

# CLI destination -> (feature name, constructor parameter)
_ARG_MAP = {
    "gabor_scales": ("gabor", "scales"),
    "gabor_orientations": ("gabor", "orientations"),
    "gabor_order": ("gabor", "order"),
    "gabor_pool": ("gabor", "pool"),
    "gabor_normalize": ("gabor", "normalize"),
    "gabor_grid_bits": ("gabor", "grid_bits"),
    "rff_dim": (("rff", "relu"), "n_components"),
    "rff_bandwidth": ("rff", "bandwidth"),
    "conv_filters": ("random-conv", "n_filters"),
    "conv_patch": ("random-conv", "patch_size"),
    "conv_pool": ("random-conv", "pool"),
    "conv_threshold": ("random-conv", "threshold"),
    "conv_filter_init": ("random-conv", "filter_init"),
    "conv_patch_norm": ("random-conv", "patch_norm"),
    "conv_power": ("random-conv", "power"),
    "conv_chunk": ("random-conv", "chunk_size"),
    "feature_batch": (("gabor", "rff", "relu", "random-conv"), "batch_size"),
}

# options whose value 'none' stands for the parameter None (switched off)
_NONE_IS_OFF = ("conv_patch_norm", "gabor_grid_bits")


def add_feature_arguments(parser) -> None:
    """Add ``--features`` and the options of every feature map to ``parser``.

    The cache options are ``--no-feature-cache`` (``args.no_feature_cache``) and
    ``--feature-cache-dir`` (``args.feature_cache_dir``); they are not map parameters and
    :func:`feature_params_from_args` leaves them out.
    """
    g = parser.add_argument_group("feature maps")
    g.add_argument("--features", choices=FEATURE_NAMES, default="raw",
                   help="feature map applied to the inputs before the kernel")
    g.add_argument("--gabor-scales", type=positive_int, default=2,
                   help="gabor: number of dyadic wavelet scales J (2^J <= image side)")
    g.add_argument("--gabor-orientations", type=positive_int, default=8,
                   help="gabor: number of orientations L in [0, pi)")
    g.add_argument("--gabor-order", type=int, choices=(1, 2), default=2,
                   help="gabor: scattering order (2 adds |x*psi1|*psi2 moduli; 1: first "
                        "order only)")
    g.add_argument("--gabor-pool", type=positive_int, default=7,
                   help="gabor: side of the average-pooling output grid")
    g.add_argument("--gabor-normalize", choices=("unit", "none"), default="unit",
                   help="gabor: scale each image's feature vector to unit Euclidean norm "
                        "(unit) or keep the coefficients as computed (none)")
    g.add_argument("--gabor-grid-bits", type=grid_bits_arg, default="auto",
                   help="gabor: round every feature to a multiple of 2^-B (auto: B = 11 for "
                        "unit-norm features, whose inner products are then exact at the "
                        "float32 rate; 'none': no rounding)")
    g.add_argument("--rff-dim", type=positive_int, default=4096,
                   help="rff / relu: number of random features D")
    g.add_argument("--rff-bandwidth", type=bandwidth_arg, default="median",
                   help="rff: bandwidth b of exp(-|x-z|^2/(2b^2)), or 'median' (median "
                        "pairwise training distance)")
    conv = default_params("random-conv")
    g.add_argument("--conv-filters", type=positive_int, default=conv["n_filters"],
                   help="random-conv: number of random filters (2*pool^2 features each)")
    g.add_argument("--conv-patch", type=positive_int, default=conv["patch_size"],
                   help="random-conv: filter (patch) side in pixels")
    g.add_argument("--conv-pool", type=positive_int, default=conv["pool"],
                   help="random-conv: side of the average-pooling grid")
    g.add_argument("--conv-threshold", type=finite_float, default=conv["threshold"],
                   help="random-conv: threshold t of ReLU(r - t) and ReLU(-r - t), in units "
                        "of each filter's response std on training patches")
    g.add_argument("--conv-filter-init", choices=("zca", "gaussian"),
                   default=conv["filter_init"],
                   help="random-conv: filters from ZCA-whitened random training patches "
                        "or from a Gaussian")
    g.add_argument("--conv-patch-norm", type=positive_float_or_none,
                   default=conv["patch_norm"],
                   help="random-conv: normalize each patch by its own mean and spread, with "
                        "eps = this times the mean patch variance; 'none' switches it off")
    g.add_argument("--conv-power", type=finite_float,
                   default=conv["power"],
                   help="random-conv: raise each pooled feature to this power in (0, 1] "
                        "before standardizing (0.5: square root; 1: off)")
    g.add_argument("--conv-chunk", type=positive_int, default=256,
                   help="random-conv: filters applied at once (bounds memory)")
    g.add_argument("--feature-batch", type=positive_int, default=None,
                   help="images per batch when computing features (default: per map, "
                        "gabor 128, rff/relu 1024, random-conv 64)")
    g.add_argument("--feature-cache-dir", default=None,
                   help="directory of the on-disk feature cache (default: chosen by the "
                        "command)")
    g.add_argument("--no-feature-cache", action="store_true",
                   help="recompute features instead of using the on-disk cache")
    # each map option's default, to tell a value the user gave for a map not chosen
    parser.set_defaults(_feature_option_defaults={
        dest: parser.get_default(dest) for dest in _ARG_MAP})


def feature_params_from_args(args) -> tuple:
    """``(name, params)`` for the map chosen by ``--features``; only that map's options."""
    name = getattr(args, "features", "raw") or "raw"
    if name not in FEATURE_NAMES:
        raise InputError(f"unknown feature map {name!r}; choose one of {', '.join(FEATURE_NAMES)}")
    params = {}
    defaults = getattr(args, "_feature_option_defaults", None) or {}
    for dest, (owners, pname) in _ARG_MAP.items():
        owners = (owners,) if isinstance(owners, str) else owners
        if name not in owners and dest in defaults and getattr(args, dest, None) != defaults[dest]:
            flag = "--" + dest.replace("_", "-")
            raise InputError(f"{flag} is an option of --features {' or '.join(owners)}, not of "
                             f"--features {name}; add --features {owners[0]}, or leave "
                             f"{flag} out")
        if name in owners:
            value = getattr(args, dest, None)
            if value is not None:
                # positive_float_or_none's 'none' switches the parameter off
                off = dest in _NONE_IS_OFF and value == "none"
                params[pname] = None if off else value
    return name, params


def feature_flags(name: str) -> dict:
    """The feature map ``name``'s parameter names -> their command-line flags (``power`` ->
    ``--conv-power`` for random-conv), for its messages on the command line."""
    out = {}
    for dest, (owners, pname) in _ARG_MAP.items():
        owners = (owners,) if isinstance(owners, str) else owners
        if name in owners:
            out[pname] = "--" + dest.replace("_", "-")
    return out
