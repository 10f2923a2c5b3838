"""Tests for beam_pipelines.datasets: each adapter's parsing, and each data set through the job.

The end-to-end runs build each layout with `demo_data` (tens of images at 32x32), convert it with
the in-memory runner and read the records back through `tfrecords`.
"""

import io
import json
import os

import numpy as np
import pydicom
import pytest
import tensorflow as tf
from absl.testing import parameterized
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1

from beam_pipelines import datasets, job, splits
from beam_pipelines.datasets import base, chexpert, folders, padchest
from demo_data import dicom
from demo_data import writer as demo_writer
from tests import fake_data
from tfrecords import codec, contact_sheet, inspection, schema
from tfrecords import manifest as manifest_lib

_IN_MEMORY = ["--direct_running_mode=in_memory"]


def _records(records_dir: str, manifest: manifest_lib.Manifest) -> dict[str, list[dict]]:
    """Every record of every split, parsed with the manifest's vocabulary."""
    out = {}
    for split in manifest.splits:
        paths = manifest_lib.shard_paths(records_dir, manifest, split)
        out[split] = [
            {key: value.numpy() for key, value in codec.parse_example(r, len(manifest.labels)).items()}
            for r in tf.data.TFRecordDataset(paths)
        ]
    return out


def _feature_keys(records_dir: str, manifest: manifest_lib.Manifest) -> set[str]:
    keys = set()
    for split in manifest.splits:
        for serialized in tf.data.TFRecordDataset(manifest_lib.shard_paths(records_dir, manifest, split)):
            keys |= set(tf.train.Example.FromString(serialized.numpy()).features.feature)
    return keys


def _rejects(records_dir: str) -> list[dict]:
    with open(os.path.join(records_dir, manifest_lib.REJECTS_NAME)) as f:
        return [json.loads(line) for line in f]


class ParsingTest(parameterized.TestCase, tf.test.TestCase):
    def test_chexpert_states(self):
        fields = {"A": "1.0", "B": "0.0", "C": "-1.0", "D": "", "E": "1"}
        labels, mask, uncertain = chexpert.parse_states(fields, "ABCDE")
        self.assertEqual(labels, (1, 0, 0, 0, 1))
        self.assertEqual(mask, (1, 1, 0, 0, 1))
        self.assertEqual(uncertain, (0, 0, 1, 0, 0))
        with self.assertRaisesRegex(ValueError, r"C '2\.0' is not 1\.0, 0\.0, -1\.0 or blank"):
            chexpert.parse_states({"C": "2.0"}, "C")

    def test_padchest_label_lists(self):
        self.assertEqual(
            padchest.parse_label_list("['pleural effusion', ' Cardiomegaly', '']"),
            ["pleural effusion", "cardiomegaly"],
        )
        for bad in ("", "[]", "['']", "pleural effusion", "[1, 2]", "['a'"):
            with self.assertRaises(ValueError, msg=bad):
                padchest.parse_label_list(bad)

    def test_padchest_map_covers_its_vocabulary_once(self):
        names = [name for group in padchest.LABEL_MAP.values() for name in group]
        self.assertLen(set(names), len(names))  # No PadChest name counts for two labels.
        self.assertEqual(padchest.LABELS, tuple(padchest.LABEL_MAP))

    @parameterized.parameters(
        ("person123_bacteria_456.jpeg", "person123"),
        ("person7_virus_13.jpeg", "person7"),
        ("IM-0117-0001.jpeg", "0117"),
        ("NORMAL2-IM-0117-0002.jpeg", "0117"),
    )
    def test_pediatric_patient_regex(self, name, patient):
        self.assertEqual(folders.patient_of(name, r"^(person\d+)_|IM-(\d+)-"), patient)

    def test_patient_regex_default_and_mismatch(self):
        self.assertEqual(folders.patient_of("scan_01.png", None), "scan_01")
        with self.assertRaisesRegex(ValueError, "does not match the file name 'x.png'"):
            folders.patient_of("x.png", r"^person(\d+)_")

    def test_patient_numbers_are_stable(self):
        self.assertEqual(base.patient_number("00042"), 42)
        long_id = "8" * 40  # PadChest's ids do not fit an int64: hashed, the same every time.
        self.assertEqual(base.patient_number(long_id), base.patient_number(long_id))
        self.assertBetween(base.patient_number(long_id), 0, 2**63 - 1)
        self.assertNotEqual(base.patient_number("person1"), base.patient_number("person2"))


