"""Predicts findings for chest X-ray images with a run's export: the binary over `trainer.prediction`.

    python -m trainer.predict --run_dir=runs/demo --images=data/demo/images_001/images --gradcam

writes `runs/demo/predictions/predictions.csv` (and Grad-CAM overlays with --gradcam; see
`trainer.prediction.predictor`).
"""

from __future__ import annotations

from cxr_cli import console

if __name__ == "__main__":
    console.configure()  # Before TensorFlow loads: quiet unless --verbosity=1 (cxr_cli/console.py).

from trainer.prediction import predictor


def main(argv: list[str], *, holders: dict) -> None:
    """Predicts the images named by the flags and prints a summary."""
    from absl import app

    from cxr_cli import config_flags

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = config_flags.build_config(predictor.PredictConfig, holders)
    results, used, path = predictor.predict(
        config.run_dir,
        list(config.images),
        output_csv=config.output_csv,
        thresholds_path=config.thresholds,
        batch_size=config.batch_size,
        gradcam=config.gradcam,
        gradcam_dir=config.gradcam_dir,
        gradcam_top_k=config.gradcam_top_k,
        tta=config.tta,
        calibrate=config.calibrate,
    )
    failed = [r for r in results if r.error]
    if not used.defaulted:  # Otherwise `predict` has already warned with the same text.
        print(f"Thresholds: {used.source}")
    if used.calibration is not None and config.calibrate:
        print(f"Probabilities: calibrated (Platt scaling fitted on {used.calibration.source_split})")
    print(f"Predicted {len(results) - len(failed)} of {len(results)} images; wrote {path}")
    for result in failed:
        print(f"  error: {result.path}: {result.error}")


def run() -> None:
    """Console-script entry point: defines the flags from PredictConfig, then runs `main`."""
    import functools

    from absl import app

    from cxr_cli import config_flags

    console.configure()  # As a console script TensorFlow is loaded by now; this sets the rest.
    holders = config_flags.define_from_dataclass(predictor.PredictConfig)
    app.run(
        console.exit_on_expected_errors(functools.partial(main, holders=holders), program="trainer.predict")
    )


if __name__ == "__main__":
    run()
