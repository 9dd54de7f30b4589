"""Find and load `gepa.yaml` into the config types of `config.py`, plus the loaded tasks.

Everything the rest of the tool knows about the user's setup comes through here, already validated,
so later stages can trust it and errors point at the YAML line that caused them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import (
    CONFIG_NAME,
    PROVIDERS,
    BudgetConfig,
    CostConfig,
    GateConfig,
    LMConfig,
    Price,
    SplitConfig,
    Step,
    WatchConfig,
)
from .errors import InputError
from .evals import EvalSet, load_eval_set
from .guidance import store as guidance_store
from .guidance.items import Guidance
from .guidance.rules import MATCH_SECONDS, rule_problem
from .lm.session import for_provider
from .metrics import Metric, build_metric
from .paths import reading
from .templates import RENDER_HINTS, PromptTemplate, TemplateRenderError, load_template, render
from .yamlsrc import Doc, Section, load_yaml


@dataclass
class Task:
    """A task with everything it needs loaded and validated: templates, eval set and metric."""

    name: str
    description: str
    model: str
    steps: tuple[Step, ...]
    optimize: tuple[str, ...]
    split: SplitConfig
    budget: BudgetConfig
    templates: dict[str, PromptTemplate]
    eval_set: EvalSet
    metric: Metric
    #: The task's own `watch:` settings; None follows the workspace's.
    watch: WatchConfig | None = None
    cost: CostConfig = field(default_factory=CostConfig)
    #: Reviewer guidance from gepa.guidance.yaml (and, in the Action, the open PR's comments).
    guidance: Guidance = field(default_factory=Guidance)

    @property
    def modules(self) -> tuple[str, ...]:
        """Every prompt module of the task, in the order the steps use them."""
        return tuple(m for step in self.steps for _, m in step.messages)

    def seed_candidate(self) -> dict[str, str]:
        """The templates as they are in the repository: the starting point of tuning."""
        return {m: self.templates[m].source for m in self.modules}


@dataclass
class Workspace:
    root: Path
    config_file: Path
    lm: LMConfig
    tasks: list[Task]
    warnings: list[str] = field(default_factory=list)
    gate: GateConfig = field(default_factory=GateConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    cost: CostConfig = field(default_factory=CostConfig)

    def relative(self, path: Path) -> str:
        return display_path(self.root, path)

    def select(self, names: tuple[str, ...] | list[str]) -> list[Task]:
        """The tasks named (all when none are), failing clearly on a name that does not exist."""
        if not names:
            return list(self.tasks)
        known = {t.name: t for t in self.tasks}
        missing = [n for n in names if n not in known]
        if missing:
            raise InputError(self.relative(self.config_file), f"no task named '{missing[0]}'", key="tasks",
                             hint=f"known tasks: {', '.join(known) or '(none)'}")
        return [known[n] for n in names]


LM_KEYS = ("provider", "base_url", "api_key_env", "task_model", "reflection_model", "judge_model", "temperature",
           "max_tokens", "reflection_max_tokens", "concurrency", "timeout", "max_retries", "prices")
TASK_KEYS = ("name", "description", "model", "prompt", "steps", "optimize", "eval", "metric", "split", "budget",
             "watch", "cost")
ROLES = ("system", "user")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def display_path(root: Path, path: Path) -> str:
    """A path as the user would write it in gepa.yaml: relative to the workspace when inside it."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def find_config(directory: Path | None = None, config: Path | None = None) -> Path:
    """The gepa.yaml to use: `--config` if given, else the nearest one in DIR or its parents (like git)."""
    base = (directory or Path.cwd()).resolve()
    if config is not None:
        path = config if config.is_absolute() else base / config
        if not path.is_file():
            raise InputError(str(config), "config file not found", hint="check the --config path")
        return path
    for folder in (base, *base.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise InputError(str(base), f"no {CONFIG_NAME} here or in any parent folder",
                     hint="run `gepa-tune init` to create one, or pass --config FILE / -C DIR")


def _parse_lm(doc: Doc) -> LMConfig:
    section = doc.section().child("lm")
    if section is None:
        return LMConfig()
    if section.has("api_key"):
        raise section.error("api_key", "API keys never live in gepa.yaml",
                            hint="export the key in an environment variable and set api_key_env to its name")
    section.check_keys(LM_KEYS)
    default = LMConfig()  # every default below comes from the dataclass, stated once in config.py
    provider = section.get("provider", str, default.provider)
    if provider not in PROVIDERS:
        raise section.error("provider", f"'{provider}' is not a provider",
                            hint="use openai (any OpenAI-compatible endpoint) or local (bundled models, no API key)")
    base_url = section.get("base_url", str)
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise section.error("base_url", f"'{base_url}' is not an http(s) URL",
                            hint="write it like https://api.openai.com/v1")
    env_name = section.get("api_key_env", str, default.api_key_env)
    if not _ENV_NAME.fullmatch(env_name):  # never echoed: a mistyped name may be the key itself
        raise section.error("api_key_env", "not an environment variable name (letters, digits and '_'; the value "
                            "is not shown here)", hint="give the NAME of the variable holding the key, e.g. "
                            "OPENAI_API_KEY, never the key itself")
    prices: dict[str, Price] = {}
    price_section = section.child("prices")
    if price_section is not None:
        price_section.check_keys(list(price_section.data))  # refuses a key-shaped model name unechoed
        for model in price_section.data:
            entry = price_section.child(model)
            assert entry is not None
            entry.check_keys(("input", "output"))
            prices[str(model)] = Price(entry.number("input", required=True, minimum=0),
                                       entry.number("output", required=True, minimum=0))
    task_model = section.get("task_model", str, default.task_model)
    return LMConfig(
        base_url=base_url.rstrip("/") if base_url else None,
        api_key_env=env_name,
        task_model=task_model,
        reflection_model=section.get("reflection_model", str, default.reflection_model),
        judge_model=section.get("judge_model", str, default.judge_model),
        temperature=section.number("temperature", default.temperature, minimum=0, maximum=2),
        max_tokens=section.number("max_tokens", default.max_tokens, minimum=1, integer=True),
        reflection_max_tokens=section.number("reflection_max_tokens", default.reflection_max_tokens, minimum=64,
                                             integer=True),
        concurrency=section.number("concurrency", default.concurrency, minimum=1, maximum=256, integer=True),
        timeout=section.number("timeout", default.timeout, minimum=0.1),
        max_retries=section.number("max_retries", default.max_retries, minimum=0, maximum=20, integer=True),
        prices=prices,
        provider=provider,
    )


def _module_path(section: Section, key: str | int, root: Path) -> str:
    value = section.data[key]
    if not isinstance(value, str) or not value.strip():
        raise section.error(key, "expected the path of a template file", hint="e.g. prompts/triage/system.j2")
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        raise section.error(key, f"'{value}' is outside the workspace",
                            hint="templates live in the repository; use a path relative to gepa.yaml")
    return path.as_posix()


def _parse_step(section: Section, root: Path, default_name: str) -> Step:
    section.check_keys(("name", *ROLES, "output"))
    messages = tuple((role, _module_path(section, role, root)) for role in ROLES if section.has(role))
    if not messages:
        raise section.error(None, "a step needs a 'system' or a 'user' template (or both)",
                            hint="e.g. user: prompts/task/user.j2")
    output = section.get("output", str)
    if output is not None and not output.isidentifier():
        raise section.error("output", f"'{output}' is not a valid variable name",
                            hint="use letters, digits and underscores, e.g. extracted_facts")
    return Step(name=section.get("name", str, default_name), messages=messages, output=output)


def _parse_steps(task: Section, root: Path) -> tuple[Step, ...]:
    if task.has("prompt") == task.has("steps"):
        raise task.error(None, "give either 'prompt' (one model call) or 'steps' (a pipeline), not both"
                         if task.has("prompt") else "missing 'prompt'",
                         hint="e.g. prompt: {system: prompts/x/system.j2, user: prompts/x/user.j2}")
    if task.has("prompt"):
        prompt = task.child("prompt")
        assert prompt is not None
        return (_parse_step(prompt, root, "main"),)
    raw = task.get("steps", list, required=True)
    if not raw:
        raise task.error("steps", "the pipeline has no steps", hint="add at least one step")
    steps = []
    for index in range(len(raw)):
        step = Section(task.doc, (*task.path, "steps", index), raw[index])
        steps.append(_parse_step(step, root, f"step{index + 1}"))
    seen: set[str] = set()
    for index, step in enumerate(steps):
        if step.name in seen:
            raise task.error("steps", f"two steps are named '{step.name}'", hint="give each step its own name")
        seen.add(step.name)
        if step.output is None and index < len(steps) - 1:
            raise Section(task.doc, (*task.path, "steps", index), raw[index]).error(
                None, f"step '{step.name}' has no 'output' variable, so later steps cannot use its result",
                hint="add output: NAME and use {{ NAME }} in a later template")
    return tuple(steps)


def _parse_split(task: Section) -> SplitConfig:
    section = task.child("split")
    if section is None:
        return SplitConfig()
    section.check_keys(("train", "val", "test", "seed"))
    config = SplitConfig(
        train=section.number("train", SplitConfig.train, minimum=0, maximum=1),
        val=section.number("val", SplitConfig.val, minimum=0, maximum=1),
        test=section.number("test", SplitConfig.test, minimum=0, maximum=1),
        seed=section.number("seed", SplitConfig.seed, integer=True),
    )
    total = sum(config.fractions())
    if abs(total - 1.0) > 1e-6:
        raise section.error(None, f"train + val + test must add up to 1, got {total:g}",
                            hint="e.g. train: 0.4, val: 0.3, test: 0.3")
    return config


def _parse_watch(parent: Section) -> WatchConfig | None:
    """`watch: {tolerance: X}` at the top of gepa.yaml or in a task (None: not given there)."""
    section = parent.child("watch")
    if section is None:
        return None
    section.check_keys(("tolerance",))
    return WatchConfig(tolerance=section.number("tolerance", WatchConfig.tolerance, minimum=0, maximum=1))


def _parse_budget(task: Section) -> BudgetConfig:
    section = task.child("budget")
    if section is None:
        return BudgetConfig()
    section.check_keys(("max_metric_calls", "max_cost_usd", "max_minutes"))
    return BudgetConfig(
        max_metric_calls=section.number("max_metric_calls", BudgetConfig.max_metric_calls, minimum=1, integer=True),
        max_cost_usd=section.number("max_cost_usd", BudgetConfig.max_cost_usd, minimum=0),
        max_minutes=section.number("max_minutes", BudgetConfig.max_minutes, minimum=0),
    )


#: A trillion calls a month is beyond any deployment; the bound keeps the dollar arithmetic finite.
MAX_CALLS_PER_MONTH = 10**12


def _parse_cost(parent: Section, default: CostConfig) -> CostConfig:
    """`cost: {calls_per_month: N}`, at the top level or in a task (where it overrides the top level)."""
    section = parent.child("cost")
    if section is None:
        return default
    section.check_keys(("calls_per_month",))
    calls = section.number("calls_per_month", default.calls_per_month, integer=True)
    if calls is not None and not 1 <= calls <= MAX_CALLS_PER_MONTH:
        raise section.error("calls_per_month", f"must be from 1 to {MAX_CALLS_PER_MONTH:.0e}, got "
                            f"{calls if calls < 10**15 else 'a number of ' + str(len(str(calls))) + ' digits'}",
                            hint="give how often the prompt is called in production a month, e.g. 100000, "
                                 "or leave 'cost' out")
    return CostConfig(calls_per_month=calls)


#: A template whose renders add up to more than this while averaging over SLOW_RENDER_EACH is refused
#: (each render stays under the 2 s limit, but a thousand of them would stall `check` for half an hour;
#: an ordinary prompt renders in well under a millisecond).
SLOW_RENDER_TOTAL = 10.0
SLOW_RENDER_EACH = 0.01
#: Offline, a later step's input stands in for the output of an earlier step that `check` cannot call.
STEP_OUTPUT_STANDIN = "(the output of an earlier step)"


def _check_variables(task_name: str, steps: tuple[Step, ...], templates: dict[str, PromptTemplate],
                     eval_set: EvalSet) -> None:
    """Every template variable must come from the instance or an earlier step, for every instance, and
    every template must render in the bounded sandbox with each instance's inputs.

    `check` and `eval` both load through here, so a template that can never render (a sandbox escape,
    a loop that never ends, a billion-character repeat) fails offline, before anything is paid for.
    """
    spent: dict[str, float] = {}
    for count, inst in enumerate(eval_set.instances, start=1):
        available = set(inst.inputs)
        variables: dict[str, Any] = dict(inst.inputs)
        for step in steps:
            for _, module in step.messages:
                for var in sorted(templates[module].variables - available):
                    raise eval_set.error_at(inst, f"has no input '{var}', which {module} uses",
                                            hint=f"add \"{var}\" under inputs, or change the template")
                start = time.monotonic()
                _check_render(module, templates[module], variables, inst, eval_set,
                              uses_standin=any(s.output in templates[module].variables for s in steps if s.output))
                spent[module] = spent.get(module, 0.0) + time.monotonic() - start
                if spent[module] > SLOW_RENDER_TOTAL and spent[module] / count > SLOW_RENDER_EACH:
                    raise InputError(module, f"rendering it for the first {count} instances of {eval_set.file} took "
                                     f"{spent[module]:.0f} s ({spent[module] / count * 1000:.0f} ms each)",
                                     hint=RENDER_HINTS["limit"])
            if step.output:
                if step.output in inst.inputs:
                    raise eval_set.error_at(inst, f"input '{step.output}' clashes with the output of step "
                                            f"'{step.name}' in task '{task_name}'",
                                            hint="rename the step's output or the input")
                available.add(step.output)
                variables[step.output] = STEP_OUTPUT_STANDIN


def _check_render(module: str, template: PromptTemplate, variables: dict[str, Any], inst: Any, eval_set: EvalSet,
                  *, uses_standin: bool) -> None:
    """Render once as `eval` would; with a stand-in step output only the sandbox's own refusals count."""
    try:
        render(template.source, variables)
    except TemplateRenderError as exc:
        if uses_standin and exc.kind in ("error", "attribute"):
            return  # may depend on what the earlier step really answers
        raise InputError(module, f"cannot be rendered for instance '{inst.id}' of {eval_set.file}: "
                         f"{str(exc).rstrip('.')}", hint=exc.hint) from None


def _load_task(doc: Doc, index: int, root: Path, lm: LMConfig, names: set[str], cost: CostConfig) -> Task:
    section = Section(doc, ("tasks", index), doc.data["tasks"][index])
    section.check_keys(TASK_KEYS)
    name = section.get("name", str, required=True)
    if not name or not set(name) <= _NAME_CHARS or name.startswith((".", "-")):
        raise section.error("name", f"'{name}' is not a valid task name",
                            hint="start with a letter or digit, then use letters, digits, '-', '_' and '.' "
                                 "(it becomes part of branch names)")
    if name in names:
        raise section.error("name", f"a task named '{name}' is defined twice", hint="task names must be unique")
    names.add(name)
    steps = _parse_steps(section, root)
    modules = tuple(dict.fromkeys(m for step in steps for _, m in step.messages))
    optimize_raw = section.get("optimize", list, list(modules))
    optimize = []
    for i, module in enumerate(optimize_raw):
        if not isinstance(module, str) or Path(module).as_posix() not in modules:
            raise doc.error(("tasks", index, "optimize", i), f"'{module}' is not a template of this task",
                            hint=f"choose from: {', '.join(modules)}")
        optimize.append(Path(module).as_posix())
    if not optimize:
        raise section.error("optimize", "the list is empty, so tuning could change nothing",
                            hint="name at least one template, or remove 'optimize' to allow all")
    eval_section = section.child("eval", required=True)
    assert eval_section is not None
    eval_section.check_keys(("path", "version", "name"))
    eval_file = eval_section.get("path", str, required=True)
    if not eval_file.strip() or Path(eval_file).is_absolute() or ".." in Path(eval_file).parts \
            or Path(eval_file).name in ("", "."):
        raise eval_section.error("path", f"'{eval_file}' is outside the workspace" if eval_file.strip()
                                 and Path(eval_file).name not in ("", ".") else "expected the path of an eval set file",
                                 hint="eval sets live in the repository; use a path relative to gepa.yaml")
    version = eval_section.get("version", (str, int, float))
    if version is None:
        raise eval_section.error(None, "missing required key 'version'",
                                 hint="label the eval set, e.g. version: \"1\", and bump it when the data changes")
    split = _parse_split(section)
    eval_set = load_eval_set(root / eval_file, Path(eval_file).as_posix(),
                             name=eval_section.get("name", str, Path(eval_file).stem), version=str(version),
                             fractions=split.fractions(), seed=split.seed, root=root)
    templates = {m: load_template(root / m, m, root) for m in modules}
    _check_variables(name, steps, templates, eval_set)
    if not section.has("metric"):
        raise section.error(None, "missing required key 'metric'", hint="e.g. metric: exact")
    metric = build_metric(doc, ("tasks", index, "metric"), root=root,
                          default_judge_model=lm.judge_model or lm.task_model)
    for inst in eval_set.instances:
        problem = metric.check_instance(inst)
        if problem:
            raise eval_set.error_at(inst, problem)
    return Task(
        name=name,
        description=section.get("description", str, "") or "",
        model=section.get("model", str, lm.task_model),
        steps=steps,
        optimize=tuple(optimize),
        split=split,
        budget=_parse_budget(section),
        templates=templates,
        eval_set=eval_set,
        metric=metric,
        watch=_parse_watch(section),
        cost=_parse_cost(section, cost),
    )


def load_workspace(config_file: Path, errors: list[InputError] | None = None) -> Workspace:
    """Load and validate everything offline.

    With `errors` given, a broken task is recorded there and skipped, so `check` can report every
    problem in one go; without it the first problem is raised.
    """
    root = config_file.parent
    display = display_path(root, config_file)
    doc = load_yaml(config_file, display)
    if not isinstance(doc.data, dict):
        raise InputError(display, "expected a mapping with 'lm' and 'tasks'", line=1,
                         hint="run `gepa-tune init` in an empty folder to see a working example")
    doc.section().check_keys(("lm", "tasks", "gate", "watch", "cost"))
    gate_section = doc.section().child("gate")
    gate = GateConfig()
    if gate_section is not None:
        gate_section.check_keys(("tolerance",))
        gate = GateConfig(tolerance=gate_section.number("tolerance", GateConfig.tolerance, minimum=0, maximum=1))
    watch = _parse_watch(doc.section()) or WatchConfig()
    with reading(display, "config"):
        lm = _parse_lm(doc)
        cost = _parse_cost(doc.section(), CostConfig())
    raw_tasks: Any = doc.section().get("tasks", list, required=True)
    if not raw_tasks:
        raise doc.error(("tasks",), "no tasks defined", hint="add at least one task under 'tasks:'")
    tasks: list[Task] = []
    names: set[str] = set()
    for index in range(len(raw_tasks)):
        try:
            with reading(display, "config"):  # anything unforeseen still names the file
                tasks.append(_load_task(doc, index, root, lm, names, cost))
        except InputError as exc:
            if errors is None:
                raise
            errors.append(exc)
    guidance_warnings: list[str] = []
    tasks = _with_guidance(config_file, root, tasks, errors, guidance_warnings)
    workspace = Workspace(root=root, config_file=config_file, lm=lm, tasks=tasks, gate=gate, watch=watch,
                          cost=cost)
    workspace.warnings.extend(guidance_warnings)
    workspace = for_provider(workspace)  # lm.provider: local makes every model a bundled one, free and keyless
    lm, tasks = workspace.lm, workspace.tasks
    for model in sorted({lm.task_model, *(t.model for t in tasks), lm.reflection_model, lm.judge_model} - {None}):
        if lm.prices and model not in lm.prices:
            workspace.warnings.append(f"{display}: lm.prices: no price for model '{model}'; its cost counts as 0")
    return workspace


def _with_guidance(config_file: Path, root: Path, tasks: list[Task], errors: list[InputError] | None,
                   warnings: list[str]) -> list[Task]:
    """The tasks with their items of gepa.guidance.yaml (beside gepa.yaml), when there is one; a rule
    that is slow on long outputs (possible only when written by hand) is a warning, never an error."""
    path = guidance_store.path_for(config_file)
    display = display_path(root, path)
    try:
        items = guidance_store.load(path, display, [t.name for t in tasks])
    except InputError as exc:
        if errors is None:
            raise
        errors.append(exc)
        return tasks
    for name, task_items in items.items():
        for item in task_items:
            problem = rule_problem(item.rule) if item.rule is not None else None
            if problem is not None:
                warnings.append(f"{display}: tasks.{name} item {item.id}: {problem}; each check stops after "
                                f"{MATCH_SECONDS:g} s and is then not counted")
    return [replace(t, guidance=Guidance(items=items[t.name])) if items.get(t.name) else t for t in tasks]
