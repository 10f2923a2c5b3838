"""`reports/index.html`: the evaluation on one self-contained page.

    from trainer.evaluation.report import page as html_page
    html_page.write_index("runs/demo/reports")     # -> runs/demo/reports/index.html

reads a finished reports folder (`auc.json`, the figures beside it, `auc.md`, and
`MODEL_CARD.md` when present) and writes one HTML file that needs nothing else: every figure
is embedded as a `data:` URI, the style is inline, there is no script and no network access.
Sections: the summary, the per-finding table with 95% intervals, ROC curves, training curves,
calibration, localization (Grad-CAM overlays and mean maps), the data, the other tables of
`auc.md` (published results, val, subgroups, test-time augmentation), and the model card. A figure the folder lacks is named as missing, never drawn broken.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from trainer.evaluation.report import files as report_files
from trainer.evaluation.report import formatting, markdown

INDEX_HTML = "index.html"
MODEL_CARD_MD = report_files.MODEL_CARD_MD

# (section title, figures in it, one line on what they show).
FIGURE_SECTIONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("ROC curves", (report_files.ROC_PNG,), "Per-finding ROC curves of the headline split."),
    ("Training curves", (report_files.TRAINING_PNG,), "Loss, AUC and learning rate per epoch (history.csv)."),
    (
        "Calibration",
        (report_files.RELIABILITY_PNG,),
        "Reliability diagrams: predicted probability against the observed share of positives.",
    ),
    (
        "Localization",
        (report_files.LOCALIZATION_PNG, report_files.MEAN_CAM_PNG),
        "Grad-CAM overlays against the bounding boxes, and mean maps over the split.",
    ),
    (
        "Data",
        (report_files.DISTRIBUTION_PNG, report_files.COOCCURRENCE_PNG),
        "Label counts per split and how often findings occur together.",
    ),
)

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d2430;
       background: #f5f6f8; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #dde2ea; padding-bottom: 4px; margin-top: 2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; display: block; max-width: 100%;
        overflow-x: auto; }
th, td { border: 1px solid #d5dae3; padding: 4px 6px; text-align: right; } .iv { white-space: nowrap; }
p, li, td, code { overflow-wrap: anywhere; }
th { background: #eef1f6; } td:first-child, th:first-child { text-align: left; }
table.facts td { text-align: left; }
tr.mean td { font-weight: 600; background: #f7f9fc; }
.headline { font-size: 1.25em; } .muted { color: #5b6574; } code { background: #f0f2f5; padding: 0 3px; }
img { max-width: 100%; } figure { margin: 1em 0; } figure img { border: 1px solid #e3e6eb; }
figcaption { color: #5b6574; font-size: 0.9em; } .missing { color: #9a5b00; }
.ci { display: inline-block; position: relative; width: 90px; height: 10px; background: #eef1f6;
      vertical-align: middle; } .ci span { position: absolute; top: 2px; height: 6px; background: #4a7bd0; }
.ci i { position: absolute; top: 0; width: 2px; height: 10px; background: #1d2430; }
"""


def write_index(reports_dir: str) -> str:
    """Writes `reports_dir/index.html` from the reports in that folder; returns its path.

    Raises:
      ValueError: no `auc.json` in `reports_dir`, or one that is not the evaluation's, naming it.
    """
    page = render_page(reports_dir)
    path = os.path.join(reports_dir, INDEX_HTML)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(page)
    return path


