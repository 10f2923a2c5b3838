r"""Synthetic chest X-ray data set laid out exactly like NIH ChestX-ray14 (the embedded demo data).

On a machine without the NIH download every command of the project still runs end to end on this
set. It is laid out like the real release, so the same Beam job reads both:

  python -m beam_pipelines.demo_data --output_dir=data/demo --num_images=2000 --image_size=1024

writes

  data/demo/images_001/images/00000001_000.png ...   8-bit grayscale PNGs, image_size x image_size
  data/demo/Data_Entry_2017.csv                      the 2017 label file format (header with the
                                                     trailing comma, zero-padded fields, ages `058Y`)
  data/demo/train_val_list.txt, test_list.txt        patient-disjoint, ~77/23 of the images, sorted,
                                                     no newline at the end (like NIH's)

Labels follow NIH's prevalences and co-occurrence (No Finding ~54%, Infiltration, Effusion and
Atelectasis most common, Hernia rarest, ~17% of rows with several findings). Each of the 14 findings
is drawn as its own visible pattern on a chest-X-ray-like background (body, lungs, ribs, clavicles,
spine, mediastinum, heart, diaphragm, gastric bubble, noise); see `render_image`. Position, size and
intensity of every pattern vary, and so do the patient's pose, the anatomy and the exposure.

Output is deterministic for a seed: each image has its own random generator derived from the seed
and the image's number, so the number of worker processes does not change a byte.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import multiprocessing
import os
import posixpath
import statistics
import struct
import time
import zlib
from collections.abc import Collection, Sequence

import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from PIL import Image

from tfrecords import schema

# ---------------------------------------------------------------------------------------------
# The NIH layout and file format.

CSV_NAME = "Data_Entry_2017.csv"
TRAIN_VAL_LIST_NAME = "train_val_list.txt"
TEST_LIST_NAME = "test_list.txt"
IMAGES_SUBDIR = posixpath.join("images_001", "images")
# The real 2017 header: the two bracketed column names each contain a comma and the line ends with
# one, so it has 12 fields while every data row has 11. Lines end with CRLF, as in NIH's file.
CSV_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
CSV_LINE_END = "\r\n"
MAX_FOLLOW_UPS = 1000  # `Follow-up #` has three digits.
MAX_PATIENTS = 10**8  # `Patient ID` has eight digits.

# ---------------------------------------------------------------------------------------------
# Label statistics of the 2017 file (112,120 images; see shared/nih/README.md).

NIH_NUM_IMAGES = 112120
NIH_NO_FINDING = 60412
NIH_FINDING_COUNTS: dict[str, int] = {
    "Atelectasis": 11535,
    "Cardiomegaly": 2772,
    "Consolidation": 4667,
    "Edema": 2303,
    "Effusion": 13307,
    "Emphysema": 2516,
    "Fibrosis": 1686,
    "Hernia": 227,
    "Infiltration": 19870,
    "Mass": 5746,
    "Nodule": 6323,
    "Pleural_Thickening": 3385,
    "Pneumonia": 1353,
    "Pneumothorax": 5298,
}
# NIH's Hernia (0.2%) would give ~4 positives in 2,000 images and none in a 10% validation split,
# where its AUC is undefined and nothing can be learnt. So every finding gets at least this
# prevalence; the rest is scaled so that the findings per image (0.72) stay NIH's. The order of the
# findings by prevalence is kept (Infiltration 11.6%, Effusion 8.6%, Atelectasis 7.8%, ...,
# Hernia 2.6%). 2.5% rather than 2%: a tiny CNN's test AUC on the rarest labels (~30 training
# positives at 2%) was the weakest and the noisiest (benchmarks/demo_separability.py).
MIN_PREVALENCE = 0.025
# Findings are drawn from a one-factor Gaussian copula: finding i is present when
# sqrt(rho) * s + sqrt(1 - rho) * e_i < Phi^-1(p_i), with a shared "how sick" factor s. The
# marginals are exactly p_i; rho sets the co-occurrence. rho = 0.133 was solved (quadrature and
# brentq over s) so that P(no finding) = 60412 / 112120 = 53.9%; it then gives 17.3% of rows with
# two or more findings (NIH: 18.5%), and the most common pairs are NIH's: Effusion+Infiltration,
# Atelectasis+Infiltration, Atelectasis+Effusion.
LATENT_CORRELATION = 0.133
# Half of the shared factor belongs to the patient, so follow-ups of one patient tend to share
# findings, as in NIH.
PATIENT_SHARE = 0.5

# NIH: 30,805 patients for 112,120 images; the demo uses ~0.3 patients per image (600 for 2,000)
# so that most patients have several follow-ups.
PATIENTS_PER_IMAGE = 0.3
# The official test list holds 25,596 of the 112,120 images (22.8%).
TEST_FRACTION = 25596 / NIH_NUM_IMAGES
MALE_FRACTION = 0.565
PA_FRACTION = 0.60
# The most common (width, height, pixel spacing) of the originals, with their shares.
ORIGINAL_GEOMETRIES = (
    (2500, 2048, "0.168", 0.33),
    (2992, 2991, "0.143", 0.20),
    (3056, 2544, "0.139", 0.14),
    (2500, 2048, "0.171", 0.09),
    (2048, 2500, "0.168", 0.08),
    (2021, 2021, "0.194311", 0.04),
    (2544, 3056, "0.139", 0.02),
    (2048, 2500, "0.171", 0.10),
)

# ---------------------------------------------------------------------------------------------
# Rendering.

# Images are rendered at most at this size and scaled up bilinearly. The patterns are drawn with
# analytic soft edges a few render pixels wide, so what survives the Beam job's resize to 256 and the
# trainer's 128 is the same either way. Measured side by side in one process on this machine
# (benchmarks/demo_render.py, 20 images to 1024x1024, shared 2 cores under load ~8), per image:
# render at 256 + upscale 19.6 ms, at 512 100 ms, at 1024 459 ms (23x the 256 path); with the PNG at
# zlib level 1 the 256 path is 15x faster end to end (31.8 vs 487 ms).
RENDER_SIZE = 256
# zlib level 1, Up-filtered rows (`encode_png`), measured in the same run on the 256 path: 12 ms and
# 242 KB per 1024x1024 image; level 3: 23 ms, 204 KB; level 6: 111 ms, 173 KB. PIL's encoder: 52 ms
# and 303 KB at level 1, 192 ms and 244 KB at its default level 6. Disk is cheap next to the
# 15-minute `make train` budget: 2,000 images take 480 MB.
PNG_COMPRESS_LEVEL = 1

# Output intensities (0 black .. 1 white) of the anatomy before exposure and noise.
_AIR = 0.04
_SOFT_TISSUE = 0.60
_LUNG = 0.27
_HILUM = (0.10, 0.44)  # (t, y) of the lung hilum, t = distance from the midline.


@dataclasses.dataclass(frozen=True)
class DemoImage:
    """One row of the generated `Data_Entry_2017.csv`."""

    image_index: str
    findings: tuple[str, ...]  # Empty for "No Finding".
    follow_up: int
    patient_id: int
    age: int
    sex: str
    view_position: str
    original_width: int
    original_height: int
    pixel_spacing: str

    @property
    def finding_labels(self) -> str:
        """NIH's `Finding Labels` field: findings joined by "|" or "No Finding"."""
        return schema.LABEL_SEPARATOR.join(self.findings) if self.findings else schema.NO_FINDING

    def csv_line(self) -> str:
        """The row as NIH writes it, without the line end."""
        return ",".join(
            [
                self.image_index,
                self.finding_labels,
                f"{self.follow_up:03d}",
                f"{self.patient_id:08d}",
                f"{self.age:03d}Y",
                self.sex,
                self.view_position,
                str(self.original_width),
                str(self.original_height),
                self.pixel_spacing,
                self.pixel_spacing,
            ]
        )


