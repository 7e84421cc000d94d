"""What one client can make the real server read, over raw sockets on 127.0.0.1 (``api/limits.py``).

Request heads are bounded by size and field count (431 at once, nothing buffered first) and by time (408); bodies
by time (408, connection closed); a client that disconnects mid-body is one log line, never a traceback. One server
for the module, with both timeouts shortened to TIMEOUT seconds."""

from __future__ import annotations

import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from segmentation_pipeline.api.limits import (
    BODY_TIMEOUT_ENV,
    HEADER_TIMEOUT_ENV,
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
    seconds_from_env,
)
from segmentation_pipeline_tests.api_fixtures import API_KEY, server_log, start_server, stop_server

pytestmark = pytest.mark.slow  # a real server on 127.0.0.1

TIMEOUT = 1.0  # the server's header and body timeouts in this module
RECORD = b'{"CustomerID": 1, "City": "Kathmandu"}'
Served = tuple[subprocess.Popen, int]  # the server process and its port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, trained_warehouse) -> Iterator[Served]:  # noqa: ANN001
    directory = tmp_path_factory.mktemp("api_limits")  # a copy: the server's log is written next to it
    warehouse = directory / "warehouse.duckdb"
    shutil.copy(trained_warehouse.path, warehouse)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HEADER_TIMEOUT_ENV, str(TIMEOUT))
        patch.setenv(BODY_TIMEOUT_ENV, str(TIMEOUT))
        process, base = start_server(warehouse)
    try:
        yield process, int(base.rsplit(":", 1)[1])
    finally:
        log = stop_server(process)
        assert "Traceback" not in log, log


# --- helpers -----------------------------------------------------------------------------------------------------


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _head(method: str, path: str, fields: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{name}: {value}" for name, value in fields)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _score_head(length: int, *extra: tuple[str, str]) -> bytes:
    fields = [("X-API-Key", API_KEY), ("Content-Type", "application/json"), ("Content-Length", str(length))]
    return _head("POST", "/v1/score", [*fields, *extra])


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names) and body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65_536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65_536)
        assert chunk, "connection closed in the middle of the response body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (EOF or reset) within 3 s."""
    sock.settimeout(3)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _log_since(process: subprocess.Popen, mark: int) -> list[str]:
    return server_log(process)[mark:].splitlines()


