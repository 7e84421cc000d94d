"""API keys: where they come from and how a presented key is checked.

Keys come from ``SEGMENTATION_API_KEYS`` (comma-separated) and/or the file named by ``SEGMENTATION_API_KEYS_FILE``
(one key per line or comma-separated; blank lines and ``#`` comments ignored), so a key can live in a secrets
mount rather than in the environment. A presented key is compared with every valid key in constant time
(``hmac.compare_digest``, no early exit), so neither the time taken nor which key matched leaks anything.

Keys have no names: where a key must be told apart from the others (the decision log), it is named by
:func:`key_id`, a short fingerprint of its SHA-256, never the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

KEYS_ENV = "SEGMENTATION_API_KEYS"
KEYS_FILE_ENV = "SEGMENTATION_API_KEYS_FILE"
API_KEY_HEADER = "X-API-Key"
MIN_KEY_LENGTH = 16  # shorter keys are guessable; `python -c "import secrets; print(secrets.token_urlsafe(32))"`


class ApiKeyConfigError(ValueError):
    """The configured keys cannot be used (unreadable file, key too short)."""


def _split(text: str) -> list[str]:
    keys = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        keys.extend(part.strip() for part in line.split(",") if part.strip())
    return keys


def load_api_keys(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every configured key (environment variable and key file together); empty when none is configured."""
    environ = os.environ if environ is None else environ
    keys = _split(environ.get(KEYS_ENV, ""))
    file_name = environ.get(KEYS_FILE_ENV, "").strip()
    if file_name:
        try:
            keys += _split(Path(file_name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise ApiKeyConfigError(f"cannot read the API key file {file_name} ({KEYS_FILE_ENV}): {error}") from None
    short = [key for key in keys if len(key) < MIN_KEY_LENGTH]
    if short:
        raise ApiKeyConfigError(
            f"{len(short)} API key(s) shorter than {MIN_KEY_LENGTH} characters; use long random keys"
        )
    return list(dict.fromkeys(keys))


def key_id(key: str) -> str:
    """The name of a key in records and logs: ``key-`` and the first 12 hex digits of its SHA-256 (48 bits: enough
    to tell a site's keys apart, useless to recover a key of 16 or more random characters)."""
    return "key-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


class ApiKeyVerifier:
    """Checks a presented key against the valid ones in constant time."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [(key.encode("utf-8"), key_id(key)) for key in keys]
        if not self._keys:
            raise ApiKeyConfigError(f"no API key configured: set {KEYS_ENV} or {KEYS_FILE_ENV}")

    def __call__(self, presented: str | None) -> bool:
        return self.identify(presented) is not None

    def identify(self, presented: str | None) -> str | None:
        """The :func:`key_id` of the valid key presented; None when it is not one of them."""
        if presented is None:
            return None
        # Header values arrive as latin-1-decoded text: any of them encodes to UTF-8 bytes, which compare_digest
        # takes whatever they contain (it refuses non-ASCII str).
        candidate = presented.encode("utf-8", "surrogateescape")
        found = None
        for key, name in self._keys:  # every key, always: no early exit
            if hmac.compare_digest(key, candidate):
                found = name
        return found
