"""Physically grounded synthetic mammograms with ground truth.

The generator builds a scene in millimetres (breast outline, anatomical
texture, vessels and ducts, benign calcifications, microcalcifications),
projects it to a map of line integrals of the linear attenuation
coefficient, and simulates the acquisition:

1. **Attenuation** ``L(y, x) = integral of mu dz`` (dimensionless).  The
   compressed breast has thickness ``T`` in its interior and a semicircular
   edge profile (thickness falls to 0 at the skin), a skin shell of 1.5 mm,
   and a glandular fraction ``g(y, x)`` that mixes the attenuation of
   adipose and fibroglandular tissue.  ``g`` carries power-law texture
   (power spectrum ``1/f**beta``, ``beta = 3``) made by filtering white
   noise in the Fourier domain; the random Fourier coefficients are drawn
   on a grid of *physical* frequencies, so the same seed gives the same
   anatomy at every pixel spacing.  Vessels and ducts are smooth random
   curves with a cylindrical (chord-length) attenuation profile.  Benign
   calcifications are coarse solid or eggshell (ring) objects 1-4 mm
   across.  Microcalcifications (MCs) are irregular ellipsoids 0.1-0.6 mm
   across whose projected path length, times the attenuation difference
   ``delta_mu`` to tissue, adds to ``L``; their footprint is rendered on a
   super-sampled grid and integrated over each pixel's aperture.
2. **Exposure** ``P = N * exp(-L)`` primary quanta per pixel (``N`` from the
   dose and the pixel area), plus scatter ``S = SPR * G_wide * P``.
3. **Detector**: blur by a Gaussian PSF (``psf_sigma_px``, 0.55-0.75 px),
   then quantum noise with variance equal to the signal (Gaussian
   approximation of Poisson statistics; white, as for a direct-conversion
   detector) and additive electronic noise (constant per pixel).  The dose
   (``DIFFICULTIES``) gives ~3e5 effective quanta/mm^2 behind a typical
   breast, as for a detector air kerma of ~100 uGy at DQE ~0.6.
4. **Output**:

   * presentation (default): ``pixels = offset + gain * (-ln(E / N) - Q)``,
     uint16, *bright where dense*, where ``Q`` is the peripheral (thickness)
     equalisation of presentation processing: 0.7 times a breast-masked
     10 mm low-pass of ``-ln(E / N)`` (``equalize=False`` gives ``Q = 0``);
   * ``for_processing=True``: ``pixels = raw_offset + raw_gain * E``,
     uint16, linear in exposure, so *dense is dark*.  A reader turns it
     into presentation polarity by taking ``-log`` of the offset-corrected
     values (``metadata["for_processing"]`` records ``raw_offset`` and
     ``raw_gain``).

Truth contrast
--------------
The ``contrast`` of a truth MC is, precisely, the maximum over pixels of
``noise_free_with - noise_free_without``, where ``noise_free_with`` is the
noise-free output image (after PSF blur and scatter, before noise and
quantisation, in the output's units) and ``noise_free_without`` the same
image rendered without that MC.  For for-processing output the sign is
flipped (the MC lowers the raw value) so ``contrast`` is always positive.
``contrast_log`` is the same peak difference in ``-ln(exposure)`` units
(what any ``-log`` reader sees up to its own scale factor); presentation
``contrast == gain * contrast_log``.  ``cnr`` divides ``contrast`` by the
standard deviation of the noise at the MC's position.  Use
:func:`make_phantom` with ``return_noise_free=True`` and ``omit_calc_ids``
to check it.

Positions: ``row``/``col`` are fractional 0-based pixel indices of the MC
centre (pixel ``i`` is centred at ``i * spacing``), and
``y_mm = row * spacing_mm[0]``, ``x_mm = col * spacing_mm[1]``.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from .atomic import atomic_write_bytes, atomic_write_text
from .errors import InvalidParameterError, NapariCalcError, UnreadableImageError, counted
from .image import MammoImage

__all__ = [
    "Phantom",
    "make_phantom",
    "write_phantom",
    "load_truth",
    "mask_to_rle",
    "rle_to_mask",
    "DIFFICULTIES",
    "MC_SHAPES",
]

# --------------------------------------------------------------------------
# Physical constants (effective values for a ~28 kVp W/Rh spectrum).
# --------------------------------------------------------------------------
MU_ADIPOSE = 0.045  # 1/mm
MU_GLANDULAR = 0.080  # 1/mm
MU_SKIN = 0.085  # 1/mm
SKIN_MM = 1.5
MU_VESSEL_DELTA = (0.030, 0.060)  # blood vs surrounding tissue, 1/mm
MU_DUCT_DELTA = (0.012, 0.025)
MU_BENIGN_DELTA = (0.25, 0.6)  # coarse benign calcifications, 1/mm

#: Difficulty presets: MC ``delta_mu`` range (1/mm, effective, includes the
#: lower density of real calcium deposits), dose (effective quanta per mm^2
#: reaching the detector without attenuation) and electronic noise (quanta
#: rms per pixel, whatever its size).
#: MC morphologies of :func:`make_phantom` (``mc_shapes``).
MC_SHAPES = ("round", "linear", "mixed")

DIFFICULTIES = {
    "easy": {"mc_delta_mu": (1.8, 3.2), "quanta_per_mm2": 6.0e6, "electronic_noise": 10.0},
    "normal": {"mc_delta_mu": (1.2, 2.8), "quanta_per_mm2": 4.0e6, "electronic_noise": 14.0},
    "hard": {"mc_delta_mu": (0.8, 2.0), "quanta_per_mm2": 2.5e6, "electronic_noise": 20.0},
}

PRESENTATION_GAIN = 1000.0  # output counts per unit of -ln(E/N)
PRESENTATION_OFFSET = 500.0
RAW_FULL_SCALE = 40000.0  # raw counts of the unattenuated primary
RAW_OFFSET = 0.0  # raw = gain * exposure, so -log of it is a line integral


@dataclass
class Phantom:
    """A synthetic mammogram and its ground truth.

    Attributes
    ----------
    image : MammoImage
        Pixels (uint16), spacing and metadata (``name`` = ``phantom-<seed>``,
        ``source_path`` None, modality ``MG``).
    truth : dict
        JSON-serialisable ground truth (see module docstring and
        :func:`make_phantom`).
    breast_mask : numpy.ndarray
        Boolean, True inside the breast (shape of one slice).
    noise_free : numpy.ndarray or None
        The noise-free image (float32, output units), when asked for.
    """

    image: MammoImage
    truth: dict
    breast_mask: np.ndarray
    noise_free: np.ndarray | None = None

    @property
    def calcifications(self):
        """Truth calcifications as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.truth["calcifications"])

    @property
    def clusters(self):
        """Truth clusters as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.truth["clusters"])


# --------------------------------------------------------------------------
# Scene description (everything in mm, independent of pixel spacing)
# --------------------------------------------------------------------------
@dataclass
class _MC:
    y: float
    x: float
    a: float  # semi-axes in the image plane (mm)
    b: float
    c: float  # semi-axis along the beam (mm)
    theta: float
    harm: np.ndarray  # (k, amplitude, phase) radial perturbation
    delta_mu: float
    cluster_id: int
    z: float = 0.0  # depth (mm from the detector-side surface) for stacks
    shape: str = "round"  # "round" (compact) or "linear" (rod-like)


@dataclass
class _Curve:
    pts: np.ndarray  # (n, 2) y, x in mm
    radius: np.ndarray  # (n,) mm
    delta_mu: float
    z: float = 0.0
    kind: str = "vessel"


@dataclass
class _Benign:
    y: float
    x: float
    r: float  # outer radius, mm
    shell: float  # shell thickness (mm) for eggshell; 0 for solid
    lobes: np.ndarray  # (n, 3) dy, dx, r of extra lobes (popcorn)
    delta_mu: float
    z: float = 0.0


@dataclass
class _Scene:
    shape: tuple[int, int]
    spacing: float
    thickness: float
    outline: dict
    texture_coef: dict
    gland: dict
    curves: list = field(default_factory=list)
    benign: list = field(default_factory=list)
    mcs: list = field(default_factory=list)
    clusters: list = field(default_factory=list)
    acq: dict = field(default_factory=dict)
    seed: int = 0


# --------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------
def _outline_radius(theta, outline):
    """Normalised radius of the breast outline at polar angle ``theta``."""
    r = np.ones_like(theta)
    for k, amp, ph in outline["harm"]:
        r = r + np.float32(amp) * np.cos(np.float32(k) * theta + np.float32(ph))
    return r


def _inside_outline(y, x, outline):
    """Boolean: (y, x) in mm inside the half-ellipse outline (chest wall at x=0)."""
    u = (y - outline["cy"]) / outline["ay"]
    v = x / outline["ax"]
    rho = np.hypot(u, v)
    th = np.arctan2(u, v)
    return (rho <= _outline_radius(th, outline)) & (x >= 0)


def _inside_scalar(y, x, outline):
    if x < 0:
        return False
    u = (y - outline["cy"]) / outline["ay"]
    v = x / outline["ax"]
    th = math.atan2(u, v)
    r = 1.0 + sum(amp * math.cos(k * th + ph) for k, amp, ph in outline["harm"])
    return math.hypot(u, v) <= r


def _semicircle_thickness(d, radius, full):
    """Thickness at inward distance ``d`` from the edge of a slab whose edge is
    a half-cylinder of ``radius``; ``full`` in the interior."""
    d = np.clip(d, 0.0, None)
    inner = np.clip(radius - d, 0.0, None)
    t = 2.0 * np.sqrt(np.clip(radius * radius - inner * inner, 0.0, None))
    return np.where(d >= radius, full, t)


def _ellipse_footprint(dy, dx, mc):
    """Projected path length (mm) of an irregular ellipsoid at offsets (mm)."""
    ct, st = math.cos(mc.theta), math.sin(mc.theta)
    u = (dx * ct + dy * st) / mc.a
    v = (-dx * st + dy * ct) / mc.b
    rho = np.hypot(u, v)
    ang = np.arctan2(v, u)
    r = np.ones_like(rho)
    for k, amp, ph in mc.harm:
        r = r + amp * np.cos(k * ang + ph)
    q = rho / r
    return 2.0 * mc.c * np.sqrt(np.clip(1.0 - q * q, 0.0, None))


# --------------------------------------------------------------------------
# Scene generation
# --------------------------------------------------------------------------
def _check_params(spacing_mm, size_mm, density, difficulty, n_clusters, n_singles, n_slices, slice_mm):
    if not (0.02 <= spacing_mm <= 1.0):
        raise InvalidParameterError(f"spacing_mm must be in [0.02, 1.0] mm, got {spacing_mm}")
    if difficulty not in DIFFICULTIES:
        raise InvalidParameterError(
            f"difficulty must be one of {sorted(DIFFICULTIES)}, got {difficulty!r}"
        )
    if not (0.0 <= density <= 1.0):
        raise InvalidParameterError(f"density must be in [0, 1], got {density}")
    if size_mm[0] < 20 or size_mm[1] < 20 or size_mm[0] > 400 or size_mm[1] > 400:
        raise InvalidParameterError(f"size_mm must be within 20-400 mm per side, got {size_mm}")
    if n_clusters < 0 or n_singles < 0:
        raise InvalidParameterError("n_clusters and n_singles must be >= 0")
    if n_slices is not None and not (1 <= n_slices <= 200):
        raise InvalidParameterError(f"n_slices must be in [1, 200], got {n_slices}")
    if not (0.1 <= slice_mm <= 10):
        raise InvalidParameterError(f"slice_mm must be in [0.1, 10], got {slice_mm}")


def _texture_coefficients(rng, size_mm, beta, fmax=2.5, f0=0.02):
    """Random Fourier coefficients on a physical frequency grid.

    Frequencies are ``k / extent_mm`` cycles/mm for integer ``k`` up to
    ``fmax``; amplitude ``(f**2 + f0**2) ** (-beta / 4)`` gives a power
    spectrum ``~ 1/f**beta``.
    """
    ky_max = int(math.ceil(fmax * size_mm[0]))
    kx_max = int(math.ceil(fmax * size_mm[1]))
    ky = np.arange(-ky_max, ky_max + 1)
    kx = np.arange(0, kx_max + 1)
    fy = ky[:, None] / size_mm[0]
    fx = kx[None, :] / size_mm[1]
    f2 = fy * fy + fx * fx
    amp = (f2 + f0 * f0) ** (-beta / 4.0)
    amp[f2 > fmax * fmax] = 0.0
    amp[ky_max, 0] = 0.0  # no DC
    c = (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)) * amp
    # Expected variance of the real field: sum over the half plane of |c|^2
    # (each kx > 0 coefficient appears with its conjugate).
    w = np.where(kx[None, :] == 0, 0.5, 1.0)
    var = float(np.sum(w * 2.0 * amp * amp))
    return {"c": c.astype(np.complex64), "ky_max": ky_max, "kx_max": kx_max, "std": math.sqrt(var)}


def _render_texture(tc, shape):
    """Evaluate the texture field on a pixel grid of ``shape`` (unit std)."""
    ny, nx = shape
    c = tc["c"]
    ky_max, kx_max = tc["ky_max"], tc["kx_max"]
    kyl = min(ky_max, (ny - 1) // 2)
    kxl = min(kx_max, nx // 2 - 1 if nx % 2 == 0 else nx // 2)
    spec = np.zeros((ny, nx // 2 + 1), np.complex128)
    # positive ky (incl. 0)
    spec[0 : kyl + 1, 0 : kxl + 1] = c[ky_max : ky_max + kyl + 1, 0 : kxl + 1]
    # negative ky
    if kyl > 0:
        spec[ny - kyl :, 0 : kxl + 1] = c[ky_max - kyl : ky_max, 0 : kxl + 1]
    field_ = np.fft.irfft2(spec, s=(ny, nx)) * (ny * nx)
    return (field_ / tc["std"]).astype(np.float32)


def _random_curve(rng, outline, start, heading, length, step, r0, r1, delta_mu):
    pts = [np.array(start, float)]
    h = heading
    dh = 0.0
    n = max(2, int(length / step))
    for _ in range(n):
        # smooth random curvature, pulled back towards the initial heading
        # (vessels and ducts run roughly between chest wall and nipple)
        dh = 0.8 * dh + rng.normal(0.0, 0.035) - 0.03 * (h - heading)
        h += dh
        p = pts[-1] + step * np.array([math.sin(h), math.cos(h)])
        if not _inside_scalar(p[0], p[1], outline):
            break
        pts.append(p)
    pts = np.array(pts)
    radius = np.linspace(r0, r1, len(pts))
    return _Curve(pts=pts, radius=radius, delta_mu=delta_mu)


def _build_scene(
    seed,
    spacing_mm,
    size_mm,
    shape,
    n_clusters,
    n_singles,
    difficulty,
    density,
    vessels,
    benign,
    mcs,
    mc_delta_mu,
    thickness_mm,
    mc_shapes="round",
):
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4D43]))
    # Independent streams so that switching a component off does not change
    # the others.
    r_outline, r_tex, r_ves, r_ben, r_mc, r_acq = (
        np.random.default_rng(s) for s in rng.bit_generator.seed_seq.spawn(6)
    )
    H = shape[0] * spacing_mm
    W = shape[1] * spacing_mm

    outline = {
        "cy": H * r_outline.uniform(0.46, 0.54),
        "ay": H * r_outline.uniform(0.40, 0.46),
        "ax": W * r_outline.uniform(0.70, 0.85),
        "harm": [
            (k, r_outline.uniform(0.0, 0.02), r_outline.uniform(0, 2 * math.pi)) for k in (2, 3, 4)
        ],
    }
    thickness = float(thickness_mm if thickness_mm else r_outline.uniform(40.0, 60.0))

    tex = _texture_coefficients(r_tex, (H, W), beta=3.0)
    gland = {
        "mean": 0.08 + 0.50 * density,
        # std of the power-law texture in glandular fraction; with the
        # thickness this gives ~0.04-0.09 in -ln(exposure), so anatomical
        # noise dominates below ~1-2 cycles/mm and quantum noise above.
        "amp": 0.025 + 0.035 * density,
        "fat_mm": r_tex.uniform(6.0, 12.0),
        # position of the glandular disc (fraction of the depth)
        "cx": r_tex.uniform(0.25, 0.45),
    }
    scene = _Scene(
        shape=tuple(shape),
        spacing=spacing_mm,
        thickness=thickness,
        outline=outline,
        texture_coef=tex,
        gland=gland,
        seed=int(seed),
    )

    ring = np.linspace(0, 2 * math.pi, 12, endpoint=False)

    def random_inside(rng_, margin_mm, ok=None, batches=20, batch=256):
        """A random point at least ``margin_mm`` inside the breast outline
        (and the image) for which ``ok(y, x)`` holds; None if none found."""
        for _ in range(batches):
            y = rng_.uniform(margin_mm, H - margin_mm, batch)
            x = rng_.uniform(margin_mm, W, batch)
            yy = y[:, None] + margin_mm * np.sin(ring)[None, :]
            xx = x[:, None] + margin_mm * np.cos(ring)[None, :]
            good = _inside_outline(y, x, outline) & np.all(
                _inside_outline(yy, xx, outline) | (xx < 0), axis=1
            )
            for yi, xi in zip(y[good], x[good]):
                if ok is None or ok(yi, xi):
                    return float(yi), float(xi)
        return None

    # ---- vessels and ducts -------------------------------------------------
    if vessels:
        n_v = int(r_ves.integers(5, 9))
        for _ in range(n_v):
            y0 = outline["cy"] + outline["ay"] * r_ves.uniform(-0.8, 0.8)
            start = (y0, r_ves.uniform(0.5, 5.0))
            heading = r_ves.normal(0.0, 0.35) + 0.6 * math.atan2(y0 - outline["cy"], outline["ax"])
            r0 = r_ves.uniform(0.35, 1.0)
            c = _random_curve(
                r_ves, outline, start, heading, r_ves.uniform(0.5, 1.1) * outline["ax"], 0.5,
                r0, r0 * r_ves.uniform(0.4, 0.8), r_ves.uniform(*MU_VESSEL_DELTA),
            )
            scene.curves.append(c)
            # a branch
            if len(c.pts) > 20 and r_ves.random() < 0.6:
                i = int(r_ves.integers(5, len(c.pts) - 5))
                rb = float(c.radius[i]) * r_ves.uniform(0.5, 0.8)
                scene.curves.append(
                    _random_curve(
                        r_ves, outline, c.pts[i], heading + r_ves.choice([-1, 1]) * r_ves.uniform(0.3, 0.8),
                        r_ves.uniform(0.2, 0.5) * outline["ax"], 0.5, rb, rb * 0.6, c.delta_mu,
                    )
                )
        # ducts converge on the nipple
        n_d = int(round(2 + 5 * density))
        nipple = np.array([outline["cy"], outline["ax"] * _outline_radius(np.array([0.0]), outline)[0]])
        for _ in range(n_d):
            start = nipple + np.array([r_ves.uniform(-3, 3), -r_ves.uniform(2, 6)])
            heading = math.pi + r_ves.normal(0.0, 0.45)
            r0 = r_ves.uniform(0.3, 0.6)
            duct = _random_curve(
                r_ves, outline, start, heading, r_ves.uniform(0.25, 0.6) * outline["ax"], 0.5,
                r0, r0 * 0.7, r_ves.uniform(*MU_DUCT_DELTA),
            )
            duct.kind = "duct"
            scene.curves.append(duct)

    # ---- benign calcifications -------------------------------------------
    if benign:
        n_b = int(r_ben.integers(1, 4))
        for _ in range(n_b):
            pos = random_inside(r_ben, 6.0)
            if pos is None:
                continue
            y, x = pos
            r = r_ben.uniform(0.5, 2.0)
            kind = r_ben.random()
            shell = r * r_ben.uniform(0.15, 0.3) if kind < 0.4 else 0.0
            lobes = np.zeros((0, 3))
            if 0.4 <= kind < 0.75:  # popcorn: several lobes
                nl = int(r_ben.integers(2, 5))
                ang = r_ben.uniform(0, 2 * math.pi, nl)
                rr = r * r_ben.uniform(0.4, 0.7, nl)
                lobes = np.stack([r * 0.8 * np.sin(ang), r * 0.8 * np.cos(ang), rr], axis=1)
            scene.benign.append(
                _Benign(y=y, x=x, r=r, shell=shell, lobes=lobes, delta_mu=r_ben.uniform(*MU_BENIGN_DELTA))
            )

    # ---- microcalcifications ---------------------------------------------
    lo, hi = mc_delta_mu
    # the rod-like MCs' own stream: every other draw (positions, sizes of
    # the round MCs, attenuation, orientation) is the same whatever
    # mc_shapes is, so a "linear" phantom differs from the "round" one of
    # its seed in the MCs' shapes only
    r_shape = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4D43, 1]))

    def rod(mc):
        """Make ``mc`` a fine linear (rod-like) calcification: width
        0.08-0.3 mm (log-normal, median 0.15 mm), 2.5-5 times as long,
        as thick along the beam as it is wide, the equal-area diameter
        at most 0.6 mm."""
        w = float(np.clip(0.15 * math.exp(r_shape.normal(0.0, 0.3)), 0.08, 0.3))
        length = min(w * r_shape.uniform(2.5, 5.0), 0.36 / w)  # sqrt(w * length) <= 0.6
        mc.a, mc.b = 0.5 * length, 0.5 * w
        mc.c = 0.5 * w * r_shape.uniform(0.8, 1.2)
        mc.harm = mc.harm.copy()
        mc.harm[:, 1] *= 0.5  # a smoother outline: the length carries the shape
        mc.shape = "linear"
        return mc

    def new_mc(y, x, cid):
        # diameter (mm): log-normal, median 0.28 mm (typical of clustered
        # MCs), restricted to 0.1-0.6 mm
        d = float(np.clip(0.28 * math.exp(r_mc.normal(0.0, 0.35)), 0.1, 0.6))
        e = r_mc.uniform(0.0, 0.35)
        a = 0.5 * d * (1 + e)
        b = 0.5 * d / (1 + e)
        c = 0.5 * d * r_mc.uniform(0.7, 1.2)
        harm = np.array(
            [(k, r_mc.uniform(0.0, 0.12), r_mc.uniform(0, 2 * math.pi)) for k in (2, 3, 5)]
        )
        return _MC(
            y=float(y), x=float(x), a=a, b=b, c=c, theta=r_mc.uniform(0, math.pi), harm=harm,
            delta_mu=r_mc.uniform(lo, hi), cluster_id=cid,
        )

    def clear_of_benign(y, x, gap):
        return all(math.hypot(y - b.y, x - b.x) > 1.8 * b.r + gap for b in scene.benign)

    if mcs:
        # cluster centres: 12 mm inside the skin and 25 mm apart (less on
        # small images)
        margin = min(12.0, 0.2 * min(H, W))
        sep = min(25.0, 0.45 * min(H, W))
        centres = []
        for cid in range(n_clusters):
            pos = None
            # small breasts: relax the separation (never below 12 mm, so
            # clusters stay distinct), then allow a benign calcification nearby
            for sep_k, gap in ((sep, 6.0), (0.7 * sep, 6.0), (max(12.0, 0.5 * sep), 6.0),
                               (max(12.0, 0.5 * sep), -100.0)):
                def ok(y, x, sep_k=sep_k, gap=gap):
                    return all(
                        math.hypot(y - py, x - px) > sep_k for py, px in centres
                    ) and clear_of_benign(y, x, gap)

                pos = random_inside(r_mc, margin, ok, batches=5)
                if pos is not None:
                    break
            if pos is None:
                raise InvalidParameterError(
                    f"the breast is too small for {counted(n_clusters, 'cluster')} {sep:.0f} mm apart "
                    f"and {margin:.0f} mm from the skin"
                )
            cy, cx = pos
            centres.append((cy, cx))
            n = int(r_mc.integers(5, 13))
            spread = r_mc.uniform(2.0, 4.0)  # radius of the cluster region, mm
            pts = []
            for _ in range(500):
                if len(pts) == n:
                    break
                rr = spread * math.sqrt(r_mc.random())
                ang = r_mc.uniform(0, 2 * math.pi)
                y = cy + rr * math.sin(ang) * r_mc.uniform(0.6, 1.0)
                x = cx + rr * math.cos(ang)
                if all(math.hypot(y - py, x - px) > 1.0 for py, px in pts):
                    pts.append((y, x))
            members = [new_mc(y, x, cid) for y, x in pts]
            # a cluster is of one morphology, as in the breast
            if mc_shapes == "linear" or (mc_shapes == "mixed" and r_shape.random() < 0.5):
                members = [rod(m) for m in members]
            scene.mcs.extend(members)
            scene.clusters.append(cid)
        singles = []
        for _ in range(n_singles):
            pos = random_inside(
                r_mc, 5.0,
                lambda y, x: all(math.hypot(y - py, x - px) > 0.8 * sep for py, px in centres)
                and all(math.hypot(y - py, x - px) > 15.0 for py, px in singles)
                and clear_of_benign(y, x, 3.0),
                batches=4,
            )
            if pos is None:  # no room left (small images): fewer singles
                continue
            singles.append(pos)
            mc = new_mc(pos[0], pos[1], -1)
            scene.mcs.append(rod(mc) if mc_shapes == "linear" else mc)

    scene.acq = {
        "psf_sigma_px": float(r_acq.uniform(0.55, 0.75)),
        "spr": 0.25 + 0.004 * thickness,
        "scatter_sigma_mm": 12.0,
        "noise_seed": int(r_acq.integers(0, 2**31 - 1)),
    }
    return scene


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------
def _edge_distance(yy, xx, outline):
    """Signed inward distance (mm) from (yy, xx) to the curved breast edge.

    First-order (algebraic distance over gradient norm) for the perturbed
    half-ellipse: exact on the edge, smooth, and cheap; the chest wall
    (x = 0) is not an edge.
    """
    u = ((yy - outline["cy"]) / outline["ay"]).astype(np.float32)
    v = (xx / outline["ax"]).astype(np.float32)
    rho = np.hypot(u, v)
    th = np.arctan2(u, v)
    r = _outline_radius(th, outline)
    rho_s = np.maximum(rho, np.float32(1e-6))
    g = np.hypot(u / np.float32(outline["ay"]), v / np.float32(outline["ax"])) / rho_s
    d = (r - rho) / np.maximum(g, np.float32(1e-9))
    return d.astype(np.float32)


def _render_curves(L, curves, spacing, omit=False):
    ny, nx = L.shape
    for cv in curves:
        # segments of ~1 mm (the curves are smooth on that scale)
        idx = np.unique(np.r_[np.arange(0, len(cv.pts), 2), len(cv.pts) - 1])
        cv = _Curve(pts=cv.pts[idx], radius=cv.radius[idx], delta_mu=cv.delta_mu, z=cv.z)
        rmax = float(cv.radius.max())
        pad = rmax + spacing
        y0 = max(0, int(math.floor((cv.pts[:, 0].min() - pad) / spacing)))
        y1 = min(ny, int(math.ceil((cv.pts[:, 0].max() + pad) / spacing)) + 1)
        x0 = max(0, int(math.floor((cv.pts[:, 1].min() - pad) / spacing)))
        x1 = min(nx, int(math.ceil((cv.pts[:, 1].max() + pad) / spacing)) + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        best = np.full((y1 - y0, x1 - x0), np.inf, np.float32)
        rad = np.zeros_like(best)
        for i in range(len(cv.pts) - 1):
            p, q = cv.pts[i], cv.pts[i + 1]
            ra, rb = cv.radius[i], cv.radius[i + 1]
            r = max(ra, rb) + spacing
            sy0 = max(y0, int(math.floor((min(p[0], q[0]) - r) / spacing)))
            sy1 = min(y1, int(math.ceil((max(p[0], q[0]) + r) / spacing)) + 1)
            sx0 = max(x0, int(math.floor((min(p[1], q[1]) - r) / spacing)))
            sx1 = min(x1, int(math.ceil((max(p[1], q[1]) + r) / spacing)) + 1)
            if sy1 <= sy0 or sx1 <= sx0:
                continue
            yy = (np.arange(sy0, sy1) * spacing)[:, None]
            xx = (np.arange(sx0, sx1) * spacing)[None, :]
            dv = q - p
            ll = float(dv @ dv) or 1e-12
            t = np.clip(((yy - p[0]) * dv[0] + (xx - p[1]) * dv[1]) / ll, 0.0, 1.0)
            d = np.hypot(yy - (p[0] + t * dv[0]), xx - (p[1] + t * dv[1]))
            sub_b = best[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
            sub_r = rad[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
            closer = d < sub_b
            sub_b[closer] = d[closer]
            sub_r[closer] = (ra + t * (rb - ra))[closer]
        chord = 2.0 * np.sqrt(np.clip(rad * rad - best * best, 0.0, None))
        L[y0:y1, x0:x1] += cv.delta_mu * chord


def _disc_chord(dy, dx, r):
    return 2.0 * np.sqrt(np.clip(r * r - dy * dy - dx * dx, 0.0, None))


def _render_benign(L, objs, spacing):
    ny, nx = L.shape
    ss = 3
    for b in objs:
        ext = b.r * 1.8 + spacing
        y0 = max(0, int(math.floor((b.y - ext) / spacing)))
        y1 = min(ny, int(math.ceil((b.y + ext) / spacing)) + 1)
        x0 = max(0, int(math.floor((b.x - ext) / spacing)))
        x1 = min(nx, int(math.ceil((b.x + ext) / spacing)) + 1)
        off = (np.arange(ss) + 0.5) / ss - 0.5
        yy = ((np.arange(y0, y1)[:, None] + off[None, :]).ravel() * spacing - b.y)[:, None]
        xx = ((np.arange(x0, x1)[:, None] + off[None, :]).ravel() * spacing - b.x)[None, :]
        path = _disc_chord(yy, xx, b.r)
        if b.shell > 0:
            path = path - _disc_chord(yy, xx, b.r - b.shell)
        for dy, dx, rr in b.lobes:
            path = np.maximum(path, _disc_chord(yy - dy, xx - dx, rr))
        path = path.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))
        L[y0:y1, x0:x1] += b.delta_mu * path


def _mc_patch(mc, spacing, margin_px):
    """Super-sampled, pixel-integrated path length of one MC.

    Returns (y0, x0, patch of delta-L, projected area in mm^2) with the
    patch's top-left pixel; the patch has ``margin_px`` zero pixels around
    the MC's footprint.
    """
    ss = max(3, int(math.ceil(spacing / 0.02)))
    rmax = max(mc.a, mc.b) * 1.5
    y0 = int(math.floor((mc.y - rmax) / spacing))
    y1 = int(math.ceil((mc.y + rmax) / spacing)) + 1
    x0 = int(math.floor((mc.x - rmax) / spacing))
    x1 = int(math.ceil((mc.x + rmax) / spacing)) + 1
    off = (np.arange(ss) + 0.5) / ss - 0.5
    yy = ((np.arange(y0, y1)[:, None] + off[None, :]).ravel() * spacing - mc.y)[:, None]
    xx = ((np.arange(x0, x1)[:, None] + off[None, :]).ravel() * spacing - mc.x)[None, :]
    path = _ellipse_footprint(yy, xx, mc)
    area = float(np.count_nonzero(path > 0)) * (spacing / ss) ** 2
    path = path.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))
    path = np.pad(mc.delta_mu * path, margin_px)
    return y0 - margin_px, x0 - margin_px, path, area


def _add_patch(L, y0, x0, patch, sign=1.0):
    ny, nx = L.shape
    py0, px0 = max(0, -y0), max(0, -x0)
    y0c, x0c = max(0, y0), max(0, x0)
    y1c = min(ny, y0 + patch.shape[0])
    x1c = min(nx, x0 + patch.shape[1])
    if y1c <= y0c or x1c <= x0c:
        return
    L[y0c:y1c, x0c:x1c] += sign * patch[py0 : py0 + (y1c - y0c), px0 : px0 + (x1c - x0c)]


def _get_patch(A, y0, x0, h, w, fill=0.0):
    out = np.full((h, w), fill, dtype=A.dtype)
    ny, nx = A.shape
    y0c, x0c = max(0, y0), max(0, x0)
    y1c, x1c = min(ny, y0 + h), min(nx, x0 + w)
    if y1c > y0c and x1c > x0c:
        out[y0c - y0 : y1c - y0, x0c - x0 : x1c - x0] = A[y0c:y1c, x0c:x1c]
    return out


def _tissue_parts(scene):
    """The texture-independent parts of the tissue model."""
    ny, nx = scene.shape
    sp = scene.spacing
    yy = (np.arange(ny, dtype=np.float32) * np.float32(sp))[:, None]
    xx = (np.arange(nx, dtype=np.float32) * np.float32(sp))[None, :]
    d = _edge_distance(yy, xx, scene.outline)
    mask = d > 0
    T = scene.thickness
    R = T / 2.0
    t = _semicircle_thickness(d, R, T)
    t_in = _semicircle_thickness(d - SKIN_MM, R - SKIN_MM, T - 2 * SKIN_MM)
    t_in = np.where(d > SKIN_MM, t_in, 0.0)
    t_skin = t - t_in
    g = scene.gland
    # glandular disc centred at cx*depth, fading towards the skin (subcutaneous fat)
    ax = scene.outline["ax"]
    u = (yy - scene.outline["cy"]) / scene.outline["ay"]
    v = (xx - g["cx"] * ax) / (0.75 * ax)
    prof = np.exp(-0.5 * (u * u + v * v) / 0.35)
    fat = np.clip(d / g["fat_mm"], 0.0, 1.0)
    base = g["mean"] * (0.4 + 1.2 * prof)
    return {
        "mask": mask,
        "t_in": t_in.astype(np.float32),
        "skin_L": (t_skin * MU_SKIN).astype(np.float32),
        "base": base.astype(np.float32),
        "fat": fat.astype(np.float32),
    }


def _tissue_background(scene, tex=None, parts=None):
    """Attenuation of the breast tissue (outline, thickness, skin, glandular
    texture) without vessels or calcifications; and the breast mask."""
    if parts is None:
        parts = _tissue_parts(scene)
    if tex is None:
        tex = _render_texture(scene.texture_coef, scene.shape)
    # smooth saturation into [0, 1] (a hard clip would add sharp edges)
    gf = parts["base"] + np.float32(scene.gland["amp"]) * tex
    gf = 0.5 + 0.5 * np.tanh((gf - 0.5) / 0.5)
    gf = gf * parts["fat"]
    mu = MU_ADIPOSE + gf * (MU_GLANDULAR - MU_ADIPOSE)
    L = (parts["t_in"] * mu + parts["skin_L"]).astype(np.float32)
    mask = parts["mask"]
    L[~mask] = 0.0
    return L, mask


def _smooth_coarse(A, spacing, sigma_mm):
    """Wide Gaussian smoothing, done on a ~1 mm grid and interpolated back
    (cubic, so without block edges)."""
    f = max(1, int(round(1.0 / spacing)))
    ny, nx = A.shape
    pny, pnx = -(-ny // f) * f, -(-nx // f) * f
    Ap = np.pad(A, ((0, pny - ny), (0, pnx - nx)), mode="edge")
    coarse = Ap.reshape(pny // f, f, pnx // f, f).mean(axis=(1, 3))
    coarse = ndimage.gaussian_filter(coarse, sigma_mm / (f * spacing), mode="nearest")
    return ndimage.zoom(coarse, f, order=3, mode="nearest", grid_mode=True)[:ny, :nx]


def _blur_scatter(P, scene):
    """Scatter: ``SPR`` times a wide Gaussian (``scatter_sigma_mm``) of the primary."""
    S = _smooth_coarse(P, scene.spacing, scene.acq["scatter_sigma_mm"])
    return (scene.acq["spr"] * S).astype(np.float32)


#: Presentation processing: strength and scale of the peripheral (thickness)
#: equalisation.
EQUALIZE_STRENGTH = 0.7
EQUALIZE_SIGMA_MM = 10.0


def _equalization(Lm, mask, spacing):
    """Low-frequency term removed by the presentation processing.

    ``EQUALIZE_STRENGTH`` times the breast-masked (normalised) Gaussian
    low-pass of the log image, minus its median inside the breast; zero
    outside the breast.
    """
    m = mask.astype(np.float32)
    num = _smooth_coarse(np.where(mask, Lm, 0.0).astype(np.float32), spacing, EQUALIZE_SIGMA_MM)
    den = _smooth_coarse(m, spacing, EQUALIZE_SIGMA_MM)
    low = num / np.maximum(den, 1e-3)
    if not mask.any():
        return np.zeros_like(Lm)
    low = low - np.median(low[mask])
    return np.where(mask, EQUALIZE_STRENGTH * low, 0.0).astype(np.float32)


def _acquire(scene, L, focus, *, quanta_per_mm2, electronic_noise, for_processing, noise_seed, S=None,
             mask=None, equalize=False):
    """Simulate exposure, scatter, PSF, noise and the output mapping.

    ``focus`` lists ``(index, y0, x0, patch, area)`` of the MCs whose truth
    contrast is wanted (their sharp delta-L patches, already in ``L``).
    Returns (out, out_free, records, extra).
    """
    sp = scene.spacing
    sigma = scene.acq["psf_sigma_px"]
    N = quanta_per_mm2 * sp * sp
    P = (N * np.exp(-L)).astype(np.float32)
    if S is None:
        S = _blur_scatter(P, scene)
    E = ndimage.gaussian_filter(P + S, sigma, mode="nearest")
    e_sd = float(electronic_noise)  # read noise, quanta rms per pixel
    raw_gain = RAW_FULL_SCALE / N
    if for_processing:
        out_free = RAW_OFFSET + raw_gain * E
    else:
        Lm = -np.log(E / N)
        Q = _equalization(Lm, mask, sp) if equalize else np.float32(0.0)
        out_free = PRESENTATION_OFFSET + PRESENTATION_GAIN * (Lm - Q)
    out_free = out_free.astype(np.float32)

    # per-MC truth contrast, exactly, on local patches: the same pipeline
    # (primary + scatter, PSF) with and without the MC.
    records = []
    for i, y0, x0, patch, area in focus:
        h, w = patch.shape
        Lp = _get_patch(L, y0, x0, h, w).astype(np.float64)
        Sp = _get_patch(S, y0, x0, h, w).astype(np.float64)
        with_ = ndimage.gaussian_filter(N * np.exp(-Lp) + Sp, sigma, mode="nearest")
        without = ndimage.gaussian_filter(N * np.exp(-(Lp - patch)) + Sp, sigma, mode="nearest")
        dlog = np.log(without) - np.log(with_)
        k = int(np.argmax(dlog))
        c_log = float(dlog.flat[k])
        E_pk = float(with_.flat[k])
        sd_q = math.sqrt(E_pk + e_sd * e_sd)  # noise sd in quanta at the peak
        if for_processing:
            contrast = float(np.max(raw_gain * (without - with_)))
            sd = raw_gain * sd_q
        else:
            contrast = PRESENTATION_GAIN * c_log
            sd = PRESENTATION_GAIN * sd_q / E_pk
        records.append(
            {
                "index": i,
                "contrast": contrast,
                "contrast_log": c_log,
                "noise_sd": sd,
                "cnr": contrast / sd,
                "area_mm2": area,
                "diameter_mm": 2.0 * math.sqrt(area / math.pi),
            }
        )

    rng = np.random.default_rng(noise_seed)
    En = E + rng.standard_normal(E.shape, dtype=np.float32) * np.sqrt(E + np.float32(e_sd * e_sd))
    En = np.maximum(En, np.float32(1.0))
    if for_processing:
        out = RAW_OFFSET + raw_gain * En
    else:
        out = PRESENTATION_OFFSET + PRESENTATION_GAIN * (-np.log(En / N) - Q)
    return out.astype(np.float32), out_free, records, {"N": N, "e_sd": e_sd}


def _render(scene, *, quanta_per_mm2, electronic_noise, for_processing, omit=(), equalize=False):
    """Render a 2-D mammogram.  Returns (out, out_free, mask, records, extra)."""
    sp = scene.spacing
    L, mask = _tissue_background(scene)
    _render_curves(L, scene.curves, sp)
    _render_benign(L, scene.benign, sp)
    L[~mask] = 0.0
    margin = int(math.ceil(4 * scene.acq["psf_sigma_px"])) + 2
    focus = []
    for i, mc in enumerate(scene.mcs):
        if i in omit:
            continue
        y0, x0, patch, area = _mc_patch(mc, sp, margin)
        _add_patch(L, y0, x0, patch)
        focus.append((i, y0, x0, patch, area))
    out, free, records, extra = _acquire(
        scene, L, focus, quanta_per_mm2=quanta_per_mm2, electronic_noise=electronic_noise,
        for_processing=for_processing, noise_seed=scene.acq["noise_seed"], mask=mask,
        equalize=equalize,
    )
    return out, free, mask, records, extra


#: Half of the tomosynthesis sweep angle; sets the out-of-plane blur.
TOMO_HALF_ANGLE_DEG = 25.0


def _render_stack(
    scene, n_slices, slice_mm, *, quanta_per_mm2, electronic_noise, for_processing, omit=(), equalize=False
):
    """Render a tomosynthesis-like stack.

    Each slice ``k`` (depth ``z_k``) is modelled as a shift-and-add
    reconstruction: structures at depth ``z`` appear blurred along the
    tube-motion direction (the rows, parallel to the chest wall) by a
    Gaussian of standard deviation ``|z - z_k| * tan(half_angle) / sqrt(3)``
    (a uniform smear of length ``2 |z - z_k| tan(half_angle)``); the tissue
    texture decorrelates with depth (two texture fields mixed with a
    depth-dependent angle).  Each MC sits at the centre of one slice, its
    truth slice; its truth contrast is measured in that slice.
    """
    sp = scene.spacing
    T = scene.thickness
    rz = np.random.default_rng(np.random.SeedSequence([int(scene.seed), 0x5A]))
    z_slices = T / 2.0 + (np.arange(n_slices) - (n_slices - 1) / 2.0) * slice_mm
    tan_a = math.tan(math.radians(TOMO_HALF_ANGLE_DEG))

    def sig_px(dz):
        return abs(dz) * tan_a / math.sqrt(3.0) / sp

    # depths: objects anywhere in the breast; MCs snapped to slice centres
    obj_z = rz.uniform(0.15 * T, 0.85 * T, len(scene.curves) + len(scene.benign))
    clus_slice = {cid: int(rz.integers(0, n_slices)) for cid in scene.clusters}
    mc_slice = []
    for mc in scene.mcs:
        if mc.cluster_id >= 0:
            k = clus_slice[mc.cluster_id] + int(rz.integers(-2, 3))
        else:
            k = int(rz.integers(0, n_slices))
        mc_slice.append(int(np.clip(k, 0, n_slices - 1)))
    tex2 = _texture_coefficients(rz, (scene.shape[0] * sp, scene.shape[1] * sp), beta=3.0)
    texA = _render_texture(scene.texture_coef, scene.shape)
    texB = _render_texture(tex2, scene.shape)

    # structure layers binned by nearest slice
    layers = {}
    for j, cv in enumerate(scene.curves):
        kb = int(np.argmin(np.abs(z_slices - obj_z[j])))
        buf = layers.setdefault(kb, np.zeros(scene.shape, np.float32))
        _render_curves(buf, [cv], sp)
    for j, b in enumerate(scene.benign):
        kb = int(np.argmin(np.abs(z_slices - obj_z[len(scene.curves) + j])))
        buf = layers.setdefault(kb, np.zeros(scene.shape, np.float32))
        _render_benign(buf, [b], sp)

    margin = int(math.ceil(4 * scene.acq["psf_sigma_px"])) + 2
    outs, frees, records = [], [], []
    mask = None
    extra = None
    corr_mm = 6.0  # texture decorrelation depth
    parts = _tissue_parts(scene)
    S = None  # scatter: from the projection through the whole breast, same for all slices
    for k in range(n_slices):
        phi = (z_slices[k] - T / 2.0) / corr_mm
        tex = (math.cos(phi) * texA + math.sin(phi) * texB).astype(np.float32)
        L, mask = _tissue_background(scene, tex=tex, parts=parts)
        for kb, buf in layers.items():
            s = sig_px(z_slices[kb] - z_slices[k])
            L += ndimage.gaussian_filter1d(buf, s, axis=0, mode="constant") if s > 0.05 else buf
        L[~mask] = 0.0
        focus = []
        for i, mc in enumerate(scene.mcs):
            if i in omit:
                continue
            s = sig_px(z_slices[mc_slice[i]] - z_slices[k])
            extra_m = int(math.ceil(4 * s))
            y0, x0, patch, area = _mc_patch(mc, sp, margin + extra_m)
            if s > 0.05:
                patch = ndimage.gaussian_filter1d(patch, s, axis=0, mode="constant")
            _add_patch(L, y0, x0, patch)
            if mc_slice[i] == k:
                focus.append((i, y0, x0, patch, area))
        out, free, recs, extra = _acquire(
            scene, L, focus, quanta_per_mm2=quanta_per_mm2, electronic_noise=electronic_noise,
            for_processing=for_processing, noise_seed=[scene.acq["noise_seed"], k], S=S,
            mask=mask, equalize=equalize,
        )
        if S is None:
            N = quanta_per_mm2 * sp * sp
            S = _blur_scatter((N * np.exp(-L)).astype(np.float32), scene)
        for r in recs:
            r["slice"] = k
        records.extend(recs)
        outs.append(out)
        frees.append(free)
    records.sort(key=lambda r: r["index"])
    return np.stack(outs), np.stack(frees), mask, records, extra, {"z_slices": z_slices.tolist()}


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------
def make_phantom(
    seed: int = 0,
    *,
    spacing_mm: float = 0.1,
    size_mm: tuple[float, float] = (120.0, 96.0),
    shape: tuple[int, int] | None = None,
    n_clusters: int = 2,
    n_singles: int = 6,
    difficulty: str = "normal",
    density: float = 0.5,
    vessels: bool = True,
    benign: bool = True,
    mcs: bool = True,
    for_processing: bool = False,
    n_slices: int | None = None,
    slice_mm: float = 1.0,
    laterality: str = "L",
    view: str = "CC",
    mc_delta_mu: tuple[float, float] | None = None,
    thickness_mm: float | None = None,
    equalize: bool = True,
    return_noise_free: bool = False,
    omit_calc_ids=(),
    mc_shapes: str = "round",
) -> Phantom:
    """Generate a synthetic mammogram with known calcifications.

    Parameters
    ----------
    seed : int
        Everything (anatomy, objects, noise) follows from the seed.
    spacing_mm : float
        Pixel spacing (square pixels), 0.02-1 mm (0.05-0.2 mm is the
        realistic range).  The scene is built in mm, so a different
        spacing samples the same anatomy and calcifications.
    size_mm : (float, float)
        Field of view ``(height, width)`` in mm; ignored when ``shape`` is
        given (then ``size_mm = shape * spacing_mm``).
    shape : (int, int), optional
        Image shape in pixels.
    n_clusters : int
        Number of MC clusters (each 5-12 MCs within a region of at most
        ~8 mm across, MCs at least 1 mm apart).
    n_singles : int
        Number of isolated MCs (at least 15 mm from each other and 25 mm
        from cluster centres).
    difficulty : {"easy", "normal", "hard"}
        Sets the MC attenuation range, the dose (quantum noise) and the
        electronic noise (see :data:`DIFFICULTIES`).
    density : float
        0 (fatty) to 1 (extremely dense): mean glandular fraction, texture
        amplitude and number of ducts.
    vessels, benign, mcs : bool
        Include vessels and ducts, benign coarse calcifications, MCs.
    for_processing : bool
        Write raw linear-exposure data (dense is DARK; a reader must apply
        ``-log``) instead of presentation data (bright is dense).
    n_slices : int, optional
        Produce a tomosynthesis-like stack of this many slices,
        ``slice_mm`` apart.
    slice_mm : float
        Slice spacing of stacks.
    laterality : {"L", "R"}
        Chest wall at column 0 for ``L``, at the last column for ``R``.
    view : str
        DICOM view position to record (``CC`` or ``MLO``).
    mc_delta_mu : (float, float), optional
        Range of the MC attenuation difference to tissue in 1/mm; overrides
        the difficulty preset.
    thickness_mm : float, optional
        Compressed breast thickness (default: random 40-60 mm).
    equalize : bool
        Presentation processing: peripheral (thickness) equalisation as
        manufacturers apply to "for presentation" images: a breast-masked
        low-pass (Gaussian, 10 mm) of the log image, times 0.7, is
        subtracted.  It flattens the thickness fall-off near the skin and
        leaves small structures (calcifications, vessels, noise) unchanged.
        Ignored for ``for_processing`` data.
    return_noise_free : bool
        Also return the noise-free image in ``Phantom.noise_free``.
    omit_calc_ids : iterable of int
        Render without these MCs (all else identical); they are absent
        from the truth.  Used to verify the truth contrast.
    mc_shapes : {"round", "linear", "mixed"}
        MC morphology. ``"round"``: irregular, nearly round ellipsoids
        (aspect ratio 1-1.8). ``"linear"``: every MC a fine linear
        (rod-like) calcification, 0.08-0.3 mm wide and 2.5-5 times as
        long, as in the linear (branching) clusters that are the most
        suspicious for malignancy. ``"mixed"``: each cluster round or
        linear with equal odds, single MCs round. Positions, attenuation
        and everything else do not depend on it.

    Returns
    -------
    Phantom
        ``truth["calcifications"]`` lists each MC with ``calc_id``,
        ``row``, ``col`` (fractional pixel indices), ``y_mm``, ``x_mm``,
        ``diameter_mm`` (equal-area diameter of the projected footprint),
        ``contrast`` (see the module docstring), ``contrast_log``,
        ``cnr``, ``noise_sd``, ``delta_mu`` and ``cluster_id`` (-1 when
        single) and ``shape`` (``"round"`` or ``"linear"``); stacks add
        ``slice`` and ``z_mm``.  ``truth["clusters"]``
        gives each cluster's centroid, ``n_calcifications`` and
        ``max_extent_mm`` (largest centre-to-centre distance).
        ``truth["benign_calcifications"]`` and ``truth["curvilinear"]``
        (vessels and ducts as polylines in mm, 2 mm steps, with radii)
        locate the main false-positive sources; ``truth["breast_mask_rle"]``
        is the breast mask (:func:`rle_to_mask`).
    """
    if shape is not None:
        shape = (int(shape[0]), int(shape[1]))
        size_mm = (shape[0] * spacing_mm, shape[1] * spacing_mm)
    size_mm = (float(size_mm[0]), float(size_mm[1]))
    _check_params(spacing_mm, size_mm, density, difficulty, n_clusters, n_singles, n_slices, slice_mm)
    if mc_shapes not in MC_SHAPES:
        raise InvalidParameterError(f"mc_shapes must be one of {', '.join(MC_SHAPES)}, got {mc_shapes!r}")
    if laterality not in ("L", "R"):
        raise InvalidParameterError(f"laterality must be 'L' or 'R', got {laterality!r}")
    if shape is None:
        shape = (int(round(size_mm[0] / spacing_mm)), int(round(size_mm[1] / spacing_mm)))
    preset = DIFFICULTIES[difficulty]
    mdm = tuple(mc_delta_mu) if mc_delta_mu is not None else preset["mc_delta_mu"]
    if not (0 < mdm[0] <= mdm[1]):
        raise InvalidParameterError(f"mc_delta_mu must be 0 < low <= high, got {mdm}")

    scene = _build_scene(
        seed, spacing_mm, size_mm, shape, n_clusters, n_singles, difficulty, density,
        vessels, benign, mcs, mdm, thickness_mm, mc_shapes,
    )
    omit = set(int(i) for i in omit_calc_ids)
    kw = dict(
        quanta_per_mm2=preset["quanta_per_mm2"],
        electronic_noise=preset["electronic_noise"],
        for_processing=for_processing,
        omit=omit,
        equalize=bool(equalize) and not for_processing,
    )
    if n_slices is None:
        out, free, mask, records, extra = _render(scene, **kw)
        zinfo = None
    else:
        out, free, mask, records, extra, zinfo = _render_stack(scene, n_slices, slice_mm, **kw)

    flip = laterality == "R"
    ncols = shape[1]
    if flip:
        out = out[..., ::-1]
        free = free[..., ::-1]
        mask = mask[:, ::-1]

    pixels = np.clip(np.rint(out), 0, 65535).astype(np.uint16)

    calcs = []
    for rec in records:
        mc = scene.mcs[rec["index"]]
        x = mc.x
        col = x / spacing_mm
        if flip:
            col = (ncols - 1) - col
        row = mc.y / spacing_mm
        item = {
            "calc_id": int(rec["index"]),
            "row": float(row),
            "col": float(col),
            "y_mm": float(row * spacing_mm),
            "x_mm": float(col * spacing_mm),
            "diameter_mm": float(rec["diameter_mm"]),
            "contrast": float(rec["contrast"]),
            "contrast_log": float(rec["contrast_log"]),
            "cnr": float(rec["cnr"]),
            "noise_sd": float(rec["noise_sd"]),
            "delta_mu": float(mc.delta_mu),
            "cluster_id": int(mc.cluster_id),
            "shape": mc.shape,
        }
        if zinfo is not None:
            item = {"slice": int(rec["slice"]), "z_mm": float(rec["slice"] * slice_mm), **item}
        calcs.append(item)

    clusters = []
    for cid in scene.clusters:
        members = [c for c in calcs if c["cluster_id"] == cid]
        if not members:
            continue
        ys = np.array([c["y_mm"] for c in members])
        xs = np.array([c["x_mm"] for c in members])
        ext = 0.0
        if len(members) > 1:
            ext = float(np.max(np.hypot(ys[:, None] - ys[None, :], xs[:, None] - xs[None, :])))
        cy, cx = float(ys.mean()), float(xs.mean())
        item = {
            "cluster_id": int(cid),
            "row": cy / spacing_mm,
            "col": cx / spacing_mm,
            "y_mm": cy,
            "x_mm": cx,
            "n_calcifications": len(members),
            "max_extent_mm": ext,
        }
        if zinfo is not None:
            sl = int(round(np.median([c["slice"] for c in members])))
            item = {"slice": sl, "z_mm": sl * slice_mm, **item}
        clusters.append(item)

    sp_tuple = (spacing_mm, spacing_mm) if zinfo is None else (slice_mm, spacing_mm, spacing_mm)
    params = {
        "spacing_mm": spacing_mm,
        "size_mm": list(size_mm),
        "n_clusters": n_clusters,
        "n_singles": n_singles,
        "difficulty": difficulty,
        "density": density,
        "vessels": bool(vessels),
        "benign": bool(benign),
        "mcs": bool(mcs),
        "for_processing": bool(for_processing),
        "n_slices": n_slices,
        "slice_mm": slice_mm,
        "laterality": laterality,
        "view": view,
        "mc_delta_mu": list(mdm),
        "thickness_mm": scene.thickness,
        "psf_sigma_px": scene.acq["psf_sigma_px"],
        "scatter_to_primary": scene.acq["spr"],
        "quanta_per_pixel": extra["N"],
        "electronic_noise_quanta": extra["e_sd"],
        "omit_calc_ids": sorted(omit),
        "equalize": bool(equalize) and not for_processing,
    }
    if for_processing:
        params.update(raw_offset=RAW_OFFSET, raw_gain=RAW_FULL_SCALE / extra["N"])
    else:
        params.update(presentation_offset=PRESENTATION_OFFSET, presentation_gain=PRESENTATION_GAIN)
    truth = {
        "seed": int(seed),
        "spacing_mm": list(sp_tuple),
        "shape": list(pixels.shape),
        "laterality": laterality,
        "view": view,
        "calcifications": calcs,
        "clusters": clusters,
        "benign_calcifications": [
            {
                "row": b.y / spacing_mm,
                "col": ((ncols - 1) - b.x / spacing_mm) if flip else b.x / spacing_mm,
                "diameter_mm": 2 * b.r,
                "kind": "eggshell" if b.shell > 0 else ("popcorn" if len(b.lobes) else "coarse"),
            }
            for b in scene.benign
        ],
        "curvilinear": [
            {
                "kind": cv.kind,
                "y_mm": [round(float(v), 3) for v in cv.pts[::4, 0]] + [round(float(cv.pts[-1, 0]), 3)],
                "x_mm": [
                    round(float(((ncols - 1) * spacing_mm - v) if flip else v), 3)
                    for v in list(cv.pts[::4, 1]) + [cv.pts[-1, 1]]
                ],
                "radius_mm": [round(float(v), 3) for v in cv.radius[::4]] + [round(float(cv.radius[-1]), 3)],
            }
            for cv in scene.curves
        ],
        "breast_mask_rle": mask_to_rle(mask),
        "params": params,
    }
    truth["benign_calcifications"] = [
        {**b, "y_mm": b["row"] * spacing_mm, "x_mm": b["col"] * spacing_mm}
        for b in truth["benign_calcifications"]
    ]
    meta = {
        "source_path": None,
        "name": f"phantom-{seed}",
        "modality": "MG",
        "laterality": laterality,
        "view": view,
        "presentation_intent": "FOR PROCESSING" if for_processing else "FOR PRESENTATION",
        "photometric": "MONOCHROME2",
        "spacing_source": "phantom",
        "synthetic": True,
    }
    if for_processing:
        meta["for_processing"] = {"raw_offset": RAW_OFFSET, "raw_gain": RAW_FULL_SCALE / extra["N"]}
    image = MammoImage(pixels=pixels, spacing_mm=tuple(float(s) for s in sp_tuple), metadata=meta)
    return Phantom(
        image=image,
        truth=truth,
        breast_mask=np.ascontiguousarray(mask),
        noise_free=np.ascontiguousarray(free) if return_noise_free else None,
    )


# --------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------
def write_phantom(phantom: Phantom, out_dir, stem: str | None = None, formats=("tiff",),
                  kept: dict | None = None) -> dict:
    """Write a phantom's image and truth.

    Parameters
    ----------
    phantom : Phantom
    out_dir : str or os.PathLike
        Created if missing.
    stem : str, optional
        File stem (default ``phantom.image.metadata["name"]``).
    formats : iterable of {"tiff", "dicom"}
        ``tiff`` writes ``<stem>.tif`` with resolution tags (pixels per cm)
        and ImageJ spacing metadata; ``dicom`` writes ``<stem>.dcm``, a
        Digital Mammography X-Ray image (MONOCHROME2, PixelSpacing and
        ImagerPixelSpacing).  The truth is always written to
        ``<stem>.truth.json``.
    kept : dict, optional
        Filled with ``{file name: {"kept_as": backup name, "why": reason}}``
        when an existing ``<stem>.truth.json`` other than the one about to be
        written (edited since, or made with other options) was copied to
        ``<stem>.truth.json.bak`` (``.bak.2``, ...) first: a truth file is
        never lost (see :func:`napari_calc.core.pipeline.keep_edited_outputs`).

    Returns
    -------
    dict
        ``{"tiff": Path, "dicom": Path, "truth": Path}`` for what was written.
    """
    out_dir = Path(out_dir)
    stem = stem or phantom.image.metadata.get("name", "phantom")
    formats = tuple(formats)
    for f in formats:
        if f not in ("tiff", "dicom"):
            raise InvalidParameterError(f"unknown phantom format {f!r} (use tiff or dicom)")
    truth_path = out_dir / f"{stem}.truth.json"
    truth_text = json.dumps(phantom.truth, indent=1) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    k = _keep_other_truth(truth_path, truth_text, phantom.truth)  # before anything is written
    if k is not None and kept is not None:
        kept[truth_path.name] = k
    written = {}
    if "tiff" in formats:
        p = out_dir / f"{stem}.tif"
        _write_tiff(phantom, p)
        written["tiff"] = p
    if "dicom" in formats:
        p = out_dir / f"{stem}.dcm"
        _write_dicom(phantom, p)
        written["dicom"] = p
    atomic_write_text(truth_path, truth_text)
    written["truth"] = truth_path
    return written


def _keep_other_truth(path: Path, text: str, truth: dict) -> dict | None:
    """Copy an existing truth file at ``path`` that differs from ``text`` to
    ``<name>.bak`` (never overwriting a backup); ``{"kept_as", "why"}`` or
    None when there was nothing to keep. A truth is often corrected by hand,
    and nothing tells such a file from one made with other options: both
    are kept."""
    import shutil

    from .atomic import atomic_write
    from .review import backup_path

    try:
        old = path.read_bytes()
    except FileNotFoundError:
        return None
    if old == text.encode("utf-8"):
        return None  # the same phantom again
    try:
        prev = json.loads(old)
        same_make = (isinstance(prev, dict) and prev.get("seed") == truth.get("seed")
                     and prev.get("params") == json.loads(json.dumps(truth.get("params"))))
    except ValueError:
        same_make = False
    why = "edited since it was written" if same_make else "made with other options or edited"
    bak = backup_path(path)
    with open(path, "rb") as src, atomic_write(bak, "wb", encoding=None) as dst:
        shutil.copyfileobj(src, dst)
    return {"kept_as": bak.name, "why": why}


def _write_tiff(phantom, path):
    import tifffile

    img = phantom.image
    px = img.pixels
    sp = img.spacing_mm
    row_mm, col_mm = sp[-2], sp[-1]
    # ImageJ takes XResolution as pixels per its "unit"; use cm everywhere so
    # the baseline TIFF tags (ResolutionUnit = CENTIMETER) and the ImageJ
    # metadata say the same thing.
    ij = {"unit": "cm", "axes": "ZYX" if px.ndim == 3 else "YX"}
    intent = img.metadata.get("presentation_intent", "FOR PRESENTATION")
    info = [f"napari-calc phantom {img.metadata.get('name', '')}", f"presentation_intent={intent}"]
    if intent == "FOR PROCESSING":
        info.append("raw linear exposure: dense is dark; use -log(pixels)")
    ij["Info"] = "\n".join(info)
    if px.ndim == 3:
        ij["spacing"] = float(sp[0]) / 10.0
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        px,
        imagej=True,
        resolution=(10.0 / col_mm, 10.0 / row_mm),  # pixels per cm
        resolutionunit="CENTIMETER",
        metadata=ij,
    )
    atomic_write_bytes(path, buf.getvalue())


def _code(value, scheme, meaning):
    from pydicom.dataset import Dataset

    c = Dataset()
    c.CodeValue = value
    c.CodingSchemeDesignator = scheme
    c.CodeMeaning = meaning
    return c


_VIEW_CODES = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "ML": ("399260004", "medio-lateral"),
    "LM": ("399352003", "latero-medial"),
}


def _write_dicom(phantom, path):
    """Digital Mammography X-Ray Image (For Presentation / For Processing),
    or Breast Tomosynthesis Image for stacks."""
    import datetime

    import pydicom
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    img = phantom.image
    meta = img.metadata
    px = img.pixels
    for_proc = meta.get("presentation_intent") == "FOR PROCESSING"
    stack = px.ndim == 3
    if stack:
        sop_class = "1.2.840.10008.5.1.4.1.1.13.1.3"  # Breast Tomosynthesis Image Storage
    elif for_proc:
        sop_class = "1.2.840.10008.5.1.4.1.1.1.2.1"  # Digital Mammography For Processing
    else:
        sop_class = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography For Presentation
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = sop_class
    sop_uid = generate_uid()
    fm.MediaStorageSOPInstanceUID = sop_uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=fm, preamble=b"\0" * 128)
    now = datetime.datetime.now(datetime.timezone.utc)
    lat = meta.get("laterality", "L")
    view = meta.get("view", "CC")
    sp = img.spacing_mm
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Modality = "MG"
    ds.Manufacturer = "napari-calc"
    ds.ManufacturerModelName = "synthetic phantom"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = "napari-calc phantom"
    ds.PatientName = f"Phantom^{meta.get('name', 'phantom')}"
    ds.PatientID = str(meta.get("name", "phantom"))
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.BurnedInAnnotation = "NO"
    ds.BodyPartExamined = "BREAST"
    if not stack:
        ds.ImageLaterality = lat
        ds.AnatomicRegionSequence = Sequence([_code("76752008", "SCT", "Breast")])
    vcode = _VIEW_CODES.get(view)
    vitem = _code(vcode[0], "SCT", vcode[1]) if vcode else None
    if vitem is not None:
        vitem.ViewModifierCodeSequence = Sequence([])
    ds.ViewCodeSequence = Sequence([vitem] if vitem is not None else [])
    ds.AcquisitionContextSequence = Sequence([])
    if not stack:
        ds.PresentationIntentType = "FOR PROCESSING" if for_proc else "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.Rows, ds.Columns = int(px.shape[-2]), int(px.shape[-1])
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    pix = [f"{sp[-2]:.6g}", f"{sp[-1]:.6g}"]
    # presentation pixels are proportional to -log(exposure): sign -1
    # (higher value = less beam intensity); raw data are linear, sign +1.
    relation, rel_sign = ("LIN", 1) if for_proc else ("LOG", -1)
    if not stack:
        ds.PatientOrientation = ["A", "R"] if lat == "L" else ["P", "L"]
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.ViewPosition = view
        ds.PositionerType = "MAMMOGRAPHIC"
        ds.OrganExposed = "BREAST"
        ds.DetectorType = "DIRECT"
        ds.PixelIntensityRelationship = relation
        ds.PixelIntensityRelationshipSign = rel_sign
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.PixelSpacing = pix
        ds.ImagerPixelSpacing = pix
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "synthetic phantom: exact"
        if not for_proc:
            sel = px[phantom.breast_mask] if phantom.breast_mask.any() else px.ravel()
            lo, hi = np.percentile(sel, [1, 99.5])
            ds.WindowCenter = f"{(lo + hi) / 2:.1f}"
            ds.WindowWidth = f"{max(hi - lo, 1):.1f}"
            ds.VOILUTFunction = "LINEAR"
    else:
        n = int(px.shape[0])
        ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]
        ds.NumberOfFrames = n
        ds.ContentQualification = "RESEARCH"
        ds.BreastImplantPresent = "NO"
        ds.PartialView = "NO"
        ds.VolumetricProperties = "VOLUME"
        ds.PixelPresentation = "MONOCHROME"
        ds.VolumeBasedCalculationTechnique = "TOMOSYNTHESIS"
        acq_dt = now.strftime("%Y%m%d%H%M%S")
        ds.DimensionOrganizationType = "3D"
        shared = Dataset()
        pm = Dataset()
        pm.PixelSpacing = pix
        pm.SliceThickness = f"{sp[0]:.6g}"
        pm.SpacingBetweenSlices = f"{sp[0]:.6g}"
        shared.PixelMeasuresSequence = Sequence([pm])
        po = Dataset()
        po.ImageOrientationPatient = [0, 1, 0, 1, 0, 0] if lat == "L" else [0, -1, 0, 1, 0, 0]
        shared.PlaneOrientationSequence = Sequence([po])
        pvt = Dataset()
        pvt.RescaleIntercept = 0
        pvt.RescaleSlope = 1
        pvt.RescaleType = "US"
        shared.PixelValueTransformationSequence = Sequence([pvt])
        fa = Dataset()
        fa.AnatomicRegionSequence = Sequence([_code("76752008", "SCT", "Breast")])
        fa.FrameLaterality = lat
        shared.FrameAnatomySequence = Sequence([fa])
        xr = Dataset()
        xr.PixelIntensityRelationship = relation
        xr.PixelIntensityRelationshipSign = rel_sign
        shared.XRay3DFrameTypeSequence = Sequence([])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        per = []
        for k in range(n):
            f = Dataset()
            pp = Dataset()
            pp.ImagePositionPatient = [0.0, 0.0, float(k * sp[0])]
            f.PlanePositionSequence = Sequence([pp])
            fc = Dataset()
            fc.DimensionIndexValues = [k + 1]
            fc.FrameAcquisitionNumber = 1
            fc.FrameReferenceDateTime = acq_dt
            fc.FrameAcquisitionDateTime = acq_dt
            fc.FrameAcquisitionDuration = 1.0
            f.FrameContentSequence = Sequence([fc])
            ft = Dataset()
            ft.FrameType = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]
            ft.PixelPresentation = "MONOCHROME"
            ft.VolumetricProperties = "VOLUME"
            ft.VolumeBasedCalculationTechnique = "TOMOSYNTHESIS"
            f.XRay3DFrameTypeSequence = Sequence([ft])
            per.append(f)
        ds.PerFrameFunctionalGroupsSequence = Sequence(per)
        del shared.XRay3DFrameTypeSequence
        dim_uid = generate_uid()
        di = Dataset()
        di.DimensionOrganizationUID = dim_uid
        ds.DimensionOrganizationSequence = Sequence([di])
        dd = Dataset()
        dd.DimensionOrganizationUID = dim_uid
        dd.DimensionIndexPointer = 0x00200032
        dd.FunctionalGroupPointer = 0x00209113
        ds.DimensionIndexSequence = Sequence([dd])
    ds.PixelData = np.ascontiguousarray(px, dtype="<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    atomic_write_bytes(path, buf.getvalue())


def mask_to_rle(mask: np.ndarray) -> dict:
    """Run-length code a 2-D boolean mask row by row.

    Returns ``{"shape": [rows, cols], "runs": [[row, start, stop], ...]}``
    with half-open column ranges ``[start, stop)``.
    """
    mask = np.asarray(mask, bool)
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rs, cs = np.nonzero(d == 1)
    re, ce = np.nonzero(d == -1)
    runs = [[int(r), int(a), int(b)] for r, a, b in zip(rs, cs, ce)]
    return {"shape": [int(mask.shape[0]), int(mask.shape[1])], "runs": runs}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Inverse of :func:`mask_to_rle` (e.g. ``truth["breast_mask_rle"]``)."""
    mask = np.zeros(tuple(rle["shape"]), bool)
    for r, a, b in rle["runs"]:
        mask[r, a:b] = True
    return mask


def load_truth(path) -> dict:
    """Read a ``<stem>.truth.json`` written by :func:`write_phantom`.

    Raises
    ------
    NapariCalcError
        If the file is missing or not a truth file.
    """
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as f:
            truth = json.load(f)
    except FileNotFoundError:
        raise UnreadableImageError("no such file", p) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UnreadableImageError(f"cannot read: {e.strerror or e}", p) from None
    except json.JSONDecodeError as e:
        raise NapariCalcError(f"not valid JSON (line {e.lineno})", p) from None
    if not isinstance(truth, dict) or "calcifications" not in truth or "spacing_mm" not in truth:
        raise NapariCalcError("not a phantom truth file (needs 'calcifications' and 'spacing_mm')", p)
    return truth
