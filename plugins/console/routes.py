"""The console's Blueprint: server-rendered pages, its static files, JSON routes for live runs and WebSocket tickets.

Pages are public views that check the session cookie themselves (a visitor without
one is sent to the sign-in page); the JSON routes are ordinary gateway routes, so a
bearer secret works there as well as the cookie (see ``plugin.authenticate_request``).
Everything else the pages show, the browser fetches from the other plugins' own HTTP
routes, under the same owner rules as any client.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from quart import Blueprint, Response, current_app, g, jsonify, redirect, render_template, request, send_from_directory

from kernel import ApiError, is_admin, public
from kernel.http import read_body
from plugins.console import overview
from plugins.console.runs import active_runs, cancel_run
from plugins.console.session import COOKIE_NAME, LOGIN_COOKIE_NAME, Session, Sessions
from plugins.console.settings import ConsoleSettings
from plugins.console.tickets import TICKET_PARAM, TicketRefused, Tickets

if TYPE_CHECKING:
    from kernel.runtime import Kernel

STATIC_DIR = Path(__file__).parent / "static"
RESPONSES_PATH = "/v1/responses"
MAX_FORM_BYTES = 16_384
LOGIN_COOKIE_SECONDS = 3600
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def websocket_path(app: Any) -> str | None:
    """``/v1/responses`` when the app serves its WebSocket mode (the openresponses plugin), else None."""
    for rule in app.url_map.iter_rules():
        if getattr(rule, "websocket", False) and rule.rule == RESPONSES_PATH:
            return RESPONSES_PATH
    return None


def blueprint(kernel: Kernel, settings: ConsoleSettings, sessions: Sessions, tickets: Tickets) -> Blueprint:
    """The console's routes around one kernel."""
    bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")
    version = overview.gateway_version()

    def current() -> Session | None:
        return sessions.verify(request.cookies.get(COOKIE_NAME))

    def secure() -> bool:
        return request.scheme == "https"

    async def page(template: str, session: Session, **context: Any) -> Response:
        html = await render_template(
            f"console/{template}", principal=session.principal, admin=is_admin(session.principal),
            csrf=session.csrf, version=version, active=template.removesuffix(".html"), **context)
        return Response(html, mimetype="text/html")

    def to_login() -> Response:
        return redirect("/console/login", 303)

    @bp.after_request
    async def harden(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        if not request.path.startswith("/console/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    # ------------------------------------------------------------------ sign-in / sign-out

    @bp.get("/login")
    @public
    async def login_form() -> Response:
        if current() is not None:
            return redirect("/console/", 303)
        return await _login_page(None, 200)

    async def _login_page(error: str | None, status: int) -> Response:
        token = secrets.token_urlsafe(32)
        html = await render_template("console/login.html", error=error, login_csrf=token, version=version)
        response = Response(html, status=status, mimetype="text/html")
        response.set_cookie(LOGIN_COOKIE_NAME, token, max_age=LOGIN_COOKIE_SECONDS, path="/console/login",
                            httponly=True, samesite="Strict", secure=secure())
        return response

    @bp.post("/login")
    @public
    async def login() -> Response:
        form = _form(await read_body(MAX_FORM_BYTES))
        expected = request.cookies.get(LOGIN_COOKIE_NAME, "")
        given = form.get("csrf", "")
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            return await _login_page("The sign-in form expired; please try again.", 403)
        principal = kernel.auth.principal_for(form.get("secret", "").strip() or None)
        if principal is None:
            return await _login_page("That token or key was not accepted.", 401)
        response = redirect("/console/", 303)
        response.set_cookie(COOKIE_NAME, sessions.issue(principal), max_age=sessions.max_age, path="/",
                            httponly=True, samesite="Strict", secure=secure())
        response.delete_cookie(LOGIN_COOKIE_NAME, path="/console/login")
        return response

    @bp.post("/logout")
    @public
    async def logout() -> Response:
        session = current()
        form = _form(await read_body(MAX_FORM_BYTES))
        if session is not None and not Sessions.csrf_matches(session, form.get("csrf")):
            return Response("missing or wrong CSRF token", status=403, mimetype="text/plain")
        response = to_login()
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Strict", secure=secure())
        return response

    # ------------------------------------------------------------------ pages

    @bp.get("/")
    @public
    async def overview_page() -> Response:
        session = current()
        if session is None:
            return to_login()
        return await page("overview.html", session, plugins=overview.plugins(kernel), agents=overview.agents(kernel),
                          providers=overview.providers(kernel), store=overview.store(kernel),
                          active_runs=len(active_runs(kernel, session.principal)))

    @bp.get("/playground")
    @public
    async def playground_page() -> Response:
        session = current()
        if session is None:
            return to_login()
        names = sorted(kernel.agents.agents)
        return await page("playground.html", session, agents=names, default_agent=kernel.settings.kernel.default_agent,
                          websocket_path=websocket_path(current_app))

    @bp.get("/responses")
    @public
    async def responses_page() -> Response:
        session = current()
        return to_login() if session is None else await page(
            "responses.html", session, agents=sorted(kernel.agents.agents))

    @bp.get("/responses/<response_id>")
    @public
    async def response_page(response_id: str) -> Response:
        session = current()
        return to_login() if session is None else await page("response.html", session, response_id=response_id)

    @bp.get("/runs")
    @public
    async def runs_page() -> Response:
        session = current()
        return to_login() if session is None else await page(
            "runs.html", session, refresh_ms=int(settings.runs_refresh_seconds * 1000))

    @bp.get("/usage")
    @public
    async def usage_page() -> Response:
        session = current()
        return to_login() if session is None else await page("usage.html", session)

    @bp.get("/static/<path:name>")
    @public
    async def static(name: str) -> Response:
        response = await send_from_directory(STATIC_DIR, name)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    # ------------------------------------------------------------------ JSON (gateway auth: bearer or cookie)

    @bp.get("/api/runs")
    async def list_runs() -> Response:
        return jsonify({"object": "list", "data": active_runs(kernel, g.principal)})

    @bp.post("/api/runs/<run_id>/cancel")
    async def cancel(run_id: str) -> Response:
        return jsonify(cancel_run(kernel, g.principal, run_id))

    @bp.post("/api/ws-ticket")
    async def ws_ticket() -> Response:
        # Reached only with the cookie and its CSRF token (or a bearer secret, which needs no ticket).
        session = current()
        if request.headers.get("authorization") or session is None or session.principal != g.principal:
            raise ApiError(403, "WebSocket tickets are for signed-in console pages; API clients open the socket "
                           "with 'Authorization: Bearer'", code="not_a_console_session")
        try:
            ticket = tickets.issue(session)
        except TicketRefused as exc:
            raise ApiError(429, str(exc), code="rate_limit_exceeded", headers={"Retry-After": "5"}) from None
        path = websocket_path(current_app)
        if path is None:
            raise ApiError(404, "this gateway serves no WebSocket mode on /v1/responses", code="not_found")
        return jsonify({"ticket": ticket, "param": TICKET_PARAM, "path": path,
                        "expires_in": tickets.ttl_seconds})

    return bp


def _form(body: bytes) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each)."""
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20)
    return {name: values[0] for name, values in fields.items()}
