"""GET /healthz, /readyz and /metrics: open to everyone, whatever the token settings."""

import redis
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.api.deps import Shards

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request, response: Response, shards: Shards) -> dict:
    """Ready when the Redis of every shard answers (one problem per server or cluster node
    that does not, naming its shards), the shard count is the pipeline's and the model loaded."""
    problems = shards.unreachable_shards()
    if not problems:  # the shard count is read from shard 0's server: only when it answers
        try:
            if mismatch := shards.shard_count_problem():
                problems.append(mismatch)
        except redis.RedisError as exc:
            problems.append(f"redis: {type(exc).__name__}")
    if request.app.state.model is None:
        problems.append(request.app.state.model_error)
    response.status_code = 503 if problems else 200
    return {"status": "not ready" if problems else "ready", "problems": problems}


@router.get("/metrics")
def prometheus_metrics(request: Request) -> Response:
    """The process's metrics and every consumer group's lag and pending entries, read from
    Redis now (shared/metrics.py ConsumerGroups)."""
    body = generate_latest() + generate_latest(request.app.state.group_metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
