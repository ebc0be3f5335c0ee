"""Training samples streamed from disk, sharding, and augmentations.

Samples are *references* (paths); images and targets are read on demand in
``__getitem__``, so nothing is held in memory beyond a batch. Two sources:

* depth datasets (``dataset.json``, z-depth or disparity) -> supervised targets;
* a pseudo-label folder written by :mod:`depthcli.estimators.distill`
  (``labels/NAME.npz`` holding teacher disparity + a trust mask).

Every item is ``(image [3,S,S] float in [0,1], target [S,S], mask [S,S] bool,
gt_depth [S,S])``: ``target`` is per-image min-max normalised disparity (see
:func:`depthcli.losses.disparity_targets`), ``mask`` marks pixels that count,
``gt_depth`` is the z-depth for validation metrics (zeros for disparity labels).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depthcli.errors import DepthcliError


@dataclass(frozen=True)
class SampleRef:
    """Where one training sample lives on disk."""

    name: str  # unique name (dataset + frame)
    image: Path  # RGB image file
    target: Path  # depth file (.npy/.png/.pfm) or pseudo-label .npz
    kind: str  # "z" (z-depth), "disparity" (stored disparity) or "pseudo" (npz label)
    units: str  # "m", "sfm" or "affine": the far cutoff only applies to metres
    depth_scale: float | None = None  # png16 scale of the depth file
    source: int = 0  # index of the dataset argument it came from (its sampling weight)


def find_datasets(paths: list[Path]) -> list[Path]:
    """Dataset roots from arguments: a dataset folder, or a folder of datasets (one level down)."""
    roots: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise DepthcliError(f"dataset '{p}' does not exist")
        if (p / "dataset.json").is_file():
            roots.append(p)
            continue
        subs = sorted(d for d in p.iterdir() if d.is_dir() and (d / "dataset.json").is_file()) if p.is_dir() else []
        if not subs:
            raise DepthcliError(
                f"'{p}' is neither a depth dataset nor a folder of datasets (no dataset.json)",
                "create training data with depthcli synth or depthcli convert",
            )
        roots.extend(subs)
    return roots


def samples_from_datasets(paths: list[Path]) -> list[SampleRef]:
    """Every frame with an image and depth in the given datasets (frames without images are skipped)."""
    from depthcli.io.dataset import load_dataset

    out: list[SampleRef] = []
    for source, root in ((i, r) for i, p in enumerate(paths) for r in find_datasets([p])):
        ds = load_dataset(root)
        for f in ds.frames:
            if f.image is None:
                continue
            out.append(
                SampleRef(
                    name=f"{root.name}/{f.name}",
                    image=ds.path_of(f.image, f"frame '{f.name}' image"),
                    target=ds.path_of(f.depth, f"frame '{f.name}' depth"),
                    kind=ds.depth_kind,
                    units=ds.depth_units,
                    depth_scale=f.depth_scale,
                    source=source,
                )
            )
    if not out:
        raise DepthcliError(
            "no training frames: the datasets hold no frames with both an image and depth",
            "check the datasets with depthcli convert / synth",
        )
    return out


def samples_from_labels(labels: Path):
    """Training samples (:class:`~depthcli.estimators.data.SampleRef`) of a complete label folder."""
    from depthcli.io.paths import resolve_inside

    labels = Path(labels)
    index = labels / "index.json"
    if not index.is_file():
        raise DepthcliError(
            f"no complete pseudo-labels in '{labels}' (no index.json)",
            "run depthcli distill --stage label first (or --resume an interrupted labelling)",
        )
    try:
        meta = json.loads(index.read_text())
        images_root = Path(meta["images"])
        items = [(str(it["name"]), it["label"]) for it in meta["items"]]
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError):
        raise DepthcliError(f"'{index}' is damaged", "label again with depthcli distill --stage label --overwrite") from None
    # The index is data: each label must lie inside the label folder, each image
    # inside the image folder it was labelled from.
    refs = [
        SampleRef(name=name, image=resolve_inside(images_root, name, f"'{index}' image"),
                  target=resolve_inside(labels, label, f"'{index}' label"), kind="pseudo", units="affine")
        for name, label in items
    ]
    if not refs:
        raise DepthcliError(f"the label folder '{labels}' holds no labels", "check the unlabeled image folder")
    return refs


def split_dataset_weight(arg: str) -> tuple[Path, float | None]:
    """``"DS:2"`` -> ``(Path("DS"), 2.0)``; ``"DS"`` -> ``(Path("DS"), None)``.

    A suffix counts as a weight only when it parses as a number and the whole
    argument is not an existing path (so ``C:/data`` or ``a:b`` folders still work).
    """
    head, sep, tail = str(arg).rpartition(":")
    if sep and head and not Path(arg).exists():
        try:
            return Path(head), float(tail)
        except ValueError:
            pass
    return Path(arg), None


def check_weights(weights: list[float], n_datasets: int) -> list[float]:
    """Validate per-dataset sampling weights (one per dataset argument, finite, >= 0, not all 0)."""
    import math

    weights = [float(w) for w in weights]
    if len(weights) != n_datasets:
        raise DepthcliError(
            f"{len(weights)} weight(s) for {n_datasets} dataset(s)",
            "give one --weight per dataset, in the same order (or DATASET:WEIGHT)",
        )
    if any(not math.isfinite(w) or w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise DepthcliError(f"dataset weights must be finite, >= 0 and not all 0, got {weights}")
    return weights


def weighted_order(refs: list[SampleRef], weights: list[float], n: int, seed: int) -> list[int]:
    """``n`` sample indices drawn with replacement: a source with probability proportional
    to its weight (among sources that have samples), then a sample of it uniformly.

    This is how several datasets are mixed at fixed proportions whatever their sizes
    (Depth-Anything-V2's teacher mixes five synthetic sets this way).
    """
    sources = np.array([r.source for r in refs], dtype=np.int64)
    present = sorted(set(sources.tolist()))
    w = np.array([weights[s] for s in present], dtype=np.float64)
    if not (w > 0).any():
        raise DepthcliError("every dataset with training frames has weight 0")
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(present), size=n, p=w / w.sum())
    members = [np.nonzero(sources == s)[0] for s in present]
    out = np.empty(n, dtype=np.int64)
    for k, idx in enumerate(members):
        sel = picked == k
        out[sel] = idx[rng.integers(0, len(idx), size=int(sel.sum()))]
    return out.tolist()


def shard(items: list, rank: int, world: int, equal: bool = True) -> list:
    """Rank ``rank``'s disjoint shard (``items[rank::world]``).

    ``equal=True`` truncates every shard to the same length (DDP needs the same
    number of steps on every rank); ``equal=False`` covers each item exactly once.
    """
    part = items[rank::world]
    if equal and world > 1:
        part = part[: len(items) // world]
    return part


def split_train_val(samples: list[SampleRef], val_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic split by sample name (stable when datasets are added)."""
    if val_fraction <= 0 or len(samples) < 2:
        return list(samples), []
    keyed = sorted(samples, key=lambda s: zlib.crc32(f"{seed}:{s.name}".encode()))
    n_val = max(1, int(round(len(samples) * val_fraction)))
    n_val = min(n_val, len(samples) - 1)
    val = sorted(keyed[:n_val], key=lambda s: s.name)
    train = sorted(keyed[n_val:], key=lambda s: s.name)
    return train, val


def _resize_short_side(img: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = size / min(h, w)
    nh, nw = max(size, int(round(h * s))), max(size, int(round(w * s)))
    if (nh, nw) == (h, w):
        return img
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return cv2.resize(img, (nw, nh), interpolation=interp)


def read_target(ref: SampleRef) -> tuple[np.ndarray, str, np.ndarray | None]:
    """``(values, kind, trust_mask)``: raw z-depth or disparity of a sample, as stored."""
    from depthcli.io.depth_files import read_depth_file

    if ref.kind == "pseudo":
        with np.load(ref.target, allow_pickle=False) as z:
            return z["disparity"].astype(np.float32), "disparity", z["mask"].astype(bool)
    values = read_depth_file(ref.target, ref.depth_scale).astype(np.float32)
    values[~np.isfinite(values)] = 0
    return values, ref.kind, None


class SampleDataset:
    """Map-style torch dataset over :class:`SampleRef` (reads from disk per item).

    ``train=True``: resize short side to ``size``, random square crop, random
    horizontal flip; ``train=False``: centre crop. ``max_depth`` (metres)
    masks far pixels of metric z-depth targets.
    """

    def __init__(self, refs: list[SampleRef], size: int, train: bool, max_depth: float | None = 80.0, seed: int = 0):
        self.refs = refs
        self.size = size
        self.train = train
        self.max_depth = max_depth
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        import torch

        from depthcli.io.images import read_image_rgb
        from depthcli.losses import disparity_targets, normalize_min_max_masked

        ref = self.refs[i]
        img = read_image_rgb(ref.image)
        values, kind, trust = read_target(ref)
        if values.shape != img.shape[:2]:
            raise DepthcliError(f"sample '{ref.name}': image and depth sizes differ")
        if trust is None:
            trust = np.ones(values.shape, bool)
        img = _resize_short_side(img, self.size, nearest=False)
        values = _resize_short_side(values, self.size, nearest=True)
        trust = _resize_short_side(trust.astype(np.uint8), self.size, nearest=True).astype(bool)
        h, w = values.shape
        rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(ref.name.encode())])
        if self.train:
            y0, x0 = int(rng.integers(0, h - self.size + 1)), int(rng.integers(0, w - self.size + 1))
        else:
            y0, x0 = (h - self.size) // 2, (w - self.size) // 2
        sl = (slice(y0, y0 + self.size), slice(x0, x0 + self.size))
        img, values, trust = img[sl], values[sl], trust[sl]
        if self.train and rng.random() < 0.5:
            img, values, trust = img[:, ::-1], values[:, ::-1], trust[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
        v = torch.from_numpy(np.ascontiguousarray(values))[None]
        t = torch.from_numpy(np.ascontiguousarray(trust))[None]
        gt_depth = torch.zeros_like(v[0])
        if kind == "z":
            cutoff = self.max_depth if ref.units == "m" else None
            target, mask = disparity_targets(v, cutoff)
            gt_depth = torch.where(mask[0], v[0], gt_depth)
        else:
            mask = (v > 0) & torch.isfinite(v)
            target = normalize_min_max_masked(v, mask)
        mask = mask & t
        return image, target[0], mask[0], gt_depth


# ----------------------------------------------------------------------------- augmentations


def color_jitter(images, generator, strength: float = 0.4):
    """Random brightness / contrast / saturation per image (``[B,3,H,W]`` in [0,1])."""
    import torch

    b = images.shape[0]

    def u():
        return 1.0 + (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * strength

    x = images * u()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u() + mean
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * u() + gray
    return x.clamp(0, 1)


def gaussian_blur(images, generator, p: float = 0.5, max_sigma: float = 2.0):
    """Blur each image with probability ``p`` (sigma uniform in [0.1, max_sigma])."""
    import torch
    import torch.nn.functional as F

    out = images.clone()
    for i in range(images.shape[0]):
        if float(torch.rand(1, generator=generator)) >= p:
            continue
        sigma = 0.1 + float(torch.rand(1, generator=generator)) * (max_sigma - 0.1)
        r = max(1, int(3 * sigma))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=images.dtype) / sigma) ** 2)
        k = k / k.sum()
        x = images[i : i + 1].transpose(0, 1)  # [3,1,H,W]
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
        out[i] = x.transpose(0, 1)[0]
    return out


