"""What the fake GitHub checks and how GitHub words a refusal: error bodies, payload schemas, permissions.

Kept apart from the server so the exact wording a client may match on (and the test asserts on) is in one
short file, and the server module is left with state and routes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MAX_BODY = 65_536
DOCS = "https://docs.github.com/rest"
DEFAULT_PERMISSIONS = {"metadata": "read", "contents": "write", "pull_requests": "write", "issues": "write"}
LEVELS = {"none": 0, "read": 1, "write": 2, "admin": 3}
REASONS = {
    400: "Bad Request",
    401: "Bad credentials",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Validation Failed",
    429: "API rate limit exceeded",
    500: "Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class Refusal(Exception):
    """Raised inside a route to answer right away (an error, usually)."""

    def __init__(self, status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


# -- GitHub's error bodies -------------------------------------------------------------------------------


def error_body(status: int, message: str | None = None, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """GitHub's error JSON: `message`, optional `errors`, `documentation_url`, and `status` as a string."""
    body: dict[str, Any] = {"message": message or REASONS.get(status, f"HTTP {status}")}
    if errors is not None:
        body["errors"] = errors
    body["documentation_url"] = DOCS
    body["status"] = str(status)
    return body


def invalid(detail: str) -> Refusal:
    """A schema violation, in the words GitHub uses for them."""
    return Refusal(422, error_body(422, f"Invalid request.\n\n{detail}"))


def validation_failed(*errors: dict[str, Any]) -> Refusal:
    return Refusal(422, error_body(422, "Validation Failed", list(errors)))


TYPE_NAMES = {str: "string", bool: "boolean", int: "integer", list: "array", dict: "object"}


def check_payload(
    payload: Any, fields: Mapping[str, type], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A JSON object with only `fields`, each of its type, and the `required` ones present."""
    if not isinstance(payload, dict):
        raise invalid(f"For 'links/0/schema', {json.dumps(payload)} is not an object.")
    for key in payload:
        if key not in fields:
            raise invalid(f'"{key}" is not a permitted key.')
    for key in required:
        if key not in payload:
            raise invalid(f'"{key}" wasn\'t supplied.')
    for key, value in payload.items():
        expected = fields[key]
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if not ok:
            raise invalid(f"For 'properties/{key}', {json.dumps(value)} is not a{'n' * (expected is int)} "
                           f"{TYPE_NAMES[expected]}.")
    return payload


CREATE_PULL_FIELDS: dict[str, type] = {
    "title": str,
    "head": str,
    "head_repo": str,
    "base": str,
    "body": str,
    "maintainer_can_modify": bool,
    "draft": bool,
    "issue": int,
}
UPDATE_PULL_FIELDS: dict[str, type] = {
    "title": str,
    "body": str,
    "state": str,
    "base": str,
    "maintainer_can_modify": bool,
}


def accepted_header(sets: list[dict[str, str]]) -> str:
    return "; ".join(",".join(f"{k}={v}" for k, v in s.items()) for s in sets)
