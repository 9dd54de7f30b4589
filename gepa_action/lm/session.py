"""The one owner of a workspace's model client: which provider, which endpoint, open, close.

`lm.provider: local` (or `--local`) changes three things at once: every model becomes a bundled one,
no API key is needed, and servers must run on this machine while the client is in use. Deciding that
in one module keeps the loader, the CLI, the gate, `eval` and `tune` from each growing their own
`if provider == "local"`, and keeps the servers' life tied to the client's (started before it opens,
stopped after it closes, also on Ctrl-C and SIGTERM).

It works on anything shaped like a `Workspace` (root, lm, tasks with a model and a metric) rather
than importing `workspace.py`, because the loader itself calls `for_provider`: this module sits in
the `lm` layer, below the loader. The loader needs `for_provider` only, so the client (with asyncio
and sqlite) and `local_model` are imported inside the functions that use them: `check` and the
pre-commit hook never ask a model, and importing them at the top added about 50 ms of imports to
every `check` (`python -X importtime`, one run on a shared machine).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..config import LMConfig
from ..errors import RunError

if TYPE_CHECKING:
    from .client import LMClient, Route
    from .local_model import LocalModel

#: The response cache of a workspace, relative to its root (kept out of git by the scaffold's .gitignore).
CACHE_FILE = Path(".gepa") / "cache.sqlite3"
T = TypeVar("T")


class TaskLike(Protocol):
    model: str
    metric: object


class WorkspaceLike(Protocol):
    root: Path
    lm: LMConfig
    tasks: Sequence[TaskLike]


W = TypeVar("W", bound=WorkspaceLike)


def is_local(config: LMConfig) -> bool:
    """Whether the bundled models on this machine serve every request (no key, no network)."""
    return config.provider == "local"


# ----------------------------------------------------------------------------------------- config


def for_provider(workspace: W, *, local: bool = False) -> W:
    """The workspace as its provider serves it: with `lm.provider: local`, or `local` (`--local`: as if
    gepa.yaml said so), every model replaced by a bundled one; otherwise unchanged."""
    if not (local or is_local(workspace.lm)):
        return workspace
    from . import local_model

    lm = local_model.local_lm_config(workspace.lm)
    tasks = []
    for task in workspace.tasks:  # llm_judge metrics' judges too: no other endpoint is reachable without a key
        metric = task.metric
        if dataclasses.is_dataclass(metric) and isinstance(getattr(metric, "model", None), str):
            metric = dataclasses.replace(metric, model=lm.judge_model)  # type: ignore[type-var]
        tasks.append(dataclasses.replace(task, model=lm.task_model, metric=metric))  # type: ignore[type-var]
    return dataclasses.replace(workspace, lm=lm, tasks=tasks)  # type: ignore[type-var]


def models_in_use(workspace: WorkspaceLike, *, reflection: bool = True) -> list[LocalModel]:
    """The bundled models a localized workspace will ask (only those get a server): the task models, the
    llm_judge metrics' judges, and the reflection model when tuning (`gepa-tune eval` never reflects)."""
    from . import local_model

    names = {t.model for t in workspace.tasks}
    names |= {m for t in workspace.tasks if isinstance(m := getattr(t.metric, "model", None), str)}
    if reflection and workspace.lm.reflection_model:
        names.add(workspace.lm.reflection_model)
    return [m for name, m in local_model.MODELS.items() if name in names]


def check_credentials(config: LMConfig, environ: Mapping[str, str]) -> None:
    """Fail before anything starts (no run folder, no half-done work) when no model can be asked."""
    from .client import missing_key_error, resolve_endpoint

    if is_local(config):  # no key: the [local] extra and the joined model files instead
        from . import local_model

        local_model.check_ready(config, environ)
        return
    base_url, api_key = resolve_endpoint(config, environ)
    if not api_key and not base_url:
        raise missing_key_error(config)


def model_configured(lm: LMConfig, environ: Mapping[str, str]) -> bool:
    """Whether a model can be asked: a local provider, an API key, or an endpoint (which may need none)."""
    from .client import resolve_endpoint

    if is_local(lm):
        return True
    base_url, api_key = resolve_endpoint(lm, environ)
    return bool(base_url or api_key)


# ------------------------------------------------------------------------------------------- life


@contextlib.contextmanager
def local_routes(workspace: WorkspaceLike, *, reflection: bool = True) -> Iterator[dict[str, Route] | None]:
    """For the local provider, serve the models the workspace uses and yield the `LMClient` routes to
    them (None for any other provider: nothing to start). The servers stop when the block ends, however
    it ends; wrap the whole `asyncio.run` in it so Ctrl-C and SIGTERM stop them too."""
    if not is_local(workspace.lm):
        yield None
        return
    from . import local_model
    from .client import Route

    models = models_in_use(workspace, reflection=reflection)
    with local_model.serve(models) as servers:
        yield {m.name: Route(servers[m.name].base_url, f"local:{m.sha256}", crashed=servers[m.name].crash_report)
               for m in models}


def open_client(workspace: WorkspaceLike, *, use_cache: bool = True,
                environ: Mapping[str, str] | None = None, routes: Mapping[str, Route] | None = None,
                fresh: bool = False) -> LMClient:
    """The LM client for a workspace: endpoint from config or environment, cache under `.gepa/`.

    For the local provider, `routes` are the local servers' (from `local_routes`, which must be running
    around the client's use); no key and no other endpoint are involved.
    """
    from ..cache import ResponseCache
    from .client import LMClient, resolve_endpoint

    env = os.environ if environ is None else environ
    cache = ResponseCache(workspace.root / CACHE_FILE) if use_cache else None
    if is_local(workspace.lm):
        if not routes:
            raise RunError("lm.provider local: the local model servers are not running "
                           "(open the client inside lm.session.local_routes)")
        first = next(iter(routes.values())).base_url
        return LMClient(workspace.lm, api_key=None, base_url=first, cache=cache, routes=routes,
                        secrets=secrets_of(env), fresh=fresh)
    base_url, api_key = resolve_endpoint(workspace.lm, env)
    return LMClient(workspace.lm, api_key=api_key, base_url=base_url, cache=cache, routes=routes,
                    secrets=secrets_of(env), fresh=fresh)


def secrets_of(environ: Mapping[str, str]) -> tuple[str | None, ...]:
    """Secrets besides the model key that a run can see and an answer must never carry: a server that
    echoes headers or the environment would otherwise put them into the cache, the report and the PR."""
    return tuple(environ.get(name) for name in ("GITHUB_TOKEN", "GH_TOKEN", "GEPA_TUNE_API_KEY", "OPENAI_API_KEY"))


def with_client(workspace: WorkspaceLike, work: Callable[[LMClient], Awaitable[T]], *, use_cache: bool = True,
                reflection: bool = False, fresh: bool = False) -> T:
    """Run `work` with the workspace's client in a fresh event loop, and close everything after: the
    client, its cache and, for the local provider, the servers (which live exactly as long, stopped on
    Ctrl-C too). `reflection` also serves the reflection model (tuning; `eval` never reflects). `fresh`
    asks the model again instead of trusting cached answers (see `LMClient`)."""

    import asyncio

    async def main(routes: Mapping[str, Route] | None) -> T:
        lm = open_client(workspace, use_cache=use_cache, routes=routes, fresh=fresh)
        try:
            return await work(lm)
        finally:
            await lm.aclose()
            if lm.cache is not None:
                lm.cache.close()

    with local_routes(workspace, reflection=reflection) as routes:
        return asyncio.run(main(routes))
