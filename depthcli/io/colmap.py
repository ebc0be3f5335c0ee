"""COLMAP files: sparse models (via pycolmap, the only module that imports it) and dense maps.

This module only reads (and, for tests and tools, writes) COLMAP's file
formats; turning a model into a depth dataset is :mod:`depthcli.convert.colmap`.

What is read
    A sparse model folder (``cameras``, ``images``, ``points3D`` as ``.bin`` or
    ``.txt``; COLMAP >= 3.12 / pycolmap 4.x also write ``rigs`` and ``frames``),
    found in a project (``PROJECT/sparse/0`` or ``PROJECT/sparse`` beside
    ``PROJECT/images``) or given directly. Binary is preferred when both exist,
    as COLMAP does. Binary files are walked record by record before pycolmap
    reads them, so a truncated or inconsistent model becomes a clear error.

    COLMAP MVS depth maps (``stereo/depth_maps/NAME.{geometric|photometric}.bin``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from depthcli.errors import DepthcliError

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
        if "VerifyParams" in str(exc):
            first = "a camera has invalid parameters (NaN, or not what its model expects)"
        raise DepthcliError(
            f"cannot read the COLMAP model in '{lay.model_dir}': {first}",
            "the files are corrupt, truncated or inconsistent; re-export the model with COLMAP",
        ) from None
    validate_numbers(rec, lay.model_dir)
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


def _focal_lengths(camera) -> list[float]:
    params = np.asarray(camera.params, dtype=np.float64)
    idxs = getattr(camera, "focal_length_idxs", None)
    try:
        idx = list(idxs() if callable(idxs) else idxs) if idxs is not None else [0]
    except (TypeError, RuntimeError):  # pragma: no cover - unusual pycolmap
        idx = [0]
    return [float(params[i]) for i in idx if i < len(params)]


def validate_numbers(rec, model_dir: Path) -> None:
    """Refuse models whose numbers cannot describe a camera: non-finite parameters,
    zero or negative focal lengths or sizes, non-finite or zero quaternions and
    translations, non-finite points."""
    for cam_id, camera in rec.cameras.items():
        params = np.asarray(camera.params, dtype=np.float64)
        where = f"COLMAP model '{model_dir}': camera {cam_id} ({model_name(camera)})"
        if not np.isfinite(params).all():
            raise DepthcliError(f"{where} has non-finite parameters {params.tolist()}", "re-run the reconstruction")
        if int(camera.width) < 1 or int(camera.height) < 1:
            raise DepthcliError(f"{where} has size {camera.width}x{camera.height}", "re-export the model")
        bad = [f for f in _focal_lengths(camera) if not f > 0]
        if bad:
            raise DepthcliError(f"{where} has focal length {bad[0]:g} (must be positive)", "re-run the reconstruction")
    for image_id, image in rec.images.items():
        if not is_registered(image):
            continue
        pose = image.cam_from_world
        if callable(pose):
            pose = pose()
        q = np.asarray(pose.rotation.quat, dtype=np.float64)
        t = np.asarray(pose.translation, dtype=np.float64)
        if not np.isfinite(q).all() or not np.isfinite(t).all() or np.linalg.norm(q) < 1e-12:
            raise DepthcliError(
                f"COLMAP model '{model_dir}': image {image_id} ('{image.name}') has an invalid pose "
                f"(quaternion {q.tolist()}, translation {t.tolist()})",
                "re-run the reconstruction",
            )
    for pid, point in rec.points3D.items():
        if not np.isfinite(np.asarray(point.xyz, dtype=np.float64)).all():
            raise DepthcliError(f"COLMAP model '{model_dir}': point {pid} has non-finite coordinates", "re-run the reconstruction")


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


def is_registered(image) -> bool:
    for attr in ("has_pose", "registered"):
        if hasattr(image, attr):
            v = getattr(image, attr)
            return bool(v() if callable(v) else v)
    return True


def model_name(camera) -> str:
    name = getattr(camera, "model_name", None)
    if name is None:
        return camera.model.name
    return name() if callable(name) else str(name)


def is_perspective(camera) -> bool:
    v = getattr(camera, "is_perspective", None)
    if v is None:
        return model_name(camera) != "EQUIRECTANGULAR"
    return bool(v() if callable(v) else v)


def track_image_ids(point) -> list[int]:
    return [int(e.image_id) for e in point.track.elements]



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


def find_dense_suffix(stereo_dir: Path) -> str:
    maps = stereo_dir / "depth_maps"
    if any(maps.glob("*.geometric.bin")):
        return ".geometric.bin"
    if any(maps.glob("*.photometric.bin")):
        return ".photometric.bin"
    raise DepthcliError(
        f"--dense: '{maps}' holds no *.geometric.bin or *.photometric.bin depth maps", "run patch_match_stereo first"
    )

