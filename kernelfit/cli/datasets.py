"""``kernelfit datasets``: list the datasets, describe one, or download and verify one."""

from __future__ import annotations

import argparse
import shlex
import sys

from .._io import dumps_json

HELP = "list, describe or download the datasets"
DESCRIPTION = ("List the datasets kernelfit knows (list), describe one: shapes, counts per "
               "class, where it was read from (info), or download and verify its files (fetch). "
               "Files live in --data-dir, else $KERNELFIT_DATA, else the per-user cache. "
               "info on a dataset whose files are missing says what is missing (and, in "
               "one line on stderr, how to fetch it) and exits with 3.")

#: the exit code of ``info`` for a dataset whose files are missing (README: missing data)
MISSING_DATA = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``list``, ``info`` and ``fetch`` actions to ``parser``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION",
                                parser_class=type(parser))
    p_list = sub.add_parser("list", help="list the dataset names")
    p_list.add_argument("--data-dir", default=None,
                        help="also say which datasets have their files in this folder "
                             "(default: $KERNELFIT_DATA, else the user cache)")
    p_list.add_argument("--json", action="store_true", help="print JSON")
    for action, text in (("info", "shapes, counts per class and source of a dataset"),
                         ("fetch", "download (when missing) and verify a dataset's files")):
        p = sub.add_parser(action, help=text, description=text)
        p.add_argument("name", help="mnist, fashion-mnist, cifar10, digits or imagefolder:PATH")
        p.add_argument("--data-dir", default=None,
                       help="dataset directory (default: $KERNELFIT_DATA, else the user cache)")
        p.add_argument("--json", action="store_true", help="print JSON")
        if action == "info":
            p.add_argument("--no-download", action="store_true",
                           help="accepted for compatibility: info never downloads (use fetch)")


def _files_state(name: str, folder) -> str:
    """Whether a downloadable dataset's files are in ``folder``: 'present', 'partial' or
    'not downloaded' (its published files, or their uncompressed copies); '' for the
    others (bundled, or a path of your own)."""
    from ..datasets.sources import SOURCES

    remotes = SOURCES.get(name)
    if not remotes:
        return ""
    where = folder / name
    have = [any((where / f).is_file() for f in (r.filename, r.filename.removesuffix(".gz")))
            for r in remotes.values()]
    return "present" if all(have) else "partial" if any(have) else "not downloaded"


def _describe(raw) -> dict:
    import numpy as np

    return {
        "name": raw.name,
        "source": raw.source,
        "image_shape": list(raw.image_shape),
        "n_features": int(np.prod(raw.X_train.shape[1:], dtype=np.int64)),
        "n_classes": raw.n_classes,
        "class_names": list(raw.class_names),
        "n_train": int(len(raw.y_train)),
        "n_test": int(len(raw.y_test)),
        "train_counts": np.bincount(raw.y_train, minlength=raw.n_classes).tolist(),
        "test_counts": np.bincount(raw.y_test, minlength=raw.n_classes).tolist(),
    }


def _print_info(info: dict, out) -> None:
    out.write(f"{info['name']}\n")
    out.write(f"  source       {info['source']}\n")
    shape = tuple(info["image_shape"])
    out.write(f"  image shape  {shape if shape else 'none (not images)'} "
              f"({info['n_features']} features)\n")
    out.write(f"  train        {info['n_train']} examples\n")
    out.write(f"  test         {info['n_test']} examples\n")
    names = [str(c) for c in info["class_names"]]
    # a class named by its own index (digits, MNIST: '0'..'9') is shown once
    named = any(c != str(i) for i, c in enumerate(names))
    width = max(len(c) for c in names) if named else 0
    out.write(f"  {'class':<{width + 6 if named else 5}}  train   test\n")
    for i, c in enumerate(names):
        label = f"{i:>2}  {c:<{width}}" if named else f"{i:>5}"
        out.write(f"  {label}  {info['train_counts'][i]:>6} {info['test_counts'][i]:>6}\n")


def fetch_way(name: str, directory) -> str:
    """The way to fetch dataset ``name`` whose files are missing in ``directory`` (its own
    folder, DIR/name), that works from anywhere: the fetch command with DIR spelled out
    (quoted), or, where it cannot be written, the command into another folder."""
    from pathlib import Path

    from .._io import check_writable_folder
    from ..errors import InputError

    folder = Path(directory).expanduser().absolute().parent
    fetch = f"kernelfit datasets fetch {shlex.quote(name)} --data-dir "
    try:
        check_writable_folder(directory, param="data_dir")
    except InputError:
        return (f"{folder} cannot be written: `{fetch}DIR` with a folder DIR you can write "
                "to (then give the same --data-dir to the other commands)")
    return f"`{fetch}{shlex.quote(str(folder))}` (downloads and verifies them)"


