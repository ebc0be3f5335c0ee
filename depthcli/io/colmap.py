"""COLMAP reconstructions -> depth datasets (the only module that imports pycolmap).

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

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from depthcli.depth import downscale_depth_valid  # noqa: F401 (re-exported)

from depthcli.errors import DepthcliError

if TYPE_CHECKING:  # pragma: no cover
    from depthcli.convert import ConvertConfig

MODEL_NAMES = ("cameras", "images", "points3D")
RIG_NAMES = ("rigs", "frames")
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")


def import_pycolmap():
    """Import pycolmap, loading OpenCV first.

    With pycolmap 4.2.1 and opencv-python 5.0 wheels (both bundle zlib/libpng),
    a process that loads pycolmap *before* cv2 aborts later in ``cv2.imwrite``
    of a PNG ("double free or corruption" in ``deflateEnd``). Loading cv2
    first is safe, so every pycolmap import in depthcli goes through here.
    """
    import cv2  # noqa: F401  (load order matters, see above)
    import pycolmap

    return pycolmap


# --------------------------------------------------------------------------- layout


def _model_format(folder: Path) -> str | None:
    """'bin' or 'txt' if ``folder`` holds a complete model in that format, else None."""
    for ext in ("bin", "txt"):
        if all((folder / f"{n}.{ext}").is_file() for n in MODEL_NAMES):
            return ext
    return None


def _looks_like_model(folder: Path) -> bool:
    """True if ``folder`` holds at least a ``cameras.bin|txt`` (maybe an incomplete model)."""
    return folder.is_dir() and any((folder / f"cameras.{e}").is_file() for e in ("bin", "txt"))


def detect(source: Path) -> str | None:
    """A reason string if ``source`` is a COLMAP project or model folder, else None.

    Recognised: a model folder itself (``cameras``/``images``/``points3D`` .bin or
    .txt, with or without ``rigs``/``frames``), ``PROJECT/sparse/0``, or
    ``PROJECT/sparse`` directly holding the model (e.g. a dense workspace).
    """
    source = Path(source)
    if not source.is_dir():
        return None
    if _looks_like_model(source):
        fmt = _model_format(source) or "incomplete"
        return f"COLMAP model folder ({fmt})"
    for sub in (source / "sparse" / "0", source / "sparse"):
        if _looks_like_model(sub):
            fmt = _model_format(sub) or "incomplete"
            return f"COLMAP project ({sub.relative_to(source)}, {fmt})"
    return None


@dataclass
class ColmapLayout:
    """Where the pieces of a COLMAP source are."""

    model_dir: Path  #: folder with cameras/images/points3D
    images_dir: Path  #: folder the image names in the model are relative to
    model_format: str  #: "bin" or "txt"
    layout: str  #: "classic" (no rigs/frames) or "rigs+frames" (COLMAP >= 3.12)
    stereo_dir: Path | None = None  #: COLMAP dense ``stereo`` folder, if found
    notes: list[str] = field(default_factory=list)  #: things worth logging


def locate(source: Path, images: Path | None = None, dense: bool = False) -> ColmapLayout:
    """Find model, image folder (and for ``dense`` the stereo folder) of a COLMAP source."""
    source = Path(source)
    if not source.exists():
        raise DepthcliError(f"source '{source}' does not exist")
    if not source.is_dir():
        raise DepthcliError(f"source '{source}' is not a folder", "pass a COLMAP project or model folder")
    if not any(source.iterdir()):
        raise DepthcliError(f"source '{source}' is empty")
    notes: list[str] = []
    root = source
    if dense and not _looks_like_model(source) and (source / "dense").is_dir():
        # A project whose dense workspace sits in PROJECT/dense (or dense/0).
        for cand in (source / "dense", source / "dense" / "0"):
            if _looks_like_model(cand / "sparse") and (cand / "stereo").is_dir():
                notes.append(f"--dense: using the dense workspace '{cand}'")
                root = cand
                break
    if _looks_like_model(root):
        model_dir = root
        img_candidates = [root / "images", root.parent / "images", root.parent.parent / "images"]
        stereo_candidates = [root.parent / "stereo", root.parent.parent / "stereo"]
    else:
        model_dir = next((d for d in (root / "sparse" / "0", root / "sparse") if _looks_like_model(d)), None)
        if model_dir is None:
            raise DepthcliError(
                f"'{source}' is not a COLMAP project: no sparse/0 or sparse/ with cameras.bin|txt",
                "pass the project folder (with images/ and sparse/0/) or the model folder itself",
            )
        others = []
        if model_dir.name == "0":
            others = sorted(p.name for p in (root / "sparse").iterdir() if p.is_dir() and p.name != "0")
        if others:
            notes.append(f"using model sparse/0 (the project also has sparse/{', sparse/'.join(others)})")
        img_candidates = [root / "images"]
        stereo_candidates = [root / "stereo", root / "dense" / "stereo"]
    fmt = _model_format(model_dir)
    if fmt is None:
        present = sorted(p.name for p in model_dir.iterdir() if p.is_file())
        raise DepthcliError(
            f"incomplete COLMAP model in '{model_dir}': needs cameras, images and points3D "
            f"(all .bin or all .txt), found {', '.join(present) or 'nothing'}",
            "export the model again with COLMAP (model_converter)",
        )
    rig_files = [n for n in RIG_NAMES if (model_dir / f"{n}.{fmt}").is_file()]
    if not rig_files:
        layout = "classic"
    elif len(rig_files) == 2:
        layout = "rigs+frames"
    else:
        missing = [n for n in RIG_NAMES if n not in rig_files][0]
        raise DepthcliError(
            f"unknown COLMAP layout in '{model_dir}': {rig_files[0]}.{fmt} without {missing}.{fmt}",
            "COLMAP >= 3.12 writes both rigs and frames; older versions neither",
        )
    if images is not None:
        images_dir = Path(images)
        if not images_dir.is_dir():
            raise DepthcliError(f"image folder '{images_dir}' does not exist", "check --images")
    else:
        images_dir = next((d for d in img_candidates if d.is_dir()), None)
        if images_dir is None:
            raise DepthcliError(
                f"no image folder found for the COLMAP model '{model_dir}' (looked for an images/ folder beside it)",
                "pass --images FOLDER",
            )
    stereo_dir = None
    if dense:
        stereo_dir = next((d for d in stereo_candidates if (d / "depth_maps").is_dir()), None)
        if stereo_dir is None:
            raise DepthcliError(
                f"--dense: no COLMAP stereo/depth_maps folder beside '{model_dir}'",
                "run colmap image_undistorter + patch_match_stereo and pass the dense workspace, or drop --dense",
            )
    return ColmapLayout(model_dir, images_dir, fmt, layout, stereo_dir, notes)


# --------------------------------------------------------------------------- binary checks


class _Reader:
    """Bounds-checked little-endian reader over a model file's bytes."""

    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.pos = 0
        self.path = path

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.data):
            raise DepthcliError(
                f"COLMAP file '{self.path}' is truncated or corrupt "
                f"(needs {start + n} bytes at least, has {len(self.data)})",
                "re-export the model with COLMAP",
            )
        self.pos += n
        return start

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        return struct.unpack_from("<" + fmt, self.data, self.take(size))

    def count(self, per_item: int) -> int:
        (n,) = self.unpack("Q")
        if n * per_item > len(self.data) - self.pos:
            raise DepthcliError(
                f"COLMAP file '{self.path}' is truncated or corrupt (announces {n} records that cannot fit)",
                "re-export the model with COLMAP",
            )
        return n


