"""Path safety: nothing outside the root is ever served or written, and no path gives a 500.

A seeded fuzzer combines nasty segments (dot segments in every encoding, NUL, encoded
slashes and backslashes, overlong UTF-8, unicode look-alike dots, symlinks to /etc and
to a secret next to the root, loops, FIFOs) and checks every answer: never 5xx, never
a byte of the secret, never a file written outside the root.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from kernel.testing import AUTH_HEADERS
from plugins.canvas_host import fs

MOUNT = "/__kernel__/canvas"
SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT"
ALLOWED = {200, 201, 204, 303, 304, 308, 400, 401, 404, 405, 409, 413}

NASTY = [
    "..", ".", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%2e", "%252e%252e", "%25", "%", "%2", "%zz", "%u002e",
    "%00", "a%00.html", "%2f", "%2F", "..%2f..", "%2f..%2f", "%5c", "..%5c..", "\\", "..\\..", "",
    "%c0%ae%c0%ae", "%c0%ae", "%e0%80%ae", "%c0%af", "%c0%80", "%ef%bc%8e%ef%bc%8e", "%e2%80%a4%e2%80%a4",
    "%ed%a0%80", "%ff", "%f4%90%80%80", "etc", "passwd", "secret.txt", "index.html", "sub", "escape",
    "secret", "etc_link", "loop", "inner", "hidden_alias", ".hidden", "%2ehidden", "fifo", "~", "C:",
    "a;b", "%3f", "%23", "%20", "con", "a" * 300, "%e2%80%ae", "%0d%0a", "files", "ws",
]
PREFIXES = [MOUNT, MOUNT, MOUNT, "/__kernel__/%63anvas", f"{MOUNT}/files", "/__kernel__", ""]


def build_tree(root: Path, outside: Path) -> None:
    """A root full of traps, and a secret right next to it."""
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "index.html").write_bytes(SECRET)
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text("<body>home</body>")
    (root / "sub").mkdir()
    (root / "sub" / "page.html").write_text("<body>inside</body>")
    (root / ".hidden").write_text("hidden")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "secret").symlink_to(outside / "secret.txt")
    (root / "etc_link").symlink_to("/etc", target_is_directory=True)
    (root / "relative_escape").symlink_to("../../outside/secret.txt")
    (root / "loop").symlink_to("loop")
    (root / "inner").symlink_to("sub", target_is_directory=True)
    (root / "hidden_alias").symlink_to(".hidden")
    os.mkfifo(root / "fifo")


def random_target(rng: random.Random) -> bytes:
    prefix = rng.choice(PREFIXES)
    segments = [rng.choice(NASTY) for _ in range(rng.randint(0, 6))]
    sep = rng.choice(["/", "/", "/", "//"])
    path = prefix + "/" + sep.join(segments)
    if rng.random() < 0.2:
        path += "/"
    if rng.random() < 0.1:
        path += "?token=" + rng.choice(["wrong", "%00", ""])
    return path.encode("ascii", "replace")


def assert_written_inside(root: Path, rel: str) -> None:
    real = os.path.realpath(root / rel)
    assert real.startswith(os.path.realpath(root) + os.sep), rel
    if os.path.isfile(real):  # a later DELETE in the fuzz run may have removed it
        assert Path(real).read_bytes() == b"fuzz-write"


def outside_snapshot(outside: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()}


@pytest.fixture
def trap_root(tmp_path: Path) -> Path:
    build_tree(tmp_path / "state" / "canvas", tmp_path / "outside")
    return tmp_path / "state" / "canvas"


@pytest.mark.parametrize("target", [
    "escape/secret.txt", "escape/", "escape/index.html", "secret", "etc_link/passwd", "etc_link/hostname",
    "relative_escape", "loop", "loop/x", "hidden_alias", ".hidden", "fifo",
])
async def test_symlinks_out_of_the_root_and_special_files_are_404(
    canvas_app: Callable[..., Quart], trap_root: Path, target: str
) -> None:
    async with canvas_app().test_app() as ta:
        resp = await ta.test_client().get(f"{MOUNT}/{target}", headers=AUTH_HEADERS)
        body = await resp.get_data()
    assert resp.status_code == 404, (target, body)
    assert SECRET not in body


async def test_symlinks_inside_the_root_are_followed(canvas_app: Callable[..., Quart], trap_root: Path) -> None:
    async with canvas_app().test_app() as ta:
        resp = await ta.test_client().get(f"{MOUNT}/inner/page.html", headers=AUTH_HEADERS)
        assert resp.status_code == 200
        assert (await resp.get_data()).startswith(b"<body>inside")


async def test_root_reached_through_a_symlink_still_works(
    canvas_app: Callable[..., Quart], tmp_path: Path
) -> None:
    real = tmp_path / "real_root"
    real.mkdir()
    (real / "a.txt").write_text("via link")
    (tmp_path / "linked_root").symlink_to(real, target_is_directory=True)
    async with canvas_app(root=str(tmp_path / "linked_root")).test_app() as ta:
        resp = await ta.test_client().get(f"{MOUNT}/a.txt", headers=AUTH_HEADERS)
        assert await resp.get_data() == b"via link"


async def test_fuzzed_paths_in_process(
    canvas_app: Callable[..., Quart], trap_root: Path, tmp_path: Path, raw_open: Callable[..., Any]
) -> None:
    outside = tmp_path / "outside"
    before = outside_snapshot(outside)
    rng = random.Random(20240607)
    seen: dict[int, int] = {}
    written: list[str] = []
    async with canvas_app(live_reload=False).test_app() as ta:
        client = ta.test_client()
        for _ in range(1200):
            target = random_target(rng)
            method = rng.choice(["GET", "GET", "HEAD", "PUT", "DELETE"])
            headers = dict(AUTH_HEADERS) if rng.random() < 0.9 else {}
            data = b"fuzz-write" if method == "PUT" else None
            resp = await raw_open(client, method, target, headers, data)
            body = await resp.get_data()
            seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
            assert resp.status_code in ALLOWED, (method, target, resp.status_code, body[:300])
            if method in ("GET", "HEAD"):
                assert SECRET not in body, (method, target)
            if method == "PUT" and resp.status_code in (200, 201):
                written.append((await resp.get_json())["path"])
    assert outside_snapshot(outside) == before
    assert not [n for n in os.listdir("/etc") if n.startswith(".canvas-upload-")]
    for rel in written:  # every reported write landed under the root, holding what was sent
        assert_written_inside(trap_root, rel)
    print("fuzz statuses:", seen)
    # The generator really reached every kind of answer we claim to handle.
    for status in (200, 400, 404):
        assert seen.get(status, 0) > 10, seen


def test_fuzzed_paths_over_the_wire(
    canvas_app: Callable[..., Quart], trap_root: Path, live_server: Callable, raw_http: Callable[..., Any]
) -> None:
    rng = random.Random(7)
    seen: set[int] = set()
    with live_server(canvas_app(live_reload=False)) as base:
        for _ in range(120):
            target = random_target(rng)
            resp = raw_http(base, rng.choice(["GET", "HEAD"]), target, AUTH_HEADERS)
            seen.add(resp.status)
            assert resp.status in ALLOWED, (target, resp.status, resp.body[:300])
            assert SECRET not in resp.body
        # A few classics, sent byte for byte.
        for target in (b"/__kernel__/canvas/../../outside/secret.txt", b"/__kernel__/canvas/%2e%2e/%2e%2e/etc/passwd",
                       b"/__kernel__/canvas/escape/secret.txt", b"/__kernel__/canvas/..%2f..%2foutside%2fsecret.txt",
                       b"/__kernel__/canvas/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", b"/__kernel__/canvas/%00",
                       b"/__kernel__/canvas/sub%2f..%2f..%2f..%2fetc%2fpasswd"):
            resp = raw_http(base, "GET", target, AUTH_HEADERS)
            assert resp.status in (400, 404), (target, resp.status)
            assert SECRET not in resp.body and b"root:" not in resp.body
    assert {400, 404} <= seen


async def test_writes_never_follow_symlinks(canvas_app: Callable[..., Quart], trap_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    before = outside_snapshot(outside)
    async with canvas_app().test_app() as ta:
        client = ta.test_client()
        for target in ("escape/new.html", "escape/secret.txt", "etc_link/canvas-test", "loop/x", "inner/new.html"):
            resp = await client.put(f"{MOUNT}/files/{target}", data=b"pwned", headers=AUTH_HEADERS)
            assert resp.status_code == 409, (target, await resp.get_data())
        # Replacing a symlink replaces the link itself, never its target.
        resp = await client.put(f"{MOUNT}/files/secret", data=b"replaced", headers=AUTH_HEADERS)
        assert resp.status_code == 200
        assert not (trap_root / "secret").is_symlink()
        assert (trap_root / "secret").read_bytes() == b"replaced"
        # Deleting a symlink removes the link only.
        assert (await client.delete(f"{MOUNT}/files/escape", headers=AUTH_HEADERS)).status_code == 204
        assert (await client.delete(f"{MOUNT}/files/escape/secret.txt", headers=AUTH_HEADERS)).status_code == 404
    assert outside_snapshot(outside) == before
    assert not (trap_root / "escape").exists()
    assert "canvas-test" not in os.listdir("/etc")


# --------------------------------------------------------------------------- each layer on its own


def test_resolution_check_refuses_links_out_of_the_root(trap_root: Path) -> None:
    real_root = trap_root.resolve()
    for segments in (("escape", "secret.txt"), ("secret",), ("etc_link", "passwd"), ("relative_escape",)):
        with pytest.raises(fs.NotServable):
            fs._inside(real_root, segments)
    assert fs._inside(real_root, ("inner", "page.html")) == ("sub", "page.html")


@pytest.mark.parametrize("swap", ["directory", "file"])
def test_open_refuses_a_symlink_swapped_in_after_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.txt").write_text("inside")
    outside.mkdir()
    (outside / "f.txt").write_bytes(SECRET)
    checked = fs._inside

    def check_then_swap(root_: Path, segments: tuple[str, ...]) -> tuple[str, ...]:
        parts = checked(root_, segments)  # passes: nothing is a symlink yet
        if swap == "directory":
            shutil.rmtree(root / "d")
            (root / "d").symlink_to(outside, target_is_directory=True)
        else:
            (root / "d" / "f.txt").unlink()
            (root / "d" / "f.txt").symlink_to(outside / "f.txt")
        return parts

    monkeypatch.setattr(fs, "_inside", check_then_swap)
    with pytest.raises(fs.NotServable):
        fs.open_for_read(root.resolve(), ("d", "f.txt"))
