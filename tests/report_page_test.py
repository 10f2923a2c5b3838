"""Tests for trainer.evaluation.report.page on the reports of a tiny evaluated run built by the test.

When Chromium is installed (`/usr/bin/chromium`), the page is also opened headless: a screenshot
must not be blank, and every <img> must have loaded (checked by a script added to a copy of
the page, which writes each image's natural width into the DOM that `--dump-dom` prints).
"""

import base64
import html.parser
import io
import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image

from tests import fake_data
from trainer.evaluation import pipeline as evaluate
from trainer.evaluation.report import files, formatting
from trainer.evaluation.report import page as html_page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Added to a copy of the page: after load, lists every image's natural size in the DOM.
_PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  const root = document.documentElement;
  out.dataset.overflow = root.scrollWidth - root.clientWidth;  // > 0: something is wider than the window.
  out.textContent = Array.from(document.images).map((im) => im.naturalWidth + "x" + im.naturalHeight).join(" ");
  document.body.appendChild(out);
});
</script>"""

_MODEL_CARD = """# Model card: tiny

A *test* model card with a [link](https://example.org) and an embedded figure:

![the ROC curves](roc_curves.png)

![a remote image](https://example.org/tracker.png)

| Item | Value |
|---|---|
| Weights | best epoch |

- Not for clinical use.
- <script>alert(1)</script> stays text.
"""


class _Tags(html.parser.HTMLParser):
    """Collects tags and their attributes."""

    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(page):
    parser = _Tags()
    parser.feed(page)
    return parser.tags


class HtmlPageTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._root = root = tempfile.mkdtemp(prefix="html_page_test_")
        records_dir = os.path.join(root, "records")
        run_dir = os.path.join(root, "run")
        fake_data.write_records(
            records_dir, image_size=32, split_sizes={"train": 8, "val": 12, "test": 16}, seed=3
        )
        fake_data.write_fake_run(run_dir, records_dir, image_size=32)
        # Test records are numbered after the 8 train and 12 val ones (fake_data.metadata_for).
        boxes_csv = fake_data.write_box_csv(
            os.path.join(root, "BBox_List_2017.csv"),
            [
                (fake_data.metadata_for(20).image_index, "Mass", 100, 200, 300, 300),
                (fake_data.metadata_for(21).image_index, "Effusion", 500, 100, 400, 600),
            ],
        )
        evaluate.evaluate(
            evaluate.EvaluateConfig(
                run_dir=run_dir, bootstrap_resamples=50, batch_size=8, boxes_csv=boxes_csv
            )
        )
        cls.reports_dir = os.path.join(run_dir, "reports")
        with open(os.path.join(cls.reports_dir, html_page.MODEL_CARD_MD), "w") as f:
            f.write(_MODEL_CARD)
        cls.path = html_page.write_index(cls.reports_dir)
        with open(cls.path, encoding="utf-8") as f:
            cls.page = f.read()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._root, ignore_errors=True)
        super().tearDownClass()

    def test_every_figure_is_embedded_and_nothing_is_fetched(self):
        self.assertEqual(self.path, os.path.join(self.reports_dir, "index.html"))
        images = [attrs for tag, attrs in _tags(self.page) if tag == "img"]
        pngs = sorted(name for name in os.listdir(self.reports_dir) if name.endswith(".png"))
        self.assertContainsSubset(
            [files.ROC_PNG, files.TRAINING_PNG, files.RELIABILITY_PNG, files.LOCALIZATION_PNG], pngs
        )
        # Each PNG of the folder once in its section, plus the model card's own reference to the ROC curves.
        self.assertLen(images, len(pngs) + 1)
        for attrs in images:
            self.assertTrue(attrs["src"].startswith("data:image/png;base64,"), attrs["alt"])
            decoded = Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1])))
            self.assertGreater(min(decoded.size), 100, attrs["alt"])
        with open(os.path.join(self.reports_dir, files.ROC_PNG), "rb") as f:
            roc = "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")
        self.assertIn(roc, [attrs["src"] for attrs in images])
        # Nothing that a browser would load from elsewhere: no script, stylesheet link or remote source.
        for tag, attrs in _tags(self.page):
            self.assertNotIn(tag, ("script", "link", "iframe"))
            self.assertFalse(attrs.get("src", "data:").startswith(("http", "//")), (tag, attrs))
        self.assertIn("[figure: a remote image]", self.page)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", self.page)

    def test_sections_and_the_numbers_of_auc_json(self):
        with open(os.path.join(self.reports_dir, files.AUC_JSON)) as f:
            data = json.load(f)
        test = data["splits"]["test"]
        for section in (
            "summary",
            "findings",
            "roc-curves",
            "training-curves",
            "calibration",
            "localization",
            "model-card",
        ):
            self.assertIn(f'<section id="{section}">', self.page)
        self.assertIn(
            f"Mean AUC over the 14 findings: <b>{formatting.fmt(test['mean_auc_14'])}</b>", self.page
        )
        # The per-finding table: one row per label with its AUC and interval.
        for finding in test["findings"]:
            low, high = finding["auc_ci_low"], finding["auc_ci_high"]
            interval = "undefined" if low is None else f"{formatting.fmt(low)}–{formatting.fmt(high)}"
            row = re.search(
                rf"<tr><td>{re.escape(finding['label'])}</td><td>([^<]*)</td><td>(?:<span class=\"iv\">)?([^<]*)(?:</span>)?</td>",
                self.page,
            )
            self.assertIsNotNone(row, finding["label"])
            self.assertEqual(row.groups(), (formatting.fmt(finding["auc"]), interval))
        self.assertIn("<h3>Model card: tiny</h3>", self.page)
        self.assertIn("<td>best epoch</td>", self.page)
        self.assertIn("Pointing game", self.page)
        # The localization's baseline column and its verdict, as auc.json decides it.
        self.assertIn("<th>Baseline</th>", self.page)
        verdicts = set(data["localization"]["sanity"]["versus_baseline"].values()) - {None}
        if "not_above" in verdicts:
            self.assertIn("<p>Not above the baseline: the 95% interval", self.page)
        elif verdicts:
            self.assertIn("<p>Above the baseline: the 95% intervals", self.page)
        self.assertTrue(verdicts)  # The tiny run's maps are scored with intervals.
        # auc.md's other tables, without the ones shown from auc.json above.
        self.assertIn("<h3>Beside published results</h3>", self.page)
        self.assertIn("<h3>AUC by sex (test split)</h3>", self.page)
        self.assertNotIn("Per finding (test split)", self.page)

    def test_missing_figures_are_named_and_missing_auc_json_is_an_error(self):
        folder = os.path.join(self.get_temp_dir(), "partial")
        os.makedirs(folder, exist_ok=True)
        shutil.copy(os.path.join(self.reports_dir, files.AUC_JSON), folder)
        page = html_page.render_page(folder)
        self.assertIn(f"{files.ROC_PNG}: not in this reports folder.", page)
        self.assertIn(f"{html_page.MODEL_CARD_MD}: not in this reports folder.", page)
        self.assertNotIn("<img", page)
        with self.assertRaisesRegex(ValueError, r"auc\.json does not exist; evaluate the run first"):
            html_page.write_index(os.path.join(self.get_temp_dir(), "nowhere"))

    def test_renders_in_headless_chromium(self):
        if not os.path.exists(CHROMIUM):
            self.skipTest(f"{CHROMIUM} is not installed")
        work = tempfile.mkdtemp(dir=self.get_temp_dir())
        probe = os.path.join(work, "probe.html")
        with open(probe, "w", encoding="utf-8") as f:
            f.write(self.page.replace("</body>", _PROBE + "</body>"))
        base = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={os.path.join(work, 'profile')}"]
        dom = subprocess.run(
            [*base, "--virtual-time-budget=5000", "--dump-dom", f"file://{probe}"],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        probed = re.search(r'<pre id="probe" data-overflow="(-?\d+)">([^<]*)</pre>', dom)
        self.assertIsNotNone(probed, dom[-2000:])
        self.assertLessEqual(int(probed.group(1)), 0)  # Nothing wider than the window.
        sizes = probed.group(2).split()
        self.assertLen(sizes, self.page.count("<img "))
        self.assertNotIn("0x0", sizes)  # A broken image has no natural size.

        screenshot = os.path.join(work, "page.png")
        subprocess.run(
            [*base, f"--screenshot={screenshot}", "--window-size=1200,3000", f"file://{self.path}"],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
        pixels = np.asarray(Image.open(screenshot).convert("L"), np.float32)
        self.assertEqual(pixels.shape, (3000, 1200))
        self.assertGreater(pixels.std(), 20.0)  # Text, tables and figures, not a blank page.
        self.assertGreater(float((pixels < 128).mean()), 0.01)
        if os.environ.get("HTML_PAGE_SCREENSHOT"):  # Keep one to look at.
            shutil.copy(screenshot, os.environ["HTML_PAGE_SCREENSHOT"])


if __name__ == "__main__":
    tf.test.main()
