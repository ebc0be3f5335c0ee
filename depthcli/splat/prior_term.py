"""The dense prior term of ``splat-train --prior``.

A prior is a depth dataset whose frames share names (or file stems) with the
training dataset's frames, typically ``depthcli align`` output: dense z-depth in
the training dataset's units. Each training step adds, for the step's view,

    w(step) * sum_k w_k * term_k(rendered, prior, prior_valid[, image])

with the terms of ``--prior-loss`` (same names as ``--depth-loss``, default
``l1``) and ``w`` decaying exponentially from ``prior_weight`` (step 1) to
``prior_weight_final`` (last step), as in Inria 3DGS's depth regularisation
(1.0 -> 0.01): ``w(step) = w0 * (w1 / w0) ** ((step - 1) / (steps - 1))``;
``prior_weight_final = 0`` decays linearly to 0 instead. The schedule is a pure
function of the step, so resumed runs stay identical.

A prior that is not in the dataset's units (``affine`` predictions, disparity,
or metres against an SfM model) can only be used scale-free: ``--prior-loss
pearson``. For a disparity prior the correlation is taken between the rendered
disparity ``1 / depth`` and the prior (Pearson is invariant to the prior's
unknown scale and shift, not to inversion).

Held-out views never see their prior. Priors of a size other than the frame's
are resized (bilinear, pixels next to invalid ones dropped).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from depthcli.errors import DepthcliError

SCALE_FREE = {"pearson"}


def prior_weight_at(step: int, steps: int, w0: float, w1: float) -> float:
    """Weight of the prior term at ``step`` (1-based) of ``steps``."""
    if w0 <= 0:
        return 0.0
    p = (step - 1) / max(steps - 1, 1)
    p = min(max(p, 0.0), 1.0)
    if w1 <= 0:
        return w0 * (1.0 - p)
    return w0 * (w1 / w0) ** p


def check_prior_settings(cfg) -> list[tuple[str, float]]:
    """Validate the prior flags (before anything is written); return the parsed prior loss."""
    from depthcli.splat.losses import parse_depth_loss_spec

    for name in ("prior_weight", "prior_weight_final"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise DepthcliError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")
    try:
        terms = parse_depth_loss_spec(cfg.prior_loss)
    except ValueError as exc:
        raise DepthcliError(f"--prior-loss: {exc}") from None
    return terms


class PriorTerm:
    """Prior maps of the training views (training units) and the weighted loss on them."""

    def __init__(self, cfg, terms, maps: dict, kind: str, info: dict[str, Any], images: dict):
        self.cfg = cfg
        self.terms = terms
        self.maps = maps  # view index -> [H, W] float32 prior (dataset units for depth; raw for disparity)
        self.targets: dict = {}  # view index -> (prior tensor in training units, mask tensor), see prepare()
        self.kind = kind  # "depth" (aligned, training units) or "disparity" (scale-free only)
        self.info = info
        self.images = images  # view index -> [H, W, 3] float tensor in [0, 1] (edge-aware terms)

    @property
    def metric(self) -> bool:
        """True for a z-depth prior in the dataset's units (usable as depth, e.g. to seed Gaussians)."""
        return self.kind == "depth" and self.info["same_units"]

    def init_depths(self, views, train_ids) -> list[np.ndarray]:
        """Per training view: the view's own depth where valid, else the prior (dataset units).

        Used to seed the initial Gaussians densely (``SplatTrainConfig.prior_init``);
        views without a prior keep their own depth.
        """
        out = []
        for i in train_ids:
            d = views[i].depth_world
            p = self.maps.get(i)
            out.append(d if p is None else np.where(d > 0, d, p).astype(np.float32))
        return out

    def prepare(self, norm_scale: float, device) -> None:
        """Move the maps to ``device`` as tensors in training units (depth / ``norm_scale``)."""
        import torch

        dev = torch.device(device)
        for i, d in self.maps.items():
            if self.metric:
                d = d / norm_scale
            t = torch.tensor(d, dtype=torch.float32, device=dev)
            self.targets[i] = (t, t > 0)
        self.images = {i: img.to(dev) for i, img in self.images.items()}

    def weight(self, step: int) -> float:
        return prior_weight_at(step, self.cfg.steps, self.cfg.prior_weight, self.cfg.prior_weight_final)

    def add(self, loss, parts: dict, i: int, step: int, depth, alpha=None):
        """``loss + w(step) * prior loss`` of view ``i``; logs ``prior`` and ``prior_weight`` into ``parts``."""
        import torch

        from depthcli.splat.losses import named_depth_loss

        entry = self.targets.get(i)
        w = self.weight(step)
        if entry is None or w <= 0:
            return loss
        target, mask = entry
        pred = depth if self.kind == "depth" else 1.0 / depth.clamp(min=1e-6)
        image = self.images.get(i)
        term = sum(wk * named_depth_loss(name, pred, target, mask, image) for name, wk in self.terms if wk > 0)
        if not isinstance(term, torch.Tensor):
            return loss
        parts["prior"] = float(term.detach()) * w
        parts["prior_weight"] = w
        return loss + w * term

    def state(self) -> dict[str, Any]:
        """What the checkpoint records about the prior (plain types)."""
        return {k: self.info[k] for k in ("path", "frames", "kind", "units", "fingerprint")}

    def summary(self) -> dict[str, Any]:
        return {"path": self.info["path"], "frames": self.info["frames"], "loss": self.cfg.prior_loss,
                "weight": f"{self.cfg.prior_weight:g} -> {self.cfg.prior_weight_final:g}", "kind": self.kind}


