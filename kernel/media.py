"""Loading user-supplied images and files into neutral parts, within limits.

Endpoint plugins hand every ``image_url`` / ``input_file`` of a request to one
:class:`MediaLoader`. It decodes ``data:`` URLs and base64, fetches http(s) URLs
through the kernel's guard (:mod:`kernel.fetch`), checks the declared type against
the allow-list *and* against the bytes' magic numbers, enforces per-item and
per-request size limits, and reduces files to text (PDFs via pypdf).

Images always come back as ``data:`` URLs, so providers never fetch anything.
Every problem is an ``ApiError(400)`` naming the field (``param``) and one of the
codes ``invalid_image_url``, ``invalid_file``, ``invalid_base64``,
``unsupported_media_type``, ``media_type_mismatch``, ``image_too_large``,
``file_too_large``, ``media_too_large`` (the whole request), ``media_fetch_failed``
or ``invalid_pdf``. Messages never quote the media's content.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import mimetypes
import posixpath
import re
import time
import urllib.parse
from typing import Any

from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

from kernel.errors import ApiError
from kernel.fetch import Fetched, FetchError, FetchPolicy, fetch_url
from kernel.types import FilePart, ImagePart

MiB = 1024 * 1024
PDF = "application/pdf"
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png",
            "text/x-markdown": "text/markdown", "application/x-pdf": PDF}
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/unknown"})
# Extensions whose type mimetypes may not know (it depends on the host's mime.types).
_EXTENSIONS = {".md": "text/markdown", ".markdown": "text/markdown", ".csv": "text/csv", ".json": "application/json",
               ".txt": "text/plain", ".html": "text/html", ".htm": "text/html", ".pdf": PDF}
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)  # the DIB header sizes that follow "BM"
_UNSAFE_NAME_CHARS = re.compile(r'[\x00-\x1f\x7f"<>]')


class MediaLimits(BaseModel):
    """What media a request may carry; plugins embed this in their settings."""

    model_config = ConfigDict(extra="forbid")

    image_mime_types: list[str] = ["image/jpeg", "image/png", "image/gif", "image/webp"]
    max_image_bytes: PositiveInt = 10 * MiB
    file_mime_types: list[str] = ["text/plain", "text/markdown", "text/html", "text/csv", "application/json", PDF]
    max_file_bytes: PositiveInt = 5 * MiB
    max_file_chars: PositiveInt = 200_000
    # A small PDF can declare thousands of (empty or compressed) pages: the page count and
    # the extraction time are bounded so one upload cannot hold a worker thread for long.
    max_pdf_pages: PositiveInt = 1000
    max_pdf_seconds: PositiveFloat = 20.0
    max_total_bytes: PositiveInt = 50 * MiB  # all decoded media of one request together
    allowed_hosts: list[str] = []  # fetchable even though private (e.g. 127.0.0.1 in tests)
    fetch_timeout_seconds: PositiveFloat = 10.0
    max_redirects: NonNegativeInt = 3

    @field_validator("image_mime_types", "file_mime_types")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [_normal_type(v) for v in value]

    def fetch_policy(self) -> FetchPolicy:
        """The :class:`FetchPolicy` these limits imply."""
        return FetchPolicy(allowed_hosts=frozenset(self.allowed_hosts), max_redirects=self.max_redirects,
                           timeout_seconds=self.fetch_timeout_seconds)


def sniff_media_type(data: bytes) -> str | None:
    """The type the bytes' magic number proves (images and PDF), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "image/bmp"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "image/heic"
    if data.startswith(b"%PDF-"):
        return PDF
    return None


def _normal_type(media_type: str) -> str:
    media_type = media_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(media_type, media_type)


def _size(n: int) -> str:
    if n >= MiB:
        return f"{n / MiB:.1f} MiB".replace(".0 ", " ")
    if n >= 1024:
        return f"{n / 1024:.1f} KiB".replace(".0 ", " ")
    return f"{n} bytes"


def _clean_filename(name: str | None) -> str | None:
    """A display name that cannot break the ``<file name="...">`` delimiter."""
    if not name:
        return None
    name = _UNSAFE_NAME_CHARS.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()[:200]
    return name or None


