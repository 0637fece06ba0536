"""The HTTP service: `POST /v1/classify`, `POST /v1/generate`, `GET /v1/tasks`, `GET /v1/stats`, `GET /healthz`
(OpenAPI at /docs)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import math
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..decoding import Decoding
from ..errors import ConfigError, DataError
from ..multitask import MultiTaskClassifier, MultiTaskGenerator
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


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting (max_tokens, num_beam) must not pass as a default

    texts: list[str | dict[str, str]] = Field(
        min_length=1, description="Sources to write from; an object gives the fields of tasks that read several columns."
    )
    tasks: list[str] | None = Field(default=None, min_length=1, description="Task names (GET /v1/tasks); all generation tasks when left out.")
    num_beams: int = Field(default=Decoding.num_beams, ge=1, description="Beam width (1: greedy decoding).")
    max_new_tokens: int | None = Field(default=None, ge=1, description="Most tokens written (default: each task's trained target length).")
    length_penalty: float = Field(default=Decoding.length_penalty, allow_inf_nan=False, description="Beam scores are divided by length to this power.")
    no_repeat_ngram_size: int = Field(default=Decoding.no_repeat_ngram_size, ge=0, description="Never repeat an n-gram this long (0: off).")


class GenerateResponse(BaseModel):
    results: list[dict[str, str]] = Field(description="Per source, per task: the text written after it.")
    truncated: list[int] = Field(description="Indices of sources cut to a task's max_length tokens.")
    base_model: str


def create_app(
    classifier: MultiTaskClassifier, settings: ServiceSettings | None = None, generator: MultiTaskGenerator | None = None
) -> FastAPI:
    """The service over `classifier`'s tasks, and `generator`'s (on the same backbone) when given."""
    settings = settings or ServiceSettings()
    # One thread for every model call: classify and generate share the backbone (and suffix-lora's hooks on it).
    model_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="suffixtune-model")
    classify = functools.partial(classifier.classify, batch_size=settings.max_batch_texts)
    batcher = MicroBatcher(classify, settings.max_batch_texts, settings.max_wait_ms, model_thread)
    writer = None
    if generator is not None:
        def write(rows: list, key: tuple[tuple[str, ...], Decoding]) -> list[dict[str, str]]:
            return generator.generate(rows, key[0], key[1], batch_size=settings.max_batch_texts)

        writer = MicroBatcher(write, settings.max_batch_texts, settings.max_wait_ms, model_thread)
    batchers = [b for b in (batcher, writer) if b is not None]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        for each in batchers:
            await each.start()
        yield
        for each in batchers:
            await each.stop()
        model_thread.shutdown(wait=True)

    app = FastAPIOffline(  # /docs and /redoc from assets in the installed package: they work without a network
        title="suffixtune", version=__version__, lifespan=lifespan,
        description="Many text-classification and generation tasks on one frozen causal LM; suffix tasks answer from "
        "one pass per text.",
    )
    app.state.batcher, app.state.writer = batcher, writer

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, with each offending input written so JSON can carry it (inf and NaN cannot be)."""
        return JSONResponse({"detail": [json_safe(entry) for entry in error.errors()]}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and request.url.path in ("/v1/classify", "/v1/generate"):  # a body FastAPI could not parse at all
            return JSONResponse({"detail": "the body is not JSON that can be read: it must be UTF-8 and nested at most a "
                                 "few hundred levels, e.g. {\"texts\": [\"...\"]}"}, status_code=422)
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/tasks")
    async def tasks() -> dict[str, Any]:
        loaded = [*classifier.tasks.values(), *(generator.tasks.values() if generator is not None else [])]
        return {"base_model": classifier.base_model, "tasks": [info.to_dict() for info in loaded]}

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        """Classification batches; generation batches under "generate" when the service writes text."""
        return batcher.stats.to_dict() | ({"generate": writer.stats.to_dict()} if writer is not None else {})

    @app.post("/v1/classify", responses={404: {"description": "Unknown task"}, 413: {"description": "Too many or too long texts"},
                                         422: {"description": "Malformed request or text"}})
    async def classify(request: ClassifyRequest) -> ClassifyResponse:
        if not classifier.classifiers:
            raise HTTPException(404, "no classification tasks are loaded; this service writes text: POST /v1/generate")
        names = check_request(classifier, request.texts, request.tasks, settings)
        truncated = check_texts(classifier, request.texts, names, settings.long_texts)
        results = await answer(batcher, request.texts, tuple(names), "classifying")
        return ClassifyResponse(results=results, truncated=truncated, base_model=classifier.base_model)

    @app.post("/v1/generate", responses={404: {"description": "Unknown task, or no generation tasks loaded"},
                                         413: {"description": "Too many or too long texts, or too many beams"},
                                         422: {"description": "Malformed request or text"}})
    async def generate(request: GenerateRequest) -> GenerateResponse:
        if generator is None:
            raise HTTPException(404, "no generation tasks are loaded; serve a generation artifact for POST /v1/generate")
        if request.num_beams > settings.max_num_beams:
            raise HTTPException(413, f"num_beams: {request.num_beams}, the limit is {settings.max_num_beams}")
        names = check_request(generator, request.texts, request.tasks, settings)
        decoding = Decoding(num_beams=request.num_beams, max_new_tokens=request.max_new_tokens,
                            length_penalty=request.length_penalty, no_repeat_ngram_size=request.no_repeat_ngram_size)
        for name in names:
            try:
                generator.classifiers[name].new_tokens(decoding)
            except ConfigError as error:
                raise HTTPException(422, f"task {name!r}: {error}") from None
        truncated = check_texts(generator, request.texts, names, settings.long_texts)
        results = await answer(writer, request.texts, (tuple(names), decoding), "writing")
        return GenerateResponse(results=results, truncated=truncated, base_model=generator.base_model)

    return app


def check_request(models: MultiTaskClassifier, texts: list, tasks: list[str] | None, settings: ServiceSettings) -> list[str]:
    """The tasks asked for; a 413 for too many or too long texts, a 404 for an unknown task, a 422 for a blank text."""
    if len(texts) > settings.max_texts:
        raise HTTPException(413, f"texts: {len(texts)} in one request, the limit is {settings.max_texts}; send fewer per request")
    for index, text in enumerate(texts):
        size = len(text) if isinstance(text, str) else sum(len(v) for v in text.values())
        if size > settings.max_text_chars:
            raise HTTPException(413, f"texts[{index}]: {size} characters, the limit is {settings.max_text_chars}")
        check_text(index, text)
    try:
        return models.check_tasks(tasks)
    except ConfigError as error:
        raise HTTPException(404, str(error)) from None


async def answer(batcher: MicroBatcher, texts: list, key, doing: str) -> list:
    """The batcher's results; bad input is a 422, a failure of the model a 500 (logged)."""
    try:
        return await batcher.submit(texts, key)
    except (DataError, ConfigError) as error:
        raise HTTPException(422, str(error)) from None
    except Exception as error:
        logger.exception("%s a request failed", doing)
        raise HTTPException(500, f"the model failed on this request: {type(error).__name__}: {error}") from None


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