def _fingerprint(path: Path) -> str:
    import hashlib

    return hashlib.sha256((path / "dataset.json").read_bytes()).hexdigest()[:16]


def load_prior(cfg, ds, views, train_ids, old_config: Optional[dict] = None,
               old_state: Optional[dict] = None) -> Optional[PriorTerm]:
    """The prior of ``cfg.prior`` for the training views, or None without ``--prior``.

    Maps stay in numpy until :meth:`PriorTerm.prepare`. Validates everything (units, kinds, losses, sizes, matching names) before the
    job folder is touched; on ``--resume`` the prior path and loss must be those of
    the checkpoint.
    """
    from depthcli.io.dataset import load_dataset, safe_stem
    from depthcli.prior import resize_prediction

    terms = check_prior_settings(cfg)
    if old_config is not None:
        before = old_config.get("prior")
        now = cfg.prior
        same = (before is None and now is None) or (
            before is not None and now is not None and Path(before).resolve() == Path(now).resolve())
        if not same:
            raise DepthcliError(f"--resume: the checkpoint was trained with prior={before}, not {now}",
                                "resume with the same --prior")
        for key in ("prior_loss", "prior_weight", "prior_weight_final"):
            if key in old_config and str(old_config[key]) != str(getattr(cfg, key)):
                raise DepthcliError(f"--resume: the checkpoint was trained with {key}={old_config[key]}, "
                                    f"not {getattr(cfg, key)}", "resume with the same settings")
    if cfg.prior is None:
        return None
    root = Path(cfg.prior)
    pds = load_dataset(root)
    if old_state is not None and old_state.get("fingerprint") not in (None, _fingerprint(root)):
        raise DepthcliError(f"--resume: the prior '{root}' changed since the checkpoint was written",
                            "restore it or start a new job")
    names = [n for n, _ in terms]
    same_units = pds.depth_kind == "z" and pds.depth_units == ds.depth_units and pds.depth_units != "affine"
    if not same_units and not set(names) <= SCALE_FREE:
        raise DepthcliError(
            f"the prior holds {pds.depth_units} {pds.depth_kind} but the dataset {ds.depth_units} z-depth: "
            f"--prior-loss {cfg.prior_loss} needs an aligned prior",
            "align it first (depthcli align PRED DATASET OUT) or use --prior-loss pearson",
        )
    kind = "depth" if pds.depth_kind == "z" else "disparity"
    by_name = {f.name: f for f in pds.frames}
    by_stem: dict[str, list] = {}
    for f in pds.frames:
        by_stem.setdefault(safe_stem(f.name), []).append(f)
    maps: dict[int, np.ndarray] = {}
    resized = 0
    for i in train_ids:
        frame = views[i].frame
        pf = by_name.get(frame.name)
        if pf is None:
            cands = by_stem.get(safe_stem(frame.name), [])
            pf = cands[0] if len(cands) == 1 else None
        if pf is None:
            continue
        d = pds.read_depth(pf, nonfinite="invalid")
        if d.shape != (frame.height, frame.width):
            d = resize_prediction(d, frame.width, frame.height)
            resized += 1
        maps[i] = d
    if not maps:
        raise DepthcliError(
            f"no frame of the prior '{root}' matches a training frame of '{cfg.dataset}' by name",
            "make the prior from this dataset's frames (depthcli align PRED DATASET OUT)",
        )
    images: dict[int, Any] = {}
    if "edge-log-l1" in names:
        images = loss_images(ds, views, list(maps), "cpu", fallback=pds)
    from depthcli.console import log

    log(f"prior: {len(maps)} of {len(train_ids)} training frames ({kind}, loss {cfg.prior_loss}, "
        f"weight {cfg.prior_weight:g} -> {cfg.prior_weight_final:g})" + (f", {resized} resized" if resized else ""))
    info = {"path": str(root.absolute()), "frames": len(maps), "kind": kind, "units": pds.depth_units,
            "fingerprint": _fingerprint(root), "same_units": same_units}
    return PriorTerm(cfg, terms, maps, kind, info, images)


def loss_images(ds, views, ids, device, fallback=None) -> dict[int, Any]:
    """``[H, W, 3]`` float images in [0, 1] of views ``ids`` for edge-aware losses.

    From the dataset, else from ``fallback`` (a prior dataset with the same frame
    names); views without an image are left out (their edge weights are 1).
    """
    import torch

    out: dict[int, Any] = {}
    for i in ids:
        frame = views[i].frame
        img = views[i].image if views[i].image is not None else ds.read_image(frame)
        if img is None and fallback is not None:
            try:
                pf = fallback.frame(frame.name)
                img = fallback.read_image(pf)
            except DepthcliError:
                img = None
            if img is not None and img.shape[:2] != (frame.height, frame.width):
                img = None
        if img is not None:
            out[i] = torch.tensor(np.asarray(img), dtype=torch.float32, device=device) / 255.0
    if len(out) < len(ids):
        from depthcli.console import warn

        warn(f"edge-aware loss: {len(ids) - len(out)} of {len(ids)} views have no image (weights 1 there)")
    return out

