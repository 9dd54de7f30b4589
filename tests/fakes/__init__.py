"""Test doubles and builders shared by the tests and the benchmarks in `bench/`.

They live apart from the `test_*.py` files so a reader can tell what is tested from what stands in for
the outside world:

* `loopback` — the HTTP skeleton both fake servers share (127.0.0.1, an ephemeral port, a serving thread).
* `openai_server` — a deterministic OpenAI-protocol server (`FakeOpenAI`, `Reply`).
* `github_server` — a stateful fake of GitHub's REST API backed by real git repositories (`FakeGitHub`);
  `github_rules` holds what it checks and how GitHub words a refusal, `github_state` what it records.
* `git_repos` — real git repositories with a bare origin, for the git and Action tests.
* `mounts` — a folder made read-only with a bind mount (root ignores chmod).
* `workspace_factory` — a small gepa-tune workspace written to a temporary directory.
* `rule_task` — the simulated tuning problem (hidden keyword rules) that tests and benches tune against.

Import them by module (`from fakes.openai_server import FakeOpenAI`): `tests/` is on `sys.path` under
pytest, and the bench scripts that use them put it there.
"""
