"""The generated references are committed up to date, and what operators read speaks their language."""

import argparse
import re

from agent.cli.main import build_parser
from agent.cli.docgen import DOCS, config_reference, metrics_reference

REPO = DOCS.parent


def test_docs_config_reference_is_current():
    assert (DOCS / "config-reference.md").read_text() == config_reference(), "run: python -m agent.cli.docgen"


def test_docs_metrics_reference_is_current():
    assert (DOCS / "metrics.md").read_text() == metrics_reference(), "run: python -m agent.cli.docgen"


_INTERNAL_WORDS = re.compile(r"\bseeds?\b|\bissues?\s*#?\d", re.IGNORECASE)
_OPERATOR_FILES = ("README.md", "agent.yaml", "docs/**/*.md", "docs/*.txt", "agent/**/templates/**/*.j2",
                   "examples/**/*.yaml", "systemd/*.yaml", "deploy/**/*.yml", "deploy/**/*.json")


def _help_texts(parser: argparse.ArgumentParser):
    yield parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _help_texts(sub)


def _internal_words(text: str) -> list[str]:
    return [f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}" for m in _INTERNAL_WORDS.finditer(text)]


def test_docs_speak_of_the_platform_not_of_seeds_or_issues():
    """Operators read the procedures' names, not the project's internal document numbers ("seed 004", "issue 5")."""
    texts = {"docs/config-reference.md (generated)": config_reference(), "docs/metrics.md (generated)":
             metrics_reference(), "maint-agent --help": "\n".join(_help_texts(build_parser()))}
    texts.update({str(path.relative_to(REPO)): path.read_text() for pattern in _OPERATOR_FILES
                  for path in sorted(REPO.glob(pattern))})
    assert len(texts) > 40
    found = {name: words for name, text in texts.items() if (words := _internal_words(text))}
    assert found == {}


def test_docs_internal_words_recognised():
    assert _internal_words("GOALS (seed 004)\nfine: seeded demo, an issue with X\nafter issues 5–8") == [
        "line 1: 'seed'", "line 3: 'issues 5'"]
