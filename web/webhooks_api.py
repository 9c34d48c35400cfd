"""``/api/v1/webhooks``: register, list, change and remove webhooks; their delivery log,
redelivery by hand, and a ping."""

from __future__ import annotations

from aiohttp import web

from hydraissue.delivery import Delivery
from hydraissue.errors import Invalid, NotFound
from hydraissue.targets import TargetRefused
from hydraissue.webhooks import parse_create, parse_update
from web.keys import CONFIG, SERVICE
from web.params import known_query
from web.responses import json_response, read_json

routes = web.RouteTableDef()


async def _body(request: web.Request) -> object:
    return await read_json(request, request.app[CONFIG].max_json_bytes)


def _refused(exc: TargetRefused) -> Invalid:
    return Invalid("url", str(exc), {"field": "url", "reason": str(exc)})


@routes.post("/api/v1/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    known_query(request, ())
    values = parse_create(await _body(request))
    try:
        hook = await request.app[SERVICE].create_webhook(values)
    except TargetRefused as exc:
        raise _refused(exc) from None
    return json_response(
        hook.public_dict(), status=201, headers={"Location": f"/api/v1/webhooks/{hook.id}"}
    )


@routes.get("/api/v1/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    known_query(request, ())
    service = request.app[SERVICE]
    queued = service.deliveries.status()
    return json_response(
        [
            {**hook.public_dict(), "queued": queued.get(hook.id, {}).get("queued", 0)}
            for hook in service.webhooks.all()
        ]
    )


@routes.get("/api/v1/webhooks/{id}")
async def get_webhook(request: web.Request) -> web.Response:
    known_query(request, ())
    service = request.app[SERVICE]
    hook = service.webhooks.get(request.match_info["id"])
    queued = service.deliveries.status().get(hook.id, {}).get("queued", 0)
    return json_response({**hook.public_dict(), "queued": queued})


@routes.patch("/api/v1/webhooks/{id}")
async def patch_webhook(request: web.Request) -> web.Response:
    known_query(request, ())
    values = parse_update(await _body(request))
    try:
        hook = await request.app[SERVICE].update_webhook(request.match_info["id"], values)
    except TargetRefused as exc:
        raise _refused(exc) from None
    return json_response(hook.public_dict())


@routes.delete("/api/v1/webhooks/{id}")
async def delete_webhook(request: web.Request) -> web.Response:
    known_query(request, ())
    await request.app[SERVICE].delete_webhook(request.match_info["id"])
    return web.Response(status=204)


@routes.get("/api/v1/webhooks/{id}/deliveries")
async def deliveries(request: web.Request) -> web.Response:
    known_query(request, ())
    service = request.app[SERVICE]
    hook = service.webhooks.get(request.match_info["id"])
    journal = await service.deliveries.journal(hook.id)
    attempts = list(reversed(journal.attempts))
    return json_response([a.to_dict() for a in attempts])


@routes.post("/api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    known_query(request, ())
    delivery = await redeliver_from(request)
    return json_response({"queued": True, "delivery_id": delivery.id}, status=202)


async def redeliver_from(request: web.Request) -> Delivery:
    """Queue again the delivery the URL names (``{id}``, ``{delivery_id}``), or 404."""
    service = request.app[SERVICE]
    hook = service.webhooks.get(request.match_info["id"])
    delivery_id = request.match_info["delivery_id"]
    delivery = await service.deliveries.redeliver(hook.id, delivery_id)
    if delivery is None:
        raise NotFound(
            f"no delivery {delivery_id!r} among the last ones of {hook.id}",
            {"id": hook.id, "delivery_id": delivery_id},
        )
    return delivery


@routes.post("/api/v1/webhooks/{id}/ping")
async def ping(request: web.Request) -> web.Response:
    known_query(request, ())
    service = request.app[SERVICE]
    hook = service.webhooks.get(request.match_info["id"])
    attempt = await service.deliveries.ping(hook)
    return json_response({"ok": attempt.ok, **attempt.to_dict()})
