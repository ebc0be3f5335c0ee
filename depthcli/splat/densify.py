"""Adaptive density control for Gaussian splats, in plain torch (any device).

The logic follows the original 3DGS / gsplat "default" strategy, written here so
the torch backend (CPU) densifies too:

* every step, the norm of the screen-space gradient of each visible Gaussian's
  2D centre (``means2d.grad``, in NDC units: pixels x 2 / image size) is
  accumulated, with a visibility count;
* every ``refine_every`` steps between ``refine_start`` and ``refine_stop``,
  Gaussians whose mean gradient exceeds ``grow_grad2d`` are **cloned** (small:
  max scale <= ``grow_scale3d`` x scene scale) or **split** in two (large: two
  samples from the Gaussian, scales / 1.6); then Gaussians with opacity below
  ``prune_opa`` (and, after the first reset, too large ones) are **pruned**;
* every ``reset_every`` steps opacities are clamped to ``2 x prune_opa`` so
  useless Gaussians can fade and be pruned.

Parameters and the Adam state are edited together (new Gaussians start with zero
moments). The running state is an explicit dict (``initialize_state``) that the
trainer checkpoints, so a resumed run densifies exactly like an uninterrupted one.
On CUDA with gsplat installed the trainer can use ``gsplat.DefaultStrategy``
instead (same interface: ``step_pre_backward`` / ``step_post_backward``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass
class TorchDensifyStrategy:
    """Clone / split / prune / opacity-reset schedule (see the module docstring)."""

    prune_opa: float = 0.005  # opacity below which a Gaussian is removed
    grow_grad2d: float = 0.0002  # mean NDC gradient norm above which a Gaussian grows
    grow_scale3d: float = 0.01  # clone (<=) vs split (>) threshold, x scene scale
    prune_scale3d: float = 0.1  # max scale above which a Gaussian is pruned (after a reset), x scene scale
    refine_start: int = 500  # first step that refines
    refine_stop: int = 15000  # no refinement from this step on
    refine_every: int = 100  # steps between refinements
    reset_every: int = 3000  # steps between opacity resets (0 = never)
    max_gaussians: int = 2_000_000  # growth stops at this count

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        return {"grad2d": None, "count": None, "scene_scale": float(scene_scale)}

    def check_sanity(self, params, optimizers) -> None:
        for key in ("means", "scales", "quats", "opacities"):
            assert key in params, key
        assert set(params.keys()) == set(optimizers.keys())

    def step_pre_backward(self, params, optimizers, state, step: int, info: dict) -> None:
        m2d = info["means2d"]
        if m2d.requires_grad and not m2d.is_leaf:
            m2d.retain_grad()

    def step_post_backward(self, params, optimizers, state, step: int, info: dict, packed: bool = False) -> dict:
        """Accumulate gradient statistics and refine on schedule; returns counts of what changed."""
        if step >= self.refine_stop:
            return {}
        self._update_state(params, state, info)
        out: dict[str, int] = {}
        if step > self.refine_start and step % self.refine_every == 0:
            out.update(self._grow(params, optimizers, state))
            out["pruned"] = self._prune(params, optimizers, state, step)
            state["grad2d"].zero_()
            state["count"].zero_()
        if self.reset_every > 0 and step > 0 and step % self.reset_every == 0:
            reset_opacity(params, optimizers, self.prune_opa * 2.0)
        return out

    def _update_state(self, params, state, info) -> None:
        grads = info["means2d"].grad
        if grads is None:
            return
        grads = grads.detach().clone()  # [C, N, 2] pixels
        grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
        grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        n = params["means"].shape[0]
        if state["grad2d"] is None or state["grad2d"].shape[0] != n:
            state["grad2d"] = torch.zeros(n, device=grads.device)
            state["count"] = torch.zeros(n, device=grads.device)
        radii = info["radii"]
        if radii.dim() == 3:  # gsplat >= 1.5 gives [C, N, 2]
            radii = radii.max(dim=-1).values
        sel = radii > 0
        ids = torch.where(sel)[1]
        state["grad2d"].index_add_(0, ids, grads[sel].norm(dim=-1))
        state["count"].index_add_(0, ids, torch.ones_like(ids, dtype=torch.float32))

    def _grow(self, params, optimizers, state) -> dict[str, int]:
        count = state["count"]
        grads = state["grad2d"] / count.clamp(min=1)
        high = grads > self.grow_grad2d
        small = torch.exp(params["scales"]).max(dim=-1).values <= self.grow_scale3d * state["scene_scale"]
        room = self.max_gaussians - params["means"].shape[0]
        clone_mask = high & small
        split_mask = high & ~small
        if room <= 0:
            return {"cloned": 0, "split": 0}
        n_clone = int(clone_mask.sum())
        if n_clone:
            duplicate(params, optimizers, state, clone_mask)
        # Split masks refer to the Gaussians before cloning: pad for the appended clones.
        split_mask = torch.cat([split_mask, split_mask.new_zeros(n_clone)])
        n_split = int(split_mask.sum())
        if n_split:
            split(params, optimizers, state, split_mask)
        return {"cloned": n_clone, "split": n_split}

    def _prune(self, params, optimizers, state, step: int) -> int:
        prune = torch.sigmoid(params["opacities"].flatten()) < self.prune_opa
        if self.reset_every > 0 and step > self.reset_every:
            too_big = torch.exp(params["scales"]).max(dim=-1).values > self.prune_scale3d * state["scene_scale"]
            prune = prune | too_big
        # Never remove every Gaussian.
        if prune.all():
            return 0
        n = int(prune.sum())
        if n:
            remove(params, optimizers, state, prune)
        return n


# ----------------------------------------------------------------------------- param + optimizer edits


def _edit(params, optimizers, names, param_fn: Callable, state_fn: Callable) -> None:
    """Replace ``params[name]`` by ``param_fn(name, p)`` and each Adam moment by ``state_fn(name, v)``."""
    for name in names:
        p = params[name]
        new_p = torch.nn.Parameter(param_fn(name, p.data), requires_grad=p.requires_grad)
        params[name] = new_p
        opt = optimizers[name]
        for group in opt.param_groups:
            old = group["params"][0]
            st = opt.state.pop(old, None)
            group["params"][0] = new_p
            if st is not None:
                for key, val in list(st.items()):
                    if key != "step" and isinstance(val, torch.Tensor) and val.dim() > 0 and val.shape == old.shape:
                        st[key] = state_fn(name, val)
                opt.state[new_p] = st


def duplicate(params, optimizers, state, mask: torch.Tensor) -> None:
    """Append copies of the Gaussians in ``mask`` (zero Adam moments for the copies)."""
    idx = torch.where(mask)[0]
    _edit(params, optimizers, list(params.keys()),
          lambda _, p: torch.cat([p, p[idx]]),
          lambda _, v: torch.cat([v, torch.zeros_like(v[idx])]))
    _extend_state(state, idx)


def split(params, optimizers, state, mask: torch.Tensor) -> None:
    """Replace each Gaussian in ``mask`` by two samples drawn from it, scales / 1.6."""
    idx = torch.where(mask)[0]
    keep = torch.where(~mask)[0]
    scales = torch.exp(params["scales"][idx])
    q = torch.nn.functional.normalize(params["quats"][idx], dim=-1)
    R = quat_to_rotmat(q)  # [M, 3, 3]
    samples = torch.randn(2, len(idx), 3, device=scales.device)
    offsets = torch.einsum("mij,bmj->bmi", R, samples * scales[None])  # [2, M, 3]

    def new_param(name, p):
        if name == "means":
            grown = (p[idx][None] + offsets).reshape(-1, 3)
        elif name == "scales":
            grown = torch.log(scales / 1.6).repeat(2, 1)
        else:
            grown = p[idx].repeat(2, *([1] * (p.dim() - 1)))
        return torch.cat([p[keep], grown])

    _edit(params, optimizers, list(params.keys()), new_param,
          lambda _, v: torch.cat([v[keep], torch.zeros_like(v[idx]).repeat(2, *([1] * (v.dim() - 1)))]))
    for key in ("grad2d", "count"):
        if state.get(key) is not None:
            v = state[key]
            state[key] = torch.cat([v[keep], torch.zeros(2 * len(idx), device=v.device, dtype=v.dtype)])


def remove(params, optimizers, state, mask: torch.Tensor) -> None:
    """Delete the Gaussians in ``mask``."""
    keep = torch.where(~mask)[0]
    _edit(params, optimizers, list(params.keys()), lambda _, p: p[keep], lambda _, v: v[keep])
    for key in ("grad2d", "count"):
        if state.get(key) is not None:
            state[key] = state[key][keep]


def reset_opacity(params, optimizers, value: float) -> None:
    """Clamp every opacity to at most ``value`` (logit space); Adam moments of opacity zeroed."""
    logit = float(torch.logit(torch.tensor(value)))
    _edit(params, optimizers, ["opacities"], lambda _, p: torch.clamp(p, max=logit), lambda _, v: torch.zeros_like(v))


def _extend_state(state, idx) -> None:
    for key in ("grad2d", "count"):
        if state.get(key) is not None:
            v = state[key]
            state[key] = torch.cat([v, torch.zeros(len(idx), device=v.device, dtype=v.dtype)])


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[N, 3, 3]`` from unit quaternions ``[N, 4]`` (w x y z)."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))
