"""`auc.md`: the human-readable report rendered from the report dict (`auc.json`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfrecords import schema
from trainer.evaluation import vocabularies
from trainer.evaluation.report import files
from trainer.evaluation.report.formatting import fmt, fmt_ci, signed
from trainer.evaluation.report.published import PUBLISHED_AUC


def write_markdown(path: str, report: Mapping[str, Any], *, figures: Sequence[str] = ()) -> str:
    """Writes `render_markdown(report)` to `path`; returns the path."""
    return files.write_text(path, render_markdown(report, figures=figures))


def render_markdown(report: Mapping[str, Any], *, figures: Sequence[str] = ()) -> str:
    """The human-readable report: headline table, published comparison, val, subgroups, figures."""
    split = report["split"]
    summary = report["splits"][split]
    lines = _heading(report) + cross_dataset_section(report) + _findings_table(report)
    if list(report.get("labels", schema.LABELS)) == list(schema.LABELS):
        lines += _published_section(report)  # The published tables are NIH's 14 findings.
    for other, other_summary in report["splits"].items():
        if other != split:
            lines += _other_split_section(split, summary, other, other_summary)
    lines += _subgroup_section(summary, split)
    lines += tta_section(report)
    lines += calibration_section(report)
    lines += localization_section(report)
    lines += _figures_section(figures)
    return "\n".join(lines)


def _findings_in(entries) -> int:
    """How many of the entries' "label"s are findings (not "No Finding")."""
    return sum(not vocabularies.is_no_finding(entry["label"]) for entry in entries)


def _label_counts(summary: Mapping[str, Any]) -> tuple[int, int]:
    """(findings, labels) of a summary: its labels without and with "No Finding" (14 and 15 for NIH)."""
    labels = summary_labels(summary)
    return sum(not vocabularies.is_no_finding(label) for label in labels), len(labels)


def cross_dataset_section(report: Mapping[str, Any]) -> list[str]:
    """Which labels a model trained on another data set was scored on, and which were left out."""
    cross = report.get("cross_dataset")
    if not cross:
        return []
    model, records = cross["model"], cross["records"]
    lines = [
        "## Cross-dataset evaluation",
        "",
        f"A model trained on **{model['dataset']}** ({len(model['labels'])} labels) scored on "
        f"**{records['dataset']}** records ({len(records['labels'])} labels), over the labels both "
        "vocabularies share (`trainer/evaluation/vocabularies.py` lists the equivalences and their "
        "sources). Each label's AUC counts only the images where the records know it.",
        "",
        "| Model label | Records label |",
        "|---|---|",
        *(f"| {pair['model_label']} | {pair['records_label']} |" for pair in cross["compared"]),
        "",
        f"Left out, model labels without an equivalent: {', '.join(cross['left_out_model_labels']) or 'none'}.",
        f"Left out, records labels without an equivalent: {', '.join(cross['left_out_records_labels']) or 'none'}.",
        "",
    ]
    return lines


def _heading(report: Mapping[str, Any]) -> list[str]:
    """The title, what was evaluated with which model, and the two mean AUCs."""
    split = report["split"]
    summary = report["splits"][split]
    bootstrap = summary["bootstrap"]
    findings, labels = _label_counts(summary)
    return [
        f"# AUC report: {os.path.basename(os.path.normpath(report['run_dir'])) or report['run_dir']}",
        "",
        f"- Split: **{split}** ({summary['images']} images, {summary['patients']} patients), split mode "
        f"`{report.get('split_mode') or 'unknown'}`",
        f"- Records: `{report['records_dir']}` (manifest sha256 `{report['manifest_sha256']}`)",
        f"- Model: `{report['model_path']}` ({report['model_source']}), weights sha256 "
        f"`{report.get('weights_sha256') or 'unknown'}`",
        f"- 95% intervals: percentile bootstrap over {bootstrap['unit']}s, {bootstrap['resamples']} "
        f"resamples, seed {bootstrap['seed']}",
        f"- Thresholds: Youden J on the **{report['thresholds']['source_split']}** split "
        f"(in `{files.THRESHOLDS_JSON}`, used by `trainer.prediction.predictor`)",
        "",
        f"Mean AUC over the {findings} findings: **{fmt(summary['mean_auc_14'])}** "
        f"(95% CI {fmt_ci(*summary['mean_auc_14_ci'])}; {summary['findings_defined']} of {findings} defined); "
        f"over all {labels} labels: **{fmt(summary['mean_auc_15'])}**.",
        "",
        "An AUC is *undefined* where the split holds no positive (or no negative) image of the finding.",
        "",
    ]


