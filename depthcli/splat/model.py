"""Gaussian splat parameters: storage, activations, and initialisation from a dataset.

Parameters are stored pre-activation in a ``torch.nn.ParameterDict`` (the layout
gsplat's strategies expect, so they can add and remove Gaussians):

* ``means``     [N, 3] centres (in the *normalised* training frame, see below)
* ``scales``    [N, 3] log standard deviations        -> ``exp``
* ``quats``     [N, 4] rotation quaternions w x y z    -> normalised
* ``opacities`` [N]    opacity logits                  -> ``sigmoid``
* ``sh0``       [N, 3] degree-0 SH colour (only when colour is trained)
                                                       -> RGB = 0.5 + SH_C0 * sh0

**Normalisation.** Training runs in a frame where the scene has unit size:
``x_norm = (x_world - center) / scale``. A camera ``cam_from_world = [R | t]``
becomes ``[R | (R center + t) / scale]`` and every z-depth is divided by
``scale``. Everything written out (PLY, rendered depth, metrics) is converted
back to the dataset's world frame and depth units (:meth:`SceneNorm.to_world`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depthcli.errors import DepthcliError
from depthcli.io.ply import SH_C0, SplatArrays

#: A frame is "sparse" (SfM points, LiDAR) when fewer than this fraction of its pixels hold depth.
SPARSE_VALID_FRACTION = 0.05


@dataclass
class SceneNorm:
    """Similarity from the dataset world frame to the training frame: x_n = (x - center) / scale."""

    center: np.ndarray  #: [3] world point mapped to the origin
    scale: float  #: world units per training unit (depth_world = depth_train * scale)

    def points_to_norm(self, points_world: np.ndarray) -> np.ndarray:
        return (np.asarray(points_world, np.float64) - self.center) / self.scale

    def viewmat_to_norm(self, cam_from_world: np.ndarray) -> np.ndarray:
        """``cam_from_world`` of the training frame (camera axes scaled by 1/scale)."""
        T = np.array(cam_from_world, dtype=np.float64)
        out = np.eye(4)
        out[:3, :3] = T[:3, :3]
        out[:3, 3] = (T[:3, :3] @ self.center + T[:3, 3]) / self.scale
        return out

    def to_json(self) -> dict:
        return {"center": [float(c) for c in self.center], "scale": float(self.scale)}

    @classmethod
    def from_json(cls, d: dict) -> "SceneNorm":
        return cls(center=np.asarray(d["center"], dtype=np.float64), scale=float(d["scale"]))


def voxel_downsample(
    points: np.ndarray, voxel: float, colors: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Average the points (and colours) falling in each cube of side ``voxel``.

    Deterministic: output order follows the sorted voxel keys.
    """
    assert voxel > 0
    keys = np.floor(points / voxel).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    m = len(counts)
    out = np.zeros((m, 3))
    for d in range(3):
        out[:, d] = np.bincount(inverse, weights=points[:, d], minlength=m) / counts
    out_c = None
    if colors is not None:
        out_c = np.zeros((m, 3))
        for d in range(3):
            out_c[:, d] = np.bincount(inverse, weights=colors[:, d], minlength=m) / counts
    return out, out_c


