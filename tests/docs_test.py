"""The README and docs/: every relative link resolves (file and anchor); the README stays short."""

import glob
import os
import re

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_LINES = 150

_FENCE_RE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN_RE = re.compile(r"`[^`\n]*`")
_LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING_RE = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """The text without fenced code blocks (their `#` lines are comments, not headings)."""
    return _FENCE_RE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    result = set()
    for heading in _HEADING_RE.findall(_prose(text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def relative_links(text: str) -> list[str]:
    """The targets of the links outside code that are not URLs (in-page `#anchor` links included)."""
    prose = _CODE_SPAN_RE.sub("", _prose(text))
    return [t for t in _LINK_RE.findall(prose) if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


def broken_links(path: str) -> list[str]:
    """Each relative link of the Markdown file `path` whose file or anchor does not exist."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    problems = []
    for target in relative_links(text):
        file_part, _, anchor = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(linked):
            problems.append(f"{path}: link {target!r}: {linked} does not exist")
            continue
        if anchor and linked.endswith(".md"):
            with open(linked, encoding="utf-8") as f:
                if anchor not in anchors(f.read()):
                    problems.append(f"{path}: link {target!r}: no heading with anchor #{anchor} in {linked}")
    return problems


def markdown_files() -> list[str]:
    return [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]


class LinkCheckerTest(tf.test.TestCase):
    """The checker itself, on made-up pages: it must be able to fail."""

    def _page(self, folder: str, name: str, text: str) -> str:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_finds_a_missing_file_and_a_missing_anchor(self):
        folder = self.get_temp_dir()
        self._page(folder, "docs/a.md", "# Page A\n\n## Inspecting records (`make inspect`)\n")
        page = self._page(
            folder,
            "README.md",
            "[ok](docs/a.md) [ok anchor](docs/a.md#inspecting-records-make-inspect) "
            "[gone](docs/missing.md) [bad anchor](docs/a.md#nowhere) [here](#title)\n\n# Title\n"
            "[web](https://example.com/x.md) `[code](docs/nothing.md)`\n\n"
            "```bash\n# not a heading\n[in code](docs/nothing.md)\n```\n",
        )
        problems = broken_links(page)
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("link 'docs/missing.md'", problems[0])
        self.assertIn("no heading with anchor #nowhere", problems[1])

    def test_anchor_of_headings(self):
        text = "# The Beam job (`make tfrecords`) and cluster runners\n## Dataflow, Flink, Spark\n## Dataflow, Flink, Spark\n"
        self.assertEqual(
            anchors(text),
            {
                "the-beam-job-make-tfrecords-and-cluster-runners",
                "dataflow-flink-spark",
                "dataflow-flink-spark-1",
            },
        )
        self.assertNotIn("not-a-heading", anchors("```\n# not a heading\n```\n"))


class DocsTest(tf.test.TestCase):
    def test_every_relative_link_resolves(self):
        files = markdown_files()
        self.assertGreater(len(files), 1)
        problems = [problem for path in files for problem in broken_links(path)]
        self.assertEqual(problems, [])

    def test_readme_is_a_front_page(self):
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            lines = f.read().splitlines()
        self.assertLessEqual(len(lines), README_MAX_LINES)

    def test_every_docs_page_is_linked_from_the_readme(self):
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            linked = {
                os.path.normpath(os.path.join(ROOT, t.partition("#")[0])) for t in relative_links(f.read())
            }
        pages = set(glob.glob(os.path.join(ROOT, "docs", "*.md")))
        self.assertEqual(sorted(pages - linked), [])
