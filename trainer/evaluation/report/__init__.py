"""The evaluation reports, by what each module makes; every writer takes plain data.

- `files`: the report files' names; text, bytes and JSON written through `tf.io.gfile`.
- `formatting`: how numbers read ("undefined" where a split cannot define one).
- `tables`: `auc.csv`, `thresholds.json`, `predictions.csv`.
- `markdown`: `auc.md`, rendered from the report dict.
- `figures`: the PNG figures (matplotlib, Agg, no pyplot state).
- `published`: the published AUCs `auc.md` compares with.
- `model_card`: `MODEL_CARD.md`, from the run's config, the manifest, the history and the report.

`trainer.evaluation.pipeline` computes the report dict and calls these, so tests call them on
hand-made arrays. No file holds a time stamp: the same inputs give byte-identical files.

The report dict (`auc.json` is exactly this):

    {"run_dir", "model_path", "model_source", "weights_sha256", "records_dir", "manifest_sha256", "split_mode",
     "split": "test",                      # the split the headline numbers come from
     "labels": [...15...],
     "splits": {"test": <metrics.summarize output>, "val": ...},
     "thresholds": {"source_split", "method", "values": {label: float | None}},
     "published": {source: {label: auc}}}
"""
