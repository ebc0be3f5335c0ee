"""Targets, SSI / gradient-matching losses, validation metrics and voting: hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depthcli.losses import (
    DepthAnythingLoss,
    GradientMatchingLoss,
    SSILoss,
    align_lstsq,
    depth_anything_loss,
    disparity_targets,
    gradient_matching_loss,
    lstsq_disparity_metrics,
    normalize_min_max_masked,
    ssi_loss,
)


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def test_disparity_targets_hand_computed():
    # depth 1, 2, 4, invalid -> disparity 1, 0.5, 0.25 -> min-max: (d - 0.25) / 0.75
    target, mask = disparity_targets(t([[[1.0, 2.0], [4.0, 0.0]]]))
    assert mask.tolist() == [[[True, True], [True, False]]]
    np.testing.assert_allclose(target.numpy(), [[[1.0, 1.0 / 3.0], [0.0, 0.0]]], atol=1e-12)


def test_disparity_targets_drop_far_pixels():
    # 100 m is beyond the 80 m cutoff: masked, and it does not take part in the min-max.
    target, mask = disparity_targets(t([[[1.0, 2.0], [100.0, 4.0]]]), max_depth=80.0)
    assert mask.tolist() == [[[True, True], [False, True]]]
    np.testing.assert_allclose(target.numpy(), [[[1.0, 1.0 / 3.0], [0.0, 0.0]]], atol=1e-12)
    # Without the cutoff the far pixel is the minimum disparity (0.01).
    target2, mask2 = disparity_targets(t([[[1.0, 2.0], [100.0, 4.0]]]), max_depth=None)
    assert bool(mask2.all())
    np.testing.assert_allclose(target2[0, 1, 1].item(), (0.25 - 0.01) / 0.99, atol=1e-12)


def test_disparity_targets_nan_inf_and_constant():
    target, mask = disparity_targets(t([[[float("nan"), float("inf")], [-1.0, 2.0]]]))
    assert mask.tolist() == [[[False, False], [False, True]]]
    assert target.abs().sum() == 0  # a single valid pixel: constant image maps to 0


def test_min_max_per_image():
    v = t([[[1.0, 3.0]], [[10.0, 20.0]]])
    out = normalize_min_max_masked(v, torch.ones_like(v, dtype=torch.bool))
    np.testing.assert_allclose(out.numpy(), [[[0.0, 1.0]], [[0.0, 1.0]]])


def test_align_lstsq_recovers_scale_and_shift():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 8, 9, generator=g, dtype=torch.float64)
    target = 2.5 * pred - 0.75
    s, sh = align_lstsq(pred, target, torch.ones_like(pred, dtype=torch.bool))
    np.testing.assert_allclose(s.numpy(), [2.5] * 3, rtol=1e-10)
    np.testing.assert_allclose(sh.numpy(), [-0.75] * 3, atol=1e-10)


def test_ssi_hand_computed_and_trim():
    # pred 0,1,2,3 vs target 0,1,2,4: s = 6.5 / 5 = 1.3, t = 1.75 - 1.3 * 1.5 = -0.2
    # aligned -0.2, 1.1, 2.4, 3.7 -> |residuals| 0.2, 0.1, 0.4, 0.3 -> mean 0.25
    pred, target = t([[[0.0, 1.0, 2.0, 3.0]]]), t([[[0.0, 1.0, 2.0, 4.0]]])
    mask = torch.ones_like(pred, dtype=torch.bool)
    assert ssi_loss(pred, target, mask).item() == pytest.approx(0.25, abs=1e-12)
    # trimming the largest 25 %: 0.2, 0.1, 0.3 -> 0.2
    assert ssi_loss(pred, target, mask, trim=0.25).item() == pytest.approx(0.2, abs=1e-12)
    assert SSILoss(trim=0.25)(pred, target, mask).item() == pytest.approx(0.2, abs=1e-12)


def test_ssi_median_hand_computed():
    # median/MAD: pred 0,1,2 -> median 1, MAD 2/3 -> -1.5, 0, 1.5; target 0,1,4 -> median 1, MAD 4/3 -> -0.75, 0, 2.25
    pred, target = t([[[0.0, 1.0, 2.0]]]), t([[[0.0, 1.0, 4.0]]])
    mask = torch.ones_like(pred, dtype=torch.bool)
    expected = (0.75 + 0.0 + 0.75) / 3
    assert ssi_loss(pred, target, mask, method="median").item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("method", ["lstsq", "median"])
def test_ssi_invariant_to_scale_and_shift(method):
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 16, 16, generator=g, dtype=torch.float64)
    target = torch.rand(2, 16, 16, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 16, 16, generator=g) > 0.3
    base = ssi_loss(pred, target, mask, method)
    assert base.item() > 0.05
    for a, b in [(3.0, 7.0), (0.01, -2.0), (250.0, 0.5)]:
        assert ssi_loss(a * pred + b, target, mask, method).item() == pytest.approx(base.item(), rel=1e-6)
        gm = gradient_matching_loss(pred, target, mask, method)
        assert gradient_matching_loss(a * pred + b, target, mask, method).item() == pytest.approx(gm.item(), rel=1e-6)


def test_gradient_matching_zero_for_affine_copy_and_hand_value():
    g = torch.Generator().manual_seed(2)
    target = torch.rand(2, 20, 24, generator=g, dtype=torch.float64)
    mask = torch.ones_like(target, dtype=torch.bool)
    assert gradient_matching_loss(3.0 * target + 2.0, target, mask).item() == pytest.approx(0.0, abs=1e-10)
    assert ssi_loss(3.0 * target + 2.0, target, mask).item() == pytest.approx(0.0, abs=1e-10)
    # residual R = -0.2, 0.1, 0.4, -0.3 (see the SSI case): |dR/dx| = 0.3, 0.3, 0.7 -> 1.3 / 4 pixels
    pred, tg = t([[[0.0, 1.0, 2.0, 3.0]]]), t([[[0.0, 1.0, 2.0, 4.0]]])
    m = torch.ones_like(pred, dtype=torch.bool)
    assert gradient_matching_loss(pred, tg, m, scales=1).item() == pytest.approx(0.325, abs=1e-12)
    assert GradientMatchingLoss(scales=1)(pred, tg, m).item() == pytest.approx(0.325, abs=1e-12)
    # total = SSI + 2 x GM
    assert depth_anything_loss(pred, tg, m, scales=1).item() == pytest.approx(0.25 + 2 * 0.325, abs=1e-12)
    assert DepthAnythingLoss(scales=1)(pred, tg, m).item() == pytest.approx(0.9, abs=1e-12)


def test_masked_pixels_do_not_matter():
    g = torch.Generator().manual_seed(3)
    depth = 1.0 + 10 * torch.rand(1, 12, 12, generator=g, dtype=torch.float64)
    depth[0, :3] = 200.0  # far: beyond 80 m
    target, mask = disparity_targets(depth)
    assert not mask[0, :3].any()
    pred = torch.rand(1, 12, 12, generator=g, dtype=torch.float64)
    l1 = depth_anything_loss(pred, target, mask)
    pred2 = pred.clone()
    pred2[0, :3] = 1e6  # garbage where the target is masked
    assert depth_anything_loss(pred2, target, mask).item() == pytest.approx(l1.item(), rel=1e-12)


def test_loss_has_gradient():
    pred = torch.rand(2, 14, 14, dtype=torch.float64, requires_grad=True)
    target = torch.rand(2, 14, 14, dtype=torch.float64)
    depth_anything_loss(pred, target, torch.ones_like(target, dtype=torch.bool), trim=0.1).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_lstsq_disparity_metrics_hand_computed():
    # gt depth 1, 1, 0.5 -> disparity 1, 1, 2; pred 0, 1, 2 -> s = 0.5, t = 5/6
    # aligned 5/6, 4/3, 11/6; 5/6 is below the GT disparity range [1, 2] -> 1
    # -> depth 1, 0.75, 6/11: AbsRel (0 + 0.25 + (6/11 - 0.5) / 0.5) / 3; ratios 1, 4/3, 12/11
    gt = t([[[1.0, 1.0, 0.5]]])
    pred = t([[[0.0, 1.0, 2.0]]])
    m = lstsq_disparity_metrics(pred, gt, torch.ones_like(gt, dtype=torch.bool))
    expected = (0.0 + 0.25 + (6 / 11 - 0.5) / 0.5) / 3
    assert m["abs_rel"] == pytest.approx(expected, rel=1e-10)
    assert m["delta1"] == pytest.approx(2 / 3)
    # a constant prediction aligns to the mean GT disparity (4/3 -> depth 0.75)
    c = lstsq_disparity_metrics(torch.ones_like(gt), gt, torch.ones_like(gt, dtype=torch.bool))
    assert c["abs_rel"] == pytest.approx((0.25 + 0.25 + 0.5) / 3, rel=1e-10)
    perfect = lstsq_disparity_metrics(4.0 / gt + 1.0, gt, torch.ones_like(gt, dtype=torch.bool))
    assert perfect["abs_rel"] == pytest.approx(0.0, abs=1e-10) and perfect["delta1"] == 1.0


def test_voting_pairs_hand_computed():
    from depthcli.estimators.voting import agreement, pair_votes, pixel_agreement_mask

    a = np.array([[0.0, 1.0, 2.0, 3.0]])
    b = np.array([[0.0, 2.0, 4.0, 6.0]]) + 5  # same order, other scale/shift
    c = np.array([[0.0, 1.0, 3.0, 2.0]])  # swaps the last two
    p, q = np.array([0, 2, 3]), np.array([1, 3, 2])
    v = pair_votes([a, b, c], p, q, tol=0.0)
    assert v.tolist() == [[-1, -1, 1], [-1, -1, 1], [-1, 1, -1]]
    assert agreement(v).tolist() == [True, False, False]
    assert agreement(v[:2]).tolist() == [True, True, True]
    valid = np.ones((1, 4), bool)
    trusted, stats = pixel_agreement_mask([a, b], valid, np.random.default_rng(0), tol=0.0)
    assert trusted.all() and stats["trusted_pair_fraction"] == 1.0
    trusted, _ = pixel_agreement_mask([a, c], valid, np.random.default_rng(0), tol=0.0, rounds=4)
    assert not trusted[0, 2] and not trusted[0, 3]  # the disputed pixels are flagged


def test_lstsq_disparity_metrics_match_the_evaluation_module():
    """Independent implementation: depthcli.evaluation (another module) on the same arrays."""
    evaluation = pytest.importorskip("depthcli.evaluation")
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 10, (40, 50)).astype(np.float32)
    pred = (3 / gt + 0.5 + rng.normal(0, 0.05, gt.shape)).astype(np.float32)
    ref = evaluation.evaluate_arrays(pred, gt, align="lstsq-disparity", pred_kind="disparity")
    ours = lstsq_disparity_metrics(torch.from_numpy(pred[None]).double(), torch.from_numpy(gt[None]).double(),
                                   torch.from_numpy(gt[None] > 0))
    assert ours["abs_rel"] == pytest.approx(float(ref["abs_rel"]), rel=2e-3)
    assert ours["delta1"] == pytest.approx(float(ref["delta1"]), abs=1e-3)


def test_median_alignment_keeps_the_sign_lstsq_does_not():
    # target 0,1,2 -> (x - 1) / (2/3) = -1.5, 0, 1.5; pred = -target -> 1.5, 0, -1.5: |residual| 3, 0, 3 -> 2
    target = t([[[0.0, 1.0, 2.0]]])
    mask = torch.ones_like(target, dtype=torch.bool)
    assert ssi_loss(-target, target, mask, method="median").item() == pytest.approx(2.0, rel=1e-9)
    assert ssi_loss(-target, target, mask, method="lstsq").item() == pytest.approx(0.0, abs=1e-12)  # scale -1 fits
