"""Training losses for depth-supervised Gaussian splats (torch).

All depth maps are z-depth tensors ``[B, H, W]`` (or ``[H, W]``) in the training
frame's units; ``mask`` is a boolean tensor of the same shape marking the pixels
with a valid target (target 0 = invalid). Sparse targets (SfM points) therefore
supervise only their own pixels. Each loss returns a scalar mean over the
supervised elements and 0 (with a gradient path) when nothing is supervised.

Why ``"D"`` under-estimates depth: the accumulated depth ``D = sum_i w_i z_i``
with ``sum_i w_i = alpha <= 1``; wherever the splats do not fully cover a pixel
(alpha < 1, e.g. at the start of training, at silhouettes, in thin parts) ``D``
is a fraction ``alpha`` of the true depth. ``"ED" = D / alpha`` divides that
out. Training on ``D`` therefore pushes opacity up as a side effect; the
:func:`coverage_loss` (mean of ``1 - alpha`` over supervised pixels) makes the
push explicit, and is worth adding for ``"D"`` (``SplatTrainConfig.coverage_weight``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _safe_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = mask.sum()
    return (values * mask).sum() / n.clamp(min=1)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean ``|pred - target|`` over ``mask``."""
    return _safe_mean((pred - target).abs(), mask.to(pred.dtype))


def depth_l1(pred_depth: torch.Tensor, target_depth: torch.Tensor, mask: torch.Tensor, space: str = "depth") -> torch.Tensor:
    """Masked L1 on z-depth (``space="depth"``) or on disparity ``1/z`` (``space="disparity"``).

    Disparity errors weigh near pixels more (gsplat's simple_trainer uses disparity
    L1, times the scene scale); with depth in training units (scene scale ~ 1)
    both are of order one. Predicted depths <= 0 are clamped to 1e-6 for disparity.
    """
    if space == "depth":
        return masked_l1(pred_depth, target_depth, mask)
    if space == "disparity":
        m = mask.to(pred_depth.dtype)
        pred_disp = 1.0 / pred_depth.clamp(min=1e-6)
        tgt_disp = torch.where(mask, 1.0 / target_depth.clamp(min=1e-6), torch.zeros_like(target_depth))
        return _safe_mean((pred_disp - tgt_disp).abs(), m)
    raise ValueError(f"unknown depth loss space {space!r}")


def gradient_loss(pred_depth: torch.Tensor, target_depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and vertical finite differences of prediction and target.

    A difference is used only where both of its pixels are valid, so depth edges
    and sparse targets (isolated pixels have no valid neighbour) add nothing false.
    """
    m = mask.to(pred_depth.dtype)
    dx_p = pred_depth[..., :, 1:] - pred_depth[..., :, :-1]
    dx_t = target_depth[..., :, 1:] - target_depth[..., :, :-1]
    mx = m[..., :, 1:] * m[..., :, :-1]
    dy_p = pred_depth[..., 1:, :] - pred_depth[..., :-1, :]
    dy_t = target_depth[..., 1:, :] - target_depth[..., :-1, :]
    my = m[..., 1:, :] * m[..., :-1, :]
    num = ((dx_p - dx_t).abs() * mx).sum() + ((dy_p - dy_t).abs() * my).sum()
    return num / (mx.sum() + my.sum()).clamp(min=1)


def masked_avg_pool(values: torch.Tensor, mask: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the valid values in ``factor x factor`` blocks; returns (pooled, pooled_mask)."""
    m = mask.to(values.dtype)
    v = (values * m).unsqueeze(-3) if values.dim() == 3 else (values * m)[None, None]
    mm = m.unsqueeze(-3) if m.dim() == 3 else m[None, None]
    s = F.avg_pool2d(v, factor, ceil_mode=True)
    c = F.avg_pool2d(mm, factor, ceil_mode=True)
    pooled = torch.where(c > 0, s / c.clamp(min=1e-12), torch.zeros_like(s))
    pooled = pooled.squeeze(-3) if values.dim() == 3 else pooled[0, 0]
    c = c.squeeze(-3) if values.dim() == 3 else c[0, 0]
    return pooled, c > 0


def multiscale_loss(
    pred_depth: torch.Tensor, target_depth: torch.Tensor, mask: torch.Tensor, levels: int = 3
) -> torch.Tensor:
    """Masked L1 on a pyramid (factors 2, 4, ... 2**levels) of masked block averages.

    The prediction is averaged over the same valid pixels as the target, so the
    term compares like with like and pulls low-frequency shape into place early.
    """
    total = pred_depth.new_zeros(())
    for level in range(1, levels + 1):
        f = 2**level
        if min(pred_depth.shape[-2:]) < f:
            break
        p, pm = masked_avg_pool(pred_depth, mask, f)
        t, _ = masked_avg_pool(target_depth, mask, f)
        total = total + masked_l1(p, t, pm)
    return total / max(levels, 1)


def coverage_loss(alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - alpha`` over supervised pixels: asks for full opacity where depth exists."""
    return _safe_mean(1.0 - alpha, mask.to(alpha.dtype))


def _gauss_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(img1: torch.Tensor, img2: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two ``[B, H, W, 3]`` images in [0, 1] (Gaussian window, valid region)."""
    x = img1.permute(0, 3, 1, 2)
    y = img2.permute(0, 3, 1, 2)
    c = x.shape[1]
    w = _gauss_window(window, sigma, x.device, x.dtype).expand(c, 1, window, window)
    conv = lambda t: F.conv2d(t, w, groups=c)  # noqa: E731
    mu_x, mu_y = conv(x), conv(y)
    sxx = conv(x * x) - mu_x**2
    syy = conv(y * y) - mu_y**2
    sxy = conv(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean()


class DepthSupervision(torch.nn.Module):
    """The depth part of the training loss as one module.

    ``loss = l1(space) + w_grad * gradient + w_ms * multiscale + w_cov * coverage``;
    ``forward`` returns ``(total, parts)`` with each term as a float for logging.
    """

    def __init__(self, space: str = "depth", grad_weight: float = 0.5, multiscale_weight: float = 0.5,
                 multiscale_levels: int = 3, coverage_weight: float = 0.0):
        super().__init__()
        self.space = space
        self.grad_weight = grad_weight
        self.multiscale_weight = multiscale_weight
        self.multiscale_levels = multiscale_levels
        self.coverage_weight = coverage_weight

    def forward(self, pred_depth, target_depth, mask, alpha=None):
        parts = {"depth_l1": depth_l1(pred_depth, target_depth, mask, self.space)}
        if self.grad_weight > 0:
            parts["grad"] = self.grad_weight * gradient_loss(pred_depth, target_depth, mask)
        if self.multiscale_weight > 0:
            parts["multiscale"] = self.multiscale_weight * multiscale_loss(
                pred_depth, target_depth, mask, self.multiscale_levels
            )
        if self.coverage_weight > 0 and alpha is not None:
            parts["coverage"] = self.coverage_weight * coverage_loss(alpha, mask)
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}


def rgb_loss(pred_rgb: torch.Tensor, target_rgb: torch.Tensor, ssim_lambda: float = 0.2) -> torch.Tensor:
    """3DGS photometric loss ``(1 - l) * L1 + l * (1 - SSIM)`` on ``[B, H, W, 3]`` in [0, 1]."""
    l1 = (pred_rgb - target_rgb).abs().mean()
    if ssim_lambda <= 0 or min(pred_rgb.shape[1:3]) < 11:
        return l1
    return (1 - ssim_lambda) * l1 + ssim_lambda * (1 - ssim(pred_rgb, target_rgb))
