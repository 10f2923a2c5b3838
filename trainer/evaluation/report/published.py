"""Published per-finding ROC AUCs on NIH ChestX-ray14, the comparison column of `auc.md`."""

from __future__ import annotations

PUBLISHED_AUC: dict[str, dict[str, float | None]] = {
    "Wang et al. 2017": {
        "Atelectasis": 0.716, "Cardiomegaly": 0.807, "Effusion": 0.784, "Infiltration": 0.609,
        "Mass": 0.706, "Nodule": 0.671, "Pneumonia": 0.633, "Pneumothorax": 0.806,
        "Consolidation": 0.708, "Edema": 0.835, "Emphysema": 0.815, "Fibrosis": 0.769,
        "Pleural_Thickening": 0.708, "Hernia": 0.767, "No Finding": None,
    },
    "Yao et al. 2017": {
        "Atelectasis": 0.772, "Cardiomegaly": 0.904, "Effusion": 0.859, "Infiltration": 0.695,
        "Mass": 0.792, "Nodule": 0.717, "Pneumonia": 0.713, "Pneumothorax": 0.841,
        "Consolidation": 0.788, "Edema": 0.882, "Emphysema": 0.829, "Fibrosis": 0.767,
        "Pleural_Thickening": 0.765, "Hernia": 0.914, "No Finding": 0.76,
    },
    "CheXNet 2017": {
        "Atelectasis": 0.8094, "Cardiomegaly": 0.9248, "Effusion": 0.8638, "Infiltration": 0.7345,
        "Mass": 0.8676, "Nodule": 0.7802, "Pneumonia": 0.7680, "Pneumothorax": 0.8887,
        "Consolidation": 0.7901, "Edema": 0.8878, "Emphysema": 0.9371, "Fibrosis": 0.8047,
        "Pleural_Thickening": 0.8062, "Hernia": 0.9164, "No Finding": None,
    },
    "ResUNet thesis 2023": {
        "Atelectasis": 0.72, "Cardiomegaly": 0.74, "Effusion": 0.77, "Infiltration": 0.66,
        "Mass": 0.66, "Nodule": 0.60, "Pneumonia": 0.81, "Pneumothorax": 0.70,
        "Consolidation": 0.75, "Edema": 0.90, "Emphysema": 0.78, "Fibrosis": 0.65,
        "Pleural_Thickening": 0.62, "Hernia": 0.83, "No Finding": 0.72,
    },
}  # fmt: skip
