"""The report files' names, and writing them through `tf.io.gfile` (so gs:// works).

Nothing written holds a time stamp: the same inputs give byte-identical files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from trainer.model import run_dir as run_dir_lib

AUC_JSON = "auc.json"
AUC_CSV = "auc.csv"
AUC_MD = "auc.md"
MODEL_CARD_MD = "MODEL_CARD.md"
THRESHOLDS_JSON = os.path.basename(run_dir_lib.THRESHOLDS_FILE)
PREDICTIONS_CSV = "predictions.csv"
ROC_PNG = "roc_curves.png"
TRAINING_PNG = "training_curves.png"
DISTRIBUTION_PNG = "label_distribution.png"
COOCCURRENCE_PNG = "label_cooccurrence.png"
RELIABILITY_PNG = "reliability_diagram.png"
LOCALIZATION_PNG = "gradcam_boxes.png"
MEAN_CAM_PNG = "gradcam_mean.png"
BOX_REJECTS_JSONL = "box_rejects.jsonl"


def write_text(path: str, text: str) -> str:
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)
    return path


def write_bytes(path: str, data: bytes) -> str:
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(data)
    return path


def write_json(path: str, data: Mapping[str, Any]) -> str:
    """Writes strict JSON (undefined values must already be None); returns the path."""
    return write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
