"""The HTTP front door (SERVE=http), for RunPod's load-balancing endpoints: FastAPI on uvicorn.

    GET  /ping                          204 while the model loads and warms up, 200 ready, 503 broken
    GET  /v1/models                     the models `model` may name
    POST /v1/audio/speech               OpenAI's speech API: the audio, streamed as it is made
    POST /v1/audio/voices               store a voice (multipart, as OpenAI's SDK sends it)
    GET  /v1/audio/voices               the stored voices
    DELETE /v1/audio/voices/{voice_id}  remove one
    POST /v1/jobs                       a queue job's `input`, answered as /runsync answers it

The same engine and job contract as the queue door; each request's engine run is driven in a
thread of its own, its parts handed to the event loop as they are made. At most
MAX_CONCURRENT_REQUESTS runs at once (429 past it, at once); a client that goes away closes its
run's generator, which stops its sampling. Errors leave in OpenAI's error shape, mapped here once.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from functools import partial

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

import openai_api
from audio_io import FORMATS, streaming_wav_header
from config import Settings
from delivery import LB_PAYLOAD_BYTES, BodyDelivery
from engine import Engine, StreamPart
from errors import (AudioError, DiskSpaceError, GpuError, InvalidInput, JobError, LimitExceeded, ModelLoadError,
                    StorageError, TranscriptUnavailable, VerifyUnavailable, VoiceFetchError, VoiceNotFound,
                    as_job_error)
from job_schema import JobResult, parse_job_input
from scratch import job_directory
from voice_store import LocalFolder, VoiceStore

log = logging.getLogger("f5worker.http")

#: Typed errors -> HTTP status: the caller's input 400 (a transcript the worker cannot make
#: too: sending ref_text fixes it), an unknown voice 404, the worker's own faults 503 where a
#: retry (elsewhere) may succeed, else 500.
STATUS = ((VoiceNotFound, 404), (InvalidInput, 400), (LimitExceeded, 400), (AudioError, 400),
          (VoiceFetchError, 400), (TranscriptUnavailable, 400), (VerifyUnavailable, 400), (StorageError, 503),
          (DiskSpaceError, 503), (ModelLoadError, 503), (GpuError, 503))
#: A busy worker's answer: try again in this many seconds (the balancer may pick another worker).
RETRY_AFTER_S = 1
#: Mel frames per second of audio (24 kHz, hop 256), for SSE usage.
FRAMES_PER_SECOND = 24_000 / 256
VOICE_FORM_FIELDS = {"name", "audio_sample", "consent", "type", "ref_text"}


class Health:
    """What /ping says: starting (204) until the model is loaded and warmed up (WARMUP), then
    ready (200): the balancer sends no request that would pay for the warm-up. Broken (503) once
    the load failed or a request's failure asked for a fresh worker."""

    def __init__(self):
        self.state, self.reason = "starting", None

    def start(self, load: Callable[[], None], model: Callable[[], object]) -> None:
        """`load` (the queue door's load at start), then `model()` to learn whether it worked."""
        try:
            load()
            model()
        except Exception as exc:  # noqa: BLE001 - the reason is what /ping and requests answer
            self.broken(as_job_error(exc, "start").message)
        else:
            self.state = "ready"
            log.info("ready to serve")

    def broken(self, reason: str) -> None:
        if self.state != "broken":
            log.error("the worker is broken, /ping answers 503 from now: %s", reason)
        self.state, self.reason = "broken", reason


class Admission:
    """At most `limit` requests at work; one past it is refused at once."""

    def __init__(self, limit: int):
        self.limit, self.active, self._lock = limit, 0, threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


class Run:
    """One engine run, driven in a thread of its own; its items handed to the event loop in order.
    `cancel` makes the thread close the run's generator as soon as it yields again (the engine
    then closes its sampling); `on_end` is called when the thread has let go of the run."""

    def __init__(self, items: Callable[[], Iterator], on_end: Callable[[], None]):
        self.loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()
        self.stop, self.on_end = threading.Event(), on_end
        threading.Thread(target=self._drive, args=(items,), name="request", daemon=True).start()

    def _drive(self, items) -> None:
        try:
            run = items()
            try:
                for item in run:
                    if self.stop.is_set():
                        break
                    self._hand(("item", item))
                else:
                    self._hand(("end", None))
            finally:
                run.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the request, which maps it
            self._hand(("error", exc))
        finally:
            self.on_end()

    def _hand(self, entry) -> None:
        with suppress(RuntimeError):  # the loop is gone (shutting down): nobody is listening
            self.loop.call_soon_threadsafe(self.queue.put_nowait, entry)

    async def next(self):
        """The next item; None at the end; the run's error raised."""
        kind, value = await self.queue.get()
        if kind == "error":
            raise value
        return value

    def cancel(self) -> None:
        self.stop.set()


