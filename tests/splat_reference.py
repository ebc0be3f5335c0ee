"""Dense brute-force Gaussian-splat reference for the tests (float64, slow, plain).

Written from gsplat's documented rules, independently of ``depthcli.splat.backend_torch``:
every Gaussian is evaluated at every pixel of every camera and composited by an explicit
front-to-back loop over the Gaussians in depth order. Differentiable by autograd.
Only for small scenes (cost C * N * H * W).
"""

from __future__ import annotations

import math

import torch


def _f(t) -> float:
    """Python float of a (possibly grad-tracking) scalar tensor."""
    return float(t.detach()) if isinstance(t, torch.Tensor) else float(t)


def _rotation(q):
    """Unit-quaternion (w, x, y, z) rotation matrix of one quaternion (any norm)."""
    q = q / torch.sqrt((q * q).sum())
    w, x, y, z = q[0], q[1], q[2], q[3]
    return torch.stack([
        torch.stack([w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)]),
        torch.stack([2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)]),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z]),
    ])


def reference_project(mean, quat, scale, viewmat, K, width, height, near_plane=0.01, far_plane=1e10,
                      eps2d=0.3, radius_clip=0.0):
    """One Gaussian in one camera. Returns dict(mean2d [2], depth (camera z), dist (distance
    from the camera centre to the mean), conic [2, 2] (inverse 2D covariance), radius
    (float, 0 = culled))."""
    Rq = _rotation(quat)
    Sigma = Rq @ torch.diag(scale * scale) @ Rq.T
    Rcw, tcw = viewmat[:3, :3], viewmat[:3, 3]
    p = Rcw @ mean + tcw
    Sc = Rcw @ Sigma @ Rcw.T
    z = p[2]
    out = {"depth": z, "dist": torch.sqrt((p * p).sum()), "radius": 0.0}
    if not (_f(z) >= near_plane and _f(z) <= far_plane):
        out["mean2d"] = torch.zeros(2, dtype=mean.dtype)
        return out
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # gsplat's clamp of the Jacobian's x/z, y/z to the image plus 30 % of the half-FOV tangent
    tanx, tany = 0.5 * width / fx, 0.5 * height / fy
    u = torch.clamp(p[0] / z, min=_f(-(cx / fx + 0.3 * tanx)), max=_f((width - cx) / fx + 0.3 * tanx))
    v = torch.clamp(p[1] / z, min=_f(-(cy / fy + 0.3 * tany)), max=_f((height - cy) / fy + 0.3 * tany))
    zero = torch.zeros((), dtype=mean.dtype)
    J = torch.stack([
        torch.stack([fx / z, zero, -fx * (u * z) / (z * z)]),
        torch.stack([zero, fy / z, -fy * (v * z) / (z * z)]),
    ])
    cov2 = J @ Sc @ J.T + eps2d * torch.eye(2, dtype=mean.dtype)
    mean2d = torch.stack([fx * p[0] / z + cx, fy * p[1] / z + cy])
    out["mean2d"] = mean2d
    det = cov2[0, 0] * cov2[1, 1] - cov2[0, 1] * cov2[1, 0]
    if _f(det) <= 0:
        return out
    conic = torch.linalg.inv(cov2)
    # gsplat's radius: 3 sqrt of the larger eigenvalue, with the discriminant clamped at 0.01
    half_tr = 0.5 * _f(cov2[0, 0] + cov2[1, 1])
    lam = half_tr + math.sqrt(max(0.01, half_tr * half_tr - _f(det)))
    radius = math.ceil(3.0 * math.sqrt(lam))
    if radius <= radius_clip:
        return out
    mx, my = _f(mean2d[0]), _f(mean2d[1])
    if mx + radius <= 0 or mx - radius >= width or my + radius <= 0 or my - radius >= height:
        return out
    out.update(conic=conic, radius=float(radius))
    return out