def gather_init_points(
    dataset,
    frames: list,
    depths: list[np.ndarray],
    images: list[np.ndarray | None] | None,
    max_points: int = 60000,
    voxel: float | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """World points (and RGB in [0, 1]) to start the Gaussians from.

    Dense frames are back-projected (z-depth, :func:`depthcli.depth.backproject_depth`)
    and voxel-downsampled; sparse frames (< 5 % valid pixels: SfM points, LiDAR)
    contribute every valid pixel. ``voxel`` (world units) defaults to the size that
    keeps at most ``max_points`` points. Returns ``(points, colors | None, info)``.
    """
    from depthcli.depth import backproject_depth, valid_mask

    fractions = [float(valid_mask(d).mean()) for d in depths]
    dense = float(np.mean(fractions)) >= SPARSE_VALID_FRACTION
    pts_all, col_all = [], []
    total_valid = sum(int(valid_mask(d).sum()) for d in depths)
    # Stride keeps the raw cloud to ~8x the target before voxelising (memory, speed).
    stride = 1
    if dense:
        while total_valid / (stride * stride) > 8 * max_points and stride < 16:
            stride += 1
    for i, (frame, depth) in enumerate(zip(frames, depths)):
        pts, pix = backproject_depth(depth, frame.K, frame.cam_from_world, stride=stride)
        pts_all.append(pts)
        if images is not None and images[i] is not None:
            col_all.append(images[i][pix[:, 0], pix[:, 1]].astype(np.float64) / 255.0)
    if not pts_all or sum(len(p) for p in pts_all) == 0:
        raise DepthcliError("no valid depth in the training frames", "check the dataset with depthcli convert")
    points = np.concatenate(pts_all)
    colors = np.concatenate(col_all) if col_all and len(col_all) == len(pts_all) else None
    if voxel is None:
        med_z = float(np.median(np.concatenate([d[valid_mask(d)][::97] for d in depths])))
        f = float(np.median([fr.K[0, 0] for fr in frames]))
        voxel = 2.0 * med_z / f  # ~2 pixels at the median depth
        if not dense:
            voxel *= 0.25
        while True:
            keys = np.unique(np.floor(points / voxel).astype(np.int64), axis=0)
            if len(keys) <= max_points:
                break
            voxel *= 1.25
    points, colors = voxel_downsample(points, voxel, colors)
    info = {"init_points": int(len(points)), "voxel": float(voxel), "dense": dense, "stride": stride,
            "valid_fraction": float(np.mean(fractions))}
    return points, colors, info


def scene_norm_from(frames: list, depths: list[np.ndarray]) -> SceneNorm:
    """Centre = mean camera centre; scale = median valid z-depth (>0)."""
    from depthcli.depth import valid_mask

    centers = np.stack([np.linalg.inv(f.cam_from_world)[:3, 3] for f in frames])
    z = np.concatenate([d[valid_mask(d)][::13] for d in depths])
    scale = float(np.median(z)) if z.size else 1.0
    assert scale > 0
    return SceneNorm(center=centers.mean(axis=0), scale=scale)


def create_params(
    points_norm: np.ndarray,
    colors: np.ndarray | None,
    init_opacity: float = 0.5,
    init_scale: float = 1.0,
    device: str = "cpu",
):
    """A ``ParameterDict`` of Gaussians at ``points_norm`` (training frame).

    Each scale is ``init_scale`` x the RMS distance to the 3 nearest neighbours
    (exact, :func:`depthcli.splat.knn.rms_knn_distance`), isotropic; rotations are identity;
    opacity ``init_opacity``.
    """
    import torch

    n = len(points_norm)
    assert n > 0
    if n > 1:
        from depthcli.splat.knn import rms_knn_distance

        d = rms_knn_distance(points_norm, 3)
        pos = d[d > 0]
        floor = float(np.median(pos)) * 0.1 if pos.size else 1e-3
        d = np.maximum(d, floor)
    else:
        d = np.full(1, 0.01)
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
    params = {
        "means": t(points_norm),
        "scales": t(np.log(d * init_scale)[:, None].repeat(3, axis=1)),
        "quats": t(np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))),
        "opacities": t(np.full(n, np.log(init_opacity / (1 - init_opacity)))),
    }
    if colors is not None:
        params["sh0"] = t((np.clip(colors, 0, 1) - 0.5) / SH_C0)
    return torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in params.items()})


def activated(params) -> dict:
    """Render-ready tensors: means, quats (unit), scales (linear), opacities [0, 1], colors or None."""
    import torch

    colors = None
    if "sh0" in params:
        colors = 0.5 + SH_C0 * params["sh0"]
    return {
        "means": params["means"],
        "quats": torch.nn.functional.normalize(params["quats"], dim=-1),
        "scales": torch.exp(params["scales"]),
        "opacities": torch.sigmoid(params["opacities"]),
        "colors": colors,
    }


def params_to_arrays(params, norm: SceneNorm, comments: list[str] | None = None) -> SplatArrays:
    """Convert training parameters to world-frame :class:`SplatArrays` (for the PLY)."""
    import torch

    with torch.no_grad():
        means = params["means"].detach().cpu().double().numpy() * norm.scale + norm.center
        log_scales = params["scales"].detach().cpu().double().numpy() + np.log(norm.scale)
        quats = torch.nn.functional.normalize(params["quats"].detach().cpu(), dim=-1).numpy()
        opac = params["opacities"].detach().cpu().numpy()
        has = "sh0" in params
        f_dc = params["sh0"].detach().cpu().numpy() if has else np.zeros((len(means), 3), np.float32)
    return SplatArrays(
        means=means.astype(np.float32),
        log_scales=log_scales.astype(np.float32),
        quats=quats.astype(np.float32),
        opacity_logits=opac.astype(np.float32),
        f_dc=f_dc.astype(np.float32),
        has_colors=has,
        comments=list(comments or []),
    )


def arrays_to_tensors(arrays: SplatArrays, device: str = "cpu") -> dict:
    """World-frame render-ready tensors (activated) from a loaded PLY."""
    import torch

    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
    quats = torch.nn.functional.normalize(t(arrays.quats), dim=-1)
    return {
        "means": t(arrays.means),
        "quats": quats,
        "scales": torch.exp(t(arrays.log_scales)),
        "opacities": torch.sigmoid(t(arrays.opacity_logits)),
        "colors": t(arrays.colors_rgb) if arrays.has_colors else None,
    }
