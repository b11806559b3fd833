"""Can a simple invariant prove that a trained 1-layer RNN adder adds numbers of every length? (issue 19, item 5)

    python analysis/mechanism_invariants.py data/margins/weights/full-seeds3/5f8c6_00120.pt [more .pt files]

The adder reads one digit pair q = (a, b) per position, least significant first: h_t = tanh(W h_(t-1) + k_q),
h_0 = 0, and reads digit t of the sum off h_t. It adds at every length if sets S(q, c) of states exist, one per
last pair q and carry-in c, with
  (i)   every first state tanh(k_q) in S(q, 0);
  (ii)  every state of S(p, c) stepped with any pair q inside S(q, c'), c' = the carry p and c hand on;
  (iii) every state of S(q, c) read as (a + b + c) mod 10.
By induction over positions every reachable state is in the set of its key and read right, for sums of any length
(the top digit is the pair (0, 0) with the last carry). This script tries the simplest such sets, boxes, by sound
interval arithmetic (the image of a box under W is bounded by W c +- |W| r, tanh is monotone), iterated from (i)
to a fixpoint; every box is widened by EPS each step to cover float32 evaluation, so a proof holds for the float32
network too (a 64-term float32 dot product of terms below 20 errs by less than 1e-4). Where the boxes fail, it
measures why on the adder's own reachable states (sums with long carry chains): how tight the states of one key
really are, the readout over their own box hull, and how the state map stretches or shrinks differences in one
step and over k steps.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EPS = 1e-4  # per-step slack for float32 evaluation of the network the proof is about


@dataclass(frozen=True)
class Rnn:
    """A 1-layer tanh RNN adder in float64: W (H, H), k (pairs, H) the input term of each digit pair a * base + b
    (embedding, input weights and both biases), the head (base, H) and its bias."""

    W: np.ndarray
    k: np.ndarray
    head: np.ndarray
    head_bias: np.ndarray
    base: int

    @property
    def pair_sums(self) -> np.ndarray:
        pairs = np.arange(self.base * self.base)
        return pairs // self.base + pairs % self.base

    def carry_out(self) -> np.ndarray:
        """(pairs, 2): the carry handed on after pair q with carry-in c."""
        return (self.pair_sums[:, None] + np.arange(2)[None, :] >= self.base).astype(int)

    def target(self) -> np.ndarray:
        """(pairs, 2): the digit to read after pair q with carry-in c."""
        return (self.pair_sums[:, None] + np.arange(2)[None, :]) % self.base


def from_state(model_state: dict, base: int = 10) -> Rnn:
    """The parts of a saved 1-layer RNN AdderRNN (tune_adder.model) state dict."""
    get = lambda name: model_state[name].double().numpy()  # noqa: E731
    if "rnn.weight_hh_l0" not in model_state or "rnn.weight_hh_l1" in model_state:
        raise ValueError("not a 1-layer adder")
    W, U = get("rnn.weight_hh_l0"), get("rnn.weight_ih_l0")
    if W.shape[0] != W.shape[1]:
        raise ValueError("an LSTM or GRU (gated), not a tanh RNN")
    embed = get("embed.weight")
    pairs = np.array([np.r_[embed[a], embed[b]] for a in range(base) for b in range(base)])
    k = pairs @ U.T + get("rnn.bias_ih_l0") + get("rnn.bias_hh_l0")
    return Rnn(W=W, k=k, head=get("head.weight"), head_bias=get("head.bias"), base=base)


def step_box(rnn: Rnn, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sound bounds of tanh(W h + k_q) for h in the boxes [lo, hi] (..., H), every pair q: (..., pairs, H)."""
    centre, radius = (lo + hi) / 2, (hi - lo) / 2
    mid, spread = centre @ rnn.W.T, radius @ np.abs(rnn.W).T
    pre_lo = mid[..., None, :] - spread[..., None, :] + rnn.k
    pre_hi = mid[..., None, :] + spread[..., None, :] + rnn.k
    return np.tanh(pre_lo) - EPS, np.tanh(pre_hi) + EPS