def reference_render(means, quats, scales, opacities, colors, viewmats, Ks, width, height, mode="RGB",
                     near_plane=0.01, far_plane=1e10, eps2d=0.3, backgrounds=None, radius_clip=0.0,
                     stats=None):
    """Dense reference of ``render()``: returns (render_colors [C,H,W,X], alphas [C,H,W,1],
    radii [C,N] as a list of lists). Everything in float64. Depth channel: camera z of the
    centres for D / ED / RGB+D / RGB+ED, distance from the camera centre to the centres
    for the hit-distance modes d / Ed / RGB-d / RGB-Ed; ED, Ed, RGB+ED, RGB-Ed divide it
    by the accumulated alpha. When ``stats`` is a dict it
    receives ``n_stopped`` (pixels where the T <= 1e-4 termination fired) and ``n_pairs``
    (pairs composited)."""
    f64 = torch.float64
    has_rgb = mode.startswith("RGB")
    depth_key = "dist" if mode in ("d", "Ed", "RGB-d", "RGB-Ed") else "depth"
    has_depth = mode != "RGB"
    expected = mode in ("ED", "Ed", "RGB+ED", "RGB-Ed")
    C, N = viewmats.shape[0], means.shape[0]
    rows = torch.arange(height, dtype=f64)[:, None].expand(height, width) + 0.5
    cols = torch.arange(width, dtype=f64)[None, :].expand(height, width) + 0.5
    images, alpha_images, all_radii = [], [], []
    n_stopped = n_pairs = 0
    for ci in range(C):
        projs = [reference_project(means[i].to(f64), quats[i].to(f64), scales[i].to(f64),
                                   viewmats[ci].to(f64), Ks[ci].to(f64), width, height,
                                   near_plane, far_plane, eps2d, radius_clip) for i in range(N)]
        all_radii.append([p["radius"] for p in projs])
        order = sorted((i for i in range(N) if projs[i]["radius"] > 0),
                       key=lambda i: (_f(projs[i]["depth"]), i))
        T = torch.ones(height, width, dtype=f64)
        stopped = torch.zeros(height, width, dtype=torch.bool)
        rgb = torch.zeros(height, width, 3, dtype=f64)
        dep = torch.zeros(height, width, dtype=f64)
        wsum = torch.zeros(height, width, dtype=f64)
        for i in order:
            p = projs[i]
            Q = p["conic"]
            dx = p["mean2d"][0] - cols
            dy = p["mean2d"][1] - rows
            sigma = 0.5 * (Q[0, 0] * dx * dx + Q[1, 1] * dy * dy) + 0.5 * (Q[0, 1] + Q[1, 0]) * dx * dy
            alpha = torch.clamp(opacities[i].to(f64) * torch.exp(-sigma), max=0.999)
            use = (sigma >= 0) & (alpha >= 1.0 / 255.0) & ~stopped
            T_next = T * (1 - alpha)
            stop_here = use & (T_next <= 1e-4)
            stopped = stopped | stop_here
            use = use & ~stop_here
            w = torch.where(use, alpha * T, torch.zeros_like(alpha))
            if colors is not None and has_rgb:
                c = colors[ci, i] if colors.dim() == 3 else colors[i]
                rgb = rgb + w[..., None] * c.to(f64)
            dep = dep + w * p[depth_key]
            wsum = wsum + w
            T = torch.where(use, T_next, T)
            n_pairs += int(use.sum())
        n_stopped += int(stopped.sum())
        chans = []
        if has_rgb:
            if backgrounds is not None:
                bg = backgrounds.to(f64).expand(C, 3)[ci]
                rgb = rgb + T[..., None] * bg
            chans.append(rgb)
        if has_depth:
            d = dep / torch.clamp(wsum, min=1e-10) if expected else dep
            chans.append(d[..., None])
        images.append(torch.cat(chans, dim=-1))
        alpha_images.append(wsum[..., None])
    if stats is not None:
        stats.update(n_stopped=n_stopped, n_pairs=n_pairs)
    return torch.stack(images), torch.stack(alpha_images), all_radii
