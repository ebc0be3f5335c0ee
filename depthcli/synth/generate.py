"""``depthcli synth``: render procedural scenes along a camera trajectory.

With one scene, ``OUT`` is a depth dataset (metres, exact z-depth, RGB images)
plus ``OUT/scene.json`` (the scene, so exact depth can be re-computed anywhere:
:func:`depthcli.synth.scene.load_scene`). With several scenes, ``OUT/scene_000``,
``OUT/scene_001``, ... are each such a dataset. On request the same views are
also exported as a COLMAP model (``OUT/colmap``, optionally with a distorted
camera) and as a 7-Scenes-style RGB-D folder (``OUT/rgbd``): see
:mod:`depthcli.synth.export`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from depthcli.errors import DepthcliError

STYLE_CHOICES = ("indoor", "outdoor", "mixed")
#: Nothing in view nearer than this (metres), per style: see :func:`trajectory`.
CLEARANCE = {"indoor": 0.9, "outdoor": 1.5}


@dataclass
class SynthConfig:
    """Settings of :func:`synthesize` (CLI flags map onto these fields)."""

    out: Path  #: dataset folder to create (or parent of scene_XXX folders when scenes > 1)
    scenes: int = 1  #: number of scenes
    frames: int = 20  #: frames per scene, along one orbit around the scene
    width: int = 320  #: image width (pixels)
    height: int = 240  #: image height (pixels)
    seed: int = 0  #: seed of the first scene (scene i uses seed + i)
    style: str = "indoor"  #: "indoor", "outdoor" or "mixed" (alternating per scene)
    colmap: bool = False  #: also export a COLMAP model (text) under OUT/colmap
    colmap_camera: str = "OPENCV"  #: COLMAP camera model: PINHOLE, SIMPLE_RADIAL or OPENCV (distorted images)
    colmap_points: int = 3000  #: 3D points sampled on visible surfaces for the COLMAP model
    rgbd: bool = False  #: also export a 7-Scenes-style RGB-D folder under OUT/rgbd
    depth_format: str = "npy"  #: dataset depth files: npy or png16
    previews: bool = False  #: write colourised depth previews
    overwrite: bool = False  #: replace an existing OUT

    def validate(self) -> None:
        """Refuse out-of-range settings (one line each) before anything is written."""
        _validate(self)


def frame_name(i: int) -> str:
    """Frame names follow 7-Scenes (``frame-000000``) so every export matches by name."""
    return f"frame-{i:06d}"


def intrinsics(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Square-pixel pinhole K with the principal point at the image centre."""
    fx = 0.5 * width / np.tan(np.radians(hfov_deg) / 2)
    return np.array([[fx, 0.0, width / 2], [0.0, fx, height / 2], [0.0, 0.0, 1.0]])


