"""The hooks Blueprint: ``/wake``, ``/agent``, ``/runs/<id>`` and mapped ``/<path>``.

The views are ``kernel.public`` because webhooks carry their own secret (see
:mod:`plugins.hooks.gate`). Order of checks: token in URL (400), secret (401),
unknown hook (404), rate limit (429), body (415/413/400), fields (400).
"""

from __future__ import annotations

import uuid
from typing import Any

from quart import Blueprint, Response, g, jsonify, request

from kernel import ApiError, public
from kernel.http import read_json
from plugins.hooks.gate import authenticate
from plugins.hooks.mappings import MappingTable, Skipped, WakeJob, apply_preset, build_context, plan, run_transforms
from plugins.hooks.models import AgentRequest, WakeRequest, parse
from plugins.hooks.service import PRINCIPAL, AgentJob, HooksService
from plugins.hooks.templates import safe_headers

BUILT_IN = ("wake", "agent")


def build_blueprint(service: HooksService) -> Blueprint:
    """The plugin's routes under ``base_path``."""
    settings = service.settings
    table = MappingTable(settings.all_mappings())
    bp = Blueprint("hooks", __name__, url_prefix=settings.base_path)

    async def admit(hook: str, rate_limit: int | None = None, *, known: bool = True) -> dict[str, Any]:
        """Secret, hook name and rate limit checked before the body is parsed; the body as a dict."""
        # An early error leaves the body unread; the kernel drains it after the view.
        body = await authenticate(settings.token or "", max_body_bytes=settings.max_body_bytes)
        g.principal = PRINCIPAL  # for the access log
        if not known:
            names = ", ".join([*BUILT_IN, *table.paths()])
            raise ApiError(404, f"no hook named {hook!r}; configured hooks: {names}", code="hook_not_found")
        service.rate_limit(hook, rate_limit)
        return await read_json(settings.max_body_bytes, body=body)

    @public
    async def wake() -> Any:
        req = parse(WakeRequest, await admit("wake"))
        run_id = await service.wake(req.text, req.mode)
        return jsonify({"ok": True, "mode": req.mode, **({"run_id": run_id} if run_id else {})})

    @public
    async def agent() -> Any:
        req = parse(AgentRequest, await admit("agent"))
        job = AgentJob(
            hook="agent",
            name=req.name or "agent",
            message=req.message,
            agent=service.check_agent(req.agent) if req.agent else service.default_agent,
            session_key=(service.check_session_key(req.session_key, from_request=True)
                         if req.session_key is not None else f"hook:{uuid.uuid4().hex}"),
            wake_mode=req.wake_mode,
            model=req.model,
            timeout_seconds=req.timeout_seconds,
            summary_to_main=req.summary_to_main,
        )
        run_id = await service.start_agent(job)
        return jsonify({"ok": True, "run_id": run_id}), 202

    @public
    async def run_status(run_id: str) -> Any:
        await authenticate(settings.token or "", max_body_bytes=0, allow_signature=False)
        g.principal = PRINCIPAL
        record = await service.status(run_id)
        if record is None:
            raise ApiError(
                404,
                f"no hook run {run_id!r}: unknown, or finished more than {settings.run_retention_seconds:g} "
                "seconds ago (run_retention_seconds)",
                param="run_id", code="run_not_found",
            )
        return jsonify(record.as_json())

    @public
    async def mapped(name: str) -> Any:
        payload = await admit(name, table.rate_limit(name), known=name in table)
        headers = safe_headers(request.headers)
        transformed = await run_transforms(service.kernel.pm, name, payload, headers)
        if transformed is None:
            return Response(status=204)
        ctx = build_context(transformed, headers, _query(), name)
        mapping = table.select(name, ctx)
        if mapping is None:
            return jsonify({"ok": True, "skipped": f"no mapping for {name!r} matched this request"})
        skipped = apply_preset(mapping, ctx)
        if isinstance(skipped, Skipped):
            return jsonify({"ok": True, "skipped": skipped.reason})
        job = plan(service, mapping, ctx)
        if isinstance(job, WakeJob):
            run_id = await service.wake(job.text, job.mode, hook=name)
            return jsonify({"ok": True, "hook": name, "mode": job.mode, **({"run_id": run_id} if run_id else {})})
        run_id = await service.start_agent(job)
        return jsonify({"ok": True, "hook": name, "run_id": run_id}), 202

    bp.add_url_rule("/wake", "wake", wake, methods=["POST"])
    bp.add_url_rule("/agent", "agent", agent, methods=["POST"])
    bp.add_url_rule("/runs/<run_id>", "run_status", run_status, methods=["GET"])
    bp.add_url_rule("/<name>", "mapped", mapped, methods=["POST"])
    return bp


def _query() -> dict[str, str]:
    """The query string, first value per key (token-like names were already refused)."""
    return {k: request.args.get(k, "") for k in request.args}
