"""Which labels of two data sets' vocabularies name the same finding, for cross-dataset evaluation.

A model trained on one data set (its run's label vocabulary) is scored on another data set's
records (their manifest's vocabulary) over the labels both share. Two labels are the same
finding when they have the same name once case, underscores and hyphens are ignored
("Pleural_Thickening" = "pleural thickening"), or when the table below lists them as
equivalent. Every other label is left out of the comparison, and the report says which.

The table: one row per NIH ChestX-ray14 label, with the names the other supported data sets
use for the same finding and the source of each equivalence.

| NIH (ChestX-ray14)   | CheXpert / MIMIC-CXR-JPG | PadChest             | RSNA Pneumonia | folders (pediatric) |
|----------------------|--------------------------|----------------------|----------------|---------------------|
| Atelectasis          | Atelectasis              | atelectasis          |                |                     |
| Cardiomegaly         | Cardiomegaly             | cardiomegaly         |                |                     |
| Consolidation        | Consolidation            | consolidation        |                |                     |
| Edema                | Edema                    | pulmonary edema      |                |                     |
| Effusion             | Pleural Effusion         | pleural effusion     |                |                     |
| Emphysema            | (none)                   | emphysema            |                |                     |
| Fibrosis             | (none)                   | pulmonary fibrosis   |                |                     |
| Hernia               | (none)                   | hiatal hernia        |                |                     |
| Infiltration         | (none)                   | infiltrates          |                |                     |
| Mass                 | (none)                   | mass                 |                |                     |
| Nodule               | (none)                   | nodule               |                |                     |
| Pleural_Thickening   | (none)                   | pleural thickening   |                |                     |
| Pneumonia            | Pneumonia                | pneumonia            | (none)         | PNEUMONIA           |
| Pneumothorax         | Pneumothorax             | pneumothorax         |                |                     |
| No Finding           | No Finding               | normal               | Normal         | NORMAL              |

Sources (`SOURCES` holds them by key; each row of `EQUIVALENCES` names its own):

- same name: CheXpert's 14 observations (Irvin et al., "CheXpert: A Large Chest Radiograph
  Dataset with Uncertainty Labels and Expert Comparison", AAAI 2019, Table 1), which MIMIC-CXR-JPG
  2.x labels with the same labeler (Johnson et al., 2019), name Atelectasis, Cardiomegaly,
  Consolidation, Edema, Pneumonia and Pneumothorax as NIH does (Wang et al., CVPR 2017); PadChest
  (Bustos et al., Medical Image Analysis 2020) names them in lower case. torchxrayvision's dataset
  readers (`torchxrayvision/datasets.py`) align these data sets by those names.
- torchxrayvision: its CheXpert and MIMIC-CXR readers rename "Pleural Effusion" to NIH's
  "Effusion"; its PadChest reader maps "infiltrates" to Infiltration and "pleural thickening" to
  Pleural_Thickening, and matches "edema", "effusion", "fibrosis" and "hernia" inside PadChest's
  longer names ("pulmonary edema", "pleural effusion", "pulmonary fibrosis", "hiatal hernia").
- Kermany et al., "Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep
  Learning", Cell 2018: the pediatric set's classes are PNEUMONIA (bacterial or viral) and NORMAL.
- "No Finding" is NIH's label for none of its 14 findings and CheXpert's for none of its
  observations but support devices; PadChest writes "normal", the pediatric set NORMAL. The
  definitions differ in what they exclude, so its AUC compares "no finding named" only.

NIH labels without an equivalent in CheXpert and MIMIC-CXR-JPG: Emphysema, Fibrosis, Hernia,
Infiltration, Mass, Nodule and Pleural_Thickening. CheXpert's "Lung Lesion" (masses and
nodules), "Lung Opacity" (infiltrates among others) and "Pleural Other" (thickening among others)
are broader findings, not the same ones, and are not equated. The pediatric folder set shares
Pneumonia and No Finding with NIH. RSNA Pneumonia's records keep the challenge's three classes:
its "Normal" is No Finding; its positive class, "Lung Opacity" (an opacity suggesting pneumonia),
shares its name with CheXpert's broader finding, so one table cannot equate it with Pneumonia and
it is left out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

SOURCES: dict[str, str] = {
    "same_name": (
        "Same finding name: CheXpert (Irvin et al., AAAI 2019, Table 1), MIMIC-CXR-JPG (same labeler), "
        "NIH ChestX-ray14 (Wang et al., CVPR 2017), PadChest (Bustos et al., 2020)."
    ),
    "torchxrayvision": (
        "torchxrayvision/datasets.py: CheXpert and MIMIC-CXR 'Pleural Effusion' renamed 'Effusion'; "
        "PadChest names mapped to NIH's (infiltrates, pleural thickening, and edema, effusion, "
        "fibrosis, hernia matched inside longer names); RSNA positives labelled 'Pneumonia'."
    ),
    "kermany_2018": (
        "Kermany et al., Cell 2018: the pediatric set's classes PNEUMONIA (bacterial or viral) and NORMAL."
    ),
    "no_finding": (
        "NIH 'No Finding' (none of 14 findings), CheXpert 'No Finding' (no observation but support "
        "devices), PadChest 'normal', pediatric NORMAL: each set's label for no finding named."
    ),
}


@dataclasses.dataclass(frozen=True)
class Equivalence:
    """One finding: its NIH name, the other vocabularies' names for it, and the sources."""

    finding: str
    names: tuple[str, ...]
    sources: tuple[str, ...]


