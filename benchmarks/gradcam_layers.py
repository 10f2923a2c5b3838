"""Which Grad-CAM variant to draw: localization and sanity figures of each, against the boxes.

    .venv/bin/python -m benchmarks.gradcam_layers --run_dir=runs/demo [--records_dir=...] [--split=test]

On a trained run whose records' data directory holds `BBox_List_2017.csv` (the demo set writes
one; NIH's real file works the same), scores the split's boxed (image, finding) pairs with each
variant of `CHOICES` (layers, method, smoothing of `trainer.model.gradcam.GradCam`): pointing game,
energy inside, IoU, the boxes' area share (the image-blind baseline), the border share, the
model-randomization rank correlation, and two properties of the split's mean map (each image's
map of its most probable finding): the share of its spectral power at the period-2 frequency
(the decoder's checkerboard) and the share of its mass in the bottom tenth of the image, and the
same two averaged over the findings' mean maps (each over the images labelled with it).
Writes runs/bench/gradcam_layers.json and prints one line per variant.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from tfrecords import manifest as manifest_lib
from tfrecords import schema
from trainer.evaluation import metrics
from trainer.evaluation import pipeline as evaluate
from trainer.evaluation.localization import boxes
from trainer.evaluation.localization import pipeline as localization_eval
from trainer.model import gradcam, models
from trainer.model import run_dir as run_dir_lib

DECODER, BOTTLENECK = models.DECODER_OUTPUT, models.BOTTLENECK_OUTPUT
# (name, layers, method, smooth)
CHOICES = (
    ("decoder+bottleneck, each at its own size", (DECODER, BOTTLENECK), "gradcam", False),
    ("decoder alone", (DECODER,), "gradcam", False),
    ("bottleneck alone", (BOTTLENECK,), "gradcam", False),
    ("decoder+bottleneck, smoothed (default)", (DECODER, BOTTLENECK), "gradcam", True),
    ("HiResCAM, decoder+bottleneck, smoothed", (DECODER, BOTTLENECK), "hirescam", True),
    ("HiResCAM, bottleneck", (BOTTLENECK,), "hirescam", False),
    ("Grad-CAM++, decoder+bottleneck, smoothed", (DECODER, BOTTLENECK), "gradcam++", True),
    ("Grad-CAM++, bottleneck", (BOTTLENECK,), "gradcam++", False),
)


def checkerboard_share(mean_map: np.ndarray) -> float:
    """Share of the map's spectral power (mean removed) in the rows and columns of period 2."""
    power = np.abs(np.fft.fft2(mean_map - mean_map.mean())) ** 2
    half = mean_map.shape[0] // 2
    nyquist = power[half, :].sum() + power[:, half].sum() - power[half, half]
    return float(nyquist / power.sum()) if power.sum() > 0 else float("nan")


def bottom_tenth_share(mean_map: np.ndarray) -> float:
    """Share of the map's mass in its bottom tenth of rows (a flat map: 0.1)."""
    bottom = mean_map[int(round(0.9 * mean_map.shape[0])) :]
    return float(bottom.sum() / mean_map.sum()) if mean_map.sum() > 0 else float("nan")


def score_choice(choice, model, records_dir, split, box_set, predictions) -> dict:
    name, layers, method, smooth = choice
    names = list(predictions.metadata[schema.IMAGE_INDEX_KEY])
    located = localization_eval.localize_split(
        gradcam.GradCam(model, layer_names=layers, method=method, smooth=smooth),
        records_dir,
        split,
        box_set,
        probabilities=predictions.probabilities,
        image_indices=names,
        patient_ids=predictions.metadata[schema.PATIENT_ID_KEY],
        bootstrap=metrics.BootstrapConfig(resamples=0),
    )
    overall, sanity = located.summary["overall"], located.summary["sanity"]
    mean_map = located.mean_cams.overall
    by_finding = [cam for cam, _ in located.mean_cams.by_finding.values()]
    return {
        "variant": name,
        "layers": list(layers),
        "method": method,
        "smooth": smooth,
        "pairs": overall["pairs"],
        **{score: overall[score] for score in ("pointing_game", "energy_inside", "iou")},
        "box_area_share": sanity["box_area_share"],
        "border_energy_share": sanity["border_energy_share"],
        "randomization_spearman": sanity["randomization"]["spearman"],
        "mean_map_checkerboard_share": checkerboard_share(mean_map),
        "mean_map_bottom_tenth_share": bottom_tenth_share(mean_map),
        # The same over the findings' mean maps (each over the images labelled with the finding).
        "finding_maps_checkerboard_share": float(np.nanmean([checkerboard_share(m) for m in by_finding])),
        "finding_maps_bottom_tenth_share": float(np.nanmean([bottom_tenth_share(m) for m in by_finding])),
        "peak_cell_share": located.summary["mean_maps"]["peak_cell_share"],
        "pointing_game_per_finding": {f["label"]: f["pointing_game"] for f in located.summary["findings"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="runs/demo")
    parser.add_argument("--records_dir", default=None, help="Default: the run's.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output", default="runs/bench/gradcam_layers.json")
    parser.add_argument("--choices", default=None, help="Comma-separated indices into CHOICES; default all.")
    args = parser.parse_args()
    choices = CHOICES if args.choices is None else [CHOICES[int(i)] for i in args.choices.split(",")]

    records_dir = args.records_dir or run_dir_lib.read_config(args.run_dir)["records_dir"]
    manifest = manifest_lib.read_manifest(records_dir)
    model = models.load_model(run_dir_lib.path(args.run_dir, run_dir_lib.BEST_CHECKPOINT))
    predictions = evaluate.predict_split(
        evaluate.load_predictor(args.run_dir), records_dir, manifest, args.split
    )
    box_file = boxes.find_box_file(manifest.options["data_dir"])
    box_set = boxes.read_boxes(
        box_file,
        image_size=manifest.image_size,
        images=set(predictions.metadata[schema.IMAGE_INDEX_KEY]),
    )
    results = []
    for choice in choices:
        row = score_choice(choice, model, records_dir, args.split, box_set, predictions)
        results.append(row)
        print(json.dumps(metrics.to_json_ready(row)))
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(
            metrics.to_json_ready(
                {
                    "run_dir": args.run_dir,
                    "records_dir": records_dir,
                    "box_file": box_file,
                    "results": results,
                }
            ),
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
