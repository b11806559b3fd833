"""Issue 19 item 5 (analysis/mechanism_invariants.py): the box invariant proves the hand-set exact adder for every
length and refuses one that drops the carry; its interval step is sound (contains every true image)."""

import numpy as np
import pytest

from analysis import mechanism_invariants as inv
from tests.test_probes import _hand_set_adder


def test_boxes_prove_the_hand_set_exact_adder_and_refuse_the_one_without_a_carry():
    exact = inv.box_fixpoint(inv.from_state(_hand_set_adder().model.state_dict()))
    assert exact["proved"] and exact["converged"] and exact["keys"] == 200 and exact["worst_margin"] > 9
    dropped = inv.box_fixpoint(inv.from_state(_hand_set_adder(carry=False).model.state_dict()))
    assert not dropped["proved"] and dropped["keys_read_right"] == 100  # every key with a carry-in of 1 is read wrong
    rnn = inv.from_state(_hand_set_adder().model.state_dict())
    assert [row["box_hull_worst_margin"] > 0 for row in inv.key_tightness(rnn, inv.reachable(rnn, rows=400))] == [True] * 3


@pytest.mark.parametrize("seed", range(3))
def test_the_interval_step_holds_every_true_image(seed):
    rng = np.random.default_rng(seed)
    H, base = 12, 10
    rnn = inv.Rnn(W=rng.normal(scale=0.8, size=(H, H)), k=rng.normal(scale=2.0, size=(base * base, H)),
                  head=rng.normal(size=(base, H)), head_bias=rng.normal(size=base), base=base)
    centre, radius = rng.uniform(-0.5, 0.5, H), rng.uniform(0.0, 0.3, H)
    lo, hi = inv.step_box(rnn, centre - radius, centre + radius)
    points = centre + radius * rng.uniform(-1, 1, (2000, H))
    points[:2] = [centre - radius, centre + radius]
    images = np.tanh((points @ rnn.W.T)[:, None, :] + rnn.k[None])  # (points, pairs, H): every pair's step
    assert (images >= lo - 1e-12).all() and (images <= hi + 1e-12).all()
    assert (hi - lo).max() > 2 * inv.EPS  # not trivially wide: real boxes
