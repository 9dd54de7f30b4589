"""Each default is stated once: what gepa.yaml leaves out, the loader, `TuneOptions` and the `tune`
command take from the dataclasses in config.py and engine/options.py."""

from __future__ import annotations

from pathlib import Path

from fakes.workspace_factory import GEPA_YAML, make_workspace

from gepa_action.cli import main
from gepa_action.config import BudgetConfig, GateConfig, LMConfig, SplitConfig
from gepa_action.engine.options import EngineOptions
from gepa_action.tune import TuneOptions
from gepa_action.workspace import load_workspace

MINIMAL_LM = "lm:\n  task_model: test-model\n"


def test_what_gepa_yaml_leaves_out_is_the_dataclass_default(tmp_path: Path) -> None:
    config = MINIMAL_LM + "tasks:\n" + GEPA_YAML.split("tasks:\n", 1)[1]  # no lm option but the model
    make_workspace(tmp_path, config=config)
    workspace = load_workspace(tmp_path / "gepa.yaml")
    assert workspace.lm == LMConfig(task_model="test-model")
    assert workspace.gate == GateConfig()
    task = workspace.tasks[0]
    assert (task.split, task.budget) == (SplitConfig(), BudgetConfig())


def test_the_tune_command_and_tune_options_default_to_the_engine_options() -> None:
    assert TuneOptions().engine() == EngineOptions()
    tune = main.commands["tune"]
    defaults = {p.name: p.default for p in tune.params}
    engine = EngineOptions()
    for name in ("strategy", "minibatch", "parallel", "max_merges", "race", "lookahead", "chain"):
        assert defaults[name] == getattr(engine, name), name