def look_at(position: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """``cam_from_world`` of a camera at ``position`` looking at ``target`` (world z up, OpenCV axes)."""
    f = np.asarray(target, float) - np.asarray(position, float)
    f /= np.linalg.norm(f)
    r = np.cross(f, np.asarray(up, float))
    r /= np.linalg.norm(r)
    d = np.cross(f, r)  # image y points down
    R = np.stack([r, d, f])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ np.asarray(position, float)
    return T


def trajectory(hint: dict[str, Any], frames: int, scene=None, clearance: float = 0.0) -> list[np.ndarray]:
    """One smooth orbit on the scene's free-space ellipse, looking at its centre.

    Neighbouring frames overlap strongly and the views cover the scene from all
    sides, so multi-view reconstruction from them is well-posed. With a
    ``scene`` and ``clearance > 0``, each pose is pulled in or pushed out along
    its radius (and raised if needed) until nothing in view is nearer than
    ``clearance`` metres: a camera brushing past an object sees surfaces no
    other view sees, which no reconstruction can recover.
    """
    cx, cy = hint.get("center", (0.0, 0.0))
    ax, ay = hint.get("radii", (2.0, 2.0))
    h = float(hint.get("height", 1.5))
    hw = float(hint.get("height_wobble", 0.1))
    tgt = np.asarray(hint.get("target", (0.0, 0.0, 0.5)), float)
    tw = float(hint.get("target_wobble", 0.2))
    probe_K = intrinsics(24, 18, 75.0)
    poses = []
    for i in range(frames):
        a = 2 * np.pi * i / frames
        target = tgt + tw * np.array([np.cos(3 * a), np.sin(2 * a), 0.3 * np.sin(a)])
        best, best_gap = None, -np.inf
        for dz in (0.0, 0.3, 0.6):
            for sr in (1.0, 0.92, 1.08, 0.84, 0.76, 0.68, 0.6):
                pos = np.array([cx + sr * ax * np.cos(a), cy + sr * ay * np.sin(a), h + dz + hw * np.sin(2 * a)])
                pose = look_at(pos, target)
                if scene is None or clearance <= 0:
                    best = pose
                    break
                _, d = scene.render(probe_K, pose, 24, 18)
                gap = float(d[d > 0].min()) if (d > 0).any() else np.inf
                if gap > best_gap:
                    best, best_gap = pose, gap
                if gap >= clearance:
                    break
            if scene is None or clearance <= 0 or best_gap >= clearance:
                break
        poses.append(best)
    return poses


def _scene_style(cfg: SynthConfig, index: int) -> str:
    if cfg.style == "mixed":
        return ("indoor", "outdoor")[(cfg.seed + index) % 2]
    return cfg.style


def _validate(cfg: SynthConfig) -> None:
    from depthcli.synth.export import COLMAP_CAMERAS

    if cfg.style not in STYLE_CHOICES:
        raise DepthcliError(f"unknown style '{cfg.style}'", f"use one of {', '.join(STYLE_CHOICES)}")
    from depthcli.validate import MAX_SEED, check_int

    check_int(cfg.scenes, "--scenes", min=1, max=10000)
    check_int(cfg.frames, "--frames", min=1, max=100000)
    check_int(cfg.width, "--width", min=8, max=8192)
    check_int(cfg.height, "--height", min=8, max=8192)
    check_int(cfg.seed, "--seed", min=0, max=MAX_SEED - cfg.scenes + 1)  # scene i uses seed + i
    check_int(cfg.colmap_points, "--colmap-points", min=1, max=10**7)
    if cfg.colmap_camera not in COLMAP_CAMERAS:
        raise DepthcliError(f"unknown COLMAP camera model '{cfg.colmap_camera}'", f"use one of {', '.join(COLMAP_CAMERAS)}")
    if cfg.depth_format not in ("npy", "png16"):
        raise DepthcliError(f"unknown depth format '{cfg.depth_format}'", "use npy or png16")


def synthesize(cfg: SynthConfig) -> dict[str, Any]:
    """Render ``cfg.scenes`` scenes into ``cfg.out`` (atomically); return a summary."""
    from depthcli.console import progress_task
    from depthcli.io.atomic import atomic_output_dir

    cfg.validate()
    t0 = time.time()
    total = cfg.scenes * cfg.frames
    ranges: list[tuple[float, float]] = []
    with atomic_output_dir(cfg.out, cfg.overwrite) as tmp, progress_task("synth", total) as (bar, task):
        for s in range(cfg.scenes):
            folder = tmp if cfg.scenes == 1 else tmp / f"scene_{s:03d}"
            summary = _write_scene(cfg, s, folder, lambda: bar.update(task, advance=1))
            if "range" in summary:
                ranges.append(summary["range"])
    out: dict[str, Any] = {
        "out": str(cfg.out),
        "scenes": cfg.scenes,
        "frames": total,
        "size": f"{cfg.width}x{cfg.height}",
        "style": cfg.style,
    }
    if ranges:
        out["depth_range"] = f"{min(r[0] for r in ranges):.3g} .. {max(r[1] for r in ranges):.3g} m (z-depth, 0 = sky/invalid)"
    if cfg.colmap:
        out["colmap"] = f"{cfg.colmap_camera} camera, text model in colmap/sparse/0"
    if cfg.rgbd:
        out["rgbd"] = "7-Scenes layout in rgbd/ (depth png in mm)"
    out["seconds"] = round(time.time() - t0, 2)
    return out


def _write_scene(cfg: SynthConfig, index: int, folder: Path, tick) -> dict[str, Any]:
    from depthcli.io.dataset import DatasetWriter
    from depthcli.synth.export import write_colmap_model, write_7scenes
    from depthcli.synth.scene import make_scene

    folder.mkdir(parents=True, exist_ok=True)
    style = _scene_style(cfg, index)
    seed = cfg.seed + index
    scene = make_scene(seed, style)
    scene.save(folder / "scene.json")
    K = intrinsics(cfg.width, cfg.height, scene.hfov_deg)
    poses = trajectory(scene.camera_hint, cfg.frames, scene, clearance=CLEARANCE[style])
    writer = DatasetWriter(
        folder,
        depth_units="m",
        source={"kind": "synth", "seed": seed, "style": style, "scene_index": index, "scene_file": "scene.json"},
        depth_format=cfg.depth_format,  # type: ignore[arg-type]
        previews=cfg.previews,
        meta={"notes": "exact z-depth from ray casting; sky and empty pixels are 0 (invalid)"},
    )
    views = []
    for i, pose in enumerate(poses):
        rgb, depth = scene.render(K, pose, cfg.width, cfg.height)
        writer.add_frame(frame_name(i), depth, K, pose, image=rgb)
        views.append((frame_name(i), rgb, depth, pose))
        tick()
    summary = writer.close()
    if cfg.colmap:
        write_colmap_model(
            folder / "colmap", scene, views, K, cfg.width, cfg.height,
            camera_model=cfg.colmap_camera, n_points=cfg.colmap_points, seed=seed,
        )
    if cfg.rgbd:
        write_7scenes(folder / "rgbd", views, K)
    rng = writer.depth_range
    if rng is not None:
        summary["range"] = rng
    return summary
