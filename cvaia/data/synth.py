"""Procedural street scenes in the miniscapes format: a stand-in for the course data set.

Every image is a small random 3-D street built from a handful of primitives (ground plane,
axis-aligned boxes, axis-aligned cylinders, ellipsoids) and rendered by vectorised ray casting
in numpy from a pinhole camera about 1.5 m above the road:

- **semseg** is the Cityscapes train id (0..18) of the first surface each pixel's ray hits
  (255 for a few "void" street objects such as bins);
- **depth** is the z-distance along the camera axis in metres; sky and anything outside
  4..300 m is 0 (invalid), as in the course data;
- **rgb** is shaded by a random sun (Lambert, with shadows of large objects) and sky light,
  with per-object colours drawn from overlapping palettes (colour alone does not give the
  class), procedural texture, haze, exposure / white-balance jitter and sensor noise; it is
  stored as JPEG.

Image ``i`` of a split depends only on ``(seed, split, i)``, so sets are deterministic,
can be extended, and are rendered in parallel. :func:`generate` writes a whole set with the
course writers of :mod:`cvaia.data.encoding`; :func:`render_scene` renders one scene.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from .classes import IGNORE_INDEX, NUM_CLASSES, class_names
from .encoding import DEPTH_MAX, DEPTH_MIN

#: Bumped whenever the pictures change; part of the identity of a generated set.
GENERATOR_VERSION = 1
GENERATOR_NAME = "cvaia.data.synth"
#: Split name → the id mixed into each image's random seed.
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
#: Default set size: enough to learn from, built in a few minutes on two cores.
DEFAULT_COUNTS = {"train": 2000, "val": 250, "test": 250}
META_NAME = "meta.json"

# Cityscapes train ids.
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)
VOID = IGNORE_INDEX

# Primitive kinds. Every primitive is given by its axis-aligned bounding box; cylinders and
# ellipsoids are the ones inscribed in it (a cylinder's axis is x, y or z).
GROUND, BOX, CYL_X, CYL_Y, CYL_Z, ELLIPSOID = range(6)

# Materials (how a surface is textured).
(M_PLAIN, M_FACADE, M_CABIN, M_FOLIAGE, M_PAVING, M_FENCE, M_WALL, M_SIGN, M_TLIGHT,
 M_BANDED, M_DARK) = range(11)

_NEAR = 0.05  # metres: nearest hit along the camera axis


class SynthError(RuntimeError):
    """A synthetic set cannot be written as asked (e.g. it would overwrite another set)."""


# --------------------------------------------------------------------------------------------
# Colours and texture
# --------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> tuple:
    """HSV (all in 0..1) → sRGB triple."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


# Typical sRGB colours per kind of thing; every draw is jittered and, with some probability,
# replaced by an arbitrary colour, so the palettes of different classes overlap.
_PALETTES = {
    "asphalt": [(0.32, 0.32, 0.33), (0.25, 0.25, 0.27), (0.40, 0.39, 0.38), (0.30, 0.29, 0.31)],
    "paving": [(0.55, 0.53, 0.50), (0.62, 0.60, 0.58), (0.55, 0.45, 0.42), (0.45, 0.45, 0.47)],
    "facade": [(0.75, 0.70, 0.62), (0.60, 0.58, 0.55), (0.62, 0.38, 0.30), (0.85, 0.83, 0.78),
               (0.50, 0.47, 0.45), (0.70, 0.60, 0.45), (0.55, 0.60, 0.65), (0.40, 0.36, 0.33)],
    "wall": [(0.60, 0.58, 0.55), (0.55, 0.40, 0.32), (0.70, 0.68, 0.63), (0.45, 0.45, 0.45)],
    "fence": [(0.30, 0.32, 0.30), (0.55, 0.45, 0.32), (0.65, 0.65, 0.65), (0.20, 0.30, 0.22)],
    "metal": [(0.45, 0.46, 0.47), (0.30, 0.32, 0.33), (0.60, 0.60, 0.58), (0.22, 0.28, 0.24)],
    "leaf": [(0.22, 0.35, 0.15), (0.30, 0.42, 0.18), (0.18, 0.28, 0.14), (0.38, 0.45, 0.22),
             (0.45, 0.40, 0.18)],
    "grass": [(0.35, 0.45, 0.20), (0.42, 0.48, 0.25), (0.45, 0.40, 0.28), (0.30, 0.40, 0.18)],
    "bark": [(0.30, 0.24, 0.18), (0.38, 0.32, 0.26), (0.25, 0.22, 0.20)],
    "car": [(0.85, 0.85, 0.85), (0.10, 0.10, 0.11), (0.45, 0.46, 0.48), (0.65, 0.66, 0.68),
            (0.55, 0.08, 0.08), (0.10, 0.18, 0.40), (0.25, 0.25, 0.28), (0.75, 0.72, 0.65)],
    "truck": [(0.90, 0.90, 0.88), (0.20, 0.30, 0.55), (0.70, 0.20, 0.15), (0.85, 0.75, 0.20),
              (0.40, 0.42, 0.40)],
    "bus": [(0.85, 0.80, 0.25), (0.80, 0.20, 0.15), (0.90, 0.90, 0.90), (0.20, 0.45, 0.70),
            (0.30, 0.60, 0.35)],
    "cloth": [(0.10, 0.10, 0.12), (0.25, 0.25, 0.30), (0.15, 0.20, 0.40), (0.55, 0.50, 0.45),
              (0.60, 0.15, 0.15), (0.80, 0.80, 0.78), (0.35, 0.30, 0.20), (0.20, 0.35, 0.25)],
    "skin": [(0.85, 0.65, 0.50), (0.65, 0.45, 0.32), (0.45, 0.30, 0.22), (0.90, 0.75, 0.62)],
    "sign": [(0.75, 0.10, 0.10), (0.10, 0.25, 0.65), (0.90, 0.75, 0.10), (0.90, 0.90, 0.90),
             (0.10, 0.45, 0.25)],
}


def _colour(rng: np.random.Generator, palette: str, p_any: float = 0.15,
            jitter: float = 0.08) -> np.ndarray:
    """A linear-light albedo from ``palette`` (or, with probability ``p_any``, any colour)."""
    r = rng.random(6).tolist()
    if r[0] < p_any:
        c = _hsv(r[1], 0.7 * r[2], 0.15 + 0.75 * r[3])
    else:
        options = _PALETTES[palette]
        gain = 0.85 + 0.3 * r[5]
        c = [v * (1 + jitter * (2 * e - 1)) * gain
             for v, e in zip(options[int(r[1] * len(options))], r[2:5], strict=True)]
    return np.array([min(max(v, 0.02), 0.98) ** 2 for v in c], np.float32)


@lru_cache(maxsize=1)
def _noise_texture(size: int = 256) -> np.ndarray:
    """A fixed tileable value-noise texture (size × size, float32, mean 0, std ≈ 0.5)."""
    rng = np.random.default_rng(20240611)
    tex = np.zeros((size, size), dtype=np.float64)
    amp, total = 1.0, 0.0
    for cells in (4, 8, 16, 32, 64, 128, 256):
        grid = rng.standard_normal((cells, cells))
        # Bilinear upsampling with wrap-around keeps the texture tileable.
        pos = np.arange(size) * cells / size
        i0 = np.floor(pos).astype(int)
        fr = pos - i0
        i1 = (i0 + 1) % cells
        rows = grid[i0] * (1 - fr)[:, None] + grid[i1] * fr[:, None]
        layer = rows[:, i0] * (1 - fr)[None, :] + rows[:, i1] * fr[None, :]
        tex += amp * layer
        total += amp * amp
        amp *= 0.7
    tex /= math.sqrt(total)
    tex = 0.5 * (tex - tex.mean()) / tex.std()
    return tex.astype(np.float32)


def _sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bilinear lookup of the noise texture at texel coordinates (a, b), wrapping around."""
    tex = _noise_texture()
    n = tex.shape[0]
    a0 = np.floor(a)
    b0 = np.floor(b)
    fa = (a - a0).astype(np.float32)
    fb = (b - b0).astype(np.float32)
    i0 = a0.astype(np.int64) & (n - 1)
    j0 = b0.astype(np.int64) & (n - 1)
    i1 = (i0 + 1) & (n - 1)
    j1 = (j0 + 1) & (n - 1)
    top = tex[i0, j0] * (1 - fb) + tex[i0, j1] * fb
    bot = tex[i1, j0] * (1 - fb) + tex[i1, j1] * fb
    return top * (1 - fa) + bot * fa


def _hash01(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A cheap per-cell pseudo-random number in 0..1 for integer cell coordinates (a, b)."""
    x = (a.astype(np.int64) * 73856093) ^ (b.astype(np.int64) * 19349663)
    x = (x ^ (x >> 13)) * 1274126177
    return ((x >> 8) & 0xFFFF).astype(np.float32) / 65535.0


# --------------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------------


