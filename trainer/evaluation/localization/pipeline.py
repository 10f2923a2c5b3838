"""The localization report's computation: Grad-CAM over one split's records, scored against boxes.

For every (image, finding) pair of the split that the box file boxes, the Grad-CAM map of that
finding (`trainer.model.gradcam`, at the records' size) is scored against the finding's boxes with
`trainer.evaluation.localization.scores`: pointing game, energy inside, IoU at `localization.CAM_THRESHOLD`,
per finding and overall, with patient-bootstrap intervals.

Beside the scores, the mean maps over the split expose a fixed-location artifact, a map that
peaks in the same place whatever the image shows: per image, the map of its most probable
finding, averaged over the split; per finding, the map of that finding averaged over the images
labelled with it. `peak_cell_share` is the share of the images whose most-probable-finding map
peaks in the most common cell of a `PEAK_GRID` x `PEAK_GRID` grid: near 1 when every map
peaks in one place.

The sanity checks (`trainer.evaluation.localization.sanity`) go into the summary's "sanity": the
scored maps' border-energy share, the boxes' area share (what a map that ignores the image
scores), and the model-randomization test: the scored pairs' maps again from the same
architecture with re-initialized weights (`GradCam.randomized`), and per finding the mean rank
correlation of the two (near 1: the map shows the architecture, not what training learned).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfrecords import dataset as dataset_lib
from tfrecords import schema
from trainer.evaluation import metrics
from trainer.evaluation.localization import boxes as boxes_lib
from trainer.evaluation.localization import sanity
from trainer.evaluation.localization import scores as localization
from trainer.model import gradcam as gradcam_lib

# Overlays shown per finding in the figure: the split's first pairs of that finding in record order.
SAMPLES_PER_FINDING = 3
PEAK_GRID = 8
# The model-randomization test maps at most this many scored pairs (the first in record order)
# twice more; its seed draws the re-initialized weights.
RANDOMIZATION_MAX_PAIRS = 256
RANDOMIZATION_SEED = 0


@dataclasses.dataclass(frozen=True)
class CamSample:
    """One scored pair, kept for the overlay figure."""

    image_index: str
    finding: str
    probability: float
    pixels: np.ndarray  # uint8 [N, N]
    cam: np.ndarray  # float32 [N, N] in [0, 1]
    boxes: tuple[tuple[float, float, float, float], ...]
    score: localization.PairScore


@dataclasses.dataclass(frozen=True)
class MeanCams:
    """Mean Grad-CAM maps over a split.

    Attributes:
      overall: float [N, N], the mean of each image's most-probable-finding map.
      images: images in `overall`.
      by_finding: finding -> (mean of its map over the images labelled with it, image count),
        for the findings with at least one such image.
      peak_counts: int [PEAK_GRID, PEAK_GRID], images whose most-probable-finding map peaks
        in each cell.
    """

    overall: np.ndarray
    images: int
    by_finding: Mapping[str, tuple[np.ndarray, int]]
    peak_counts: np.ndarray

    def summary(self) -> dict[str, Any]:
        """JSON-ready: images, grid, the most common peak cell (row, column) and its share."""
        cell = np.unravel_index(int(np.argmax(self.peak_counts)), self.peak_counts.shape)
        return {
            "images": self.images,
            "grid": int(self.peak_counts.shape[0]),
            "peak_cell": [int(cell[0]), int(cell[1])],
            "peak_cell_share": float(self.peak_counts[cell] / max(1, self.images)),
            "findings": {label: count for label, (_, count) in self.by_finding.items()},
        }


@dataclasses.dataclass(frozen=True)
class LocalizationResult:
    """The localization of one split: JSON-ready `summary`, figure `samples` and `mean_cams`."""

    summary: dict[str, Any]
    samples: tuple[CamSample, ...]
    mean_cams: MeanCams | None


@dataclasses.dataclass
class _Accumulator:
    """Running sums over the split's batches."""

    image_size: int
    overall: np.ndarray = None  # type: ignore[assignment]
    images: int = 0
    finding_sums: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    finding_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    peak_counts: np.ndarray = None  # type: ignore[assignment]
    scores: list[np.ndarray] = dataclasses.field(default_factory=list)
    pairs: list[tuple[str, str, int, bool]] = dataclasses.field(default_factory=list)
    samples: list[CamSample] = dataclasses.field(default_factory=list)
    border_shares: list[float] = dataclasses.field(default_factory=list)
    area_shares: list[float] = dataclasses.field(default_factory=list)
    # The first RANDOMIZATION_MAX_PAIRS scored pairs' pixels [N, N, 1] and label indices.
    pair_pixels: list[np.ndarray] = dataclasses.field(default_factory=list)
    pair_classes: list[int] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.overall = np.zeros((self.image_size, self.image_size), np.float64)
        self.peak_counts = np.zeros((PEAK_GRID, PEAK_GRID), np.int64)


