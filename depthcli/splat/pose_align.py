"""Held-out camera alignment: refine one camera's pose against its own depth, splats frozen.

Real captures come with poses from SLAM or SfM, off by millimetres to centimetres and a fraction of
a degree. A held-out view whose pose is off by 0.5 degrees sees every depth edge a few
pixels away from where the splats put it, and its AbsRel then measures the pose as much
as the splats. :func:`align_camera` finds the small rigid correction ``E`` (camera frame:
``cam_from_world' = E @ cam_from_world``) that minimises the mean relative depth error
``|depth - target| / target`` over the pixels that are valid and rendered, with the splats
fixed: 6 numbers per view, fitted to ~10^5 pixels, the test-time pose optimisation of
novel-view evaluations with noisy poses. The trainer reports held-out metrics both
before (the headline) and after it.

``E = exp(xi^)`` with ``xi = (omega, v)``: ``omega`` a rotation vector (radians), ``v`` a
translation in the scene's units, optimised by Adam, first on a half-resolution image
(2x2 blocks of valid target pixels averaged) and then at full resolution. Only the splats
near the view are rendered while fitting (:func:`near_view`); the loss before and after is
computed with all of them.

The trainer's training-pose refinement (``--pose-opt``) uses the same parametrisation through
:func:`moved_splats`; :func:`world_motion`, :func:`mean_motion`, :func:`common_motion` and
:func:`rigidly_moved` place held-out cameras in the refined trajectory and move the splats back
by the corrections' common drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depthcli.geometry import quaternion_from_rotation


@dataclass
class PoseAlignment:
    cam_from_world: np.ndarray  # [4, 4] refined pose (same frame and units as the input)
    rotation_deg: float  # angle of the correction E
    translation: float  # length of E's translation (the input's units)
    loss_before: float  # mean relative depth error at the input pose (full resolution)
    loss_after: float  # ... at the refined pose


def se3_exp(xi):
    """4x4 matrix exponential of the twist ``xi = (omega, v)`` [6] (torch, differentiable)."""
    import torch

    w, v = xi[:3], xi[3:]
    z = torch.zeros((), dtype=xi.dtype)
    hat = torch.stack([
        torch.stack([z, -w[2], w[1], v[0]]),
        torch.stack([w[2], z, -w[0], v[1]]),
        torch.stack([-w[1], w[0], z, v[2]]),
        torch.stack([z, z, z, z]),
    ])
    return torch.linalg.matrix_exp(hat)


def _axis_angle_quat(omega):
    """Unit quaternion (w, x, y, z) of the rotation vector ``omega`` [3] (differentiable at 0)."""
    import torch

    theta2 = (omega * omega).sum()
    theta = torch.sqrt(theta2 + 1e-30)
    small = theta2 < 1e-8
    half_sinc = torch.where(small, 0.5 - theta2 / 48.0, torch.sin(theta / 2) / theta)  # sin(theta/2) / theta
    w = torch.where(small, 1.0 - theta2 / 8.0, torch.cos(theta / 2))
    return torch.cat([w[None], omega * half_sinc])


def _quat_mul(a, b):
    """Hamilton product ``a * b`` of (w, x, y, z) quaternions; ``a`` [4], ``b`` [N, 4]."""
    import torch

    aw, ax, ay, az = a
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def moved_splats(splats: dict, xi, cam_from_world):
    """The splats moved by ``W = V^-1 exp(xi^) V`` (``V = cam_from_world``): seen from ``V`` they look
    exactly as the original splats seen from ``exp(xi^) @ V`` (means, and orientations via quats;
    scales and opacities unchanged). Differentiable w.r.t. ``xi``; lets the camera-correction
    gradient flow through the means and quats, which every backend differentiates."""
    import torch

    V = cam_from_world
    V_inv = torch.linalg.inv(V.double()).to(V.dtype)
    W = V_inv @ se3_exp(xi) @ V
    q_w = _axis_angle_quat(V[:3, :3].T @ xi[:3])  # R_W = R_V^T exp(omega^) R_V = exp((R_V^T omega)^)
    quats = torch.nn.functional.normalize(splats["quats"], dim=-1)
    return {**splats, "means": splats["means"] @ W[:3, :3].T + W[:3, 3], "quats": _quat_mul(q_w, quats)}


def near_view(splats: dict, cam_from_world, K, width: int, height: int, margin: float = 0.25):
    """Boolean mask of the splats a slightly moved camera may see: centres in front of the
    camera that project within the image grown by ``margin`` of its size on every side, plus
    three standard deviations of their largest scale. The others cannot reach the image for a
    correction of a few degrees; leaving them out only saves time."""
    import torch

    with torch.no_grad():
        p = splats["means"] @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
        z = p[:, 2]
        zs = z.clamp(min=1e-6)
        u = K[0, 0] * p[:, 0] / zs + K[0, 2]
        v = K[1, 1] * p[:, 1] / zs + K[1, 2]
        r = 3.0 * splats["scales"].max(dim=-1).values * max(float(K[0, 0]), float(K[1, 1])) / zs
        mw, mh = margin * width, margin * height
        return ((z > 1e-3) & (u + r > -mw) & (u - r < width + mw) & (v + r > -mh) & (v - r < height + mh))


def _half_target(target: np.ndarray) -> np.ndarray:
    """2x2 block means of ``target`` where all four pixels are valid (> 0), else 0."""
    h, w = target.shape[0] // 2 * 2, target.shape[1] // 2 * 2
    blocks = target[:h, :w].reshape(h // 2, 2, w // 2, 2)
    ok = (blocks > 0).all(axis=(1, 3))
    return np.where(ok, blocks.mean(axis=(1, 3)), 0.0).astype(np.float32)


def align_camera(
    render_fn,
    splats: dict,
    cam_from_world: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    target: np.ndarray,
    *,
    iterations: tuple[int, int] = (25, 10),
    lr: float = 2e-3,
    min_alpha: float = 0.5,
) -> PoseAlignment:
    """Refine ``cam_from_world`` so that ``render_fn`` matches ``target`` (z-depth, 0 = invalid).

    ``render_fn(splats, viewmat [4,4], K [3,3], width, height) -> (depth [H,W], alpha [H,W])``
    renders ``splats`` (a dict of means, quats, scales, opacities, ...; torch, differentiable
    w.r.t. means and quats); the splats themselves stay frozen: the correction moves copies
    (:func:`moved_splats`), which is exact and keeps the compiled projection in use. ``iterations``: Adam steps at
    half and at full resolution (all at full resolution for images under 320x240, where the
    per-Gaussian work dominates and halving saves little);
    the step size decays from ``lr`` to ``lr / 20`` (cosine) in
    each. Returns the refined pose; it is never worse than the input on the full-resolution
    loss (the input is kept when the refinement does not lower it).
    """
    import torch

    from depthcli.splat.optim import Adam  # torch.optim's arithmetic without importing torch._dynamo

    V = torch.as_tensor(np.asarray(cam_from_world), dtype=torch.float32)
    K_full = torch.as_tensor(np.asarray(K), dtype=torch.float32)
    target = np.asarray(target, dtype=np.float32)

    def loss_of(depth, alpha, tgt):
        m = (tgt > 0) & (alpha.detach() > min_alpha) & (depth.detach() > 0)
        if not bool(m.any()):
            return None
        return ((depth - tgt).abs()[m] / tgt[m]).mean()

    def full_loss(viewmat) -> float:
        with torch.no_grad():
            depth, alpha = render_fn(splats, viewmat, K_full, width, height)
            loss = loss_of(depth, alpha, torch.from_numpy(target))
        return float("inf") if loss is None else float(loss)

    before = full_loss(V)
    keep = near_view(splats, V, K_full, width, height)
    near = {k: (t[keep] if t is not None else None) for k, t in splats.items()}
    xi = torch.zeros(6, dtype=torch.float32, requires_grad=True)
    levels = [(2, iterations[0]), (1, iterations[1])]
    if width < 320 or height < 240:  # small images: per-Gaussian work dominates, halving saves little
        levels = [(1, iterations[0] + iterations[1])]
    for factor, n in levels:
        if n <= 0:
            continue
        w, h = (width // 2, height // 2) if factor == 2 else (width, height)
        Kl = K_full.clone()
        if factor == 2:
            Kl[:2] /= 2.0
        tgt = torch.from_numpy(_half_target(target) if factor == 2 else target)
        opt = Adam([xi], lr=lr)
        for it in range(n):
            for g in opt.param_groups:
                g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * it / max(n - 1, 1))))
            depth, alpha = render_fn(moved_splats(near, xi, V), V, Kl, w, h)
            loss = loss_of(depth, alpha, tgt)
            if loss is None:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        E = se3_exp(xi.detach())
        refined = E @ V
    after = full_loss(refined)
    if not after < before:  # keep the input pose
        E, refined, after = torch.eye(4), V, before
    E = E.double().numpy()
    return PoseAlignment(refined.double().numpy(), rotation_angle_deg(E[:3, :3]), float(np.linalg.norm(E[:3, 3])),
                         before, after)


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of the rotation ``R`` [3, 3], degrees."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def world_motion(cam_from_world, xi) -> np.ndarray:
    """``W = V^-1 exp(xi^) V`` [4, 4]: the motion of the world that the camera-frame correction
    ``xi`` of camera ``V`` amounts to (``exp(xi^) V == V W``)."""
    import torch

    V = np.asarray(cam_from_world, dtype=np.float64)
    E = se3_exp(torch.as_tensor(np.asarray(xi), dtype=torch.float64)).numpy()
    return np.linalg.inv(V) @ E @ V


def mean_motion(motions) -> np.ndarray:
    """Mean of a few nearby rigid motions [4, 4] (matrix mean, rotation projected back by SVD)."""
    W = np.mean(np.stack([np.asarray(m, dtype=np.float64) for m in motions]), axis=0)
    U, _, Vt = np.linalg.svd(W[:3, :3])
    W[:3, :3] = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    W[3] = (0.0, 0.0, 0.0, 1.0)
    return W


def common_motion(points, cams_and_twists) -> tuple[np.ndarray, np.ndarray]:
    """The one rigid motion of the scene that best explains per-camera corrections.

    Each training camera ``V_i`` corrected to ``exp(xi_i^) V_i`` sees the splats as the
    uncorrected camera sees them moved by ``W_i = V_i^-1 exp(xi_i^) V_i``. Corrections are
    free to drift together (the gauge of joint pose and splat refinement); this returns the
    least-squares rigid ``(R, t)`` (``p -> R p + t``) over ``points`` [N, 3] (the splat centres)
    between ``p`` and the mean of ``W_i p`` (Kabsch), so that the splats moved by it sit in the
    frame of the recorded poses again. ``cams_and_twists``: ``(V_i [4, 4], xi_i [6])`` pairs.
    """
    P = np.asarray(points, dtype=np.float64)
    Q = np.zeros_like(P)
    n = 0
    for V, xi in cams_and_twists:
        W = world_motion(V, xi)
        Q += P @ W[:3, :3].T + W[:3, 3]
        n += 1
    if n == 0 or len(P) == 0:
        return np.eye(3), np.zeros(3)
    Q /= n
    pc, qc = P.mean(0), Q.mean(0)
    U, _, Vt = np.linalg.svd((Q - qc).T @ (P - pc))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    return R, qc - R @ pc


def rigidly_moved(splats: dict, R: np.ndarray, t: np.ndarray) -> dict:
    """``splats`` (means, quats, ...) moved by ``p -> R p + t`` (orientations rotated by ``R``)."""
    import torch

    dev, dt = splats["means"].device, splats["means"].dtype
    Rt = torch.as_tensor(R, dtype=dt, device=dev)
    q = torch.as_tensor(quaternion_from_rotation(np.asarray(R, dtype=np.float64)), dtype=dt, device=dev)
    quats = torch.nn.functional.normalize(splats["quats"], dim=-1)
    return {**splats, "means": splats["means"] @ Rt.T + torch.as_tensor(t, dtype=dt, device=dev),
            "quats": _quat_mul(q, quats)}
