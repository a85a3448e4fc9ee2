"""Every check and action type carries an example entry; the reference shows it and it is a valid config.

An operator starts from the example under the type in docs/config-reference.md: these tests make sure
each type has one, that it validates against the type's options, and that all of them together load as
one agent.yaml (unique names, escalations that name a configured action).
"""

from __future__ import annotations

import re

import pytest
import yaml

from actions import ACTION_TYPES
from agent.config.load import parse_config
from agent.cli.docgen import config_reference, example_entries
from checks import CHECK_TYPES

TYPES = [("checks", name, cls) for name, cls in CHECK_TYPES.items()] + \
        [("actions", name, cls) for name, cls in ACTION_TYPES.items()]
IDS = [f"{section}-{name}" for section, name, _ in TYPES]
_CREDENTIAL = re.compile(r"\$\{credential:([^}]+)\}")


@pytest.fixture
def credentials(tmp_path, monkeypatch):
    """The `${credential:…}` files the examples refer to, as systemd's LoadCredential= provides them."""
    for _, _, cls in TYPES:
        for name in _CREDENTIAL.findall(cls.EXAMPLE):
            value = "https://hooks.slack.com/services/T0/B0/example" if "webhook" in name else "example-only"
            (tmp_path / name).write_text(value + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))


def _entry(cls) -> dict:
    entries = yaml.safe_load(example_entries(cls))
    assert isinstance(entries, list) and len(entries) == 1, "an example is one list entry: `- name: …`"
    return entries[0]


@pytest.mark.parametrize("section, type_name, cls", TYPES, ids=IDS)
def test_type_example_validates_against_its_options(section, type_name, cls, credentials):
    assert cls.EXAMPLE.strip(), f"{cls.__name__} has no EXAMPLE"
    entry = _entry(cls)
    assert entry["type"] == type_name
    options = cls.Options.model_validate(entry)
    assert options.name == entry["name"]


def test_type_examples_load_together_as_one_config(credentials):
    def listed(section):
        return "\n".join(f"  {line}" for kind, _, cls in TYPES if kind == section
                         for line in example_entries(cls).split("\n"))
    text = f"checks:\n{listed('checks')}\nactions:\n{listed('actions')}\n"
    loaded = parse_config(text, "examples.yaml")
    assert {c.type for c in loaded.checks} == set(CHECK_TYPES)
    assert {a.type for a in loaded.config.actions} == set(ACTION_TYPES)


def test_type_examples_shown_under_their_type_in_the_reference():
    reference = config_reference()
    for section, type_name, cls in TYPES:
        heading = f"## {'check' if section == 'checks' else 'action'} type `{type_name}`"
        after = reference.split(heading, 1)[1].split("\n## ", 1)[0]
        shown = "\n".join(f"  {line}" if line else "" for line in example_entries(cls).split("\n"))
        assert f"```yaml\n{section}:\n{shown}\n```" in after, type_name