#: COLMAP camera model id -> number of parameters (colmap/sensor/models.h), used
#: when pycolmap cannot enumerate its models.
CAMERA_PARAM_COUNTS = {0: 3, 1: 4, 2: 4, 3: 5, 4: 8, 5: 8, 6: 12, 7: 5, 8: 4, 9: 5, 10: 12,
                       11: 16, 12: 4, 13: 5, 14: 3, 15: 4, 16: 6, 17: 2}


def _camera_param_counts() -> dict[int, int]:
    pycolmap = import_pycolmap()

    out = dict(CAMERA_PARAM_COUNTS)
    try:
        for name, mid in pycolmap.CameraModelId.__members__.items():
            if name != "INVALID":
                out[int(mid)] = len(pycolmap.Camera.create_from_model_id(1, mid, 100.0, 10, 10).params)
    except (AttributeError, TypeError, ValueError, RuntimeError):  # older pycolmap: keep the table
        pass
    return out


def validate_binary_model(model_dir: Path, layout: str) -> dict[str, int]:
    """Walk the ``.bin`` files record by record before pycolmap reads them.

    pycolmap answers a truncated file with an unrelated error (or reads
    garbage), so sizes, camera model ids and track -> image references are
    checked here. Returns record counts.
    """
    nparams = _camera_param_counts()
    path = model_dir / "cameras.bin"
    r = _Reader(path.read_bytes(), path)
    camera_ids = set()
    for _ in range(r.count(24)):
        cam_id, model_id, _w, _h = r.unpack("iiQQ")
        if model_id not in nparams:
            raise DepthcliError(
                f"'{path}': camera {cam_id} has unknown model id {model_id}", "is pycolmap older than the model?"
            )
        r.take(8 * nparams[model_id])
        camera_ids.add(cam_id)

    path = model_dir / "images.bin"
    r = _Reader(path.read_bytes(), path)
    image_ids = set()
    for _ in range(r.count(64 + 1 + 8)):
        (image_id,) = r.unpack("I")
        r.take(56)
        (cam_id,) = r.unpack("I")
        end = r.data.find(b"\x00", r.pos)
        if end < 0:
            r.take(len(r.data) + 1)  # raises: the name never ends
        r.take(end + 1 - r.pos)
        (npts,) = r.unpack("Q")
        r.take(24 * npts)
        if cam_id not in camera_ids:
            raise DepthcliError(
                f"'{path}': image {image_id} uses camera {cam_id}, which cameras.bin lacks", "re-export the model"
            )
        image_ids.add(image_id)

    path = model_dir / "points3D.bin"
    r = _Reader(path.read_bytes(), path)
    tracks = []
    npoints = r.count(51)
    for _ in range(npoints):
        r.take(43)
        (length,) = r.unpack("Q")
        start = r.take(8 * length)
        tracks.append(r.data[start : start + 8 * length])
    if tracks:
        elems = np.frombuffer(b"".join(tracks), dtype="<i4").reshape(-1, 2)
        referenced = np.unique(elems[:, 0])
        missing = sorted(set(referenced.tolist()) - image_ids)
        if missing:
            raise DepthcliError(
                f"'{path}': point tracks reference image id(s) {', '.join(map(str, missing[:5]))} "
                f"missing from images.bin",
                "the model is inconsistent; re-export it with COLMAP",
            )

    if layout == "rigs+frames":
        path = model_dir / "rigs.bin"
        r = _Reader(path.read_bytes(), path)
        for _ in range(r.count(8)):
            _rig_id, nsensors = r.unpack("II")
            if nsensors > 0:
                r.take(8)  # reference sensor (type, id)
                for _ in range(nsensors - 1):
                    _t, _i, has_pose = r.unpack("iIB")
                    if has_pose:
                        r.take(56)
        path = model_dir / "frames.bin"
        r = _Reader(path.read_bytes(), path)
        for _ in range(r.count(68)):
            r.take(64)
            (ndata,) = r.unpack("I")
            r.take(16 * ndata)
    return {"cameras": len(camera_ids), "images": len(image_ids), "points3D": npoints}


