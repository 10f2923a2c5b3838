"""Training: from a records directory to a run directory with checkpoints and an export.

Owns `TrainConfig` and the profiles (`config`), the steps of a run (`task`), the runner
(`runner`), the input policy (`inputs`), the learning-rate schedule (`schedule`), the callbacks
(`callbacks`) and what they show (`display`), the device and precision choices (`device`) and the
guarded Keras workarounds (`keras_compat`).

May import: `tfrecords`, `trainer.model`, `cxr_cli`. Never `trainer.evaluation` or
`trainer.prediction` (docs/architecture.md).
"""
