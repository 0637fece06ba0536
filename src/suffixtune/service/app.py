"""The HTTP service: `POST /v1/classify`, `GET /v1/tasks`, `GET /v1/stats`, `GET /healthz` (OpenAPI at /docs)."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import ConfigError, DataError
from ..multitask import MultiTaskClassifier
from ..tasks.data import not_unicode
from .batcher import MicroBatcher
from .settings import ServiceSettings

logger = logging.getLogger(__name__)


class ClassifyRequest(BaseModel):
    texts: list[str | dict[str, str]] = Field(
        min_length=1, description="Texts to classify; an object gives the fields of text-pair tasks, e.g. premise and hypothesis."
    )
    tasks: list[str] | None = Field(default=None, min_length=1, description="Task names (GET /v1/tasks); all tasks when left out.")


class ClassifyResponse(BaseModel):
    results: list[dict[str, dict[str, Any]]] = Field(
        description="Per text, per task: label and probabilities, or value for regression."
    )
    truncated: list[int] = Field(description="Indices of texts cut to a task's max_length tokens.")
    base_model: str


def create_app(classifier: MultiTaskClassifier, settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    run = functools.partial(classifier.classify, batch_size=settings.max_batch_texts)
    batcher = MicroBatcher(run, settings.max_batch_texts, settings.max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPIOffline(  # /docs and /redoc from assets in the installed package: they work without a network
        title="suffixtune", version=__version__, lifespan=lifespan,
        description="Many text-classification tasks on one frozen causal LM, answered from one pass per text.",
    )
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, with each offending input written so JSON can carry it (inf and NaN cannot be)."""
        return JSONResponse({"detail": [json_safe(entry) for entry in error.errors()]}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and request.url.path == "/v1/classify":  # a body FastAPI could not parse at all
            return JSONResponse({"detail": "the body is not JSON that can be read: it must be UTF-8 and nested at most a "
                                 "few hundred levels, e.g. {\"texts\": [\"...\"]}"}, status_code=422)
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/tasks")
    async def tasks() -> dict[str, Any]:
        return {"base_model": classifier.base_model, "tasks": [info.to_dict() for info in classifier.tasks.values()]}

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        return batcher.stats.to_dict()

    @app.post("/v1/classify", responses={404: {"description": "Unknown task"}, 413: {"description": "Too many or too long texts"},
                                         422: {"description": "Malformed request or text"}})
    async def classify(request: ClassifyRequest) -> ClassifyResponse:
        if len(request.texts) > settings.max_texts:
            raise HTTPException(413, f"texts: {len(request.texts)} in one request, the limit is {settings.max_texts}; send fewer per request")
        for index, text in enumerate(request.texts):
            size = len(text) if isinstance(text, str) else sum(len(v) for v in text.values())
            if size > settings.max_text_chars:
                raise HTTPException(413, f"texts[{index}]: {size} characters, the limit is {settings.max_text_chars}")
            check_text(index, text)
        try:
            names = classifier.check_tasks(request.tasks)
        except ConfigError as error:
            raise HTTPException(404, str(error)) from None
        truncated = check_texts(classifier, request.texts, names, settings.long_texts)
        try:
            results = await batcher.submit(request.texts, names)
        except (DataError, ConfigError) as error:
            raise HTTPException(422, str(error)) from None
        except Exception as error:
            logger.exception("classifying a request failed")
            raise HTTPException(500, f"the model failed on this request: {type(error).__name__}: {error}") from None
        return ClassifyResponse(results=results, truncated=truncated, base_model=classifier.base_model)

    return app


def check_text(index: int, text: str | dict[str, str]) -> None:
    """A 422 for text no tokenizer should see: blank, or not encodable as UTF-8 (a lone surrogate such as \\ud800)."""
    for field_name, value in ([(None, text)] if isinstance(text, str) else text.items()):
        where = f"texts[{index}]" + ("" if field_name is None else f".{field_name}")
        if not value.strip():
            raise HTTPException(422, f"{where} is blank; every text needs words (training refuses blank texts too)")
        if problem := not_unicode(value):
            raise HTTPException(422, f"{where}: {problem}")


def json_safe(value: Any) -> Any:
    """`value` with what JSON cannot hold (inf, NaN, exceptions, bytes) written as text."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def check_texts(classifier: MultiTaskClassifier, texts: list, tasks: list[str], long_texts: str) -> list[int]:
    """Indices of texts longer than a task reads; with long_texts='reject', a 413 for the first of them."""
    try:
        groups = classifier.encode(texts, tasks)
    except DataError as error:
        raise HTTPException(422, f"{error} (texts counted from 1)") from None
    truncated = sorted({index for group in groups for index in group.truncated})
    if truncated and long_texts == "reject":
        group = next(g for g in groups if truncated[0] in g.truncated)
        index = truncated[0]
        raise HTTPException(
            413, f"texts[{index}]: {group.token_counts[index]} tokens, but task {group.tasks[0]!r} reads at most "
            f"{len(group.input_ids[index])}; shorten it (the server runs with long_texts='reject')",
        )
    return truncated
