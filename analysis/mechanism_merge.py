"""Merge the outputs of several mechanism_retrain.py jobs (--shard, or runs on other machines) into one file, one row
per adder, in the order given: the rows of the first file first (in the order they were measured; mechanism_predict's
held-out check reads that order), then each later file's rows that are not in it yet.

    python analysis/mechanism_merge.py data/margins/margins.parquet ~/runs/margins/shard-*.parquet

OUT may be one of the inputs (it is read before it is replaced); written atomically (temp file + rename).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.mechanism_retrain import KEY, write_atomic  # noqa: E402


def merge(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames stacked in order, each adder (experiment, trial_id) once: where it is in several, the first."""
    return pd.concat(frames, ignore_index=True).drop_duplicates(list(KEY), keep="first").reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the merged parquet (rows already in it come first)")
    p.add_argument("inputs", nargs="+", help="mechanism_retrain.py outputs to add")
    args = p.parse_args(argv)
    out = Path(args.out).expanduser()
    paths = ([out] if out.exists() else []) + [Path(i).expanduser() for i in args.inputs]
    for path in paths:
        if not path.is_file():
            print(f"mechanism_merge: {path}: no such file (give mechanism_retrain.py outputs)", file=sys.stderr)
            return 2
    frames = [pd.read_parquet(path) for path in paths]
    for path, frame in zip(paths, frames):
        if not set(KEY) <= set(frame.columns):
            print(f"mechanism_merge: {path}: column {KEY[0]} or {KEY[1]} missing: not mechanism_retrain.py output",
                  file=sys.stderr)
            return 2
    before = len(frames[0]) if paths[0] == out else 0
    merged = merge(frames)
    write_atomic(merged, out)
    print(f"{len(merged)} adders in {out} ({len(merged) - before} new)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