class BodyLimit:
    """Refuses a request body over `limit` bytes before it is read whole: at once by its
    Content-Length, else (chunked) as soon as what has arrived passes it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    def too_large(self) -> str:
        return f"The request body is over {self.limit / 2**20:.0f} MB, the most this worker reads."

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            response = JSONResponse(openai_api.error_body(self.too_large(), 413, "request_too_large"), 413)
            return await response(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self.too_large())
            return message

        await self.app(scope, limited, send)


def error_code(exc: JobError) -> str:
    name = type(exc).__name__
    if type(exc) is JobError:
        return "internal_error"
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


class Door:
    """The routes' shared state: settings, engine, voice store, health, admission."""

    def __init__(self, settings: Settings, engine: Engine | None = None, health: Health | None = None,
                 store: VoiceStore | None = None):
        self.settings = settings
        self.engine = engine or Engine(settings, voice_storage=None if settings.s3_enabled
                                       else LocalFolder(settings.local_voices_dir))
        self.health = health or Health()
        self.store = store or VoiceStore(settings, self.engine.voice_storage)
        self.admission = Admission(settings.max_concurrent_requests)

    def failure(self, exc: BaseException, job_id: str) -> JSONResponse:
        if isinstance(exc, HTTPException):  # the HTTP layer's own (a body over the limit, bad multipart)
            raise exc
        error = as_job_error(exc, job_id)
        if error.refresh_worker:
            self.health.broken(error.message)
        status = next((code for cls, code in STATUS if isinstance(error, cls)), 500)
        return JSONResponse(openai_api.error_body(error.message, status, error_code(error)), status)

    def check_serving(self) -> None:
        if self.health.state == "broken":
            raise ModelLoadError(f"This worker cannot serve: {self.health.reason}")

    def busy(self) -> JSONResponse:
        message = (f"This worker is serving its most requests at once ({self.settings.max_concurrent_requests}, "
                   f"MAX_CONCURRENT_REQUESTS): retry in {RETRY_AFTER_S} s.")
        return JSONResponse(openai_api.error_body(message, 429, "too_many_requests"), 429,
                            headers={"Retry-After": str(RETRY_AFTER_S)})

    async def begin(self, job_id: str, job, stream: bool, arrived: float, delivery=None):
        """The engine run of a parsed job and its first item (a streamed part, or a whole job's
        result); or (None, the response that refuses it): the worker at its limit, or the job
        failed before its first item. `arrived`: when the request came (`time.perf_counter()`),
        where the job's timings begin."""
        if not self.admission.enter():
            return None, self.busy()
        try:
            run = Run(lambda: self.engine.run(job_id, job, stream, delivery=delivery, arrived=arrived),
                      self.admission.leave)
        except BaseException:  # no thread, so no one else frees the place
            self.admission.leave()
            raise
        try:
            return run, await run.next()
        except asyncio.CancelledError:
            run.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - mapped once
            return None, self.failure(exc, job_id)


async def json_body(request: Request):
    try:
        return json.loads(await request.body())
    except ValueError:
        raise InvalidInput("Invalid input: the body is not valid JSON.") from None


