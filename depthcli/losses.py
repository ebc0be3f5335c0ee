"""Training targets and losses for relative depth estimators (torch).

Conventions (see :mod:`depthcli.depth`): a *depth* map holds z-depth with 0 =
invalid; a *disparity* map holds inverse depth ``1 / z`` (no epsilon). The
estimators predict **affine-invariant disparity**: a map known only up to an
unknown positive scale and shift, which is why every loss here first aligns the
prediction to the target per image (the MiDaS / Depth-Anything recipe).

Shapes: ``pred``, ``target``, ``mask`` are ``[B, H, W]``; ``mask`` is boolean
(True = pixel counts). Each loss is a function plus a small ``nn.Module``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

AlignMethod = Literal["lstsq", "median"]

#: Default far cutoff (metres): pixels farther than this are dropped from targets.
MAX_DEPTH_M = 80.0


# ----------------------------------------------------------------------------- targets


def normalize_min_max_masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalisation of the masked pixels to [0, 1].

    ``values`` ``[B, H, W]``; pixels outside ``mask`` become 0 (they are still
    marked by ``mask``, since 0 is also a legitimate normalised value). An
    image whose masked values are constant maps to 0.
    """
    big = torch.finfo(values.dtype).max
    lo = torch.where(mask, values, torch.full_like(values, big)).flatten(1).min(1).values
    hi = torch.where(mask, values, torch.full_like(values, -big)).flatten(1).max(1).values
    span = (hi - lo).clamp_min(0)
    has = mask.flatten(1).any(1) & (span > 0)
    lo = torch.where(has, lo, torch.zeros_like(lo))
    span = torch.where(has, span, torch.ones_like(span))
    out = (values - lo[:, None, None]) / span[:, None, None]
    out = torch.where(mask & has[:, None, None], out, torch.zeros_like(out))
    return out