def _type_from_name(name: str | None) -> str | None:
    if not name:
        return None
    ext = posixpath.splitext(name)[1].lower()
    return _EXTENSIONS.get(ext) or mimetypes.guess_type(name, strict=False)[0]


class MediaLoader:
    """Loads one request's media; tracks the total decoded size across calls."""

    def __init__(self, limits: MediaLimits) -> None:
        self.limits = limits
        self.total_bytes = 0
        # Built on the first fetch: most requests carry no URL, and a loader is made per request.
        self._policy: FetchPolicy | None = None

    # ------------------------------------------------------------------ images

    async def image(self, url: str, *, detail: str = "auto", param: str) -> ImagePart:
        """Validate an image (``data:`` or http(s) URL) and return it as a ``data:`` URL part."""
        limits = self.limits
        url = url.strip()
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            declared, data = self._data_url(url, limit=limits.max_image_bytes, kind="image", param=param,
                                            bad_code="invalid_image_url")
            if declared is None:
                raise ApiError(400, "the image data: URL has no media type; send data:image/png;base64,...",
                               param=param, code="invalid_image_url")
            self._check_allowed(declared, limits.image_mime_types, "image", param)
        elif scheme in ("http", "https"):
            fetched = await self._fetch(url, limit=limits.max_image_bytes, kind="image", param=param)
            data, declared = fetched.data, fetched.media_type
            if declared in _GENERIC_TYPES:
                declared = None  # no real claim; the bytes decide
            if declared is not None:
                self._check_allowed(declared, limits.image_mime_types, "image", param, where="the URL's Content-Type")
        else:
            raise ApiError(400, "an image URL must be a data:image/...;base64 URL or an http(s) URL "
                           f"(got scheme {scheme or 'none'!r})", param=param, code="invalid_image_url")
        sniffed = sniff_media_type(data)
        if sniffed is None or not sniffed.startswith("image/"):
            raise ApiError(400, "the image content is not a recognised image format; allowed types: "
                           + ", ".join(limits.image_mime_types), param=param, code="unsupported_media_type")
        if declared is not None and _normal_type(declared) != sniffed:
            raise ApiError(400, f"the image is declared as {_normal_type(declared)} but its content is {sniffed}; "
                           "declare the correct type", param=param, code="media_type_mismatch")
        self._check_allowed(sniffed, limits.image_mime_types, "image", param)
        self._charge(len(data), param)
        encoded = base64.b64encode(data).decode("ascii")
        return ImagePart(url=f"data:{sniffed};base64,{encoded}", media_type=sniffed, detail=detail)

    # ------------------------------------------------------------------ files

    async def file(self, *, file_data: str | None = None, file_url: str | None = None,
                   filename: str | None = None, param: str) -> FilePart:
        """Validate a file (base64, ``data:`` URL or http(s) URL) and reduce it to text."""
        limits = self.limits
        if (file_data is None) == (file_url is None):
            raise ApiError(400, "give exactly one of file_data (base64 or a data: URL) or file_url",
                           param=param, code="invalid_file")
        declared: str | None
        where = "the data: URL"
        if file_data is not None:
            file_data = file_data.strip()
            if file_data[:5].lower() == "data:":
                declared, data = self._data_url(file_data, limit=limits.max_file_bytes, kind="file", param=param,
                                                bad_code="invalid_file")
            else:
                declared, data = None, self._b64(file_data, limit=limits.max_file_bytes, kind="file", param=param)
        else:
            assert file_url is not None
            fetched = await self._fetch(file_url, limit=limits.max_file_bytes, kind="file", param=param)
            data, declared, where = fetched.data, fetched.media_type, "the URL's Content-Type"
            path = urllib.parse.urlsplit(fetched.url).path
            filename = filename or urllib.parse.unquote(posixpath.basename(path))
        name = _clean_filename(filename) or "file"
        if declared is None or _normal_type(declared) in _GENERIC_TYPES:
            declared, where = _type_from_name(filename), "the filename extension"
        if declared is None:
            declared, where = self._guess_from_bytes(data, param), "the content"
        media_type = _normal_type(declared)
        self._check_allowed(media_type, limits.file_mime_types, "file", param, where=where)
        sniffed = sniff_media_type(data)
        # A PDF may carry junk before its header; anything else must not look like a PDF or an image.
        consistent = b"%PDF-" in data[:1024] if media_type == PDF else sniffed is None
        if not consistent:
            actual = sniffed or "not a PDF"
            raise ApiError(400, f"the file is declared as {media_type} ({where}) but its content is {actual}",
                           param=param, code="media_type_mismatch")
        self._charge(len(data), param)
        if media_type == PDF:
            text, total = await asyncio.to_thread(_pdf_text, data, limits, param)
        else:
            text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
            total = len(text)
        if total is None or len(text) > limits.max_file_chars:  # None: PDF extraction stopped early
            text = text[: limits.max_file_chars]
            count = f"{total:,} characters" if total is not None else "more text"
            text += (f"\n\n[truncated: the file has {count}; only the first "
                     f"{len(text):,} characters are included]")
        return FilePart(filename=name, media_type=media_type, text=text)

    # ------------------------------------------------------------------ helpers

    def _check_allowed(self, media_type: str, allowed: list[str], kind: str, param: str,
                       where: str = "the data: URL") -> None:
        media_type = _normal_type(media_type)
        if media_type not in allowed:
            raise ApiError(400, f"{kind} type {media_type!r} (from {where}) is not allowed; allowed types: "
                           + ", ".join(allowed), param=param, code="unsupported_media_type")

    def _charge(self, size: int, param: str) -> None:
        """Count ``size`` decoded bytes against the request's total."""
        if self.total_bytes + size > self.limits.max_total_bytes:
            raise ApiError(400, f"the request's media together exceed {_size(self.limits.max_total_bytes)} "
                           "(max_total_bytes); send fewer or smaller images and files",
                           param=param, code="media_too_large")
        self.total_bytes += size

    def _too_large(self, kind: str, size: str, limit: int, param: str) -> ApiError:
        key = "max_image_bytes" if kind == "image" else "max_file_bytes"
        return ApiError(400, f"the {kind} is {size}; the limit is {_size(limit)} ({key})",
                        param=param, code=f"{kind}_too_large")

    def _b64(self, payload: str, *, limit: int, kind: str, param: str) -> bytes:
        payload = "".join(payload.split())
        if len(payload) // 4 * 3 > limit + 2:  # refuse before decoding a huge string
            raise self._too_large(kind, f"about {_size(len(payload) // 4 * 3)}", limit, param)
        payload = payload.translate(str.maketrans("-_", "+/"))  # accept the URL-safe alphabet too
        try:
            data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, f"the {kind} data is not valid base64", param=param, code="invalid_base64") from None
        if len(data) > limit:
            raise self._too_large(kind, _size(len(data)), limit, param)
        return data

    def _data_url(self, url: str, *, limit: int, kind: str, param: str, bad_code: str) -> tuple[str | None, bytes]:
        """Split ``data:[<type>][;params][;base64],<payload>`` into (type or None, bytes)."""
        header, comma, payload = url[5:].partition(",")
        if not comma:
            raise ApiError(400, f"the {kind} data: URL is malformed; expected data:<media type>;base64,<data>",
                           param=param, code=bad_code)
        fields = [f.strip() for f in header.split(";")]
        is_b64 = len(fields) > 1 and fields[-1].lower() == "base64"
        media_type = _normal_type(fields[0]) or None
        if is_b64:
            return media_type, self._b64(payload, limit=limit, kind=kind, param=param)
        data = urllib.parse.unquote_to_bytes(payload)
        if len(data) > limit:
            raise self._too_large(kind, _size(len(data)), limit, param)
        return media_type, data

    async def _fetch(self, url: str, *, limit: int, kind: str, param: str) -> Fetched:
        remaining = self.limits.max_total_bytes - self.total_bytes
        if remaining <= 0:
            self._charge(1, param)  # raises the total-size error
        try:
            if self._policy is None:
                self._policy = self.limits.fetch_policy()
            return await fetch_url(url, max_bytes=min(limit, remaining), policy=self._policy)
        except FetchError as exc:
            if exc.code != "too_large":
                raise ApiError(400, f"could not fetch the {kind} URL: {exc.message}",
                               param=param, code="media_fetch_failed") from None
            if remaining < limit:
                self._charge(remaining + 1, param)
            raise self._too_large(kind, f"larger than {_size(limit)}", limit, param) from None

    def _guess_from_bytes(self, data: bytes, param: str) -> str:
        sniffed = sniff_media_type(data)
        if sniffed is not None:
            return sniffed
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if b"\x00" not in data:
                return "text/plain"
        raise ApiError(400, "could not tell the file's type; give a filename with an extension or send "
                       "a data:<media type>;base64,... URL", param=param, code="unsupported_media_type")