def image_index_name(patient_id: int, follow_up: int) -> str:
    """NIH's file name of an image, e.g. `00000001_000.png`."""
    return f"{patient_id:08d}_{follow_up:03d}.png"


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


# ---------------------------------------------------------------------------------------------
# Labels and metadata.


def finding_prevalences() -> np.ndarray:
    """The per-image prevalence of each of the 14 findings, in `schema.FINDINGS` order.

    NIH's prevalences mapped affinely so that none is below `MIN_PREVALENCE` and their sum (the
    mean number of findings per image) stays NIH's.

    Returns:
      float64 array [14].
    """
    nih = np.array([NIH_FINDING_COUNTS[name] for name in schema.FINDINGS], np.float64) / NIH_NUM_IMAGES
    total = nih.sum()
    return MIN_PREVALENCE + nih * (total - len(nih) * MIN_PREVALENCE) / total


def sample_findings(rng: np.random.Generator, patient_of_image: np.ndarray) -> np.ndarray:
    """Draws the findings of every image (see `LATENT_CORRELATION`).

    Args:
      rng: the random generator.
      patient_of_image: int array [N], the patient (0..P-1) of each image; follow-ups of one
        patient share part of the latent factor.

    Returns:
      bool array [N, 14]: finding present, in `schema.FINDINGS` order. A row without any finding is
      "No Finding".
    """
    patient_of_image = np.asarray(patient_of_image)
    num_images = patient_of_image.shape[0]
    num_patients = int(patient_of_image.max()) + 1 if num_images else 0
    normal = statistics.NormalDist()
    thresholds = np.array([normal.inv_cdf(p) for p in finding_prevalences()])
    shared = math.sqrt(PATIENT_SHARE) * rng.standard_normal(num_patients)[patient_of_image]
    shared += math.sqrt(1.0 - PATIENT_SHARE) * rng.standard_normal(num_images)
    own = rng.standard_normal((num_images, len(thresholds)))
    latent = math.sqrt(LATENT_CORRELATION) * shared[:, None] + math.sqrt(1.0 - LATENT_CORRELATION) * own
    return latent < thresholds


def sample_follow_up_counts(rng: np.random.Generator, num_images: int, num_patients: int) -> np.ndarray:
    """Splits `num_images` among `num_patients`, each at least one, with a long tail like NIH's.

    Returns:
      int array [num_patients] summing to num_images, each in [1, MAX_FOLLOW_UPS].
    """
    counts = np.ones(num_patients, np.int64)
    extra = num_images - num_patients
    # Gamma(0.6) weights: most patients get a few follow-ups, some many (NIH: median 1, max 184).
    weights = rng.gamma(0.6, size=num_patients)
    counts += rng.multinomial(extra, weights / weights.sum())
    # Move any excess over three digits of follow-up to the patients with the fewest images.
    while counts.max() > MAX_FOLLOW_UPS:
        top = int(counts.argmax())
        excess = counts[top] - MAX_FOLLOW_UPS
        counts[top] = MAX_FOLLOW_UPS
        counts[np.argsort(counts, kind="stable")[:excess]] += 1
    return counts


def sample_images(num_images: int, *, num_patients: int | None = None, seed: int = 0) -> list[DemoImage]:
    """Draws the rows of the label file: patients, follow-ups, findings and metadata.

    Args:
      num_images: rows to draw.
      num_patients: patients to spread them over; default `round(0.3 * num_images)`, at least 1.
      seed: the random seed.

    Returns:
      The rows sorted by image index (patient, then follow-up), as in NIH's file.

    Raises:
      ValueError: num_images or num_patients is not positive, num_patients > num_images, or a
        patient would need more than 1,000 follow-ups.
    """
    _check_positive("num_images", num_images)
    if num_patients is None:
        num_patients = max(1, round(PATIENTS_PER_IMAGE * num_images))
    _check_positive("num_patients", num_patients)
    if num_patients > num_images:
        raise ValueError(
            f"num_patients must be at most num_images ({num_images}), got {num_patients}: "
            "every patient has at least one image."
        )
    if num_patients >= MAX_PATIENTS:
        raise ValueError(
            f"num_patients must be below {MAX_PATIENTS} (8-digit Patient ID), got {num_patients}."
        )
    if num_images > MAX_FOLLOW_UPS * num_patients:
        raise ValueError(
            f"num_images ({num_images}) needs more than {MAX_FOLLOW_UPS} follow-ups per patient with "
            f"num_patients={num_patients}; raise num_patients."
        )
    rng = np.random.default_rng([seed, 0])
    counts = sample_follow_up_counts(rng, num_images, num_patients)
    patient_of_image = np.repeat(np.arange(num_patients), counts)
    follow_up = np.concatenate([np.arange(c) for c in counts])
    findings = sample_findings(rng, patient_of_image)

    base_age = np.clip(np.round(rng.normal(47.0, 16.8, num_patients)), 1, 95).astype(np.int64)
    years_per_follow_up = rng.uniform(0.0, 0.4, num_patients)
    is_male = rng.random(num_patients) < MALE_FRACTION
    is_pa = rng.random(num_images) < PA_FRACTION
    shares = np.array([g[3] for g in ORIGINAL_GEOMETRIES])
    geometry = rng.choice(len(ORIGINAL_GEOMETRIES), size=num_images, p=shares / shares.sum())

    rows = []
    for i in range(num_images):
        patient = int(patient_of_image[i])
        width, height, spacing, _ = ORIGINAL_GEOMETRIES[geometry[i]]
        rows.append(
            DemoImage(
                image_index=image_index_name(patient + 1, int(follow_up[i])),
                findings=tuple(name for name, on in zip(schema.FINDINGS, findings[i]) if on),
                follow_up=int(follow_up[i]),
                patient_id=patient + 1,
                age=int(min(99, base_age[patient] + int(follow_up[i] * years_per_follow_up[patient]))),
                sex="M" if is_male[patient] else "F",
                view_position="PA" if is_pa[i] else "AP",
                original_width=width,
                original_height=height,
                pixel_spacing=spacing,
            )
        )
    return rows