def _findings_table(report: Mapping[str, Any]) -> list[str]:
    """The headline split's per-finding table, with the sensitivity at the val thresholds when chosen there."""
    split = report["split"]
    summary = report["splits"][split]
    lines = [f"## Per finding ({split} split)", ""]
    has_reference = "sensitivity_at_reference" in summary["findings"][0]
    header = "| Finding | AUC | 95% CI | PR AUC | Prevalence | Positives | Youden threshold (on this split) | Sensitivity | Specificity |"
    if has_reference:
        header += f" Sens. / spec. at {report['thresholds']['source_split']} threshold |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for f in summary["findings"]:
        row = (
            f"| {f['label']} | {fmt(f['auc'])} | {fmt_ci(f['auc_ci_low'], f['auc_ci_high'])} | {fmt(f['pr_auc'])} "
            f"| {fmt(f['prevalence'] * 100 if f['prevalence'] is not None else None, 1)}% | {f['positives']} "
            f"| {fmt(f['threshold'])} | {fmt(f['sensitivity'])} | {fmt(f['specificity'])} |"
        )
        if has_reference:
            row += f" {fmt(f['sensitivity_at_reference'])} / {fmt(f['specificity_at_reference'])} |"
        lines.append(row)
    findings, labels = _label_counts(summary)
    lines += [
        f"| **Mean of {findings} findings** | **{fmt(summary['mean_auc_14'])}** | "
        f"{fmt_ci(*summary['mean_auc_14_ci'])} |" + " |" * (header.count("|") - 4),
        f"| **Mean of {labels} labels** | **{fmt(summary['mean_auc_15'])}** | |"
        + " |" * (header.count("|") - 4),
        "",
    ]
    return lines


def _figures_section(figures: Sequence[str]) -> list[str]:
    if not figures:
        return []
    return ["## Figures", "", *(f"![{name}]({name})" for name in figures), ""]


def _published_section(report: Mapping[str, Any]) -> list[str]:
    split = report["split"]
    summary = report["splits"][split]
    ours = {f["label"]: f["auc"] for f in summary["findings"]}
    sources = list(PUBLISHED_AUC)
    order = list(PUBLISHED_AUC[sources[0]])  # The published tables' order.
    lines = [
        "## Beside published results",
        "",
        f"The published AUCs below were measured on the **real NIH ChestX-ray14 data, with other splits** "
        f"(each paper its own train/test partition). Ours are from the **{split}** split of "
        f"`{report['records_dir']}` (split mode `{report.get('split_mode') or 'unknown'}`, "
        f"{summary['images']} images). The numbers are not directly comparable; on the synthetic demo "
        f"data the comparison only shows the format.",
        "",
        f"| Finding | Ours ({split}) | " + " | ".join(sources) + " |",
        "|" + "---|" * (len(sources) + 2),
    ]
    for label in order:
        # As published: 0.72 stays 0.72, 0.8094 stays 0.8094.
        cells = [
            f"{PUBLISHED_AUC[s][label]:g}" if PUBLISHED_AUC[s][label] is not None else "–" for s in sources
        ]
        lines.append(f"| {label} | {fmt(ours.get(label))} | " + " | ".join(cells) + " |")
    means = []
    for s in sources:
        values = [PUBLISHED_AUC[s][label] for label in schema.FINDINGS]
        means.append(fmt(float(np.mean(values))))
    lines.append(
        f"| **Mean of 14 findings** | **{fmt(summary['mean_auc_14'])}** | " + " | ".join(means) + " |"
    )
    lines += ["", "(Published means computed from the rows above.)", ""]
    return lines


