"""GET /events: detections newest first, filtered and cursor-paged (the HTML history page
instead when a browser asks for text/html), each with its clip's links and review; GET
/events.csv: the same, filtered alike, as CSV."""

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from services.api.deps import ERRORS, READ_OR_QUERY_TOKEN, STATIC, Settings, Shards, check_read
from shared import clips, detections, reviews
from shared.messages import Event
from shared.topology import Topology

MAX_LIMIT = 500
CSV_MAX_ROWS = 10000
CSV_COLUMNS = ("id", "source", "label", "categories", "score", "start_time", "end_time",
               "duration_s", "model", "clip_status", "review")

router = APIRouter(tags=["events"])


class EventOut(BaseModel):
    id: str
    source: str
    label: str
    score: float = Field(description="peak score so far")
    start: float = Field(description="seconds from the source's start")
    end: float | None = Field(description="null while the sound goes on")
    start_time: float = Field(description="unix seconds")
    end_time: float | None
    model: str
    categories: list[str] = Field(description="the label's AudioSet ancestors, nearest first; "
                                  "a `label` filter matches these too")
    clip: str | None = Field(None, description="URL of its clip (audio), when one is kept")
    spectrogram: str | None = Field(None, description="URL of its clip's spectrogram (PNG)")
    clip_status: str | None = Field(None, description="ready, or why there is no clip: "
                                    "withheld (speech), dropped (...), skipped (disk full), "
                                    "expired (...); null: none recorded (yet)")
    review: Literal["correct", "wrong"] | None = Field(None, description="a user's verdict")


class EventsPage(BaseModel):
    events: list[EventOut]
    next: str | None = Field(description="cursor of the next page; null on the last")


def event_filters(
    source: str | None = None,
    label: Annotated[str | None, Query(description="a label or a category of it "
                                       "(label=Animal finds Bark)")] = None,
    text: Annotated[str | None, Query(description="a part of the label or of a category, in "
                                      "any case (text=bar finds Bark)")] = None,
    since: Annotated[float | None, Query(description="start_time >= since (unix s)")] = None,
    until: Annotated[float | None, Query(description="start_time <= until (unix s)")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
) -> detections.Query:
    return detections.Query(source, label, since, until, min_score, text=text or None)


Filters = Annotated[detections.Query, Depends(event_filters)]


@router.get("/events", response_model=EventsPage, responses=ERRORS)
def events(
    request: Request,
    response: Response,
    settings: Settings,
    shards: Shards,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: str | None = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Any:
    """Detections newest first: a start and its end are one object (`end` null while the
    sound goes on), with the links of its clip when one is kept. `next` is the cursor of the
    following page, null on the last."""
    headers = {"Vary": "Accept", "Cache-Control": "no-store"}  # HTML and JSON share a URL
    if _wants_html(request):  # the page holds no data: it asks for it with the token
        return FileResponse(STATIC / "events.html", headers=headers)
    check_read(settings, authorization)
    response.headers.update(headers)
    found, next_cursor = _page(shards, replace(filters, limit=limit, cursor=cursor))
    return {"events": detection_rows(shards, found), "next": next_cursor}


@router.get("/events.csv", dependencies=[READ_OR_QUERY_TOKEN], responses=ERRORS,
            response_class=Response)
def events_csv(shards: Shards, filters: Filters) -> Response:
    """The detections /events finds with the same filters, newest first, as CSV (at most
    CSV_MAX_ROWS; times in UTC, ISO 8601)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    cursor, rows = None, 0
    while rows < CSV_MAX_ROWS:
        found, cursor = _page(shards, replace(
            filters, limit=min(MAX_LIMIT, CSV_MAX_ROWS - rows), cursor=cursor))
        for item in detection_rows(shards, found):
            writer.writerow(_csv_row(item))
        rows += len(found)
        if cursor is None:
            break
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="soundhive-events.csv"',
        "Cache-Control": "no-store"})


def _page(shards: Topology, query: detections.Query) -> tuple[list[Event], str | None]:
    try:
        return detections.page(shards, query)
    except detections.CursorError as exc:
        raise HTTPException(400, str(exc)) from None


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


def detection_rows(shards: Topology, found: list[Event]) -> list[dict]:
    """Detections as /events shows them: each event without `kind` (`end` null says it goes
    on), with its clip's links and status, and its review."""
    ids = [event.id for event in found]
    records = clips.records_shard(shards.count)
    kept = clips.read_many(shards.client(records), ids, records)
    verdicts = reviews.verdicts(shards.home, ids)
    shown = []
    for event in found:
        fields = event.fields()
        del fields["kind"]
        clip = kept.get(event.id)
        if clip is not None and clip.status == "ready":
            fields |= clips.clip_urls(event.id)
        fields["clip_status"] = clips.describe(clip) if clip else None
        fields["review"] = verdicts.get(event.id)
        shown.append(fields)
    return shown


def _csv_row(item: dict) -> list:
    return [item["id"], item["source"], item["label"], "; ".join(item["categories"]),
            item["score"], _iso(item["start_time"]), _iso(item["end_time"]),
            "" if item["end"] is None else round(item["end"] - item["start"], 3), item["model"],
            item["clip_status"] or "", item["review"] or ""]


def _iso(unix: float | None) -> str:
    return "" if unix is None else datetime.fromtimestamp(unix, UTC).isoformat(
        timespec="milliseconds")
