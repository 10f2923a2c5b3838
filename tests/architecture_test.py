"""The import arrows of docs/architecture.md, checked on every product module's source.

Every `import` and `from ... import` statement is read with `ast`, including those inside
functions (lazy imports count); relative imports are resolved against the module's package.
"""

import ast
import os
import tempfile
from pathlib import Path

import tensorflow as tf

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("tfrecords", "trainer", "beam_pipelines", "demo_data", "cxr_cli")
TRAINER_SUBPACKAGES = ("trainer.model", "trainer.training", "trainer.evaluation", "trainer.prediction")
TRAINER_BINARIES = ("trainer.train", "trainer.evaluate", "trainer.predict")

# (importing package, forbidden import prefixes, module-level statements only).
RULES = (
    ("tfrecords", ("trainer", "beam_pipelines", "demo_data"), False),
    ("trainer.model", TRAINER_SUBPACKAGES[1:] + TRAINER_BINARIES, False),
    ("trainer.training", ("trainer.evaluation", "trainer.prediction") + TRAINER_BINARIES, False),
    ("trainer.evaluation", ("trainer.training", "trainer.prediction") + TRAINER_BINARIES, False),
    ("trainer.prediction", ("trainer.training", "trainer.api") + TRAINER_BINARIES, False),
    ("trainer.api", ("trainer.training",) + TRAINER_BINARIES, False),
    ("beam_pipelines", ("trainer", "demo_data"), False),
    # demo_data reads the label vocabulary from tfrecords.schema, which never loads TensorFlow
    # (tests/demo_generate_test.py checks that the generator runs without it).
    ("demo_data", ("trainer", "beam_pipelines", "tensorflow", "keras"), False),
    ("cxr_cli", ("trainer",), True),
)

# Imports that go against the arrows, as (importing module, imported module); the set must only
# shrink. None is left: the records inspector's binary lives in `trainer/`, which may hand the
# trainer's augmentation to the contract's contact sheet.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def _module_name(root, path):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module, is_package, node):
    """The absolute module named by an ImportFrom node (relative ones resolved)."""
    if not node.level:
        return [node.module]
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    prefix = ".".join(base + ([node.module] if node.module else []))
    if node.module:
        return [prefix]
    return [f"{prefix}.{alias.name}" for alias in node.names]


def imports_of(root, path):
    """Yields (imported module, at module level) for every import statement in one file."""
    module = _module_name(root, path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = _resolve(module, path.name == "__init__.py", node)
        else:
            continue
        for name in names:
            yield name, id(node) in top_level


def _matches(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def violations(root, packages=PACKAGES, rules=RULES):
    """Every (importing module, imported module, file) that goes against the rules."""
    root = Path(root)
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            module = _module_name(root, path)
            for source, forbidden, module_level_only in rules:
                if not _matches(module, source):
                    continue
                for name, top in imports_of(root, path):
                    if module_level_only and not top:
                        continue
                    if any(_matches(name, prefix) for prefix in forbidden):
                        found.append((module, name, str(path.relative_to(root))))
    return found


class ArchitectureTest(tf.test.TestCase):
    def test_product_imports_follow_the_arrows(self):
        found = violations(REPO)
        unexpected = [v for v in found if (v[0], v[1]) not in KNOWN_EXCEPTIONS]
        self.assertEqual(unexpected, [], "imports against docs/architecture.md")

    def test_known_exceptions_still_exist(self):
        found = {(v[0], v[1]) for v in violations(REPO)}
        self.assertEqual(KNOWN_EXCEPTIONS - found, set(), "fixed: remove from KNOWN_EXCEPTIONS")

    def test_every_package_is_checked(self):
        for package in PACKAGES:
            self.assertTrue((REPO / package / "__init__.py").exists(), package)

    def _tree(self, files):
        root = Path(tempfile.mkdtemp(dir=self.get_temp_dir()))
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            for parent in path.relative_to(root).parents:
                init = root / parent / "__init__.py"
                if parent != Path(".") and not init.exists():
                    init.write_text("", encoding="utf-8")
        return root

    def test_checker_finds_a_lazy_forbidden_import(self):
        root = self._tree(
            {
                "tfrecords/codec.py": "def f():\n    from trainer.model import augment\n",
                "trainer/model/models.py": "import tfrecords.codec\n",
            }
        )
        found = violations(root)
        self.assertEqual([(m, n) for m, n, _ in found], [("tfrecords.codec", "trainer.model")])

    def test_checker_resolves_relative_imports(self):
        root = self._tree({"trainer/model/models.py": "from ..evaluation import metrics\n"})
        found = violations(root)
        self.assertEqual([(m, n) for m, n, _ in found], [("trainer.model.models", "trainer.evaluation")])

    def test_checker_flags_tensorflow_in_demo_data(self):
        root = self._tree({"demo_data/png.py": "import numpy\nimport tensorflow as tf\n"})
        self.assertEqual([n for _, n, _ in violations(root)], ["tensorflow"])

    def test_cli_may_import_trainer_inside_functions_only(self):
        root = self._tree(
            {
                "cxr_cli/ok.py": "def main():\n    from trainer.training import runner\n",
                "cxr_cli/bad.py": "from trainer.training import runner\n",
            }
        )
        self.assertEqual([m for m, _, _ in violations(root)], ["cxr_cli.bad"])

    def test_allowed_imports_pass(self):
        root = self._tree(
            {
                "trainer/prediction/predictor.py": "from trainer.model import export\nfrom trainer.evaluation import tta\n",
                "beam_pipelines/job.py": "from tfrecords import schema\n",
            }
        )
        self.assertEqual(violations(root), [])


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf.test.main()
