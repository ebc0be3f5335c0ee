"""COLMAP reconstructions -> depth datasets (model reading: :mod:`depthcli.io.colmap`).

What is read
    A sparse model folder (``cameras``, ``images``, ``points3D`` as ``.bin`` or
    ``.txt``; COLMAP >= 3.12 / pycolmap 4.x also write ``rigs`` and ``frames``),
    found in a project (``PROJECT/sparse/0`` or ``PROJECT/sparse`` beside
    ``PROJECT/images``) or given directly. Binary is preferred when both exist,
    as COLMAP does.

What is written (one frame per registered image, sorted by name)
    * the image undistorted to a PINHOLE camera chosen by COLMAP's own
      ``undistort_camera`` (the same camera ``colmap image_undistorter``
      produces), resampled here with ``cv2.remap`` through pycolmap's camera
      models, so every perspective COLMAP model works; optional ``--downscale``.
    * ``K`` of the stored image and ``cam_from_world`` = COLMAP's pose, unchanged
      (COLMAP's world frame; OpenCV camera axes, as COLMAP).
    * a sparse **z-depth** map in SfM units (``depth_units="sfm"``, 0 = invalid):
      the 3D points whose track includes the image, projected through the stored
      K and pose; the nearest point wins a pixel.
    * ``depth/NAME.points.npy``: float64 ``[M, 4]`` = (u, v, z, point3D_id) of
      every kept point (u, v continuous pixel coordinates of the stored image,
      pixel index = floor; z = z-depth in SfM units), named in the frame's
      ``extra["sparse_points"]``.
    * with ``dense=True``: COLMAP MVS depth maps
      (``stereo/depth_maps/NAME.geometric.bin``, else ``.photometric.bin``) as
      depth. These belong to COLMAP's *dense workspace* (``image_undistorter``
      output), whose model is already PINHOLE: the maps are z-depth for those
      undistorted images, so the model must be pinhole (SIMPLE_PINHOLE or
      PINHOLE) and is used as is.

Spherical cameras (EQUIRECTANGULAR) have no pinhole equivalent and are refused.
"""


from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from depthcli.convert.common import downscale_frame
from depthcli.convert.config import ConvertConfig
from depthcli.errors import DepthcliError
from depthcli.io import colmap as colmap_files
from depthcli.io.paths import resolve_inside
from depthcli.io.colmap import (
    PINHOLE_MODELS,
    cam_from_world_matrix,
    find_dense_suffix,
    import_pycolmap,
    is_perspective,
    is_registered,
    locate,
    model_name,
    read_colmap_dense_array,
    read_image_raw,
    read_reconstruction,
    track_image_ids,
)

KINDS = ("colmap",)


def detect(source: Path) -> tuple[str, str] | None:
    """``("colmap", reason)`` if ``source`` is a COLMAP project or model folder, else None."""
    reason = colmap_files.detect(source)
    return None if reason is None else ("colmap", reason)


# --------------------------------------------------------------------------- undistortion


