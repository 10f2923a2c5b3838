"""Evaluation: scores a run's model on its records and writes the reports.

Owns the pipeline (`pipeline`), the AUCs, bootstrap and thresholds (`metrics`), calibration
(`calibration`), test-time augmentation (`tta`), Grad-CAM localization against box files
(`localization/`) and the report writers and figures (`report/`: `tables`, `markdown`, `figures`).

May import: `tfrecords`, `trainer.model`, `cxr_cli`. Never `trainer.training` or
`trainer.prediction` (docs/architecture.md).
"""