class _Scene:
    """Primitives of one scene as parallel lists (turned into arrays by :meth:`arrays`)."""

    def __init__(self):
        self.kind, self.lo, self.hi, self.cls, self.col, self.mat, self.par = ([] for _ in range(7))
        # The ground plane is primitive 0.
        self._add(GROUND, (0, 0, 0), (0, 0, 0), ROAD, np.zeros(3), M_PLAIN, ())

    def _add(self, kind, lo, hi, cls, col, mat, par):
        self.kind.append(kind)
        self.lo.append(lo)
        self.hi.append(hi)
        self.cls.append(cls)
        self.col.append(col)
        self.mat.append(mat)
        self.par.append(tuple(par) + (0.0,) * (4 - len(par)))

    def box(self, lo, hi, cls, col, mat=M_PLAIN, par=()):
        """Axis-aligned box with corners ``lo`` and ``hi`` (x, y, z)."""
        self._add(BOX, lo, hi, cls, col, mat, par)

    def cylinder(self, axis, centre, radius, length, cls, col, mat=M_PLAIN, par=()):
        """Cylinder along ``axis`` (0 x, 1 y, 2 z) centred at ``centre``."""
        half = [radius, radius, radius]
        half[axis] = length / 2
        lo = tuple(c - h for c, h in zip(centre, half, strict=True))
        hi = tuple(c + h for c, h in zip(centre, half, strict=True))
        self._add((CYL_X, CYL_Y, CYL_Z)[axis], lo, hi, cls, col, mat, par)

    def pole(self, x, z, radius, y0, y1, cls, col, mat=M_PLAIN, par=()):
        """Vertical cylinder from height ``y0`` to ``y1``."""
        self._add(CYL_Y, (x - radius, y0, z - radius), (x + radius, y1, z + radius), cls, col,
                  mat, par)

    def ellipsoid(self, centre, radii, cls, col, mat=M_PLAIN, par=()):
        """Axis-aligned ellipsoid."""
        lo = tuple(c - r for c, r in zip(centre, radii, strict=True))
        hi = tuple(c + r for c, r in zip(centre, radii, strict=True))
        self._add(ELLIPSOID, lo, hi, cls, col, mat, par)

    def arrays(self):
        return (np.array(self.kind, np.int64), np.array(self.lo, np.float64),
                np.array(self.hi, np.float64), np.array(self.cls, np.int64),
                np.array(self.col, np.float32), np.array(self.mat, np.int64),
                np.array(self.par, np.float32))


def _person(s: _Scene, rng, x, z, y0=0.0, height=None, riding=False):
    """A pedestrian (or the rider on a two-wheeler when ``riding``) standing at (x, y0, z)."""
    h = height if height is not None else (rng.uniform(1.55, 1.95) if rng.random() > 0.1
                                           else rng.uniform(1.0, 1.4))
    cls = RIDER if riding else PERSON
    trousers, shirt = _colour(rng, "cloth", 0.3), _colour(rng, "cloth", 0.3)
    skin = _colour(rng, "skin", 0.0)
    k = h / 1.75
    if riding:  # seated: legs bent forward, torso leaning over the handlebar
        for side in (-1, 1):
            s.box((x + side * 0.17 - 0.07, y0 + 0.35, z - 0.2), (x + side * 0.17 + 0.07,
                  y0 + 0.95, z + 0.1), cls, trousers)
        s.ellipsoid((x, y0 + 1.25, z + 0.1), (0.21, 0.33, 0.2), cls, shirt)
        s.ellipsoid((x, y0 + 1.65, z + 0.25), (0.12, 0.13, 0.13), cls,
                    _colour(rng, "cloth", 0.5) if rng.random() < 0.6 else skin)
        return
    stride = rng.uniform(-0.18, 0.18)
    leg = 0.47 * h
    for side, dz in ((-1, stride), (1, -stride)):
        s.pole(x + side * 0.09 * k, z + dz, 0.075 * k, y0, y0 + leg + 0.05, cls, trousers)
    s.ellipsoid((x, y0 + 0.66 * h, z), (0.22 * k, 0.2 * h, 0.14 * k), cls, shirt)
    for side in (-1, 1):
        s.pole(x + side * 0.25 * k, z - 0.5 * dz, 0.05 * k, y0 + 0.42 * h, y0 + 0.8 * h, cls,
               shirt)
    s.ellipsoid((x, y0 + 0.93 * h, z), (0.1 * k, 0.12 * k, 0.11 * k), cls, skin)


def _two_wheeler(s: _Scene, rng, x, z, y0=0.0, motor=False, rider=True):
    """A bicycle or motorcycle heading along z, optionally with its rider."""
    cls = MOTORCYCLE if motor else BICYCLE
    r = 0.31 if motor else 0.34
    frame = _colour(rng, "car" if motor else "cloth", 0.4)
    tyre = np.full(3, 0.02, np.float32)
    for dz in (-0.62, 0.62):
        s.cylinder(0, (x, y0 + r, z + dz), r, 0.12 if motor else 0.05, cls, tyre, M_DARK)
    if motor:
        s.ellipsoid((x, y0 + 0.62, z), (0.22, 0.27, 0.65), cls, frame)
    else:
        s.box((x - 0.03, y0 + 0.55, z - 0.45), (x + 0.03, y0 + 0.82, z + 0.45), cls, frame)
        s.box((x - 0.25, y0 + 0.95, z + 0.45), (x + 0.25, y0 + 1.0, z + 0.5), cls, frame)
    if rider:
        _person(s, rng, x, z - 0.1, y0=y0, riding=True)


def _vehicle(s: _Scene, rng, kind, x, z, along_z=True, facing=1) -> float:
    """A car, truck, bus or tram whose nearer end is at ``z`` (or ``x`` when crossing).

    ``along_z``: heading along the road (else along the side street); ``facing`` = 1 when it
    drives away from the camera, -1 when it comes towards it. Returns its length.
    """
    if kind == "car":
        length = rng.uniform(3.8, 4.9)
    elif kind == "truck":
        cab_len, cargo_len = rng.uniform(1.8, 2.4), rng.uniform(4, 9)
        length = cab_len + cargo_len + 0.2
    elif kind == "bus":
        length = rng.uniform(10.5, 13.0)
    elif kind == "tram":
        length = rng.uniform(22, 32)
    else:  # pragma: no cover - internal
        raise ValueError(kind)

    def along(a, b):  # local (0 = rear, length = front) → world offsets from the near end
        if facing < 0:
            a, b = length - b, length - a
        return a, b

    def box(x0, x1, y0, y1, z0, z1, cls, col, mat=M_PLAIN, par=()):
        z0, z1 = along(z0, z1)
        if along_z:
            s.box((x + x0, y0, z + z0), (x + x1, y1, z + z1), cls, col, mat, par)
        else:
            s.box((x + z0, y0, z + x0), (x + z1, y1, z + x1), cls, col, mat, par)

    def wheels(width, r, zs, cls):
        tyre = np.full(3, 0.02, np.float32)
        for dz in zs:
            dz = along(dz, dz)[0]
            if along_z:
                s.cylinder(0, (x, r, z + dz), r, width, cls, tyre, M_DARK)
            else:
                s.cylinder(2, (x + dz, r, z), r, width, cls, tyre, M_DARK)

    if kind == "car":
        width = rng.uniform(1.65, 1.9)
        body_top = rng.uniform(0.85, 1.05)
        roof = body_top + rng.uniform(0.42, 0.6)
        col = _colour(rng, "car", 0.2)
        hw = width / 2
        box(-hw, hw, 0.28, body_top, 0, length, CAR, col)
        cab0 = rng.uniform(0.7, 1.3)
        cab1 = length - rng.uniform(1.0, 1.6)
        box(-hw + 0.08, hw - 0.08, body_top, roof, cab0, cab1, CAR, col, M_CABIN, (roof,))
        wheels(width - 0.1, 0.32, (0.8, length - 0.8), CAR)
    elif kind == "truck":
        width, height = rng.uniform(2.3, 2.55), rng.uniform(2.8, 3.8)
        hw = width / 2
        box(-hw, hw, 0.5, rng.uniform(2.5, 3.0), length - cab_len, length, TRUCK,
            _colour(rng, "truck", 0.2), M_BANDED, (0.5, 1.5, 2.3, 0.0))
        top = height if rng.random() < 0.8 else 1.2  # box body or open flatbed
        box(-hw, hw, 0.7, top, 0, cargo_len, TRUCK, _colour(rng, "truck", 0.3))
        wheels(width - 0.1, 0.48, (1.0, cargo_len - 1.3, length - 0.9), TRUCK)
    elif kind == "bus":
        width, height = 2.55, rng.uniform(3.0, 3.3)
        box(-width / 2, width / 2, 0.3, height, 0, length, BUS, _colour(rng, "bus", 0.2),
            M_BANDED, (0.3, 1.15, 2.6, 1.3))
        wheels(width - 0.1, 0.5, (2.5, length - 3.0), BUS)
    else:  # tram
        width, height = 2.6, rng.uniform(3.3, 3.7)
        box(-width / 2, width / 2, 0.4, height, 0, length, TRAIN, _colour(rng, "bus", 0.3),
            M_BANDED, (0.4, 1.3, 2.7, 1.6))
        box(-0.3, 0.3, height, height + 0.5, length / 2 - 1, length / 2 + 1, TRAIN,
            _colour(rng, "metal", 0.0))
    return length