def _score_ok(port: int) -> float:
    """A normal scoring request on a fresh connection; returns its latency."""
    started = time.monotonic()
    response = httpx.post(f"http://127.0.0.1:{port}/v1/score", content=RECORD, timeout=10,
                          headers={"X-API-Key": API_KEY, "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["customer_id"] == "1"
    return time.monotonic() - started


# --- tests -------------------------------------------------------------------------------------------------------


def _padded_score_head(size: int, fields: int) -> bytes:
    """A scoring request's head of exactly ``size`` bytes (with its blank line) and ``fields`` header fields."""
    fixed = [("X-API-Key", API_KEY), ("Content-Type", "application/json"), ("Content-Length", str(len(RECORD)))]
    padding = [(f"X-Pad-{i:03d}", "") for i in range(fields - len(fixed) - 1)]  # Host is one more
    short = size - len(_head("POST", "/v1/score", [*fixed, *padding]))
    padding[-1] = (padding[-1][0], "v" * short)
    head = _head("POST", "/v1/score", [*fixed, *padding])
    assert len(head) == size and head.count(b"\r\n") == fields + 2
    return head


def test_a_normal_request_still_works_up_to_the_limits(served: Served) -> None:
    process, port = served
    mark = len(server_log(process))
    assert _score_ok(port) < 2
    # A head of exactly MAX_HEADER_BYTES with exactly MAX_HEADER_FIELDS fields, twice on a kept-alive connection.
    with _connect(port) as sock:
        for _ in range(2):
            sock.sendall(_padded_score_head(MAX_HEADER_BYTES, MAX_HEADER_FIELDS) + RECORD)
            status, headers, body = _response(sock)
            assert status == 200, body
            assert headers.get("connection") != "close"
    assert _log_since(process, mark) == []


def test_an_oversized_header_is_refused_at_once_and_other_clients_are_served(served: Served) -> None:
    """The measured attack: one unauthenticated 64 MiB header. 431 in well under a second, nothing stalls."""
    process, port = served
    mark = len(server_log(process))
    sent: list[BaseException] = []

    def send(sock: socket.socket) -> None:
        try:
            sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ")
            sock.sendall(memoryview(b"a" * (64 * 1024 * 1024)))
        except OSError as error:  # the server may close before all of it is sent: fine
            sent.append(error)

    with _connect(port) as sock:
        started = time.monotonic()
        sender = threading.Thread(target=send, args=(sock,), daemon=True)
        sender.start()
        latencies = [_score_ok(port) for _ in range(3)]  # while the header is being sent
        status, headers, body = _response(sock)
        elapsed = time.monotonic() - started
        assert status == 431, body
        assert headers["connection"] == "close"
        assert body == f'{{"detail":"request header fields over {MAX_HEADER_BYTES:,} bytes"}}'.encode()
        assert elapsed < 1.0, f"431 after {elapsed:.2f} s"
        assert max(latencies) < 0.5, latencies
        assert _closed(sock)
        sender.join(5)
    assert _score_ok(port) < 0.5
    lines = _log_since(process, mark)
    assert len(lines) == 1 and f"request header fields over {MAX_HEADER_BYTES:,} bytes, answered 431" in lines[0], lines


def test_a_head_one_byte_over_the_size_limit_is_refused(served: Served) -> None:
    _, port = served
    head = _padded_score_head(MAX_HEADER_BYTES + 1, MAX_HEADER_FIELDS)
    with _connect(port) as sock:
        sock.sendall(head + RECORD)
        status, _, body = _response(sock)
        assert status == 431, body
        assert _closed(sock)
    with _connect(port) as sock:  # in small pieces
        for start in range(0, len(head), 4096):
            sock.sendall(head[start : start + 4096])
            time.sleep(0.01)
        assert _response(sock)[0] == 431
    with _connect(port) as sock:  # the request target counts too
        sock.sendall(_head("GET", "/healthz?" + "q" * MAX_HEADER_BYTES, []))
        assert _response(sock)[0] == 431
    assert _score_ok(port) < 2


def test_pipelined_requests_are_answered_before_a_refused_head(served: Served) -> None:
    _, port = served
    with _connect(port) as sock:
        sock.sendall(_head("GET", "/healthz", []) + _head("GET", "/healthz", [("X-Filler", "c" * MAX_HEADER_BYTES)]))
        received = b""
        while chunk := sock.recv(65_536):  # the server closes after its answers
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n"), received[:200]
    assert received.count(b"HTTP/1.1 ") == 2 and b"\r\n\r\nHTTP/1.1 431 " not in received  # body first
    assert b'}HTTP/1.1 431 Request Header Fields Too Large\r\n' in received


def test_too_many_header_fields_are_refused(served: Served) -> None:
    process, port = served
    mark = len(server_log(process))
    fields = [(f"X-Field-{i}", "1") for i in range(MAX_HEADER_FIELDS)]  # with Host: one too many
    with _connect(port) as sock:
        started = time.monotonic()
        sock.sendall(_head("GET", "/healthz", fields))
        status, headers, body = _response(sock)
        assert status == 431, body
        assert time.monotonic() - started < 1.0
        assert headers["connection"] == "close"
        assert body == f'{{"detail":"more than {MAX_HEADER_FIELDS} request header fields"}}'.encode()
        assert _closed(sock)
    lines = _log_since(process, mark)
    assert len(lines) == 1 and f"more than {MAX_HEADER_FIELDS} request header fields, answered 431" in lines[0]


def test_a_stalled_body_is_answered_408_after_the_timeout(served: Served) -> None:
    process, port = served
    mark = len(server_log(process))
    with _connect(port) as sock:
        sock.sendall(_score_head(40_000) + b"x" * 1_000)
        started = time.monotonic()
        status, headers, body = _response(sock)
        waited = time.monotonic() - started
        assert status == 408, body
        assert TIMEOUT * 0.9 <= waited < TIMEOUT + 1.5, waited
        assert headers["connection"] == "close"
        assert body == f'{{"detail":"request body not complete within {TIMEOUT:g} s"}}'.encode()
        assert _closed(sock)
    lines = _log_since(process, mark)
    assert len(lines) == 1, lines
    assert f"request body not complete within {TIMEOUT:g} s, answered 408 (POST /v1/score, 1,000 of 40,000 bytes)" \
        in lines[0]  # fmt: skip


def test_a_dribbled_body_is_cut_off_too(served: Served) -> None:
    """A byte every 0.2 s would keep an idle timeout happy for ever; the body timeout is a deadline."""
    _, port = served
    with _connect(port) as sock:
        sock.sendall(_score_head(len(RECORD)))
        started = time.monotonic()
        for byte in RECORD[:-1]:
            if select.select([sock], [], [], 0.2)[0]:  # the server has answered
                break
            sock.sendall(bytes([byte]))
        status, headers, _ = _response(sock)
        assert status == 408 and headers["connection"] == "close"
        assert time.monotonic() - started < TIMEOUT + 1.0


def test_a_slow_head_is_answered_408_and_an_idle_connection_closed_quietly(served: Served) -> None:
    process, port = served
    mark = len(server_log(process))
    with _connect(port) as slow, _connect(port) as idle:
        slow.sendall(b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: ")
        started = time.monotonic()
        status, headers, body = _response(slow)
        assert status == 408, body
        assert time.monotonic() - started < TIMEOUT + 1.5
        assert body == f'{{"detail":"request head not complete within {TIMEOUT:g} s"}}'.encode()
        assert _closed(slow)
        assert _closed(idle)  # sent nothing at all: closed after the same timeout, without an answer
    lines = _log_since(process, mark)
    assert len(lines) == 1 and f"request head not complete within {TIMEOUT:g} s, answered 408" in lines[0], lines


def test_a_disconnect_mid_body_is_one_log_line_and_no_traceback(served: Served) -> None:
    process, port = served
    mark = len(server_log(process))
    with _connect(port) as sock:
        sock.sendall(_score_head(40_000) + b"x" * 12_345)
        time.sleep(0.3)  # the server has read those bytes
    expected = "client disconnected before the body was complete (POST /v1/score, 12,345 of 40,000 bytes)"
    _wait_for(lambda: expected in server_log(process)[mark:])
    time.sleep(0.3)  # anything else the server would write about it
    lines = _log_since(process, mark)
    assert len(lines) == 1 and lines[0].endswith(expected), lines
    assert " INFO " in lines[0]
    assert "Traceback" not in server_log(process)
    assert _score_ok(port) < 2


def test_timeouts_from_the_environment() -> None:
    assert seconds_from_env("T", 10.0, {}) == seconds_from_env("T", 10.0, {"T": " "}) == 10.0
    assert seconds_from_env("T", 10.0, {"T": "2.5"}) == 2.5
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(ValueError, match="T="):
            seconds_from_env("T", 10.0, {"T": bad})