def localize_split(
    explainer: gradcam_lib.GradCam,
    records_dir: str,
    split: str,
    box_set: boxes_lib.BoxSet,
    *,
    probabilities: np.ndarray,
    image_indices: Sequence[str],
    patient_ids: Sequence[int],
    bootstrap: metrics.BootstrapConfig,
    batch_size: int = 32,
    mean_maps: bool = True,
) -> LocalizationResult:
    """Computes and scores the Grad-CAM maps of the split's boxed findings, and the mean maps.

    Args:
      explainer: Grad-CAM on the run's model (its size must be the records').
      records_dir: the records.
      split: the split whose records are read, in record order.
      box_set: the boxes, already scaled to the records' size and limited to the split's images.
      probabilities: [N, 15] the model's probabilities on the split, in record order.
      image_indices: [N] the split's image names, in record order (checked against the records).
      patient_ids: [N] their patients (the bootstrap's unit).
      bootstrap: interval settings.
      batch_size: images per Grad-CAM call.
      mean_maps: also compute the mean maps (one or more maps per image of the split).

    Returns:
      A `LocalizationResult`.

    Raises:
      ValueError: the records' order or size differs from the predictions' or the model's.
    """
    if box_set.image_size != explainer.image_size:
        raise ValueError(
            f"The boxes are scaled to {box_set.image_size} pixels but the model takes {explainer.image_size}."
        )
    by_image = box_set.by_image()
    acc = _Accumulator(explainer.image_size)
    probabilities = np.asarray(probabilities)
    offset = 0
    batches = dataset_lib.build_dataset(
        records_dir, split, batch_size=batch_size, training=False, with_metadata=True
    )
    for images, labels, metadata in batches:
        names = [v.decode("utf-8") for v in metadata[schema.IMAGE_INDEX_KEY].numpy()]
        end = offset + len(names)
        _check_order(names, image_indices[offset:end], offset, f"The {split!r} records of {records_dir!r}")
        pixels = images.numpy()
        if mean_maps:
            _add_mean_maps(acc, explainer, pixels, probabilities[offset:end], labels.numpy())
        pairs = _boxed_pairs(names, by_image)
        _score_pairs(acc, explainer, pixels, pairs, names, probabilities[offset:end], patient_ids[offset:end])
        offset = end
    if offset != len(image_indices):
        raise ValueError(
            f"The {split!r} records hold {offset} images but {len(image_indices)} were predicted."
        )
    return _result(acc, bootstrap, mean_maps=mean_maps, explainer=explainer, batch_size=batch_size)


def _check_order(names: Sequence[str], predicted: Sequence[str], offset: int, what: str) -> None:
    """Raises when a batch's image names differ from those predicted at the same positions."""
    if list(names) != list(predicted):
        raise ValueError(
            f"{what} are not in the order they were predicted in (records {offset}..{offset + len(names) - 1}); "
            "were they rewritten during the evaluation?"
        )