def _tree(s: _Scene, rng, x, z, y0=0.0):
    trunk_h = rng.uniform(1.8, 4.0)
    s.pole(x, z, rng.uniform(0.1, 0.28), y0, y0 + trunk_h + 0.5, VEGETATION,
           _colour(rng, "bark", 0.0))
    leaf = _colour(rng, "leaf", 0.1)
    rh, rv = rng.uniform(1.4, 3.6), rng.uniform(1.5, 4.0)
    s.ellipsoid((x, y0 + trunk_h + rv * 0.8, z), (rh, rv, rh * rng.uniform(0.8, 1.2)),
                VEGETATION, leaf, M_FOLIAGE, (rng.uniform(0, 256),))
    if rng.random() < 0.5:
        s.ellipsoid((x + rng.uniform(-1, 1), y0 + trunk_h + rv * rng.uniform(0.8, 1.6),
                     z + rng.uniform(-1, 1)), (rh * 0.7, rv * 0.7, rh * 0.7), VEGETATION,
                    leaf * rng.uniform(0.8, 1.2), M_FOLIAGE, (rng.uniform(0, 256),))


def _street_pole(s: _Scene, rng, side, x, z, kind, rw):
    """Street furniture at the kerb: lamp post, sign post or traffic-light post."""
    metal = _colour(rng, "metal", 0.1)
    if kind == "lamp":
        top = rng.uniform(6.0, 9.0)
        s.pole(x, z, rng.uniform(0.08, 0.13), 0.0, top, POLE, metal)
        arm = rng.uniform(1.2, 2.5)
        x0, x1 = sorted((x, x - side * arm))
        s.box((x0, top - 0.08, z - 0.05), (x1, top, z + 0.05), POLE, metal)
        s.box((min(x0, x1) if side > 0 else x1 - 0.6, top - 0.2, z - 0.2),
              ((x0 + 0.6) if side > 0 else x1, top - 0.05, z + 0.2), POLE, metal)
    elif kind == "sign":
        top = rng.uniform(2.3, 3.4)
        s.pole(x, z, rng.uniform(0.035, 0.06), 0.0, top, POLE, metal)
        size = rng.uniform(0.5, 0.85)
        face = _colour(rng, "sign", 0.15)
        n_signs = 1 if rng.random() < 0.7 else 2
        y = top
        for _ in range(n_signs):
            if rng.random() < 0.5:
                s.box((x - size / 2, y - size, z - 0.06), (x + size / 2, y, z - 0.03), SIGN,
                      face, M_SIGN, (rng.random(),))
            else:
                s.cylinder(2, (x, y - size / 2, z - 0.045), size / 2, 0.03, SIGN, face, M_SIGN,
                           (rng.random(),))
            y -= size + 0.08
            face = _colour(rng, "sign", 0.15)
    else:  # traffic light, possibly on an overhead arm
        overhead = kind == "overhead"
        top = rng.uniform(5.5, 7.0) if overhead else rng.uniform(3.0, 4.2)
        s.pole(x, z, rng.uniform(0.07, 0.12), 0.0, top, POLE, metal)
        housing = _colour(rng, "metal", 0.05) * rng.uniform(0.3, 1.0)
        spots = [x]
        if overhead:
            reach = rng.uniform(0.4, 0.8) * (abs(x) + rw) / 2
            x0, x1 = sorted((x, x - side * reach))
            s.box((x0, top - 0.15, z - 0.07), (x1, top, z + 0.07), POLE, metal)
            spots = [x - side * reach * f for f in (0.55, 0.95)]
        for sx in spots:  # hanging under the arm, or beside the post facing the road
            y1 = top - 0.2 if overhead else top
            hx = sx if overhead else sx - side * 0.22
            s.box((hx - 0.16, y1 - 0.9, z - 0.35), (hx + 0.16, y1, z - 0.1), LIGHT, housing,
                  M_TLIGHT, (float(rng.integers(3)),))
        if not overhead and rng.random() < 0.5:  # pedestrian light lower down
            s.box((x - 0.13, 2.0, z - 0.3), (x + 0.13, 2.55, z - 0.1), LIGHT, housing, M_TLIGHT,
                  (float(rng.integers(2)) * 2,))
        if rng.random() < 0.4:
            size = rng.uniform(0.45, 0.7)
            s.box((x - size / 2, 2.3 - size, z - 0.1), (x + size / 2, 2.3, z - 0.07), SIGN,
                  _colour(rng, "sign", 0.1), M_SIGN, (rng.random(),))


