"""Gaussian splats as a standard 3DGS PLY file (plyfile underneath).

The layout is the one written by the original 3D Gaussian Splatting code and read
by common viewers (SuperSplat, the antimatter15 / playcanvas viewers, gsplat's
tools): one ``vertex`` element with float32 properties

* ``x y z``: centre in the **world frame of the dataset** it was trained on,
  in that dataset's depth units (metres, SfM units, ...);
* ``nx ny nz``: unused normals (zeros);
* ``f_dc_0..2``: degree-0 spherical-harmonics colour; RGB = 0.5 + SH_C0 * f_dc;
* ``f_rest_*``: higher SH bands (zeros when the splats are degree 0);
* ``opacity``: the opacity *logit* (opacity = sigmoid(value));
* ``scale_0..2``: the *log* of the standard deviations along the local axes;
* ``rot_0..3``: the rotation quaternion, **w x y z** (need not be normalised).

Depth-only splats (trained without images) still carry ``f_dc`` (zeros, grey) so
viewers open them; a header comment ``depthcli colors none`` records that the
colour is meaningless, and :func:`read_splats_ply` returns ``has_colors=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from depthcli.errors import DepthcliError

#: Degree-0 spherical-harmonics constant: RGB = 0.5 + SH_C0 * f_dc.
SH_C0 = 0.28209479177387814

_REQUIRED = ["x", "y", "z", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


@dataclass
class SplatArrays:
    """Gaussian parameters in their stored (pre-activation) form, numpy float32."""

    means: np.ndarray  #: [N, 3] centres, world frame
    log_scales: np.ndarray  #: [N, 3] log standard deviations (world units)
    quats: np.ndarray  #: [N, 4] rotation quaternions, w x y z
    opacity_logits: np.ndarray  #: [N] logit of the opacity
    f_dc: np.ndarray  #: [N, 3] SH degree-0 colour coefficients (zeros when has_colors is False)
    has_colors: bool = True  #: False for depth-only splats (f_dc is a placeholder)
    comments: list[str] = field(default_factory=list)  #: header comments (provenance)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def colors_rgb(self) -> np.ndarray:
        """[N, 3] RGB in [0, 1] from the degree-0 coefficients."""
        return np.clip(0.5 + SH_C0 * self.f_dc, 0.0, 1.0)


def write_splats_ply(path: Path, splats: SplatArrays, sh_rest: int = 45) -> None:
    """Write ``splats`` to ``path`` (binary little-endian PLY), in place.

    ``sh_rest`` zero ``f_rest_*`` properties are written (45 = degree 3, what most
    viewers expect; 0 is also valid). Use :func:`depthcli.io.atomic.atomic_write`
    around this for an atomic file.
    """
    from plyfile import PlyData, PlyElement

    n = len(splats)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(sh_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    data = np.zeros(n, dtype=[(name, "<f4") for name in names])
    for i, c in enumerate("xyz"):
        data[c] = splats.means[:, i]
    for i in range(3):
        data[f"f_dc_{i}"] = splats.f_dc[:, i] if splats.has_colors else 0.0
        data[f"scale_{i}"] = splats.log_scales[:, i]
    for i in range(4):
        data[f"rot_{i}"] = splats.quats[:, i]
    data["opacity"] = np.asarray(splats.opacity_logits).reshape(n)
    comments = list(splats.comments)
    if not splats.has_colors:
        comments.append("depthcli colors none")
    PlyData([PlyElement.describe(data, "vertex")], text=False, byte_order="<", comments=comments).write(str(path))


def read_splats_ply(path: Path) -> SplatArrays:
    """Read a 3DGS PLY; raises :class:`DepthcliError` if missing, empty or malformed."""
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise DepthcliError(f"splat file '{path}' does not exist", "pass the splats.ply written by depthcli splat-train")
    try:
        ply = PlyData.read(str(path))
    except Exception as exc:  # plyfile raises several types for bad files
        raise DepthcliError(
            f"cannot read '{path}' as a PLY file: {exc}", "is it a complete 3D Gaussian Splatting .ply?"
        ) from None
    if "vertex" not in [e.name for e in ply.elements]:
        raise DepthcliError(f"'{path}' has no 'vertex' element", "is it a 3D Gaussian Splatting .ply?")
    v = ply["vertex"].data
    names = set(v.dtype.names or ())
    missing = [n for n in _REQUIRED if n not in names]
    if missing:
        raise DepthcliError(
            f"'{path}' is not a Gaussian splat PLY (missing {', '.join(missing)})",
            "a point cloud is not enough: pass splats written by depthcli splat-train or 3DGS",
        )
    if len(v) == 0:
        raise DepthcliError(f"'{path}' holds no Gaussians", "train again or pass another file")

    def cols(*keys: str) -> np.ndarray:
        return np.stack([np.asarray(v[k], dtype=np.float32) for k in keys], axis=1)

    comments = list(ply.comments)
    has_colors = all(f"f_dc_{i}" in names for i in range(3)) and "depthcli colors none" not in comments
    f_dc = cols("f_dc_0", "f_dc_1", "f_dc_2") if has_colors else np.zeros((len(v), 3), np.float32)
    out = SplatArrays(
        means=cols("x", "y", "z"),
        log_scales=cols("scale_0", "scale_1", "scale_2"),
        quats=cols("rot_0", "rot_1", "rot_2", "rot_3"),
        opacity_logits=np.asarray(v["opacity"], dtype=np.float32),
        f_dc=f_dc,
        has_colors=has_colors,
        comments=[c for c in comments if c != "depthcli colors none"],
    )
    arrays = [out.means, out.log_scales, out.quats, out.opacity_logits, out.f_dc]
    if not all(np.isfinite(a).all() for a in arrays):
        raise DepthcliError(f"'{path}' contains NaN or Inf parameters", "the training diverged; train again")
    if (np.linalg.norm(out.quats, axis=1) == 0).any():
        raise DepthcliError(f"'{path}' has zero-length rotation quaternions")
    return out


def write_points_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray | None = None, comments: list[str] | None = None) -> None:
    """Write a point cloud: ``vertex`` with float32 ``x y z`` (+ uint8 ``red green blue``).

    The layout Open3D, CloudCompare, MeshLab and nerfstudio's ``ply_file_path``
    loader read (binary little-endian).
    """
    from plyfile import PlyData, PlyElement

    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    data = np.zeros(len(xyz), dtype=fields)
    for i, c in enumerate("xyz"):
        data[c] = xyz[:, i]
    if rgb is not None:
        rgb = np.asarray(rgb).reshape(-1, 3)
        for i, c in enumerate(("red", "green", "blue")):
            data[c] = rgb[:, i]
    PlyData([PlyElement.describe(data, "vertex")], text=False, byte_order="<", comments=list(comments or [])).write(str(path))


def read_points_ply(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(xyz [N, 3] float64, rgb [N, 3] uint8 or None)`` of a point-cloud PLY."""
    from plyfile import PlyData

    try:
        v = PlyData.read(str(path))["vertex"].data
    except Exception as exc:  # plyfile raises several types for bad files
        raise DepthcliError(f"cannot read '{path}' as a point-cloud PLY: {exc}") from None
    xyz = np.stack([np.asarray(v[c], dtype=np.float64) for c in "xyz"], axis=1)
    names = set(v.dtype.names or ())
    rgb = None
    if {"red", "green", "blue"} <= names:
        rgb = np.stack([np.asarray(v[c], dtype=np.uint8) for c in ("red", "green", "blue")], axis=1)
    return xyz, rgb