def readout_margin(rnn: Rnn, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(pairs, 2): the least margin (target logit minus any other) the head can give on each key's box."""
    target = rnn.target()
    centre, radius = (lo + hi) / 2, (hi - lo) / 2
    diff = rnn.head[target][:, :, None, :] - rnn.head[None, None, :, :]  # (pairs, 2, base, H)
    bias = rnn.head_bias[target][:, :, None] - rnn.head_bias[None, None, :]
    low = np.einsum("qcjh,qch->qcj", diff, centre) - np.einsum("qcjh,qch->qcj", np.abs(diff), radius) + bias
    low[np.arange(target.shape[0])[:, None], np.arange(2)[None, :], target] = np.inf
    return low.min(axis=2)


def box_fixpoint(rnn: Rnn, max_iter: int = 500, tol: float = 1e-12) -> dict:
    """Boxes S(q, c) grown from (i) by (ii) until nothing grows (each step's images joined per key); then whether
    they are inductive and read right. 'proved' is True only if both hold."""
    pairs, H = rnn.k.shape
    lo, hi = np.full((pairs, 2, H), np.inf), np.full((pairs, 2, H), -np.inf)
    first_lo, first_hi = step_box(rnn, np.zeros(H), np.zeros(H))
    lo[:, 0], hi[:, 0] = first_lo, first_hi
    carry = rnn.carry_out()
    for iteration in range(1, max_iter + 1):
        new_lo, new_hi = lo.copy(), hi.copy()
        seen = np.isfinite(lo[..., 0])
        for c in (0, 1):
            sources = seen & (carry == c)
            if sources.any():
                img_lo, img_hi = step_box(rnn, lo[sources], hi[sources])  # (n, pairs, H)
                new_lo[:, c] = np.minimum(new_lo[:, c], img_lo.min(axis=0))
                new_hi[:, c] = np.maximum(new_hi[:, c], img_hi.max(axis=0))
        grew = np.nan_to_num(np.maximum(lo - new_lo, new_hi - hi), nan=0.0, posinf=2.0, neginf=0.0).max()
        lo, hi = new_lo, new_hi
        if grew <= tol:
            break
    seen = np.isfinite(lo[..., 0])
    margin = readout_margin(rnn, np.where(seen[..., None], lo, 0.0), np.where(seen[..., None], hi, 0.0))
    margin = np.where(seen, margin, np.inf)
    width = (hi - lo)[seen]
    return {"iterations": iteration, "converged": bool(grew <= tol), "keys": int(seen.sum()),
            "mean_width": float(width.mean()), "max_width": float(width.max()),
            "worst_margin": float(margin.min()), "keys_read_right": int((margin > 0).sum()),
            "proved": bool(grew <= tol and (margin > 0).all())}


def reachable(rnn: Rnn, rows: int = 4000, length: int = 60, seed: int = 0) -> dict:
    """The adder's states along random sums, half of them with a carry chain of 5-19 positions: the states after
    position 10 on, with their carry-in and the last four pairs (newest first), and the states' targets."""
    rng = np.random.default_rng(seed)
    base = rnn.base
    a, b = rng.integers(0, base, (rows, length)), rng.integers(0, base, (rows, length))
    for i in range(rows // 2):
        start, run = rng.integers(0, length - 20), rng.integers(5, 20)
        a[i, start : start + run] = rng.integers(0, base, run)
        b[i, start : start + run] = base - 1 - a[i, start : start + run]
    pairs = a * base + b
    h, carry = np.zeros((rows, rnn.W.shape[0])), np.zeros(rows, dtype=int)
    states, keys, trajectory = [], [], []
    for t in range(length):
        h = np.tanh(h @ rnn.W.T + rnn.k[pairs[:, t]])
        carry_in, carry = carry, ((a[:, t] + b[:, t] + carry) >= base).astype(int)
        trajectory.append(h)
        if t >= 10:
            states.append(h)
            keys.append(np.stack([carry_in] + [pairs[:, t - j] for j in range(4)], axis=1))
    keys = np.concatenate(keys)
    return {"states": np.concatenate(states), "keys": keys, "target": (keys[:, 1] // base + keys[:, 1] % base + keys[:, 0]) % base,
            "trajectory": np.stack(trajectory, axis=1)}


def key_tightness(rnn: Rnn, found: dict, depths=(1, 2, 3), min_states: int = 5) -> list[dict]:
    """Per key depth d (carry-in and the last d pairs): how wide the reachable states of one key are (mean box
    width per unit), and the least readout margin over each key's own box hull and over the ball around its
    centroid that holds its states (both must be > 0 for a box or ball around the states to read right)."""
    out = []
    for depth in depths:
        groups = defaultdict(list)
        for i, key in enumerate(map(tuple, found["keys"][:, : 1 + depth])):
            groups[key].append(i)
        widths, box, ball = [], [], []
        for rows in groups.values():
            if len(rows) < min_states:
                continue
            points, target = found["states"][rows], found["target"][rows[0]]
            lo, hi = points.min(axis=0), points.max(axis=0)
            widths.append(float((hi - lo).mean()))
            diff, bias = rnn.head[target] - rnn.head, rnn.head_bias[target] - rnn.head_bias
            low = diff @ ((lo + hi) / 2) - np.abs(diff) @ ((hi - lo) / 2) + bias
            centroid = points.mean(axis=0)
            radius = np.linalg.norm(points - centroid, axis=1).max()
            low_ball = diff @ centroid - np.linalg.norm(diff, axis=1) * radius + bias
            low[target] = low_ball[target] = np.inf
            box.append(low.min())
            ball.append(low_ball.min())
        out.append({"depth": depth, "keys": len(widths), "mean_box_width": float(np.mean(widths)),
                    "box_hull_worst_margin": float(np.min(box)), "ball_worst_margin": float(np.min(ball))})
    return out


def stretch(rnn: Rnn, found: dict, steps=(1, 2, 3, 5, 8), rows: int = 300, seed: int = 1) -> dict:
    """How the state map stretches differences at the adder's own states: the one-step Jacobian D W (D = 1 - h^2
    of the state it makes) in the 2-norm and its spectral radius, the one-step growth of interval arithmetic
    (|D W| row sums: how much a box widens), and the k-step products along real trajectories, ||J_k...J_1||^(1/k)."""
    rng = np.random.default_rng(seed)
    trajectory = found["trajectory"][:rows]  # (rows, T, H)
    jac = lambda h: (1 - h**2)[:, None] * rnn.W  # noqa: E731  the Jacobian of the step that made state h
    picks = [(int(i), int(t)) for i, t in zip(rng.integers(0, len(trajectory), 400), rng.integers(10, trajectory.shape[1], 400))]
    one = np.array([np.linalg.norm(jac(trajectory[i, t]), 2) for i, t in picks])
    radius = np.array([np.abs(np.linalg.eigvals(jac(trajectory[i, t]))).max() for i, t in picks])
    box_growth = np.array([np.abs(jac(trajectory[i, t])).sum(axis=1).max() for i, t in picks])
    out = {"jacobian_norm_median": float(np.median(one)), "jacobian_norm_max": float(one.max()),
           "spectral_radius_median": float(np.median(radius)), "spectral_radius_max": float(radius.max()),
           "interval_growth_median": float(np.median(box_growth))}
    for k in steps:
        rates = []
        for i, t in picks[:150]:
            if t + k > trajectory.shape[1]:
                continue
            product = np.eye(rnn.W.shape[0])
            for j in range(k):  # J_(t+j) maps a difference in the state before position t+j to the one after it
                product = jac(trajectory[i, t + j]) @ product
            rates.append(np.linalg.norm(product, 2) ** (1 / k))
        out[f"rate_{k}_steps_median"], out[f"rate_{k}_steps_max"] = float(np.median(rates)), float(np.max(rates))
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", nargs="+", type=Path, help="saved adders (analysis/mechanism_retrain.py --weights)")
    args = p.parse_args(argv)
    for path in args.weights:
        saved = torch.load(path, weights_only=True)
        config = saved.get("config", {})
        try:
            rnn = from_state(saved["model"], int(config.get("base", 10)))
        except ValueError as err:
            print(f"## {path}: skipped, {err}\n")
            continue
        name = ", ".join(f"{k} {config[k]}" for k in ("digits", "cell", "layers", "lr", "seed") if k in config)
        proof = box_fixpoint(rnn)
        print(f"## {path.stem} ({name})\n")
        print(f"Boxes per (last pair, carry-in), sound interval fixpoint: {proof['iterations']} iterations, "
              f"converged {proof['converged']}, mean width {proof['mean_width']:.3f} (max {proof['max_width']:.3f}; "
              f"a unit spans 2), least readout margin {proof['worst_margin']:.2f}, keys read right "
              f"{proof['keys_read_right']} of {proof['keys']}: **{'proved' if proof['proved'] else 'not proved'}**\n")
        found = reachable(rnn)
        print("| key depth (pairs) | keys | mean box width of its states | readout margin over their box hull (worst) | over their ball (worst) |")
        print("|---|---|---|---|---|")
        for row in key_tightness(rnn, found):
            print(f"| {row['depth']} | {row['keys']} | {row['mean_box_width']:.3f} | {row['box_hull_worst_margin']:.2f} | {row['ball_worst_margin']:.2f} |")
        s = stretch(rnn, found)
        print(f"\nOne step at its own states: ||D W||_2 median {s['jacobian_norm_median']:.2f} (max {s['jacobian_norm_max']:.2f}); "
              f"spectral radius median {s['spectral_radius_median']:.2f} (max {s['spectral_radius_max']:.2f}); a box's width grows "
              f"by up to {s['interval_growth_median']:.1f}x per step in interval arithmetic (median over states of the largest |D W| row sum).")
        print("k-step contraction along real trajectories, ||J_k...J_1||_2^(1/k): " + "; ".join(
            f"k={k} median {s[f'rate_{k}_steps_median']:.2f} max {s[f'rate_{k}_steps_max']:.2f}" for k in (1, 2, 3, 5, 8)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
