"""Prediction: a run's one model (its export) applied to images, with its thresholds and calibration.

`loaded_run.Run` is what `trainer.api.load_run` returns; `predictor` adds what `cxr-predict` needs
(collecting files, the CSV, Grad-CAM overlays).

May import: `tfrecords`, `trainer.model`, `trainer.evaluation` (the calibration and TTA it applies),
`cxr_cli`. Never `trainer.training` or `trainer.api` (docs/architecture.md).
"""