def render_page(reports_dir: str) -> str:
    """The page's HTML (see the module docstring)."""
    report = _read_report(reports_dir)
    title = f"Evaluation: {_run_name(report)}"
    sections = [
        ("summary", "Summary", _summary(report)),
        ("findings", "Per finding", _findings_table(report)),
    ]
    for name, figures, caption in FIGURE_SECTIONS:
        body = _figures(reports_dir, figures, caption)
        if name == "Calibration":
            body += _calibration(report)
        elif name == "Localization":
            body += _localization(report)
        sections.append((_anchor(name), name, body))
    shown = {figure for _, figures, _ in FIGURE_SECTIONS for figure in figures}
    others = [name for name in _listdir(reports_dir) if _is_image(name) and name not in shown]
    if others:
        sections.append(("other-figures", "Other figures", _figures(reports_dir, others, "")))
    sections.append(("more-tables", "More tables (auc.md)", _markdown_file(reports_dir, report_files.AUC_MD)))
    sections.append(("model-card", "Model card", _markdown_file(reports_dir, MODEL_CARD_MD)))
    nav = " ".join(f'<a href="#{anchor}">{html.escape(name)}</a>' for anchor, name, _ in sections)
    body = "\n".join(
        f'<section id="{anchor}"><h2>{html.escape(name)}</h2>\n{content}</section>'
        for anchor, name, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style></head>\n"
        f"<body><main><h1>{html.escape(title)}</h1>\n<nav>{nav}</nav>\n{body}\n</main></body></html>\n"
    )


def _read_report(reports_dir: str) -> dict[str, Any]:
    path = os.path.join(reports_dir, report_files.AUC_JSON)
    if not tf.io.gfile.exists(path):
        raise ValueError(f"{path} does not exist; evaluate the run first (python -m trainer.evaluate).")
    with tf.io.gfile.GFile(path) as f:
        try:
            report = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}).") from e
    if not isinstance(report, dict) or report.get("split") not in report.get("splits", {}):
        raise ValueError(f"{path}: expected the evaluation's report (a 'split' and its 'splits' entry).")
    return report


def _run_name(report: Mapping[str, Any]) -> str:
    run_dir = str(report.get("run_dir", ""))
    return os.path.basename(os.path.normpath(run_dir)) or run_dir or "run"


def _anchor(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _listdir(folder: str) -> list[str]:
    return sorted(tf.io.gfile.listdir(folder)) if tf.io.gfile.isdir(folder) else []


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in _MIME


def _fmt(value: Any, digits: int = 3) -> str:
    return formatting.fmt(value, digits)


# ---------------------------------------------------------------------------------------------
# Sections built from auc.json.


def _summary(report: Mapping[str, Any]) -> str:
    split = report["split"]
    summary = report["splits"][split]
    low, high = summary.get("mean_auc_14_ci") or (None, None)
    thresholds = report.get("thresholds") or {}
    items = [
        ("Split", f"{split} ({summary['images']} images, {summary['patients']} patients), "
                  f"split mode {report.get('split_mode') or 'unknown'}"),
        ("Model", f"{report.get('model_path', '?')} ({report.get('model_source', '?')})"),
        ("Weights sha256", report.get("weights_sha256")),
        ("Records", f"{report.get('records_dir', '?')} (manifest sha256 {report.get('manifest_sha256', '?')})"),
        ("Thresholds", f"Youden J on the {thresholds.get('source_split', '?')} split"),
    ]  # fmt: skip
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td><code>{html.escape(str(value))}</code></td></tr>"
        for name, value in items
        if value
    )
    return (
        f'<p class="headline">Mean AUC over the 14 findings: <b>{_fmt(summary.get("mean_auc_14"))}</b> '
        f"(95% CI {_interval(low, high)}; {summary.get('findings_defined', '?')} of 14 defined); "
        f"over all 15 labels: <b>{_fmt(summary.get('mean_auc_15'))}</b>.</p>\n<table class='facts'>{rows}</table>\n"
        '<p class="muted">An AUC is undefined where the split holds no positive (or no negative) image.</p>\n'
    )


def _interval(low: Any, high: Any) -> str:
    if low is None or high is None:
        return formatting.UNDEFINED
    return f'<span class="iv">{_fmt(low)}–{_fmt(high)}</span>'


