"""Who is in the demo set and what they have: patients, follow-ups, findings, metadata, splits, boxes.

Everything here follows NIH ChestX-ray14's statistics (the 2017 label file: 112,120 images of
30,805 patients); no pixels are made here. `sample_images` gives the rows of the label file,
`split_patients` the official lists, `choose_boxed_images` the test images that get boxes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Sequence

import numpy as np

from demo_data import layout
from demo_data.layout import DemoImage
from tfrecords import schema

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
# NIH's box file covers 880 of the 13,984 official test images that carry at least one of its 8
# boxed findings (6.3%); all its boxes are on test images.
NIH_BOX_SHARE = 880 / 13984

# Independent random streams of one seed: [seed, stream]. Stream 1 is the images' (see
# `render.image_rng`); a new use takes a new number, so that no existing output changes.
_ROWS_STREAM = 0
_SPLIT_STREAM = 2
_BOX_STREAM = 3


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


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
    while counts.max() > layout.MAX_FOLLOW_UPS:
        top = int(counts.argmax())
        excess = counts[top] - layout.MAX_FOLLOW_UPS
        counts[top] = layout.MAX_FOLLOW_UPS
        counts[np.argsort(counts, kind="stable")[:excess]] += 1
    return counts


def check_counts(num_images: int, num_patients: int | None) -> int:
    """Validates the image and patient counts; returns the number of patients.

    Args:
      num_images: rows to draw.
      num_patients: patients to spread them over; None for `round(0.3 * num_images)`, at least 1.

    Returns:
      The number of patients.

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
    if num_patients >= layout.MAX_PATIENTS:
        raise ValueError(
            f"num_patients must be below {layout.MAX_PATIENTS} (8-digit Patient ID), got {num_patients}."
        )
    if num_images > layout.MAX_FOLLOW_UPS * num_patients:
        raise ValueError(
            f"num_images ({num_images}) needs more than {layout.MAX_FOLLOW_UPS} follow-ups per patient "
            f"with num_patients={num_patients}; raise num_patients."
        )
    return num_patients


def sample_images(num_images: int, *, num_patients: int | None = None, seed: int = 0) -> list[DemoImage]:
    """Draws the rows of the label file: patients, follow-ups, findings and metadata.

    Args:
      num_images: rows to draw.
      num_patients: patients to spread them over; default `round(0.3 * num_images)`, at least 1.
      seed: the random seed.

    Returns:
      The rows sorted by image index (patient, then follow-up), as in NIH's file.

    Raises:
      ValueError: see `check_counts`.
    """
    num_patients = check_counts(num_images, num_patients)
    rng = np.random.default_rng([seed, _ROWS_STREAM])
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
                image_index=layout.image_index_name(patient + 1, int(follow_up[i])),
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
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(len(patients))
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


def choose_boxed_images(
    rows: Sequence[DemoImage], test: Collection[str], *, share: float = NIH_BOX_SHARE, seed: int = 0
) -> list[str]:
    """Picks the test images whose boxed findings get boxes, as NIH boxed a sample of its test set.

    Of the test images that carry at least one of the findings NIH boxes (`layout.BBOX_LABELS`),
    `round(share * count)` are drawn without replacement; each gets a box for every such finding
    it carries.

    Args:
      rows: the images.
      test: the test list's image indices.
      share: the fraction of those test images to box, in [0, 1].
      seed: the random seed.

    Returns:
      The chosen image indices, sorted.

    Raises:
      ValueError: share is outside [0, 1].
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share!r}.")
    test = set(test)
    eligible = [
        row.image_index
        for row in rows
        if row.image_index in test and any(f in layout.BBOX_LABELS for f in row.findings)
    ]
    order = np.random.default_rng([seed, _BOX_STREAM]).permutation(len(eligible))
    return sorted(eligible[k] for k in order[: round(share * len(eligible))])
