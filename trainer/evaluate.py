"""Evaluates a training run and writes its reports: the binary over `trainer.evaluation`.

    python -m trainer.evaluate --run_dir=runs/demo

writes `runs/demo/reports/` (`auc.json`, `auc.md`, `MODEL_CARD.md`, `auc.csv`, `thresholds.json`,
`predictions.csv` and the figures; see `trainer.evaluation.pipeline`), each naming the sha256 of
the weights it describes, and writes the thresholds and calibration chosen on val into
`runs/demo/export/`, whose `serving_default` then also returns `calibrated_probabilities` and
`findings`.

    python -m trainer.evaluate --run_dir=runs/demo --records_dir=data/tfrecords-chexpert

scores the same run on another data set's records, over the labels both vocabularies share, and
writes `runs/demo/reports_on_chexpert/`.
"""

from __future__ import annotations

from cxr_cli import verbosity

if __name__ == "__main__":
    verbosity.configure()  # Before TensorFlow loads: quiet unless --verbosity=1 (cxr_cli/verbosity.py).

from trainer.evaluation import pipeline, vocabularies
from trainer.evaluation.report import files, formatting


def main(argv: list[str], *, holders: dict) -> None:
    """Evaluates the run named by the flags and logs the headline AUC."""
    from absl import app, logging

    from cxr_cli import config_flags

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = config_flags.build_config(pipeline.EvaluateConfig, holders)
    report = pipeline.evaluate(config)
    headline = report["splits"][report["split"]]
    output_dir = pipeline.reports_dir(config)
    logging.info(
        "%s split: mean AUC of %d findings %s (95%% CI %s); reports in %s",
        report["split"],
        sum(not vocabularies.is_no_finding(label) for label in report["labels"]),
        formatting.fmt(headline["mean_auc_14"]),
        formatting.fmt_ci(*headline["mean_auc_14_ci"]),
        output_dir,
    )
    print(f"Wrote {output_dir}/{files.AUC_MD}")


def run() -> None:
    """Entry point of `python -m trainer.evaluate` and `cxr-evaluate`: flags from `EvaluateConfig`, then `main`."""
    import functools

    from cxr_cli import config_flags, launch

    holders = config_flags.define_from_dataclass(pipeline.EvaluateConfig)
    main_fn = functools.partial(main, holders=holders)
    names = [holder.name for holder in holders.values()]
    launch.run_binary(main_fn, module="trainer.evaluate", doc=__doc__, flag_names=names)


if __name__ == "__main__":
    run()
