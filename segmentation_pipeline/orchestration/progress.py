"""What a person running `segmentation run` sees on the terminal: one short line per finished step (from step
hooks) and the assets' warnings (from a logger limited to WARNING). Dagster's DEBUG event stream is for the UI's
event log; a failure reaches the terminal as the step's FAILED line and the CLI's one error line."""

from __future__ import annotations

import logging
import sys

import dagster as dg


def _line(step: str, text: str) -> None:
    print(f"  {step:<22} {text}", file=sys.stderr, flush=True)


def _step_label(step_key: str) -> str:
    """A step as the assets it writes ("raw_workbook + cleaned_customers"); a check step by its own name."""
    from segmentation_pipeline.orchestration.assets import SEGMENTATION_ASSETS

    for assets in SEGMENTATION_ASSETS:
        if assets.op.name == step_key:
            return " + ".join(sorted(key.to_user_string() for key in assets.keys))
    return step_key


@dg.success_hook(name="terminal_step_done")
def step_done(context: dg.HookContext) -> None:
    _line(_step_label(context.step_key), "done")


@dg.failure_hook(name="terminal_step_failed")
def step_failed(context: dg.HookContext) -> None:
    _line(_step_label(context.step_key), "FAILED")


PROGRESS_HOOKS = {step_done, step_failed}


@dg.logger(description="The run's warnings, one short line each, for a person watching a terminal.")
def terminal_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    # Dagster hands a logger "<job> - <run id> - <step> - <message>" (a pid and the event type follow the run id
    # for its own events): keep the step and the message.
    run_prefix = f"{init_context.run_id} - "

    class _Warnings(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno != logging.WARNING:  # ERROR: failures, reported by step_failed and the CLI
                return
            message = record.getMessage()
            if "Not executing" in message:  # a step skipped after a failure: the failure says it all
                return
            _, found, rest = message.partition(run_prefix)
            parts = rest.split(" - ", 1) if found else []
            if parts and parts[0].isdigit():  # a pid: one of Dagster's own events
                parts = parts[1].split(" - ", 1) if len(parts) > 1 else []
            if len(parts) == 2:
                _line(*parts)
            else:
                print(f"  {message}", file=sys.stderr, flush=True)

    log = logging.getLogger("segmentation.terminal")
    log.setLevel(logging.WARNING)
    log.handlers = [_Warnings()]
    log.propagate = False
    return log