_CATALOG = re.compile(rb"/Type\s*/Catalog\b")
_OBJECT_HEADER = re.compile(rb"(\d+)\s+(\d+)\s+obj\b")


def _open_pdf(reader_class: Any, data: bytes) -> Any:
    """A ``PdfReader`` for ``data``, recovering files without a usable xref table.

    pypdf rebuilds a broken xref by scanning the objects, but only once it finds a
    ``startxref``; files that lack it (or the trailer, or ``%%EOF``), which mainstream
    readers open, get a pointer that forces that scan and, when missing, a trailer naming
    the catalog object. Truly unreadable input still fails.
    """
    try:
        reader = reader_class(io.BytesIO(data))
        if not reader.is_encrypted:  # an encrypted page tree is read after decrypt()
            len(reader.pages)  # the page tree is where a missing xref shows
        return reader
    except Exception:
        suffix = b""
        if b"trailer" not in data[-8192:]:
            root = _catalog_object(data)
            if root is None:
                raise
            suffix += b"\ntrailer\n<< /Root " + root + b" R >>"
        reader = reader_class(io.BytesIO(data + suffix + b"\nstartxref\n0\n%%EOF\n"))
        if not reader.is_encrypted and len(reader.pages) == 0:
            raise  # nothing recovered (e.g. a file cut short before its first page): unreadable
        return reader