@dataclass
class Undistorter:
    """Resample one COLMAP camera's images to COLMAP's undistorted PINHOLE camera."""

    K: np.ndarray  #: [3, 3] pinhole intrinsics of the undistorted image (pixels)
    width: int  #: undistorted image width
    height: int  #: undistorted image height
    map_x: np.ndarray | None  #: [H, W] float32 source x for cv2.remap (None: identity)
    map_y: np.ndarray | None  #: [H, W] float32 source y

    def apply(self, image: np.ndarray) -> np.ndarray:
        import cv2

        if self.map_x is None:
            return image
        return cv2.remap(image, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def make_undistorter(camera) -> Undistorter:
    """COLMAP's pinhole camera for ``camera`` and the pixel maps to resample into it.

    Each pixel centre (col + 0.5, row + 0.5) of the undistorted image becomes a
    ray through the pinhole K, then a position in the original image through the
    camera's own model (pycolmap ``img_from_cam``, any perspective model);
    ``cv2.remap`` samples at that position - 0.5 (OpenCV indexes pixel centres
    by integers).
    """
    pycolmap = import_pycolmap()

    from depthcli.geometry import make_K

    name = model_name(camera)
    w, h = int(camera.width), int(camera.height)
    if name in PINHOLE_MODELS:
        p = np.asarray(camera.params, dtype=np.float64)
        K = make_K(p[0], p[0], p[1], p[2]) if name == "SIMPLE_PINHOLE" else make_K(*p[:4])
        return Undistorter(K, w, h, None, None)
    if not is_perspective(camera):
        raise DepthcliError(
            f"camera {camera.camera_id} uses the spherical model {name}, which has no pinhole equivalent",
            "convert supports perspective camera models only",
        )
    pin = pycolmap.undistort_camera(pycolmap.UndistortCameraOptions(), camera)
    p = np.asarray(pin.params, dtype=np.float64)  # PINHOLE: fx fy cx cy
    K = make_K(*p[:4])
    uw, uh = int(pin.width), int(pin.height)
    u, v = np.meshgrid(np.arange(uw, dtype=np.float64) + 0.5, np.arange(uh, dtype=np.float64) + 0.5)
    rays = np.stack([(u.ravel() - K[0, 2]) / K[0, 0], (v.ravel() - K[1, 2]) / K[1, 1], np.ones(u.size)], axis=1)
    src = np.asarray(camera.img_from_cam(rays), dtype=np.float64)
    src = np.where(np.isfinite(src), src, -1e6)
    map_x = (src[:, 0] - 0.5).reshape(uh, uw).astype(np.float32)
    map_y = (src[:, 1] - 0.5).reshape(uh, uw).astype(np.float32)
    return Undistorter(K, uw, uh, map_x, map_y)



# --------------------------------------------------------------------------- dense maps

#: A dense map may be smaller than its image (patch_match_stereo --max_image_size keeps the
#: aspect ratio); each side may differ from the proportional size by this many pixels.
DENSE_SIZE_SLACK = 1.0
#: Dense depth beyond this multiple of the farthest SfM point of the image is a failed run.
DENSE_MAX_FACTOR = 100.0


def check_dense_map(depth: np.ndarray, width: int, height: int, path: Path) -> None:
    """Refuse a dense map whose size does not match its camera's (failed or foreign run)."""
    dh, dw = depth.shape
    if (dh, dw) == (height, width):
        return
    s = max(dw / width, dh / height)
    if dw > width or dh > height or abs(width * s - dw) > DENSE_SIZE_SLACK or abs(height * s - dh) > DENSE_SIZE_SLACK:
        raise DepthcliError(
            f"--dense: depth map '{path.name}' is {dw}x{dh} but its camera is {width}x{height} "
            "(not the same image at a smaller size)",
            "the dense run failed or belongs to another model: re-run image_undistorter + patch_match_stereo",
        )


def check_dense_values(depth: np.ndarray, sparse_z: np.ndarray, path: Path) -> None:
    """Refuse non-finite or absurd dense depth (a failed run writes values up to ~1e38)."""
    if not np.isfinite(depth).all():
        raise DepthcliError(f"--dense: depth map '{path.name}' holds NaN/Inf", "re-run patch_match_stereo")
    top = float(depth.max()) if depth.size else 0.0
    z = sparse_z[np.isfinite(sparse_z) & (sparse_z > 0)]
    limit = DENSE_MAX_FACTOR * float(z.max()) if z.size else 1e6
    if top > limit:
        ref = f"{DENSE_MAX_FACTOR:g} x the farthest SfM point ({float(z.max()):.4g})" if z.size else f"{limit:g}"
        raise DepthcliError(
            f"--dense: depth map '{path.name}' reaches {top:.4g}, beyond {ref}: the dense run failed",
            "re-run patch_match_stereo (check its depth_min/depth_max), or drop --dense",
        )


def _dense_path(maps: Path, im, suffix: str) -> Path:
    return resolve_inside(maps, f"{im.name}{suffix}", f"COLMAP image {im.image_id} depth map")


def _check_dense_maps(rec, images, maps: Path, suffix: str, point_xyz: np.ndarray, per_image: dict) -> None:
    """Check every dense map before anything is written: present, one channel, the
    camera's size (or a proportionally smaller one), finite and not absurd."""
    for im in images:
        camera = rec.cameras[im.camera_id]
        dpath = _dense_path(maps, im, suffix)
        if not dpath.is_file():
            raise DepthcliError(f"--dense: depth map '{dpath}' is missing", "run patch_match_stereo on every image, or drop --dense")
        depth = read_colmap_dense_array(dpath)
        if depth.ndim != 2:
            raise DepthcliError(f"'{dpath}' has {depth.shape[2]} channels, a depth map has 1")
        w, h = int(camera.width), int(camera.height)
        if model_name(camera) not in PINHOLE_MODELS:
            raise DepthcliError(
                f"--dense needs the undistorted model of COLMAP's dense workspace, but camera "
                f"{camera.camera_id} is {model_name(camera)}",
                "pass the dense workspace folder (image_undistorter output: images/, sparse/, stereo/)",
            )
        check_dense_map(depth, w, h, dpath)
        T = cam_from_world_matrix(im)
        idx = np.asarray(per_image[int(im.image_id)], dtype=np.int64)
        z = (point_xyz[idx] @ T[2, :3] + T[2, 3]) if len(idx) else np.zeros(0)
        check_dense_values(depth, z, dpath)


# --------------------------------------------------------------------------- conversion


def convert_colmap(cfg: ConvertConfig, folder: Path) -> dict[str, Any]:
    """Write the dataset of a COLMAP source into ``folder`` (see the module docstring).

    Returns the :class:`~depthcli.io.dataset.DatasetWriter` summary plus point counts.
    """
    import cv2

    from depthcli.console import log, track
    from depthcli.depth import apply_far_cutoff
    from depthcli.geometry import project_points, scale_K, splat_sparse_depth
    from depthcli.io.dataset import DatasetWriter

    lay = locate(cfg.source, cfg.images, cfg.dense)
    for note in lay.notes:
        log(note)
    rec = read_reconstruction(lay)

    images = sorted((im for im in rec.images.values() if is_registered(im)), key=lambda im: im.name)
    if not images:
        raise DepthcliError(f"the COLMAP model in '{lay.model_dir}' has no registered images")
    if cfg.max_frames is not None:
        images = images[: max(0, int(cfg.max_frames))]
    image_paths = {im.image_id: resolve_inside(lay.images_dir, im.name, f"COLMAP image {im.image_id} name") for im in images}
    missing = [im.name for im in images if not image_paths[im.image_id].is_file()]
    if missing:
        raise DepthcliError(
            f"{len(missing)} image(s) of the model are missing from '{lay.images_dir}': "
            + ", ".join(missing[:5])
            + (", ..." if len(missing) > 5 else ""),
            "pass the folder the model's image names are relative to with --images",
        )

    # One pass over the points: per image the ids of points whose track includes it.
    keep_ids = set(int(i) for i in (im.image_id for im in images))
    per_image: dict[int, list[int]] = {i: [] for i in keep_ids}
    ids, xyz, errors, lengths = [], [], [], []
    for pid, point in rec.points3D.items():
        idx = len(ids)
        ids.append(int(pid))
        xyz.append(np.asarray(point.xyz, dtype=np.float64))
        errors.append(float(point.error))
        img_ids = track_image_ids(point)
        lengths.append(len(set(img_ids)))  # images seeing the point
        for iid in set(img_ids):
            if iid not in rec.images:
                raise DepthcliError(
                    f"point {pid} of the COLMAP model references image {iid}, which the model lacks",
                    "the model is inconsistent; re-export it with COLMAP",
                )
            if iid in per_image:
                per_image[iid].append(idx)
    point_ids = np.asarray(ids, dtype=np.int64)
    point_xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    point_err = np.asarray(errors, dtype=np.float64)
    point_len = np.asarray(lengths, dtype=np.int64)
    passes = np.ones(len(point_ids), dtype=bool)
    fail_err = np.zeros(len(point_ids), dtype=bool)
    if cfg.max_reproj_error is not None:
        fail_err = (point_err >= 0) & (point_err > cfg.max_reproj_error)  # error < 0: unknown, kept
    fail_len = point_len < int(cfg.min_track_length)
    passes &= ~fail_err & ~fail_len

    filters = {
        "max_reproj_error": cfg.max_reproj_error,
        "min_track_length": int(cfg.min_track_length),
        "max_depth": cfg.max_depth,
    }
    source = {
        "kind": "colmap",
        "path": str(Path(cfg.source).absolute()),
        "model_format": lay.model_format,
        "layout": lay.layout,
        "model": str(lay.model_dir.absolute()),
        "images": str(lay.images_dir.absolute()),
        "depth": "dense" if cfg.dense else "sparse",
        "filters": filters,
    }
    writer = DatasetWriter(
        folder,
        depth_units="sfm",
        source=source,
        depth_format=cfg.depth_format,
        depth_scale=cfg.depth_scale,
        previews=cfg.previews,
        meta={"sparse_points_columns": ["u", "v", "z", "point3D_id"]},
    )
    dense_suffix = find_dense_suffix(lay.stereo_dir) if cfg.dense and lay.stereo_dir is not None else None
    n = int(cfg.downscale)
    undistorters: dict[int, Undistorter] = {}
    counts = {"observations": 0, "kept": 0, "filtered_reproj_error": 0, "filtered_track_length": 0,
              "outside_image": 0, "beyond_max_depth": 0}
    models_seen: set[str] = set()

    if dense_suffix is not None:
        _check_dense_maps(rec, images, lay.stereo_dir / "depth_maps", dense_suffix, point_xyz, per_image)

    for im in track(images, "colmap frames"):
        camera = rec.cameras[im.camera_id]
        models_seen.add(model_name(camera))
        cam_from_world = cam_from_world_matrix(im)
        img = read_image_raw(image_paths[im.image_id])
        if img.shape[:2] != (int(camera.height), int(camera.width)):
            rotated = img.shape[:2] == (int(camera.width), int(camera.height))
            hint = "EXIF rotation?" if rotated else "wrong --images folder?"
            raise DepthcliError(
                f"image '{im.name}' is {img.shape[1]}x{img.shape[0]} "
                f"but its COLMAP camera is {camera.width}x{camera.height}",
                hint,
            )
        dense_depth = None
        if dense_suffix is not None:
            if model_name(camera) not in PINHOLE_MODELS:
                raise DepthcliError(
                    f"--dense needs the undistorted model of COLMAP's dense workspace, but camera "
                    f"{camera.camera_id} is {model_name(camera)}",
                    "pass the dense workspace folder (image_undistorter output: images/, sparse/, stereo/)",
                )
            dpath = _dense_path(lay.stereo_dir / "depth_maps", im, dense_suffix)
            if not dpath.is_file():
                raise DepthcliError(
                    f"--dense: depth map '{dpath}' is missing", "run patch_match_stereo on every image, or drop --dense"
                )
            dense_depth = read_colmap_dense_array(dpath)
            if dense_depth.ndim != 2:
                raise DepthcliError(f"'{dpath}' has {dense_depth.shape[2]} channels, a depth map has 1")

        if camera.camera_id not in undistorters:
            undistorters[camera.camera_id] = make_undistorter(camera)
        und = undistorters[camera.camera_id]
        img = und.apply(img)
        K = und.K
        h, w = und.height, und.width
        if dense_depth is not None:
            if dense_depth.shape != (h, w):
                # patch_match_stereo --max_image_size shrinks the maps: follow them.
                dh, dw = dense_depth.shape
                K = scale_K(K, dw / w, dh / h)
                img = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_AREA)
                h, w = dh, dw
        if n > 1:
            # crop to a multiple of n, then K / n: image, dense depth and sparse points agree
            dense_depth, K, img = downscale_frame(dense_depth, K, img, n, f"image '{im.name}'")
            h, w = img.shape[:2]

        # Sparse points of this image's own tracks.
        idx = np.asarray(sorted(per_image[int(im.image_id)]), dtype=np.int64)
        counts["observations"] += len(idx)
        counts["filtered_reproj_error"] += int(fail_err[idx].sum())
        counts["filtered_track_length"] += int((fail_len[idx] & ~fail_err[idx]).sum())
        idx = idx[passes[idx]]
        uv, z = project_points(point_xyz[idx], K, cam_from_world)
        inside = np.isfinite(uv).all(axis=1) & (z > 0)
        inside &= (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        counts["outside_image"] += int((~inside).sum())
        near = inside.copy()
        if cfg.max_depth is not None:
            near &= z <= cfg.max_depth
            counts["beyond_max_depth"] += int((inside & ~near).sum())
        idx, uv, z = idx[near], uv[near], z[near]
        counts["kept"] += len(idx)
        if dense_depth is not None:
            depth = apply_far_cutoff(dense_depth, cfg.max_depth)
        else:
            depth, _ = splat_sparse_depth(uv, z, h, w)
        frame = writer.add_frame(im.name, depth, K, cam_from_world, image=img)
        points_rel = str(Path(frame.depth).with_suffix("")) + ".points.npy"
        table = np.column_stack([uv, z, point_ids[idx].astype(np.float64)]) if len(idx) else np.zeros((0, 4))
        np.save(folder / points_rel, table.astype(np.float64))
        frame.extra.update(
            {
                "sparse_points": points_rel,
                "colmap": {
                    "image_id": int(im.image_id),
                    "camera_id": int(camera.camera_id),
                    "camera_model": model_name(camera),
                },
            }
        )

    summary = writer.close()
    summary.update(
        {
            "model": f"{lay.model_format}, {lay.layout}",
            "camera_models": ", ".join(sorted(models_seen)),
            "depth_source": f"dense ({dense_suffix})" if dense_suffix else "sparse SfM points",
            "points_kept": counts["kept"],
            "points_filtered": counts["filtered_reproj_error"]
            + counts["filtered_track_length"]
            + counts["beyond_max_depth"],
            "point_counts": counts,
        }
    )
    return summary


def convert_source(cfg: ConvertConfig, folder: Path, kind: str = "colmap") -> dict[str, Any]:
    """Family entry point used by :func:`depthcli.convert.convert`."""
    return convert_colmap(cfg, folder)
