"""One Gaussian-splat rasteriser with three backends: cpu (compiled), gsplat (CUDA), torch.

:func:`render` mirrors ``gsplat.rasterization()`` (classic mode, no SH, unpacked) so the
gsplat backend is a thin call; the torch backend reproduces the same numbers on CPU,
CUDA or MPS; the cpu backend (:mod:`depthcli.splat.backend_cpu`, numba, parallel over
16x16 tiles) reproduces them on CPU up to float32 rounding, and is the default there.

Semantics (all backends; the same as gsplat's "classic" rasteriser):

* Each Gaussian's centre goes to camera space with ``cam_from_world`` (``viewmats``,
  OpenCV axes: x right, y down, z forward). Its **z-depth** is the camera-space z of
  the centre (along the optical axis, not the ray length), in the scene's units.
* The 3D covariance ``R(q) diag(s)^2 R(q)^T`` is projected with the EWA Jacobian of
  the pinhole at the centre, where x/z and y/z are clamped to the image edges plus 30 %
  of the half field of view (gsplat's clamp). ``eps2d`` (0.3 px^2) is added to the
  diagonal of the 2D covariance (no compensation).
* A Gaussian is culled (``radii == 0``) when z < ``near_plane`` or z > ``far_plane``,
  when its 2D covariance is degenerate, when its 3-sigma radius is <= ``radius_clip``,
  or when the square of that radius around its 2D centre misses the image.
* Pixel (row, col) is sampled at its centre ``(col + 0.5, row + 0.5)``. With
  ``d = mean2d - pixel`` and the conic (inverse 2D covariance) ``[[a, b], [b, c]]``:
  ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy`` and ``alpha = min(0.999, o exp(-sigma))``;
  pairs with ``sigma < 0`` or ``alpha < 1/255`` are skipped.
* Gaussians are composited front to back in z order. ``T`` starts at 1; a pixel stops
  *before* the Gaussian that would bring ``T (1 - alpha)`` to <= 1e-4 (that Gaussian is
  not included). ``w_i = alpha_i T_i``.
* Outputs: ``RGB = sum w_i c_i + T_final * background``; ``D`` (accumulated depth) =
  ``sum w_i z_i``; ``ED`` (expected depth) = ``D / max(sum w_i, 1e-10)``; the depth
  channel ignores backgrounds (gsplat pads them with 0); ``render_alphas = sum w_i``
  (``= 1 - T_final``). Pixels no Gaussian reaches have alpha 0 and depth 0 (0 = invalid).
* Hit-distance modes ``d``, ``Ed``, ``RGB-d``, ``RGB-Ed`` are ``D``, ``ED``, ``RGB+D``,
  ``RGB+ED`` with ``z_i`` replaced by ``r_i = ||cam_from_world(mean_i)||``, the distance
  from the camera centre to the Gaussian's centre (metres along the ray through the
  centre, not along the optical axis). gsplat 1.6 has modes of the same names but
  defines them per pixel (the distance to the point of the pixel's ray where the
  Gaussian's 3D response peaks) and only with ``with_eval3d=True``; for a pixel whose ray
  passes through a Gaussian's centre the two agree. The gsplat backend here (classic
  EWA) does not render them.

The torch backend evaluates every pixel where ``alpha >= 1/255`` (an exact,
opacity-aware ellipse per Gaussian); the cpu backend visits, inside each 16x16 tile, a
box that contains that ellipse with a small margin and applies the same exact test, so
both composite the same pairs. gsplat evaluates the 16x16 tiles its bounding box
touches; the two agree except for contributions just above 1/255 at the edge of a
Gaussian's footprint with older gsplat versions (3-sigma tile boxes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from depthcli.errors import DepthcliError

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED", "d", "Ed", "RGB-d", "RGB-Ed"]
Backend = Literal["auto", "cpu", "gsplat", "torch"]

MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED", "d", "Ed", "RGB-d", "RGB-Ed")
BACKENDS = ("auto", "cpu", "gsplat", "torch")


def mode_has_rgb(mode: str) -> bool:
    """True when ``mode`` renders colour channels (RGB first)."""
    return mode.startswith("RGB")


def mode_depth_kind(mode: str) -> str | None:
    """The depth channel of ``mode``: ``"z"`` (camera z of the centres: D, ED, RGB+D,
    RGB+ED), ``"dist"`` (distance from the camera centre to the centres: d, Ed, RGB-d,
    RGB-Ed) or None (RGB)."""
    if mode in ("D", "ED", "RGB+D", "RGB+ED"):
        return "z"
    if mode in ("d", "Ed", "RGB-d", "RGB-Ed"):
        return "dist"
    return None


def mode_is_expected(mode: str) -> bool:
    """True when the depth channel is normalised by the accumulated alpha (ED, Ed, ...)."""
    return mode in ("ED", "Ed", "RGB+ED", "RGB-Ed")


def gsplat_available() -> bool:
    """True when CUDA is usable and gsplat imports (the ``depthcli[cuda]`` extra)."""
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA build
        return False
    return True


def resolve_backend(backend: str, device) -> str:
    """The backend ``render(backend=...)`` will use for tensors on ``device``."""
    if backend not in BACKENDS:
        raise DepthcliError(f"unknown render backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        kind = getattr(device, "type", str(device))
        if kind == "cuda" and gsplat_available():
            return "gsplat"
        return "cpu" if kind == "cpu" else "torch"
    return backend


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, mode, backgrounds):
    import torch

    def shape_err(name, expected, got):
        raise DepthcliError(
            f"render: {name} must have shape {expected}, got {tuple(got.shape)}",
            hint="see depthcli.splat.render.render for the expected tensor shapes",
        )

    if mode not in MODES:
        raise DepthcliError(f"unknown render mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
    for name, t in (("means", means), ("quats", quats), ("scales", scales), ("opacities", opacities),
                    ("viewmats", viewmats), ("Ks", Ks)):
        if not isinstance(t, torch.Tensor):
            raise DepthcliError(f"render: {name} must be a torch.Tensor, got {type(t).__name__}")
    if means.dim() != 2 or means.shape[1] != 3:
        shape_err("means", "[N, 3]", means)
    N = means.shape[0]
    if quats.shape != (N, 4):
        shape_err("quats", f"[{N}, 4]", quats)
    if scales.shape != (N, 3):
        shape_err("scales", f"[{N}, 3]", scales)
    if opacities.shape != (N,):
        shape_err("opacities", f"[{N}]", opacities)
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        shape_err("viewmats", "[C, 4, 4]", viewmats)
    C = viewmats.shape[0]
    if Ks.shape != (C, 3, 3):
        shape_err("Ks", f"[{C}, 3, 3]", Ks)
    if mode_has_rgb(mode):
        if colors is None:
            raise DepthcliError(f"render: mode {mode} needs colors", hint="pass colors [N, 3] or use mode D/ED")
        if not (colors.shape == (N, 3) or colors.shape == (C, N, 3)):
            shape_err("colors", f"[{N}, 3] or [{C}, {N}, 3]", colors)
    if not (0 < int(width) <= 32768 and 0 < int(height) <= 32768):
        raise DepthcliError(f"render: image size must be 1..32768 pixels per side, got {width}x{height}")
    if backgrounds is not None and mode_has_rgb(mode):
        if not (backgrounds.shape == (C, 3) or backgrounds.shape == (3,)):
            shape_err("backgrounds", f"[{C}, 3] or [3]", backgrounds)
    devices = {t.device for t in (means, quats, scales, opacities, viewmats, Ks)}
    if colors is not None:
        devices.add(colors.device)
    if len(devices) > 1:
        raise DepthcliError(
            f"render: inputs live on different devices ({', '.join(sorted(str(d) for d in devices))})",
            hint="move all tensors to one device",
        )


def render(
    means: "Tensor",  # [N, 3] centres, world frame
    quats: "Tensor",  # [N, 4] rotations w x y z (normalised inside)
    scales: "Tensor",  # [N, 3] standard deviations along the local axes (activated, > 0)
    opacities: "Tensor",  # [N] in [0, 1] (activated)
    colors: "Tensor | None",  # [N, 3] or [C, N, 3] activated RGB; may be None for D / ED
    viewmats: "Tensor",  # [C, 4, 4] cam_from_world (OpenCV axes)
    Ks: "Tensor",  # [C, 3, 3] pinhole intrinsics (pixel centres at +0.5)
    width: int,
    height: int,
    *,
    mode: RenderMode = "RGB",
    backend: Backend = "auto",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: "Tensor | None" = None,  # [C, 3] or [3]; RGB channels only
    radius_clip: float = 0.0,
) -> "tuple[Tensor, Tensor, dict]":
    """Rasterise 3D Gaussians into ``C`` pinhole cameras (differentiable).

    Returns ``(render_colors, render_alphas, meta)``:

    * ``render_colors`` [C, H, W, X]: X = 3 for ``RGB``, 1 for ``D`` / ``ED``, 4 for
      ``RGB+D`` / ``RGB+ED`` (depth channel last). ``D`` is the accumulated z-depth
      ``sum w_i z_i``; ``ED`` the expected z-depth ``D / max(sum w_i, 1e-10)`` (0 where
      nothing was hit: 0 = invalid). Depth is in the units of ``means`` / ``viewmats``.
    * ``render_alphas`` [C, H, W, 1]: accumulated opacity ``sum w_i`` (= 1 - T_final).
    * ``meta``: ``means2d`` [C, N, 2] projected centres (pixels; its ``.grad`` is retained
      after backward when it needs grad, for densification), ``radii`` [C, N] int 3-sigma
      radius in pixels (0 = culled), ``depths`` [C, N] camera z of each centre,
      ``conics`` [C, N, 3], ``n_pairs`` (int: (Gaussian, pixel) pairs composited; for
      gsplat: tile intersections), ``backend`` ("cpu", "torch" or "gsplat"), and
      ``width``, ``height``, ``n_cameras`` (read by gsplat's densification strategies).
      The torch backend adds ``n_candidates`` (pairs evaluated), the cpu backend
      ``n_intersections`` (tile-Gaussian pairs).

    ``backend="auto"`` uses the compiled cpu backend for CPU tensors, gsplat for CUDA
    tensors when it is installed, else the torch backend (CUDA without gsplat, MPS).
    Differentiable w.r.t. means, quats, scales, opacities and colors with every backend.
    The cpu backend computes in float32 (as gsplat) and returns the input dtype. See the
    module docstring for the exact rasterisation rules and the hit-distance modes.
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, mode, backgrounds)
    chosen = resolve_backend(backend, means.device)
    if chosen == "gsplat":
        from depthcli.splat.backend_gsplat import render_gsplat

        return render_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height),
            mode=mode, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
            backgrounds=backgrounds, radius_clip=radius_clip,
        )
    if chosen == "cpu":
        from depthcli.splat.backend_cpu import render_cpu

        return render_cpu(
            means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height),
            mode=mode, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
            backgrounds=backgrounds, radius_clip=radius_clip,
        )
    from depthcli.splat.backend_torch import render_torch

    return render_torch(
        means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height),
        mode=mode, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
        backgrounds=backgrounds, radius_clip=radius_clip,
    )
