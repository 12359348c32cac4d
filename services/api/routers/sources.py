"""GET /sources: each source's status, level and current top labels."""

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.api.deps import ERRORS, READ, LabelScore, RedisClient
from shared.status import read_sources

router = APIRouter(tags=["sources"])


class Level(BaseModel):
    rms: float
    dbfs: float


class SourceOut(BaseModel):
    source: str
    state: str = Field(description="running | retrying | finished | failed")
    detail: str = Field(description="why, when retrying or failed")
    last_seen: float = Field(description="unix seconds")
    chunks: int
    level: Level
    labels: list[LabelScore] = Field(description="current top labels, highest first")


class SourcesOut(BaseModel):
    sources: list[SourceOut]


@router.get("/sources", dependencies=[READ], response_model=SourcesOut, responses=ERRORS)
def sources(client: RedisClient) -> dict:
    """Each source: status, last seen, level, current top labels."""
    return {"sources": [{
        "source": view.status.source, "state": view.status.state,
        "detail": view.status.detail, "last_seen": view.status.updated,
        "chunks": view.status.seq + 1,
        "level": {"rms": round(view.rms, 6), "dbfs": view.dbfs},
        "labels": [{"label": name, "score": score} for name, score in
                   (view.latest.labels if view.latest else [])],
    } for view in read_sources(client)]}
