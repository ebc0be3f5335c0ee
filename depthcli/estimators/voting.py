"""Expert voting on relative depth: which pseudo-labels can be trusted.

Several models ("experts", e.g. four teachers) each judge the *order* of point
pairs: for pixels ``p`` and ``q``, is ``p`` nearer (larger disparity), farther,
or about as near as ``q``? A pair on which all experts agree is trusted; any
disagreement flags it. A pixel is flagged when a pair it belongs to is flagged;
flagged pixels are left out of the student's loss.

All inputs are **disparity** maps (larger = nearer), each known only up to its
own scale and shift, which is why only orders are compared.
"""

from __future__ import annotations

import numpy as np


def sample_pairs(valid: np.ndarray, rng: np.random.Generator, n_pairs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices ``(p, q)`` of point pairs among ``valid`` pixels (``p != q``).

    ``n_pairs=None`` pairs every valid pixel with a random partner (a random
    permutation shifted by one), so each valid pixel is in at least one pair.
    """
    idx = np.flatnonzero(valid)
    if idx.size < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if n_pairs is None:
        p = rng.permutation(idx)
        return p, np.roll(p, 1)
    p = rng.choice(idx, size=n_pairs)
    q = rng.choice(idx, size=n_pairs)
    keep = p != q
    return p[keep], q[keep]


def pair_votes(disparities: list[np.ndarray], p: np.ndarray, q: np.ndarray, tol: float = 0.02) -> np.ndarray:
    """``[M, N]`` votes in {-1, 0, +1}: +1 = ``p`` nearer than ``q`` (larger disparity).

    A difference below ``tol`` x (that expert's 1-99 % disparity range) is a tie (0).
    """
    votes = np.zeros((len(disparities), p.size), np.int8)
    for m, d in enumerate(disparities):
        flat = np.asarray(d, np.float64).ravel()
        lo, hi = np.percentile(flat[np.concatenate([p, q])], [1, 99]) if p.size else (0.0, 1.0)
        thr = tol * max(hi - lo, 1e-12)
        diff = flat[p] - flat[q]
        votes[m] = np.where(diff > thr, 1, np.where(diff < -thr, -1, 0))
    return votes


def agreement(votes: np.ndarray) -> np.ndarray:
    """``[N]`` bool: True where every expert cast the same vote (trusted pair)."""
    if votes.shape[0] <= 1:
        return np.ones(votes.shape[1], bool)
    return (votes == votes[:1]).all(axis=0)


def pixel_agreement_mask(
    disparities: list[np.ndarray], valid: np.ndarray, rng: np.random.Generator, tol: float = 0.02, rounds: int = 1
) -> tuple[np.ndarray, dict[str, float]]:
    """``(trusted [H, W] bool, stats)``: valid pixels none of whose sampled pairs was disputed.

    Each round pairs every valid pixel with a random partner; a pixel of a
    disputed pair is flagged. ``stats``: ``pairs``, ``trusted_pair_fraction``,
    ``trusted_pixel_fraction``.
    """
    flagged = np.zeros(valid.size, bool)
    n_pairs, n_ok = 0, 0
    for _ in range(rounds):
        p, q = sample_pairs(valid, rng)
        ok = agreement(pair_votes(disparities, p, q, tol))
        flagged[p[~ok]] = True
        flagged[q[~ok]] = True
        n_pairs += p.size
        n_ok += int(ok.sum())
    trusted = valid & ~flagged.reshape(valid.shape)
    stats = {
        "pairs": n_pairs,
        "trusted_pair_fraction": n_ok / n_pairs if n_pairs else 1.0,
        "trusted_pixel_fraction": float(trusted.sum()) / max(1, int(valid.sum())),
    }
    return trusted, stats