def _ci_bar(auc: Any, low: Any, high: Any) -> str:
    """A 0..1 scale with the interval as a bar and the point as a tick (empty when undefined)."""
    if auc is None or low is None or high is None:
        return ""

    def x(value: float) -> float:
        return max(0.0, min(100.0, float(value) * 100.0))

    return (
        f'<span class="ci" title="95% CI {_fmt(low)}–{_fmt(high)} on a 0–1 scale">'
        f'<span style="left:{x(low):.1f}%;width:{max(x(high) - x(low), 1.0):.1f}%"></span>'
        f'<i style="left:{x(auc):.1f}%"></i></span>'
    )


def _findings_table(report: Mapping[str, Any]) -> str:
    split = report["split"]
    summary = report["splits"][split]
    header = ["Finding", "AUC", "95% CI", "", "PR AUC", "Prevalence", "Positives", "Threshold", "Sensitivity",
              "Specificity"]  # fmt: skip
    rows = []
    for f in summary["findings"]:
        prevalence = None if f.get("prevalence") is None else 100 * f["prevalence"]
        cells = [
            html.escape(f["label"]), _fmt(f["auc"]), _interval(f["auc_ci_low"], f["auc_ci_high"]),
            _ci_bar(f["auc"], f["auc_ci_low"], f["auc_ci_high"]), _fmt(f.get("pr_auc")),
            f"{_fmt(prevalence, 1)}%", str(f.get("positives", "")), _fmt(f.get("threshold")),
            _fmt(f.get("sensitivity")), _fmt(f.get("specificity")),
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    low, high = summary.get("mean_auc_14_ci") or (None, None)
    mean = [
        "Mean of 14 findings", _fmt(summary.get("mean_auc_14")), _interval(low, high),
        _ci_bar(summary.get("mean_auc_14"), low, high),
    ]  # fmt: skip
    rows.append('<tr class="mean">' + "".join(f"<td>{c}</td>" for c in mean) + "<td></td>" * 6 + "</tr>")
    return (
        f'<p class="muted">{html.escape(split)} split; thresholds chosen on this split (Youden J).</p>\n'
        + _table(header, rows)
    )


def _table(header: Sequence[str], rows: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n"


def _calibration(report: Mapping[str, Any]) -> str:
    data = report.get("calibration")
    if not data or "splits" not in data:
        return '<p class="muted">No calibration in this report.</p>\n'
    splits = list(data["splits"])
    calibrated = data.get("calibrated", {})
    header = ["Label", *(f"ECE {s}" for s in splits), *(f"ECE {s} after Platt" for s in calibrated)]
    rows = []
    for k, label in enumerate(report.get("labels", [])):
        cells = [_fmt(data["splits"][s]["findings"][k]["ece"]) for s in splits]
        cells += [_fmt(calibrated[s]["findings"][k]["ece"]) for s in calibrated]
        rows.append(f"<tr><td>{html.escape(label)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    means = [_fmt(data["splits"][s].get("mean_ece_14")) for s in splits]
    means += [_fmt(calibrated[s].get("mean_ece_14")) for s in calibrated]
    rows.append(
        '<tr class="mean"><td>Mean of 14 findings</td>' + "".join(f"<td>{m}</td>" for m in means) + "</tr>"
    )
    method = data.get("method", "none")
    note = (
        f"Platt scaling per label fitted on {html.escape(str(data.get('source_split', '?')))}; "
        "ECE after it on that split is in-sample, on the other split it is the honest figure."
        if method == "platt"
        else f"No recalibration ({html.escape(str(data.get('note', 'not requested')))})."
    )
    return f'<p class="muted">Expected calibration error (0 is perfect). {note}</p>\n' + _table(header, rows)


def _localization(report: Mapping[str, Any]) -> str:
    data = report.get("localization")
    if not data:
        return ""
    if data.get("status") != "scored":
        return (
            f'<p class="muted">Not scored: {html.escape(str(data.get("message", data.get("status"))))}</p>\n'
        )
    header = ["Finding", "Pairs", "Patients", "Pointing game", "Energy inside", "IoU", "Baseline"]
    rows = []
    for f in [*data.get("findings", []), {**data["overall"], "label": "All pairs"}]:
        cells = [str(f["pairs"]), str(f["patients"])] + [
            f"{_fmt(f[name])} ({_interval(f[f'{name}_ci_low'], f[f'{name}_ci_high'])})"
            for name in ("pointing_game", "energy_inside", "iou")
        ]
        cells.append(_fmt(f.get("box_area_share")))
        style = ' class="mean"' if f["label"] == "All pairs" else ""
        rows.append(
            f"<tr{style}><td>{html.escape(f['label'])}</td>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    verdict = "".join(
        f"<p>{html.escape(line).replace('**', '')}</p>\n"
        for line in markdown.verdict_lines(data.get("sanity") or {})
        if line
    )
    intro = (
        '<p class="muted">Grad-CAM maps scored against the bounding boxes (95% CIs); the baseline is the '
        "boxes' area share, what a map that ignores the image scores.</p>\n"
    )
    return intro + _table(header, rows) + verdict


# ---------------------------------------------------------------------------------------------
# Figures and Markdown, embedded.


def data_uri(path: str) -> str:
    """The file as a `data:` URI (its type from the extension)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        encoded = base64.b64encode(f.read()).decode("ascii")
    mime = _MIME.get(os.path.splitext(path)[1].lower(), "application/octet-stream")
    return f"data:{mime};base64,{encoded}"


def _figures(reports_dir: str, names: Sequence[str], caption: str) -> str:
    parts = [f'<p class="muted">{html.escape(caption)}</p>'] if caption else []
    for name in names:
        path = os.path.join(reports_dir, name)
        if not tf.io.gfile.exists(path):
            parts.append(f'<p class="missing">{html.escape(name)}: not in this reports folder.</p>')
            continue
        parts.append(
            f'<figure><img src="{data_uri(path)}" alt="{html.escape(name)}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
        )
    return "\n".join(parts) + "\n"


def _markdown_file(reports_dir: str, name: str) -> str:
    path = os.path.join(reports_dir, name)
    if not tf.io.gfile.exists(path):
        return f'<p class="missing">{html.escape(name)}: not in this reports folder.</p>\n'
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    if name == report_files.AUC_MD:
        # Its "## " sections become <h3>, under the page's <h2>.
        return render_markdown(_other_sections(text), reports_dir, heading_offset=1)
    return render_markdown(text, reports_dir, heading_offset=2)  # The card's "# " title becomes <h3>.


# auc.md's sections that the page already shows, from auc.json or as embedded figures.
_SHOWN_SECTIONS = ("Per finding", "Calibration", "Localization", "Figures")


def _other_sections(text: str) -> str:
    """auc.md without its preamble and the sections shown above (`_SHOWN_SECTIONS`)."""
    sections = re.split(r"^(?=## )", text, flags=re.MULTILINE)[1:]
    return "".join(s for s in sections if not s[3:].startswith(_SHOWN_SECTIONS))


def render_markdown(text: str, reports_dir: str, *, heading_offset: int = 0) -> str:
    """Markdown (CommonMark with tables) to HTML; raw HTML is escaped.

    `heading_offset` moves every heading down that many levels (at most <h6>), so a document
    nests under the page's own headings.

    An image naming a file of `reports_dir` is embedded as a `data:` URI; any other image
    becomes its alt text, so the page never reaches the network.
    """
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def image(renderer, tokens, idx, options, env):
        token = tokens[idx]
        src = str(token.attrGet("src") or "")
        alt = html.escape(token.content or src)
        local = os.path.join(reports_dir, src)
        outside = ":" in src or src.startswith("/") or ".." in src.split("/")
        if outside or not _is_image(src) or not tf.io.gfile.exists(local):
            return f'<span class="missing">[figure: {alt}]</span>'
        return f'<img src="{data_uri(local)}" alt="{alt}">'

    md.add_render_rule("image", image)

    def heading(match: re.Match) -> str:
        return f"<{match.group(1)}h{min(6, int(match.group(2)) + heading_offset)}>"

    return re.sub(r"<(/?)h([1-6])>", heading, md.render(text))