def split_patients(rows: Sequence[DemoImage], *, seed: int = 0) -> tuple[list[str], list[str]]:
    """Splits the images into NIH's official lists, patient-disjoint.

    Patients are shuffled and taken into the test list until it holds `TEST_FRACTION` of the images.

    Args:
      rows: the images.
      seed: the random seed.

    Returns:
      (train_val image indices, test image indices), each sorted.
    """
    by_patient: dict[int, list[str]] = {}
    for row in rows:
        by_patient.setdefault(row.patient_id, []).append(row.image_index)
    patients = sorted(by_patient)
    order = np.random.default_rng([seed, 2]).permutation(len(patients))
    target = TEST_FRACTION * len(rows)
    test: list[str] = []
    train_val: list[str] = []
    for k in order:
        names = by_patient[patients[k]]
        # Take the patient when it brings the test list closer to its target than leaving it out.
        if abs(len(test) + len(names) - target) < abs(len(test) - target):
            test.extend(names)
        else:
            train_val.extend(names)
    return sorted(train_val), sorted(test)


# ---------------------------------------------------------------------------------------------
# Rendering one image.
#
# Canonical coordinates: x (left to right) and y (top to bottom) in [0, 1] over the image. The
# image's left is the patient's right, as on every PA chest film. For one side of the chest,
# t = |x - 0.5| is the distance from the midline; side -1 is the image's left half, +1 its right.


def _ramp(d: np.ndarray | float, width: float) -> np.ndarray:
    """A soft step: 0 for d <= -width/2, 1 for d >= width/2, linear between (cheaper than a sigmoid)."""
    return np.clip(0.5 + np.asarray(d, np.float32) / width, 0.0, 1.0)


