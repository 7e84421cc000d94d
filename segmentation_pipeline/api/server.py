"""``segmentation serve``: the scoring API on uvicorn (one worker; uvloop and httptools when installed).

What a client can make it read is bounded (``limits``): request heads by size, field count and time (431 / 408),
bodies by size (413) and time (408); idle keep-alive connections close after uvicorn's 5 s."""

from __future__ import annotations

import gc
import importlib.util
import logging
import sys
from pathlib import Path

from threadpoolctl import threadpool_limits

from segmentation_pipeline.api import limits
from segmentation_pipeline.api.security import KEYS_ENV, KEYS_FILE_ENV, load_api_keys


class ServeError(RuntimeError):
    """The service cannot start (no key, no warehouse, no model): one line for the operator."""


def serve(
    *,
    warehouse_path: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    insecure_no_auth: bool = False,
    check_interval: float = 2.0,
    access_log: bool = False,
    header_timeout: float | None = None,
    body_timeout: float | None = None,
    decisions_dir: Path | None = None,
    decisions_mode: str | None = None,
    decisions_on_error: str | None = None,
) -> None:
    """Start the API and block until it is stopped (Ctrl-C / SIGTERM: the decision log is flushed first).

    ``header_timeout`` / ``body_timeout``: seconds a client has to send a request's head / body; by default
    ``$SEGMENTATION_API_HEADER_TIMEOUT`` / ``$SEGMENTATION_API_BODY_TIMEOUT``, else 10 s (see ``limits``).
    ``decisions_*``: the decision log's folder, mode (full, hash-only, off) and fail-open / fail-closed; by default
    from ``$SEGMENTATION_DECISIONS_*`` (see ``warehouse.decisions``)."""
    import uvicorn

    from segmentation_pipeline.api.app import create_app
    from segmentation_pipeline.api.decision_log import DecisionLog
    from segmentation_pipeline.api.model_cache import ModelCache
    from segmentation_pipeline.stages.model import ModelContractError
    from segmentation_pipeline.warehouse import decisions

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keys = load_api_keys()
    if insecure_no_auth:
        logging.getLogger("segmentation.api").warning("--insecure-no-auth: the API accepts requests WITHOUT a key")
    elif not keys:
        raise ServeError(
            f"no API key configured: set {KEYS_ENV} (comma-separated) or {KEYS_FILE_ENV} (a file of keys), "
            "or start with --insecure-no-auth for a local test"
        )
    try:
        if header_timeout is None:
            header_timeout = limits.seconds_from_env(limits.HEADER_TIMEOUT_ENV, limits.HEADER_TIMEOUT_SECONDS)
        if body_timeout is None:
            body_timeout = limits.seconds_from_env(limits.BODY_TIMEOUT_ENV, limits.BODY_TIMEOUT_SECONDS)
        log_settings = decisions.settings_from_environment(
            warehouse_path, folder=decisions_dir, mode=decisions_mode, on_error=decisions_on_error
        )
    except ValueError as error:
        raise ServeError(str(error)) from None
    if not log_settings.enabled:
        logging.getLogger("segmentation.api").warning("decision log OFF: the ratings given are NOT recorded")
    if not warehouse_path.exists():
        raise ServeError(f"no warehouse at {warehouse_path}: run the pipeline first (segmentation run)")
    try:
        cache = ModelCache(warehouse_path, check_interval=check_interval)
        decision_log = DecisionLog(log_settings, cache.policy_versions.get) if log_settings.enabled else None
        app = create_app(warehouse_path, None if insecure_no_auth else keys, check_interval=check_interval,
                         body_timeout=body_timeout, cache=cache, decisions=decision_log)  # fmt: skip
    except (LookupError, ModelContractError) as error:  # nothing this code can serve: one line, exit 1
        raise ServeError(str(error)) from None
    # Everything loaded so far (libraries, the model) lives as long as the process: move it out of the cyclic
    # GC's reach, and collect less often. A 10,000-customer batch allocates ~100k short-lived containers and
    # full collections over the whole heap were a third of its time.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    # Single-threaded BLAS: the API's matrix products are small (10,000 x ~60 at most), and OpenBLAS's worker
    # threads spin after every call, which cost a 10,000-customer batch ~30 % more CPU than the products
    # themselves (measured: 0.26 vs 0.19 CPU-seconds a batch on one core).
    threadpool_limits(1)
    # Request heads: uvicorn's httptools protocol bounds neither their size, nor their fields, nor their time;
    # limits.limited_httptools_protocol adds all three (431 / 408). h11, the fallback, has a size limit (answered
    # 400) and nothing else.
    if importlib.util.find_spec("httptools"):
        http: type | str = limits.limited_httptools_protocol(header_timeout=header_timeout)
    else:  # pragma: no cover - httptools is a dependency
        http = "h11"
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=1,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=http,
        h11_max_incomplete_event_size=limits.MAX_HEADER_BYTES,
        access_log=access_log,  # off by default: it costs throughput (and paths carry customer ids)
        log_level="info",
        timeout_graceful_shutdown=5,
    )
