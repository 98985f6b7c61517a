"""Connection hygiene of a real ``kernel serve`` on loopback, seen through raw sockets:
closed clients leave no CLOSE-WAIT, a connection cap answers 503, slow heads and bodies
are cut at their deadlines, and accept() failures are logged once per interval."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from kernel.testing import TEST_TOKEN, serve_process

HEALTH = b"GET /-/health HTTP/1.1\r\nHost: gateway\r\n\r\n"


def write_config(tmp_path: Path, kernel_extra: str = "") -> Path:
    path = tmp_path / "plugins.toml"
    path.write_text(
        f'[kernel]\nstate_dir = "state"\n{kernel_extra}[kernel.auth]\ntoken = "{TEST_TOKEN}"\n'
        '[plugins.echo]\nenabled = true\n[plugins.openresponses]\nenabled = true\n'
        '[agents.main]\nprovider = "e"\n[providers.e]\nkind = "echo"\n',
        encoding="utf-8",
    )
    return path


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def sockets_in_state(port: int, state: str) -> int:
    out = subprocess.run(["ss", "-tanH", "state", state, "sport", "=", f":{port}"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


def read_answer(sock: socket.socket, timeout: float = 10) -> bytes:
    """Read until the peer closes or a complete response (head + content-length body) is in."""
    sock.settimeout(timeout)
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                return data
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes ``sock`` within ``within`` seconds (EOF or reset)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_clients_that_close_leave_no_socket_in_close_wait(tmp_path):
    with serve_process(write_config(tmp_path)) as served:
        port = port_of(served.base)
        for _ in range(200):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(HEALTH)
                assert b" 200 " in read_answer(sock).split(b"\r\n", 1)[0]
        # Hypercorn alone keeps each of them in CLOSE-WAIT for the keep-alive timeout (75 s).
        deadline = time.monotonic() + 3
        while sockets_in_state(port, "close-wait") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sockets_in_state(port, "close-wait") == 0


def test_connections_past_the_cap_get_a_quick_503_and_one_log_line(tmp_path):
    config = write_config(tmp_path, "max_connections = 4\n")
    with serve_process(config) as served:
        port = port_of(served.base)
        # The start-up health check's connection must be gone first, or it takes a slot.
        deadline = time.monotonic() + 5
        while (sockets_in_state(port, "established") or sockets_in_state(port, "close-wait")) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        time.sleep(0.5)  # accepted and counted
        try:
            for _ in range(10):
                with socket.create_connection(("127.0.0.1", port)) as extra:
                    started = time.monotonic()
                    extra.sendall(HEALTH)
                    answer = read_answer(extra)
                    assert time.monotonic() - started < 3
                    head, _, body = answer.partition(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 503"), answer
                    assert b"retry-after: 1" in head.lower()
                    assert json.loads(body)["error"]["code"] == "too_many_connections"
        finally:
            held.pop().close()
        # One slot free again: the next client is served.
        deadline = time.monotonic() + 5
        while True:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(HEALTH)
                status = read_answer(sock).split(b"\r\n", 1)[0]
            if b" 200 " in status or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert b" 200 " in status
        for sock in held:
            sock.close()
        warnings = [line for line in served.stderr.read_text().splitlines() if "max_connections" in line]
        assert len(warnings) == 1, warnings


def test_a_request_head_that_drips_is_cut_at_the_header_timeout(tmp_path):
    config = write_config(tmp_path, "header_timeout_seconds = 1.0\n")
    with serve_process(config) as served:
        port = port_of(served.base)
        # A new connection that never finishes its head.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /-/health HTTP/1.1\r\nHost: gateway\r\n")
            started = time.monotonic()
            cut = False
            while time.monotonic() - started < 6 and not cut:
                try:
                    sock.sendall(b"X-Drip: a\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    cut = True
                    break
                cut = closed_by_server(sock, 0.3)
            assert cut
            assert time.monotonic() - started < 4
        # A new connection that sends nothing at all is closed too.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            assert closed_by_server(sock, 4)
        # A kept-alive connection may idle longer than the header timeout between requests
        # (the keep-alive timeout rules there), and is served when its next head is whole.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(HEALTH)
            assert b" 200 " in read_answer(sock).split(b"\r\n", 1)[0]
            assert not closed_by_server(sock, 2.0)
            sock.sendall(HEALTH)
            assert b" 200 " in read_answer(sock).split(b"\r\n", 1)[0]
            # ... but its next head, once begun, has the header timeout to complete.
            sock.sendall(b"GET /-/health HTTP/1.1\r\n")
            assert closed_by_server(sock, 4)
        assert "header_timeout_seconds" in served.stderr.read_text()


def test_a_body_that_drips_is_a_408_at_the_body_timeout(tmp_path):
    config = write_config(tmp_path, "body_timeout_seconds = 1.0\n")
    with serve_process(config) as served:
        port = port_of(served.base)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: gateway\r\n"
                         b"Authorization: Bearer " + TEST_TOKEN.encode() + b"\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":")
            started = time.monotonic()
            sock.settimeout(0.2)
            answer = b""
            while time.monotonic() - started < 6 and b"\r\n\r\n" not in answer:
                try:
                    sock.sendall(b" ")
                    answer += sock.recv(65536)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
            answer += read_answer(sock, 5)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer
            assert b"connection: close" in head.lower()
            error = json.loads(body)["error"]
            assert error["code"] == "request_timeout"
            assert "body_timeout_seconds" in error["message"]
            assert time.monotonic() - started < 4


ACCEPT_EXHAUSTION = textwrap.dedent("""
    import asyncio, logging, resource, socket, sys
    from kernel import serve
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    async def main():
        asyncio.get_running_loop().set_exception_handler(serve._loop_exception_handler)
        held = []
        async def keep(reader, writer):
            held.append(writer)
            await asyncio.sleep(3600)
        server = await asyncio.start_server(keep, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.sleep(4.5)  # asyncio retries accept() once a second meanwhile
        print("done", len(held), flush=True)

    asyncio.run(main())
""")


def test_accept_failures_for_lack_of_descriptors_are_logged_once_per_interval():
    child = subprocess.Popen([sys.executable, "-c", ACCEPT_EXHAUSTION], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    clients = []
    try:
        port = int(child.stdout.readline())
        # More connections than the child has descriptors: accept() fails with EMFILE.
        for _ in range(100):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        out, err = child.communicate(timeout=30)
    finally:
        for sock in clients:
            sock.close()
        child.kill()
    assert out.split()[0] == "done" and int(out.split()[1]) < 64
    lines = [line for line in err.splitlines() if "cannot accept connections" in line]
    assert len(lines) == 1, err
    assert "Too many open files" in lines[0]
    assert "Traceback" not in err


def test_an_idle_kept_alive_connection_is_closed_at_the_keep_alive_timeout(tmp_path):
    config = write_config(tmp_path, "keep_alive_timeout_seconds = 1.0\n")
    with serve_process(config) as served, socket.create_connection(("127.0.0.1", port_of(served.base))) as sock:
        for _ in range(3):  # each request starts a new idle period
            sock.sendall(HEALTH)
            assert b" 200 " in read_answer(sock).split(b"\r\n", 1)[0]
            time.sleep(0.5)
        started = time.monotonic()
        assert closed_by_server(sock, 4)
        assert 0.3 < time.monotonic() - started < 2.5


def test_a_stopping_server_closes_its_idle_connections_at_once(tmp_path):
    """Idle keep-alive connections do not hold a shutdown for its grace period."""
    config = write_config(tmp_path, "shutdown_grace_seconds = 30\nkeep_alive_timeout_seconds = 60\n")
    with serve_process(config) as served:
        port = port_of(served.base)
        idle = []
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(HEALTH)
            assert b" 200 " in read_answer(sock).split(b"\r\n", 1)[0]
            idle.append(sock)
        fresh = socket.create_connection(("127.0.0.1", port))  # connected, no request yet
        time.sleep(0.2)
        started = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(15) == 0
        assert time.monotonic() - started < 5
        for sock in [*idle, fresh]:
            assert closed_by_server(sock, 2)
            sock.close()
