"""Prediction: a run's export applied to image files, with its thresholds and calibration.

May import: `tfrecords`, `trainer.model`, `trainer.evaluation` (the calibration and TTA it applies),
`cxr_cli`. Never `trainer.training` (docs/architecture.md).
"""
