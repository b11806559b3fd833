"""analysis/mechanism_figure.py: the bands it draws are the medians and 10-90 % of the adders' worst margins at
each multiple of the trained length, read off each adder at its own length; a missing file is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import mechanism_figure as mf

ROOT = Path(__file__).resolve().parents[1]


def _rows() -> pd.DataFrame:
    # Two 10-digit RNN adders (flat at 4 and at 2) and one 20-digit one whose margin is its position: at k x the
    # trained length it reads position round(20 k), not round(10 k).
    rows = [dict(cell="RNN", layers=1, digits=10, chain_worst_profile=np.full(101, 4.0), carry_l1_h_chain_acc_beyond=1.0),
            dict(cell="RNN", layers=1, digits=10, chain_worst_profile=np.full(101, 2.0), carry_l1_h_chain_acc_beyond=0.5),
            dict(cell="RNN", layers=1, digits=20, chain_worst_profile=np.arange(201, dtype=float), carry_l1_h_chain_acc_beyond=0.0)]
    return pd.DataFrame(rows)


def test_bands_read_each_adder_at_its_own_multiple_of_the_trained_length():
    bands = mf.margin_bands(_rows()).set_index("multiple")
    at_one = bands.loc[bands.index[np.isclose(bands.index, 1.0)][0]]
    assert at_one["adders"] == 3 and at_one["median"] == 4.0  # values 4, 2 and position 20
    at_ten = bands.loc[bands.index[np.isclose(bands.index, 10.0)][0]]
    assert at_ten["median"] == 4.0 and at_ten["p90"] == np.percentile([4.0, 2.0, 200.0], 90)
    carry = mf.layer_carry(_rows())
    assert carry[["layer", "adders", "median"]].values.tolist() == [[1, 3, 0.5]]


def test_a_missing_file_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "analysis" / "mechanism_figure.py"), str(tmp_path / "no.parquet"),
                           "--out", str(tmp_path / "f.png")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "no.parquet" in done.stderr
    assert list(tmp_path.iterdir()) == []
