"""The Python API for notebooks: a trained run's predictions, Grad-CAM maps and records.

    from trainer import api

    run = api.load_run("runs/demo")
    frame = run.predict(["chest.png", "other.jpg"])        # paths, PNG/JPEG bytes or uint8 arrays
    frame[["source", "Effusion", api.finding_column("Effusion")]]
    heat = run.gradcam("chest.png", "Effusion")              # float32 [H, W] in [0, 1]
    images, labels = next(iter(run.dataset("test")))          # the run's records, one pass

`predict` returns one row per image: its source, an error (empty when predicted), one
probability per label of the run (`run.labels`, the vocabulary it was trained on: NIH's 15 for
NIH records; calibrated when the run's evaluation stored a calibration in
`reports/thresholds.json`), and one 0/1 finding column per label at the thresholds the
evaluation chose (<NA> where it chose none). `cxr-predict` drives the same `Run`.

Importing this module does no work and loads neither TensorFlow, Keras nor pandas; they load
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.prediction.loaded_run import Run

__all__ = ["finding_column", "load_run"]  # Also `Run` and `LABELS`, loaded on access.


def load_run(run_dir: str, *, thresholds_path: str | None = None, records_dir: str | None = None) -> Run:
    """Opens a run directory written by `trainer.train` (and `trainer.evaluate`).

    Args:
      run_dir: the run directory (local or gs://).
      thresholds_path: another thresholds.json (default `run_dir/reports/thresholds.json`).
      records_dir: the records for `Run.dataset` (default: the one `config.json` names).

    Returns:
      A `Run`: `predict(images)`, `gradcam(image, label)`, `dataset(split)`.

    Raises:
      ValueError: no export in the run directory, or a malformed thresholds file, named.
    """
    from trainer.prediction import loaded_run

    return loaded_run.Run(run_dir, thresholds_path=thresholds_path, records_dir=records_dir)


def finding_column(label: str) -> str:
    """The name of `label`'s 0/1 finding column in `Run.predict`'s DataFrame."""
    from trainer.prediction import loaded_run

    return loaded_run.finding_column(label)


def __getattr__(name: str) -> Any:
    # `api.Run` and `api.LABELS` load their modules on first access, not at import.
    # `api.LABELS` is NIH's vocabulary; a run's own labels are `Run.labels`.
    if name == "Run":
        from trainer.prediction import loaded_run

        return loaded_run.Run
    if name == "LABELS":
        from tfrecords import schema

        return schema.LABELS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