def _other_split_section(split: str, summary: Mapping, other: str, other_summary: Mapping) -> list[str]:
    lines = [
        f"## {other} split ({other_summary['images']} images, {other_summary['patients']} patients)",
        "",
        f"| Finding | AUC ({other}) | 95% CI ({other}) | AUC ({split}) | Youden threshold ({other}) |",
        "|---|---|---|---|---|",
    ]
    for f_other, f in zip(other_summary["findings"], summary["findings"]):
        lines.append(
            f"| {f['label']} | {fmt(f_other['auc'])} | {fmt_ci(f_other['auc_ci_low'], f_other['auc_ci_high'])} "
            f"| {fmt(f['auc'])} | {fmt(f_other['threshold'])} |"
        )
    lines += [
        f"| **Mean of {_label_counts(summary)[0]} findings** | **{fmt(other_summary['mean_auc_14'])}** "
        f"| {fmt_ci(*other_summary['mean_auc_14_ci'])} | {fmt(summary['mean_auc_14'])} | |",
        "",
    ]
    return lines


def _subgroup_section(summary: Mapping, split: str) -> list[str]:
    titles = {"sex": "sex", "age_band": "age band in years", "view_position": "view position"}
    lines = []
    for attribute, groups in summary.get("subgroups", {}).items():
        if not groups:
            continue
        values = list(groups)
        lines += [
            f"## AUC by {titles.get(attribute, attribute)} ({split} split)",
            "",
            "Cells: AUC (positives). "
            + "; ".join(
                f"{v}: {groups[v]['images']} images, {groups[v]['patients']} patients" for v in values
            )
            + ".",
            "",
            "| Finding | " + " | ".join(values) + " |",
            "|" + "---|" * (len(values) + 1),
        ]
        for label in summary_labels(summary):
            cells = [f"{fmt(groups[v]['auc'][label])} ({groups[v]['positives'][label]})" for v in values]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append(
            f"| **Mean of {_label_counts(summary)[0]} findings** | "
            + " | ".join(f"**{fmt(groups[v]['mean_auc_14'])}**" for v in values)
            + " |"
        )
        lines.append("")
    return lines


def summary_labels(summary: Mapping[str, Any]) -> list[str]:
    return [f["label"] for f in summary["findings"]]


def tta_section(report: Mapping[str, Any]) -> list[str]:
    """Markdown: AUCs with and without the test-time augmentation, from the same run."""
    tta = report.get("tta")
    if not tta:
        return []
    lines = ["## Test-time augmentation", ""]
    if tta["mode"] == "none":
        return lines + [
            "Not used: each image is predicted once. `--tta=hflip` averages the probabilities of the image "
            "and its mirror image and reports the AUCs with and without it.",
            "",
        ]
    lines += [
        f"`{tta['mode']}`: each image's probabilities are the mean of the image's and its mirror image's "
        f"(left and right swapped). The tables above use them; below, the same model and images "
        f"({tta['split']} split) without it.",
        "",
        f"| Finding | AUC without | AUC with {tta['mode']} | Difference |",
        "|---|---|---|---|",
    ]
    for f in tta["findings"]:
        difference = (
            None if f["auc_without"] is None or f["auc_with"] is None else f["auc_with"] - f["auc_without"]
        )
        lines.append(
            f"| {f['label']} | {fmt(f['auc_without'])} | {fmt(f['auc_with'])} | {signed(difference)} |"
        )
    without, with_ = tta["mean_auc_14_without"], tta["mean_auc_14_with"]
    difference = None if without is None or with_ is None else with_ - without
    lines += [
        f"| **Mean of 14 findings** | **{fmt(without)}** ({fmt_ci(*tta['mean_auc_14_without_ci'])}) "
        f"| **{fmt(with_)}** ({fmt_ci(*tta['mean_auc_14_with_ci'])}) | {signed(difference)} |",
        "",
    ]
    return lines


