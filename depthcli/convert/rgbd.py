"""RGB-D captures -> depth dataset: TUM RGB-D, 7-Scenes, NYU / KITTI ground truth, generic folders.

Every reader decodes the sensor's depth to **z-depth in metres** (``depth_units
"m"``) with **0 = invalid**: each format's own invalid markers (0, 65535, the
Kinect's raw 2047, values that decode to a non-positive depth) become 0.

Layouts (``detect`` recognises them; ``--from`` forces one):

* ``tum``: ``rgb.txt`` + ``depth.txt`` (+ ``groundtruth.txt``), lines
  ``timestamp path``. Colour, depth and poses are associated by the nearest
  timestamp, at most 0.02 s apart (greedy, as TUM's ``associate.py``). Depth
  png / 5000 = metres. ``groundtruth.txt`` holds ``timestamp tx ty tz qx qy qz
  qw`` = **world_from_cam**; the dataset stores its inverse, cam_from_world.
  Intrinsics: the published ones of the sequence family (freiburg1/2/3, from
  the folder name) or ``--intrinsics``. The colour images of freiburg1/2 have a
  small radial distortion that is not removed (the dataset's K is pinhole).
* ``7scenes``: ``frame-NNNNNN.{color.png|color.jpg,depth.png,pose.txt}`` (in
  SOURCE or its ``seq-*`` folders). Depth png in millimetres, 0 and 65535
  invalid. ``pose.txt`` is camera-to-world (world_from_cam). K from
  ``camera-intrinsics.txt``, else fx = fy = 585, cx = 320, cy = 240.
* ``nyu`` / ``kitti``: the ground-truth layouts ``rgb/`` + ``depth/`` (uint16
  png, / 1000 resp. / 256 = metres, 0 invalid), fixed intrinsics, no poses.
* ``folder``: ``color/`` | ``rgb/`` | ``image/`` | ``images/`` + ``depth/``,
  matched by file stem (or by the trailing frame number). Depth ``.npy`` /
  ``.pfm`` is taken as metres; integer images need ``--input-depth-scale``
  (raw / scale = metres) unless ``--depth-encoding`` defines the unit. K from
  ``--intrinsics fx fy cx cy`` or ``--intrinsics-file``; optional ``poses/``
  (one camera-to-world 4x4 text file per frame), else identity poses.

Depth encodings of raw integer depth images (``--depth-encoding``):

* ``linear``: metres = raw / scale.
* ``nyu-raw``: raw NYU Kinect disparity: byte-swap the uint16 as read, then
  metres = 351.3 / (1092.5 - raw) (raw 2047 = no measurement).
* ``sun``: SUN RGB-D bit-rotated millimetres: metres =
  (((d >> 3) | (d << 13)) & 0xFFFF) / 1000, with d widened to uint32.

Kinect v1 depth (7-Scenes, NYU raw) is not registered to the colour camera; it
is used as if aligned, the usual approximation. A depth image whose size
differs from its colour image is an error unless ``--resize-depth`` is given
(nearest-neighbour resize, which assumes both cover the same field of view).
"""


from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from depthcli.convert.common import downscale_frame
from depthcli.convert.config import ConvertConfig
from depthcli.errors import DepthcliError
from depthcli.io.paths import resolve_inside
from depthcli.io.rgbd import (
    DEPTH_ENCODINGS,
    DEPTH_FLOAT_SUFFIXES,
    DEPTH_RAW_SUFFIXES,
    TUM_MAX_DIFFERENCE,
    check_K,
    decode_depth,
    file_size_wh,
    is_8bit_image,
    read_K_file,
    read_pose_txt,
    read_raw_depth,
    read_tum_list,
    associate_timestamps,
    world_from_cam_from_tum,
)

RGBD_KINDS = ("tum", "7scenes", "nyu", "kitti", "folder")
KINDS = RGBD_KINDS

#: TUM depth png value / 5000 = metres.
TUM_DEPTH_SCALE = 5000.0
#: Published TUM RGB-D colour intrinsics (fx, fy, cx, cy) per sequence family.
TUM_INTRINSICS = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}
#: TUM's "ROS default" intrinsics, used when the family cannot be told.
TUM_DEFAULT_INTRINSICS = (525.0, 525.0, 319.5, 239.5)
#: 7-Scenes: depth png in millimetres; default intrinsics.
SEVEN_SCENES_DEPTH_SCALE = 1000.0
SEVEN_SCENES_INTRINSICS = (585.0, 585.0, 320.0, 240.0)