def create_app(settings: Settings, engine: Engine | None = None, health: Health | None = None,
               store: VoiceStore | None = None) -> FastAPI:
    door = Door(settings, engine, health, store)
    app = FastAPI(title="F5-TTS worker", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.door = door

    def authorized(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
            raise HTTPException(401, "Give the worker's API key as `Authorization: Bearer <API_KEY>`.",
                                headers={"WWW-Authenticate": "Bearer"})

    api = APIRouter(dependencies=[Depends(authorized)])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        message = {404: f"No route {request.method} {request.url.path} on this worker.",
                   405: f"{request.method} is not a method of {request.url.path}."}.get(exc.status_code, exc.detail)
        code = {400: "invalid_input", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
                413: "request_too_large"}.get(exc.status_code, "http_error")
        if exc.status_code == 400 and not str(message).startswith("Invalid input"):
            message = f"Invalid input: {str(message).rstrip('.')}."
        return JSONResponse(openai_api.error_body(str(message), exc.status_code, code), exc.status_code,
                            headers=exc.headers)

    @app.get("/ping")
    async def ping():
        if door.health.state == "ready":
            return JSONResponse({"status": "healthy"})
        if door.health.state == "starting":
            return Response(status_code=204)
        return JSONResponse(openai_api.error_body(f"This worker cannot serve: {door.health.reason}", 503,
                                                  "worker_broken"), 503)

    @api.get("/v1/models")
    async def models():
        return openai_api.model_list(settings.f5_model)

    @api.post("/v1/audio/speech")
    async def speech(request: Request):
        arrived, job_id = time.perf_counter(), uuid.uuid4().hex
        try:
            door.check_serving()
            asked = openai_api.speech_request(await json_body(request), settings.f5_model)
            job = parse_job_input(asked.job, settings, streamed=asked.streamed)
            # the seed drawn now, so that a streamed answer can say it before the audio
            changes = {"seed": job.resolved_seed()}
            if asked.streamed:  # the body is the stream: the whole file is not needed (pcm: cheapest)
                changes.update(stream_format="pcm", output_format="pcm")
            job = job.model_copy(update=changes)
        except Exception as exc:  # noqa: BLE001 - mapped once
            return door.failure(exc, job_id)
        # SSE carries the audio as base64: four bytes on the wire for three of audio
        delivery = BodyDelivery(LB_PAYLOAD_BYTES * 3 // 4 if asked.stream_format == "sse" else LB_PAYLOAD_BYTES)
        run, first = await door.begin(job_id, job, asked.streamed, arrived, delivery)
        if run is None:
            return first
        headers = {"X-Seed": str(job.seed)}
        if asked.ignored:
            headers["X-Ignored-Fields"] = ",".join(asked.ignored)
        fmt, chars = asked.response_format, len(job.text or "")
        if not asked.streamed:  # the one item is the result; the audio is the delivery's body
            if asked.stream_format == "sse":
                events = openai_api.audio_delta(delivery.body) + done_event(first, chars)
                return Response(events, media_type="text/event-stream", headers=headers)
            return Response(delivery.body, media_type=delivery.content_type, headers={**headers,
                                                                                     **verdict_headers(first)})
        media_type = "text/event-stream" if asked.stream_format == "sse" else FORMATS[fmt][2]
        return StreamingResponse(streamed(door, run, first, job_id, fmt, asked.stream_format, chars),
                                 media_type=media_type, headers={**headers, "Cache-Control": "no-cache"})

    @api.post("/v1/jobs")
    async def jobs(request: Request):
        arrived, job_id = time.perf_counter(), uuid.uuid4().hex
        try:
            door.check_serving()
            body = await json_body(request)
            if not isinstance(body, dict) or "input" not in body:
                raise InvalidInput("Invalid input: the body must be a JSON object with the job's input under "
                                   "\"input\", as a queue job's.")
            extra = sorted(set(body) - {"input"})
            if extra:
                raise InvalidInput(f"Invalid input: {extra[0][:40]}: is not a known field of /v1/jobs (the job's "
                                   "fields go under input).")
            job = parse_job_input(body["input"], settings, streamed=False)
        except Exception as exc:  # noqa: BLE001
            return door.failure(exc, job_id)
        run, result = await door.begin(job_id, job, False, arrived)
        if run is None:
            return result
        return JSONResponse({"id": job_id, "status": "COMPLETED", "output": result.answer()})

    @api.post("/v1/audio/voices")
    async def create_voice(request: Request):
        job_id = uuid.uuid4().hex
        # an upload holds a place as a speech request does: its body lands on disk, its audio is read
        if not door.admission.enter():
            return door.busy()
        try:
            return await stored_voice(request, job_id)
        finally:
            door.admission.leave()

    async def stored_voice(request: Request, job_id: str):
        try:
            async with request.form(max_files=1, max_fields=len(VOICE_FORM_FIELDS)) as form:
                unknown = sorted(set(form) - VOICE_FORM_FIELDS)
                if unknown:
                    raise InvalidInput(f"Invalid input: {unknown[0][:40]}: is not a known field of a voice.")
                if form.get("type", "audio_sample") != "audio_sample":
                    raise InvalidInput("Invalid input: type: only audio_sample voices can be made here (a voice "
                                       "from a text prompt cannot).")
                fields = {}
                for field in ("name", "consent", "ref_text"):
                    value = form.get(field)
                    if value is not None and not isinstance(value, str):
                        raise InvalidInput(f"Invalid input: {field}: must be a text field, not a file.")
                    fields[field] = value
                sample = form.get("audio_sample")
                if not isinstance(sample, UploadFile):
                    raise InvalidInput("Invalid input: audio_sample: field required (the voice's recording, as a "
                                       "file).")
                if not fields["name"]:
                    raise InvalidInput("Invalid input: name: field required.")
                with job_directory(settings.job_tmp_dir, job_id, settings.min_free_disk_mb) as folder:
                    path = folder / "audio_sample"
                    await run_in_threadpool(copy_upload, sample, path, settings.max_voice_bytes)
                    voice = await run_in_threadpool(door.store.create, fields["name"], path, fields["consent"],
                                                    fields["ref_text"])
        except Exception as exc:  # noqa: BLE001
            return door.failure(exc, job_id)
        return openai_api.voice_object(voice.id, voice.created_at)

    @api.get("/v1/audio/voices")
    async def list_voices():
        try:
            voices = await run_in_threadpool(door.store.voices)
        except Exception as exc:  # noqa: BLE001
            return door.failure(exc, "voices")
        return {"object": "list", "data": [openai_api.voice_object(v.id, v.created_at) for v in voices]}

    @api.delete("/v1/audio/voices/{voice_id}")
    async def delete_voice(voice_id: str):
        try:
            await run_in_threadpool(door.store.delete, voice_id)
        except Exception as exc:  # noqa: BLE001
            return door.failure(exc, "voices")
        return openai_api.voice_deleted(voice_id)

    app.include_router(api)
    app.add_middleware(BodyLimit, limit=LB_PAYLOAD_BYTES)
    return app


def copy_upload(sample: UploadFile, path, limit: int) -> None:
    """The uploaded file to `path`, refused once past `limit` bytes."""
    sample.file.seek(0)
    written = 0
    with open(path, "wb") as out:
        while block := sample.file.read(1 << 20):
            written += len(block)
            if written > limit:
                raise LimitExceeded(f"The voice is over {limit} bytes; at most {limit} bytes are accepted.")
            out.write(block)


def done_event(result: JobResult, chars: int) -> bytes:
    """The last SSE event: usage, and ours (the seed, the duration; a verified job's verdict and words)."""
    verified = {"verification": result.verification, "words": result.words} if result.verification else {}
    return openai_api.audio_done(chars, round(result.duration_s * FRAMES_PER_SECOND), seed=result.seed,
                                 duration_s=result.duration_s, **verified)


def verdict_headers(result: JobResult) -> dict:
    """A verified answer sent whole says its verdict in headers (its words: SSE or /v1/jobs)."""
    if not result.verification:
        return {}
    return {"X-Verified": "true" if result.verification["passed"] else "false",
            "X-Verify-Worst-Error": str(result.verification["worst_error"])}


async def streamed(door: Door, run: Run, item, job_id: str, fmt: str, stream_format: str, chars: int):
    """A streamed answer's bytes: each part's samples as it comes (a WAV's header before the
    first), or each as an SSE delta, then the done event. A failure after the first bytes ends an
    SSE stream with an error event, and an audio stream without its last chunk (the connection is
    closed: the client sees a truncated answer, never a short file that looks whole)."""
    header = b""
    try:
        while item is not None:
            if isinstance(item, StreamPart):
                if fmt == "wav" and not header:
                    header = streaming_wav_header(item.sample_rate)
                    data = header + bytes(item.audio)
                else:
                    data = bytes(item.audio)
                yield openai_api.audio_delta(data) if stream_format == "sse" else data
            elif stream_format == "sse":
                yield done_event(item, chars)
            item = await run.next()
    except Exception as exc:  # noqa: BLE001
        failed = door.failure(exc, job_id)
        if stream_format != "sse":
            raise
        yield openai_api.error_event(json.loads(failed.body))
    finally:
        run.cancel()  # a client gone (the response cancelled) or an end: the run lets go either way


def serve(settings: Settings, load: Callable[[Engine], None], model: Callable[[], object]) -> None:
    """Serve on PORT (and /ping on PORT_HEALTH too) until stopped; `load(engine)` loads the model
    in the background at start (and warms the door's engine: /ping says ready after that),
    `model()` then says whether it can serve."""
    health = Health()
    app = create_app(settings, health=health)
    threading.Thread(target=health.start, args=(partial(load, app.state.door.engine), model), name="load",
                     daemon=True).start()
    if settings.port_health is not None and settings.port_health != settings.port:
        ping_only = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        ping_only.add_api_route("/ping", next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/ping"))
        health_server = uvicorn.Server(uvicorn.Config(ping_only, host="0.0.0.0", port=settings.port_health,
                                                      log_config=None, access_log=False))
        threading.Thread(target=health_server.run, name="health", daemon=True).start()
    log.info("serving HTTP on port %d%s", settings.port,
             f" (/ping on port {settings.port_health} too)" if settings.port_health else "")
    started = time.perf_counter()
    uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=settings.port, log_config=None, access_log=False)).run()
    log.info("HTTP server stopped after %.0f s", time.perf_counter() - started)