class NihRecordsUnchangedTest(tf.test.TestCase):
    """NIH input gives the same record bytes as before data sets other than NIH existed.

    The sha256 values below are of the shards written by this repository's job before the
    adapters were introduced, for the layout built here (fixed pixels, raw records, whose bytes
    do not depend on the PNG encoder). A change here means NIH records changed: every
    consumer's data and every published checksum would change with them.
    """

    EXPECTED = {
        "train-00000-of-00001.tfrecord": "3d531d37087bc9b99a8b77facc62c6e5afe62e534d690becf7a30d80fe5cedd4",
        "test-00000-of-00001.tfrecord": "72bb3acc1442432d8d860f826860a71c2efbc494bd0acac0864f464ebce8db0a",
    }

    def _layout(self, root: str) -> str:
        rows, images, train_val, test = [], {}, [], []
        findings = [
            "No Finding",
            "Effusion|Mass",
            "Cardiomegaly",
            "Pneumonia|Infiltration",
            "Nodule",
            "No Finding",
        ]
        for i in range(12):
            patient, follow = i // 2 + 1, i % 2
            name = f"{patient:08d}_{follow:03d}.png"
            rows.append(
                fake_data.nih_row(
                    name,
                    findings[i % 6],
                    follow_up=follow,
                    patient_id=patient,
                    age=f"{30 + i:03d}Y",
                    sex="MF"[i % 2],
                    view=("PA", "AP")[i % 3 == 0],
                )
            )
            pixels = (np.add.outer(np.arange(40) * (i + 1), np.arange(40) * 3) % 256).astype(np.uint8)
            images[name] = fake_data.png_bytes(pixels)
            (test if patient % 3 == 0 else train_val).append(name)
        return fake_data.write_nih_layout(root, rows, images, train_val=train_val, test=test)

    def test_nih_shards_keep_their_bytes(self):
        data_dir = self._layout(self.get_temp_dir() + "/nih")
        output_dir = self.get_temp_dir() + "/records"
        result = job.run_job(
            job.JobConfig(data_dir=data_dir, output_dir=output_dir, image_size=16), _IN_MEMORY
        )
        shards = {s.name: s.sha256 for split in result.manifest.splits.values() for s in split.shards}
        self.assertEqual(shards, self.EXPECTED)
        self.assertEqual(result.manifest.dataset, "nih")
        self.assertEqual(result.manifest.labels, schema.LABELS)
        self.assertEqual(dict(result.manifest.label_states), dict(manifest_lib.NIH_LABEL_STATES))
        # Neither optional label vector is written: every NIH label is known and certain.
        keys = _feature_keys(output_dir, result.manifest)
        self.assertNotIn(schema.LABEL_MASK_KEY, keys)
        self.assertNotIn(schema.LABEL_UNCERTAIN_KEY, keys)


class DetectTest(tf.test.TestCase):
    def test_detects_each_layout_by_its_files(self):
        root = self.get_temp_dir()
        cases = {
            "nih": ["Data_Entry_2017.csv"],
            "chexpert": ["train.csv", "valid.csv"],
            "mimic_cxr_jpg": ["mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-chexpert.csv.gz"],
            "padchest": ["PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"],
            "rsna_pneumonia": ["stage_2_train_labels.csv"],
        }
        for name, files in cases.items():
            os.makedirs(os.path.join(root, name), exist_ok=True)
            for file_name in files:
                open(os.path.join(root, name, file_name), "w").close()
            self.assertEqual(datasets.detect(os.path.join(root, name)), name)
        # A folder of class folders has no files of its own: not detected, NIH's errors apply.
        os.makedirs(os.path.join(root, "classes", "NORMAL"))
        self.assertEqual(datasets.detect(os.path.join(root, "classes")), "nih")
        open(os.path.join(root, "nih", "stage_2_train_labels.csv"), "w").close()
        with self.assertRaisesRegex(base.SourceError, "several data sets.*nih, rsna_pneumonia"):
            datasets.detect(os.path.join(root, "nih"))

    def test_missing_table_is_an_input_error(self):
        data_dir = self.get_temp_dir() + "/empty_chexpert"
        os.makedirs(data_dir)
        config = job.JobConfig(dataset="chexpert", data_dir=data_dir, output_dir=self.get_temp_dir() + "/out")
        with self.assertRaisesRegex(job.InputError, "No CheXpert train.csv"):
            job.prepare_inputs(config)

    def test_folder_options_with_another_data_set_are_refused(self):
        config = job.JobConfig(
            dataset="nih",
            data_dir=self.get_temp_dir(),
            output_dir=self.get_temp_dir() + "/o",
            patient_regex="x",
        )
        with self.assertRaisesRegex(job.InputError, "apply to --dataset=folders, not to nih"):
            job.prepare_inputs(config)

    def test_bad_patient_regex_is_an_input_error(self):
        data_dir = self.get_temp_dir() + "/classes"
        os.makedirs(data_dir + "/A")
        with open(data_dir + "/A/x.png", "wb") as f:
            f.write(fake_data.png_bytes(np.zeros((4, 4), np.uint8)))
        config = job.JobConfig(
            dataset="folders", data_dir=data_dir, output_dir=self.get_temp_dir() + "/o", patient_regex="(["
        )
        with self.assertRaisesRegex(job.InputError, r"--patient_regex '\(\[' is not a regular expression"):
            job.prepare_inputs(config)