@dataclass(frozen=True)
class Preset:
    """Fixed facts of a ground-truth layout (``rgb/`` + ``depth/``)."""

    raw_scale: float  #: raw uint16 / raw_scale = metres
    intrinsics: tuple[float, float, float, float]  #: fx, fy, cx, cy of the colour image
    note: str  #: one line recorded in dataset.json


#: One table of presets (from ../shared/data/README.md and the Metric3D test annotations).
PRESETS: dict[str, Preset] = {
    "nyu": Preset(1000.0, (518.8579, 519.46961, 325.58245, 253.73617), "NYU Depth v2 ground truth (sync_depth png / 1000)"),
    "kitti": Preset(256.0, (707.0493, 707.0493, 604.0814, 180.5066), "KITTI depth (annotated LiDAR png / 256); eval usually caps at 80 m"),
}

COLOR_DIRS = ("color", "rgb", "image", "images")


# --------------------------------------------------------------------------- detection


def _seven_scenes_dirs(source: Path) -> list[Path]:
    dirs = [source] + sorted(p for p in source.glob("seq-*") if p.is_dir())
    return [d for d in dirs if any(d.glob("frame-*.depth.png"))]


def _color_dir(source: Path) -> Path | None:
    for name in COLOR_DIRS:
        if (source / name).is_dir():
            return source / name
    return None


def _annotation_scale(source: Path) -> float | None:
    import json

    path = source / "test_annotations.json"
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text()).get("files") or []
        scales = {float(f["depth_scale"]) for f in files}
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return scales.pop() if len(scales) == 1 else None


def detect(source: Path) -> tuple[str, str] | None:
    """Tell which RGB-D layout ``source`` holds: ``(kind, reason)`` or None."""
    source = Path(source)
    if not source.is_dir():
        return None
    if (source / "rgb.txt").is_file() and (source / "depth.txt").is_file():
        gt = " + groundtruth.txt" if (source / "groundtruth.txt").is_file() else ""
        return "tum", f"TUM RGB-D lists rgb.txt + depth.txt{gt}"
    dirs = _seven_scenes_dirs(source)
    if dirs:
        n = sum(len(list(d.glob("frame-*.depth.png"))) for d in dirs)
        return "7scenes", f"7-Scenes frames ({n} frame-*.depth.png)"
    color = _color_dir(source)
    if color is not None and (source / "depth").is_dir():
        depth = source / "depth"
        scale = _annotation_scale(source)
        if any(depth.glob("sync_depth_*.png")) or scale == PRESETS["nyu"].raw_scale:
            return "nyu", f"NYU ground-truth layout ({color.name}/ + depth/sync_depth_*.png, png / 1000 = m)"
        tenths = [p for p in depth.glob("*.png") if re.fullmatch(r"\d{10}", p.stem)]
        if scale == PRESETS["kitti"].raw_scale or (tenths and len(tenths) == len(list(depth.iterdir()))):
            return "kitti", f"KITTI depth layout ({color.name}/ + depth/NNNNNNNNNN.png, png / 256 = m)"
        return "folder", f"{color.name}/ + depth/ folders"
    return None



def tum_family_intrinsics(source: Path) -> tuple[tuple[float, float, float, float], str]:
    """Published intrinsics of the TUM family named in the path (``freiburg1`` / ``fr1`` ...)."""
    text = str(Path(source).absolute()).lower()
    for n in ("1", "2", "3"):
        if re.search(rf"(freiburg|fr){n}(?!\d)", text):
            return TUM_INTRINSICS[f"freiburg{n}"], f"TUM freiburg{n} defaults"
    return TUM_DEFAULT_INTRINSICS, "TUM ROS defaults (no freiburg1/2/3 in the path)"


# --------------------------------------------------------------------------- frame lists


@dataclass
class _Item:
    name: str
    depth: Path
    image: Path | None
    world_from_cam: np.ndarray | None = None  #: None = no pose known (identity used)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Plan:
    items: list[_Item]
    K: np.ndarray  #: intrinsics of the colour image, original size
    intrinsics_source: str
    encoding: str
    raw_scale: float | None  #: raw / raw_scale = metres (linear, sun)
    poses: str  #: where poses come from
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)



