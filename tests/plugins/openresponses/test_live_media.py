"""Input images and files on a real server: what the model sees, and 400s that name the field."""

from __future__ import annotations

import base64
import http.server
import struct
import threading
import zlib
from collections.abc import Iterator

import pytest


def tiny_png() -> bytes:
    """A valid 1x1 PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF whose page shows ``text`` (extractable by pypdf)."""
    content = f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


PNG_URL = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()


def _user(*parts: dict) -> list[dict]:
    return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "look:"}, *parts]}]


def _text(body: dict) -> str:
    return body["output"][0]["content"][0]["text"]


def test_image_reaches_a_vision_model_and_a_placeholder_reaches_the_others(server):
    seen = server.create({"model": "vision", "input": _user({"type": "input_image", "image_url": PNG_URL,
                                                             "detail": "low"})})
    assert _text(seen) == "user: look: [image image/png]"
    part = server.runs_of("vision")[-1].turn.input[0].parts[1]
    assert (part.media_type, part.detail) == ("image/png", "low") and part.url.startswith("data:image/png;base64,")
    blind = server.create({"model": "main", "input": _user({"type": "input_image", "image_url": PNG_URL})})
    assert "[image omitted: this model cannot see images (image/png)]" in _text(blind)


def test_streamed_image_request(server):
    stream = server.stream({"model": "vision", "input": _user({"type": "input_image", "image_url": PNG_URL})})
    assert stream.text == "user: look: [image image/png]"


def test_text_and_pdf_files_are_read(server):
    notes = base64.b64encode(b"buy milk").decode()
    body = server.create({"model": "main", "input": _user(
        {"type": "input_file", "filename": "notes.txt", "file_data": notes},
        {"type": "input_file", "filename": "report.pdf",
         "file_data": "data:application/pdf;base64," + base64.b64encode(tiny_pdf("Quarterly Growth")).decode()},
    )})
    text = _text(body)
    assert '<file name="notes.txt" type="text/plain">\nbuy milk\n</file>' in text
    assert '<file name="report.pdf" type="application/pdf">\nQuarterly Growth\n</file>' in text


@pytest.fixture
def file_host() -> Iterator[str]:
    """A loopback HTTP server with a markdown file and a PNG (media.allowed_hosts lists 127.0.0.1)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            image = self.path == "/dot.png"
            body = tiny_png() if image else b"# Plan\nship it"
            self.send_response(200 if self.path in ("/plan.md", "/dot.png") else 404)
            self.send_header("Content-Type", "image/png" if image else "text/markdown")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_file_url_is_fetched(server, file_host):
    body = server.create({"model": "main", "input": _user({"type": "input_file", "file_url": f"{file_host}/plan.md"})})
    assert '<file name="plan.md" type="text/markdown">\n# Plan\nship it\n</file>' in _text(body)
    missing = server.post({"model": "main", "input": _user({"type": "input_file", "file_url": f"{file_host}/x.md"})})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input[0].content[1].file_url"


def test_image_url_is_fetched(server, file_host):
    image = {"type": "input_image", "image_url": f"{file_host}/dot.png"}
    body = server.create({"model": "vision", "input": _user(image)})
    assert _text(body) == "user: look: [image image/png]"
    part = server.runs_of("vision")[-1].turn.input[0].parts[1]
    assert part.media_type == "image/png" and part.detail == "auto"
    missing = server.post({"model": "vision", "input": _user({"type": "input_image",
                                                              "image_url": f"{file_host}/gone.png"})})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input[0].content[1].image_url"


def test_tool_outputs_may_carry_images_and_text(server):
    body = server.create({"model": "vision", "input": [
        {"role": "user", "content": "draw"},
        {"type": "function_call", "call_id": "c1", "name": "render", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_text", "text": "rendered"}, {"type": "input_image", "image_url": PNG_URL}]},
    ]})
    assert _text(body).endswith("tool_result [c1]: rendered\n[image 1 returned by this tool follows]\n"
                                "user: Images returned by tool call c1: [image image/png]")


def test_media_errors_name_the_exact_field(server):
    bad_b64 = "data:image/png;base64,!!!not-base64"
    cases = [
        (_user({"type": "input_image", "image_url": bad_b64}), "input[0].content[1].image_url"),
        (_user({"type": "input_image"}), "input[0].content[1].image_url"),
        (_user({"type": "input_image", "file_id": "file_1"}), "input[0].content[1].file_id"),
        (_user({"type": "input_image", "image_url": "ftp://example.com/x.png"}), "input[0].content[1].image_url"),
        (_user({"type": "input_image", "image_url": "http://10.0.0.1/x.png"}), "input[0].content[1].image_url"),
        (_user({"type": "input_file", "filename": "x.exe", "file_data": base64.b64encode(b"MZ\x00\x01").decode()}),
         "input[0].content[1].file_data"),
        (_user({"type": "input_file", "filename": "a.txt"}), "input[0].content[1].file_data"),
        (_user({"type": "input_audio", "data": ""}), "input[0].content[1].type"),
    ]
    for items, param in cases:
        resp = server.post({"model": "vision", "input": [{"role": "user", "content": "a"},
                                                         {"role": "assistant", "content": "b"}, *items]})
        # The media item is input[2] here: the path must say so.
        assert resp.status_code == 400, (param, resp.text)
        assert resp.json()["error"]["param"] == param.replace("input[0]", "input[2]"), (param, resp.json())
