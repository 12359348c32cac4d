"""GET /sources (each source's status, level, current top labels, detections going on and
latest event; filtered, sorted and paged), /sources/summary (counts) and
/sources/{source}/detail (its recent levels and events)."""

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from services.api.deps import ERRORS, READ, ErrorOut, LabelScore, Shards
from services.api.routers.events import EventOut, detection_rows
from shared import detections, status
from shared.status import SourceQuery, SourceView, read_sources

DETAIL_EVENTS = 10

router = APIRouter(tags=["sources"])


class Level(BaseModel):
    rms: float
    dbfs: float


class LastEvent(BaseModel):
    id: str
    label: str
    score: float
    start_time: float
    end_time: float | None = Field(description="null while it goes on")


class SourceOut(BaseModel):
    source: str
    state: str = Field(description="running | retrying | finished | failed")
    detail: str = Field(description="why, when retrying or failed")
    last_seen: float = Field(description="unix seconds")
    chunks: int
    level: Level
    silent: bool = Field(description=f"running, and quieter than {status.SILENT_DBFS:g} dBFS")
    labels: list[LabelScore] = Field(description="current top labels, highest first")
    ongoing: int = Field(description="its detections going on")
    last_event: LastEvent | None = Field(description="its detection with the latest start")


class SourcesOut(BaseModel):
    sources: list[SourceOut]
    total: int = Field(description="how many sources match the filters (all pages)")


class SummaryOut(BaseModel):
    sources: int
    states: dict[str, int] = Field(description="sources by state: " + ", ".join(status.STATES))
    silent: int = Field(description="running sources quieter than "
                                    f"{status.SILENT_DBFS:g} dBFS")
    with_ongoing: int = Field(description="sources with a detection going on")
    ongoing: int = Field(description="detections going on, all sources")


class LevelPoint(BaseModel):
    t: float = Field(description="unix seconds")
    dbfs: float


class SourceDetailOut(BaseModel):
    source: SourceOut
    levels: list[LevelPoint] = Field(description="its recent levels, oldest first (about the "
                                     f"last {status.LEVEL_HISTORY} chunks)")
    events: list[EventOut] = Field(description=f"its {DETAIL_EVENTS} latest detections, "
                                   "newest first")


@router.get("/sources", dependencies=[READ], response_model=SourcesOut, responses=ERRORS)
def sources(
    shards: Shards,
    q: Annotated[str, Query(max_length=200, description="a part of the source's id, "
                            "any case")] = "",
    state: Annotated[Literal[(*status.STATES, "silent")] | None, Query(
        description="only sources in this state (silent: running but quiet)")] = None,
    ongoing: Annotated[bool | None, Query(
        description="true: only sources with a detection going on; false: only without")] = None,
    sort: Annotated[Literal[status.SORT_KEYS], Query()] = "source",
    order: Literal["asc", "desc"] = "asc",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int | None, Query(ge=1, description="a page's size (default: all)")
                     ] = None,
) -> dict:
    """Each source: status, last seen, level, current top labels, detections going on, latest
    event; filtered, sorted and paged by the query (without one: all, by id). `total` counts
    every source that matches."""
    query = SourceQuery(q, state, ongoing, sort, order == "desc", offset, limit)
    page, total = status.select(read_sources(shards), query)
    return {"sources": [_source(view) for view in page], "total": total}


@router.get("/sources/summary", dependencies=[READ], response_model=SummaryOut,
            responses=ERRORS)
def summary(shards: Shards) -> dict:
    """How many sources there are by state, how many are silent, how many detections go on."""
    return status.summary(read_sources(shards))


@router.get("/sources/{source:path}/detail", dependencies=[READ],
            response_model=SourceDetailOut,
            responses={**ERRORS, 404: {"description": "no such source", "model": ErrorOut}})
def source_detail(source: str, shards: Shards) -> dict:
    """One source: what /sources says of it, its recent levels and its latest detections."""
    view = next((v for v in read_sources(shards) if v.status.source == source), None)
    if view is None:
        raise HTTPException(404, f"no source {source!r}")
    events, _ = detections.page(shards, detections.Query(source=source, limit=DETAIL_EVENTS))
    return {"source": _source(view),
            "levels": [{"t": t, "dbfs": db} for t, db in status.levels(shards, source)],
            "events": detection_rows(shards, events)}


def _source(view: SourceView) -> dict:
    last = view.last_event
    return {
        "source": view.status.source, "state": view.status.state,
        "detail": view.status.detail, "last_seen": view.status.updated,
        "chunks": view.status.seq + 1,
        "level": {"rms": round(view.rms, 6), "dbfs": view.dbfs}, "silent": view.silent,
        "labels": [{"label": name, "score": score} for name, score in
                   (view.latest.labels if view.latest else [])],
        "ongoing": view.ongoing,
        "last_event": last and {"id": last.id, "label": last.label, "score": last.score,
                                "start_time": last.start_time, "end_time": last.end_time},
    }
