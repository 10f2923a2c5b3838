"""Predicts findings for chest X-ray images with a run's export: the binary over `trainer.prediction`.

    python -m trainer.predict --run_dir=runs/demo --images=data/demo/images_001/images --gradcam

writes `runs/demo/predictions/predictions.csv` (and Grad-CAM overlays with --gradcam; see
`trainer.prediction.predictor`).
"""

from __future__ import annotations

from cxr_cli import verbosity

if __name__ == "__main__":
    verbosity.configure()  # Before TensorFlow loads: quiet unless --verbosity=1 (cxr_cli/verbosity.py).

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
    """Entry point of `python -m trainer.predict` and `cxr-predict`: flags from `PredictConfig`, then `main`."""
    import functools

    from cxr_cli import config_flags, launch

    holders = config_flags.define_from_dataclass(predictor.PredictConfig)
    main_fn = functools.partial(main, holders=holders)
    names = [holder.name for holder in holders.values()]
    launch.run_binary(main_fn, module="trainer.predict", doc=__doc__, flag_names=names)


if __name__ == "__main__":
    run()