class BadDicomJobTest(tf.test.TestCase):
    def test_bad_dicom_files_are_rejects_with_their_reason(self):
        data_dir = self.get_temp_dir() + "/dicoms"
        pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
        good = dicom.encode_dicom(pixels, key="good", variant="monochrome1")
        lossless = pydicom.dcmread(io.BytesIO(good))
        lossless.PixelData = encapsulate([b"\xff\xd8not a jpeg\xff\xd9"])
        lossless.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        buffer = io.BytesIO()
        lossless.save_as(buffer)
        files = {"A/person1_1.dcm": good, "A/person2_1.dcm": buffer.getvalue(), "B/person3_1.dcm": good[:300]}
        for name, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(data_dir, name)), exist_ok=True)
            with open(os.path.join(data_dir, name), "wb") as f:
                f.write(data)
        config = job.JobConfig(
            dataset="folders",
            data_dir=data_dir,
            output_dir=self.get_temp_dir() + "/dicom_records",
            image_size=16,
            patient_regex=r"^person(\d+)_",
        )
        result = job.run_job(config, _IN_MEMORY)
        self.assertEqual(
            (result.manifest.records_written, dict(result.manifest.rejects)), (1, {"bad_image": 2})
        )
        details = {r["image_index"]: r["detail"] for r in _rejects(config.output_dir)}
        self.assertIn("transfer syntax JPEG Lossless", details["A/person2_1.dcm"])
        self.assertIn("without pixel data", details["B/person3_1.dcm"])
        (record,) = [r for rs in _records(config.output_dir, result.manifest).values() for r in rs]
        image = codec.decode_image(
            {key: tf.constant(value) for key, value in record.items()}, image_format="raw"
        ).numpy()[..., 0]
        self.assertAllEqual(image, pixels)  # MONOCHROME1 shown the right way round.


