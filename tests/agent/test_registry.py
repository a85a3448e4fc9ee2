"""Check and action types load their module when a config first uses them, and every entry does load."""

import subprocess
import sys
from pathlib import Path

import pytest

from actions import ACTION_TYPES
from agent.http.metrics import exported_name
from agent.plugin.registry import TypeRegistry
from checks import CHECK_TYPES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("registry", [CHECK_TYPES, ACTION_TYPES], ids=["checks", "actions"])
def test_registry_every_entry_loads_a_class_of_its_own_type(registry):
    for name in registry:
        assert registry[name].TYPE == name
    assert registry.loaded() == list(registry)


def test_registry_misregistered_class_fails_loudly_when_loaded():
    class Probe:
        TYPE = "probe"

    def loader():
        return (Probe,)

    registry = TypeRegistry("check", {"prob": loader})
    assert "prob" in registry and registry.loaded() == [], "names are known without loading"
    with pytest.raises(RuntimeError, match="returns Probe of type 'probe', which is not registered"):
        registry["prob"]
    with pytest.raises(KeyError):
        registry["nope"]


def test_registry_check_metric_names_unique_across_types():
    """The exposition takes a value family's help from the check's own type: no name may mean two things (two
    types may share a family only through the same spec, as both restore tests do, so one alert covers both)."""
    seen = {}
    for name, cls in CHECK_TYPES.items():
        for spec in cls.METRICS:
            metric = exported_name(cls.metric_prefix(), spec)
            assert metric not in seen or seen[metric][1] == spec, f"{metric} exported by {seen[metric][0]} and {name}"
            seen[metric] = (name, spec)


LAZY = """
import sys
from pathlib import Path
from agent.config.load import load_config
from agent.daemon import Daemon
loaded = load_config(sys.argv[1])
Daemon(loaded)._apply(loaded, first=True)
print(" ".join(sorted(sys.modules)))
"""


def test_daemon_with_repo_config_imports_only_the_types_and_sections_it_uses(tmp_path):
    config = tmp_path / "agent.yaml"
    text = (REPO / "agent.yaml").read_text().replace("state_dir: ./var", f"state_dir: {tmp_path / 'var'}")
    config.write_text(text)
    done = subprocess.run([sys.executable, "-c", LAZY, str(config)], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    modules = set(done.stdout.split())
    assert {"checks.system", "agent.daemon"} <= modules
    unused = {"checks.postgres", "checks.redis", "checks.http", "checks.backup", "checks.restore_test", "checks.s3", "checks.smart",
              "actions.command", "actions.notify", "actions.systemd", "agent.plugin.mailer", "agent.reports.delivery",
              "agent.store.archive", "agent.config.archive", "agent.config.web", "sqlite_utils", "prometheus_client", "difflib",
              "importlib.metadata",   # pydantic's plugin scan (agent/__init__.py tells it there are none)
              "http.server", "ssl"}   # the listener parses HTTP itself; TLS is not configured here
    assert not unused & modules, f"imported without being configured: {sorted(unused & modules)}"


PLUGINS = """
import sys
import agent
from pydantic import BaseModel, create_model
create_model("Probe", __base__=BaseModel, x=(int, 1))(x=2)   # pydantic asks for plugins while building it
loader = sys.modules["pydantic.plugin._loader"]
print(loader.__doc__ == agent._without_pydantic_plugins.__doc__, loader.get_plugins())
"""


def test_pydantic_plugins_stay_unloaded_after_models_are_built():
    """The agent replaces pydantic's plugin loader (a private module) so no installed package's plugin runs
    inside it: if a pydantic release moves or renames that module, this fails instead of the protection
    silently lapsing."""
    done = subprocess.run([sys.executable, "-c", PLUGINS], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "()"]
