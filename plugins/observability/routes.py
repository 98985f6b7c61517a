"""``GET /metrics`` (Prometheus text) and ``GET /-/usage`` (usage per key), for admins."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, g, jsonify, request

from kernel import ApiError, public
from plugins.observability.ledger import GROUP_COLUMNS, GroupBy
from plugins.observability.settings import ObservabilitySettings

if TYPE_CHECKING:
    from kernel.runtime import Kernel
    from plugins.observability.multiproc import MultiprocessExport
    from plugins.observability.observer import ObservabilityObserver

MAX_PRINCIPAL_LENGTH = 200


def blueprint(kernel: Kernel, settings: ObservabilitySettings, observer: ObservabilityObserver,
              export: MultiprocessExport | None = None) -> Blueprint:
    """The plugin's two routes; ``/metrics`` is public only with ``metrics_public = true``.
    With ``export`` (several worker processes) ``/metrics`` sums every worker's files."""
    bp = Blueprint("observability", __name__)

    def require_admin() -> None:
        if not kernel.auth.is_admin(g.principal):
            raise ApiError(403, f"key {g.principal!r} is not an admin; operator endpoints need the main "
                           "token or a key with admin = true", code="admin_required")

    async def metrics() -> Any:
        if not settings.metrics_public:
            require_admin()
        observer.drain()  # the finished runs not applied yet
        text = export.render() if export is not None else generate_latest(observer.metrics.registry)
        return Response(text, content_type=CONTENT_TYPE_LATEST)

    bp.add_url_rule("/metrics", "metrics", public(metrics) if settings.metrics_public else metrics,
                    methods=["GET"])

    @bp.get("/-/usage")
    async def usage() -> Any:
        require_admin()
        args = request.args
        principal = args.get("principal") or None
        if principal is not None and len(principal) > MAX_PRINCIPAL_LENGTH:
            raise ApiError(400, f"principal is longer than {MAX_PRINCIPAL_LENGTH} characters", param="principal")
        group_by = args.get("group_by") or "principal"
        if group_by not in GROUP_COLUMNS:
            raise ApiError(400, f"group_by must be one of {', '.join(GROUP_COLUMNS)}; got {group_by[:40]!r}",
                           param="group_by")
        since, until = parse_time(args.get("since"), "since"), parse_time(args.get("until"), "until")
        rows = await observer.usage.summary(principal=principal, since=since, until=until,
                                            group_by=cast(GroupBy, group_by))
        return jsonify({"object": "list", "group_by": group_by, "since": since, "until": until, "data": rows})

    return bp


def parse_time(value: str | None, param: str) -> float | None:
    """``2026-12-07``, an ISO-8601 date-time (UTC unless it says otherwise) or Unix seconds."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{param} must be a date (2026-12-07), an ISO-8601 date-time or Unix seconds; "
                       f"got {value[:40]!r}", param=param) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
