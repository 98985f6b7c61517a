"""The media loader: images and files become checked neutral parts, within limits.

Images and PDFs are built here byte by byte (real, decodable files); fetched media
come from a raw asyncio HTTP server on a free loopback port.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import zlib

import pytest
from pydantic import ValidationError
from pypdf import PdfReader, PdfWriter

from kernel.errors import ApiError
from kernel.media import MediaLimits, MediaLoader, sniff_media_type
from kernel.types import FilePart, ImagePart

LOOPBACK = {"allowed_hosts": ["127.0.0.1"]}


# --------------------------------------------------------------------------- real media


def png_bytes(width: int = 1, height: int = 1, padding: int = 0) -> bytes:
    """A valid RGB PNG; ``padding`` adds a tEXt chunk to make it larger."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    pad = chunk(b"tEXt", b"Comment\x00" + b"x" * padding) if padding else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + pad + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def gif_bytes() -> bytes:
    """A valid 1x1 GIF89a with a two-colour palette."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0)
    image = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    # LZW with minimum code size 2: clear code, pixel 0, end code, packed LSB-first.
    return header + b"\xff\x00\x00\x00\x00\x00" + image + b"\x02\x02\x44\x01\x00" + b";"


def jpeg_bytes() -> bytes:
    """A valid baseline JPEG: one 8x8 mid-grey block."""

    def seg(marker: int, payload: bytes) -> bytes:
        return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload

    dqt = seg(0xDB, b"\x00" + b"\x01" * 64)
    sof = seg(0xC0, struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00")
    # One-symbol Huffman tables (DC "no difference", AC "end of block"), both coded "0".
    dht = seg(0xC4, b"\x00\x01" + b"\x00" * 15 + b"\x00") + seg(0xC4, b"\x10\x01" + b"\x00" * 15 + b"\x00")
    sos = seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    return b"\xff\xd8" + dqt + sof + dht + sos + b"\x3f" + b"\xff\xd9"


def pdf_bytes(pages: list[str]) -> bytes:
    """A minimal well-formed PDF (exact xref offsets) with one line of text per page."""
    n = len(pages)
    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(n))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % n,
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")
        stream = b"BT /F1 12 Tf 72 720 Td (" + escaped + b") Tj ET"
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i))
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def encrypted_pdf(user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(["Locked words"]))))
    writer.encrypt(user_password, owner_password="owner-secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{b64(data)}"


def loader(**limits: object) -> MediaLoader:
    return MediaLoader(MediaLimits(**limits))


async def api_error(coro: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        await coro  # type: ignore[misc]
    assert info.value.status == 400
    return info.value


# --------------------------------------------------------------------------- loopback server


class MediaServer:
    """Serves ``routes[path] = (status, content_type, body)`` on a free loopback port."""

    def __init__(self, routes: dict[str, tuple[int, str | None, bytes]]) -> None:
        self.routes = routes
        self.hits: list[str] = []

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target = (await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)[1].decode().split("?", 1)[0]
            self.hits.append(target)
            status, content_type, body = self.routes.get(target, (404, "text/plain", b"not found"))
            head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            if content_type:
                head += f"Content-Type: {content_type}\r\n"
            writer.write(head.encode() + b"\r\n" + body)
            await writer.drain()
        finally:
            writer.close()


# --------------------------------------------------------------------------- settings


def test_limits_forbid_unknown_keys_and_normalise_types() -> None:
    with pytest.raises(ValidationError):
        MediaLimits(max_image_size=5)
    limits = MediaLimits(image_mime_types=["Image/PNG", "image/jpg"], allowed_hosts=["127.0.0.1"], max_redirects=1)
    assert limits.image_mime_types == ["image/png", "image/jpeg"]
    policy = limits.fetch_policy()
    assert policy.allowed_hosts == frozenset({"127.0.0.1"}) and policy.max_redirects == 1


def test_sniffing_recognises_the_test_media() -> None:
    assert [sniff_media_type(b) for b in (png_bytes(), jpeg_bytes(), gif_bytes(), pdf_bytes(["x"]), b"plain")] == [
        "image/png", "image/jpeg", "image/gif", "application/pdf", None]


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize(("media_type", "make"), [("image/png", png_bytes), ("image/jpeg", jpeg_bytes),
                                                  ("image/gif", gif_bytes)])
async def test_data_url_images_come_back_as_checked_data_urls(media_type: str, make: object) -> None:
    raw = make()  # type: ignore[operator]
    media = loader()
    part = await media.image(data_url(media_type, raw), detail="low", param="input[0].content[1].image_url")
    assert isinstance(part, ImagePart)
    assert (part.media_type, part.detail) == (media_type, "low")
    prefix = f"data:{media_type};base64,"
    assert part.url.startswith(prefix) and base64.b64decode(part.url[len(prefix):]) == raw
    assert media.total_bytes == len(raw)


async def test_jpg_alias_and_wrapped_base64_are_accepted() -> None:
    encoded = b64(jpeg_bytes())
    wrapped = "\n".join(encoded[i:i + 40] for i in range(0, len(encoded), 40)).rstrip("=")
    part = await loader().image(f"data:image/jpg;base64,{wrapped}", param="p")
    assert part.media_type == "image/jpeg"


async def test_a_mime_lie_is_caught() -> None:
    err = await api_error(loader().image(data_url("image/png", gif_bytes()), param="messages[0].content[0]"))
    assert err.code == "media_type_mismatch"
    assert err.param == "messages[0].content[0]"
    assert "image/png" in err.message and "image/gif" in err.message


async def test_non_image_bytes_are_refused() -> None:
    err = await api_error(loader().image(data_url("image/png", b"SECRET-CONTENT not an image"), param="p"))
    assert err.code == "unsupported_media_type"
    assert "image/jpeg, image/png, image/gif, image/webp" in err.message
    assert "SECRET" not in err.message


async def test_disallowed_image_type_lists_the_allowed_ones() -> None:
    err = await api_error(loader().image("data:image/svg+xml;base64," + b64(b"<svg/>"), param="p"))
    assert err.code == "unsupported_media_type"
    assert "image/svg+xml" in err.message and "image/webp" in err.message
    gif_only = await api_error(loader(image_mime_types=["image/gif"]).image(data_url("image/png", png_bytes()),
                                                                              param="p"))
    assert gif_only.code == "unsupported_media_type"


@pytest.mark.parametrize("url", ["data:image/png;base64,@@@not*base64", "data:image/png;base64,abcde",
                                 "data:image/png;base64,SECRETSECRET!"])
async def test_bad_base64(url: str) -> None:
    err = await api_error(loader().image(url, param="p"))
    assert err.code == "invalid_base64"
    assert "SECRET" not in err.message


@pytest.mark.parametrize("url", ["data:;base64," + b64(png_bytes()), "data:image/png;base64", "ftp://x/y.png",
                                 "/relative.png", ""])
async def test_malformed_image_urls(url: str) -> None:
    assert (await api_error(loader().image(url, param="p"))).code == "invalid_image_url"


async def test_oversize_image() -> None:
    big = png_bytes(padding=500)
    err = await api_error(loader(max_image_bytes=300).image(data_url("image/png", big), param="p"))
    assert err.code == "image_too_large"
    assert "300 bytes" in err.message and "max_image_bytes" in err.message
    # A huge payload is refused from its length, before decoding.
    huge = await api_error(loader(max_image_bytes=300).image("data:image/png;base64," + "A" * 10_000, param="p"))
    assert huge.code == "image_too_large"


async def test_total_size_is_limited_across_parts() -> None:
    image, text = png_bytes(padding=200), b"t" * 150
    media = loader(max_total_bytes=2 * len(image) + 100)
    await media.image(data_url("image/png", image), param="a")
    await media.image(data_url("image/png", image), param="b")
    err = await api_error(media.file(file_data=b64(text), filename="notes.txt", param="c"))
    assert (err.code, err.param) == ("media_too_large", "c")
    assert "max_total_bytes" in err.message
    await media.file(file_data=b64(text[:100]), filename="notes.txt", param="d")  # exactly at the limit
    assert media.total_bytes == 2 * len(image) + 100
    assert (await api_error(media.image(data_url("image/gif", gif_bytes()), param="e"))).code == "media_too_large"


async def test_image_fetched_from_an_allowed_loopback_host() -> None:
    png, gif = png_bytes(), gif_bytes()
    routes = {"/a.png": (200, "image/png", png), "/blob": (200, "application/octet-stream", gif),
              "/lie": (200, "image/png", gif), "/page": (200, "text/html", b"<html></html>"),
              "/big": (200, "image/png", png_bytes(padding=2000))}
    async with MediaServer(routes) as base:
        media = loader(**LOOPBACK, max_image_bytes=1000)
        part = await media.image(f"{base}/a.png?sig=1", param="p")
        assert part.url == data_url("image/png", png) and part.media_type == "image/png"
        assert (await media.image(f"{base}/blob", param="p")).media_type == "image/gif"
        assert (await api_error(media.image(f"{base}/lie", param="p"))).code == "media_type_mismatch"
        assert (await api_error(media.image(f"{base}/page", param="p"))).code == "unsupported_media_type"
        assert (await api_error(media.image(f"{base}/big", param="p"))).code == "image_too_large"
        missing = await api_error(media.image(f"{base}/missing", param="p"))
        assert missing.code == "media_fetch_failed" and "404" in missing.message
        assert media.total_bytes == len(png) + len(gif)


async def test_image_fetch_from_a_private_host_is_refused_by_default() -> None:
    server = MediaServer({"/a.png": (200, "image/png", png_bytes())})
    async with server as base:
        err = await api_error(loader().image(f"{base}/a.png", param="input[0].content[0].image_url"))
    assert err.code == "media_fetch_failed" and "non-public" in err.message
    assert err.param == "input[0].content[0].image_url"
    assert server.hits == []


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize(("kwargs", "media_type"), [
    ({"file_data": b64("héllo\n".encode()), "filename": "notes.txt"}, "text/plain"),
    ({"file_data": data_url("text/markdown", "# Title\nhéllo\n".encode()), "filename": "x"}, "text/markdown"),
    ({"file_data": b64("a,b\n1,héllo\n".encode()), "filename": "table.CSV"}, "text/csv"),
    ({"file_data": b64("héllo".encode()), "filename": "readme.md"}, "text/markdown"),
    ({"file_data": data_url("application/json", '{"k": "héllo"}'.encode())}, "application/json"),
    ({"file_data": b64("héllo, no name".encode())}, "text/plain"),
    ({"file_data": "data:text/plain;charset=utf-8,h%C3%A9llo%20percent", "filename": "p.txt"}, "text/plain"),
])
async def test_text_files(kwargs: dict[str, str], media_type: str) -> None:
    part = await loader().file(**kwargs, param="p")
    assert isinstance(part, FilePart)
    assert part.media_type == media_type
    assert "héllo" in part.text
    assert part.filename == kwargs.get("filename", "file")


async def test_invalid_utf8_is_replaced_not_rejected() -> None:
    part = await loader().file(file_data=b64(b"ok \xff\xfe bytes"), filename="a.txt", param="p")
    assert part.text == "ok \ufffd\ufffd bytes"


async def test_long_text_is_truncated_with_a_visible_marker() -> None:
    part = await loader(max_file_chars=50).file(file_data=b64(b"x" * 120), filename="long.txt", param="p")
    assert part.text.startswith("x" * 50) and "x" * 51 not in part.text
    assert "[truncated: the file has 120 characters; only the first 50 characters are included]" in part.text


async def test_pdf_text_is_extracted() -> None:
    pdf = pdf_bytes(["Hello from page one (PDF)", "And page two"])
    part = await loader().file(file_data=data_url("application/pdf", pdf), filename="report.pdf", param="p")
    assert part.media_type == "application/pdf" and part.filename == "report.pdf"
    assert "Hello from page one (PDF)" in part.text and "And page two" in part.text
    by_name = await loader().file(file_data=b64(pdf), filename="report.pdf", param="p")
    assert by_name.text == part.text


async def test_long_pdf_is_truncated() -> None:
    pdf = pdf_bytes([f"Page number {i} " + "word " * 20 for i in range(30)])
    part = await loader(max_file_chars=300).file(file_data=b64(pdf), filename="long.pdf", param="p")
    assert "Page number 0" in part.text and "Page number 29" not in part.text
    assert "[truncated:" in part.text and "first 300 characters" in part.text


async def test_pdf_with_an_empty_user_password_opens_and_a_locked_one_is_a_400() -> None:
    opened = await loader().file(file_data=b64(encrypted_pdf("")), filename="a.pdf", param="p")
    assert "Locked words" in opened.text
    err = await api_error(loader().file(file_data=b64(encrypted_pdf("pw")), filename="a.pdf", param="p"))
    assert err.code == "invalid_pdf" and "password" in err.message


@pytest.mark.parametrize("data", [b"%PDF-1.7\n garbage that is not a pdf", pdf_bytes(["x"])[:120],
                                  b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R >>\nendobj\ntrailer\n<< >>"])
async def test_corrupt_pdf_is_a_400(data: bytes) -> None:
    err = await api_error(loader().file(file_data=b64(data), filename="bad.pdf", param="p"))
    assert err.code == "invalid_pdf"


async def test_file_type_checks() -> None:
    media = loader()
    zip_err = await api_error(media.file(file_data=b64(b"PK\x03\x04 zip"), filename="a.zip", param="p"))
    assert zip_err.code == "unsupported_media_type"
    assert "application/zip" in zip_err.message and "text/markdown" in zip_err.message
    png_as_text = await api_error(media.file(file_data=b64(png_bytes()), filename="a.txt", param="p"))
    assert png_as_text.code == "media_type_mismatch" and "image/png" in png_as_text.message
    text_as_pdf = await api_error(media.file(file_data=data_url("application/pdf", b"SECRET text"), param="p"))
    assert text_as_pdf.code == "media_type_mismatch" and "SECRET" not in text_as_pdf.message
    unknown = await api_error(media.file(file_data=b64(b"\x00\x01\x02binary"), param="p"))
    assert unknown.code == "unsupported_media_type"
    assert media.total_bytes == 0


async def test_file_argument_errors() -> None:
    media = loader(max_file_bytes=10)
    assert (await api_error(media.file(param="p"))).code == "invalid_file"
    assert (await api_error(media.file(file_data="eA==", file_url="http://x/", param="p"))).code == "invalid_file"
    assert (await api_error(media.file(file_data="not base64!", param="p"))).code == "invalid_base64"
    too_big = await api_error(media.file(file_data=b64(b"y" * 11), filename="a.txt", param="p"))
    assert too_big.code == "file_too_large" and "max_file_bytes" in too_big.message


async def test_filenames_cannot_break_the_file_delimiter() -> None:
    part = await loader().file(file_data=b64(b"hi"), filename='../../etc/x"><evil\n.txt', param="p")
    assert part.filename == "x___evil_.txt"
    assert part.as_text().startswith('<file name="x___evil_.txt" type="text/plain">')


async def test_file_fetched_from_a_loopback_url() -> None:
    routes = {"/docs/guide.md": (200, "text/markdown; charset=utf-8", "# Guide\nhéllo".encode()),
              "/dl/report.pdf": (200, "application/octet-stream", pdf_bytes(["Fetched PDF text"])),
              "/big.txt": (200, "text/plain", b"z" * 5000)}
    async with MediaServer(routes) as base:
        media = loader(**LOOPBACK, max_file_bytes=4000)
        guide = await media.file(file_url=f"{base}/docs/guide.md?token=abc", param="p")
        assert (guide.filename, guide.media_type, guide.text) == ("guide.md", "text/markdown", "# Guide\nhéllo")
        report = await media.file(file_url=f"{base}/dl/report.pdf", filename="Q3.pdf", param="p")
        assert (report.filename, report.media_type) == ("Q3.pdf", "application/pdf")
        assert "Fetched PDF text" in report.text
        assert (await api_error(media.file(file_url=f"{base}/big.txt", param="p"))).code == "file_too_large"
        assert (await api_error(media.file(file_url="file:///etc/passwd", param="p"))).code == "media_fetch_failed"


async def test_a_pdf_with_more_pages_than_the_limit_is_a_400_naming_the_limit() -> None:
    pdf = pdf_bytes(["" for _ in range(12)])  # many empty pages: the text cap never stops it
    err = await api_error(loader(max_pdf_pages=10).file(file_data=b64(pdf), filename="many.pdf", param="p"))
    assert err.param == "p" and "12 pages" in err.message and "max_pdf_pages" in err.message
    ok = await loader(max_pdf_pages=12).file(file_data=b64(pdf), filename="many.pdf", param="p")
    assert ok.media_type == "application/pdf"


async def test_pdf_extraction_stops_at_its_time_budget_and_says_it_was_cut() -> None:
    pdf = pdf_bytes([f"Page {i}" for i in range(40)])
    part = await loader(max_pdf_seconds=1e-9).file(file_data=b64(pdf), filename="slow.pdf", param="p")
    # Only the first page is read before the budget is seen to be spent.
    assert "Page 0" in part.text and "Page 39" not in part.text
    assert "[truncated: the file has more text" in part.text


def _pdf_without_xref(tail: bytes) -> bytes:
    """A hand-written one-page PDF with no xref table (like the compliance tester's fixture)."""
    content = b"BT /F1 24 Tf 100 700 Td (Hello World) Tj ET"
    return (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
            b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n"
            b"3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>\nendobj\n"
            b"4 0 obj\n<< /Length " + str(len(content)).encode() + b" >>\nstream\n" + content
            + b"\nendstream\nendobj\n5 0 obj\n<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>\nendobj\n" + tail)


@pytest.mark.parametrize("tail", [
    b"trailer\n<< /Root 1 0 R >>\n%%EOF\n",  # a trailer but no xref and no startxref
    b"%%EOF\n",  # no trailer either
    b"",  # not even %%EOF
    b"trailer\n<< /Root 1 0 R >>\nstartxref\n9999\n%%EOF\n",  # a startxref pointing nowhere
])
async def test_pdf_without_a_usable_xref_is_still_read(tail: bytes) -> None:
    part = await loader().file(file_data=b64(_pdf_without_xref(tail)), filename="x.pdf", param="p")
    assert part.text == "Hello World"
