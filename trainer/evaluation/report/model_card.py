"""`MODEL_CARD.md`: what the run's model is, what it was trained and tested on, how well, and for what.

Rendered from the run's `config.json`, the records' manifest, `history.csv` and the report
dict (`auc.json`), so every figure in it is one of theirs. Sections: the model and its weights
(which epoch and why, their sha256), the data, the recipe, the test results (AUCs with 95%
intervals, subgroups, calibration, localization), serving, intended use and caveats.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from tfrecords import manifest as manifest_lib
from trainer.evaluation.report import files, markdown
from trainer.evaluation.report.formatting import fmt, fmt_ci

# The history.csv column that selects the best epoch: the validation AUC that the trainer's
# best checkpoint and early stopping monitor.
BEST_EPOCH_COLUMN = "val_auc"
# The recipe's key hyper-parameters, in this order, when config.json holds them.
_RECIPE_KEYS = (
    "model", "depth", "base_filters", "dropout", "epochs", "batch_size_per_replica", "lr_start",
    "lr_max", "lr_min", "rampup_epochs", "sustain_epochs", "exp_decay", "class_imbalance", "augment",
    "early_stopping_patience", "seed",
)  # fmt: skip


def write_model_card(
    path: str,
    report: Mapping[str, Any],
    *,
    run_config: Mapping[str, Any],
    manifest: manifest_lib.Manifest,
    history: Mapping[str, Sequence[float]] | None,
) -> str:
    """Writes `render_model_card(...)` to `path`; returns the path."""
    return files.write_text(
        path, render_model_card(report, run_config=run_config, manifest=manifest, history=history)
    )


def render_model_card(
    report: Mapping[str, Any],
    *,
    run_config: Mapping[str, Any],
    manifest: manifest_lib.Manifest,
    history: Mapping[str, Sequence[float]] | None,
) -> str:
    """The model card as Markdown.

    Args:
      report: the report dict (`auc.json`).
      run_config: the run's `config.json`.
      manifest: the evaluated records' manifest.
      history: the columns of `history.csv`, or None when the run has none.
    """
    run_name = os.path.basename(os.path.normpath(report["run_dir"])) or report["run_dir"]
    lines = [f"# Model card: {run_name}", ""]
    lines += _model_section(report, run_config)
    lines += _weights_section(report, run_config, history)
    lines += _data_section(report, manifest)
    lines += _recipe_section(run_config)
    lines += _results_section(report)
    lines += _subgroups_section(report)
    lines += _calibration_section(report)
    lines += _localization_section(report)
    lines += _use_section(manifest)
    return "\n".join(lines)


def _model_section(report: Mapping[str, Any], run_config: Mapping[str, Any]) -> list[str]:
    size = run_config.get("image_size")
    return [
        f"A `{report.get('model_name') or run_config.get('model') or 'unknown'}` model that gives each chest "
        f"X-ray ({size}x{size} gray pixels after resizing) a probability for each of "
        f"{len(report['labels'])} labels: {', '.join(report['labels'])}.",
        "",
        f"Its served form is `{report['model_path']}` ({report['model_source']}). The export's "
        "`serving_default` takes encoded PNGs or JPEGs and returns `probabilities`; once "
        f"`trainer.evaluate` has chosen an operating point, also `calibrated_probabilities` and `findings` "
        f"(the thresholds and calibration of `{files.THRESHOLDS_JSON}`).",
        "",
    ]


def _weights_section(
    report: Mapping[str, Any], run_config: Mapping[str, Any], history: Mapping[str, Sequence[float]] | None
) -> list[str]:
    """Which weights, chosen how, and their sha256."""
    train_config = run_config.get("train_config", {})
    chosen = train_config.get("export_weights", run_config.get("export_weights"))
    why = {
        "best": "the epoch with the best validation AUC (`checkpoints/best.keras`)",
        "final": "the last epoch trained",
    }.get(chosen, "not recorded in config.json (a run from before `--export_weights`)")
    lines = [
        "## Weights",
        "",
        f"- sha256 of the weights (Keras order): `{report.get('weights_sha256') or 'unknown'}`; every "
        "report of this folder describes these weights.",
        f"- Chosen: `export_weights={chosen}`: {why}." if chosen else f"- Chosen: {why}.",
    ]
    best = _best_epoch(history)
    if best is not None:
        epoch, value, epochs = best
        lines.append(
            f"- Best epoch by `{BEST_EPOCH_COLUMN}` in `history.csv`: epoch {epoch} of {epochs}, "
            f"validation AUC {fmt(value)}."
        )
    return lines + [""]


def _best_epoch(history: Mapping[str, Sequence[float]] | None) -> tuple[int, float, int] | None:
    """(best epoch counted from 1, its validation AUC, epochs recorded), or None without one."""
    if not history or BEST_EPOCH_COLUMN not in history:
        return None
    values = [v for v in history[BEST_EPOCH_COLUMN]]
    finite = [(v, k) for k, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return None
    value, index = max(finite, key=lambda pair: (pair[0], -pair[1]))  # The first of equal bests.
    epochs = history.get("epoch", list(range(len(values))))
    # Keras' CSVLogger counts epochs from 0; people count from 1.
    return int(epochs[index]) + 1, value, len(values)


def _data_section(report: Mapping[str, Any], manifest: manifest_lib.Manifest) -> list[str]:
    """Records, data set, vocabulary, split mode, counts and label prevalence per split."""
    splits = [name for name in manifest_lib.SPLITS if name in manifest.splits]
    lines = [
        "## Data",
        "",
        f"- Records: `{report['records_dir']}` (manifest sha256 `{report['manifest_sha256']}`), data set "
        f"`{manifest.dataset}`, from `{manifest.options.get('data_dir') or 'unknown'}`.",
        f"- Label vocabulary ({len(manifest.labels)}): {', '.join(manifest.labels)}.",
        f"- Split mode `{report.get('split_mode') or 'unknown'}`: "
        + ", ".join(f"{name} {manifest.splits[name].records} images" for name in splits)
        + f"; {manifest.records_rejected} rows rejected.",
        "",
        "| Label | " + " | ".join(f"{name} prevalence" for name in splits) + " |",
        "|" + "---|" * (len(splits) + 1),
    ]
    counts = {name: manifest.label_counts(name) for name in splits}
    for k, label in enumerate(manifest.labels):
        cells = [
            f"{100 * counts[name][k] / manifest.splits[name].records:.1f}% ({counts[name][k]})"
            if manifest.splits[name].records
            else "–"
            for name in splits
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _recipe_section(run_config: Mapping[str, Any]) -> list[str]:
    """The profile and the key hyper-parameters of config.json."""
    train_config = run_config.get("train_config", {})
    merged = {**train_config, **{k: v for k, v in run_config.items() if k != "train_config"}}
    settings = [f"`{key}={merged[key]}`" for key in _RECIPE_KEYS if key in merged]
    resolved = [
        f"`{key}={run_config[key]}`"
        for key in ("image_size", "num_replicas", "global_batch_size", "lr_max_scaled", "dtype_policy")
        if key in run_config
    ]
    return [
        "## Recipe",
        "",
        f"- Profile `{merged.get('profile', 'unknown')}`: "
        + (", ".join(settings) or "no settings recorded")
        + ".",
        "- Resolved at start-up: " + (", ".join(resolved) or "not recorded") + ".",
        "- Everything else: the run's `config.json`.",
        "",
    ]


def _results_section(report: Mapping[str, Any]) -> list[str]:
    """Per-finding AUCs with their 95% intervals on the headline split."""
    split = report["split"]
    summary = report["splits"][split]
    bootstrap = summary["bootstrap"]
    lines = [
        f"## Results ({split} split: {summary['images']} images, {summary['patients']} patients)",
        "",
        f"Mean AUC of the 14 findings **{fmt(summary['mean_auc_14'])}** (95% CI "
        f"{fmt_ci(*summary['mean_auc_14_ci'])}, bootstrap over {bootstrap['unit']}s, "
        f"{bootstrap['resamples']} resamples); thresholds chosen on {report['thresholds']['source_split']}.",
        "",
        f"| Label | AUC | 95% CI | Positives | Sensitivity / specificity at the {report['thresholds']['source_split']} threshold |",
        "|---|---|---|---|---|",
    ]
    for f in summary["findings"]:
        sensitivity = f.get("sensitivity_at_reference", f["sensitivity"])
        specificity = f.get("specificity_at_reference", f["specificity"])
        lines.append(
            f"| {f['label']} | {fmt(f['auc'])} | {fmt_ci(f['auc_ci_low'], f['auc_ci_high'])} | {f['positives']} "
            f"| {fmt(sensitivity)} / {fmt(specificity)} |"
        )
    return lines + ["", f"All tables and figures: `{files.AUC_MD}`.", ""]


def _subgroups_section(report: Mapping[str, Any]) -> list[str]:
    """Mean AUC of the 14 findings per sex, age band and view position."""
    subgroups = report["splits"][report["split"]].get("subgroups", {})
    rows = [
        f"| {attribute} | {value} | {group['images']} | {group['patients']} | {fmt(group['mean_auc_14'])} |"
        for attribute, groups in subgroups.items()
        for value, group in groups.items()
    ]
    if not rows:
        return []
    return [
        "## Subgroups",
        "",
        "| Attribute | Group | Images | Patients | Mean AUC of 14 findings |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def _calibration_section(report: Mapping[str, Any]) -> list[str]:
    data = report.get("calibration")
    if not data:
        return []
    before = ", ".join(f"{name} {fmt(s['mean_ece_14'])}" for name, s in data["splits"].items())
    lines = ["## Calibration", "", f"Mean ECE of the 14 findings ({data['num_bins']} bins): {before}."]
    if data.get("calibrated"):
        after = ", ".join(f"{name} {fmt(s['mean_ece_14'])}" for name, s in data["calibrated"].items())
        lines.append(
            f"After the Platt scaling fitted on {data['source_split']} (what `calibrated_probabilities` "
            f"serves): {after}."
        )
    else:
        lines.append(f"No recalibration ({data.get('note', data['method'])}).")
    return lines + [""]


def _localization_section(report: Mapping[str, Any]) -> list[str]:
    data = report.get("localization") or {}
    lines = ["## Localization", ""]
    if data.get("status") != "scored":
        return lines + [
            f"Not scored: {data.get('message', 'no localization in the report').rstrip('.')}.",
            "",
        ]
    overall = data["overall"]
    scores = "; ".join(
        f"{name.replace('_', ' ')} {fmt(overall[name])} ({fmt_ci(overall[f'{name}_ci_low'], overall[f'{name}_ci_high'])})"
        for name in ("pointing_game", "energy_inside", "iou")
    )
    return (
        lines
        + [
            f"Grad-CAM maps of the {data['split']} split's boxed findings against the box file "
            f"({overall['pairs']} image-finding pairs, {overall['patients']} patients): {scores}.",
            "",
        ]
        + markdown.sanity_lines(data.get("sanity"))
    )


def _use_section(manifest: manifest_lib.Manifest) -> list[str]:
    return [
        "## Intended use and caveats",
        "",
        "- For research and engineering: measuring a training recipe and its pipeline, reproducing "
        "published comparisons, testing a serving setup. **Not for clinical use**: not a medical device, "
        "not validated on any population, never to inform a diagnosis.",
        "- The demo data (`demo_data`, in NIH's layout) is synthetic: drawn shapes with planted findings. "
        "A model trained or tested on it says nothing about X-rays"
        + (
            f"; these records come from `{manifest.options.get('data_dir')}`."
            if manifest.options.get("data_dir")
            else "."
        ),
        "- NIH ChestX-ray14's labels were mined from the radiology reports by text processing, not read "
        "from the images; they are noisy, so the AUCs "
        "measure agreement with those labels.",
        "- The figures hold for the records named above; another hospital, scanner, view or population "
        "can change them. The intervals cover resampling of these patients only.",
        "",
    ]