def _resolve_K(cfg: ConvertConfig, default: np.ndarray | None, default_source: str) -> tuple[np.ndarray, str]:
    from depthcli.geometry import make_K

    if cfg.intrinsics is not None and cfg.intrinsics_file is not None:
        raise DepthcliError("both --intrinsics and --intrinsics-file given", "pass one of them")
    if cfg.intrinsics is not None:
        K = make_K(*[float(v) for v in cfg.intrinsics])
        check_K(K, "--intrinsics")
        return K, "--intrinsics"
    if cfg.intrinsics_file is not None:
        return read_K_file(cfg.intrinsics_file), str(cfg.intrinsics_file)
    if default is None:
        raise DepthcliError("no camera intrinsics for this folder", "pass --intrinsics FX FY CX CY or --intrinsics-file K.txt")
    return default, default_source



def _check_scale(cfg: ConvertConfig) -> None:
    if cfg.input_depth_scale is not None and not (cfg.input_depth_scale > 0):
        raise DepthcliError("--input-depth-scale must be positive")


def _plan_tum(cfg: ConvertConfig, src: Path) -> _Plan:
    msgs: list[str] = []  # warnings, shown once the inputs are known to be usable
    for name in ("rgb.txt", "depth.txt"):
        if not (src / name).is_file():
            raise DepthcliError(f"'{src}' is not a TUM RGB-D folder: no {name}", "pass --from folder for plain color/ + depth/ folders")
    rgb = read_tum_list(src / "rgb.txt", 1)
    depth = read_tum_list(src / "depth.txt", 1)
    pairs = associate_timestamps([t for t, _ in rgb], [t for t, _ in depth])
    if not pairs:
        raise DepthcliError(
            f"no colour/depth pair in '{src}' is within {TUM_MAX_DIFFERENCE} s",
            "check rgb.txt and depth.txt timestamps",
        )
    skipped: dict[str, int] = {}
    if len(pairs) < min(len(rgb), len(depth)):
        skipped["unassociated_rgb_depth"] = min(len(rgb), len(depth)) - len(pairs)
    gt_path = src / "groundtruth.txt"
    gt_t = gt_pose = None
    if gt_path.is_file():
        gt = read_tum_list(gt_path, 7)
        gt_t = np.array([t for t, _ in gt])
        gt_pose = [v[:7] for _, v in gt]
        order = np.argsort(gt_t)
        gt_t = gt_t[order]
        gt_pose = [gt_pose[i] for i in order]
        poses = "groundtruth.txt (nearest timestamp, world_from_cam inverted)"
    else:
        msgs.append("no groundtruth.txt: every frame gets the identity pose")
        poses = "identity (no groundtruth.txt)"
    items = []
    no_pose = 0
    for i, j in pairs:
        t_rgb, (rgb_rel, *_) = rgb[i]
        t_depth, (depth_rel, *_) = depth[j]
        rgb_path = resolve_inside(src, rgb_rel, f"rgb.txt entry at {t_rgb:.6f}")
        depth_path = resolve_inside(src, depth_rel, f"depth.txt entry at {t_depth:.6f}")
        pose = None
        extra: dict[str, Any] = {"timestamp": t_rgb, "depth_timestamp": t_depth}
        if gt_t is not None:
            k = int(np.searchsorted(gt_t, t_rgb))
            cands = [c for c in (k - 1, k) if 0 <= c < len(gt_t)]
            best = min(cands, key=lambda c: abs(gt_t[c] - t_rgb)) if cands else None
            if best is None or abs(gt_t[best] - t_rgb) >= TUM_MAX_DIFFERENCE:
                no_pose += 1
                continue
            pose = world_from_cam_from_tum(gt_pose[best])
            extra["pose_timestamp"] = float(gt_t[best])
        name = Path(rgb_rel).name  # keeps the full timestamp ("1305031102.175304.png")
        items.append(_Item(name=name, depth=depth_path, image=rgb_path, world_from_cam=pose, extra=extra))
    if no_pose:
        msgs.append(f"{no_pose} frame(s) have no groundtruth pose within {TUM_MAX_DIFFERENCE} s and are skipped")
        skipped["no_pose"] = no_pose
    if not items:
        raise DepthcliError(f"no frame of '{src}' has a groundtruth pose within {TUM_MAX_DIFFERENCE} s", "check groundtruth.txt timestamps")
    default, default_src = tum_family_intrinsics(src)
    K, k_src = _resolve_K(cfg, np.asarray(_K4(default)), default_src)
    if k_src.startswith("TUM ROS"):
        msgs.append("TUM sequence family unknown: using the ROS default intrinsics 525/525/319.5/239.5 (OpenCV centres; stored cx, cy + 0.5; pass --intrinsics)")
    return _Plan(
        items=items,
        K=K,
        intrinsics_source=k_src,
        encoding=cfg.depth_encoding,
        raw_scale=cfg.input_depth_scale or TUM_DEPTH_SCALE,
        poses=poses,
        notes=["colour distortion (freiburg1/2) is not removed"],
        skipped=skipped,
        warnings=msgs,
    )