@pytest.mark.slow
class EveryDataSetJobTest(parameterized.TestCase, tf.test.TestCase):
    """Each layout written by demo_data, converted by the job, read back with tfrecords."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.temp = tf.compat.v1.test.get_temp_dir() + "/every_data_set"
        cls.results = {}
        for name in datasets.NAMES:
            data_dir = f"{cls.temp}/demo-{name}"
            demo_writer.generate(data_dir, layout=name, num_images=40, image_size=32, seed=1, num_workers=1)
            options = {"patient_regex": r"^person(\d+)_"} if name == "folders" else {}
            config = job.JobConfig(
                dataset=name,
                data_dir=data_dir,
                output_dir=f"{cls.temp}/records-{name}",
                image_size=32,
                **options,
            )
            cls.results[name] = (config, job.run_job(config, _IN_MEMORY))

    @parameterized.parameters(*datasets.NAMES)
    def test_records_read_back_with_the_vocabulary(self, name):
        config, result = self.results[name]
        manifest = manifest_lib.read_manifest(config.output_dir, verify_checksums=True)
        self.assertEqual(manifest.dataset, name)
        if name != "folders":  # The folders' vocabulary is their class folders (tested below).
            self.assertEqual(manifest.labels, datasets.ADAPTERS[name].labels)
        self.assertEqual(manifest.input_rows, manifest.records_written + manifest.records_rejected)
        records = _records(config.output_dir, manifest)
        split_of = {}
        for split, split_records in records.items():
            self.assertLen(split_records, manifest.splits[split].records)
            for record in split_records:
                self.assertEqual(record[schema.LABELS_KEY].shape, (len(manifest.labels),))
                self.assertEqual(split_of.setdefault(int(record[schema.PATIENT_ID_KEY]), split), split)
                self.assertEqual(record[schema.HEIGHT_KEY], 32)
        self.assertGreater(manifest.records_written, 10)

    @parameterized.parameters(*datasets.NAMES)
    def test_inspect_accepts_the_records(self, name):
        config, result = self.results[name]
        manifest = manifest_lib.read_manifest(config.output_dir, check_shards=False)
        self.assertEqual(inspection.check_shards(config.output_dir, manifest), [])
        summary = inspection.summarize(
            config.output_dir, manifest, [], inspection.read_rejects(config.output_dir)
        )
        self.assertEqual(list(summary["splits"]["train"]["label_counts"]), list(manifest.labels))
        text = inspection.format_summary(summary)
        for label in manifest.labels:
            self.assertIn(label, text)
        label = max(manifest.labels, key=lambda name: manifest.splits["train"].label_counts.get(name, 0))
        samples = contact_sheet.read_samples(config.output_dir, manifest, "train", 4, label=label)
        self.assertNotEmpty(samples)
        for sample in samples:
            self.assertIn(label, contact_sheet.caption(sample))

    def test_chexpert_writes_uncertain_and_unmentioned_labels(self):
        config, result = self.results["chexpert"]
        self.assertEqual(dict(result.manifest.label_states), chexpert.STATES)
        records = [r for rs in _records(config.output_dir, result.manifest).values() for r in rs]
        masks = np.stack([r[schema.LABEL_MASK_KEY] for r in records])
        uncertain = np.stack([r[schema.LABEL_UNCERTAIN_KEY] for r in records])
        labels = np.stack([r[schema.LABELS_KEY] for r in records])
        self.assertGreater((masks == 0).sum(), 0)  # Blanks and -1.0 are unknown...
        self.assertGreater(uncertain.sum(), 0)  # ...some of them uncertain...
        self.assertAllEqual(labels[uncertain == 1], np.zeros(int(uncertain.sum())))  # ...and not positive.
        self.assertAllEqual(masks[uncertain == 1], np.zeros(int(uncertain.sum())))
        test_masks = np.stack(
            [r[schema.LABEL_MASK_KEY] for r in _records(config.output_dir, result.manifest)["test"]]
        )
        self.assertAllEqual(test_masks, np.ones_like(test_masks))  # valid.csv has only 1.0 and 0.0.

    def test_mimic_joins_study_labels_and_rejects_studies_without(self):
        config, result = self.results["mimic_cxr_jpg"]
        rejects = _rejects(config.output_dir)
        self.assertNotEmpty(rejects)
        for reject in rejects:
            self.assertEqual(reject["reason"], "bad_row")
            self.assertIn("has no row in the labels table", reject["detail"])
        records = [r for rs in _records(config.output_dir, result.manifest).values() for r in rs]
        by_study = {}
        for record in records:
            study = record[schema.IMAGE_INDEX_KEY].decode().split("/")[3]
            by_study.setdefault(study, []).append(record[schema.LABELS_KEY].tolist())
        shared = [labels for labels in by_study.values() if len(labels) > 1]
        self.assertNotEmpty(shared)  # Studies with two images...
        for labels in shared:
            self.assertEqual(labels[0], labels[1])  # ...carry their study's labels on both.

    def test_padchest_blank_labels_are_rejected(self):
        config, result = self.results["padchest"]
        self.assertEqual(dict(result.manifest.rejects), {"bad_row": 1})
        self.assertIn("Labels '' is not a list", _rejects(config.output_dir)[0]["detail"])

    def test_rsna_reads_dicom_metadata_and_writes_boxes(self):
        config, result = self.results["rsna_pneumonia"]
        records = [r for rs in _records(config.output_dir, result.manifest).values() for r in rs]
        self.assertTrue(all(r[schema.AGE_KEY] > 0 for r in records))  # From the DICOM header.
        self.assertTrue(all(r[schema.SEX_KEY] in (b"M", b"F") for r in records))
        with open(os.path.join(config.output_dir, manifest_lib.BOXES_NAME)) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "Image Index,Finding Label,Bbox [x,y,w,h],,,")
        opacity = {r[schema.IMAGE_INDEX_KEY].decode() for r in records if r[schema.LABELS_KEY][0]}
        self.assertEqual({line.split(",")[0] for line in lines[1:]}, opacity)

    def test_folders_split_by_patient_not_by_folder(self):
        config, result = self.results["folders"]
        self.assertEqual(result.manifest.options["split"], "patient")
        self.assertEqual(result.manifest.labels, ("ABNORMAL", "NORMAL"))
        for split, records in _records(config.output_dir, result.manifest).items():
            for record in records:
                self.assertEqual(splits.patient_split(int(record[schema.PATIENT_ID_KEY])), split)
                self.assertEqual(record[schema.LABELS_KEY].sum(), 1)