def _lerp(image: np.ndarray, target: float | np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composites `target` over `image` with opacity `alpha`."""
    return image + (target - image) * alpha


def _ellipse(x, y, cx, cy, a, b, *, angle=0.0, edge=0.006):
    """Soft-edged filled ellipse with semi-axes a, b, rotated by angle (radians)."""
    dx, dy = x - cx, y - cy
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    rho = np.sqrt((dx / a) ** 2 + (dy / b) ** 2)
    return _ramp((1.0 - rho) * min(a, b), edge)


def _segment(x, y, p0, p1, half_width, *, edge=0.004):
    """Soft-edged band of half_width around the segment p0-p1."""
    (x0, y0), (x1, y1) = p0, p1
    vx, vy = x1 - x0, y1 - y0
    h = np.clip(((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy + 1e-12), 0.0, 1.0)
    distance = np.sqrt((x - x0 - h * vx) ** 2 + (y - y0 - h * vy) ** 2)
    return _ramp(half_width - distance, edge)


def _triangle(x, y, p0, p1, p2, *, edge=0.004):
    """Soft-edged filled triangle."""
    points = (p0, p1, p2)
    # Orientation, so that "inside" is the positive side of every edge.
    area = (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p1[1] - p0[1]) * (p2[0] - p0[0])
    sign = 1.0 if area > 0 else -1.0
    inside = None
    for k in range(3):
        (ax, ay), (bx, by) = points[k], points[(k + 1) % 3]
        length = math.hypot(bx - ax, by - ay) + 1e-12
        distance = sign * ((bx - ax) * (y - ay) - (by - ay) * (x - ax)) / length
        step = _ramp(distance, edge)
        inside = step if inside is None else np.minimum(inside, step)
    return inside


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in about [-1, 1]: `cells` x `cells` normals upscaled bicubically."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    field = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(field, np.float32) * 0.5


@functools.lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    centers = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(centers, centers)  # (x, y), each [size, size]


@dataclasses.dataclass
class _Anatomy:
    """Per-image anatomy; some findings change it before drawing (e.g. a bigger heart)."""

    top: float  # Lung apex height.
    bottom: list[float]  # Costophrenic angle height, per side (image left, image right).
    dome: list[float]  # Diaphragm dome height above the angle, per side.
    lateral: float  # Lung half-width from the midline.
    lung_value: float  # Lung brightness.
    markings: float  # Strength of the vascular markings.
    heart_scale: tuple[float, float]  # (width, height) factors of the heart silhouette.
    heart_shift: float
    rib_phase: float
    rib_period: float
    gastric_bubble: bool


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    bottom = rng.uniform(0.72, 0.76)
    return _Anatomy(
        top=rng.uniform(0.12, 0.15),
        bottom=[bottom, bottom + rng.uniform(0.0, 0.025)],
        dome=[rng.uniform(0.045, 0.07), rng.uniform(0.04, 0.065)],
        lateral=rng.uniform(0.37, 0.40),
        lung_value=_LUNG + rng.uniform(-0.03, 0.03),
        markings=rng.uniform(0.75, 1.0),
        heart_scale=(rng.uniform(0.92, 1.06), rng.uniform(0.95, 1.05)),
        heart_shift=rng.uniform(-0.015, 0.015),
        rib_phase=rng.uniform(0.0, 1.0),
        rib_period=rng.uniform(0.064, 0.074),
        gastric_bubble=bool(rng.random() < 0.6),
    )


def _diaphragm(t, anatomy: _Anatomy, side: int):
    """Height of one hemidiaphragm at distance t from the midline: a dome, lowest at the angle."""
    k = 0 if side < 0 else 1
    across = np.clip((t - 0.22) / 0.2, -1.0, 1.0)
    return anatomy.bottom[k] - anatomy.dome[k] * (1.0 - across * across)


def _lung_field(t, y, anatomy: _Anatomy, side: int, *, inset: float = 0.0, edge: float = 0.008):
    """Soft mask of one lung in side coordinates (t from the midline); `inset` shrinks it."""
    apex = anatomy.top + inset + 2.4 * (t - 0.2) ** 2
    lateral_wall = anatomy.lateral - inset - 0.45 * (y - 0.6) ** 2
    mask = _ramp(y - apex, edge)
    mask = np.minimum(mask, _ramp(lateral_wall - t, edge))
    mask = np.minimum(mask, _ramp(t - 0.065 - 0.3 * inset, edge))
    return np.minimum(mask, _ramp(_diaphragm(t, anatomy, side) - inset - y, edge))


def _heart(x, y, anatomy: _Anatomy):
    """The cardiac silhouette: left ventricle (image right) and right atrium, scaled from its top."""
    sx, sy = anatomy.heart_scale
    hx = 0.5 + (x - 0.5 - anatomy.heart_shift) / sx
    hy = 0.46 + (y - 0.46) / sy
    ventricle = _ellipse(hx, hy, 0.545, 0.6, 0.15, 0.115, angle=-0.35, edge=0.012)
    atrium = _ellipse(hx, hy, 0.455, 0.585, 0.065, 0.09, edge=0.012)
    return np.maximum(ventricle, atrium)


def _random_lung_point(rng: np.random.Generator, side: int, *, margin: float = 0.0) -> tuple[float, float]:
    """A point well inside one lung (clear of the heart), in image coordinates."""
    t = rng.uniform(0.15 + margin * 0.5, 0.31 - margin)
    y = rng.uniform(0.26 + margin, 0.6 - margin * 0.5)
    return 0.5 + side * t, y


def _pick_side(rng: np.random.Generator) -> int:
    return -1 if rng.random() < 0.5 else 1


def _sides(rng: np.random.Generator, bilateral: float) -> tuple[int, ...]:
    return (-1, 1) if rng.random() < bilateral else (_pick_side(rng),)


def render_image(
    findings: Collection[str], rng: np.random.Generator, image_size: int, *, render_size: int = RENDER_SIZE
) -> np.ndarray:
    """Renders one synthetic frontal chest X-ray with the given findings planted.

    Each finding has its own pattern, with position, size and intensity drawn from `rng`:
      Atelectasis         dense triangular wedge with straight edges: upper lobe collapse against
                          the upper mediastinum, or lower lobe collapse on the diaphragm
      Cardiomegaly        heart silhouette 1.4-1.7x wider and 1.1-1.25x taller
      Consolidation       large homogeneous opacity against the chest wall, with dark branching air
                          bronchograms
      Edema               bilateral, symmetric perihilar "bat wing" haze, Kerley B lines at the
                          lateral bases
      Effusion            fluid at the bottom of a hemithorax with a meniscus rising laterally,
                          blunting the costophrenic angle (one or both sides)
      Emphysema           hyperinflated lungs: darker, taller, flat low diaphragm, few markings,
                          narrow heart
      Fibrosis            coarse reticular mesh in the peripheral lower zones of both lungs
      Hernia              round retrocardiac bubble with an air-fluid level, above the diaphragm
      Infiltration        a cluster of 4-8 fuzzy, ill-defined patches
      Mass                one large (radius 5.5-8.5% of the width), lobulated, sharp round opacity
      Nodule              1-3 small (radius 1.7-2.6%), bright, sharp round opacities
      Pleural_Thickening  bright band along the lateral chest wall and apex, inside the lung edge
      Pneumonia           opacity with a sharp straight upper border (a fissure) fading downwards
      Pneumothorax        black rim at the apex and lateral wall without lung markings, bounded by
                          the collapsed lung's bright edge

    The anatomy, the pose, the exposure and each finding draw from their own random streams, so an
    image with and without a finding differ only by that finding.

    Args:
      findings: names from `schema.FINDINGS`; empty (or just "No Finding") for a normal image.
      rng: the image's random generator.
      image_size: output height and width in pixels.
      render_size: the image is drawn at min(image_size, render_size) and scaled up bilinearly.

    Returns:
      uint8 array [image_size, image_size].

    Raises:
      ValueError: an unknown finding, "No Finding" together with a finding, or image_size <= 0.
    """
    _check_positive("image_size", image_size)
    _check_positive("render_size", render_size)
    wanted = set(findings)
    unknown = wanted - set(schema.LABELS)
    if unknown:
        raise ValueError(f"Unknown finding(s) {sorted(unknown)}; known: {', '.join(schema.FINDINGS)}.")
    if schema.NO_FINDING in wanted and len(wanted) > 1:
        raise ValueError(f"'No Finding' cannot be combined with findings, got {sorted(wanted)}.")
    wanted.discard(schema.NO_FINDING)
    streams = [np.random.default_rng(s) for s in rng.integers(0, 2**63 - 1, size=2 + len(schema.FINDINGS))]
    base_rng, noise_rng = streams[:2]
    finding_rngs = dict(zip(schema.FINDINGS, streams[2:]))

    size = min(image_size, render_size)
    px, py = _pixel_grid(size)
    # Patient pose: small rotation, scale and shift, applied by mapping pixels to canonical
    # coordinates, so every structure below moves together.
    angle = base_rng.uniform(-0.05, 0.05)
    scale = base_rng.uniform(0.93, 1.05)
    shift_x, shift_y = base_rng.uniform(-0.03, 0.03), base_rng.uniform(-0.03, 0.03)
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    dx, dy = px - 0.5 - shift_x, py - 0.5 - shift_y
    x = (0.5 + c * dx + s * dy).astype(np.float32)
    y = (0.5 - s * dx + c * dy).astype(np.float32)

    anatomy = _sample_anatomy(base_rng)
    # Findings that change the anatomy itself.
    if "Emphysema" in wanted:
        r = finding_rngs["Emphysema"]
        low = r.uniform(0.04, 0.06)
        anatomy.bottom = [b + low for b in anatomy.bottom]
        anatomy.dome = [d * 0.25 for d in anatomy.dome]
        anatomy.top -= 0.02
        anatomy.lung_value -= r.uniform(0.09, 0.12)
        anatomy.markings *= 0.25
        anatomy.heart_scale = (anatomy.heart_scale[0] * 0.85, anatomy.heart_scale[1])
    if "Cardiomegaly" in wanted:
        r = finding_rngs["Cardiomegaly"]
        anatomy.heart_scale = (r.uniform(1.4, 1.7), r.uniform(1.1, 1.25))
        anatomy.heart_shift = r.uniform(0.0, 0.03)

    t_of = {-1: (0.5 - x), 1: (x - 0.5)}
    lungs = {side: _lung_field(t_of[side], y, anatomy, side) for side in (-1, 1)}
    lung = np.maximum(lungs[-1], lungs[1])
    t_abs = np.abs(x - 0.5)

    # Body: neck and shoulders at the top, soft tissue thicker towards the sides.
    half_width = 0.47 - 0.3 * np.clip((0.16 - y) / 0.16, 0.0, 1.0) ** 2
    body = _ramp(half_width - t_abs, 0.04)
    image = _AIR + (_SOFT_TISSUE - _AIR) * body
    image += 0.07 * body * np.clip((t_abs - 0.32) / 0.12, 0.0, 1.0)
    # Abdomen below the diaphragm is brighter than the chest.
    diaphragm = np.where(x < 0.5, _diaphragm(t_of[-1], anatomy, -1), _diaphragm(t_of[1], anatomy, 1))
    image = _lerp(image, 0.74, 0.85 * body * _ramp(y - diaphragm, 0.015))

    # Lungs: darker in the middle and lower zones, with vessels radiating from the hila.
    lung_texture = anatomy.lung_value + 0.05 * np.clip(0.35 - y, 0.0, None) / 0.2
    lung_texture = lung_texture + 0.03 * _smooth_noise(base_rng, size, 6)
    markings = np.zeros_like(x)
    for side in (-1, 1):
        t = t_of[side]
        theta = np.arctan2(y - _HILUM[1], t - _HILUM[0])
        radius = np.sqrt((t - _HILUM[0]) ** 2 + (y - _HILUM[1]) ** 2)
        angles = np.linspace(-math.pi, math.pi, 121)
        profile = np.interp(theta, angles, base_rng.uniform(0.0, 1.0, 121)).astype(np.float32)
        vessels = np.clip((profile - 0.6) * 4.0, 0.0, 1.0) * np.exp(-radius / 0.16)
        markings += vessels * (t > 0) + 0.6 * np.exp(-((radius / 0.035) ** 2))
    markings *= 0.6 + 0.4 * _smooth_noise(base_rng, size, 16)
    lung_texture = lung_texture + 0.13 * anatomy.markings * markings

    air = np.zeros_like(x)
    if "Pneumothorax" in wanted:
        r = finding_rngs["Pneumothorax"]
        side = _pick_side(r)
        t = t_of[side]
        shrink = r.uniform(0.5, 0.7)
        cx, cy = 0.08, 0.72  # The lung collapses towards its base and the hilum.
        collapsed = _lung_field(cx + (t - cx) / shrink, cy + (y - cy) / shrink, anatomy, side, edge=0.005)
        air = lungs[side] * (1.0 - collapsed)
        lung_texture = _lerp(lung_texture, 0.04, air)
        lung_texture = lung_texture + 0.45 * (4.0 * collapsed * (1.0 - collapsed)) * lungs[side]
    image = _lerp(image, lung_texture, lung)

    # Ribs over each hemithorax: posterior arcs (convex upwards, falling laterally) and fainter
    # anterior ribs sloping the other way; spacing grows downwards.
    warped_y = y - 0.25 * (y - 0.1) ** 2
    for side in (-1, 1):
        t = t_of[side]
        cage = _ramp(t - 0.045, 0.02) * _ramp(anatomy.lateral + 0.045 - t, 0.03)
        cage *= _ramp(y - 0.1, 0.03) * _ramp(_diaphragm(t, anatomy, side) + 0.04 - y, 0.04)
        # Ribs show less over the pneumothorax's air, which is otherwise featureless.
        weight = cage * (0.45 + 0.55 * lung) * (1.0 - 0.6 * air)
        posterior = (warped_y - 1.5 * np.clip(t - 0.12, 0.0, None) ** 2 + 0.1 * t) / anatomy.rib_period
        frac = posterior + anatomy.rib_phase - np.floor(posterior + anatomy.rib_phase)
        image += 0.085 * weight * np.clip(1.0 - np.abs(frac - 0.5) / 0.23, 0.0, 1.0) ** 0.5
        anterior = (warped_y + 0.4 * t) / (anatomy.rib_period * 1.2)
        frac = anterior - np.floor(anterior)
        image += 0.035 * weight * np.clip(1.0 - np.abs(frac - 0.5) / 0.2, 0.0, 1.0)

    # Clavicles.
    for side in (-1, 1):
        clavicle = _segment(x, y, (0.5 + side * 0.06, 0.175), (0.5 + side * 0.32, 0.105), 0.015, edge=0.012)
        image = _lerp(image, 0.8, 0.75 * clavicle)

    # Mediastinum with the trachea, aortic knob, heart and spine.
    mediastinum = _ramp(0.065 + 0.03 * np.clip((y - 0.3) / 0.2, 0.0, 1.0) - t_abs, 0.025) * _ramp(
        0.72 - y, 0.05
    )
    image = _lerp(image, 0.72, mediastinum)
    trachea = _ramp(0.014 - np.abs(x - 0.5 + 0.004 * (y - 0.2) / 0.1), 0.01) * _ramp(0.36 - y, 0.04)
    image -= 0.1 * trachea
    image = _lerp(image, 0.74, _ellipse(x, y, 0.555, 0.31, 0.038, 0.034, edge=0.012))
    image = _lerp(image, 0.75, _heart(x, y, anatomy))
    vertebrae = 0.8 + 0.2 * np.cos(2 * math.pi * y / 0.045)
    image += 0.06 * _ramp(0.033 - t_abs, 0.012) * vertebrae

    # Gastric bubble under the image-right hemidiaphragm.
    if anatomy.gastric_bubble:
        gx = 0.5 + base_rng.uniform(0.12, 0.2)
        gy = float(_diaphragm(np.float32(gx - 0.5), anatomy, 1)) + base_rng.uniform(0.035, 0.05)
        # Fainter and flatter than a hiatal hernia's air, which it would otherwise resemble.
        image = _lerp(image, 0.5, 0.5 * _ellipse(x, y, gx, gy, base_rng.uniform(0.03, 0.045), 0.017))

    image = _plant_findings(image, wanted, finding_rngs, x, y, t_of, lungs, anatomy, size)

    # Exposure and noise: a smooth large-scale variation, grain, then contrast, brightness, gamma.
    image = image + 0.025 * _smooth_noise(noise_rng, size, 4)
    image = image + noise_rng.normal(0.0, 0.012, image.shape).astype(np.float32)
    contrast = noise_rng.uniform(0.85, 1.15)
    image = (image - 0.5) * contrast + 0.5 + noise_rng.uniform(-0.05, 0.05)
    image = np.clip(image, 0.0, 1.0) ** noise_rng.uniform(0.85, 1.15)
    pixels = (image * 255.0 + 0.5).astype(np.uint8)
    if size != image_size:
        pixels = np.asarray(
            Image.fromarray(pixels).resize((image_size, image_size), Image.Resampling.BILINEAR)
        )
    return pixels


def _plant_findings(image, wanted, rngs, x, y, t_of, lungs, anatomy, size):
    """Draws the findings' patterns over the anatomy (see `render_image`), each from its own stream."""
    if "Fibrosis" in wanted:
        r = rngs["Fibrosis"]
        period = r.uniform(0.038, 0.05)
        angle = r.uniform(0.0, math.pi / 2)
        warp = 0.45 * period * _smooth_noise(r, size, 12)
        u = (math.cos(angle) * x + math.sin(angle) * y + warp) / period
        v = (-math.sin(angle) * x + math.cos(angle) * y - warp) / period
        mesh = np.maximum(np.abs(np.cos(math.pi * u)), np.abs(np.cos(math.pi * v))) ** 4
        for side in (-1, 1):
            t = t_of[side]
            zone = lungs[side] * _ramp(y - r.uniform(0.4, 0.48), 0.1) * _ramp(t - 0.17, 0.08)
            image = image + zone * (r.uniform(0.17, 0.25) * mesh + 0.05)

    if "Edema" in wanted:
        r = rngs["Edema"]
        strength = r.uniform(0.24, 0.32)
        sx, sy = r.uniform(0.1, 0.13), r.uniform(0.11, 0.15)
        for side in (-1, 1):
            t = t_of[side]
            haze = np.exp(-(((t - _HILUM[0] - 0.03) / sx) ** 2) - ((y - _HILUM[1] - 0.02) / sy) ** 2)
            image = image + strength * haze * lungs[side] * _ramp(t - 0.1, 0.06)
            for _ in range(r.integers(3, 6)):
                ly = r.uniform(0.56, 0.68)
                lx = anatomy.lateral - 0.45 * (ly - 0.6) ** 2 - 0.005
                line = _segment(t, y, (lx - r.uniform(0.035, 0.05), ly), (lx, ly), 0.004)
                image = image + 0.12 * line * lungs[side]

    if "Infiltration" in wanted:
        r = rngs["Infiltration"]
        for side in _sides(r, bilateral=0.3):
            cx, cy = _random_lung_point(r, side, margin=0.03)
            patches = np.zeros_like(x)
            for _ in range(r.integers(4, 9)):
                px_, py_ = cx + r.normal(0.0, 0.06), cy + r.normal(0.0, 0.07)
                sigma = r.uniform(0.022, 0.036)
                patches += np.exp(-((x - px_) ** 2 + (y - py_) ** 2) / (2 * sigma * sigma))
            patches *= 0.7 + 0.3 * _smooth_noise(r, size, 24)
            image = image + r.uniform(0.24, 0.32) * np.clip(patches, 0.0, 1.2) * lungs[side]

    if "Pneumonia" in wanted:
        r = rngs["Pneumonia"]
        side = _pick_side(r)
        t = t_of[side]
        fissure = r.uniform(0.36, 0.48) + 0.04 * (t - 0.2)
        fade = r.uniform(0.14, 0.2)
        below = np.clip(y - fissure, 0.0, None)
        opacity = r.uniform(0.8, 0.95) * _ramp(y - fissure, 0.006) * np.exp(-below / fade)
        opacity *= 0.75 + 0.25 * _smooth_noise(r, size, 32)
        image = _lerp(image, 0.76, np.clip(opacity, 0.0, 1.0) * lungs[side])

    if "Consolidation" in wanted:
        r = rngs["Consolidation"]
        side = _pick_side(r)
        t = t_of[side]
        a, b = r.uniform(0.12, 0.16), r.uniform(0.1, 0.13)
        ct, cy = anatomy.lateral - r.uniform(0.03, 0.07), r.uniform(0.38, 0.55)
        rho = np.sqrt(((t - ct) / a) ** 2 + ((y - cy) / b) ** 2) + 0.12 * _smooth_noise(r, size, 8)
        region = _ramp((1.0 - rho) * b, 0.012) * lungs[side]
        image = _lerp(image, 0.76, r.uniform(0.85, 0.95) * region)
        # Air bronchograms: dark branching tubes inside the opacity.
        bronchi = np.zeros_like(x)
        for _ in range(r.integers(2, 4)):
            start = (ct - 0.8 * a, cy + r.uniform(-0.4, 0.4) * b)
            direction = r.uniform(-0.6, 0.6)
            end = (start[0] + 1.2 * a * math.cos(direction), start[1] + 1.2 * a * math.sin(direction))
            bronchi = np.maximum(bronchi, _segment(t, y, start, end, 0.006))
            mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
            branch = direction + r.choice([-0.7, 0.7])
            tip = (mid[0] + 0.5 * a * math.cos(branch), mid[1] + 0.5 * a * math.sin(branch))
            bronchi = np.maximum(bronchi, _segment(t, y, mid, tip, 0.005))
        image = image - 0.16 * bronchi * region

    if "Atelectasis" in wanted:
        r = rngs["Atelectasis"]
        side = _pick_side(r)
        t = t_of[side]
        if r.random() < 0.5:  # Upper lobe collapse: a wedge against the upper mediastinum.
            tip = (r.uniform(0.2, 0.3), r.uniform(0.22, 0.32))
            wedge = _triangle(t, y, (0.06, 0.44), (0.06, anatomy.top + 0.02), tip)
        else:  # Lower lobe collapse: a wedge on the diaphragm, lateral to the heart.
            base = float(_diaphragm(np.float32(0.22), anatomy, side)) + 0.01
            apex = (r.uniform(0.12, 0.16), r.uniform(0.44, 0.5))
            wedge = _triangle(t, y, apex, (0.12, base), (r.uniform(0.28, 0.33), base))
        image = _lerp(image, 0.74, r.uniform(0.8, 0.95) * wedge * np.maximum(lungs[side], 0.3))

    if "Effusion" in wanted:
        r = rngs["Effusion"]
        for side in _sides(r, bilateral=0.3):
            t = t_of[side]
            k = 0 if side < 0 else 1
            height = r.uniform(0.12, 0.25)
            across = np.clip((t - 0.06) / 0.33, 0.0, 1.0)
            # Meniscus: the fluid climbs the lateral chest wall.
            level = anatomy.bottom[k] + 0.01 - height * (0.35 + 0.65 * across**2)
            hemithorax = _ramp(t - 0.06, 0.01) * _ramp(anatomy.lateral + 0.01 - t, 0.01)
            fluid = _ramp(y - level, 0.012) * hemithorax
            image = _lerp(image, 0.78, r.uniform(0.9, 1.0) * fluid)

    if "Pleural_Thickening" in wanted:
        r = rngs["Pleural_Thickening"]
        for side in _sides(r, bilateral=0.4):
            t = t_of[side]
            # Lumpy plaques: the thickness varies along the wall.
            thickness = r.uniform(0.022, 0.034) * (1.0 + 0.4 * _smooth_noise(r, size, 10))
            rim = lungs[side] - _lung_field(t, y, anatomy, side, inset=thickness)
            rim = np.clip(rim, 0.0, 1.0) * _ramp(0.64 - y, 0.08)
            image = _lerp(image, 0.86, 0.95 * rim)

    if "Mass" in wanted:
        r = rngs["Mass"]
        side = _pick_side(r)
        radius = r.uniform(0.055, 0.085)
        # In the upper and lateral lung, clear of the heart, whose silhouette it would merge with.
        cx, cy = 0.5 + side * r.uniform(0.2, 0.27), r.uniform(0.24 + radius * 0.5, 0.5)
        theta = np.arctan2(y - cy, x - cx)
        bumps = (
            1.0 + 0.08 * np.cos(3 * theta + r.uniform(0, 6.3)) + 0.05 * np.cos(5 * theta + r.uniform(0, 6.3))
        )
        distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        image = _lerp(image, 0.86, r.uniform(0.8, 0.95) * _ramp(radius * bumps - distance, 0.008))

    if "Nodule" in wanted:
        r = rngs["Nodule"]
        for _ in range(r.choice([1, 2, 3], p=[0.6, 0.3, 0.1])):
            cx, cy = _random_lung_point(r, _pick_side(r))
            radius = r.uniform(0.017, 0.026)
            nodule = _ramp(radius - np.sqrt((x - cx) ** 2 + (y - cy) ** 2), 0.006)
            image = _lerp(image, 0.86, r.uniform(0.75, 1.0) * nodule)

    if "Hernia" in wanted:
        r = rngs["Hernia"]
        radius = r.uniform(0.06, 0.08)
        cx = 0.5 + r.uniform(-0.03, 0.04)
        cy = float(min(anatomy.bottom)) - radius - r.uniform(0.0, 0.04)
        distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        sac = _ramp(radius - distance, 0.006)
        level = cy + r.uniform(-0.2, 0.3) * radius
        image = _lerp(image, 0.12, 0.9 * sac * _ramp(level - y, 0.004))
        image = _lerp(image, 0.8, 0.6 * sac * _ramp(y - level, 0.004))
        image = image + 0.15 * (_ramp(radius + 0.006 - distance, 0.006) - sac)

    return image


def encode_png(pixels: np.ndarray, *, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """Encodes a uint8 [H, W] array as an 8-bit grayscale PNG.

    Written by hand rather than with PIL: every row uses PNG's "Up" filter (the difference to the
    row above, computed in numpy), which suits these smooth images. Measured side by side on
    1024x1024 demo images at zlib level 1 (benchmarks/demo_render.py): PIL 52 ms and 303 KB per
    image, this 12 ms and 242 KB (4.2x faster). Any PNG decoder reads it (the tests decode it with
    PIL and tf.io.decode_png).

    Args:
      pixels: uint8 array [H, W].
      compress_level: zlib level, 0-9.

    Returns:
      The PNG file's bytes.

    Raises:
      ValueError: pixels is not a 2-D uint8 array.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be a 2-D uint8 array, got {pixels.dtype} of shape {pixels.shape}.")
    height, width = pixels.shape
    rows = np.empty((height, width + 1), np.uint8)
    rows[:, 0] = 2  # Filter type "Up"; the first row's "above" is zeros, so it is stored as is.
    rows[0, 1:] = pixels[0]
    np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])  # uint8 wraps around, as PNG wants.

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale, no interlace.
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level)),
            chunk(b"IEND", b""),
        ]
    )


def image_rng(seed: int, number: int) -> np.random.Generator:
    """The random generator of image `number` (its row in the CSV): independent of worker count."""
    return np.random.default_rng([seed, 1, number])


def _render_task(task: tuple[int, int, tuple[str, ...], int, int]) -> tuple[int, bytes]:
    number, seed, findings, image_size, compress_level = task
    pixels = render_image(findings, image_rng(seed, number), image_size)
    return number, encode_png(pixels, compress_level=compress_level)


# ---------------------------------------------------------------------------------------------
# Writing the data set.


def _write_text(path: str, text: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def _check_output_dir(output_dir: str, overwrite: bool) -> None:
    csv_path = posixpath.join(output_dir, CSV_NAME)
    if tf.io.gfile.exists(csv_path):
        if not overwrite:
            raise FileExistsError(
                f"{output_dir} already holds a data set ({csv_path} exists); "
                "pass overwrite=True (--overwrite) to replace it, or choose another output_dir."
            )
        # Replace only what this generator writes, so no stale image of a bigger set remains.
        images_dir = posixpath.join(output_dir, posixpath.dirname(IMAGES_SUBDIR))
        if tf.io.gfile.exists(images_dir):
            tf.io.gfile.rmtree(images_dir)
        for name in (CSV_NAME, TRAIN_VAL_LIST_NAME, TEST_LIST_NAME):
            path = posixpath.join(output_dir, name)
            if tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)


def _resolve_workers(num_workers: int | None) -> int:
    if num_workers is None:
        return os.cpu_count() or 1
    _check_positive("num_workers", num_workers)
    return num_workers


class _Progress:
    """Logs done / total, rate and ETA every `interval` seconds and at the end."""

    def __init__(self, total: int, interval: float = 5.0):
        self._total = total
        self._interval = interval
        self._start = time.monotonic()
        self._last = self._start

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done < self._total and now - self._last < self._interval:
            return
        self._last = now
        elapsed = max(now - self._start, 1e-9)
        rate = done / elapsed
        eta = (self._total - done) / rate if rate > 0 else float("inf")
        logging.info("demo data: %d/%d images, %.1f images/s, ETA %.0f s", done, self._total, rate, eta)


def generate(
    output_dir: str,
    *,
    num_images: int = 2000,
    image_size: int = 1024,
    seed: int = 0,
    num_patients: int | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    compress_level: int = PNG_COMPRESS_LEVEL,
) -> dict:
    """Writes a synthetic data set in the NIH ChestX-ray14 layout (see the module docstring).

    The label file is written last, so its presence means the set is complete.

    Args:
      output_dir: the data set's folder (any tf.io.gfile path); created if missing.
      num_images: images to write.
      image_size: height and width of each PNG.
      seed: the random seed; the same seed gives the same bytes.
      num_patients: default `round(0.3 * num_images)`.
      num_workers: processes rendering in parallel; None for one per CPU core. The output does
        not depend on it.
      overwrite: replace a data set already in output_dir.
      compress_level: zlib level of the PNGs, 0-9.

    Returns:
      A summary: output_dir, num_images, num_patients, image_size, seed, label_counts (by label,
      incl. "No Finding"), multi_finding_images, train_val_images, test_images, train_val_patients,
      test_patients, seconds, images_per_second.

    Raises:
      ValueError: a non-positive num_images, image_size, num_patients or num_workers, or an
        inconsistent combination (the message names the argument).
      FileExistsError: output_dir already holds a Data_Entry_2017.csv and overwrite is False.
    """
    _check_positive("num_images", num_images)
    _check_positive("image_size", image_size)
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be in 0..9, got {compress_level!r}.")
    workers = _resolve_workers(num_workers)
    rows = sample_images(num_images, num_patients=num_patients, seed=seed)
    train_val, test = split_patients(rows, seed=seed)
    _check_output_dir(output_dir, overwrite)

    start = time.monotonic()
    images_dir = posixpath.join(output_dir, IMAGES_SUBDIR)
    tf.io.gfile.makedirs(images_dir)
    tasks = [(i, seed, row.findings, image_size, compress_level) for i, row in enumerate(rows)]
    progress = _Progress(num_images)
    logging.info(
        "demo data: rendering %d images of %dx%d on %d processes", num_images, image_size, image_size, workers
    )

    def write(results) -> None:
        for done, (number, png) in enumerate(results, start=1):
            with tf.io.gfile.GFile(posixpath.join(images_dir, rows[number].image_index), "wb") as f:
                f.write(png)
            progress.update(done)

    if workers == 1:
        write(map(_render_task, tasks))
    else:
        # fork: workers only run numpy and PIL, and need not re-import TensorFlow (spawn costs ~4 s
        # per worker). Results arrive in order, so the parent writes files as they come.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        chunksize = max(1, min(16, num_images // (workers * 8)))
        with context.Pool(workers) as pool:
            write(pool.imap(_render_task, tasks, chunksize=chunksize))

    # NIH's lists have no newline after the last name.
    _write_text(posixpath.join(output_dir, TRAIN_VAL_LIST_NAME), "\n".join(train_val))
    _write_text(posixpath.join(output_dir, TEST_LIST_NAME), "\n".join(test))
    csv_text = CSV_LINE_END.join([CSV_HEADER, *(row.csv_line() for row in rows)]) + CSV_LINE_END
    # Written last and renamed into place: its presence marks a complete data set.
    csv_path = posixpath.join(output_dir, CSV_NAME)
    _write_text(csv_path + ".tmp", csv_text)
    tf.io.gfile.rename(csv_path + ".tmp", csv_path, overwrite=True)
    seconds = time.monotonic() - start

    label_counts = {name: 0 for name in schema.LABELS}
    for row in rows:
        for name in row.findings or (schema.NO_FINDING,):
            label_counts[name] += 1
    test_set = set(test)
    summary = {
        "output_dir": output_dir,
        "num_images": num_images,
        "num_patients": len({row.patient_id for row in rows}),
        "image_size": image_size,
        "seed": seed,
        "label_counts": label_counts,
        "multi_finding_images": sum(len(row.findings) > 1 for row in rows),
        "train_val_images": len(train_val),
        "test_images": len(test),
        "train_val_patients": len({r.patient_id for r in rows if r.image_index not in test_set}),
        "test_patients": len({r.patient_id for r in rows if r.image_index in test_set}),
        "seconds": round(seconds, 2),
        "images_per_second": round(num_images / max(seconds, 1e-9), 1),
    }
    logging.info("demo data: wrote %s in %.1f s", output_dir, seconds)
    return summary


# ---------------------------------------------------------------------------------------------
# Entry point.


def _define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, flags.FlagHolder]:
    """Defines the flags when the binary runs, not at import.

    Other binaries and tests import this module for `generate` (e.g. the Beam job's tests make their
    data with it); flags defined at import would collide with theirs (--output_dir, --image_size).
    Tests pass their own `flags.FlagValues()`.
    """
    fv = flag_values
    return {
        "output_dir": flags.DEFINE_string(
            "output_dir", "data/demo", "Folder to write the data set into.", flag_values=fv
        ),
        "num_images": flags.DEFINE_integer("num_images", 2000, "Images to generate.", flag_values=fv),
        "image_size": flags.DEFINE_integer(
            "image_size", 1024, "Height and width of each PNG, in pixels.", flag_values=fv
        ),
        "seed": flags.DEFINE_integer(
            "seed", 0, "Random seed; the same seed gives the same bytes.", flag_values=fv
        ),
        "num_patients": flags.DEFINE_integer(
            "num_patients", 0, "Patients; 0 for round(0.3 * num_images).", flag_values=fv
        ),
        "num_workers": flags.DEFINE_integer(
            "num_workers", 0, "Rendering processes; 0 for one per CPU core.", flag_values=fv
        ),
        "overwrite": flags.DEFINE_bool(
            "overwrite", False, "Replace a data set already in --output_dir.", flag_values=fv
        ),
    }


def main(argv: Sequence[str], *, holders: dict[str, flags.FlagHolder]) -> None:
    """Reads the flags, calls `generate` and prints its summary as JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    for name in ("num_patients", "num_workers"):
        if holders[name].value < 0:
            raise ValueError(f"--{name} must be >= 0 (0 for the default), got {holders[name].value}.")
    summary = generate(
        holders["output_dir"].value,
        num_images=holders["num_images"].value,
        image_size=holders["image_size"].value,
        seed=holders["seed"].value,
        num_patients=holders["num_patients"].value or None,
        num_workers=holders["num_workers"].value or None,
        overwrite=holders["overwrite"].value,
    )
    print(json.dumps(summary, indent=2))


def run() -> None:
    """Entry point of `python -m beam_pipelines.demo_data` and the `cxr-demo-data` console script."""
    holders = _define_flags()
    app.run(functools.partial(main, holders=holders))


if __name__ == "__main__":
    run()