def _build_scene(rng: np.random.Generator) -> tuple[_Scene, dict]:
    """Lay out one random street. Returns the primitives and the scene's global settings."""
    s = _Scene()
    env: dict = {}
    rw = rng.uniform(3.2, 8.5)  # road half width
    lanes = max(1, int(round(rw / 3.2)))
    lane_w = rw / lanes
    env.update(rw=rw, lanes=lanes, lane_w=lane_w, solid_centre=rng.random() < 0.4)
    # Parking in the outermost lane of a wide road; the camera drives in a right-hand lane.
    parking = {sd: lanes >= 2 and rng.random() < 0.55 for sd in (-1, 1)}
    lane = rng.integers(lanes - 1 if parking[1] else lanes)
    cam_x = lane_w * (lane + 0.5) + rng.uniform(-0.4, 0.4)
    env["cam"] = np.array([cam_x, rng.uniform(1.3, 1.75), 0.0])

    # Side street crossing ahead.
    cross = None
    if rng.random() < 0.45:
        zc, ws = rng.uniform(14, 70), rng.uniform(8, 16)
        sides = (-1, 1) if rng.random() < 0.6 else ((-1,) if rng.random() < 0.5 else (1,))
        cross = (zc, ws, sides)
    env["cross"] = cross
    env["asphalt"] = _colour(rng, "asphalt", 0.05, 0.05)
    env["tram_lane"] = None
    if rng.random() < 0.15:
        env["tram_lane"] = lane_w * 0.5 * (1 if rng.random() < 0.5 else -1)

    z_far = rng.uniform(70, 230)  # where the street's buildings end
    env["sides"] = {}
    for side in (-1, 1):
        grass = rng.uniform(1.0, 3.5) if rng.random() < 0.3 else 0.0
        sw = rng.uniform(1.8, 5.0)
        kerb = rng.uniform(0.1, 0.2)
        inner, outer = rw + grass, rw + grass + sw
        setback = 0.0 if rng.random() < 0.6 else rng.uniform(1.0, 8.0)
        park = rng.random() < 0.2
        beyond = TERRAIN if (park or rng.random() < 0.6) else SIDEWALK
        env["sides"][side] = dict(inner=inner, outer=outer, grass=grass, beyond=beyond,
                                  paving=_colour(rng, "paving", 0.1, 0.05),
                                  grass_col=_colour(rng, "grass", 0.05, 0.05))
        paving = env["sides"][side]["paving"]
        gap = None
        if cross is not None and side in cross[2]:
            gap = (cross[0] - cross[1] / 2, cross[0] + cross[1] / 2)

        def xs(a, b, side=side):
            return (a, b) if side > 0 else (-b, -a)

        # Sidewalk (with its kerb) in one or two segments.
        segments = [(-10.0, 400.0)] if gap is None else [(-10.0, gap[0]), (gap[1], 400.0)]
        for z0, z1 in segments:
            x0, x1 = xs(inner, outer + setback + 30)
            s.box((x0, 0, z0), (x1, kerb, z1), SIDEWALK, paving, M_PAVING, (kerb,))
        if gap is not None:  # corners of the side street
            x0, x1 = xs(inner, inner + 80)
            s.box((x0, 0, gap[0] - sw), (x1, kerb, gap[0]), SIDEWALK, paving, M_PAVING, (kerb,))
            s.box((x0, 0, gap[1]), (x1, kerb, gap[1] + sw), SIDEWALK, paving, M_PAVING, (kerb,))
            # a building across the side street closes the view
            x0, x1 = xs(outer + rng.uniform(25, 70), outer + 95)
            s.box((x0, 0, gap[0] - 10), (x1, rng.uniform(8, 30), gap[1] + 10), BUILDING,
                  _colour(rng, "facade", 0.2), M_FACADE, _facade_params(rng))

        def in_gap(z0, z1, gap=gap, sw=sw):
            return gap is not None and z1 > gap[0] - sw - 1 and z0 < gap[1] + sw + 1

        # Buildings (or a park) along the street.
        z = -12.0
        front = outer + setback
        while z < z_far:
            width = rng.uniform(6, 26)
            if in_gap(z, z + width):
                z = gap[1] + sw + 1
                continue
            if park or rng.random() < 0.25:  # an open plot: vegetation, wall or fence
                width = rng.uniform(4, 14) if not park else width
                _plot(s, rng, side, front, z, z + width, kerb)
            else:
                x_face = front + rng.uniform(0, 1.5)
                height = rng.uniform(5, 28) if rng.random() > 0.1 else rng.uniform(28, 55)
                x0, x1 = xs(x_face, x_face + rng.uniform(10, 25))
                s.box((x0, 0, z), (x1, height, z + width), BUILDING,
                      _colour(rng, "facade", 0.2), M_FACADE, _facade_params(rng))
                if rng.random() < 0.4:  # taller block behind
                    x0, x1 = xs(x_face + 18, x_face + 40)
                    s.box((x0, 0, z), (x1, height + rng.uniform(5, 25), z + width * 1.3),
                          BUILDING, _colour(rng, "facade", 0.2), M_FACADE, _facade_params(rng))
            z += width

        # Street furniture at the kerb, trees, people, bins.
        z = rng.uniform(2, 14)
        while z < min(z_far, 140):
            if not in_gap(z - 1, z + 1):
                kind = rng.choice(["lamp", "sign", "light", "tree"], p=[0.3, 0.25, 0.1, 0.35])
                x = side * (inner + 0.35)
                if kind == "tree":
                    xt = side * (rw + grass / 2 if grass > 0 else inner + rng.uniform(0.8, 1.4))
                    _tree(s, rng, xt, z, 0.0 if grass > 0 else kerb)
                else:
                    _street_pole(s, rng, side, x, z, kind, rw)
            z += rng.uniform(8, 28)
        for _ in range(rng.poisson(2.2)):
            z = rng.uniform(1.5, 55)
            if in_gap(z - 1, z + 1):
                continue
            x = side * rng.uniform(inner + 0.4, outer - 0.3)
            if rng.random() < 0.25:  # a small group
                for _ in range(rng.integers(2, 4)):
                    _person(s, rng, x + rng.uniform(-0.8, 0.8), z + rng.uniform(-1.2, 1.2), kerb)
            else:
                _person(s, rng, x, z, kerb)
        if rng.random() < 0.25:  # parked bicycles
            z = rng.uniform(4, 40)
            if not in_gap(z - 2, z + 2):
                for k in range(rng.integers(1, 4)):
                    _two_wheeler(s, rng, side * (outer - 0.5), z + 0.8 * k, kerb,
                                 motor=rng.random() < 0.2, rider=False)
        for _ in range(rng.poisson(0.6)):  # bins and boxes: void
            z = rng.uniform(2, 40)
            if not in_gap(z - 1, z + 1):
                s.pole(side * (inner + rng.uniform(0.5, 1.0)), z, rng.uniform(0.25, 0.35), kerb,
                       kerb + rng.uniform(0.8, 1.1), VOID, _colour(rng, "metal", 0.5))

        # Parked cars along this kerb.
        if parking[side]:
            z, z_end = rng.uniform(1, 10), rng.uniform(40, 110)
            while z < z_end:
                kind = "car" if rng.random() < 0.96 else "truck"
                if not in_gap(z - 1, z + 12):
                    z += _vehicle(s, rng, kind, side * (rw - 1.05), z)
                z += rng.uniform(0.8, 8.0)

    # Traffic in the lanes (both directions); z is the near end of the next vehicle.
    for k in range(lanes):
        for sgn in (-1, 1):
            if parking[sgn] and k == lanes - 1:
                continue
            lane_x = sgn * lane_w * (k + 0.5)
            z = rng.uniform(6, 30) if abs(lane_x - cam_x) < 1.5 else rng.uniform(-2, 25)
            while z < 160:
                u = rng.random()
                facing = 1 if sgn > 0 else -1
                tram_here = env["tram_lane"] is not None and abs(lane_x - env["tram_lane"]) < 0.1
                if tram_here and u < 0.3:
                    z += _vehicle(s, rng, "tram", lane_x, z, facing=facing)
                elif u < 0.8:
                    z += _vehicle(s, rng, "car", lane_x + rng.uniform(-0.3, 0.3), z,
                                  facing=facing)
                elif u < 0.85:
                    z += _vehicle(s, rng, "truck", lane_x, z, facing=facing)
                elif u < 0.89:
                    z += _vehicle(s, rng, "bus", lane_x, z, facing=facing)
                elif u < 0.94:
                    _two_wheeler(s, rng, lane_x + rng.uniform(-0.8, 0.8), z + 1, motor=True)
                    z += 2
                z += rng.uniform(4, 35)
    if rng.random() < 0.35:  # cyclists near the kerb
        for _ in range(rng.integers(1, 3)):
            side = 1 if rng.random() < 0.7 else -1
            _two_wheeler(s, rng, side * (rw - rng.uniform(0.6, 1.1)), rng.uniform(5, 45),
                         motor=rng.random() < 0.25)
    if cross is not None:
        zc, ws, sides = cross
        for _ in range(rng.poisson(1.2)):
            sgn = sides[rng.integers(len(sides))]
            x = sgn * rng.uniform(rw + 2, rw + 40)
            _vehicle(s, rng, "car" if rng.random() < 0.85 else "bus", x,
                     zc + rng.choice([-1, 1]) * ws / 4, along_z=False, facing=-sgn)
        for _ in range(rng.poisson(1.0)):  # pedestrians on the crossing
            _person(s, rng, rng.uniform(-rw, rw), zc - ws / 2 - rng.uniform(1.0, 3.5))
        for side in sides:  # traffic lights at the corners
            if rng.random() < 0.8:
                x = side * (env["sides"][side]["inner"] + 0.4)
                _street_pole(s, rng, side, x, zc - ws / 2 - 1.0,
                             "overhead" if rng.random() < 0.4 else "light", rw)
    if env["tram_lane"] is not None and rng.random() < 0.15:  # a tram coming the other way
        _vehicle(s, rng, "tram", -env["tram_lane"], rng.uniform(25, 90), facing=-1)

    # What closes the street: more buildings, a tree line, or open land.
    u = rng.random()
    zb = z_far + rng.uniform(10, 120)
    if u < 0.55:
        x = -rng.uniform(60, 150)
        while x < 150:
            w = rng.uniform(15, 60)
            d = rng.uniform(10, 30)
            s.box((x, 0, zb), (x + w, rng.uniform(8, 45), zb + d), BUILDING,
                  _colour(rng, "facade", 0.2), M_FACADE, _facade_params(rng))
            x += w
    elif u < 0.85:
        x = -rng.uniform(60, 150)
        while x < 150:
            r = rng.uniform(6, 15)
            s.ellipsoid((x, rng.uniform(0, 6), zb + rng.uniform(0, 20)),
                        (r, rng.uniform(7, 16), rng.uniform(4, 8)), VEGETATION,
                        _colour(rng, "leaf", 0.05), M_FOLIAGE, (rng.uniform(0, 256),))
            x += r * rng.uniform(1.0, 1.8)
    env["z_far"] = z_far
    return s, env


def _facade_params(rng) -> tuple:
    """(window spacing across, storey height, ground-floor height, window darkness)."""
    return (rng.uniform(2.2, 4.0), rng.uniform(2.8, 3.6), rng.uniform(0.0, 4.0),
            rng.uniform(0.15, 0.6))


def _plot(s: _Scene, rng, side, front, z0, z1, kerb):
    """An open plot between buildings: trees, a hedge, a wall or a fence along the sidewalk."""
    sgn = 1 if side > 0 else -1

    def xs(a, b):
        return (a, b) if sgn > 0 else (-b, -a)

    u = rng.random()
    if u < 0.3:
        x0, x1 = xs(front, front + rng.uniform(0.2, 0.5))
        s.box((x0, 0, z0), (x1, rng.uniform(0.8, 3.0), z1), WALL, _colour(rng, "wall", 0.2),
              M_WALL, (rng.random(),))
    elif u < 0.55:
        x0, x1 = xs(front, front + 0.06)
        s.box((x0, 0, z0), (x1, rng.uniform(1.0, 2.2), z1), FENCE, _colour(rng, "fence", 0.2),
              M_FENCE, (rng.uniform(0.1, 0.3),))
    elif u < 0.75:
        x0, x1 = xs(front, front + rng.uniform(0.6, 1.6))
        s.box((x0, 0, z0), (x1, rng.uniform(0.7, 1.8), z1), VEGETATION,
              _colour(rng, "leaf", 0.05), M_FOLIAGE, (rng.uniform(0, 256),))
    for _ in range(rng.integers(0, 3)):
        _tree(s, rng, sgn * (front + rng.uniform(2, 8)), rng.uniform(z0, z1))


# --------------------------------------------------------------------------------------------
# Camera and ray casting
# --------------------------------------------------------------------------------------------


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera → world rotation (x right, y up, z forward)."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return r_yaw @ r_pitch @ r_roll


class _Camera:
    """Pinhole camera: per-pixel world ray directions scaled to unit camera-z component,
    so the ray parameter of a hit *is* its depth (z-distance)."""

    def __init__(self, height, width, origin, rot, focal):
        self.h, self.w, self.o, self.rot, self.f = height, width, origin, rot, focal
        u = (np.arange(width, dtype=np.float64) + 0.5 - width / 2) / focal
        v = -(np.arange(height, dtype=np.float64) + 0.5 - height / 2) / focal
        dirs = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), -1)
        d = (dirs @ rot.T).astype(np.float32)
        self.d = [np.ascontiguousarray(d[..., k]) for k in range(3)]
        with np.errstate(divide="ignore"):
            self.inv = [np.float32(1.0) / c for c in self.d]
        dx, dy, dz = self.d
        # squared length of the direction across each axis (for cylinders)
        self.a_perp = [dy * dy + dz * dz, dx * dx + dz * dz, dx * dx + dy * dy]

    def rects(self, lo, hi):
        """Pixel rectangles (r0, r1, c0, c1) covering each box (clipped by the near plane),
        the box's nearest camera z and whether any of it is in view."""
        corners = np.stack([np.stack([(lo, hi)[(k >> a) & 1][:, a] for a in range(3)], -1)
                            for k in range(8)], 1)  # (P, 8, 3)
        cam = (corners - self.o) @ self.rot  # world → camera
        z = cam[..., 2]
        front = z >= _NEAR
        # where an edge crosses the near plane, its crossing point bounds the projection too
        a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]
        za, zb = a[..., 2], b[..., 2]
        crossing = (za >= _NEAR) != (zb >= _NEAR)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(crossing, (_NEAR - za) / (zb - za), 0.0)
        cut = a + s[..., None] * (b - a)
        pts = np.concatenate([cam, cut], 1)
        ok = np.concatenate([front, crossing], 1)
        zs = np.maximum(pts[..., 2], _NEAR)
        u = self.f * pts[..., 0] / zs + self.w / 2 - 0.5
        v = -self.f * pts[..., 1] / zs + self.h / 2 - 0.5
        big = 1e9
        c0 = np.floor(np.clip(np.where(ok, u, big).min(1), -1, self.w + 1)).astype(np.int64) - 1
        c1 = np.ceil(np.clip(np.where(ok, u, -big).max(1), -2, self.w + 1)).astype(np.int64) + 2
        r0 = np.floor(np.clip(np.where(ok, v, big).min(1), -1, self.h + 1)).astype(np.int64) - 1
        r1 = np.ceil(np.clip(np.where(ok, v, -big).max(1), -2, self.h + 1)).astype(np.int64) + 2
        c0, r0 = np.clip(c0, 0, self.w), np.clip(r0, 0, self.h)
        c1, r1 = np.clip(c1, 0, self.w), np.clip(r1, 0, self.h)
        visible = front.any(1) & (c1 > c0) & (r1 > r0)
        return np.stack([r0, r1, c0, c1], 1), np.maximum(z.min(1), _NEAR), visible


