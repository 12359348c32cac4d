"""GET /events: detections newest first, filtered and cursor-paged (the HTML history page
instead when a browser asks for text/html)."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from services.api.deps import ERRORS, STATIC, Settings, Shards, check_read
from shared import detections
from shared.messages import Event

MAX_LIMIT = 500

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


class EventsPage(BaseModel):
    events: list[EventOut]
    next: str | None = Field(description="cursor of the next page; null on the last")


@router.get("/events", response_model=EventsPage, responses=ERRORS)
def events(
    request: Request,
    response: Response,
    settings: Settings,
    shards: Shards,
    source: str | None = None,
    label: Annotated[str | None, Query(description="a label or a category of it "
                                       "(label=Animal finds Bark)")] = None,
    since: Annotated[float | None, Query(description="start_time >= since (unix s)")] = None,
    until: Annotated[float | None, Query(description="start_time <= until (unix s)")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: str | None = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Any:
    """Detections newest first: a start and its end are one object (`end` null while the
    sound goes on). `next` is the cursor of the following page, null on the last."""
    headers = {"Vary": "Accept", "Cache-Control": "no-store"}  # HTML and JSON share a URL
    if _wants_html(request):  # the page holds no data: it asks for it with the token
        return FileResponse(STATIC / "events.html", headers=headers)
    check_read(settings, authorization)
    response.headers.update(headers)
    query = detections.Query(source, label, since, until, min_score, limit, cursor)
    try:
        found, next_cursor = detections.page(shards, query)
    except detections.CursorError as exc:
        raise HTTPException(400, str(exc)) from None
    return {"events": [detection(e) for e in found], "next": next_cursor}


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


def detection(event: Event) -> dict:
    """A detection as /events shows it: the event without `kind` (`end` null says it goes on)."""
    fields = event.fields()
    del fields["kind"]
    return fields