_TXT_COUNT = {"cameras": "cameras", "images": "images", "points3D": "points"}


def _text_header_counts(model_dir: Path) -> dict[str, int]:
    """Record counts announced in the comment headers of a text model
    (``# Number of images: 4, ...``); COLMAP writes them, hand-made files may not."""
    import re

    out = {}
    for name, word in _TXT_COUNT.items():
        with open(model_dir / f"{name}.txt", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.startswith("#"):
                    break
                m = re.match(rf"#\s*Number of {word}:\s*(\d+)", line)
                if m:
                    out[name] = int(m.group(1))
    return out


def read_reconstruction(lay: ColmapLayout):
    """Read the model with pycolmap after checking it; bad files become DepthcliError."""
    pycolmap = import_pycolmap()

    if lay.model_format == "bin":
        validate_binary_model(lay.model_dir, lay.layout)
    try:
        rec = pycolmap.Reconstruction()
        if lay.model_format == "bin":
            rec.read_binary(str(lay.model_dir))
        else:
            rec.read_text(str(lay.model_dir))
    except (RuntimeError, ValueError, IndexError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DepthcliError(
            f"cannot read the COLMAP model in '{lay.model_dir}': {first}",
            "the files are corrupt, truncated or inconsistent; re-export the model with COLMAP",
        ) from None
    if lay.model_format == "txt":
        got = {"cameras": rec.num_cameras(), "images": rec.num_images(), "points3D": rec.num_points3D()}
        for name, announced in _text_header_counts(lay.model_dir).items():
            if got[name] != announced:
                raise DepthcliError(
                    f"COLMAP file '{lay.model_dir / (name + '.txt')}' is truncated: its header announces "
                    f"{announced} {_TXT_COUNT[name]}, it holds {got[name]}",
                    "re-export the model with COLMAP",
                )
    return rec


# --------------------------------------------------------------------------- pycolmap compatibility


def cam_from_world_matrix(image) -> np.ndarray:
    """4x4 ``cam_from_world`` of a pycolmap image (a method in pycolmap 4.x, a property before)."""
    pose = image.cam_from_world
    if callable(pose):
        pose = pose()
    m = np.asarray(pose.matrix(), dtype=np.float64)
    out = np.eye(4)
    out[:3, :4] = m[:3, :4]
    return out


def _is_registered(image) -> bool:
    for attr in ("has_pose", "registered"):
        if hasattr(image, attr):
            v = getattr(image, attr)
            return bool(v() if callable(v) else v)
    return True


def _model_name(camera) -> str:
    name = getattr(camera, "model_name", None)
    if name is None:
        return camera.model.name
    return name() if callable(name) else str(name)


def _is_perspective(camera) -> bool:
    v = getattr(camera, "is_perspective", None)
    if v is None:
        return _model_name(camera) != "EQUIRECTANGULAR"
    return bool(v() if callable(v) else v)


def _track_image_ids(point) -> list[int]:
    return [int(e.image_id) for e in point.track.elements]


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

    name = _model_name(camera)
    w, h = int(camera.width), int(camera.height)
    if name in PINHOLE_MODELS:
        p = np.asarray(camera.params, dtype=np.float64)
        K = make_K(p[0], p[0], p[1], p[2]) if name == "SIMPLE_PINHOLE" else make_K(*p[:4])
        return Undistorter(K, w, h, None, None)
    if not _is_perspective(camera):
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


def read_image_raw(path: Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB without applying EXIF orientation (COLMAP ignores it too)."""
    import cv2

    if not path.is_file():
        raise DepthcliError(f"image '{path}' does not exist", "check the image folder (--images)")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise DepthcliError(f"cannot decode image '{path}'", "is it a readable image file?")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- dense maps


def read_colmap_dense_array(path: Path) -> np.ndarray:
    """Read a COLMAP dense ``.bin`` map: ``[H, W]`` (depth) or ``[H, W, C]`` float32.

    Format (COLMAP ``mvs/mat.h``, ``scripts/python/read_write_dense.py``): the
    ASCII header ``width&height&channels&`` followed by float32 values, channel
    planes one after the other, each plane row-major (index = c*W*H + row*W + col).
    """
    data = Path(path).read_bytes()
    parts = data.split(b"&", 3)
    try:
        width, height, channels = (int(x) for x in parts[:3])
        payload = parts[3]
    except (ValueError, IndexError):
        raise DepthcliError(f"'{path}' is not a COLMAP dense map (no width&height&channels& header)") from None
    if width <= 0 or height <= 0 or channels <= 0 or len(payload) != 4 * width * height * channels:
        raise DepthcliError(
            f"COLMAP dense map '{path}' is truncated or corrupt "
            f"(header {width}x{height}x{channels}, {len(payload)} data bytes)",
            "re-run patch_match_stereo",
        )
    arr = np.frombuffer(payload, dtype="<f4").reshape(channels, height, width)
    return arr[0].copy() if channels == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))


def write_colmap_dense_array(path: Path, array: np.ndarray) -> None:
    """Write ``[H, W]`` or ``[H, W, C]`` float32 in COLMAP's dense format (for tests and tools)."""
    a = np.asarray(array, dtype="<f4")
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, c = a.shape
    Path(path).write_bytes(f"{w}&{h}&{c}&".encode() + np.ascontiguousarray(a.transpose(2, 0, 1)).tobytes())


def _dense_suffix(stereo_dir: Path) -> str:
    maps = stereo_dir / "depth_maps"
    if any(maps.glob("*.geometric.bin")):
        return ".geometric.bin"
    if any(maps.glob("*.photometric.bin")):
        return ".photometric.bin"
    raise DepthcliError(
        f"--dense: '{maps}' holds no *.geometric.bin or *.photometric.bin depth maps", "run patch_match_stereo first"
    )


# --------------------------------------------------------------------------- conversion




def convert_colmap(cfg: "ConvertConfig", folder: Path) -> dict[str, Any]:
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

    images = sorted((im for im in rec.images.values() if _is_registered(im)), key=lambda im: im.name)
    if not images:
        raise DepthcliError(f"the COLMAP model in '{lay.model_dir}' has no registered images")
    if cfg.max_frames is not None:
        images = images[: max(0, int(cfg.max_frames))]
    missing = [im.name for im in images if not (lay.images_dir / im.name).is_file()]
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
        img_ids = _track_image_ids(point)
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
    dense_suffix = _dense_suffix(lay.stereo_dir) if cfg.dense and lay.stereo_dir is not None else None
    n = int(cfg.downscale)
    undistorters: dict[int, Undistorter] = {}
    counts = {"observations": 0, "kept": 0, "filtered_reproj_error": 0, "filtered_track_length": 0,
              "outside_image": 0, "beyond_max_depth": 0}
    models_seen: set[str] = set()

    for im in track(images, "colmap frames"):
        camera = rec.cameras[im.camera_id]
        models_seen.add(_model_name(camera))
        cam_from_world = cam_from_world_matrix(im)
        img = read_image_raw(lay.images_dir / im.name)
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
            if _model_name(camera) not in PINHOLE_MODELS:
                raise DepthcliError(
                    f"--dense needs the undistorted model of COLMAP's dense workspace, but camera "
                    f"{camera.camera_id} is {_model_name(camera)}",
                    "pass the dense workspace folder (image_undistorter output: images/, sparse/, stereo/)",
                )
            dpath = lay.stereo_dir / "depth_maps" / f"{im.name}{dense_suffix}"
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
        if dense_depth is not None and dense_depth.shape != (h, w):
            # patch_match_stereo --max_image_size shrinks the maps: follow them.
            dh, dw = dense_depth.shape
            K = scale_K(K, dw / w, dh / h)
            img = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_AREA)
            h, w = dh, dw
        if n > 1:
            nw, nh = w // n, h // n
            if nw < 1 or nh < 1:
                raise DepthcliError(f"--downscale {n} leaves nothing of the {w}x{h} image '{im.name}'")
            K = scale_K(K, nw / w, nh / h)
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
            if dense_depth is not None:
                dense_depth = downscale_depth_valid(dense_depth, n)
            w, h = nw, nh

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
                    "camera_model": _model_name(camera),
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