# One row per NIH label, in `tfrecords.schema.LABELS` order (the table of the module docstring).
EQUIVALENCES: tuple[Equivalence, ...] = (
    Equivalence("Atelectasis", ("Atelectasis",), ("same_name",)),
    Equivalence("Cardiomegaly", ("Cardiomegaly",), ("same_name",)),
    Equivalence("Consolidation", ("Consolidation",), ("same_name",)),
    Equivalence("Edema", ("Edema", "pulmonary edema"), ("same_name", "torchxrayvision")),
    Equivalence("Effusion", ("Pleural Effusion",), ("torchxrayvision",)),
    Equivalence("Emphysema", ("emphysema",), ("same_name",)),
    Equivalence("Fibrosis", ("pulmonary fibrosis",), ("torchxrayvision",)),
    Equivalence("Hernia", ("hiatal hernia",), ("torchxrayvision",)),
    Equivalence("Infiltration", ("infiltrates",), ("torchxrayvision",)),
    Equivalence("Mass", ("mass",), ("same_name",)),
    Equivalence("Nodule", ("nodule",), ("same_name",)),
    Equivalence("Pleural_Thickening", ("pleural thickening",), ("torchxrayvision",)),
    Equivalence("Pneumonia", ("Pneumonia", "PNEUMONIA"), ("same_name", "torchxrayvision", "kermany_2018")),
    Equivalence("Pneumothorax", ("Pneumothorax",), ("same_name",)),
    Equivalence("No Finding", ("No Finding", "normal", "NORMAL"), ("no_finding", "kermany_2018")),
)


def normalize(name: str) -> str:
    """A label name without case, underscores, hyphens or repeated spaces: "Pleural_Thickening" ->
    "pleural thickening"."""
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().casefold()


def _by_name() -> dict[str, Equivalence]:
    table: dict[str, Equivalence] = {}
    for row in EQUIVALENCES:
        for name in (row.finding, *row.names):
            table[normalize(name)] = row
    return table


_BY_NAME = _by_name()


def finding_of(label: str) -> str:
    """The finding a label names: the NIH name of its row of the table, else its normalized name."""
    row = _BY_NAME.get(normalize(label))
    return row.finding if row is not None else normalize(label)


def is_no_finding(label: str) -> bool:
    """Whether a label is its data set's "no finding" label ("No Finding", "NORMAL", "normal"),
    which the findings' mean AUC leaves out."""
    return finding_of(label) == "No Finding"


