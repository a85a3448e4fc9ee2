"""The generated references are committed up to date."""

from agent.docgen import DOCS, config_reference, metrics_reference


def test_docs_config_reference_is_current():
    assert (DOCS / "config-reference.md").read_text() == config_reference(), "run: python -m agent.docgen"


def test_docs_metrics_reference_is_current():
    assert (DOCS / "metrics.md").read_text() == metrics_reference(), "run: python -m agent.docgen"
