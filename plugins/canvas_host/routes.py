"""The canvas blueprint: pages and assets, file writes, and the live-reload socket."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from quart import Blueprint, Response, g, jsonify, redirect, request, websocket

from kernel.auth import public
from kernel.errors import ApiError, error_body
from kernel.http import read_body
from plugins.canvas_host.fs import INDEX_FILE, NotServable, WriteConflict, delete, open_for_read, write_atomic
from plugins.canvas_host.host import CanvasHost
from plugins.canvas_host.pages import unauthorized_page
from plugins.canvas_host.paths import CanvasPath, PathRejected, raw_path_of, split_path
from plugins.canvas_host.respond import BASE_HEADERS, file_response
from plugins.canvas_host.session import COOKIE_NAME

log = logging.getLogger("plugins.canvas_host")

FILES = "files"
# What error bodies name as the offending field: the request path (or its ?token=).
PATH_PARAM = "path"
TOKEN_PARAM = "token"
NONE_OFF_LOOPBACK = 'auth = "none" serves loopback binds only; this request came in on another address'
# Our own rules must see '//' as written: the default would redirect to a merged path.
_RULE = {"strict_slashes": False, "merge_slashes": False}


def canonical_url(host: CanvasHost, path: CanvasPath, *, slash: bool) -> str:
    """The mount-relative URL of ``path``, each segment re-encoded."""
    url = host.mount + "/" + "/".join(quote(seg, safe="") for seg in path.segments)
    if slash and path.segments:
        url += "/"
    return url


def _query_without_token() -> str:
    pairs = parse_qsl(request.query_string.decode("utf-8", "replace"), keep_blank_values=True)
    rest = [(k, v) for k, v in pairs if k != "token"]
    return ("?" + urlencode(rest)) if rest else ""


def _wants_html() -> bool:
    return "text/html" in request.headers.get("accept", "")


def _unauthorized(host: CanvasHost, message: str, *, retry: bool, param: str | None = None) -> Response:
    headers = {**BASE_HEADERS, "WWW-Authenticate": 'Bearer realm="kernel"'}
    if _wants_html():
        page = unauthorized_page(host.mount, message, retry=retry)
        return Response(page, 401, {**headers, "Content-Type": "text/html; charset=utf-8"})
    body = error_body(message, type="authentication_error", param=param, code="invalid_api_key")
    return Response(json.dumps(body), 401, {**headers, "Content-Type": "application/json"})


def _rejected(exc: PathRejected) -> ApiError:
    code = "invalid_path" if exc.status == 400 else "not_found"
    return ApiError(exc.status, exc.reason, param=PATH_PARAM, code=code)


def _not_found(host: CanvasHost, path: CanvasPath) -> ApiError:
    return ApiError(404, f"no file at {host.mount}/{path.display}", param=PATH_PARAM, code="not_found")


def build_blueprint(host: CanvasHost) -> Blueprint:
    """The blueprint for one canvas host."""
    bp = Blueprint("canvas_host", __name__, url_prefix=host.mount)

    def token_exchange(path: CanvasPath) -> Response:
        """``?token=``: trade the gateway secret for a cookie, then drop it from the URL."""
        principal = host.kernel.auth.principal_for(request.args.get("token") or None)
        if principal is None:
            return _unauthorized(host, "the token in the link is not the gateway's token", retry=False,
                                 param=TOKEN_PARAM)
        location = canonical_url(host, path, slash=path.trailing_slash) + _query_without_token()
        response = redirect(location, 303)
        response.set_cookie(
            COOKIE_NAME, host.sessions.issue(principal), path=host.mount, httponly=True, samesite="Strict",
            secure=request.scheme in ("https", "wss"),
        )
        response.headers.update({**BASE_HEADERS, "Referrer-Policy": "no-referrer"})
        return response

    @public
    async def serve(subpath: str = "") -> Any:
        try:
            path = split_path(raw_path_of(request.scope), host.prefix)
        except PathRejected as exc:
            raise _rejected(exc) from None
        if host.open_off_loopback(request.scope):
            raise ApiError(403, NONE_OFF_LOOPBACK, code="forbidden")
        if host.settings.auth == "token":
            if "token" in request.args:
                return token_exchange(path)
            principal = host.authenticate(request.headers, request.cookies)
            if principal is None:
                given = COOKIE_NAME in request.cookies or "authorization" in request.headers
                message = "this canvas needs the gateway token" + (" (the one given is not valid)" if given else "")
                return _unauthorized(host, message, retry=not given)
            g.principal = principal  # for the access log
        if not path.segments and not path.trailing_slash:
            return redirect(host.mount + "/" + _query_without_token(), 308)
        opened = await _open(host, path)
        if opened.file is not None and path.trailing_slash:
            # 'page.html/' is not a second name for 'page.html'.
            opened.file.close()
            raise _not_found(host, path)
        if opened.is_dir:
            if not path.trailing_slash:
                query = request.query_string.decode("ascii", "replace")
                return redirect(canonical_url(host, path, slash=True) + (f"?{query}" if query else ""), 308)
            opened = await _open(host, CanvasPath((*path.segments, INDEX_FILE), trailing_slash=False))
            if opened.file is None:
                raise _not_found(host, path)
        assert opened.file is not None
        return await file_response(
            opened.file, method=request.method, if_none_match=request.headers.get("if-none-match"),
            script=host.script,
        )

    async def put_file(subpath: str) -> Any:
        path = _write_path(host)
        data = await read_body(host.settings.max_file_bytes)
        try:
            created = await asyncio.to_thread(write_atomic, host.root, path.segments, data)
        except WriteConflict as exc:
            raise ApiError(409, f"cannot write {path.display}: {exc}", param=PATH_PARAM, code="conflict") from None
        except OSError as exc:
            raise _os_error("write", path, exc) from None
        body = {"path": path.display, "url": canonical_url(host, path, slash=False), "bytes": len(data),
                "created": created}
        return jsonify(body), 201 if created else 200

    async def delete_file(subpath: str) -> Any:
        path = _write_path(host)
        try:
            await asyncio.to_thread(delete, host.root, path.segments)
        except NotServable:
            raise _not_found(host, path) from None
        except WriteConflict as exc:
            raise ApiError(409, f"cannot delete {path.display}: {exc}", param=PATH_PARAM, code="conflict") from None
        except OSError as exc:
            raise _os_error("delete", path, exc) from None
        return Response(b"", 204)

    async def no_file_named() -> Any:
        _write_path(host)  # raises the 400 (or the path's own 400/404)
        raise AssertionError("unreachable: the files/ URL names no file")

    @public
    async def live_socket() -> Any:
        if host.open_off_loopback(websocket.scope):
            body = error_body(NONE_OFF_LOOPBACK, type="permission_error", code="forbidden")
            return Response(json.dumps(body), 403, {"Content-Type": "application/json"})
        if host.authenticate(websocket.headers, websocket.cookies) is None:
            # Returned before accept(): the server answers the handshake with this status.
            body = error_body("the live-reload socket needs the canvas cookie or the gateway token",
                              type="authentication_error", code="invalid_api_key")
            return Response(json.dumps(body), 401, {"Content-Type": "application/json"})
        await websocket.accept()
        async with host.hub.subscribe() as inbox:
            await _send_reloads(inbox)
        return None

    @public
    async def no_socket(subpath: str) -> Any:
        what = "live reload is off" if not host.settings.live_reload else f"the socket is at {host.mount}/ws"
        body = error_body(f"no websocket at {websocket.path} ({what})", type="not_found_error", code="not_found")
        return Response(json.dumps(body), 404, {"Content-Type": "application/json"})

    bp.add_url_rule("", "mount", serve, methods=["GET", "HEAD"], **_RULE)
    bp.add_url_rule("/", "index", serve, methods=["GET", "HEAD"], **_RULE)
    bp.add_url_rule("/<path:subpath>", "file", serve, methods=["GET", "HEAD"], **_RULE)
    bp.add_url_rule(f"/{FILES}/<path:subpath>", "write", put_file, methods=["PUT"], **_RULE)
    bp.add_url_rule(f"/{FILES}/<path:subpath>", "delete", delete_file, methods=["DELETE"], **_RULE)
    # '{mount}/files/' names no file: a 400 that says so, not a puzzling 405.
    bp.add_url_rule(f"/{FILES}/", "write_no_file", no_file_named, methods=["PUT", "DELETE"], **_RULE)
    if host.settings.live_reload:
        bp.add_websocket("/ws", "live_reload", live_socket, **_RULE)
    # Without this, a socket to any other path below the mount (or to /ws when live
    # reload is off) matches only the page rule and gets a puzzling 400.
    bp.add_websocket("/<path:subpath>", "no_socket", no_socket, **_RULE)
    return bp


async def _open(host: CanvasHost, path: CanvasPath) -> Any:
    try:
        return await asyncio.to_thread(open_for_read, host.root, path.segments)
    except NotServable:
        raise _not_found(host, path) from None


def _write_path(host: CanvasHost) -> CanvasPath:
    try:
        path = split_path(raw_path_of(request.scope), (*host.prefix, FILES))
    except PathRejected as exc:
        raise _rejected(exc) from None
    if not path.segments or path.trailing_slash:
        raise ApiError(400, f"name a file: {host.mount}/{FILES}/<path/to/file>", param=PATH_PARAM,
                       code="invalid_path")
    return path


def _os_error(action: str, path: CanvasPath, exc: OSError) -> ApiError:
    where = f"cannot {action} {path.display}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EMLINK):
        return ApiError(507, f"{where}: no room left on the gateway's disk ({exc.strerror})", param=PATH_PARAM,
                        code="insufficient_storage")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ApiError(403, f"{where}: the gateway may not change that file", param=PATH_PARAM, code="forbidden")
    if exc.errno == errno.ENAMETOOLONG:
        return ApiError(404, f"{where}: the path is too long", param=PATH_PARAM, code="not_found")
    if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.ELOOP, errno.EEXIST, errno.ENOTEMPTY):
        # Something else changed the tree at the same moment (a directory or symlink appeared).
        return ApiError(409, f"{where}: the folder changed while writing ({exc.strerror}); try again",
                        param=PATH_PARAM, code="conflict")
    log.error("canvas: %s of %s failed: %s", action, path.display, exc)
    return ApiError(500, f"{where}: {exc.strerror}", code="io_error")


async def _send_reloads(inbox: asyncio.Queue[str | None]) -> None:
    """Forward ``reload`` messages until the hub closes.

    The live-reload client never sends anything, and Quart queues every message a
    client sends, without limit, until the view reads it: so the socket is read, and
    the first message a client sends closes it (1008) instead of piling up.
    """
    client_spoke: asyncio.Future[Any] = asyncio.ensure_future(websocket.receive())
    next_message: asyncio.Future[str | None] | None = None
    try:
        while True:
            next_message = asyncio.ensure_future(inbox.get())
            await asyncio.wait({client_spoke, next_message}, return_when=asyncio.FIRST_COMPLETED)
            if client_spoke.done():
                await websocket.close(1008, "the live-reload socket does not accept messages")
                return
            message = next_message.result()
            if message is None:
                await websocket.close(1001, "gateway stopping")
                return
            await websocket.send(message)
    finally:
        # Both waits end with the view (also when it is cancelled): none outlives the socket.
        pending = [f for f in (client_spoke, next_message) if f is not None and not f.done()]
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
