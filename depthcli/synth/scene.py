"""Procedural scenes made of analytic primitives, ray cast with exact depth.

Conventions (see :mod:`depthcli.depth` and :mod:`depthcli.geometry`):

* World frame: metres, **z up** (the ground / floor is the plane z = 0).
* Cameras: OpenCV axes (x right, y down, z forward), ``cam_from_world`` 4x4.
* A ray is ``origin + t * dir`` with ``dir`` *not* necessarily unit length:
  :meth:`Scene.raycast` returns the ray parameter ``t`` (inf = miss). The pixel
  rays built by :meth:`Scene.render` have camera-space direction
  ``((u - cx) / fx, (v - cy) / fy, 1)``, so for them ``t`` *is* the z-depth
  (distance along the optical axis), not the ray length.
* Rendered depth is float32 z-depth in metres, 0 = no hit (sky / outside).
* Textures are functions of the WORLD position of the hit point, so an object
  looks the same from every view (what SfM and multi-view training need).
* Shading: Lambertian with ambient term, one light (point light indoors,
  directional sun outdoors), hard shadows by a second ray cast.

Everything is float64 numpy, vectorised over rays.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Style = Literal["indoor", "outdoor"]
STYLES = ("indoor", "outdoor")
TEXTURES = ("solid", "checker", "stripes", "noise")

_EPS_T = 1e-9  # smallest accepted ray parameter (rays start at the camera centre)


# --------------------------------------------------------------------------- materials


@dataclass
class Material:
    """Appearance of a primitive: a world-space pattern mixing two colours."""

    texture: str = "solid"  # one of TEXTURES
    colour_a: tuple[float, float, float] = (0.7, 0.7, 0.7)  # linear RGB in [0, 1]
    colour_b: tuple[float, float, float] = (0.3, 0.3, 0.3)  # second colour of the pattern
    scale: float = 0.5  # pattern period / cell size in metres
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # world shift of the pattern (m)
    direction: tuple[float, float, float] = (1.0, 0.0, 0.0)  # stripe direction (unit)
    grain: float = 0.15  # amplitude of fine value noise on top of the pattern (0 = none)
    grain_scale: float = 0.04  # size of the fine noise cells in metres

    def albedo(self, points: np.ndarray) -> np.ndarray:
        """Colour ``[N, 3]`` in [0, 1] of world points ``[N, 3]`` on this material."""
        p = points + np.asarray(self.offset)
        s = max(float(self.scale), 1e-6)
        if self.texture == "checker":
            cells = np.floor(p / s).sum(axis=1)
            mix = np.mod(cells, 2.0)
        elif self.texture == "stripes":
            phase = p @ np.asarray(self.direction) / s
            mix = np.clip(0.5 + 1.5 * np.sin(2.0 * math.pi * phase), 0.0, 1.0)
        elif self.texture == "noise":
            mix = np.clip(1.4 * (fbm_noise(p / s, octaves=3) - 0.5) + 0.5, 0.0, 1.0)
        else:
            mix = np.zeros(len(p))
        a = np.asarray(self.colour_a)
        b = np.asarray(self.colour_b)
        col = a[None, :] * (1.0 - mix[:, None]) + b[None, :] * mix[:, None]
        if self.grain > 0:
            g = fbm_noise(p / max(self.grain_scale, 1e-6), octaves=2, salt=17)
            col = col * (1.0 + self.grain * 2.0 * (g[:, None] - 0.5))
        return np.clip(col, 0.0, 1.0)


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point."""
    h = (
        ix.astype(np.int64).view(np.uint64) * np.uint64(0x9E3779B185EBCA87)
        ^ iy.astype(np.int64).view(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        ^ iz.astype(np.int64).view(np.uint64) * np.uint64(0x165667B19E3779F9)
        ^ np.uint64(salt * 0x27D4EB2F165667C5 % (1 << 64))
    )
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return (h >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def value_noise(p: np.ndarray, salt: int = 0) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] at points ``[N, 3]`` (lattice spacing 1)."""
    fl = np.floor(p)
    f = p - fl
    i = fl.astype(np.int64)
    w = f * f * (3.0 - 2.0 * f)  # smoothstep weights
    out = np.zeros(len(p))
    for dx in (0, 1):
        wx = w[:, 0] if dx else 1.0 - w[:, 0]
        for dy in (0, 1):
            wy = w[:, 1] if dy else 1.0 - w[:, 1]
            for dz in (0, 1):
                wz = w[:, 2] if dz else 1.0 - w[:, 2]
                out += wx * wy * wz * _hash01(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, salt)
    return out


def fbm_noise(p: np.ndarray, octaves: int = 3, salt: int = 0) -> np.ndarray:
    """Sum of value-noise octaves (frequency x2, amplitude /2), normalised to [0, 1]."""
    total = np.zeros(len(p))
    amp, norm, freq = 1.0, 0.0, 1.0
    for k in range(octaves):
        total += amp * value_noise(p * freq, salt + 101 * k)
        norm += amp
        amp *= 0.5
        freq *= 2.0
    return total / norm


# --------------------------------------------------------------------------- primitives


def _unit(v: Any) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


@dataclass
class Sphere:
    """A sphere (closed surface, hit from outside)."""

    center: tuple[float, float, float]  # world position (m)
    radius: float  # metres
    material: Material = field(default_factory=Material)
    kind: str = "sphere"

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = o - np.asarray(self.center)
        a = np.einsum("ij,ij->i", d, d)
        b = np.einsum("ij,ij->i", oc, d)
        c = np.einsum("ij,ij->i", oc, oc) - self.radius**2
        disc = b * b - a * c
        t = np.full(len(d), np.inf)
        ok = disc >= 0
        sq = np.sqrt(disc[ok])
        t0 = (-b[ok] - sq) / a[ok]
        t1 = (-b[ok] + sq) / a[ok]
        t[ok] = np.where(t0 > _EPS_T, t0, np.where(t1 > _EPS_T, t1, np.inf))
        return t

    def normal(self, p: np.ndarray) -> np.ndarray:
        return (p - np.asarray(self.center)) / self.radius


@dataclass
class Quad:
    """A planar rectangle ``center + a * axis_u + b * axis_v``, |a| <= half_u, |b| <= half_v.

    ``axis_u`` and ``axis_v`` are orthonormal; the plane is two-sided.
    """

    center: tuple[float, float, float]  # world position of the centre (m)
    axis_u: tuple[float, float, float]  # first in-plane unit axis
    axis_v: tuple[float, float, float]  # second in-plane unit axis (orthogonal to axis_u)
    half_u: float  # half extent along axis_u (m)
    half_v: float  # half extent along axis_v (m)
    material: Material = field(default_factory=Material)
    kind: str = "quad"

    @property
    def plane_normal(self) -> np.ndarray:
        return _unit(np.cross(self.axis_u, self.axis_v))

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        n = self.plane_normal
        c = np.asarray(self.center)
        denom = d @ n
        num = (c - o) @ n
        t = np.full(len(d), np.inf)
        ok = np.abs(denom) > 1e-300
        tt = num[ok] / denom[ok]
        p = o[ok] + tt[:, None] * d[ok] - c
        inside = (
            (tt > _EPS_T)
            & (np.abs(p @ np.asarray(self.axis_u)) <= self.half_u)
            & (np.abs(p @ np.asarray(self.axis_v)) <= self.half_v)
        )
        t[np.nonzero(ok)[0][inside]] = tt[inside]
        return t

    def normal(self, p: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.plane_normal, p.shape).copy()


@dataclass
class Box:
    """An oriented box: ``center + rotation @ local``, |local_i| <= half_size_i.

    ``rotation`` (3x3, columns = box axes in world) is world_from_box.
    """

    center: tuple[float, float, float]  # world position of the centre (m)
    half_size: tuple[float, float, float]  # half extents along the box axes (m)
    rotation: list[list[float]] = field(default_factory=lambda: np.eye(3).tolist())  # world_from_box
    material: Material = field(default_factory=Material)
    kind: str = "box"

    def _local(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        R = np.asarray(self.rotation)
        return (o - np.asarray(self.center)) @ R, d @ R

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ol, dl = self._local(o, d)
        h = np.asarray(self.half_size)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dl
            t1 = (-h - ol) * inv
            t2 = (h - ol) * inv
        lo = np.fmin(t1, t2)
        hi = np.fmax(t1, t2)
        # Axis-parallel rays: inside the slab -> (-inf, inf), outside -> no hit.
        par = dl == 0
        inslab = np.abs(ol) <= h
        lo = np.where(par, np.where(inslab, -np.inf, np.inf), lo)
        hi = np.where(par, np.where(inslab, np.inf, -np.inf), hi)
        tmin = lo.max(axis=1)
        tmax = hi.min(axis=1)
        t = np.where(tmin > _EPS_T, tmin, tmax)  # from inside: the exit face
        hit = (tmax >= tmin) & (t > _EPS_T) & np.isfinite(t)
        return np.where(hit, t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        R = np.asarray(self.rotation)
        pl = (p - np.asarray(self.center)) @ R
        rel = np.abs(pl) / np.asarray(self.half_size)
        axis = np.argmax(rel, axis=1)
        sign = np.sign(pl[np.arange(len(p)), axis])
        sign[sign == 0] = 1.0
        return R[:, axis].T * sign[:, None]


Primitive = Sphere | Quad | Box


@dataclass
class Light:
    """One light plus ambient: ``kind="point"`` at ``vector`` or ``"directional"`` towards ``vector``."""

    kind: str = "directional"  # "point" or "directional"
    vector: tuple[float, float, float] = (0.3, 0.2, 0.9)  # position (point) or direction to the light
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)  # light colour / intensity
    ambient: float = 0.3  # ambient fraction in [0, 1]
    shadows: bool = True  # cast shadow rays


# --------------------------------------------------------------------------- scene


@dataclass
class Scene:
    """A set of primitives, a light and a background.

    ``camera_hint`` describes free space for cameras (used by the trajectory in
    :mod:`depthcli.synth.generate`): an ellipse ``center``, ``radii`` (x, y) at
    ``height`` metres, looking at ``target``.
    """

    primitives: list[Primitive]
    light: Light = field(default_factory=Light)
    sky: bool = False  # draw a sky gradient for rays that hit nothing (depth stays 0)
    style: str = "indoor"  # "indoor" or "outdoor" (informative)
    seed: int | None = None  # seed of make_scene, if procedural
    camera_hint: dict[str, Any] = field(default_factory=dict)
    hfov_deg: float = 65.0  # suggested horizontal field of view

    # ---------------------------------------------------------------- ray casting
    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest hit per ray: ``(t [N] with inf for a miss, primitive index [N], -1 for a miss)``."""
        o = np.asarray(origins, dtype=np.float64)
        d = np.asarray(dirs, dtype=np.float64)
        n = len(d)
        if o.shape == (3,):
            o = np.broadcast_to(o, d.shape)
        best = np.full(n, np.inf)
        idx = np.full(n, -1, dtype=np.int64)
        for i, prim in enumerate(self.primitives):
            t = prim.intersect(o, d)
            closer = t < best
            best[closer] = t[closer]
            idx[closer] = i
        return best, idx

    def raycast(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cast rays ``origins [N, 3] + t * dirs [N, 3]`` (world frame).

        Returns ``(t [N], normals [N, 3], colour [N, 3])``: ``t`` is the ray
        parameter of the nearest hit in units of ``|dirs|`` (inf = miss);
        ``normals`` are unit world normals facing the ray (0 for a miss);
        ``colour`` is the shaded linear RGB in [0, 1] (sky or black for a miss).
        """
        d = np.asarray(dirs, dtype=np.float64).reshape(-1, 3)
        o = np.broadcast_to(np.asarray(origins, dtype=np.float64), d.shape).reshape(-1, 3)
        t, idx = self.intersect(o, d)
        hit = idx >= 0
        normals = np.zeros_like(d)
        colour = np.zeros_like(d)
        p = o + np.where(hit, t, 0.0)[:, None] * d
        albedo = np.zeros_like(d)
        for i, prim in enumerate(self.primitives):
            sel = idx == i
            if not sel.any():
                continue
            normals[sel] = prim.normal(p[sel])
            albedo[sel] = prim.material.albedo(p[sel])
        # Face the normals towards the viewer (two-sided surfaces).
        flip = np.einsum("ij,ij->i", normals, d) > 0
        normals[flip] *= -1.0
        if hit.any():
            colour[hit] = self._shade(p[hit], normals[hit], albedo[hit], t[hit], np.linalg.norm(d[hit], axis=1))
        if self.sky and (~hit).any():
            colour[~hit] = self._sky(d[~hit])
        return t, normals, colour

    def _shade(self, p: np.ndarray, n: np.ndarray, albedo: np.ndarray, t: np.ndarray, dlen: np.ndarray) -> np.ndarray:
        L = self.light
        if L.kind == "point":
            to_light = np.asarray(L.vector) - p
            dist = np.linalg.norm(to_light, axis=1)
            ldir = to_light / dist[:, None]
            shadow_t = 1.0  # the light sits at t = 1 along to_light
            atten = 1.0 / (1.0 + 0.02 * dist * dist)
        else:
            ldir = np.broadcast_to(_unit(L.vector), p.shape)
            to_light = ldir
            shadow_t = np.inf
            atten = np.ones(len(p))
        lam = np.clip(np.einsum("ij,ij->i", n, ldir), 0.0, None) * atten
        if L.shadows:
            lit = lam > 0
            if lit.any():
                # Offset the start along the normal, relative to the distance travelled.
                off = 1e-6 * np.maximum(1.0, t[lit] * dlen[lit])
                ts, _ = self.intersect(p[lit] + n[lit] * off[:, None], to_light[lit])
                blocked = ts < (shadow_t * (1.0 - 1e-9) if np.isfinite(shadow_t) else np.inf)
                lam_l = lam[lit]
                lam_l[blocked] = 0.0
                lam[lit] = lam_l
        shade = L.ambient + (1.0 - L.ambient) * lam
        return np.clip(albedo * shade[:, None] * np.asarray(L.colour)[None, :], 0.0, 1.0)

    def _sky(self, d: np.ndarray) -> np.ndarray:
        up = d[:, 2] / np.linalg.norm(d, axis=1)
        s = np.clip(up, 0.0, 1.0)[:, None] ** 0.6
        horizon = np.array([0.78, 0.85, 0.95])
        zenith = np.array([0.25, 0.45, 0.85])
        col = horizon * (1 - s) + zenith * s
        # Faint clouds so the sky is not perfectly flat.
        cl = fbm_noise(d / np.linalg.norm(d, axis=1, keepdims=True) * 6.0, octaves=3, salt=5)
        return np.clip(col + 0.12 * np.clip(cl - 0.5, 0, None)[:, None], 0.0, 1.0)

    # ---------------------------------------------------------------- cameras
    @staticmethod
    def pixel_rays(K: np.ndarray, cam_from_world: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World rays through pixel positions ``uv [N, 2]`` of a pinhole camera.

        Returns ``(origin [3], dirs [N, 3])`` scaled so that camera-space z of
        ``dirs`` is 1: the ray parameter ``t`` then equals the z-depth.
        """
        K = np.asarray(K, dtype=np.float64)
        T = np.asarray(cam_from_world, dtype=np.float64)
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        x = (uv[:, 0] - K[0, 2] - K[0, 1] * (uv[:, 1] - K[1, 2]) / K[1, 1]) / K[0, 0]
        y = (uv[:, 1] - K[1, 2]) / K[1, 1]
        return Scene.normalized_rays(cam_from_world, np.stack([x, y], axis=1))

    @staticmethod
    def normalized_rays(cam_from_world: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World rays for normalised camera coordinates ``xy [N, 2]`` (direction ``(x, y, 1)`` in camera space)."""
        T = np.asarray(cam_from_world, dtype=np.float64)
        R = T[:3, :3]
        origin = -R.T @ T[:3, 3]
        dc = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
        return origin, dc @ R  # rows: R^T @ dc

    def depth_at(self, K: np.ndarray, cam_from_world: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Exact z-depth (float64, metres, 0 = no hit) at sub-pixel positions ``uv [N, 2]`` (pinhole K)."""
        origin, dirs = self.pixel_rays(K, cam_from_world, uv)
        t, _ = self.intersect(np.broadcast_to(origin, dirs.shape), dirs)
        return np.where(np.isfinite(t), t, 0.0)

    def render(
        self, K: np.ndarray, cam_from_world: np.ndarray, width: int, height: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render a pinhole view; rays through pixel centres ``(col + 0.5, row + 0.5)``.

        Returns ``(rgb uint8 [H, W, 3], depth_z float32 [H, W])``: z-depth in
        metres along the optical axis (not ray length), 0 where nothing is hit.
        """
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        uv = np.stack([u.ravel() + 0.5, v.ravel() + 0.5], axis=1)
        origin, dirs = self.pixel_rays(K, cam_from_world, uv)
        return self._render_rays(origin, dirs, width, height)

    def render_normalized(
        self, xy: np.ndarray, cam_from_world: np.ndarray, width: int, height: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render from per-pixel normalised coordinates ``xy [H*W, 2]`` (row-major), e.g.
        undistorted pixel centres of a distorted camera. Same outputs as :meth:`render`."""
        origin, dirs = self.normalized_rays(cam_from_world, xy)
        return self._render_rays(origin, dirs, width, height)

    def _render_rays(self, origin: np.ndarray, dirs: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        t, _, colour = self.raycast(np.broadcast_to(origin, dirs.shape), dirs)
        depth = np.where(np.isfinite(t), t, 0.0).astype(np.float32).reshape(height, width)
        # Display transform: linear -> sRGB-ish gamma.
        rgb = np.round(np.clip(colour, 0, 1) ** (1 / 2.2) * 255.0).astype(np.uint8).reshape(height, width, 3)
        return rgb, depth

    # ---------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable description that :meth:`from_json` turns back into this scene."""
        prims = []
        for p in self.primitives:
            d = asdict(p)
            prims.append(d)
        return {
            "format": "depthcli.synth.scene",
            "version": 1,
            "style": self.style,
            "seed": self.seed,
            "sky": self.sky,
            "hfov_deg": self.hfov_deg,
            "light": asdict(self.light),
            "camera_hint": self.camera_hint,
            "primitives": prims,
            "conventions": {
                "world": "metres, z up",
                "camera_axes": "OpenCV: x right, y down, z forward",
                "depth": "z-depth along the optical axis, 0 = no hit",
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Scene":
        """Inverse of :meth:`to_json`."""
        from depthcli.errors import DepthcliError

        if not isinstance(data, dict) or data.get("format") != "depthcli.synth.scene":
            raise DepthcliError("not a depthcli synth scene description", "expected scene.json written by depthcli synth")
        kinds = {"sphere": Sphere, "quad": Quad, "box": Box}
        prims: list[Primitive] = []
        for pj in data["primitives"]:
            pj = dict(pj)
            mat = Material(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in pj.pop("material").items()})
            kind = pj["kind"]
            if kind not in kinds:
                raise DepthcliError(f"unknown primitive kind '{kind}' in scene description")
            args = {k: (tuple(v) if isinstance(v, list) and k != "rotation" else v) for k, v in pj.items()}
            prims.append(kinds[kind](material=mat, **args))
        light = Light(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data["light"].items()})
        return cls(
            primitives=prims,
            light=light,
            sky=bool(data.get("sky", False)),
            style=data.get("style", "indoor"),
            seed=data.get("seed"),
            camera_hint=data.get("camera_hint", {}),
            hfov_deg=float(data.get("hfov_deg", 65.0)),
        )

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Scene":
        from depthcli.errors import DepthcliError

        path = Path(path)
        if not path.is_file():
            raise DepthcliError(f"scene file '{path}' does not exist", "synth datasets keep it as scene.json")
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DepthcliError(f"'{path}' is not a valid scene description: {exc}") from None


# --------------------------------------------------------------------------- procedural scenes


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rand_rotation(rng: np.random.Generator, tilt: float) -> np.ndarray:
    """Rotation about z (any angle) composed with a tilt (radians, up to ``tilt``) about x."""
    a = rng.uniform(0, 2 * math.pi)
    b = rng.uniform(-tilt, tilt)
    c, s = math.cos(b), math.sin(b)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return _rot_z(a) @ rx


def _colour(rng: np.random.Generator, sat: float = 0.6, lo: float = 0.25, hi: float = 0.95) -> tuple[float, float, float]:
    import colorsys

    h = rng.uniform(0, 1)
    s = rng.uniform(0.15, sat)
    v = rng.uniform(lo, hi)
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


def _material(rng: np.random.Generator, size: float, textures: tuple[str, ...] = TEXTURES) -> Material:
    tex = str(rng.choice(textures))
    a = _colour(rng)
    b = _colour(rng)
    if tex == "solid":
        grain = float(rng.uniform(0.15, 0.35))
    else:
        grain = float(rng.uniform(0.05, 0.2))
    direction = _unit(rng.normal(size=3))
    return Material(
        texture=tex,
        colour_a=a,
        colour_b=b,
        scale=float(size * rng.uniform(0.15, 0.5)),
        offset=tuple(float(x) for x in rng.uniform(0, 10, size=3)),  # type: ignore[arg-type]
        direction=tuple(float(x) for x in direction),  # type: ignore[arg-type]
        grain=grain,
        grain_scale=float(size * rng.uniform(0.02, 0.06)),
    )


def _quad_from_rotation(center: np.ndarray, R: np.ndarray, hu: float, hv: float, mat: Material) -> Quad:
    return Quad(
        center=tuple(float(x) for x in center),  # type: ignore[arg-type]
        axis_u=tuple(float(x) for x in R[:, 0]),  # type: ignore[arg-type]
        axis_v=tuple(float(x) for x in R[:, 1]),  # type: ignore[arg-type]
        half_u=float(hu),
        half_v=float(hv),
        material=mat,
    )


def _t(v: Any) -> tuple[float, float, float]:
    return tuple(float(x) for x in v)  # type: ignore[return-value]


def _in_ellipse(rng: np.random.Generator, ax: float, ay: float) -> np.ndarray:
    r = math.sqrt(rng.uniform(0, 1))
    a = rng.uniform(0, 2 * math.pi)
    return np.array([r * ax * math.cos(a), r * ay * math.sin(a)])


def _indoor(rng: np.random.Generator) -> Scene:
    lx, ly, lz = rng.uniform(6.0, 10.0), rng.uniform(5.0, 8.0), rng.uniform(2.6, 3.4)
    hx, hy = lx / 2, ly / 2
    prims: list[Primitive] = []
    # Room: floor, ceiling, four walls (quads facing in, textured in world coordinates).
    floor_mat = _material(rng, 2.0, ("checker", "noise", "stripes"))
    prims.append(Quad(_t([0, 0, 0]), (1, 0, 0), (0, 1, 0), hx, hy, floor_mat))
    prims.append(Quad(_t([0, 0, lz]), (1, 0, 0), (0, 1, 0), hx, hy, _material(rng, 2.0, ("solid", "noise"))))
    for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        mat = _material(rng, 2.0)
        if sx:
            prims.append(Quad(_t([sx * hx, 0, lz / 2]), (0, 1, 0), (0, 0, 1), hy, lz / 2, mat))
        else:
            prims.append(Quad(_t([0, sy * hy, lz / 2]), (1, 0, 0), (0, 0, 1), hx, lz / 2, mat))
    # Camera free space: an ellipse at ~0.38 of the room; content inside ~0.22.
    cam_ax, cam_ay = 0.38 * lx, 0.38 * ly
    in_ax, in_ay = 0.22 * lx, 0.22 * ly
    reach = min(cam_ax - in_ax, cam_ay - in_ay) - 0.35  # max object radius (keeps a gap to the path)
    n_obj = int(rng.integers(5, 10))
    for _ in range(n_obj):
        xy = _in_ellipse(rng, in_ax, in_ay)
        kind = rng.choice(["box", "rbox", "sphere", "slant"], p=[0.3, 0.25, 0.25, 0.2])
        size = rng.uniform(0.25, max(0.3, reach))
        mat = _material(rng, size)
        if kind in ("box", "rbox"):
            h = np.array([rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.0), rng.uniform(0.3, 1.2)]) * size
            h[:2] = np.minimum(h[:2], reach / math.sqrt(2))
            on_floor = rng.uniform() < 0.8
            z = h[2] if on_floor else rng.uniform(h[2], lz - h[2] - 0.3)
            R = _rot_z(rng.uniform(0, 2 * math.pi)) if kind == "rbox" else np.eye(3)
            if kind == "rbox" and rng.uniform() < 0.3:
                R = _rand_rotation(rng, 0.5)
                z = max(z, float(np.linalg.norm(h)))
            prims.append(Box(_t([xy[0], xy[1], z]), _t(h), R.tolist(), mat))
        elif kind == "sphere":
            r = min(size * rng.uniform(0.4, 0.8), reach)
            z = r if rng.uniform() < 0.6 else rng.uniform(r, min(lz - r - 0.2, 2.0 + r))
            prims.append(Sphere(_t([xy[0], xy[1], z]), float(r), mat))
        else:  # slanted plane (a leaning board)
            hu, hv = size * rng.uniform(0.6, 1.0), size * rng.uniform(0.4, 0.9)
            R = _rand_rotation(rng, 1.2)
            z = rng.uniform(hv + 0.05, hv + 1.2)
            prims.append(_quad_from_rotation(np.array([xy[0], xy[1], z]), R, hu, hv, mat))
    # Corner furniture and wall panels (outside the camera path).
    for cx, cy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        if rng.uniform() < 0.6:
            h = np.array([rng.uniform(0.2, 0.5), rng.uniform(0.2, 0.5), rng.uniform(0.3, 1.0)])
            prims.append(Box(_t([cx * (hx - h[0] - 0.02), cy * (hy - h[1] - 0.02), h[2]]), _t(h), np.eye(3).tolist(), _material(rng, 0.8)))
    for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        if rng.uniform() < 0.7:
            hu, hv = rng.uniform(0.3, 1.0), rng.uniform(0.25, 0.6)
            zc = rng.uniform(1.0, lz - hv - 0.2)
            s = rng.uniform(-0.3, 0.3)
            if sx:
                prims.append(Quad(_t([sx * (hx - 0.01), s * ly, zc]), (0, 1, 0), (0, 0, 1), hu, hv, _material(rng, 0.6)))
            else:
                prims.append(Quad(_t([s * lx, sy * (hy - 0.01), zc]), (1, 0, 0), (0, 0, 1), hu, hv, _material(rng, 0.6)))
    light = Light(
        kind="point",
        vector=_t([rng.uniform(-0.2, 0.2) * lx, rng.uniform(-0.2, 0.2) * ly, lz - 0.15]),
        colour=_t(np.array([1.0, rng.uniform(0.9, 1.0), rng.uniform(0.8, 1.0)]) * rng.uniform(1.0, 1.3)),
        ambient=float(rng.uniform(0.25, 0.45)),
    )
    hint = {
        "center": [0.0, 0.0],
        "radii": [float(cam_ax), float(cam_ay)],
        "height": float(rng.uniform(1.2, 1.7)),
        "height_wobble": 0.1,
        "target": [0.0, 0.0, float(rng.uniform(0.4, 0.8))],
        "target_wobble": float(0.15 * min(in_ax, in_ay)),
    }
    return Scene(prims, light=light, sky=False, style="indoor", camera_hint=hint, hfov_deg=float(rng.uniform(58, 72)))


def _outdoor(rng: np.random.Generator) -> Scene:
    prims: list[Primitive] = []
    ground_half = float(rng.uniform(180.0, 260.0))
    ground = Material(
        texture=str(rng.choice(["noise", "checker"])),
        colour_a=_colour(rng, 0.5, 0.3, 0.6),
        colour_b=_colour(rng, 0.5, 0.2, 0.5),
        scale=float(rng.uniform(1.5, 4.0)),
        offset=_t(rng.uniform(0, 10, size=3)),
        grain=0.25,
        grain_scale=0.15,
    )
    prims.append(Quad(_t([0, 0, 0]), (1, 0, 0), (0, 1, 0), ground_half, ground_half, ground))
    cam_r = float(rng.uniform(11.0, 17.0))
    in_r = 0.4 * cam_r
    # Central content (inside the orbit).
    for _ in range(int(rng.integers(4, 8))):
        xy = _in_ellipse(rng, in_r, in_r)
        size = rng.uniform(0.6, 2.2)
        mat = _material(rng, size)
        kind = rng.choice(["box", "sphere", "slant"], p=[0.45, 0.3, 0.25])
        if kind == "box":
            h = np.array([rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.5)]) * size
            prims.append(Box(_t([xy[0], xy[1], h[2]]), _t(h), _rot_z(rng.uniform(0, 6.3)).tolist(), mat))
        elif kind == "sphere":
            r = size * rng.uniform(0.5, 0.9)
            prims.append(Sphere(_t([xy[0], xy[1], r * rng.uniform(0.6, 1.0)]), float(r), mat))
        else:
            hu, hv = size, size * rng.uniform(0.5, 0.9)
            R = _rand_rotation(rng, 1.2)
            prims.append(_quad_from_rotation(np.array([xy[0], xy[1], hv + 0.1]), R, hu, hv, mat))
    # Trees (sphere crown on a box trunk) in a ring outside the orbit.
    for _ in range(int(rng.integers(6, 14))):
        r = rng.uniform(cam_r + 6.0, 70.0)
        a = rng.uniform(0, 2 * math.pi)
        c = np.array([r * math.cos(a), r * math.sin(a)])
        crown = rng.uniform(1.2, 3.5)
        trunk_h = rng.uniform(1.0, 3.0)
        leaf = Material("noise", _colour(rng, 0.8, 0.2, 0.5), _colour(rng, 0.8, 0.15, 0.4), crown * 0.3, _t(rng.uniform(0, 9, 3)), (1, 0, 0), 0.3, 0.1)
        bark = Material("stripes", (0.35, 0.25, 0.15), (0.25, 0.17, 0.1), 0.15, (0, 0, 0), (0, 0, 1), 0.2, 0.05)
        prims.append(Box(_t([c[0], c[1], trunk_h / 2]), _t([0.2, 0.2, trunk_h / 2]), np.eye(3).tolist(), bark))
        prims.append(Sphere(_t([c[0], c[1], trunk_h + crown * 0.8]), float(crown), leaf))
    # Buildings: tall boxes 30 .. 170 m away (some beyond 80 m).
    for k in range(int(rng.integers(10, 18))):
        r = rng.uniform(35.0, 170.0) if k % 2 else rng.uniform(85.0, 170.0)
        a = rng.uniform(0, 2 * math.pi)
        h = np.array([rng.uniform(4, 15), rng.uniform(4, 15), rng.uniform(4, 30)])
        mat = Material(
            texture=str(rng.choice(["checker", "stripes", "noise"])),
            colour_a=_colour(rng, 0.4, 0.4, 0.9),
            colour_b=_colour(rng, 0.4, 0.15, 0.5),
            scale=float(rng.uniform(1.5, 4.0)),
            offset=_t(rng.uniform(0, 10, 3)),
            direction=(0.0, 0.0, 1.0),
            grain=0.1,
            grain_scale=0.5,
        )
        prims.append(Box(_t([r * math.cos(a), r * math.sin(a), h[2]]), _t(h), _rot_z(rng.uniform(0, 6.3)).tolist(), mat))
    elev = rng.uniform(0.5, 1.2)
    az = rng.uniform(0, 2 * math.pi)
    light = Light(
        kind="directional",
        vector=_t([math.cos(az) * math.cos(elev), math.sin(az) * math.cos(elev), math.sin(elev)]),
        colour=_t(np.array([1.0, rng.uniform(0.92, 1.0), rng.uniform(0.8, 0.95)]) * rng.uniform(1.1, 1.4)),
        ambient=float(rng.uniform(0.3, 0.45)),
    )
    hint = {
        "center": [0.0, 0.0],
        "radii": [cam_r, cam_r * float(rng.uniform(0.8, 1.0))],
        "height": float(rng.uniform(1.6, 3.5)),
        "height_wobble": 0.3,
        "target": [0.0, 0.0, float(rng.uniform(1.0, 3.0))],
        "target_wobble": float(0.2 * in_r),
    }
    return Scene(prims, light=light, sky=True, style="outdoor", camera_hint=hint, hfov_deg=float(rng.uniform(60, 80)))


def make_scene(seed: int, style: Style = "indoor") -> Scene:
    """A random scene, the same for the same ``(seed, style)``.

    ``indoor``: a closed room (~6-10 m) with boxes, rotated boxes, spheres and
    slanted boards, wall panels; depth ~0.5-12 m, no sky.
    ``outdoor``: a ground plane (~200 m), central objects, trees, buildings
    up to ~170 m away (content beyond 80 m), sky where nothing is hit (depth 0).
    """
    from depthcli.errors import DepthcliError

    if style not in STYLES:
        raise DepthcliError(f"unknown scene style '{style}'", f"use one of {', '.join(STYLES)}")
    rng = np.random.default_rng([int(seed), STYLES.index(style)])
    scene = _indoor(rng) if style == "indoor" else _outdoor(rng)
    scene.seed = int(seed)
    return scene


def load_scene(dataset_root: Path) -> Scene:
    """The scene of a dataset written by ``depthcli synth`` (``dataset_root/scene.json``)."""
    return Scene.load(Path(dataset_root) / "scene.json")