#: The 12 edges of a box as pairs of corner indices (corner k has bit a set ⇔ hi on axis a).
_EDGES = np.array([(k, k | (1 << a)) for k in range(8) for a in range(3) if not k & (1 << a)])


def _hit_box(o, lo, hi, d, inv, zb):
    """Where rays enter an axis-aligned box in front of ``zb``: (mask, ray parameter).

    ``o``, ``lo`` and ``hi`` are plain float triples (so float32 arrays stay float32);
    ``d`` and ``inv`` are the ray directions and their inverses over the rectangle.
    """
    tn = tf = None
    for a in range(3):
        i = inv[a]
        if o[a] < lo[a]:
            n, f = (lo[a] - o[a]) * i, (hi[a] - o[a]) * i
        elif o[a] > hi[a]:
            n, f = (hi[a] - o[a]) * i, (lo[a] - o[a]) * i
        else:
            n = None
            f = np.maximum((lo[a] - o[a]) * i, (hi[a] - o[a]) * i)
        if n is not None:
            tn = n if tn is None else np.maximum(tn, n)
        tf = f if tf is None else np.minimum(tf, f)
    if tn is None:  # camera inside the box: ignore it
        return None, None
    return (tn <= tf) & (tn > _NEAR) & (tn < zb), tn


def _hit_cylinder(o, lo, hi, axis, d, inv, a_perp, zb):
    """Entry into a capped cylinder along ``axis`` inscribed in the box lo..hi (see _hit_box)."""
    p, q = [k for k in range(3) if k != axis]
    r = (hi[p] - lo[p]) / 2
    op = o[p] - (hi[p] + lo[p]) / 2
    oq = o[q] - (hi[q] + lo[q]) / 2
    c = op * op + oq * oq - r * r
    if c <= 0:  # camera inside the infinite cylinder: ignore it
        return None, None
    dp, dq, da = d[p], d[q], d[axis]
    b = op * dp + oq * dq
    disc = b * b - a_perp * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-b - np.sqrt(disc)) / a_perp
    h = o[axis] + t * da
    m = (disc >= 0) & (t > _NEAR) & (h >= lo[axis]) & (h <= hi[axis]) & (t < zb)
    cap = hi[axis] if o[axis] > hi[axis] else (lo[axis] if o[axis] < lo[axis] else None)
    if cap is not None:
        tc = (cap - o[axis]) * inv[axis]
        pp = op + tc * dp
        pq = oq + tc * dq
        mc = (tc > _NEAR) & (pp * pp + pq * pq <= r * r) & (tc < zb)
        use_cap = mc & ~(m & (t < tc))
        t = np.where(use_cap, tc, t)
        m |= mc
    return m, t


def _hit_ellipsoid(o, lo, hi, d, zb):
    """Entry into the ellipsoid inscribed in the box lo..hi (see _hit_box)."""
    c = [(a + b) / 2 for a, b in zip(lo, hi, strict=True)]
    s = [2.0 / (b - a) for a, b in zip(lo, hi, strict=True)]
    oo = [(o[k] - c[k]) * s[k] for k in range(3)]
    cc = oo[0] * oo[0] + oo[1] * oo[1] + oo[2] * oo[2] - 1.0
    if cc <= 0:
        return None, None
    dx, dy, dz = d[0] * s[0], d[1] * s[1], d[2] * s[2]
    a = dx * dx + dy * dy + dz * dz
    b = oo[0] * dx + oo[1] * dy + oo[2] * dz
    disc = b * b - a * cc
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return (disc >= 0) & (t > _NEAR) & (t < zb), t


def _cast(cam: _Camera, kind, lo, hi):
    """First hit per pixel: (t = depth in metres, inf for no hit; primitive index, 0 = ground)."""
    dy = cam.d[1]
    with np.errstate(divide="ignore"):
        zbuf = np.where(dy < 0, -cam.o[1] / np.minimum(dy, -1e-12), np.inf).astype(np.float32)
    ibuf = np.zeros(zbuf.shape, np.int32)
    rects, znear, visible = cam.rects(lo[1:], hi[1:])
    order = np.argsort(znear, kind="stable")
    o = [float(v) for v in cam.o]
    los, his, kinds = lo.tolist(), hi.tolist(), kind.tolist()
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for j in order[visible[order]].tolist():
            k = j + 1
            r0, r1, c0, c1 = rects[j].tolist()
            zb = zbuf[r0:r1, c0:c1]
            if znear[j] >= zb.max():
                continue  # entirely hidden behind what is already drawn
            d = [c[r0:r1, c0:c1] for c in cam.d]
            kd = kinds[k]
            if kd == BOX:
                m, t = _hit_box(o, los[k], his[k], d, [c[r0:r1, c0:c1] for c in cam.inv], zb)
            elif kd == ELLIPSOID:
                m, t = _hit_ellipsoid(o, los[k], his[k], d, zb)
            else:
                axis = kd - CYL_X
                m, t = _hit_cylinder(o, los[k], his[k], axis, d,
                                     [c[r0:r1, c0:c1] for c in cam.inv],
                                     cam.a_perp[axis][r0:r1, c0:c1], zb)
            if m is None:
                continue
            zb[m] = t[m]
            ibuf[r0:r1, c0:c1][m] = k
    return zbuf, ibuf


# --------------------------------------------------------------------------------------------
# Shading
# --------------------------------------------------------------------------------------------


def _normals(kind, lo, hi, p):
    """Surface normals at hit points ``p`` (N, 3) of primitives with the given boxes."""
    c = (lo + hi) * 0.5
    half = np.maximum((hi - lo) * 0.5, 1e-6)
    q = (p - c) / half
    n = np.zeros_like(p)
    aq = np.abs(q)
    # boxes: the axis whose face is nearest
    ax = np.argmax(aq, 1)
    rows = np.arange(len(p))
    n[rows, ax] = np.sign(q[rows, ax])
    # cylinders: radial, or the cap
    for axis, kd in enumerate((CYL_X, CYL_Y, CYL_Z)):
        m = kind == kd
        if m.any():
            qq = q[m].copy()
            axial = qq[:, axis].copy()
            qq[:, axis] = 0
            radial = np.sqrt((qq * qq).sum(1))
            cap = np.abs(axial) > radial
            qq[cap] = 0
            qq[cap, axis] = np.sign(axial[cap])
            n[m] = qq
    m = kind == ELLIPSOID
    if m.any():
        n[m] = q[m] / half[m]
    n[kind == GROUND] = (0, 1, 0)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-6)
    return n.astype(np.float32)


def _face_uv(p, n, lo):
    """Coordinates across (u) and up (v) a vertical face; on horizontal faces (x, z)."""
    along_x = np.abs(n[:, 0]) > 0.7
    up = np.abs(n[:, 1]) > 0.7
    u = np.where(along_x, p[:, 2], p[:, 0])
    v = np.where(up, p[:, 2], p[:, 1] - lo[:, 1])
    return u, v, up


