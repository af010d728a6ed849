"""The options tree (kernelfit.options): frozen, validated once, one spelling per option."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernelfit import KernelInterpolator
from kernelfit.errors import InputError
from kernelfit.options import (DataOptions, FeatureOptions, FrozenParams, KernelOptions,
                               RunOptions, SolverOptions)


@pytest.mark.parametrize("make, match", [
    (lambda: KernelOptions(bandwidth="wide"), "bandwidth"),
    (lambda: KernelOptions(bandwidth=-1.0), "bandwidth"),
    (lambda: KernelOptions(name="sigmoid"), "unknown kernel"),
    (lambda: KernelOptions(name="polynomial", degree=0), "degree"),
    (lambda: SolverOptions(solver="qr"), "is unknown"),
    (lambda: SolverOptions(dtype="float16"), "dtype"),
    (lambda: SolverOptions(ridge=-1), "ridge"),
    (lambda: SolverOptions(tol=0.5e-16), "tol"),
    (lambda: SolverOptions(resume=True), "out-of-core"),
    (lambda: SolverOptions(scheduler="tcp://x:1", distributed="local"), "either"),
    (lambda: DataOptions(n_train=0), "n_train"),
    (lambda: DataOptions(n_test=-1), "n_test"),
    (lambda: DataOptions(n_train="many"), "n_train"),
    (lambda: FeatureOptions(name="pixels"), "unknown feature map"),
    (lambda: RunOptions(seed="one"), "seed"),
    (lambda: RunOptions.from_flat(bandwith=2.0), "unknown option"),
])
def test_bad_values_are_refused_when_made(make, match):
    with pytest.raises(InputError, match=match):
        make()


def test_frozen_and_revalidated_on_replace():
    s = SolverOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.solver = "eigh"
    with pytest.raises(InputError):
        dataclasses.replace(s, solver="nope")
    assert dataclasses.replace(s, solver="eigh").solver == "eigh" and s.solver == "cholesky"


def test_normal_forms_and_private_feature_params():
    s = SolverOptions(ridge=1, tile_size=64.0)
    assert isinstance(s.ridge, float) and isinstance(s.tile_size, int)
    assert s.max_iter is None  # the refinement default stays as asked
    params = {"n_components": 8}
    f = FeatureOptions("rff", params)
    params["n_components"] = 9
    assert f.params == {"n_components": 8}


def test_feature_params_cannot_be_changed_and_keep_their_dict_face():
    import copy
    import json
    import pickle

    f = FeatureOptions("rff", {"n_components": 8, "bandwidth": "median"})
    with pytest.raises(TypeError):
        f.params["n_components"] = 9
    with pytest.raises(TypeError):
        del f.params["bandwidth"]
    with pytest.raises(AttributeError):
        f.params.update(n_components=9)
    with pytest.raises(TypeError):
        f.params._items["n_components"] = 9  # noqa: SLF001 (not even the private view)
    with pytest.raises(AttributeError):
        f.params._items = {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.params = {}
    assert f.params == {"n_components": 8, "bandwidth": "median"} == dict(f.params)
    assert repr(f) == ("FeatureOptions(name='rff', params={'n_components': 8, 'bandwidth': "
                       "'median'}, cache=True, cache_dir=None)")
    same = FeatureOptions("rff", {"bandwidth": "median", "n_components": 8})
    assert f == same and hash(f) == hash(same) and f != FeatureOptions("rff", {})
    assert hash(RunOptions(features=f)) == hash(RunOptions(features=same))
    for back in (pickle.loads(pickle.dumps(f)), copy.deepcopy(f)):
        assert back == f and isinstance(back.params, FrozenParams)
    flat = RunOptions(features=f).to_flat()
    assert type(flat["feature_params"]) is dict
    assert json.loads(json.dumps(flat))["feature_params"] == {"n_components": 8,
                                                              "bandwidth": "median"}
    flat["feature_params"]["n_components"] = 9  # a copy: the options keep theirs
    assert f.params["n_components"] == 8


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]),
                       st.one_of(st.integers(), st.text(max_size=3), st.floats(0, 1))))
def test_frozen_params_equal_and_hash_like_their_items(d):
    p = FrozenParams(d)
    assert p == d and d == p and len(p) == len(d) and dict(p) == d
    assert hash(p) == hash(FrozenParams(dict(reversed(list(d.items())))))


def test_median_bandwidth_is_fixed_once():
    import numpy as np

    from kernelfit.kernels import median_distance

    X = np.random.default_rng(3).random((50, 4))
    k = KernelOptions(bandwidth="median")
    fixed = k.fixed(X, seed=7)
    assert fixed.bandwidth == median_distance(X, seed=7) and k.bandwidth == "median"
    assert fixed.fixed(X) is fixed and fixed.resolve(X).bandwidth == fixed.bandwidth


def test_no_bandwidth_on_arrays_of_unknown_origin_is_the_median_rule():
    # KernelOptions alone knows neither features nor data: raw inputs of unknown origin
    import numpy as np

    from kernelfit.kernel_defaults import FEATURE_MEDIAN_FACTOR
    from kernelfit.kernels import median_distance

    X = 40.0 * np.random.default_rng(4).random((50, 4))
    fixed = KernelOptions(bandwidth=None).fixed(X, seed=1)
    assert fixed.bandwidth == FEATURE_MEDIAN_FACTOR * median_distance(X, seed=1)
    assert not hasattr(KernelOptions, "bandwidth_rule")  # the rule lives in kernel_defaults


@settings(max_examples=30, deadline=None)
@given(n_train=st.one_of(st.none(), st.integers(1, 10 ** 6)),
       bandwidth=st.one_of(st.just("median"), st.floats(1e-3, 1e3)),
       solver=st.sampled_from(["cholesky", "eigh", "lstsq"]),
       dtype=st.sampled_from(["float64", "float32"]), seed=st.integers(0, 2 ** 31),
       kernel=st.sampled_from(["gaussian", "laplacian", "linear", "normalized"]))
def test_flat_round_trip(n_train, bandwidth, solver, dtype, seed, kernel):
    flat = dict(n_train=n_train, bandwidth=bandwidth, solver=solver, dtype=dtype, seed=seed,
                kernel=kernel)
    opts = RunOptions.from_flat(**flat)
    back = opts.to_flat()
    assert {k: back[k] for k in flat} == flat
    assert RunOptions.from_flat(**back) == opts
    assert set(back) == set(RunOptions.flat_names())


def test_one_spelling_shared_with_the_estimator():
    """Every kernel and solver option is an estimator parameter of the same name, so the
    estimator builds its options from its parameters without spelling them again."""
    params = set(inspect.signature(KernelInterpolator.__init__).parameters)
    assert set(KernelOptions.flat_names()) | set(SolverOptions.flat_names()) <= params
    est = KernelInterpolator(kernel="laplacian", bandwidth=3.0, dtype="float32", ridge=0.5)
    kopts = KernelOptions.from_params(est.get_params(deep=False))  # as fit builds them
    sopts = est._solver_options()
    assert (kopts.name, kopts.bandwidth, sopts.dtype, sopts.ridge) == ("laplacian", 3.0,
                                                                     "float32", 0.5)


@pytest.mark.parametrize("flat", [dict(precision="float64", tol=1e-6),
                                  dict(precision="float32", max_iter=3),
                                  dict(dtype="float32", refinement="ir")])
def test_refinement_options_are_refused_where_nothing_refines(flat):
    with pytest.raises(InputError, match="does not apply with") as exc:
        SolverOptions(**flat)
    assert exc.value.facts["not_with_precision"] in ("float32", "float64")
    # mixed precision and auto may refine, and out of core a float64 factor does: accepted
    # there (float32 out of core does not refine: refused too)
    if flat.get("precision") == "float64":
        SolverOptions(**flat, ooc_dir="d")
    else:
        with pytest.raises(InputError, match="does not apply with"):
            SolverOptions(**flat, ooc_dir="d")
    SolverOptions(**dict(flat, precision="mixed", dtype=None))
    SolverOptions(**{k: v for k, v in flat.items() if k not in ("precision", "dtype")})


def test_cli_builds_the_same_tree():
    from kernelfit.cli import build_parser
    from kernelfit.cli._common import config_from_args

    args = build_parser().parse_args(
        ["solve", "--dataset", "digits", "--n-train", "100", "--kernel", "laplacian",
         "--bandwidth", "median", "--precision", "mixed", "--refine", "ir", "--seed", "4",
         "--features", "rff", "--rff-dim", "32", "--save", "m.pkl", "--no-progress"])
    opts = config_from_args(args)
    assert opts == RunOptions.from_flat(
        dataset="digits", n_train=100, kernel="laplacian", bandwidth="median",
        precision="mixed", refinement="ir", seed=4, features="rff",
        feature_params={"n_components": 32, "bandwidth": "median"}, save="m.pkl",
        show_progress=False)


def test_dtype_and_precision_agree_or_are_refused_once():
    """The one rule between options, for every source (CLI, estimator, benchmarks)."""
    assert SolverOptions(precision="float32").dtype == "float32"  # dtype not given
    # mixed precision factors K in float32: that is its dtype, and float64 contradicts it
    assert SolverOptions(precision="mixed").dtype == "float32"
    assert SolverOptions(precision="mixed", dtype="float32").dtype == "float32"
    assert SolverOptions(dtype="float32").dtype == "float32"
    for dtype, precision in (("float32", "float64"), ("float64", "float32"),
                             ("float64", "mixed")):
        with pytest.raises(InputError, match="contradicts") as info:
            SolverOptions(dtype=dtype, precision=precision)
        facts = info.value.facts
        assert facts["param"] == "dtype" and facts["conflicts_with"] == "precision"
        assert (facts["dtype"], facts["precision"]) == (dtype, precision)
        assert "--" not in str(info.value)
    # the estimator's default dtype leaves K's storage to a float precision
    est = KernelInterpolator(precision="float32")
    assert est._solver_options().dtype == "float32"
    with pytest.raises(InputError, match="contradicts"):
        KernelInterpolator(dtype="float32", precision="float64")._solver_options()
    assert KernelInterpolator(precision="mixed")._solver_options().dtype == "float32"


def test_a_dtype_named_fixes_the_precision_and_auto_stays_auto():
    """--dtype float64 asks for a float64 factorization: under 'auto' it fixes precision
    float64 (auto picked mixed precision, a float32 factor, when float64 was typed), as
    float32 fixes a float32 solve; a dtype not given stays unfixed through replace() and
    the flat round trip that the run layer and bench's children make."""
    from dataclasses import replace

    named = SolverOptions(dtype="float64")
    assert (named.precision, named.dtype) == ("float64", "float64")
    assert named.solve_options().fixed_precision() == "float64"
    assert replace(named, tol=1e-10).precision == "float64"
    auto = SolverOptions()
    assert (auto.precision, auto.dtype) == ("auto", None)
    assert auto.solve_options().fixed_precision() is None  # auto may pick mixed
    assert auto.solve_options().dtype == "float64"
    for again in (replace(auto, device="cpu"), replace(auto, tol=1e-9),
                  RunOptions.from_flat(**RunOptions().to_flat()).solver):
        assert (again.precision, again.dtype) == ("auto", None)
    est = KernelInterpolator(dtype="float64")
    assert est._solver_options().precision == "float64"
    assert est.get_params()["precision"] == "auto"  # the estimator's parameters untouched
    # refinement options with the dtype alone are refused naming the dtype, not a
    # precision the user did not type
    with pytest.raises(InputError, match=r"dtype='float64' \(a float64 solve\)") as exc:
        SolverOptions(dtype="float64", tol=1e-9)
    assert exc.value.facts["via_dtype"] is True
    SolverOptions(dtype="float64", tol=1e-9, ooc_dir="d")  # out of core float64 refines