def _K4(v: tuple[float, float, float, float]) -> np.ndarray:
    """A published K (OpenCV pixel convention, see the module docstring) as depthcli's K."""
    from depthcli.convert.common import K_from_opencv

    return K_from_opencv(*v)


def _plan_7scenes(cfg: ConvertConfig, src: Path) -> _Plan:
    msgs: list[str] = []  # warnings, shown once the inputs are known to be usable
    dirs = _seven_scenes_dirs(src)
    if not dirs:
        raise DepthcliError(f"'{src}' holds no 7-Scenes frames (frame-*.depth.png)", "pass the scene or sequence folder")
    items = []
    missing_color = 0
    for d in dirs:
        for depth in sorted(d.glob("frame-*.depth.png")):
            stem = depth.name[: -len(".depth.png")]
            color = next((c for c in (d / f"{stem}.color.png", d / f"{stem}.color.jpg") if c.is_file()), None)
            if color is None:
                missing_color += 1
                continue
            name = stem if d == src else f"{d.name}/{stem}"
            items.append(_Item(name=name, depth=depth, image=color, extra={"pose_file": d / f"{stem}.pose.txt"}))
    skipped: dict[str, int] = {}
    if missing_color:
        msgs.append(f"{missing_color} frame(s) without frame-*.color.png|jpg are skipped")
        skipped["no_color"] = missing_color
    if not items:
        raise DepthcliError(f"no 7-Scenes frame in '{src}' has a colour image", "expected frame-NNNNNN.color.png or .color.jpg")
    have_pose = [it.extra["pose_file"].is_file() for it in items]
    if not any(have_pose):
        msgs.append("no frame-*.pose.txt: every frame gets the identity pose")
        poses = "identity (no pose files)"
    else:
        poses = "frame-*.pose.txt (camera-to-world, inverted)"
        kept = []
        bad = 0
        for it, has in zip(items, have_pose):
            T = read_pose_txt(it.extra["pose_file"]) if has else None
            if T is None:
                bad += 1
                continue
            it.world_from_cam = T
            kept.append(it)
        if bad:
            msgs.append(f"{bad} frame(s) with a missing or invalid (non-finite) pose are skipped")
            skipped["no_pose"] = bad
        items = kept
        if not items:
            raise DepthcliError(f"no 7-Scenes frame in '{src}' has a valid pose")
    for it in items:
        it.extra = {}
    kfile = src / "camera-intrinsics.txt"
    if kfile.is_file():
        kf = read_K_file(kfile)
        default = _K4((kf[0, 0], kf[1, 1], kf[0, 2], kf[1, 2]))
        default_src = "camera-intrinsics.txt (OpenCV pixel centres: cx, cy + 0.5)"
    else:
        default, default_src = _K4(SEVEN_SCENES_INTRINSICS), "7-Scenes defaults (fx=fy=585, cx=320, cy=240; OpenCV pixel centres: + 0.5)"
    K, k_src = _resolve_K(cfg, default, default_src)
    return _Plan(
        items=items,
        K=K,
        intrinsics_source=k_src,
        encoding=cfg.depth_encoding,
        raw_scale=cfg.input_depth_scale or SEVEN_SCENES_DEPTH_SCALE,
        poses=poses,
        notes=["Kinect v1 depth is not registered to colour; used as aligned"],
        skipped=skipped,
        warnings=msgs,
    )


def _frame_number(stem: str) -> str | None:
    m = re.search(r"(\d+)(?!.*\d)", stem)
    return str(int(m.group(1))) if m else None