def sources_of(label: str) -> tuple[str, ...]:
    """The keys of `SOURCES` behind a label's equivalence ("same_name" for a label outside the table)."""
    row = _BY_NAME.get(normalize(label))
    return row.sources if row is not None else ("same_name",)


@dataclasses.dataclass(frozen=True)
class SharedLabels:
    """The labels a model's and a records directory's vocabularies share, in the model's order.

    Attributes:
      model_labels, records_labels: the two vocabularies.
      model_indices, records_indices: column k of the comparison is `model_indices[k]` of the
        model's output and `records_indices[k]` of the records' labels.
      model_only: model labels without an equivalent in the records (left out).
      records_only: records labels without an equivalent in the model (left out).
    """

    model_labels: tuple[str, ...]
    records_labels: tuple[str, ...]
    model_indices: tuple[int, ...]
    records_indices: tuple[int, ...]
    model_only: tuple[str, ...]
    records_only: tuple[str, ...]

    @property
    def compared(self) -> tuple[str, ...]:
        """The compared labels by the model's names, in the model's order."""
        return tuple(self.model_labels[i] for i in self.model_indices)

    @property
    def identical(self) -> bool:
        """Whether both vocabularies are the same names in the same order (no mapping needed)."""
        return self.model_labels == self.records_labels

    def to_json(self) -> dict[str, Any]:
        """The report's account of the comparison: each pair with its sources, and what was left out."""
        return {
            "compared": [
                {
                    "model_label": self.model_labels[m],
                    "records_label": self.records_labels[r],
                    "finding": finding_of(self.model_labels[m]),
                    "sources": [SOURCES[key] for key in sources_of(self.model_labels[m])],
                }
                for m, r in zip(self.model_indices, self.records_indices)
            ],
            "left_out_model_labels": list(self.model_only),
            "left_out_records_labels": list(self.records_only),
        }


def shared_labels(model_labels: Sequence[str], records_labels: Sequence[str]) -> SharedLabels:
    """Pairs the labels of two vocabularies that name the same finding.

    Args:
      model_labels: the run's vocabulary (the order of the model's outputs).
      records_labels: the records' vocabulary (the manifest's `labels`).

    Returns:
      The `SharedLabels`, pairs in the model's order.

    Raises:
      ValueError: a vocabulary names one finding twice (e.g. "Effusion" and "Pleural Effusion"),
        so the pairing would be ambiguous; or the vocabularies share no finding.
    """
    model_labels, records_labels = tuple(model_labels), tuple(records_labels)
    model_findings = _findings(model_labels, "model")
    records_findings = _findings(records_labels, "records")
    records_index = {finding: i for i, finding in enumerate(records_findings)}
    pairs = [(m, records_index[f]) for m, f in enumerate(model_findings) if f in records_index]
    if not pairs:
        raise ValueError(
            f"The model's labels {list(model_labels)} and the records' labels {list(records_labels)} "
            "share no finding (see trainer/evaluation/vocabularies.py for the equivalences); "
            "nothing can be compared."
        )
    paired_records = {r for _, r in pairs}
    return SharedLabels(
        model_labels=model_labels,
        records_labels=records_labels,
        model_indices=tuple(m for m, _ in pairs),
        records_indices=tuple(r for _, r in pairs),
        model_only=tuple(label for label, f in zip(model_labels, model_findings) if f not in records_index),
        records_only=tuple(label for i, label in enumerate(records_labels) if i not in paired_records),
    )


def _findings(labels: tuple[str, ...], which: str) -> list[str]:
    findings = [finding_of(label) for label in labels]
    seen: dict[str, str] = {}
    for label, finding in zip(labels, findings):
        if finding in seen:
            raise ValueError(
                f"The {which} labels name the finding {finding!r} twice ({seen[finding]!r} and {label!r}); "
                "each finding must have one label."
            )
        seen[finding] = label
    return findings