def _catalog_object(data: bytes) -> bytes | None:
    """``b"<num> <gen>"`` of the object holding ``/Type /Catalog``, found by a linear scan."""
    catalog = _CATALOG.search(data)
    if catalog is None:
        return None
    start = data.rfind(b"obj", 0, catalog.start())
    headers = list(_OBJECT_HEADER.finditer(data, max(0, start - 32), start + 3)) if start >= 0 else []
    if not headers:
        return None
    return headers[-1].group(1) + b" " + headers[-1].group(2)


def _pdf_text(data: bytes, limits: MediaLimits, param: str) -> tuple[str, int | None]:
    """Extract a PDF's text (stopping once past ``max_file_chars`` or ``max_pdf_seconds``);
    returns (text, total length or None when extraction stopped early). Runs in a worker
    thread; more than ``max_pdf_pages`` pages is a 400."""
    from pypdf import PdfReader  # imported lazily: only PDF uploads pay for it

    max_chars = limits.max_file_chars
    stop_at = time.monotonic() + limits.max_pdf_seconds

    try:
        reader = _open_pdf(PdfReader, data)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")  # many PDFs are "encrypted" with an empty password
            except Exception:
                opened = 0
            if not opened:
                raise ApiError(400, "the PDF is password-protected; send an unencrypted PDF",
                               param=param, code="invalid_pdf")
        count = len(reader.pages)
        if count > limits.max_pdf_pages:
            raise ApiError(400, f"the PDF has {count} pages, over the {limits.max_pdf_pages}-page limit "
                           "(max_pdf_pages)", param=param, code="invalid_pdf")
        pages: list[str] = []
        length = 0
        complete = True
        for page in reader.pages:
            if length > max_chars or (pages and time.monotonic() > stop_at):
                complete = False
                break
            text = page.extract_text() or ""
            pages.append(text)
            length += len(text) + 2
    except ApiError:
        raise
    except Exception as exc:  # pypdf raises many types for damaged files; none should be a 500
        raise ApiError(400, f"the PDF could not be read ({type(exc).__name__}); it may be damaged",
                       param=param, code="invalid_pdf") from None
    text = "\n\n".join(pages).strip()
    if not text:
        return "[no text could be extracted from this PDF; it may contain only images]", 0
    return text, len(text) if complete else None