def _pair_by_stem(colors: list[Path], depths: list[Path]) -> tuple[list[tuple[Path, Path]], int, int]:
    """Pair colour and depth files by stem, else by their (unique) trailing frame number."""
    by_stem = {p.stem: p for p in depths}
    numbers: dict[str, list[Path]] = {}
    for p in depths:
        n = _frame_number(p.stem)
        if n is not None:
            numbers.setdefault(n, []).append(p)
    pairs = []
    used: set[Path] = set()
    for c in colors:
        d = by_stem.get(c.stem)
        if d is None:
            n = _frame_number(c.stem)
            cands = numbers.get(n, []) if n is not None else []
            d = cands[0] if len(cands) == 1 else None
        if d is None or d in used:
            continue
        used.add(d)
        pairs.append((c, d))
    return pairs, len(colors) - len(pairs), len(depths) - len(pairs)


def _plan_folder(cfg: ConvertConfig, src: Path, kind: str) -> _Plan:
    from depthcli.io.images import IMAGE_SUFFIXES

    msgs: list[str] = []  # warnings, shown once the inputs are known to be usable

    color_dir = _color_dir(src)
    depth_dir = src / "depth"
    if color_dir is None or not depth_dir.is_dir():
        raise DepthcliError(
            f"'{src}' has no {'|'.join(COLOR_DIRS)}/ + depth/ folders",
            "an RGB-D folder needs color/ (or rgb/, image/, images/) and depth/ side by side",
        )
    colors = sorted(p for p in color_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    depths = sorted(p for p in depth_dir.iterdir() if p.is_file() and p.suffix.lower() in DEPTH_RAW_SUFFIXES + DEPTH_FLOAT_SUFFIXES)
    if not colors:
        raise DepthcliError(f"no images in '{color_dir}'")
    if not depths:
        raise DepthcliError(f"no depth files in '{depth_dir}'", f"expected {', '.join(DEPTH_RAW_SUFFIXES + DEPTH_FLOAT_SUFFIXES)}")
    pairs, lone_colors, lone_depths = _pair_by_stem(colors, depths)
    if not pairs:
        raise DepthcliError(
            f"no image in '{color_dir}' has a depth file in '{depth_dir}'",
            "name them alike (0001.jpg + 0001.png) or with the same trailing frame number",
        )
    skipped: dict[str, int] = {}
    if lone_colors or lone_depths:
        msgs.append(f"{lone_colors} image(s) without depth and {lone_depths} depth file(s) without image are skipped")
        skipped.update({"image_without_depth": lone_colors, "depth_without_image": lone_depths})
    _check_scale(cfg)
    encoding = cfg.depth_encoding
    notes: list[str] = []
    if kind in PRESETS:
        preset = PRESETS[kind]
        raw_scale = cfg.input_depth_scale or preset.raw_scale
        default_K, default_src = _K4(preset.intrinsics), f"{kind} preset"
        notes.append(preset.note)
    else:
        raw_scale = cfg.input_depth_scale
        default_K, default_src = None, ""
        if raw_scale is None and encoding == "linear" and any(d.suffix.lower() in DEPTH_RAW_SUFFIXES for _, d in pairs):
            raise DepthcliError(
                "integer depth images need --input-depth-scale (raw / scale = metres)",
                "e.g. 1000 for millimetres, 5000 for TUM, 256 for KITTI; or --depth-encoding nyu-raw|sun",
            )
    if encoding == "nyu-raw" and cfg.input_depth_scale is not None:
        raise DepthcliError("--input-depth-scale does not apply to --depth-encoding nyu-raw", "nyu-raw decodes to metres by its own formula")
    K, k_src = _resolve_K(cfg, default_K, default_src)
    if kind == "kitti" and k_src == default_src:
        fx, _, cx, cy = PRESETS["kitti"].intrinsics
        msgs.append(
            f"KITTI: every frame gets one fixed K (fx {fx:g}, cx {cx:g}, cy {cy:g}, one drive's camera 2); "
            "other drives differ (focal by up to ~15 px): pass --intrinsics FX FY CX CY from the drive's calib_cam_to_cam.txt"
        )
        notes.append("fixed KITTI K (preset), not this drive's calibration")
    poses_dir = src / "poses"
    items = []
    if poses_dir.is_dir():
        pose_files = {p.stem: p for p in poses_dir.glob("*.txt")}
        pose_numbers: dict[str, list[Path]] = {}
        for p in pose_files.values():
            n = _frame_number(p.stem)
            if n is not None:
                pose_numbers.setdefault(n, []).append(p)
        poses = "poses/ (camera-to-world, inverted)"
        missing = 0
        for c, d in pairs:
            pf = pose_files.get(c.stem) or pose_files.get(d.stem)
            if pf is None:
                cands = pose_numbers.get(_frame_number(c.stem) or "", [])
                pf = cands[0] if len(cands) == 1 else None
            T = read_pose_txt(pf) if pf is not None else None
            if T is None:
                missing += 1
                continue
            items.append(_Item(name=c.stem, depth=d, image=c, world_from_cam=T))
        if missing:
            msgs.append(f"{missing} frame(s) without a valid pose in poses/ are skipped")
            skipped["no_pose"] = missing
        if not items:
            raise DepthcliError(f"no frame of '{src}' has a pose file in poses/", "name them like the images: poses/<stem>.txt (4x4 camera-to-world)")
    else:
        if kind not in PRESETS:
            msgs.append("no poses/ folder: every frame gets the identity pose")
        poses = "identity (no poses/)"
        items = [_Item(name=c.stem, depth=d, image=c) for c, d in pairs]
    return _Plan(items=items, K=K, intrinsics_source=k_src, encoding=encoding, raw_scale=raw_scale, poses=poses, notes=notes, skipped=skipped, warnings=msgs)


# --------------------------------------------------------------------------- conversion


def _preflight(items: list[_Item], resize_depth: bool) -> None:
    """Refuse missing files and size mismatches before anything is written (headers only)."""
    for it in items:
        for path in (it.depth, it.image):
            if path is not None and not path.is_file():
                raise DepthcliError(f"frame '{it.name}': file '{path}' does not exist", "check the capture's file lists")
        if is_8bit_image(it.depth):
            raise DepthcliError(
                f"depth image '{it.depth}' is 8-bit: 256 levels cannot hold depth",
                "depth must be a 16-bit image or float (.npy, .pfm); an 8-bit file is usually a preview",
            )
        if it.image is None or resize_depth:
            continue
        dsz, isz = file_size_wh(it.depth), file_size_wh(it.image)
        if dsz is not None and isz is not None and dsz != isz:
            raise DepthcliError(
                f"frame '{it.name}': depth '{it.depth.name}' is {dsz[0]}x{dsz[1]} but image '{it.image.name}' is {isz[0]}x{isz[1]}",
                "pass --resize-depth to resize depth to the image (nearest; assumes the same field of view)",
            )


def convert_rgbd(cfg: ConvertConfig, folder: Path, kind: str) -> dict[str, Any]:
    """Convert the RGB-D capture ``cfg.source`` (layout ``kind``) into a dataset in ``folder``.

    ``folder`` is an empty, writable folder (the temporary folder of
    :func:`depthcli.io.atomic.atomic_output_dir`). Depth is stored as z-depth in
    metres, 0 = invalid; poses as cam_from_world. Returns a summary dict.
    """
    import cv2

    from depthcli.console import progress_task, warn
    from depthcli.depth import apply_far_cutoff
    from depthcli.geometry import invert_rigid
    from depthcli.io.dataset import DatasetWriter
    from depthcli.io.images import read_image_rgb

    src = Path(cfg.source)
    if not src.is_dir():
        raise DepthcliError(f"source '{src}' is not a folder", "pass the folder of the RGB-D capture")
    if kind not in RGBD_KINDS:
        raise DepthcliError(f"unknown RGB-D layout '{kind}'", f"use one of {', '.join(RGBD_KINDS)}")
    if cfg.depth_encoding not in DEPTH_ENCODINGS:
        raise DepthcliError(f"unknown depth encoding '{cfg.depth_encoding}'", f"use one of {', '.join(DEPTH_ENCODINGS)}")
    _check_scale(cfg)
    if cfg.max_frames is not None and cfg.max_frames < 1:
        raise DepthcliError("--max-frames must be at least 1")
    if kind == "tum":
        plan = _plan_tum(cfg, src)
    elif kind == "7scenes":
        plan = _plan_7scenes(cfg, src)
    else:
        plan = _plan_folder(cfg, src, kind)
    items = plan.items[: cfg.max_frames] if cfg.max_frames else plan.items
    _preflight(items, cfg.resize_depth)
    f = int(cfg.downscale)
    K_out = plan.K
    raw_scale = None if plan.encoding == "nyu-raw" else (plan.raw_scale if plan.encoding == "linear" else (plan.raw_scale or 1000.0))
    png16_scale = cfg.depth_scale
    if cfg.depth_format == "png16" and png16_scale is None and raw_scale is not None and plan.encoding == "linear":
        png16_scale = float(raw_scale)  # re-encode with the source's own scale: lossless, no new overflow
    source_info = {
        "kind": kind,
        "path": str(src.resolve()),
        "depth_encoding": plan.encoding,
        "raw_scale": raw_scale,
    }
    writer = DatasetWriter(
        folder,
        depth_units="m",
        source=source_info,
        depth_format=cfg.depth_format,
        depth_scale=png16_scale,
        previews=cfg.previews,
        meta={
            "intrinsics_source": plan.intrinsics_source,
            "poses": plan.poses,
            "downscale": f,
            "max_depth": cfg.max_depth,
            "notes": plan.notes,
        },
    )
    resized = 0
    with progress_task(f"convert {kind}", len(items)) as (bar, task):
        for it in items:
            raw = read_raw_depth(it.depth)
            is_float = raw.dtype.kind == "f"
            if is_float and plan.encoding != "linear":
                raise DepthcliError(f"depth file '{it.depth}' holds floats; --depth-encoding {plan.encoding} needs 16-bit images")
            depth = decode_depth(raw, plan.encoding, None if is_float else raw_scale)
            image = read_image_rgb(it.image) if it.image is not None else None
            if image is not None and image.shape[:2] != depth.shape:
                if not cfg.resize_depth:
                    raise DepthcliError(
                        f"frame '{it.name}': depth '{it.depth.name}' is {depth.shape[1]}x{depth.shape[0]} "
                        f"but image '{it.image.name}' is {image.shape[1]}x{image.shape[0]}",
                        "pass --resize-depth to resize depth to the image (nearest; assumes the same field of view)",
                    )
                depth = cv2.resize(depth, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
                resized += 1
            if cfg.max_depth is not None:
                depth = apply_far_cutoff(depth, cfg.max_depth)
            image_arg: Any = it.image
            if f > 1:
                depth, K_out, image_arg = downscale_frame(depth, plan.K, image, f, f"frame '{it.name}'")
                image_arg = it.image if image_arg is None else image_arg
            cam_from_world = np.eye(4) if it.world_from_cam is None else invert_rigid(it.world_from_cam)
            extra = dict(it.extra)
            depth_abs, src_abs = it.depth.resolve(), src.resolve()
            extra["source_depth"] = str(depth_abs.relative_to(src_abs)) if depth_abs.is_relative_to(src_abs) else str(it.depth)
            writer.add_frame(it.name, depth, K_out, cam_from_world, image=image_arg, extra=extra)
            bar.update(task, advance=1, info=it.name)
    summary = writer.close()
    for message in plan.warnings:  # after the write: a refused run prints its error line only
        warn(message)
    if writer.overflow:
        warn(f"{writer.overflow} depth pixels exceed the png16 range at scale {png16_scale or 1000:g} and were stored invalid (use a smaller --depth-scale or npy)")
    out: dict[str, Any] = {
        **summary,
        "depth_encoding": plan.encoding,
        "raw_scale": raw_scale,
        "intrinsics": plan.intrinsics_source,
        "poses": plan.poses,
    }
    if kind == "kitti" and plan.intrinsics_source == "kitti preset":
        out["intrinsics"] = "kitti preset: ONE fixed K for every drive (pass --intrinsics with the drive's own K)"
    if f > 1:
        out["downscale"] = f
    if resized:
        out["depth_resized_frames"] = resized
    skipped = {k: v for k, v in plan.skipped.items() if v}
    if skipped:
        out["skipped"] = skipped
    return out


def convert_source(cfg: ConvertConfig, folder: Path, kind: str) -> dict[str, Any]:
    """Family entry point used by :func:`depthcli.convert.convert`."""
    return convert_rgbd(cfg, folder, kind)
