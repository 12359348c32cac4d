"""An event's clip and spectrogram (written by the recorder, shared/clips.py), and reviews.

    GET  /events/{id}/clip          the audio (Ogg Opus or FLAC), with HTTP range requests
    GET  /events/{id}/spectrogram   the PNG
    POST /events/{id}/review        {"verdict": "correct" | "wrong"} (a write: the token)
    GET  /reviews                   per label, how many detections were marked correct, wrong

404: no such event (or no clip for it yet); 410: its clip is not kept, and why (withheld for
privacy, its audio dropped, removed by retention, or its file gone from the disk).
"""

import time
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.convertors import Convertor, register_url_convertor

from services.api.deps import (
    ERRORS,
    READ,
    READ_OR_QUERY_TOKEN,
    WRITE,
    RedisClient,
    Settings,
    Shards,
)
from shared import clips, detections, reviews, streams
from shared.messages import Clip
from shared.topology import Topology


class EventIdConvertor(Convertor[str]):
    """An event id in a path: anything, its `/` included (`source/label/ms`; sent as %2F)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("event_id", EventIdConvertor())
router = APIRouter(tags=["events"])

CLIP_ERRORS = {**ERRORS, 404: {"description": "no such event, or no clip for it yet",
                               "model": ERRORS[400]["model"]},
               410: {"description": "the event's clip is not kept; `detail` says why",
                     "model": ERRORS[400]["model"]}}
RETRY_AFTER_S = 5


@router.get("/events/{event_id:event_id}/clip", dependencies=[READ_OR_QUERY_TOKEN],
            responses=CLIP_ERRORS, response_class=FileResponse)
def clip_audio(event_id: str, settings: Settings, shards: Shards) -> FileResponse:
    """The event's clip: `pre roll` before its start to `post roll` after its end. Supports
    `Range` (a player seeks)."""
    clip = _ready_clip(shards, event_id)
    return _file(settings.clips_dir, clip.audio, event_id)


@router.get("/events/{event_id:event_id}/spectrogram", dependencies=[READ_OR_QUERY_TOKEN],
            responses=CLIP_ERRORS, response_class=FileResponse)
def clip_spectrogram(event_id: str, settings: Settings, shards: Shards) -> FileResponse:
    """The clip's log-mel spectrogram (PNG), the event's start and end marked."""
    clip = _ready_clip(shards, event_id)
    return _file(settings.clips_dir, clip.spectrogram, event_id)


class ReviewIn(BaseModel):
    verdict: Literal["correct", "wrong"]


class ReviewOut(BaseModel):
    id: str
    label: str
    verdict: Literal["correct", "wrong"]
    at: float = Field(description="unix seconds")


@router.post("/events/{event_id:event_id}/review", dependencies=[WRITE], responses=CLIP_ERRORS,
             response_model=ReviewOut)
def review(event_id: str, body: ReviewIn, client: RedisClient, shards: Shards) -> dict:
    """Mark a detection correct or wrong (a later review replaces it). Wrong ones become
    negatives of their label for `soundhive embed --from-reviews`."""
    event = detections.find(shards, event_id)
    if event is None:
        raise HTTPException(404, f"no event {event_id!r}")
    return reviews.write(client, event, body.verdict, time.time()).fields()


class ReviewCounts(BaseModel):
    correct: dict[str, int] = Field(description="label -> detections marked correct")
    wrong: dict[str, int] = Field(description="label -> detections marked wrong")


@router.get("/reviews", dependencies=[READ], responses=ERRORS, response_model=ReviewCounts)
def review_counts(client: RedisClient) -> dict:
    """Per label, how many of its detections users marked correct and wrong."""
    return reviews.counts(client)


def _ready_clip(shards: Topology, event_id: str) -> Clip:
    records = clips.records_shard(shards.count)
    clip = clips.read(shards.client(records), event_id, records)
    if clip is None:
        event = detections.find(shards, event_id)
        if event is None:
            raise HTTPException(404, f"no event {event_id!r}")
        shard = streams.shard_for(event.source, shards.count)
        if shards.client(shard).zscore(shard.key(streams.CLIP_JOBS), event_id) is not None:
            raise HTTPException(404, "the clip is not written yet", headers={
                "Retry-After": str(RETRY_AFTER_S)})
        raise HTTPException(404, "no clip was recorded for this event")
    if clip.status != "ready":
        raise HTTPException(410, f"clip {clips.describe(clip)}")
    return clip


def _file(folder: Path, name: str, event_id: str) -> FileResponse:
    path = folder / name
    if not path.is_file():
        raise HTTPException(410, "clip gone: its file is no longer on the disk")
    media_type = clips.MEDIA_TYPES[path.suffix]
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private"},
                        filename=f"{event_id.replace('/', '_')}{path.suffix}",
                        content_disposition_type="inline")
