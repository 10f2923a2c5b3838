"""Which ResUNet feature maps Grad-CAM should explain: localization scores against the boxes.

    .venv/bin/python -m benchmarks.gradcam_layers --run_dir=runs/demo [--records_dir=...]

On a trained run whose records' data directory holds `BBox_List_2017.csv` (the demo set writes
one), scores the test split's boxed (image, finding) pairs with Grad-CAM at the last decoder
features alone, the bottleneck alone, and both added (`trainer.model.gradcam`'s default when the
head pools the bottleneck). Writes runs/bench/gradcam_layers.json and prints one line per choice.
"""

from __future__ import annotations

import argparse
import json
import os

from tfrecords import manifest as manifest_lib
from tfrecords import schema
from trainer.evaluation import metrics
from trainer.evaluation import pipeline as evaluate
from trainer.evaluation.localization import boxes
from trainer.evaluation.localization import pipeline as localization_eval
from trainer.model import gradcam, models
from trainer.model import run_dir as run_dir_lib

CHOICES = (
    (gradcam.DECODER_OUTPUT,),
    (gradcam.BOTTLENECK_OUTPUT,),
    (gradcam.DECODER_OUTPUT, gradcam.BOTTLENECK_OUTPUT),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="runs/demo")
    parser.add_argument("--records_dir", default=None, help="Default: the run's.")
    parser.add_argument("--output", default="runs/bench/gradcam_layers.json")
    args = parser.parse_args()

    records_dir = args.records_dir or run_dir_lib.read_config(args.run_dir)["records_dir"]
    manifest = manifest_lib.read_manifest(records_dir)
    model = models.load_model(run_dir_lib.path(args.run_dir, run_dir_lib.BEST_CHECKPOINT))
    predictions = evaluate.predict_split(evaluate.load_predictor(args.run_dir), records_dir, manifest, "test")
    names = list(predictions.metadata[schema.IMAGE_INDEX_KEY])
    box_file = boxes.find_box_file(manifest.options["data_dir"])
    box_set = boxes.read_boxes(box_file, image_size=manifest.image_size, images=set(names))
    results = []
    for layers in CHOICES:
        located = localization_eval.localize_split(
            gradcam.GradCam(model, layer_names=layers),
            records_dir,
            "test",
            box_set,
            probabilities=predictions.probabilities,
            image_indices=names,
            patient_ids=predictions.metadata[schema.PATIENT_ID_KEY],
            bootstrap=metrics.BootstrapConfig(resamples=0),
            mean_maps=False,
        )
        overall = located.summary["overall"]
        row = {
            "layers": list(layers),
            "pairs": overall["pairs"],
            **{name: overall[name] for name in ("pointing_game", "energy_inside", "iou")},
            "pointing_game_per_finding": {
                f["label"]: f["pointing_game"] for f in located.summary["findings"]
            },
        }
        results.append(row)
        print(json.dumps(row))
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(
            {"run_dir": args.run_dir, "records_dir": records_dir, "box_file": box_file, "results": results},
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
