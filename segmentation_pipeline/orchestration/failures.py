"""The one line an analyst reads when a run fails: shared by the CLI and the rejected-file sensor."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg


def step_failure_reason(events: Iterable[dg.DagsterEvent], fallback: str | None = None) -> str:
    """The first failed step's one-line reason (a dg.Failure's description, else the user error's last line)."""
    for event in events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return data.user_failure_data.description
        error = data.error
        while error is not None and error.cause is not None:  # the user's exception, not Dagster's wrapper
            error = error.cause
        if error is not None:
            return f"{event.step_key}: {plain_error(error.cls_name, error.message)}"
    return fallback or "the run failed"


def plain_error(kind: str | None, message: str) -> str:
    """An unexpected error as a sentence: the message without the exception's class name (a KeyError's bare
    ``'gender'`` says which field was missing)."""
    text = message.strip().splitlines()[-1] if message.strip() else ""
    if kind and text.startswith(f"{kind}:"):
        text = text[len(kind) + 1 :].strip()
    if kind == "KeyError":
        return f"an internal step found no {text or 'value'} where it expected one (a bug: please report it)"
    return text or "the step failed without saying why (a bug: please report it)"