def _say_missing(exc, state: str, fetch: str) -> None:
    """One line on stderr, as the other commands say missing data: which files are missing
    where, and ways out (``fetch`` first: :func:`fetch_way`). The report stays on stdout."""
    from . import _one_line
    from ._advice import missing_data_message

    reason = "partly downloaded" if state == "partial" else state
    line = missing_data_message(dict(exc.facts, reason=reason), exc.message, fetch)
    print(f"kernelfit datasets: error: {_one_line(line)}", file=sys.stderr)


def _print_not_fetched(args, exc, out) -> int:
    """Describe a dataset whose files are not (all) there, as ``list`` names its state;
    exit code 3 (missing data): what was asked about is absent."""
    from pathlib import Path

    from ..datasets import registry

    kind, _ = registry.parse_name(args.name)
    state = _files_state(kind, Path(exc.directory).parent) or "not downloaded"
    info = {"name": kind, "description": registry.DATASET_DESCRIPTIONS.get(kind, ""),
            "downloaded": False, "files": state, "folder": exc.directory,
            "missing": list(exc.missing)}
    parent = exc.facts.get("parent_data_dir")
    if parent:  # the files are in --data-dir itself: no fetch (a second copy one level down)
        info.update(found_in=exc.facts.get("found_in"), parent_data_dir=parent)
    fetch = "" if parent else fetch_way(args.name, exc.directory)
    _say_missing(exc, state, fetch)
    if args.json:
        out.write(dumps_json(info, indent=2) + "\n")
        return MISSING_DATA
    out.write(f"{kind}\n  {info['description']}\n")
    out.write(f"  {state}: {', '.join(info['missing'])} missing in {info['folder']}\n")
    # (the same way out as stderr's line)
    if parent:
        out.write(f"  found in {info['found_in']} itself: give --data-dir "
                  f"{shlex.quote(parent)}, the folder holding {kind}/\n")
    else:
        out.write(f"  fetch it with: {fetch}\n" if fetch.startswith("`") else f"  {fetch}\n")
    from ..datasets.cifar import jpeg_set_beside

    jpeg = jpeg_set_beside(exc.directory) if kind == "cifar10" else None
    if jpeg is not None:
        out.write(f"  found instead: a JPEG re-encoding of CIFAR-10 ({jpeg}); `kernelfit "
                  f"reproduce` uses it when the official files are missing, `solve` takes it "
                  f"as --dataset imagefolder:{jpeg}\n")
    return MISSING_DATA


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the exit code."""
    from ..datasets import registry

    out = sys.stdout
    if args.action is None:
        from ..errors import InputError

        raise InputError("choose an action: list (the dataset names), info NAME (describe one, "
                         "no download), fetch NAME (download and verify), e.g. kernelfit "
                         "datasets info mnist")
    if args.action == "list":
        from ..datasets import resolve_data_dir

        folder = resolve_data_dir(args.data_dir)
        rows = [{"name": n, "description": registry.DATASET_DESCRIPTIONS[n],
                 "files": _files_state(n, folder)} for n in registry.DATASET_NAMES]
        for r in rows:  # --data-dir at a dataset's own folder: its files are right there
            if (r["files"] not in ("", "present") and folder.name == r["name"]
                    and _files_state(r["name"], folder.parent) in ("present", "partial")):
                r.update(found_in=str(folder), parent_data_dir=str(folder.parent))
        if args.json:
            out.write(dumps_json({"datasets": rows, "data_dir": str(folder)}, indent=2) + "\n")
        else:
            out.write(f"datasets (files in {folder}):\n")
            for r in rows:
                state = f" [{r['files']}]" if r["files"] else ""
                if r.get("found_in"):
                    state = (f" [{r['files']} in {folder}/{r['name']}; its files are in "
                             f"{folder} itself: --data-dir {r['parent_data_dir']}]")
                out.write(f"{r['name']:<14} {r['description']}{state}\n")
        return 0
    if args.action == "info":
        from ..errors import DownloadError

        try:
            raw = registry.load_raw(args.name, data_dir=args.data_dir, download=False)
        except DownloadError as exc:  # describe it from what kernelfit knows; no download
            return _print_not_fetched(args, exc, out)
    else:
        raw = registry.load_raw(args.name, data_dir=args.data_dir, download=True)
    info = _describe(raw)
    if args.action == "fetch":
        info["verified"] = True
    if args.json:
        out.write(dumps_json(info, indent=2) + "\n")
    elif args.action == "fetch":
        out.write(f"{info['name']}: {info['n_train']} training and {info['n_test']} test "
                  f"examples, verified, in {info['source']}\n")
    else:
        _print_info(info, out)
    return 0