def _ground(p, env, tex_off):
    """Class and albedo of ground-plane hits (road, terrain or sidewalk-level ground)."""
    x, z = p[:, 0], p[:, 2]
    rw = env["rw"]
    road = np.abs(x) < rw
    if env["cross"] is not None:
        zc, ws, sides = env["cross"]
        band = np.abs(z - zc) < ws / 2
        side_ok = np.zeros_like(road)
        for sgn in sides:
            side_ok |= (x * sgn) > 0
        road |= band & side_ok
    cls = np.full(len(p), TERRAIN, np.int64)
    col = np.empty((len(p), 3), np.float32)
    sides = env["sides"]
    for sgn in (-1, 1):
        m = (x * sgn > 0) & ~road
        sd = sides[sgn]
        beyond = m & (np.abs(x) > sd["outer"] - 0.01)
        cls[beyond] = sd["beyond"]
        grass = m & ~beyond
        if sd["beyond"] == SIDEWALK:
            col[beyond] = sd["paving"]
        else:
            col[beyond] = sd["grass_col"]
        col[grass] = sd["grass_col"]
    cls[road] = ROAD
    col[road] = env["asphalt"]
    # texture: coarse patches and fine grain
    n1 = _sample(x * 0.7 + tex_off[0], z * 0.7 + tex_off[1])
    n2 = _sample(x * 25.0, z * 25.0)
    grassy = cls == TERRAIN
    shade = 1.0 + np.where(grassy, 0.35 * n1 + 0.45 * n2, 0.2 * n1 + 0.15 * n2)
    col *= np.clip(shade, 0.3, 2.0)[:, None]
    # lane markings, crossing stripes and tram rails
    paint = np.zeros(len(p), bool)
    lane_w = env["lane_w"]
    xr = np.abs(x)
    for k in range(env["lanes"] + 1):
        xl = k * lane_w
        if k == env["lanes"]:
            xl = rw - 0.35
        width = 0.08 if k else 0.07
        on = road & (np.abs(xr - xl) < width)
        if k == 0:
            on &= np.mod(z, 12.0) < (12.0 if env["solid_centre"] else 6.0)
        elif k < env["lanes"]:
            on &= np.mod(z, 9.0) < 3.0
        paint |= on
    if env["cross"] is not None:
        zc, ws, _ = env["cross"]
        zw = zc - ws / 2 - 2.5
        paint |= road & (np.abs(z - zw) < 1.8) & (np.mod(x, 1.0) < 0.5) & (np.abs(x) < rw - 0.3)
        paint |= road & (np.abs(z - (zw - 2.3)) < 0.2) & (x > 0) & (x < rw)
    col[paint] = 0.75 ** 2 * (1 + 0.1 * n2[paint, None])
    if env["tram_lane"] is not None:
        tl = env["tram_lane"]
        rails = road & (np.abs(np.abs(x - tl) - 0.72) < 0.05)
        col[rails] = 0.06
    return cls, col


def _textures(mat, col, par, p, n, lo, hi, pid):
    """Apply the procedural materials in place on albedos ``col``; returns a shading factor."""
    shade = np.ones(len(p), np.float32)
    u, v, up = _face_uv(p, n, lo)
    # generic grain on everything
    g = _sample(u * 6.0 + pid * 37.0, v * 6.0)
    shade *= 1.0 + 0.12 * g
    m = mat == M_FACADE
    if m.any():
        su, sv, gf, dark = par[m, 0], par[m, 1], par[m, 2], par[m, 3]
        uu, vv = u[m] / su, (v[m] - gf) / sv
        fu, fv = uu - np.floor(uu), vv - np.floor(vv)
        top = (hi[m, 1] - lo[m, 1]) - 1.0
        win = (fu > 0.25) & (fu < 0.75) & (fv > 0.3) & (fv < 0.8) & (vv > 0) & \
              (v[m] < top) & ~up[m]
        h = _hash01(np.floor(uu) + pid[m] * 131, np.floor(vv))
        glass = (0.05 + 0.25 * h[:, None] * np.array([0.8, 0.9, 1.0], np.float32)) * \
            dark[:, None] * 2.0
        c = col[m]
        c[win] = glass[win]
        # ground floor shop fronts
        shop = (v[m] < gf - 0.6) & (v[m] > 0.4) & ~up[m] & (np.mod(u[m], 6.0) < 4.5)
        c[shop] = 0.04 + 0.1 * h[shop, None]
        col[m] = c
    m = mat == M_CABIN
    if m.any():
        roof = par[m, 0]
        side = ~up[m] & (p[m, 1] < roof - 0.07)
        u_rel = np.where(np.abs(n[m, 0]) > 0.7, p[m, 2] - (lo[m, 2] + hi[m, 2]) / 2,
                         p[m, 0] - (lo[m, 0] + hi[m, 0]) / 2)
        half = np.where(np.abs(n[m, 0]) > 0.7, (hi[m, 2] - lo[m, 2]) / 2,
                        (hi[m, 0] - lo[m, 0]) / 2)
        side &= np.abs(u_rel) < half - 0.1
        c = col[m]
        c[side] = np.array([0.03, 0.035, 0.045], np.float32)
        col[m] = c
    m = mat == M_BANDED  # bus, tram and truck-cab windows
    if m.any():
        ya, yb, pitch = par[m, 1], par[m, 2], par[m, 3]
        y = p[m, 1]
        band = (y > ya) & (y < yb) & ~up[m]
        pillars = np.where(pitch > 0, np.mod(u[m], np.maximum(pitch, 0.1)) < 0.15, False)
        c = col[m]
        c[band & ~pillars] = np.array([0.03, 0.035, 0.045], np.float32)
        col[m] = c
    m = mat == M_FOLIAGE
    if m.any():
        off = par[m, 0]
        t = _sample(p[m, 0] * 3.0 + p[m, 2] * 2.0 + off, p[m, 1] * 3.0 + off) + \
            0.7 * _sample(p[m, 0] * 11.0 + off, p[m, 1] * 11.0 + p[m, 2] * 5.0)
        shade[m] *= np.clip(0.8 + 0.9 * t, 0.15, 1.8)
        col[m] *= np.clip(1 + 0.4 * t, 0.5, 1.6)[:, None] ** np.array([1.2, 1.0, 1.4],
                                                                       np.float32)
    m = mat == M_PAVING
    if m.any():
        c = col[m]
        tile = up[m] & ((np.mod(p[m, 0], 0.8) < 0.04) | (np.mod(p[m, 2], 0.8) < 0.04))
        c[tile] *= 0.7
        side = ~up[m]
        c[side] = 0.6 ** 2
        shade[m] *= 1 + 0.2 * _sample(p[m, 0] * 13, p[m, 2] * 13)
        col[m] = c
    m = mat == M_FENCE
    if m.any():
        bars = np.mod(u[m], par[m, 0]) < 0.3 * par[m, 0]
        rail = np.abs(v[m] - (hi[m, 1] - lo[m, 1]) * 0.8) < 0.05
        shade[m] *= np.where(bars | rail, 1.0, 0.35)
    m = mat == M_WALL
    if m.any():
        brick = par[m, 0] > 0.5
        row = np.floor(v[m] / 0.25)
        joint = (np.mod(v[m], 0.25) < 0.03) | (np.mod(u[m] + 0.25 * np.mod(row, 2), 0.5) < 0.03)
        shade[m] *= np.where(brick & joint & ~up[m], 0.75, 1.0)
    m = mat == M_SIGN
    if m.any():
        front = n[m, 2] < -0.7
        c = col[m]
        cx = (lo[m, 0] + hi[m, 0]) / 2
        cy = (lo[m, 1] + hi[m, 1]) / 2
        rx = (hi[m, 0] - lo[m, 0]) / 2
        rel = np.maximum(np.abs(p[m, 0] - cx), np.abs(p[m, 1] - cy)) / rx
        inner = front & (rel < 0.55) & (par[m, 0] > 0.4)
        c[inner] = 0.85 ** 2
        c[~front] = 0.5 ** 2
        col[m] = c
    m = mat == M_TLIGHT
    if m.any():
        front = n[m, 2] < -0.7
        cx = (lo[m, 0] + hi[m, 0]) / 2
        h = hi[m, 1] - lo[m, 1]
        rel = (hi[m, 1] - p[m, 1]) / h * 3.0
        slot = np.floor(rel)
        fr = rel - slot
        dx = (p[m, 0] - cx) / (hi[m, 0] - lo[m, 0]) * 2
        lamp = front & ((fr - 0.5) ** 2 + (dx * 0.9) ** 2 < 0.12)
        lit = lamp & (slot == par[m, 0])
        c = col[m]
        lamp_cols = np.array([[1.0, 0.1, 0.05], [1.0, 0.6, 0.05], [0.1, 1.0, 0.4]], np.float32)
        c[lamp] = 0.04
        idx = np.clip(slot[lit].astype(np.int64), 0, 2)
        c[lit] = lamp_cols[idx] * 3.0
        col[m] = c
    m = mat == M_DARK
    if m.any():
        shade[m] *= 0.7
    return shade


_CASTERS = (BUILDING, WALL, VEGETATION, CAR, TRUCK, BUS, TRAIN)


