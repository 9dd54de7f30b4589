"""A corpus of hostile and broken workspace files, each run through the real CLI.

Every case builds a working workspace, breaks or booby-traps one thing (a file's content, a symlink, a
FIFO, an option), runs a `gepa-tune` command and demands what a user must always get: the documented
exit code, exactly one `error:` line on stderr naming the file (and its line or key), no traceback, no
hang, and never the secret that sits in the environment or was pasted into the file.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes.workspace_factory import INSTANCES, jsonl, make_workspace

from gepa_action.cli import main

ENV_KEY = "sk-proj-ENVsecretVALUE0123456789abcdefXYZ"
PASTED_KEY = "sk-proj-PASTEDsecret9876543210zyxwvuTSRQ"
GITHUB_TOKEN = "ghp_" + "fake" * 9  # built at run time: a token-shaped value, never a real one

CONFIG = """\
lm:
  base_url: {url}
  task_model: test-model
  max_tokens: 64
tasks:
  - name: triage
    prompt:
      system: prompts/system.j2
      user: prompts/user.j2
    eval:
      path: evals/set.jsonl
      version: "1"
    metric: {{type: exact, ignore_case: true}}
    split: {{train: 0, val: 1, test: 0}}
"""

LAUGHS = "lol: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9))
FOUR_LOOPS = ("{% for a in '" + "x" * 300 + "' %}{% for b in '" + "x" * 300 + "' %}{% for c in '" + "x" * 300
              + "' %}{% for d in '" + "x" * 300 + "' %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}")
DEEP = "[" * 20000 + "]" * 20000


class Symlink(str):
    """A file that is a symlink to this target (`{outside}` is a folder beside the workspace)."""


class Fifo:
    """A named pipe where a file should be: reading it would block for ever."""


class Folder:
    """A folder where a file should be."""


@dataclass
class Case:
    id: str
    files: dict[str, str | bytes | Symlink | Fifo | Folder] = field(default_factory=dict)
    config: Callable[[str], str] | None = None
    args: tuple[str, ...] = ("check",)
    code: int = 2
    must: tuple[str, ...] = ()
    answer: str = "bug"
    pasted: str | None = None


def sub(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


def lm(line: str) -> Callable[[str], str]:
    return sub("  max_tokens: 64\n", f"  max_tokens: 64\n  {line}\n")


def task(line: str) -> Callable[[str], str]:
    return sub("    split: {train: 0, val: 1, test: 0}\n", f"    split: {{train: 0, val: 1, test: 0}}\n    {line}\n")


def template(text: str | bytes | Symlink | Fifo | Folder) -> dict:
    return {"prompts/user.j2": text}


def evals(text: str | bytes | Symlink | Fifo | Folder) -> dict:
    return {"evals/set.jsonl": text}


def row(**fields: object) -> str:
    base = {"id": "r1", "inputs": {"text": "crash"}, "expected": "bug"}
    base.update(fields)
    return jsonl([base])


def raw_row(expected: str) -> str:
    return '{"id": "r1", "inputs": {"text": "crash"}, "expected": ' + expected + "}\n"


YAML_EVAL = sub("path: evals/set.jsonl", "path: evals/set.yaml")
PY_METRIC = sub("metric: {type: exact, ignore_case: true}", "metric: metrics/m.py:score")
REGEX_METRIC = sub("metric: {type: exact, ignore_case: true}", "metric: {type: regex, pattern: '^(\\w|\\s|.)*\\d$'}")
REGEX_EXPECTED = sub("metric: {type: exact, ignore_case: true}", "metric: regex")
LOCK_HEAD = "schema: 1\ntasks:\n"

CASES = [
    # ---- gepa.yaml: numbers that are not numbers
    Case("temperature-nan", config=lm("temperature: .nan"), must=("gepa.yaml:5", "lm.temperature", "finite")),
    Case("temperature-inf", config=lm("temperature: .inf"), must=("gepa.yaml:5", "lm.temperature", "finite")),
    Case("timeout-nan", config=lm("timeout: .NaN"), must=("gepa.yaml:5", "lm.timeout", "finite")),
    Case("max-minutes-nan", config=task("budget: {max_minutes: .nan}"), must=("gepa.yaml:", "max_minutes", "finite")),
    Case("max-cost-inf", config=task("budget: {max_cost_usd: .inf}"), must=("gepa.yaml:", "max_cost_usd", "finite")),
    Case("split-nan", config=sub("split: {train: 0,", "split: {train: .nan,"), must=("gepa.yaml:", "split.train")),
    Case("concurrency-inf", config=lm("concurrency: .inf"), must=("gepa.yaml:5", "lm.concurrency")),
    Case("price-nan", config=lm("prices: {test-model: {input: .nan, output: 1}}"),
         must=("gepa.yaml:5", "input", "finite")),
    # ---- gepa.yaml: YAML features that are attacks here
    Case("tag-vault", config=sub("task_model: test-model", "task_model: !vault x"),
         must=("gepa.yaml:3", "lm.task_model", "tag '!vault'")),
    Case("tag-python-name", config=sub("task_model: test-model", "task_model: !!python/name:os.system"),
         must=("gepa.yaml:3", "!!python/name:os.system", "not supported")),
    Case("tag-python-object", config=lm("prices: !!python/object/apply:os.system [id]"),
         must=("gepa.yaml:5", "lm.prices", "not supported")),
    Case("tag-binary", config=sub("version: \"1\"", "version: !!binary aGVsbG8="),
         must=("gepa.yaml:", "not supported")),
    Case("tag-set", config=lm("prices: !!set {a, b}"), must=("gepa.yaml:5", "!!set")),
    Case("billion-laughs", config=lambda c: c + LAUGHS, must=("gepa.yaml:", "aliases", "expand")),
    Case("recursive-alias", config=lm("prices: &p {m: *p}"), must=("gepa.yaml:5", "alias")),
    Case("deep-flow", config=lambda c: c + "deep: " + DEEP + "\n", must=("gepa.yaml:15", "nested")),
    Case("deep-mapping", config=lambda c: c + "deep: " + "{a: " * 100 + "1" + "}" * 100 + "\n",
         must=("gepa.yaml:15", "nested")),
    Case("merge-key", config=lm("<<: {concurrency: 2}"), must=("gepa.yaml:5", "merge")),
    Case("bad-timestamp", config=sub("version: \"1\"", "version: 2024-13-45"),
         must=("gepa.yaml:12", "tasks[0].eval.version", "invalid value")),
    Case("not-utf8", files={"gepa.yaml": b"lm:\n  task_model: test-model\n  max_tokens: 64\n# caf\xe9\ntasks: []\n"},
         must=("gepa.yaml:4", "UTF-8")),
    Case("nul-byte", files={"gepa.yaml": b"lm:\n  task_model: test-model\n\x00\x00\n"}, must=("gepa.yaml:3", "#x0000")),
    Case("binary-garbage", files={"gepa.yaml": bytes(range(256)) * 4}, must=("gepa.yaml",)),
    Case("top-level-list", files={"gepa.yaml": "- a\n- b\n"}, must=("gepa.yaml:1", "mapping")),
    Case("empty-config", files={"gepa.yaml": ""}, must=("gepa.yaml", "mapping")),
    Case("duplicate-key", config=lm("task_model: other"), must=("gepa.yaml:", "duplicate key 'task_model'")),
    Case("unclosed-bracket", config=lm("prices: {a: [1, 2}"), must=("gepa.yaml:", "invalid YAML")),
    Case("tab-indent", config=lm("\tconcurrency: 2"), must=("gepa.yaml:", "invalid YAML")),
    Case("huge-config", config=lambda c: c + "# " + "x" * (5 * 1024 * 1024) + "\n", must=("gepa.yaml", "limit")),
    Case("config-symlink-outside", files={"gepa.yaml": Symlink("{outside}/gepa.yaml")},
         must=("gepa.yaml", "outside the workspace")),
    # ---- secrets pasted where a name belongs: refused, never echoed
    Case("key-as-api-key-env", config=lm(f"api_key_env: {PASTED_KEY}"), pasted=PASTED_KEY,
         must=("gepa.yaml:5", "lm.api_key_env", "API key")),
    Case("key-with-space-as-api-key-env", config=lm(f"api_key_env: 'Bearer {PASTED_KEY[8:]}'"), pasted=PASTED_KEY[8:],
         must=("gepa.yaml:5", "lm.api_key_env")),
    Case("bad-env-name", config=lm("api_key_env: my key"), must=("gepa.yaml:5", "lm.api_key_env", "not shown")),
    Case("key-as-task-model", config=sub("task_model: test-model", f"task_model: {PASTED_KEY}"), pasted=PASTED_KEY,
         must=("gepa.yaml:3", "lm.task_model", "API key")),
    Case("github-token-as-reflection-model", config=lm(f"reflection_model: {GITHUB_TOKEN}"), pasted=GITHUB_TOKEN,
         must=("gepa.yaml:5", "lm.reflection_model")),
    Case("key-as-task-model-of-task", config=task(f"model: {PASTED_KEY}"), pasted=PASTED_KEY,
         must=("gepa.yaml:", "tasks[0].model")),
    Case("key-as-price-name", config=lm(f"prices: {{{PASTED_KEY}: {{input: 1, output: 1}}}}"), pasted=PASTED_KEY,
         must=("gepa.yaml:5", "lm.prices")),
    Case("key-as-unknown-key", config=lm(f"{PASTED_KEY}: 1"), pasted=PASTED_KEY, must=("gepa.yaml:", "lm")),
    Case("key-in-description", config=task(f"description: 'use {PASTED_KEY}'"), pasted=PASTED_KEY,
         must=("gepa.yaml:", "tasks[0].description")),
    Case("api-key-in-config", config=lm(f"api_key: {PASTED_KEY}"), pasted=PASTED_KEY, must=("gepa.yaml:5", "api_key")),
    # ---- templates: confinement
    Case("template-symlink-environ", files=template(Symlink("/proc/self/environ")),
         must=("prompts/user.j2", "outside the workspace")),
    Case("template-symlink-outside", files=template(Symlink("{outside}/secret.txt")),
         must=("prompts/user.j2", "symlink", "outside the workspace")),
    Case("template-symlink-relative-up", files=template(Symlink("../../outside/secret.txt")),
         must=("prompts/user.j2", "outside the workspace")),
    Case("prompts-folder-symlink", files={"prompts": Symlink("{outside}")},
         must=("prompts/", "outside the workspace")),
    Case("template-path-dotdot", config=sub("user: prompts/user.j2", "user: ../outside/secret.txt"),
         must=("gepa.yaml:", "outside the workspace")),
    Case("template-path-absolute", config=sub("user: prompts/user.j2", "user: /etc/hostname"),
         must=("gepa.yaml:", "outside the workspace")),
    Case("template-fifo", files=template(Fifo()), must=("prompts/user.j2", "not a regular file")),
    Case("template-folder", files=template(Folder()), must=("prompts/user.j2", "folder")),
    Case("template-not-utf8", files=template(b"Ticket:\n{{ text }}\n\xff\xfe\n"), must=("prompts/user.j2:3", "UTF-8")),
    Case("template-huge", files=template("{{ text }}" + "x" * (2 * 1024 * 1024)), must=("prompts/user.j2", "limit")),
    Case("template-empty", files=template("  \n"), must=("prompts/user.j2", "empty")),
    Case("template-syntax", files=template("Ticket: {{ text "), must=("prompts/user.j2:1", "syntax")),
    # ---- templates: things that can never render in the sandbox (check must say so, like eval)
    Case("include-outside", files=template("{{ text }}{% include '/etc/passwd' %}"),
         must=("prompts/user.j2:1", "include", "single file")),
    Case("extends", files=template("{% extends 'base.j2' %}{{ text }}"), must=("prompts/user.j2:1", "extends")),
    Case("import", files=template("{% import 'm.j2' as m %}{{ text }}"), must=("prompts/user.j2:1", "import")),
    Case("mro", files=template("{{ text }}{{ ''.__class__.__mro__ }}"), must=("prompts/user.j2:1", "sandbox")),
    Case("cycler-globals", files=template("{{ text }}{{ cycler.__init__.__globals__ }}"),
         must=("prompts/user.j2:1", "'__globals__'", "sandbox")),
    Case("subscript-dunder", files=template("{{ text }}{{ text['__class__'] }}"),
         must=("prompts/user.j2:1", "sandbox")),
    Case("attr-filter-dunder", files=template("{{ text|attr('__class__') }}"),
         must=("prompts/user.j2", "instance 'a1'", "sandbox")),
    Case("repeat-400mb", files=template("{{ text }}{{ 'A'*400000000 }}"), must=("prompts/user.j2", "limit")),
    Case("repeat-list", files=template("{{ text }}{{ [text] * 100000000 }}"), must=("prompts/user.j2", "limit")),
    Case("range-billion", files=template("{{ text }}{% for i in range(10**9) %}{% endfor %}"),
         must=("prompts/user.j2", "range() of more than 100,000 items")),
    Case("four-nested-loops", files=template("{{ text }}" + FOUR_LOOPS), must=("prompts/user.j2", "longer than")),
    Case("center-billion", files=template("{{ text|center(1000000000) }}"), must=("prompts/user.j2", "center")),
    Case("method-width", files=template("{{ text.ljust(1000000000) }}"), must=("prompts/user.j2", "ljust")),
    Case("format-width", files=template("{{ '{:>1000000000}'.format(text) }}"), must=("prompts/user.j2", "width")),
    Case("percent-width", files=template("{{ '%1000000000s' % text }}"), must=("prompts/user.j2", "width")),
    Case("power-huge", files=template("{{ text }}{{ 10 ** 10000000 }}"), must=("prompts/user.j2", "too large")),
    Case("namespace-doubling", files=template(
        "{% set ns = namespace(s=text) %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"),
        must=("prompts/user.j2", "limit")),
    Case("replace-blowup", files=template("{{ (text * 1000)|replace('a', text * 1000)|replace('a', text * 1000) }}"),
         must=("prompts/user.j2", "limit")),
    Case("lipsum-huge", files=template("{{ text }}{{ lipsum(100000000) }}"), must=("prompts/user.j2", "limit")),
    Case("recursive-macro", files=template("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ text }}{{ f(1) }}"),
         must=("prompts/user.j2", "recursion")),
    Case("output-megabytes", files=template("{% for i in range(100000) %}{{ text * 20 }}{% endfor %}"),
         must=("prompts/user.j2", "1,000,000 characters")),
    Case("divide-by-zero", files=template("{{ text }}{{ 1/0 }}"), must=("prompts/user.j2", "ZeroDivisionError")),
    Case("attribute-of-string", files=template("{{ text.nope.deeper }}"), must=("prompts/user.j2", "no attribute")),
    Case("undeclared-variable", files=template("{{ text }} {{ customer }}"),
         must=("evals/set.jsonl:1", "customer", "under inputs")),
    # ---- eval sets
    Case("eval-path-absolute", config=sub("path: evals/set.jsonl", "path: /tmp/o.jsonl"),
         must=("gepa.yaml:11", "tasks[0].eval.path", "outside the workspace")),
    Case("eval-path-dotdot", config=sub("path: evals/set.jsonl", "path: ../outside/x.jsonl"),
         must=("gepa.yaml:11", "tasks[0].eval.path", "outside the workspace")),
    Case("eval-symlink-outside", files=evals(Symlink("{outside}/x.jsonl")),
         must=("evals/set.jsonl", "outside the workspace")),
    Case("evals-folder-symlink", files={"evals": Symlink("{outside}")}, must=("evals/set.jsonl", "outside")),
    Case("eval-fifo", files=evals(Fifo()), must=("evals/set.jsonl", "not a regular file")),
    Case("eval-folder", files=evals(Folder()), must=("evals/set.jsonl", "folder")),
    Case("expected-nan", files=evals(raw_row("NaN")), must=("evals/set.jsonl:1", "NaN")),
    Case("expected-infinity", files=evals(raw_row("-Infinity")), must=("evals/set.jsonl:1", "Infinity")),
    Case("expected-1e400", files=evals(raw_row("1e400")), must=("evals/set.jsonl:1", "infinite")),
    Case("expected-huge-int", files=evals(raw_row("9" * 5000)), must=("evals/set.jsonl:1", "invalid JSON")),
    Case("deep-json-line", files=evals(jsonl(INSTANCES) + raw_row(DEEP)), must=("evals/set.jsonl:5", "nested")),
    Case("json-not-utf8", files=evals(jsonl(INSTANCES).encode() + b'{"id": "\xff"}\n'),
         must=("evals/set.jsonl:5", "UTF-8")),
    Case("json-line-is-list", files=evals("[1, 2]\n"), must=("evals/set.jsonl:1", "object")),
    Case("json-missing-id", files=evals('{"inputs": {"text": "x"}, "expected": "bug"}\n'),
         must=("evals/set.jsonl:1", "'id'")),
    Case("json-duplicate-id", files=evals(row() + row()), must=("evals/set.jsonl:2", "duplicate id")),
    Case("json-truncated", files=evals('{"id": "r1", "inputs": {"text": "x"\n'), must=("evals/set.jsonl:1", "JSON")),
    Case("json-control-char", files=evals('{"id": "r1\x01", "inputs": {}}\n'), must=("evals/set.jsonl:1", "JSON")),
    Case("eval-empty", files=evals(""), must=("evals/set.jsonl", "empty")),
    Case("eval-csv", config=sub("path: evals/set.jsonl", "path: evals/set.csv"), files={"evals/set.csv": "a,b\n"},
         must=("evals/set.csv", "format")),
    Case("yaml-eval-tag", config=YAML_EVAL,
         files={"evals/set.yaml": "- id: a\n  inputs: !!python/object:os.system {}\n"},
         must=("evals/set.yaml:2", "not supported")),
    Case("yaml-eval-laughs", config=YAML_EVAL, files={"evals/set.yaml": LAUGHS.replace("lol: ", "x: ")},
         must=("evals/set.yaml", "aliases")),
    Case("yaml-eval-nan", config=YAML_EVAL,
         files={"evals/set.yaml": "- id: a\n  inputs: {text: x}\n  expected: .nan\n"},
         must=("evals/set.yaml:1", "NaN")),
    Case("json-lone-surrogate", files=evals(jsonl(INSTANCES) + '{"id": "r9", "inputs": {"text": "x \\ud800"}}\n'),
         must=("evals/set.jsonl:5", "lone surrogate", "r9")),
    Case("json-lone-surrogate-key", files=evals('{"id": "r1", "inputs": {"\\udfff": "x"}, "expected": "bug"}\n'),
         must=("evals/set.jsonl:1", "lone surrogate")),
    Case("yaml-eval-lone-surrogate", config=YAML_EVAL,
         files={"evals/set.yaml": "- id: a\n  inputs: {text: x}\n- id: b\n  inputs: {text: \"y \\ud800\"}\n"},
         must=("evals/set.yaml:3", "lone surrogate")),
    Case("yaml-eval-nul", config=YAML_EVAL, files={"evals/set.yaml": "- id: a\n  \x00\n"},
         must=("evals/set.yaml:2", "#x0000")),
    # ---- gepa.lock
    Case("lock-garbage", files={"gepa.lock": "schema: 1\n\x00\x01garbage\n"}, must=("gepa.lock:2", "#x0000")),
    Case("lock-tag", files={"gepa.lock": LOCK_HEAD + "  triage: !!python/object/new:os.system [id]\n"},
         must=("gepa.lock:3", "not supported")),
    Case("lock-deep", files={"gepa.lock": LOCK_HEAD + "  x: " + DEEP + "\n"}, must=("gepa.lock:3", "nested")),
    Case("lock-symlink-outside", files={"gepa.lock": Symlink("{outside}/secret.txt")},
         must=("gepa.lock", "outside the workspace")),
    Case("lock-not-utf8", files={"gepa.lock": b"schema: 1\n# \xff\n"}, must=("gepa.lock:2", "UTF-8")),
    Case("lock-conflict", files={"gepa.lock": LOCK_HEAD + "<<<<<<< HEAD\n=======\n>>>>>>> b\n"},
         must=("gepa.lock:3", "merge conflict")),
    # ---- Python metrics
    Case("metric-symlink-outside", config=PY_METRIC, files={"metrics/m.py": Symlink("{outside}/m.py")},
         must=("gepa.yaml:13", "metrics/m.py", "outside the workspace")),
    Case("metric-absolute-outside",
         config=sub("metric: {type: exact, ignore_case: true}", "metric: {outside}/m.py:score"),
         must=("gepa.yaml:13", "outside the workspace")),
    Case("metric-exit-on-import", config=PY_METRIC, files={"metrics/m.py": "import sys\nsys.exit(0)\n"},
         must=("gepa.yaml:13", "metrics/m.py", "sys.exit(0)")),
    Case("metric-exit-on-call", config=PY_METRIC, args=("eval",), code=1,
         files={"metrics/m.py": "import sys\n\ndef score(output):\n    sys.exit(0)\n"},
         must=("metrics/m.py:score", "sys.exit(0)")),
    Case("metric-error-quotes-a-key", config=PY_METRIC, args=("eval",), code=1, pasted=PASTED_KEY,
         files={"metrics/m.py": f"def score(output):\n    raise ValueError('rejected by {PASTED_KEY}')\n"},
         must=("metrics/m.py:score", "ValueError", "[value hidden")),
    Case("metric-import-error", config=PY_METRIC, files={"metrics/m.py": "import no_such_module_here\n"},
         must=("gepa.yaml:13", "ModuleNotFoundError")),
    Case("metric-recursion-on-import", config=PY_METRIC, files={"metrics/m.py": "def f():\n    f()\nf()\n"},
         must=("gepa.yaml:13", "RecursionError")),
    Case("metric-not-utf8", config=PY_METRIC, files={"metrics/m.py": b"def score(output):\n    return 1 # \xff\n"},
         must=("gepa.yaml:13", "UTF-8")),
    # ---- regex metric: a catastrophic pattern stops with an error instead of hanging eval
    Case("regex-catastrophic-config", config=REGEX_METRIC, args=("eval",), answer="a" * 40 + "!",
         must=("gepa.yaml:13", "tasks[0].metric.pattern", "longer than")),
    Case("regex-catastrophic-expected", config=REGEX_EXPECTED, args=("eval",), answer="a" * 40 + "!",
         files=evals(row(expected="^(\\w|\\s|.)*\\d$")), must=("evals/set.jsonl:1", "expected", "longer than")),
    # ---- more of the same kinds, worded differently
    Case("version-nan", config=sub("version: \"1\"", "version: .nan"), must=("gepa.yaml:12", "eval.version", "finite")),
    Case("task-name-dots", config=sub("name: triage", "name: '..'"), must=("gepa.yaml:6", "tasks[0].name")),
    Case("json-duplicate-key", files=evals('{"id": "r1", "inputs": {"text": "x"}, "expected": "a", "expected": "b"}\n'),
         must=("evals/set.jsonl:1", "duplicate key 'expected'")),
    Case("json-id-float", files=evals('{"id": 1.5, "inputs": {"text": "x"}, "expected": "bug"}\n'),
         must=("evals/set.jsonl:1", "'id' must be a string or an integer")),
    Case("lock-score-nan", files={"gepa.lock": LOCK_HEAD + "  triage:\n    eval_set: {name: s, version: '1', "
                                  "sha256: x}\n    models: {task: m}\n    scores: {val: .nan}\n"
                                  "    split_sizes: {val: 1}\n    templates: {a.j2: x}\n    metric: x\n"},
         must=("gepa.lock:6", "tasks.triage.scores.val", "finite")),
    Case("metric-fifo", config=PY_METRIC, files={"metrics/m.py": Fifo()}, must=("gepa.yaml:13", "not a regular file")),
    Case("metric-folder", config=PY_METRIC, files={"metrics/m.py": Folder()}, must=("gepa.yaml:13", "folder")),
    Case("template-deep-parens", files=template("{{ text }}{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"),
         must=("prompts/user.j2", "nested too deeply")),
    Case("tolerance-nan", args=("hook", "eval", "--tolerance", "nan"), must=("--tolerance", "finite")),
    Case("max-minutes-option-nan", args=("tune", "--max-minutes", "nan"), must=("--max-minutes", "finite")),
    Case("eval-path-dot", config=sub("path: evals/set.jsonl", "path: ."),
         must=("gepa.yaml:11", "tasks[0].eval.path", "path of an eval set file")),
    Case("eval-path-nul", config=sub("path: evals/set.jsonl", 'path: "evals/\\0.jsonl"'),
         must=("evals/", "NUL character")),
    Case("yaml-eval-huge-int", config=YAML_EVAL,
         files={"evals/set.yaml": "- id: a\n  inputs: {text: x}\n  expected: " + "9" * 5000 + "\n"},
         must=("evals/set.yaml:3", "thousands of digits")),
    # ---- command line: click's usage errors as one line too
    Case("budget-negative", args=("tune", "--budget", "-1"), must=("--budget", "-1")),
    Case("budget-not-a-number", args=("tune", "--budget", "abc"), must=("--budget", "abc")),
    Case("split-unknown", args=("eval", "--split", "nonsense"), must=("--split", "nonsense")),
    Case("config-is-folder", args=("--config", "{root}", "check"), must=("--config", "directory")),
    Case("parallel-zero", args=("tune", "--parallel", "0"), must=("--parallel",)),
    Case("tolerance-out-of-range", args=("hook", "eval", "--tolerance", "3"), must=("--tolerance",)),
    Case("max-minutes-zero", args=("tune", "--max-minutes", "0"), must=("--max-minutes",)),
    Case("unknown-option", args=("eval", "--nope"), must=("--nope",)),
    Case("unknown-command", args=("frobnicate",), must=("frobnicate",)),
]


def _place(root: Path, outside: Path, name: str, content: object) -> None:
    path = root / name
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        import shutil

        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, Symlink):
        path.symlink_to(content.replace("{outside}", str(outside)))
    elif isinstance(content, Fifo):
        os.mkfifo(path)
    elif isinstance(content, Folder):
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(str(content), encoding="utf-8")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, openai_server, monkeypatch) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    outside.mkdir()
    for name in ("gepa.yaml", "secret.txt", "x.jsonl", "m.py"):  # files an attacker would like to reach
        (outside / name).write_text(f"{ENV_KEY}\n", encoding="utf-8")
    (outside / "m.py").write_text("def score(output):\n    return 1\n", encoding="utf-8")
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("GITHUB_TOKEN", GITHUB_TOKEN)
    monkeypatch.delenv("GEPA_DEBUG", raising=False)
    openai_server.responder = lambda body: case.answer
    config = CONFIG.format(url=openai_server.url)
    if case.config is not None:
        config = case.config(config).replace("{outside}", str(outside))
    make_workspace(root, config=config)
    root.joinpath("gepa.yaml").write_text(config, encoding="utf-8")  # as written, not dedented
    for name, content in case.files.items():
        _place(root, outside, name, content)

    args = [a.replace("{root}", str(root)) for a in case.args]
    result = CliRunner().invoke(main, ["-C", str(root), *args])

    shown = result.stdout + result.stderr
    if os.environ.get("GEPA_CORPUS_DUMP"):  # review the messages: GEPA_CORPUS_DUMP=file pytest ...
        with open(os.environ["GEPA_CORPUS_DUMP"], "a", encoding="utf-8") as dump:
            dump.write(f"{case.id}\t{result.exit_code}\t{result.stderr.strip()}\n")
    assert isinstance(result.exception, SystemExit) or result.exception is None, repr(result.exception)
    assert "Traceback" not in shown
    assert result.exit_code == case.code, shown
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in case.must:
        assert fragment.replace("{outside}", str(outside)) in errors[0], errors[0]
    for secret in (ENV_KEY, GITHUB_TOKEN, case.pasted):
        assert not secret or secret not in shown, shown


def test_the_corpus_is_large() -> None:
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)


def test_dedent_leaves_configs_alone() -> None:
    assert textwrap.dedent(CONFIG) == CONFIG  # make_workspace dedents YAML; the corpus writes it verbatim
