"""POST /classify: an uploaded file, answered like `soundhive classify --json`."""

import re
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from pydantic import BaseModel

from services.api.deps import ERRORS, WRITE, LabelScore, Settings
from shared.audio import AudioError, AudioTooLong
from shared.inference import classify_file
from shared.ranking import top_labels

UPLOAD_BLOCK = 1 << 20
SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]+$")  # kept: decoders pick formats by it

router = APIRouter(tags=["classify"])


class ClassifyOut(BaseModel):
    file: str
    duration_s: float
    model: str
    labels: list[LabelScore]
    timeline: list[dict] | None = None


async def _one_file(request: Request) -> None:
    """400 for a form holding several files, of which only the last would be classified."""
    files = (await request.form()).getlist("file")  # the form FastAPI parsed (cached)
    if len(files) > 1:
        raise HTTPException(400, f"the form holds {len(files)} `file` parts: send one file per "
                                 "request")


@router.post("/classify", dependencies=[WRITE, Depends(_one_file)], response_model=ClassifyOut,
             response_model_exclude_none=True, responses=ERRORS)
def classify(
    request: Request,
    settings: Settings,
    file: Annotated[UploadFile, File(description="an audio file")],
    timeline: bool = False,
    top: Annotated[int, Query(ge=1, le=50)] = 5,
) -> dict:
    """Classify an uploaded file: the same JSON as `soundhive classify --json`."""
    model = request.app.state.model
    if model is None:
        raise HTTPException(503, request.app.state.model_error)
    with tempfile.TemporaryDirectory(prefix="soundhive-upload-") as folder:
        path = _save_upload(file, Path(folder), settings.max_upload_bytes)
        try:
            result = classify_file(model, path, max_seconds=settings.max_audio_s)
        except AudioTooLong:
            raise HTTPException(413, too_long(settings.max_audio_s)) from None
        except AudioError as exc:
            raise HTTPException(400, str(exc).replace(str(path), file.filename or "upload")
                                ) from None
    result.source = file.filename or "upload"
    return result.json_row(lambda s: top_labels(s, result.class_names, top), timeline)


def too_large(limit: int) -> str:
    """Why an upload over `limit` bytes is refused (413)."""
    return f"the upload is larger than {limit // 2**20} MB (SOUNDHIVE_API_MAX_UPLOAD_MB)"


def too_long(limit_s: float) -> str:
    """Why an upload holding more than `limit_s` seconds of audio is refused (413)."""
    return f"the upload holds more than {limit_s:g} s of audio (SOUNDHIVE_API_MAX_AUDIO_S)"


def _save_upload(upload: UploadFile, folder: Path, limit: int) -> Path:
    """Copy an upload to a file, refusing it (413) past `limit` bytes or empty (400)."""
    suffix = Path(upload.filename or "").suffix[:10]
    path = folder / ("upload" + (suffix if SAFE_SUFFIX.match(suffix) else ""))
    size = 0
    with path.open("wb") as out:
        while block := upload.file.read(UPLOAD_BLOCK):
            size += len(block)
            if size > limit:
                raise HTTPException(413, too_large(limit))
            out.write(block)
    if size == 0:
        raise HTTPException(400, "the upload is empty")
    return path