def _sunlit(cam, p, pid, facing, sun, kind, lo, hi, cls):
    """1 where the ray from hit point ``p`` towards the sun is free, 0 in shadow.

    ``p`` (H*W, 3) hit points (NaN where nothing was hit), ``pid`` their primitives and
    ``facing`` where the surface faces the sun. Only large objects (boxes and ellipsoids of
    buildings, walls, trees and vehicles) cast shadows; each one is tested only on the pixels
    where its shadow volume (the caster swept away from the sun down to the ground) projects.
    """
    lit = np.ones(len(p), np.float32)
    sx, sy, sz = (float(v) for v in sun)
    cand = np.flatnonzero(((kind == BOX) | (kind == ELLIPSOID)) & np.isin(cls, _CASTERS))
    if not len(cand) or sy <= 0.05:
        return lit
    reach = hi[cand, 1] / sy
    vol_lo = np.stack([np.minimum(lo[cand, 0], lo[cand, 0] - reach * sx), np.zeros(len(cand)),
                       np.minimum(lo[cand, 2], lo[cand, 2] - reach * sz)], 1)
    vol_hi = np.stack([np.maximum(hi[cand, 0], hi[cand, 0] - reach * sx), hi[cand, 1],
                       np.maximum(hi[cand, 2], hi[cand, 2] - reach * sz)], 1)
    rects, _, visible = cam.rects(vol_lo, vol_hi)
    shape = (cam.h, cam.w)
    px, py, pz = (p[:, a].reshape(shape) for a in range(3))
    pid2, facing2, lit2 = pid.reshape(shape), facing.reshape(shape), lit.reshape(shape)
    inv = [1.0 / v if abs(v) > 1e-6 else 1e6 * (1 if v >= 0 else -1) for v in (sx, sy, sz)]
    vlo, vhi = vol_lo.tolist(), vol_hi.tolist()
    for j in np.flatnonzero(visible).tolist():
        k = int(cand[j])
        r0, r1, c0, c1 = rects[j].tolist()
        x, y, z = px[r0:r1, c0:c1], py[r0:r1, c0:c1], pz[r0:r1, c0:c1]
        m = facing2[r0:r1, c0:c1] & (pid2[r0:r1, c0:c1] != k) & (y <= vhi[j][1]) & \
            (x >= vlo[j][0]) & (x <= vhi[j][0]) & (z >= vlo[j][2]) & (z <= vhi[j][2])
        if not m.any():
            continue
        q = [x[m], y[m], z[m]]
        a, b = lo[k].tolist(), hi[k].tolist()
        if kind[k] == BOX:
            tn, tf = -np.inf, np.inf
            for ax in range(3):
                t0, t1 = (a[ax] - q[ax]) * inv[ax], (b[ax] - q[ax]) * inv[ax]
                tn = np.maximum(tn, np.minimum(t0, t1))
                tf = np.minimum(tf, np.maximum(t0, t1))
            shadow = (tn <= tf) & (tf > 1e-3)
        else:
            c = [(u + v) / 2 for u, v in zip(a, b, strict=True)]
            r = [2.0 / (v - u) for u, v in zip(a, b, strict=True)]
            o = [(q[ax] - c[ax]) * r[ax] for ax in range(3)]
            d = [sx * r[0], sy * r[1], sz * r[2]]
            aa = d[0] ** 2 + d[1] ** 2 + d[2] ** 2
            bb = o[0] * d[0] + o[1] * d[1] + o[2] * d[2]
            cc = o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - 1
            disc = bb * bb - aa * cc
            shadow = (disc >= 0) & (-bb + np.sqrt(np.maximum(disc, 0)) > 0)
        rows, cols = np.nonzero(m)
        lit2[r0 + rows[shadow], c0 + cols[shadow]] = 0.0
    return lit


def render_scene(height: int, width: int, rng: np.random.Generator):
    """Render one random street scene.

    Returns ``(rgb, semseg, depth)``: uint8 (H, W, 3), uint8 (H, W) Cityscapes train ids
    (255 = void), float32 (H, W) z-distance in metres with 0 for sky and for anything outside
    4..300 m. Everything drawn depends only on ``rng``.
    """
    if height < 8 or width < 8:
        raise ValueError(f"image size must be at least 8x8, got {height}x{width}")
    scene, env = _build_scene(rng)
    kind, lo, hi, cls_tab, col_tab, mat_tab, par_tab = scene.arrays()

    hfov = math.radians(rng.uniform(68, 85))
    focal = width / 2 / math.tan(hfov / 2)
    rot = _rotation(math.radians(rng.normal(0, 4.0)), math.radians(rng.uniform(-3.0, 2.0)),
                    math.radians(rng.normal(0, 1.2)))
    cam = _Camera(height, width, env["cam"], rot, focal)

    # Lighting and atmosphere.
    overcast = rng.random() < 0.3
    sun_el = math.radians(rng.uniform(12, 65))
    sun_az = rng.uniform(0, 2 * math.pi)
    sun = np.array([math.cos(sun_el) * math.sin(sun_az), math.sin(sun_el),
                    math.cos(sun_el) * math.cos(sun_az)], np.float32)
    warm = rng.uniform(0, 0.25)
    sun_col = np.array([1.0, 1.0 - 0.3 * warm, 1.0 - 0.6 * warm], np.float32)
    sun_col *= rng.uniform(0.2, 0.5) if overcast else rng.uniform(0.9, 1.4)
    zenith = (np.array([0.35, 0.5, 0.8]) * rng.uniform(0.8, 1.1, 3)) ** 2
    horizon = (np.array([0.75, 0.82, 0.9]) * rng.uniform(0.9, 1.05, 3)) ** 2
    if overcast:
        grey = rng.uniform(0.6, 0.85)
        zenith = horizon = np.full(3, grey ** 2)
    zenith, horizon = zenith.astype(np.float32), horizon.astype(np.float32)
    ambient = (horizon * 0.6 + zenith * 0.4) * (rng.uniform(0.5, 0.8) if not overcast else 1.0)
    visibility = rng.uniform(150, 700) if not overcast else rng.uniform(80, 350)
    tex_off = rng.uniform(0, 256, 2)

    t, pid = _cast(cam, kind, lo, hi)
    t = t.reshape(-1)
    pid = pid.reshape(-1)
    hit = np.isfinite(t)
    idx = np.flatnonzero(hit)
    d = np.stack([c.reshape(-1) for c in cam.d], 1)
    th = t[idx]
    dh = d[idx]
    p = (cam.o.astype(np.float32) + th[:, None] * dh).astype(np.float32)
    ph = pid[idx]
    k_h = kind[ph]
    lo_h = lo[ph].astype(np.float32)
    hi_h = hi[ph].astype(np.float32)
    n = _normals(k_h, lo_h, hi_h, p)

    cls_h = cls_tab[ph]
    col = col_tab[ph].copy()
    g = k_h == GROUND
    if g.any():
        gcls, gcol = _ground(p[g], env, tex_off)
        cls_h[g] = gcls
        col[g] = gcol
    shade = _textures(mat_tab[ph], col, par_tab[ph], p, n, lo_h, hi_h, ph.astype(np.float32))

    # Lambert sun (where not in the shadow of a big object) + hemispherical sky light.
    lam = np.maximum(n @ sun, 0.0)
    if not overcast:
        p_img = np.full((height * width, 3), np.nan, np.float32)
        p_img[idx] = p
        pid_img = np.zeros(height * width, np.int64)
        pid_img[idx] = ph
        facing = np.zeros(height * width, bool)
        facing[idx] = lam > 0
        lam *= _sunlit(cam, p_img, pid_img, facing, sun, kind, lo, hi, cls_tab)[idx]
    sky_light = 0.65 + 0.35 * n[:, 1]
    light = ambient[None, :] * sky_light[:, None] + sun_col[None, :] * lam[:, None]
    rgb_h = col * shade[:, None] * light
    # Haze over the Euclidean distance.
    dist = th * np.sqrt((dh * dh).sum(1))
    fog = np.exp(-dist / visibility)[:, None]
    rgb_h = rgb_h * fog + horizon[None, :] * (1 - fog)

    # Sky: gradient, clouds and a sun glow.
    rgb = np.empty((height * width, 3), np.float32)
    rgb[idx] = rgb_h
    sky_idx = np.flatnonzero(~hit)
    if len(sky_idx):
        ds = d[sky_idx]
        ds = ds / np.linalg.norm(ds, axis=1, keepdims=True)
        el = np.clip(ds[:, 1], 0, 1)
        s = np.sqrt(el)[:, None]
        sky = horizon * (1 - s) + zenith * s
        cover = rng.uniform(0.0, 1.0)
        with np.errstate(divide="ignore"):
            k = 1.0 / np.maximum(ds[:, 1], 0.02)
        cloud = _sample(ds[:, 0] * k * 20 + tex_off[0], ds[:, 2] * k * 20 + tex_off[1])
        cloud = np.clip((cloud + cover - 0.6) * 2.5, 0, 1)[:, None]
        sky = sky * (1 - cloud) + (horizon * 1.1) * cloud
        glow = np.maximum(ds @ sun, 0) ** 64
        sky = sky + sun_col * 0.5 * glow[:, None]
        rgb[sky_idx] = sky

    # Camera: exposure, white balance, gamma, vignetting, noise.
    rgb *= rng.uniform(0.8, 1.3) * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    rgb = np.sqrt(np.maximum(rgb, 0))
    rgb = rgb.reshape(height, width, 3)
    yy = (np.arange(height, dtype=np.float32) - height / 2) / height
    xx = (np.arange(width, dtype=np.float32) - width / 2) / width
    rgb *= (1 - rng.uniform(0.1, 0.4) * (yy[:, None] ** 2 + xx[None, :] ** 2))[..., None]
    grain = rng.uniform(0.5, 3.5) * rng.standard_normal((height, width, 1), dtype=np.float32)
    rgb = rgb * 255 + grain + 1.2 * rng.standard_normal((height, width, 3), dtype=np.float32)
    rgb = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)

    # Labels and depth.
    sem = np.full(height * width, SKY, np.uint8)
    sem[idx] = cls_h
    depth = np.zeros(height * width, np.float32)
    valid = (th >= DEPTH_MIN) & (th <= DEPTH_MAX)
    depth[idx[valid]] = th[valid]
    return rgb, sem.reshape(height, width), depth.reshape(height, width)