def test_readme_names_every_option_whose_python_name_is_not_the_flag():
    """The README's table of the options named otherwise in Python covers every leaf of
    the tree that `kernelfit solve` does not spell as --name-with-dashes."""
    from pathlib import Path

    from kernelfit.cli import build_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    flags = {a.dest: a.option_strings for a in sub.choices["solve"]._actions}
    odd = [n for n in RunOptions.flat_names()
           if "--" + n.replace("_", "-") not in flags.get(n, [])]
    assert odd, "every name matches: the README's table can go"
    for name in odd:
        assert f"`{name}=" in readme, name


def test_feature_parameters_of_another_map_are_refused_in_python_too():
    """The CLI refuses --rff-dim without --features rff; the options tree as well."""
    with pytest.raises(InputError, match="given with features 'raw', which has none"):
        RunOptions.from_flat(feature_params={"n_components": 10})
    with pytest.raises(InputError, match="unknown parameter.*'rff' features: n_filters"):
        RunOptions.from_flat(features="rff", feature_params={"n_filters": 10})
    assert RunOptions.from_flat(features="rff", feature_params={"n_components": 10}
                                ).features.params == {"n_components": 10}


@pytest.mark.parametrize("flat, name", [(dict(balanced="no"), "balanced"),
                                        (dict(feature_cache="false"), "feature_cache"),
                                        (dict(show_progress="no"), "show_progress"),
                                        (dict(resume="yes", ooc_dir="d"), "resume"),
                                        (dict(save=123), "save"),
                                        (dict(features="rff", cache_dir=5), "cache_dir")])
def test_switches_and_paths_of_the_wrong_type_are_refused(flat, name):
    """bool('no') is True: a string switch was silently on; a number as a path failed
    deep in pathlib. Both refused naming the parameter; True/False, 0/1 and None pass."""
    with pytest.raises(InputError, match=f"{name} must be") as info:
        RunOptions.from_flat(**flat)
    assert info.value.param == name
    assert RunOptions.from_flat(balanced=1, show_progress=None).data.balanced is True