def disparity_targets(
    depth: torch.Tensor, max_depth: float | None = MAX_DEPTH_M
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training targets from z-depth: ``(normalised disparity [B,H,W], mask)``.

    ``d = 1 / t`` for valid depth ``t`` (finite, > 0, and ``<= max_depth`` when
    given: farther pixels are masked out), then per-image min-max normalisation
    of ``d`` over the mask to [0, 1]. Masked-out pixels are 0.
    """
    mask = torch.isfinite(depth) & (depth > 0)
    if max_depth is not None:
        mask = mask & (depth <= max_depth)
    disp = torch.where(mask, 1.0 / torch.where(mask, depth, torch.ones_like(depth)), torch.zeros_like(depth))
    return normalize_min_max_masked(disp, mask), mask


# ----------------------------------------------------------------------------- alignment


def align_lstsq(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image least-squares ``(scale, shift)`` minimising ``sum_mask (s*pred + t - target)^2``.

    Returns two ``[B]`` tensors (float64). Solved in centred form, in float64:
    the normal equations in raw form cancel catastrophically when the
    prediction's spread is small against its mean (e.g. a fresh network).
    Images whose masked prediction is constant get scale 0 and shift = mean
    target (the best constant).
    """
    p, g = pred.double(), target.double()
    m = mask.to(torch.float64)
    n = m.flatten(1).sum(1).clamp_min(1)
    pm = (m * p).flatten(1).sum(1) / n
    gm = (m * g).flatten(1).sum(1) / n
    pc = (p - pm[:, None, None]) * m
    gc = (g - gm[:, None, None]) * m
    var = (pc * pc).flatten(1).sum(1)
    cov = (pc * gc).flatten(1).sum(1)
    ok = var > 1e-24 * (pm * pm * n).clamp_min(1e-300)
    scale = torch.where(ok, cov / torch.where(ok, var, torch.ones_like(var)), torch.zeros_like(var))
    shift = gm - scale * pm
    return scale, shift


def normalize_median_mad(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-image ``(x - median) / mean|x - median|`` over the mask (MiDaS' robust normalisation).

    ``eps`` only guards a constant image (MAD = 0); it is tiny so that the
    result stays invariant to the scale of ``x``.
    """
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        v = x[b][mask[b]]
        if v.numel() == 0:
            continue
        med = v.median()
        mad = (v - med).abs().mean()
        out[b] = (x[b] - med) / mad.clamp_min(eps)
    return out


def aligned_prediction(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, method: AlignMethod = "lstsq"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred_aligned, target_used)``: prediction brought into the target's frame.

    ``"lstsq"``: ``s * pred + t`` with least-squares ``(s, t)`` (target unchanged).
    ``"median"``: both prediction and target median/MAD-normalised.
    """
    if method == "lstsq":
        s, t = align_lstsq(pred, target, mask)
        # (pred - mean) first: keeps the residual accurate when pred's spread is tiny
        pm = (pred.double() * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
        aligned = s[:, None, None] * (pred.double() - pm[:, None, None]) + (t + s * pm)[:, None, None]
        return aligned.to(pred.dtype), target
    if method == "median":
        return normalize_median_mad(pred, mask), normalize_median_mad(target, mask)
    raise ValueError(f"unknown alignment method {method!r}")


# ----------------------------------------------------------------------------- losses


def ssi_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    method: AlignMethod = "lstsq",
    trim: float = 0.0,
) -> torch.Tensor:
    """Scale-and-shift-invariant loss: mean absolute residual after per-image alignment.

    ``trim`` in [0, 0.5): the largest ``trim`` fraction of residuals of each image
    is ignored (MiDaS' trimmed loss; 0.1-0.2 is typical). Averaged over images
    with at least one masked pixel; 0 if none.
    """
    aligned, tgt = aligned_prediction(pred, target, mask, method)
    res = (aligned - tgt).abs()
    losses = []
    for b in range(pred.shape[0]):
        r = res[b][mask[b]]
        if r.numel() == 0:
            continue
        if trim > 0:
            keep = max(1, int(round(r.numel() * (1.0 - trim))))
            r = torch.topk(r, keep, largest=False, sorted=False).values
        losses.append(r.mean())
    if not losses:
        return pred.sum() * 0.0
    return torch.stack(losses).mean()


def gradient_matching_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    method: AlignMethod = "lstsq",
    scales: int = 4,
) -> torch.Tensor:
    """Multi-scale gradient matching on the aligned residual ``R = aligned - target``.

    At each scale ``k`` (stride ``2**k``) sums ``|dR/dx| + |dR/dy|`` over pixel
    pairs whose both pixels are masked, divided by the number of masked pixels at
    that scale; the scales are averaged. Zero for any affine copy of the target.
    """
    aligned, tgt = aligned_prediction(pred, target, mask, method)
    res = aligned - tgt
    total = pred.sum() * 0.0
    for k in range(scales):
        step = 2**k
        r = res[:, ::step, ::step]
        m = mask[:, ::step, ::step].to(res.dtype)
        n = m.sum()
        if n == 0:
            continue
        gx = (r[:, :, 1:] - r[:, :, :-1]).abs() * m[:, :, 1:] * m[:, :, :-1]
        gy = (r[:, 1:, :] - r[:, :-1, :]).abs() * m[:, 1:, :] * m[:, :-1, :]
        total = total + (gx.sum() + gy.sum()) / n
    return total / scales


class SSILoss(nn.Module):
    """Module form of :func:`ssi_loss`."""

    def __init__(self, method: AlignMethod = "lstsq", trim: float = 0.0):
        super().__init__()
        self.method = method
        self.trim = trim

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ssi_loss(pred, target, mask, self.method, self.trim)


class GradientMatchingLoss(nn.Module):
    """Module form of :func:`gradient_matching_loss`."""

    def __init__(self, method: AlignMethod = "lstsq", scales: int = 4):
        super().__init__()
        self.method = method
        self.scales = scales

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return gradient_matching_loss(pred, target, mask, self.method, self.scales)


def depth_anything_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    method: AlignMethod = "lstsq",
    trim: float = 0.0,
    grad_weight: float = 2.0,
    scales: int = 4,
) -> torch.Tensor:
    """``ssi + grad_weight * gradient_matching`` (Depth-Anything's 1 : 2 weighting)."""
    loss = ssi_loss(pred, target, mask, method, trim)
    if grad_weight:
        loss = loss + grad_weight * gradient_matching_loss(pred, target, mask, method, scales)
    return loss


class DepthAnythingLoss(nn.Module):
    """Module form of :func:`depth_anything_loss` (SSI + 2 x gradient matching)."""

    def __init__(self, method: AlignMethod = "lstsq", trim: float = 0.0, grad_weight: float = 2.0, scales: int = 4):
        super().__init__()
        self.method, self.trim, self.grad_weight, self.scales = method, trim, grad_weight, scales

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return depth_anything_loss(pred, target, mask, self.method, self.trim, self.grad_weight, self.scales)


# ----------------------------------------------------------------------------- validation metrics


def lstsq_disparity_metrics(
    pred_disparity: torch.Tensor, gt_depth: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """AbsRel and delta1 of an affine-invariant disparity prediction against z-depth.

    Per image: the prediction is aligned to ``1 / gt_depth`` by least squares in
    disparity space (over ``mask``), clipped to the image's ground-truth
    disparity range (i.e. predicted depth is capped to [min, max] GT depth, as
    evaluations cap depth to the dataset's range), turned into depth and
    compared on ``mask``. Metrics are averaged over images with valid pixels.
    Returns ``{"abs_rel", "delta1", "images"}``.
    """
    mask = mask & (gt_depth > 0) & torch.isfinite(gt_depth)
    gt_disp = torch.where(mask, 1.0 / torch.where(mask, gt_depth, torch.ones_like(gt_depth)), torch.zeros_like(gt_depth))
    s, t = align_lstsq(pred_disparity.to(gt_disp.dtype), gt_disp, mask)
    aligned = s[:, None, None] * pred_disparity.to(gt_disp.dtype) + t[:, None, None]
    abs_rel, delta1, n = 0.0, 0.0, 0
    for b in range(gt_depth.shape[0]):
        m = mask[b]
        if not m.any():
            continue
        g = gt_disp[b][m]
        dp = 1.0 / aligned[b][m].clamp(float(g.min()), float(g.max()))
        dg = gt_depth[b][m]
        abs_rel += float(((dp - dg).abs() / dg).mean())
        delta1 += float((torch.maximum(dp / dg, dg / dp) < 1.25).to(torch.float64).mean())
        n += 1
    if n == 0:
        return {"abs_rel": float("nan"), "delta1": float("nan"), "images": 0}
    return {"abs_rel": abs_rel / n, "delta1": delta1 / n, "images": n}