def sample_figure(n: int = 4, height: int = 128, width: int = 256, seed: int = 0,
                  split: str = "train"):
    """A matplotlib Figure of ``n`` rows (rgb | semseg in Cityscapes colours | depth)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from .classes import colorize

    fig, axes = plt.subplots(n, 3, figsize=(9.6, 0.9 + 1.6 * n), squeeze=False,
                             layout="constrained")
    cmap = plt.get_cmap("magma_r").copy()
    cmap.set_bad((0.82, 0.82, 0.82))
    image = None
    for r in range(n):
        rgb, sem, depth = render_image(seed, split, r, height, width)
        axes[r, 0].imshow(rgb)
        axes[r, 1].imshow(colorize(sem))
        image = axes[r, 2].imshow(np.ma.masked_equal(depth, 0), cmap=cmap,
                                  norm=LogNorm(DEPTH_MIN, DEPTH_MAX))
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ("rgb", "semseg (train ids)", "depth (m, grey = invalid)"), strict=True):
        ax.set_title(title, fontsize=10)
    bar = fig.colorbar(image, ax=axes[-1, 2], orientation="horizontal", fraction=0.08,
                       aspect=25)
    ticks = [4, 10, 30, 100, 300]
    bar.set_ticks(ticks)
    bar.set_ticklabels([str(t) for t in ticks])
    bar.ax.tick_params(labelsize=8)
    fig.suptitle(f"python -m cvaia synth: {height}x{width}, seed {seed}, {split} 0..{n - 1}",
                 fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# Writing a data set
# --------------------------------------------------------------------------------------------

_FILE_RE = re.compile(r"^(\d+)\.(jpg|png)$")
_KINDS = (("rgb", "jpg"), ("semseg", "png"), ("depth", "png"))


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of image ``index`` of ``split``: depends on nothing else."""
    return np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])


def render_image(seed: int, split: str, index: int, height: int = 128, width: int = 256):
    """Render image ``index`` of ``split`` exactly as :func:`generate` writes it."""
    return render_scene(height, width, image_rng(seed, split, index))


def _write_one(job) -> tuple[str, np.ndarray]:
    """Render one image and write its three files (via a scratch folder, then renamed)."""
    from .encoding import write_sample

    root, scratch, seed, split, index, height, width = job
    rgb, sem, depth = render_image(seed, split, index, height, width)
    write_sample(root, split, index, rgb, sem, depth, scratch)
    return split, np.bincount(sem.reshape(-1), minlength=256)


def _read_hist(root: Path, split: str, index: int) -> np.ndarray:
    from PIL import Image

    with Image.open(root / split / "semseg" / f"{index}.png") as img:
        ids = np.asarray(img)
    return np.bincount(ids.reshape(-1), minlength=256)


def _existing_indices(root: Path, split: str) -> set[int]:
    """Indices of ``split`` whose rgb, semseg and depth files all exist."""
    found = None
    for kind, ext in _KINDS:
        folder = root / split / kind
        names = os.listdir(folder) if folder.is_dir() else []
        idx = {int(m.group(1)) for m in map(_FILE_RE.match, names) if m and m.group(2) == ext}
        found = idx if found is None else found & idx
    return found or set()


def _read_meta(root: Path) -> dict | None:
    path = root / META_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SynthError(f"{path}: unreadable meta.json ({exc}); remove the folder or choose "
                         f"another --out") from exc


def _write_meta(root: Path, meta: dict) -> None:
    tmp = root / (META_NAME + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, root / META_NAME)


def _remove_generated(root: Path, keep: dict[str, int] | None = None) -> None:
    """Delete generated image files (those with index ≥ ``keep[split]``; all if ``keep`` is None)."""
    for split in SPLIT_IDS:
        for kind, ext in _KINDS:
            folder = root / split / kind
            if not folder.is_dir():
                continue
            for name in os.listdir(folder):
                m = _FILE_RE.match(name)
                if m and m.group(2) == ext and (keep is None or int(m.group(1)) >= keep[split]):
                    (folder / name).unlink()


def _frequencies(hist: np.ndarray) -> dict:
    total = max(int(hist.sum()), 1)
    names = class_names()
    out = {names[c]: round(float(hist[c]) / total, 6) for c in range(NUM_CLASSES)}
    out["ignore"] = round(float(hist[IGNORE_INDEX]) / total, 6)
    return out


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
    return int(value)


def generate(root=None, height: int = 128, width: int = 256,
             n_train: int = DEFAULT_COUNTS["train"], n_val: int = DEFAULT_COUNTS["val"],
             n_test: int = DEFAULT_COUNTS["test"], seed: int = 0, workers: int | None = None,
             force: bool = False, progress: bool = False, report: dict | None = None) -> Path:
    """Write a synthetic set in the miniscapes layout and return its root.

    Files: ``root/{train,val,test}/{rgb,semseg,depth}/<i>.{jpg|png}`` (rgb JPEG, semseg palette
    PNG, depth disparity PNG with policy "invalidate"; the test split is labelled too) and
    ``root/meta.json`` (generator version, seed, size, per-split counts, class pixel
    frequencies).

    Re-running with the same settings only renders what is missing (cheap when complete);
    asking for more images extends the set. A folder holding a set made with other settings
    (seed, size, generator version, or more images than asked) is refused unless ``force``,
    which deletes the generated images first. A non-empty folder without ``meta.json`` is never
    touched. ``workers``: processes (None = all cores, 1 = in this process). If ``report`` is
    a dict, it receives ``rendered`` (images written now), ``seconds`` and ``workers``.
    """
    from .. import paths

    root = Path(root).expanduser().resolve() if root is not None else paths.synthetic_root()
    height, width = _check_int("height", height, 8), _check_int("width", width, 8)
    counts = {"train": _check_int("n_train", n_train, 0), "val": _check_int("n_val", n_val, 0),
              "test": _check_int("n_test", n_test, 0)}
    seed = _check_int("seed", seed, 0)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
    workers = _check_int("workers", workers, 1)

    settings = {"generator": GENERATOR_NAME, "version": GENERATOR_VERSION, "seed": seed,
                "height": height, "width": width}
    if root.exists() and not root.is_dir():
        raise SynthError(f"{root}: exists and is not a folder")
    meta = _read_meta(root) if root.is_dir() else None
    if root.is_dir() and meta is None and any(root.iterdir()):
        raise SynthError(f"{root}: folder is not empty and has no meta.json, so it is not a "
                         f"synthetic set; choose another --out (nothing was changed)")
    if meta is not None and meta.get("generator") != GENERATOR_NAME:
        raise SynthError(f"{root}: meta.json was not written by {GENERATOR_NAME}, so this is not "
                         f"a synthetic set; choose another --out (nothing was changed)")
    if meta is not None:
        old = {k: meta.get(k) for k in settings}
        old_counts = meta.get("counts", {})
        shrink = [s for s in SPLIT_IDS if int(old_counts.get(s, 0)) > counts[s]]
        if old != settings or shrink:
            what = [f"{k} {old[k]!r} → {settings[k]!r}" for k in settings if old[k] != settings[k]]
            what += [f"{s} count {old_counts[s]} → {counts[s]}" for s in shrink]
            if not force:
                raise SynthError(f"{root}: holds a synthetic set made with other settings "
                                 f"({', '.join(what)}); pass --force (force=True) to replace it, "
                                 f"or choose another --out")
            _remove_generated(root, None if old != settings else counts)
            if old != settings:
                meta = None

    for split in SPLIT_IDS:
        for kind, _ in _KINDS:
            (root / split / kind).mkdir(parents=True, exist_ok=True)
    existing = {s: _existing_indices(root, s) for s in SPLIT_IDS}
    todo = [(s, i) for s in SPLIT_IDS for i in range(counts[s]) if i not in existing[s]]
    if report is not None:
        report.update(rendered=len(todo), seconds=0.0, workers=workers)
    if not todo and meta is not None and meta.get("complete") and \
            all(int(meta["counts"].get(s, -1)) == counts[s] for s in SPLIT_IDS):
        return root  # already complete: nothing to do

    new_meta = dict(settings, counts=counts, complete=False, class_names=list(class_names()))
    _write_meta(root, new_meta)  # marks the folder as ours before any image is written

    hist = {s: np.zeros(256, np.int64) for s in SPLIT_IDS}
    scratch = root / ".partial"  # files are written here, then renamed into place
    scratch.mkdir(exist_ok=True)
    for leftover in scratch.iterdir():  # from an interrupted run
        if leftover.is_file():
            leftover.unlink()
    jobs = [(str(root), str(scratch), seed, s, i, height, width) for s, i in todo]
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"synth → {root.name}", unit="img")
    if workers == 1 or len(jobs) <= 1:
        results = map(_write_one, jobs)
        pool = None
    else:
        import multiprocessing as mp

        from .classes import palette

        palette()  # warm the class table once, before forking
        pool = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None).Pool(
            min(workers, len(jobs)))
        results = pool.imap_unordered(_write_one, jobs, chunksize=8)
    try:
        for split, h in results:
            hist[split] += h
            if bar is not None:
                bar.update(1)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    for s in SPLIT_IDS:  # images that were already there count too
        for i in range(counts[s]):
            if i in existing[s]:
                hist[s] += _read_hist(root, s, i)
    try:
        scratch.rmdir()
    except OSError:
        pass
    total = sum(hist.values())
    new_meta.update(
        complete=True,
        class_pixel_frequency=_frequencies(total),
        splits={s: {"count": counts[s], "class_pixel_frequency": _frequencies(hist[s])}
                for s in SPLIT_IDS},
    )
    _write_meta(root, new_meta)
    if report is not None:
        report.update(seconds=elapsed)
    return root
