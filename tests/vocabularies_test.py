"""Tests for trainer.evaluation.vocabularies: which labels of two vocabularies are compared."""

import tensorflow as tf
from absl.testing import parameterized

from tfrecords import schema
from trainer.evaluation import vocabularies

CHEXPERT = schema.CHEXPERT_LABELS


class VocabulariesTest(parameterized.TestCase, tf.test.TestCase):
    def test_table_has_one_row_per_nih_label_in_order(self):
        self.assertEqual(tuple(row.finding for row in vocabularies.EQUIVALENCES), schema.LABELS)

    def test_every_row_names_known_sources(self):
        for row in vocabularies.EQUIVALENCES:
            self.assertNotEmpty(row.sources, row.finding)
            for key in row.sources:
                self.assertIn(key, vocabularies.SOURCES, row.finding)

    def test_no_name_is_claimed_by_two_rows(self):
        seen = {}
        for row in vocabularies.EQUIVALENCES:
            for name in (row.finding, *row.names):
                key = vocabularies.normalize(name)
                self.assertIn(seen.setdefault(key, row.finding), (row.finding,), name)

    @parameterized.parameters(
        ("Pleural_Thickening", "pleural thickening"),
        ("No  Finding", "no finding"),
        ("Lung-Opacity", "lung opacity"),
        (" PNEUMONIA ", "pneumonia"),
    )
    def test_normalize(self, name, expected):
        self.assertEqual(vocabularies.normalize(name), expected)

    @parameterized.parameters(
        ("Pleural Effusion", "Effusion"),
        ("pleural effusion", "Effusion"),
        ("PNEUMONIA", "Pneumonia"),
        ("NORMAL", "No Finding"),
        ("normal", "No Finding"),
        ("hiatal hernia", "Hernia"),
        ("infiltrates", "Infiltration"),
        ("Fracture", "fracture"),  # Outside the table: its own name.
    )
    def test_finding_of(self, label, finding):
        self.assertEqual(vocabularies.finding_of(label), finding)

    def test_is_no_finding(self):
        self.assertTrue(all(vocabularies.is_no_finding(x) for x in ("No Finding", "NORMAL", "normal")))
        self.assertFalse(any(vocabularies.is_no_finding(x) for x in ("PNEUMONIA", "Effusion", "Fracture")))

    def test_nih_against_chexpert(self):
        shared = vocabularies.shared_labels(schema.LABELS, CHEXPERT)
        self.assertEqual(
            shared.compared,
            (
                "Atelectasis",
                "Cardiomegaly",
                "Consolidation",
                "Edema",
                "Effusion",
                "Pneumonia",
                "Pneumothorax",
                "No Finding",
            ),
        )
        # Column k pairs the NIH output with the CheXpert label of the same finding.
        pairs = {schema.LABELS[m]: CHEXPERT[r] for m, r in zip(shared.model_indices, shared.records_indices)}
        self.assertEqual(pairs["Effusion"], "Pleural Effusion")
        self.assertEqual(pairs["No Finding"], "No Finding")
        self.assertEqual(pairs["Pneumothorax"], "Pneumothorax")
        self.assertEqual(
            shared.model_only,
            ("Emphysema", "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening"),
        )
        self.assertEqual(
            shared.records_only,
            (
                "Enlarged Cardiomediastinum",
                "Lung Opacity",
                "Lung Lesion",
                "Pleural Other",
                "Fracture",
                "Support Devices",
            ),
        )
        self.assertFalse(shared.identical)

    def test_nih_against_pediatric_folders(self):
        shared = vocabularies.shared_labels(schema.LABELS, ("NORMAL", "PNEUMONIA"))
        self.assertEqual(shared.compared, ("Pneumonia", "No Finding"))
        self.assertEqual(shared.records_indices, (1, 0))
        self.assertLen(shared.model_only, 13)
        self.assertEqual(shared.records_only, ())

    def test_chexpert_model_against_nih_records(self):
        shared = vocabularies.shared_labels(CHEXPERT, schema.LABELS)
        # The model's order, the model's names.
        self.assertEqual(shared.compared[0], "No Finding")
        self.assertIn("Pleural Effusion", shared.compared)
        self.assertEqual(
            schema.LABELS[shared.records_indices[shared.compared.index("Pleural Effusion")]], "Effusion"
        )

    def test_same_vocabulary_is_identical(self):
        shared = vocabularies.shared_labels(schema.LABELS, schema.LABELS)
        self.assertTrue(shared.identical)
        self.assertEqual(shared.model_indices, tuple(range(schema.NUM_LABELS)))
        self.assertEqual(shared.records_indices, tuple(range(schema.NUM_LABELS)))
        self.assertEqual(shared.model_only + shared.records_only, ())

    def test_report_names_compared_and_left_out_labels_with_sources(self):
        report = vocabularies.shared_labels(schema.LABELS, ("NORMAL", "PNEUMONIA", "COVID")).to_json()
        self.assertEqual(
            [(p["model_label"], p["records_label"]) for p in report["compared"]],
            [("Pneumonia", "PNEUMONIA"), ("No Finding", "NORMAL")],
        )
        self.assertIn(vocabularies.SOURCES["kermany_2018"], report["compared"][0]["sources"])
        self.assertEqual(report["left_out_records_labels"], ["COVID"])
        self.assertIn("Hernia", report["left_out_model_labels"])

    def test_no_shared_finding_is_an_error(self):
        with self.assertRaisesRegex(ValueError, r"share no finding"):
            vocabularies.shared_labels(schema.LABELS, ("COVID", "Tuberculosis"))

    def test_two_labels_of_one_finding_is_an_error(self):
        with self.assertRaisesRegex(ValueError, r"records labels name the finding 'Effusion' twice"):
            vocabularies.shared_labels(schema.LABELS, ("Effusion", "Pleural Effusion"))


if __name__ == "__main__":
    tf.test.main()