def calibration_section(report: Mapping[str, Any]) -> list[str]:
    """Markdown: per-label ECE on val and test, before and after the Platt scaling fitted on val."""
    data = report.get("calibration")
    if not data:
        return []
    splits = list(data["splits"])
    lines = [
        "## Calibration",
        "",
        f"Expected calibration error (ECE): over {data['num_bins']} equal-width bins of the predicted "
        "probability, the image-weighted mean gap between a bin's mean probability and its share of "
        f"positive images; 0 is perfect. Reliability diagrams: `{files.RELIABILITY_PNG}`.",
        "",
    ]
    calibrated = data.get("calibrated", {})
    if data["method"] == "platt":
        lines += [
            f"Recalibration: Platt scaling per label fitted on **{data['source_split']}**, "
            "p' = sigmoid(slope * logit(p) + intercept), stored in "
            f"`{files.THRESHOLDS_JSON}` and applied by `trainer.prediction.predictor`. It is increasing, so AUCs and the "
            "images above each threshold do not change. ECE after it on the split it was fitted on is "
            "in-sample; on the other split it is the honest figure.",
            "",
        ]
    else:
        lines += [f"Recalibration: none ({data.get('note', 'not requested')}).", ""]
    header = [
        "Label",
        *(f"ECE {s}" for s in splits),
        *(f"ECE {s} after Platt" for s in calibrated),
        "Platt slope / intercept",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    parameters = data.get("parameters", {}).get("parameters", {})
    not_fitted = data.get("parameters", {}).get("not_fitted", {})
    for k, label in enumerate(report["labels"]):
        cells = [fmt(data["splits"][s]["findings"][k]["ece"]) for s in splits]
        cells += [fmt(calibrated[s]["findings"][k]["ece"]) for s in calibrated]
        p = parameters.get(label)
        if p is not None:
            cells.append(f"{p['slope']:.3f} / {p['intercept']:.3f}")
        else:
            cells.append(f"not fitted: {not_fitted[label]}" if label in not_fitted else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    means = [fmt(data["splits"][s]["mean_ece_14"]) for s in splits] + [
        fmt(calibrated[s]["mean_ece_14"]) for s in calibrated
    ]
    mean = f"| **Mean of {_findings_in({'label': label} for label in report['labels'])} findings** | "
    lines += [mean + " | ".join(f"**{m}**" for m in means) + " | |", ""]
    return lines


def localization_section(report: Mapping[str, Any]) -> list[str]:
    """Markdown: the Grad-CAM maps of boxed findings scored against the boxes, or why not."""
    data = report.get("localization")
    if not data:
        return []
    lines = ["## Localization (Grad-CAM against bounding boxes)", ""]
    box_file = data.get("box_file")
    if box_file:
        rejected = {reason: n for reason, n in box_file["rejects"].items() if n}
        lines += [
            f"Box file `{box_file['path']}`: {box_file['rows']} rows, {box_file['boxes']} boxes on the "
            f"{data['split']} split's images, scaled from {box_file['source_size']} to {box_file['image_size']} "
            f"pixels; rejected rows"
            + (": " + ", ".join(f"{reason} {n}" for reason, n in rejected.items()) if rejected else ": none")
            + f" (each with its reason in `{files.BOX_REJECTS_JSONL}`).",
            "",
        ]
    if data["status"] != "scored":
        return lines + [f"**Not scored:** {data['message']}", ""]
    if data.get("weights_sha256"):
        lines += [
            f"Grad-CAM of the weights sha256 `{data['weights_sha256']}` ({data['weights_source']}).",
            "",
        ]
    overall = data["overall"]
    lines += [
        f"For every ({data['split']} image, boxed finding) pair, the Grad-CAM map of that finding at the "
        "records' size against the union of its boxes: **pointing game** (the map's maximum inside a "
        "box; a flat peak counts the share of its pixels inside), **energy inside** (the share of the "
        f"map's mass inside the boxes), **IoU** of the boxes with the region where the map is at least "
        f"{data['cam_threshold']:g} x its maximum. 95% intervals: bootstrap over patients "
        f"({data['bootstrap']['resamples']} resamples). A map without positive evidence scores 0 "
        f"({overall['empty_maps']} of {overall['pairs']}). **Baseline**: the boxes' area share, what a map "
        "that ignores the image scores as energy inside and about its pointing game.",
        "",
        "| Finding | Pairs | Patients | Pointing game (95% CI) | Energy inside (95% CI) | IoU (95% CI) | Baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in [*data["findings"], {**overall, "label": "**All pairs**"}]:
        cells = [
            f"{fmt(f[name])} ({fmt_ci(f[f'{name}_ci_low'], f[f'{name}_ci_high'])})" for name in _CAM_SCORES
        ]
        cells.append(fmt(f.get("box_area_share")))
        lines.append(f"| {f['label']} | {f['pairs']} | {f['patients']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += sanity_lines(data.get("sanity"))
    mean_maps = data.get("mean_maps")
    if mean_maps:
        row, col = mean_maps["peak_cell"]
        lines += [
            f"Mean maps (`{files.MEAN_CAM_PNG}`) over the {mean_maps['images']} images of the split, each image's "
            f"map of its most probable finding: {100 * mean_maps['peak_cell_share']:.1f}% of these maps peak "
            f"in the same cell (row {row}, column {col} of a {mean_maps['grid']}x{mean_maps['grid']} grid). "
            "A share near 100% would mean a map that points at one place whatever the image shows.",
            "",
        ]
    return lines


def sanity_lines(sanity: Mapping[str, Any] | None) -> list[str]:
    """Markdown: the maps' sanity checks (border share, image-blind baseline, model randomization)."""
    if not sanity:
        return []
    border = 100 * sanity["border_fraction"]
    lines = [
        f"Sanity checks of the {sanity['pairs']} scored maps: **border share** (the map's mass in the outer "
        f"{border:g}% of the image on each side) {fmt(sanity['border_energy_share'])}, where a flat map scores "
        f"{fmt(sanity['uniform_border_share'])}; **image-blind baseline**: the boxes cover "
        f"{fmt(sanity['box_area_share'])} of the image on average, the energy inside of a map that ignores "
        "the image and about its pointing game.",
        "",
    ]
    lines += verdict_lines(sanity)
    randomization = sanity.get("randomization")
    if randomization and randomization.get("findings"):
        lines += [
            "Model randomization (Adebayo et al. 2018): Spearman rank correlation of each map with the map "
            "of the same architecture with re-initialized weights (seed "
            f"{randomization['seed']}), over {randomization['pairs']} pairs: **{fmt(randomization['spearman'])}**. "
            "Near 1, the map shows the architecture rather than what training learned.",
            "",
            "| Finding | Maps | Rank correlation, trained vs re-initialized |",
            "|---|---|---|",
            *(
                f"| {label} | {entry['maps']} | {fmt(entry['spearman'])} |"
                for label, entry in randomization["findings"].items()
            ),
            "",
        ]
    return lines


def verdict_lines(sanity: Mapping[str, Any]) -> list[str]:
    """Markdown: whether the pointing game and energy inside clear the image-blind baseline."""
    verdicts = sanity.get("versus_baseline") or {}
    named = {"pointing_game": "pointing game", "energy_inside": "energy inside"}
    above = [named[s] for s, v in verdicts.items() if v == "above"]
    not_above = [named[s] for s, v in verdicts.items() if v == "not_above"]
    if not above and not not_above:
        return []
    if not_above:
        text = (
            f"**Not above the baseline**: the 95% interval of the {' and the '.join(not_above)} reaches down "
            f"to the image-blind baseline ({fmt(sanity['box_area_share'])}) or below. These maps do not show "
            "where the boxed findings are; read them as what the model responds to, not as localization."
        )
        if above:
            text += f" (The {' and the '.join(above)} clears it.)"
    else:
        text = (
            f"**Above the baseline**: the 95% intervals of the {' and the '.join(above)} lie above the "
            f"image-blind baseline ({fmt(sanity['box_area_share'])}): the maps point at the boxed findings "
            "more than a map that ignores the image."
        )
    return [text, ""]


_CAM_SCORES = ("pointing_game", "energy_inside", "iou")