def _boxed_pairs(
    names: Sequence[str], by_image: Mapping[str, Sequence[boxes_lib.Box]]
) -> list[tuple[int, str, list[tuple[float, float, float, float]]]]:
    """The batch's (row, finding, that finding's boxes as (x, y, w, h)) pairs, in row order."""
    pairs = []
    for i, name in enumerate(names):
        found = by_image.get(name, [])
        for finding in _findings_of(found):
            pairs.append((i, finding, [(b.x, b.y, b.width, b.height) for b in found if b.finding == finding]))
    return pairs


def _findings_of(found: Sequence[boxes_lib.Box]) -> list[str]:
    """The image's boxed findings, in `schema.LABELS` order, once each."""
    present = {box.finding for box in found}
    return [label for label in schema.LABELS if label in present]


def _add_mean_maps(
    acc: _Accumulator,
    explainer: gradcam_lib.GradCam,
    pixels: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray,
) -> None:
    """Adds the batch's most-probable-finding maps and its labelled findings' maps."""
    size = (acc.image_size, acc.image_size)
    num_findings = len(schema.FINDINGS)
    top = np.argmax(probabilities[:, :num_findings], axis=1)
    rows, classes = list(range(len(pixels))), [int(k) for k in top]
    for i, k in zip(*np.nonzero(np.rint(labels[:, :num_findings]))):
        rows.append(int(i))
        classes.append(int(k))
    maps = explainer.batch_maps(pixels[rows], classes, output_size=size)
    count = len(pixels)
    acc.overall += maps[:count].sum(axis=0)
    acc.images += count
    cell = acc.image_size / PEAK_GRID
    for cam in maps[:count]:
        row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
        acc.peak_counts[min(int(row // cell), PEAK_GRID - 1), min(int(col // cell), PEAK_GRID - 1)] += 1
    for cam, k in zip(maps[count:], classes[count:]):
        label = schema.LABELS[k]
        acc.finding_sums[label] = acc.finding_sums.get(label, 0.0) + cam
        acc.finding_counts[label] = acc.finding_counts.get(label, 0) + 1


def _score_pairs(
    acc: _Accumulator,
    explainer: gradcam_lib.GradCam,
    pixels: np.ndarray,
    pairs: list[tuple[int, str, list[tuple[float, float, float, float]]]],
    names: Sequence[str],
    probabilities: np.ndarray,
    patient_ids: Sequence[int],
) -> None:
    """Scores the batch's boxed (image, finding) pairs; keeps the first few per finding as samples."""
    if not pairs:
        return
    size = (acc.image_size, acc.image_size)
    classes = [schema.LABELS.index(finding) for _, finding, _ in pairs]
    maps = explainer.batch_maps(pixels[[i for i, _, _ in pairs]], classes, output_size=size)
    for (i, finding, boxes), k, cam in zip(pairs, classes, maps):
        mask = localization.box_mask(size, boxes)
        score = localization.score_pair(cam, mask)
        acc.border_shares.append(sanity.border_energy_share(cam))
        acc.area_shares.append(sanity.box_area_share(mask))
        acc.scores.append(score.as_array())
        acc.pairs.append((names[i], finding, int(patient_ids[i]), score.empty))
        if len(acc.pair_pixels) < RANDOMIZATION_MAX_PAIRS:
            acc.pair_pixels.append(pixels[i])
            acc.pair_classes.append(k)
        if sum(s.finding == finding for s in acc.samples) < SAMPLES_PER_FINDING:
            acc.samples.append(
                CamSample(
                    names[i], finding, float(probabilities[i, k]), pixels[i, ..., 0].astype(np.uint8), cam,
                    tuple(boxes), score,
                )
            )  # fmt: skip


def _result(
    acc: _Accumulator,
    bootstrap: metrics.BootstrapConfig,
    *,
    mean_maps: bool,
    explainer: gradcam_lib.GradCam,
    batch_size: int,
) -> LocalizationResult:
    present = {finding for _, finding, _, _ in acc.pairs}
    summary = localization.summarize(
        np.array(acc.scores).reshape(-1, len(localization.SCORES)),
        [finding for _, finding, _, _ in acc.pairs],
        np.array([patient for _, _, patient, _ in acc.pairs]),
        empty=np.array([empty for _, _, _, empty in acc.pairs], bool),
        labels=[label for label in schema.FINDINGS if label in present],
        bootstrap=bootstrap,
    )
    summary["images"] = len({name for name, _, _, _ in acc.pairs})
    _add_baselines(summary, acc)
    randomization = _randomization(acc, explainer, batch_size)
    summary["sanity"] = metrics.to_json_ready(
        {**_sanity_summary(acc, summary), "randomization": randomization}
    )
    mean_cams = None
    if mean_maps and acc.images:
        by_finding = {
            label: (acc.finding_sums[label] / acc.finding_counts[label], acc.finding_counts[label])
            for label in schema.FINDINGS
            if label in acc.finding_counts
        }
        mean_cams = MeanCams(acc.overall / acc.images, acc.images, by_finding, acc.peak_counts)
        summary["mean_maps"] = mean_cams.summary()
    samples = sorted(acc.samples, key=lambda s: (schema.LABELS.index(s.finding), s.image_index))
    return LocalizationResult(summary, tuple(samples), mean_cams)


def _add_baselines(summary: dict[str, Any], acc: _Accumulator) -> None:
    """Each finding's image-blind baseline, and the overall one: the mean area share of the pairs' boxes."""
    for entry in summary["findings"]:
        shares = [a for (_, finding, _, _), a in zip(acc.pairs, acc.area_shares) if finding == entry["label"]]
        entry["box_area_share"] = float(np.mean(shares)) if shares else None
    summary["overall"]["box_area_share"] = float(np.mean(acc.area_shares)) if acc.area_shares else None


def _sanity_summary(acc: _Accumulator, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The scored maps' mean border-energy share, the image-blind baseline (the boxes' area share)
    and whether the overall pointing game and energy inside clear it (`sanity.versus_baseline`)."""
    borders = [v for v in acc.border_shares if np.isfinite(v)]
    baseline = float(np.mean(acc.area_shares)) if acc.area_shares else None
    overall = summary["overall"]
    return {
        "border_fraction": sanity.BORDER_FRACTION,
        "border_energy_share": float(np.mean(borders)) if borders else None,
        "uniform_border_share": sanity.uniform_border_share(),
        "box_area_share": baseline,
        "versus_baseline": {
            score: sanity.versus_baseline(overall.get(f"{score}_ci_low"), baseline)
            for score in ("pointing_game", "energy_inside")
        },
        "pairs": len(acc.area_shares),
    }


def _randomization(acc: _Accumulator, explainer: gradcam_lib.GradCam, batch_size: int) -> dict[str, Any]:
    """The model-randomization test on the kept pairs: per finding and overall mean Spearman correlation."""
    result: dict[str, Any] = {"seed": RANDOMIZATION_SEED, "pairs": len(acc.pair_pixels)}
    if not acc.pair_pixels:
        return {**result, "spearman": None, "findings": {}}
    random = explainer.randomized(RANDOMIZATION_SEED)
    size = (acc.image_size, acc.image_size)

    def in_batches(cam: gradcam_lib.GradCam):
        def maps(pixels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
            chunks = [
                cam.batch_maps(pixels[i : i + batch_size], classes[i : i + batch_size], output_size=size)
                for i in range(0, len(classes), batch_size)
            ]
            return np.concatenate(chunks)

        return maps

    findings = sanity.randomization_test(
        in_batches(explainer), in_batches(random), np.stack(acc.pair_pixels), acc.pair_classes, schema.LABELS
    )
    findings = {label: findings[label] for label in schema.LABELS if label in findings}
    values = [v["spearman"] for v in findings.values() if np.isfinite(v["spearman"])]
    weights = [v["maps"] for v in findings.values() if np.isfinite(v["spearman"])]
    overall = float(np.average(values, weights=weights)) if values else None
    return {**result, "spearman": overall, "findings": findings}
