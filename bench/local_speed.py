"""Benchmark: tokens per second of the bundled local models on this machine's llama.cpp build.

Starts the real llama.cpp server (`gepa_action.local_model.LocalServer`) for a bundled model with the
llama-cpp-python installed in the interpreter given by --python (default: this one, i.e. the portable build
of `gepa-tune install-local`), sends the same requests a tuning run sends (a ticket-classification prompt
with a short answer, and a reflection-sized prompt with a long answer), and prints prompt and generation
tokens/s from the server's own usage counts and the wall time of each request.

Compare the portable build with a native one by installing a native build into a second venv and passing
its interpreter:

    .venv/bin/python bench/local_speed.py [--model qwen2.5-coder-0.5b-instruct] [--repeat 3]
        [--python /path/to/native-venv/bin/python] [--label native] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gepa_action.lm import local_model  # noqa: E402

TICKET = ("Subject: Charged twice??\n\nThe app froze when I clicked Upgrade to Pro, so I clicked again. Now my card "
          "statement shows two charges of $29. I want one of them back.\n\nAnswer with the category only.")
LONG = "Write ten short rules for routing support tickets of an invoicing app to teams, one per line."


class ServerWith(local_model.LocalServer):
    """The real server command, run by another interpreter (another venv's llama-cpp-python build)."""

    python = sys.executable

    def command(self) -> list[str]:
        return [self.python, *super().command()[1:]]


def ask(base_url: str, model: str, prompt: str, max_tokens: int) -> tuple[float, int, int]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens, "temperature": 0}).encode()
    request = urllib.request.Request(base_url + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=600) as reply:
        data = json.loads(reply.read())
    usage = data["usage"]
    return time.monotonic() - started, int(usage["prompt_tokens"]), int(usage["completion_tokens"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=local_model.TASK_MODEL.name, choices=sorted(local_model.MODELS))
    parser.add_argument("--python", default=sys.executable, help="interpreter whose llama-cpp-python to measure")
    parser.add_argument("--label", default="portable")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = local_model.MODELS[args.model]
    ServerWith.python = args.python
    server = ServerWith(local_model.model_file(model), model.name)
    started = time.monotonic()
    with server:
        load = time.monotonic() - started
        ask(server.base_url, model.name, "warm up", 4)
        short = [ask(server.base_url, model.name, TICKET + f" #{i}", 8) for i in range(args.repeat)]
        long = [ask(server.base_url, model.name, LONG + f" ({i})", 200) for i in range(args.repeat)]
    # a short answer is almost all prompt processing; a long one almost all generation
    prompt_tps = statistics.median(p / s for s, p, _ in short)
    gen_tps = statistics.median(c / s for s, _, c in long)
    figures = {"build": args.label, "model": model.name, "server_start_s": round(load, 1),
               "classification_s": round(statistics.median(s for s, _, _ in short), 2),
               "prompt_tokens_per_s": round(prompt_tps, 1), "generation_tokens_per_s": round(gen_tps, 1)}
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{figures['build']:>9} {model.name}: start {figures['server_start_s']} s, one classification "
          f"{figures['classification_s']} s (~{figures['prompt_tokens_per_s']} prompt tokens/s), generation "
          f"{figures['generation_tokens_per_s']} tokens/s")


if __name__ == "__main__":
    main()
