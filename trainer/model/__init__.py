"""The model and what every stage uses of it.

Owns the ResUNet and baselines (`models`), the on-device augmentation (`augment`), the losses and
AUC metrics (`objectives`), the SavedModel export and its reader (`export`), Grad-CAM (`gradcam`) and
the run directory's layout (`run_dir`).

May import: `tfrecords`. Never `trainer.training`, `trainer.evaluation` or `trainer.prediction`
(docs/architecture.md).
"""
