"""Looking inside a records directory: its shards checked against the manifest, and a summary.

`check_shards` compares every shard listed in manifest.json with the disk (present, sha256,
record count, every record's framing and checksums) and reports each mismatch by file; a corrupt
or truncated shard is named with the number of the record where reading failed. `summarize`
gathers the options the records were built with, per split the records, patients, label counts,
prevalences and shard sizes, and the rejects by reason with their first examples;
`format_summary` prints it for a terminal. The binary is `trainer.inspect` (`cxr-inspect`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from cxr_cli import errors
from cxr_cli import progress as progress_lib
from tfrecords import codec
from tfrecords import manifest as manifest_lib

FORMATS = ("text", "json")
REJECT_EXAMPLES = 3


class RecordsMismatchError(errors.ValidationError):
    """The shards on disk do not match the manifest (missing, changed, corrupt, unlisted)."""


@dataclasses.dataclass(frozen=True)
class ShardProblem:
    """One way a shard differs from the manifest; `detail` says how, for a person."""

    shard: str
    kind: str  # missing | unlisted | size | sha256 | records | corrupt
    detail: str


# ---------------------------------------------------------------------------------------------
# Checking the shards.


def scan_shard(path: str, *, chunk_size: int = 1 << 22) -> tuple[int, str, str | None]:
    """Reads a TFRecord file once: counts its records, checks their framing and CRCs, hashes it.

    Each record is an 8-byte little-endian length, the masked CRC-32C of those 8 bytes, the
    data and the masked CRC-32C of the data (TensorFlow's `io/record_writer.cc`). A file cut
    inside a record's 12-byte header is a truncation here; TensorFlow's reader would take it
    for the end of the file.

    Returns:
      (records read intact, the file's sha256, None) for a sound file; for a corrupt or
      truncated one, the third item names the first bad record, counted from 0.
    """
    digest = hashlib.sha256()
    count = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while header := f.read(12):
            digest.update(header)
            failure = None
            if len(header) < 12:
                failure = f"record {count} is truncated (the file ends inside its header)"
            else:
                length, length_crc = struct.unpack("<QI", header)
                if codec.masked_crc(header[:8]) != length_crc:
                    failure = f"record {count} is corrupt (its length field fails its checksum)"
            if failure is None:
                body = f.read(length + 4)
                digest.update(body)
                if len(body) < length + 4:
                    failure = (
                        f"record {count} is truncated (the file ends {length + 4 - len(body)} bytes early)"
                    )
                elif codec.masked_crc(body[:-4]) != struct.unpack("<I", body[-4:])[0]:
                    failure = f"record {count} is corrupt (its data fails its checksum)"
            if failure is not None:
                while chunk := f.read(chunk_size):  # The rest, for the file's sha256.
                    digest.update(chunk)
                return count, digest.hexdigest(), failure
            count += 1
    return count, digest.hexdigest(), None


def check_shards(
    records_dir: str, manifest: manifest_lib.Manifest, *, progress: progress_lib.Progress | None = None
) -> list[ShardProblem]:
    """Compares every shard with the manifest: presence, sha256, record count, readability.

    Args:
      records_dir: the directory.
      manifest: its manifest, read without `check_shards`.
      progress: advanced by one per shard checked.

    Returns:
      Every problem found, one or more per shard, in manifest order; empty when all match.
    """
    problems = []
    on_disk = {name.rstrip("/") for name in tf.io.gfile.listdir(records_dir)}
    listed = set()
    for split in manifest.splits.values():
        for shard in split.shards:
            listed.add(shard.name)
            problems += _check_shard(os.path.join(records_dir, shard.name), shard, shard.name in on_disk)
            if progress is not None:
                progress.advance()
    for name in sorted(on_disk - listed):
        if manifest_lib.SHARD_NAME_RE.match(name):
            problems.append(
                ShardProblem(name, "unlisted", "not listed in manifest.json (old output mixed in?)")
            )
    return problems


def _check_shard(path: str, shard: manifest_lib.ShardInfo, exists: bool) -> list[ShardProblem]:
    if not exists:
        return [ShardProblem(shard.name, "missing", "listed in manifest.json but not on disk")]
    problems = []
    records, sha256, failure = scan_shard(path)
    if failure is not None:
        problems.append(ShardProblem(shard.name, "corrupt", failure))
    elif records != shard.records:
        problems.append(ShardProblem(shard.name, "records", f"{records} records, manifest {shard.records}"))
    if sha256 != shard.sha256:
        problems.append(
            ShardProblem(shard.name, "sha256", f"sha256 {sha256[:12]}..., manifest {shard.sha256[:12]}...")
        )
    return problems


# ---------------------------------------------------------------------------------------------
# The summary.


def read_rejects(records_dir: str, *, examples: int = REJECT_EXAMPLES) -> dict[str, list[dict[str, Any]]]:
    """The first `examples` lines of rejects.jsonl per reason; {} when there is no file."""
    path = os.path.join(records_dir, manifest_lib.REJECTS_NAME)
    if not tf.io.gfile.exists(path):
        return {}
    by_reason: dict[str, list[dict[str, Any]]] = {}
    with tf.io.gfile.GFile(path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                reject = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error}).") from None
            listed = by_reason.setdefault(str(reject.get("reason", "unknown")), [])
            if len(listed) < examples:
                listed.append(reject)
    return by_reason


def summarize(
    records_dir: str,
    manifest: manifest_lib.Manifest,
    problems: Sequence[ShardProblem],
    reject_examples: Mapping[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """The summary as a JSON-ready dict: options, splits, rejects, shard sizes, problems."""
    splits = {}
    for name, split in manifest.splits.items():
        sizes = [_size(os.path.join(records_dir, shard.name)) for shard in split.shards]
        known = [size for size in sizes if size is not None]
        counts = manifest.label_counts(name)
        splits[name] = {
            "records": split.records,
            "patients": split.patients,
            "label_counts": dict(zip(manifest.labels, counts)),
            "prevalence": {
                label: (count / split.records if split.records else 0.0)
                for label, count in zip(manifest.labels, counts)
            },
            "shards": len(split.shards),
            "shard_bytes": {
                "total": sum(known),
                "min": min(known, default=0),
                "max": max(known, default=0),
            },
        }
    return {
        "records_dir": records_dir,
        "dataset": manifest.dataset,
        "labels": list(manifest.labels),
        "created": manifest.created,
        "options": dict(manifest.options),
        "input_rows": manifest.input_rows,
        "records_written": manifest.records_written,
        "unlisted_images": manifest.unlisted_images,
        "splits": splits,
        "rejects": {
            reason: {"count": count, "examples": list(reject_examples.get(reason, []))}
            for reason, count in sorted(manifest.rejects.items())
        },
        "problems": [dataclasses.asdict(problem) for problem in problems],
    }


def _size(path: str) -> int | None:
    try:
        return int(tf.io.gfile.stat(path).length)
    except tf.errors.NotFoundError:
        return None


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as text for a terminal (about 20 lines plus one per reject and problem)."""
    options = summary["options"]
    lines = [
        f"{summary['records_dir']}: {summary['records_written']:,} {summary.get('dataset', 'nih')} records of "
        f"{summary['input_rows']:,} input rows, built {summary['created'] or 'at an unknown time'}",
        textwrap.fill(
            ", ".join(f"{key}={value}" for key, value in options.items()),
            width=100,
            initial_indent="  options: ",
            subsequent_indent="    ",
            break_on_hyphens=False,
        ),
        f"  {'split':<6}{'records':>9}{'patients':>10}{'shards':>8}{'MB':>9}",
    ]
    for name, split in summary["splits"].items():
        megabytes = split["shard_bytes"]["total"] / 1e6
        lines.append(
            f"  {name:<6}{split['records']:>9,}{split['patients']:>10,}{split['shards']:>8}{megabytes:>9.1f}"
        )
    lines += _label_table(summary["splits"])
    rejects = summary["rejects"]
    total = sum(reject["count"] for reject in rejects.values())
    lines.append(f"  rejects: {total:,}" + ("" if total else " (none)"))
    for reason, reject in rejects.items():
        lines.append(f"    {reason}: {reject['count']:,}")
        for example in reject["examples"]:
            where = f"line {example['line']}" if example.get("line") is not None else "no CSV line"
            lines.append(f"      {example.get('image_index', '?')} ({where}): {example.get('detail', '')}")
    problems = summary["problems"]
    if problems:
        lines.append(f"  PROBLEMS: {len(problems)} shard check(s) failed")
        lines += [f"    {p['shard']}: {p['kind']}: {p['detail']}" for p in problems]
    else:
        lines.append("  shards: all match the manifest (sha256, record counts, every record intact)")
    return "\n".join(lines)


def _label_table(splits: Mapping[str, Any]) -> list[str]:
    names = list(splits)
    # The records' vocabulary, in the manifest's order (every split counts every label).
    labels = list(splits[names[0]]["label_counts"]) if names else []
    width = max([19, *(len(label) + 1 for label in labels)])
    lines = ["  " + f"{'label':<{width}}" + "".join(f"{name + ' n (%)':>17}" for name in names)]
    for label in labels:
        cells = "".join(
            f"{splits[n]['label_counts'][label]:>9,} ({100 * splits[n]['prevalence'][label]:4.1f}%)"
            for n in names
        )
        lines.append(f"  {label:<{width}}{cells}")
    return lines


def inspect_records(records_dir: str, *, verify: bool = True) -> tuple[dict[str, Any], manifest_lib.Manifest]:
    """Reads the manifest, checks the shards (with a progress line) and builds the summary.

    Args:
      records_dir: the directory.
      verify: check every shard's sha256, record count and framing (reads every byte).
    """
    manifest = manifest_lib.read_manifest(records_dir, check_shards=False)
    problems: list[ShardProblem] = []
    if verify:
        total = sum(len(split.shards) for split in manifest.splits.values())
        with progress_lib.Progress(total, description="checking shards", unit="shards") as bar:
            problems = check_shards(records_dir, manifest, progress=bar)
    return summarize(records_dir, manifest, problems, read_rejects(records_dir)), manifest
