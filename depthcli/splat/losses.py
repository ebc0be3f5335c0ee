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

Named depth terms (``DEPTH_LOSSES``, formulas and advice in docs/depth_losses.md)
are chosen by a spec string such as ``"l1,pearson:0.1"`` (``name[:weight]``,
comma-separated; :func:`parse_depth_loss_spec`): ``l1``, ``log-l1``,
``edge-log-l1``, ``pearson``, ``disparity-l1``, ``grad``, ``multiscale``.
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


def log_l1(pred_depth: torch.Tensor, target_depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean ``log(1 + |pred - target|)`` over ``mask`` (DN-Splatter's log-L1).

    Grows like L1 for small errors and only logarithmically for large ones, so a
    few wrong target pixels (a noisy prior, flying pixels) pull less.
    """
    return _safe_mean(torch.log1p((pred_depth - target_depth).abs()), mask.to(pred_depth.dtype))


def image_edge_weights(image: torch.Tensor) -> torch.Tensor:
    """``exp(-g)`` per pixel of an ``[..., H, W, 3]`` image in [0, 1], ``g`` = image gradient.

    ``g(r, c) = mean_channels(|I(r, c+1) - I(r, c)| + |I(r+1, c) - I(r, c)|)`` with
    forward differences; the last column / row has no forward neighbour and takes 0
    for that direction. Flat regions get weight 1, colour edges less.
    """
    img = image.to(torch.float32)
    gx = torch.zeros_like(img)
    gy = torch.zeros_like(img)
    gx[..., :, :-1, :] = (img[..., :, 1:, :] - img[..., :, :-1, :]).abs()
    gy[..., :-1, :, :] = (img[..., 1:, :, :] - img[..., :-1, :, :]).abs()
    return torch.exp(-(gx + gy).mean(-1))


def edge_aware_log_l1(
    pred_depth: torch.Tensor, target_depth: torch.Tensor, mask: torch.Tensor, image: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean ``exp(-|grad I|) * log(1 + |pred - target|)`` over ``mask`` (DN-Splatter).

    Down-weights the depth target at colour edges, where monocular priors blur depth
    discontinuities. Without an image the weights are 1 (plain :func:`log_l1`).
    """
    err = torch.log1p((pred_depth - target_depth).abs())
    if image is not None:
        err = err * image_edge_weights(image).to(err.dtype)
    return _safe_mean(err, mask.to(pred_depth.dtype))


def pearson_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - corr(pred, target)`` over ``mask`` (Pearson correlation of the valid pixels).

    Invariant to any positive scale and any shift of either argument, so an
    unaligned (affine-invariant) prior can supervise shape only. 0 when fewer than
    2 pixels are valid. A ``[B, H, W]`` input is treated as one set of pixels.
    """
    m = mask.to(pred.dtype)
    n = m.sum()
    if float(n) < 2:
        return (pred * m).sum() * 0.0
    mp = (pred * m).sum() / n
    mt = (target * m).sum() / n
    dp = (pred - mp) * m
    dt = (target - mt) * m
    cov = (dp * dt).sum()
    denom = torch.sqrt((dp * dp).sum() * (dt * dt).sum() + eps)
    return 1.0 - cov / denom


#: Named depth terms: name -> needs ("depth" target, "image" too).
DEPTH_LOSSES = ("l1", "log-l1", "edge-log-l1", "pearson", "disparity-l1", "grad", "multiscale")
#: Other accepted names: the original ``--depth-loss depth|disparity`` and spelled-out forms.
DEPTH_LOSS_ALIASES = {"depth": "l1", "disparity": "disparity-l1", "edge-aware-log-l1": "edge-log-l1",
                      "gradient": "grad"}


def parse_depth_loss_spec(spec: str | list[str] | tuple[str, ...]) -> list[tuple[str, float]]:
    """``"l1,pearson:0.1"`` (or ``["l1", "pearson:0.1"]``) -> ``[("l1", 1.0), ("pearson", 0.1)]``.

    Each item is ``name`` or ``name:weight`` (weight >= 0, default 1); names are
    those of :data:`DEPTH_LOSSES` or an alias; a name may appear once. Raises
    ``ValueError`` with a readable message on anything else.
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    parts = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    if not parts:
        raise ValueError("no depth loss given")
    out: list[tuple[str, float]] = []
    for part in parts:
        name, _, w = part.partition(":")
        name = DEPTH_LOSS_ALIASES.get(name.strip().lower(), name.strip().lower())
        if name not in DEPTH_LOSSES:
            raise ValueError(f"unknown depth loss '{part}' (use {', '.join(DEPTH_LOSSES)}, optionally name:weight)")
        try:
            weight = float(w) if w.strip() else 1.0
        except ValueError:
            raise ValueError(f"depth loss '{part}': weight '{w}' is not a number") from None
        if not (weight >= 0 and weight < float("inf")):
            raise ValueError(f"depth loss '{part}': weight must be a finite number >= 0")
        if any(n == name for n, _ in out):
            raise ValueError(f"depth loss '{name}' is given twice")
        out.append((name, weight))
    return out


def named_depth_loss(name: str, pred_depth: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     image: torch.Tensor | None = None, multiscale_levels: int = 3) -> torch.Tensor:
    """One term of :data:`DEPTH_LOSSES` (unweighted) on z-depth ``pred_depth`` vs ``target``."""
    if name == "l1":
        return masked_l1(pred_depth, target, mask)
    if name == "log-l1":
        return log_l1(pred_depth, target, mask)
    if name == "edge-log-l1":
        return edge_aware_log_l1(pred_depth, target, mask, image)
    if name == "pearson":
        return pearson_loss(pred_depth, target, mask)
    if name == "disparity-l1":
        return depth_l1(pred_depth, target, mask, "disparity")
    if name == "grad":
        return gradient_loss(pred_depth, target, mask)
    if name == "multiscale":
        return multiscale_loss(pred_depth, target, mask, multiscale_levels)
    raise ValueError(f"unknown depth loss {name!r}")


class DepthSupervision(torch.nn.Module):
    """The depth part of the training loss as one module.

    ``space`` is a depth-loss spec (:func:`parse_depth_loss_spec`; the historical
    ``"depth"`` / ``"disparity"`` mean ``l1`` / ``disparity-l1``). The gradient and
    multi-scale terms take their weights from the spec when it names them
    (``grad:0.2``), else from ``grad_weight`` / ``multiscale_weight``:
    ``loss = sum_k w_k term_k + w_grad * gradient + w_ms * multiscale + w_cov * coverage``;
    ``forward`` returns ``(total, parts)`` with each weighted term as a float for logging.
    """

    def __init__(self, space: str = "depth", grad_weight: float = 0.5, multiscale_weight: float = 0.5,
                 multiscale_levels: int = 3, coverage_weight: float = 0.0):
        super().__init__()
        self.space = space
        self.terms = parse_depth_loss_spec(space)
        names = [n for n, _ in self.terms]
        if "grad" not in names and grad_weight > 0:
            self.terms.append(("grad", float(grad_weight)))
        if "multiscale" not in names and multiscale_weight > 0:
            self.terms.append(("multiscale", float(multiscale_weight)))
        self.multiscale_levels = multiscale_levels
        self.coverage_weight = coverage_weight

    @property
    def needs_image(self) -> bool:
        return any(n == "edge-log-l1" for n, _ in self.terms)

    def forward(self, pred_depth, target_depth, mask, alpha=None, image=None):
        parts = {}
        for name, weight in self.terms:
            if weight <= 0:
                continue
            key = "depth_l1" if name == "l1" else name
            parts[key] = weight * named_depth_loss(name, pred_depth, target_depth, mask, image, self.multiscale_levels)
        if self.coverage_weight > 0 and alpha is not None:
            parts["coverage"] = self.coverage_weight * coverage_loss(alpha, mask)
        total = sum(parts.values()) if parts else pred_depth.sum() * 0.0
        return total, {k: float(v.detach()) for k, v in parts.items()}


def rgb_loss(pred_rgb: torch.Tensor, target_rgb: torch.Tensor, ssim_lambda: float = 0.2) -> torch.Tensor:
    """3DGS photometric loss ``(1 - l) * L1 + l * (1 - SSIM)`` on ``[B, H, W, 3]`` in [0, 1]."""
    l1 = (pred_rgb - target_rgb).abs().mean()
    if ssim_lambda <= 0 or min(pred_rgb.shape[1:3]) < 11:
        return l1
    return (1 - ssim_lambda) * l1 + ssim_lambda * (1 - ssim(pred_rgb, target_rgb))