def cutmix(images, targets, masks, generator, p: float = 0.5):
    """CutMix within a batch: paste a random box of image ``j`` (and its label) into image ``i``.

    Returns ``(images, targets, masks, box)`` where ``box`` ``[B,H,W]`` bool marks
    pasted pixels; the loss treats the box and the rest as separate regions
    (each has its own unknown scale/shift), as Depth-Anything does.
    """
    import torch

    b, _, h, w = images.shape
    src_images, src_targets, src_masks = images, targets, masks  # paste from the unmodified batch
    images, targets, masks = images.clone(), targets.clone(), masks.clone()
    box = torch.zeros(b, h, w, dtype=torch.bool)
    if b < 2:
        return images, targets, masks, box
    perm = torch.roll(torch.arange(b), 1)
    for i in range(b):
        if float(torch.rand(1, generator=generator)) >= p:
            continue
        lam = 0.25 + 0.5 * float(torch.rand(1, generator=generator))
        bh, bw = int(h * lam**0.5), int(w * lam**0.5)
        y0 = int(torch.randint(0, h - bh + 1, (1,), generator=generator))
        x0 = int(torch.randint(0, w - bw + 1, (1,), generator=generator))
        j = int(perm[i])
        sl = (slice(y0, y0 + bh), slice(x0, x0 + bw))
        images[i][:, sl[0], sl[1]] = src_images[j][:, sl[0], sl[1]]
        targets[i][sl] = src_targets[j][sl]
        masks[i][sl] = src_masks[j][sl]
        box[i][sl] = True
    return images, targets, masks, box


def strong_augment(images, targets, masks, generator):
    """The student's perturbations: colour jitter, Gaussian blur, CutMix (labels from clean images)."""
    images = color_jitter(images, generator)
    images = gaussian_blur(images, generator)
    return cutmix(images, targets, masks, generator)


# ----------------------------------------------------------------------------- image folders


def list_images(folder: Path) -> tuple[list[Path], list[str]]:
    """Image files of a folder (sorted, recursive) and the names of skipped non-image files."""
    from depthcli.io.images import IMAGE_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise DepthcliError(f"image folder '{folder}' does not exist or is not a folder")
    images: list[Path] = []
    skipped: list[str] = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        else:
            skipped.append(str(p.relative_to(folder)))
    return images, skipped


def try_read_image(path: Path) -> np.ndarray | None:
    """RGB uint8 image, or None when the file cannot be decoded."""
    from depthcli.io.images import read_image_rgb

    try:
        return read_image_rgb(path)
    except DepthcliError:
        return None


def write_json(path: Path, obj) -> None:
    from depthcli.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1))
