"""RunPod serverless worker: text + a reference voice in, speech in that voice out.

    python runpod_handler.py                      # serve (on RunPod), or run ./test_input.json locally
    python runpod_handler.py --test_input '{...}'  # one local job
    python runpod_handler.py --rp_serve_api        # local HTTP API: POST /runsync, /run
    SERVE=http python runpod_handler.py            # the HTTP door instead (http_server: OpenAI's speech API)

This is the queue's front door: a RunPod job in, the engine's path for it (`engine`: validate ->
numbers and symbols as words -> stage the voices -> prepare the references -> plan -> synthesize
-> post-process -> encode -> deliver -> result), RunPod's shapes out. With STREAM on, the handler
is a generator: each piece of audio goes out as it is made, the whole result last.
"""

from config import get_settings, settings_or_exit  # noqa: I001 - a bad setting is one line and exit status 2, not a traceback

import cache_env  # noqa: E402

cache_env.configure(settings_or_exit())  # next: points every cache at the volume before torch/HF are imported

import base64
import importlib.machinery
import logging
import os
import re
import sys
import threading
import time
import types
import uuid
from collections.abc import Iterator
from functools import partial

import asr
import loaded_model
import proc_stat
import text_normalization
from config import Settings, get_settings, in_job_queue
from engine import Engine, StreamPart, synthesize_once
from errors import preview, to_runpod_result

log = logging.getLogger("f5worker.handler")

JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class Worker:
    """The engine behind RunPod's job queue; `storage` is None when no bucket is configured.
    `progress(job, update)` (RunPod's `progress_update` when serving on RunPod) is told how a
    job of several batches is moving, so `/status` shows it."""

    def __init__(self, settings: Settings, storage=None, progress=None):
        self.engine, self.progress = Engine(settings, storage), progress

    def __call__(self, job: dict, arrived: float | None = None) -> dict:
        """The job's result, or its error. `arrived`: when the job reached the worker
        (`time.perf_counter()`; now by default), where its timings begin."""
        return next(self.results(job, stream=False, arrived=arrived))  # not streamed: the one item is the result

    def stream(self, job: dict, arrived: float | None = None) -> Iterator[dict]:
        """The job's pieces of audio as they are made, then its result (`"type": "done"`); a
        failure ends the stream with an error item, whatever was sent before it."""
        yield from self.results(job, stream=True, arrived=arrived)

    def results(self, job: dict, stream: bool, arrived: float | None = None) -> Iterator[dict]:
        job_id = str(job.get("id", "")) if isinstance(job, dict) else ""
        if not JOB_ID.fullmatch(job_id):
            job_id = uuid.uuid4().hex
        report = partial(self.report_progress, job, job_id) if self.progress is not None and isinstance(job, dict) \
            else None
        try:
            for item in self.engine.run(job_id, job.get("input") if isinstance(job, dict) else None, stream, report,
                                        arrived=arrived):
                if isinstance(item, StreamPart):
                    yield stream_item(item)
                else:
                    yield {"type": "done", **item.answer()} if stream else item.answer()
        except Exception as exc:  # every failure leaves through here, as RunPod's error shape
            yield to_runpod_result(exc, job_id)

    def report_progress(self, job: dict, job_id: str, **update) -> None:
        try:
            self.progress(job, update)
        except Exception as exc:  # noqa: BLE001 - news of the job must never fail it
            log.warning("job %s: progress update failed: %s: %s", job_id, type(exc).__name__, preview(str(exc)))


def stream_item(part: StreamPart) -> dict:
    """A part of a streamed piece as the caller reads it from /stream."""
    return {
        "type": "audio",
        "index": part.index,
        "part": part.part,
        **({"voice": part.voice} if part.voice is not None else {}),
        "text": part.text,
        "start_s": part.start_s,
        "duration_s": part.duration_s,
        "sample_rate": part.sample_rate,
        "format": part.format,
        "audio_base64": base64.b64encode(part.audio).decode("ascii"),
    }


_worker: Worker | None = None
#: The configuration handed to the RunPod SDK; it reads `refresh_worker` there after each job.
SDK_CONFIG: dict = {}


def worker() -> Worker:
    """The process's worker: built by `main` at start, before the load, so that no job builds it."""
    global _worker
    if _worker is None:
        _worker = Worker(get_settings(), progress=None if runs_locally() else progress_update)
    return _worker


def progress_update(job: dict, update: dict) -> None:
    """RunPod's `progress_update`; the SDK is imported by then (`main` imports it before it
    starts taking jobs), so the worker can be built before it."""
    import runpod

    runpod.serverless.progress_update(job, update)


def handler(job: dict) -> dict:
    """RunPod's entry point. The job's clock starts here, before anything its caller waits for."""
    arrived = time.perf_counter()
    return worker()(job, arrived)


def stream_handler(job: dict) -> Iterator[dict]:
    """RunPod's entry point with STREAM on (a generator, started with `return_aggregate_stream`).
    The SDK ends a stream at an item with `error`, but takes no `refresh_worker` from one: a
    failure that needs a fresh worker asks for it through the configuration the SDK reads."""
    arrived = time.perf_counter()  # the SDK's first next(): the job's clock starts here
    for item in worker().stream(job, arrived):
        if item.pop("refresh_worker", False):
            SDK_CONFIG["refresh_worker"] = True
        yield item


def runs_locally() -> bool:
    """Outside RunPod's job queue, or one job from the command line (the SDK's own test)."""
    return not in_job_queue() or "--test_input" in sys.argv


def summary(output: dict) -> str:
    """One line about a job's result for a person at a terminal: never the audio itself."""
    if "error" in output:
        return f"job failed: {output['error']}"
    where = output.get("local_path") or output.get("s3_key") or "inline only (audio_base64)"
    subtitles = output.get("captions_local_path") or output.get("captions_s3_key") or \
        ("inline only (captions_text)" if "captions_text" in output else None)
    timings = output.get("timings", {})
    first = f", first audio {timings['first_audio']:.2f} s" if "first_audio" in timings else ""
    return (f"job done: {output['duration_s']:.1f} s of audio, {output['chunks']} chunk(s) in {output['batches']} "
            f"batch(es); synthesis {timings.get('synthesis', 0):.2f} s{first}, total {timings.get('total', 0):.2f} s; "
            f"seed {output['seed']}; audio: {where}" + (f"; captions: {subtitles}" if subtitles else ""))


def local_handler(job: dict) -> dict:
    """`handler`, printing a summary line (the SDK prints whole results only at a log level that
    would show the base64 audio)."""
    output = handler(job)
    print(summary(output), flush=True)
    return output


def local_stream_job(job: dict):
    """`stream_handler` for one job from the command line, a line printed per piece (the SDK runs
    such a job as a plain function); the list of items, as /runsync returns it, or the error."""
    items = []
    for item in stream_handler(job):
        items.append(item)
        if item.get("type") == "audio":
            part = f" part {item['part']}" if item["part"] else ""
            print(f"piece {item['index']}{part}: {item['duration_s']:.2f} s of audio at {item['start_s']:.2f} s "
                  f"({len(item['text'])} characters)", flush=True)
    print(summary(items[-1]), flush=True)
    return items[-1] if "error" in items[-1] else items


def configure_logging(level: str) -> None:
    """LOG_LEVEL applies to this worker's own loggers. Libraries stay at WARNING: botocore's
    DEBUG output carries signed request headers, urllib3's carries URLs."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("f5worker").setLevel(level)
    for name in ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore", "huggingface_hub", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("huggingface_hub").propagate = False  # it prints through a handler of its own: once
    # The RunPod SDK logs every job's input and output at DEBUG, its default, and in local runs
    # (no job queue) the whole result at INFO: base64 audio and presigned URLs.
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "WARN" if runs_locally() else "INFO")


def load_at_start(engine: Engine) -> None:
    """Load the model while the RunPod SDK imports and fetches the first job (or, at the HTTP
    door, while /ping answers 204), then with WARMUP (the default) `warm_up` the door's `engine`.
    Jobs that arrive meanwhile wait for this load, not for a second one."""
    settings = get_settings()
    try:
        model = loaded_model.get_model(settings)
    except Exception as exc:  # the first job loads again and reports the error to its caller
        log.error("loading the model at start failed: %s: %s", type(exc).__name__, exc)
        return
    if not settings.warmup:
        return
    try:
        warm_up(engine, model)
        age = loaded_model.process_age()
        log.info("warm-up done%s", f" {age:.2f} s after the process started" if age is not None else "")
    except Exception as exc:  # noqa: BLE001 - a job reports its own errors
        log.error("warm-up failed: %s: %s", type(exc).__name__, exc)


def warm_up(engine: Engine, model) -> None:
    """Pay at start what a fresh worker's first job paid and later jobs did not (a fresh process's
    first and second jobs, 2-core CPU, tiny model; docs/benchmarks.md): a first synthesis (the
    sampling loop's thread; on a GPU also CUDA kernels, cuBLAS and cuDNN handles), the English
    text normalisation grammar (1.8 s there; a text's first number or symbol loads it) and the
    S3 client (0.6 s); with VERIFY, the Whisper that hears the jobs. Left to the jobs that need
    them: Chinese text's grammar and pinyin dictionary (0.8 s), the number reader of another
    language (0.1 s), Whisper for a voice sent without its transcript (unless VERIFY loaded it).
    The encoders cost a first call no more than a later one."""
    synthesize_once(model, engine.settings.max_batch_frames)
    grammars = engine.grammars
    # Only a grammar the volume holds: compiling one (half a minute) is `prefetch`'s work, and a
    # first job that needs it would compile it anyway.
    if text_normalization.grammar_is_complete(text_normalization.grammar_dir(grammars.root, "en"), "en"):
        grammars.get("en")
    engine.delivery  # noqa: B018 - a cached property: builds the S3 client
    if engine.settings.verify:  # every job is heard: its Whisper loads now, not in the first job
        asr.get_listener(engine.settings)


def import_sdk():
    """The RunPod SDK, without the probe of the CPU that its import runs for its debug output
    (py-cpuinfo starts a second Python that busies a core for a second: 1.2 s of the SDK's 1.8 s
    import, `python -X importtime`). On the 2-core CPU that probe took a core from the load, and
    the first job came about a second later with it. The SDK is told the CPU's name from
    /proc/cpuinfo instead; a later `import cpuinfo` gets the real library."""
    stand_in = types.ModuleType("cpuinfo")
    stand_in.__spec__ = importlib.machinery.ModuleSpec("cpuinfo", None)  # find_spec() meanwhile finds it
    stand_in.get_cpu_info = cpu_name
    placed = sys.modules.setdefault("cpuinfo", stand_in) is stand_in
    try:
        import runpod
    finally:
        if placed:
            del sys.modules["cpuinfo"]
    return runpod


def cpu_name() -> dict:
    """What the SDK reads of py-cpuinfo's answer: the CPU's name (none: the SDK says it is unknown)."""
    name = proc_stat.first_cpu().get("model name")
    return {"brand_raw": name} if name else {}


def exit_now(code) -> None:
    """Leave the process without finalizing the interpreter. Finalization stops daemon threads by
    unwinding their stacks when they next take the GIL; a thread inside torch's C++ code (the
    load at start, a background compile, a warm-up) then aborts the whole process ("terminate
    called without an active exception", exit status 134) instead of exiting with `code`."""
    if isinstance(code, str):  # sys.exit("message")
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if code is None else code)


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    if settings.serve == "http":  # the HTTP door (RunPod's load-balancing endpoints) instead of the queue's
        import http_server

        http_server.serve(settings, load=load_at_start, model=lambda: loaded_model.get_model(settings))
        exit_now(0)
    # Seconds of loading overlap the SDK's import and start-up (seconds too) instead of following
    # them; the worker is built first (milliseconds), so that the warm-up warms its engine. The
    # two threads share one GIL, yet on the 2-core CPU no other order paid: the SDK imported in
    # the load thread after the load gave the first job 0.5 s later, torch imported first and
    # the SDK after it within the noise of this order (docs/benchmarks.md).
    threading.Thread(target=load_at_start, args=(worker().engine,), name="load", daemon=True).start()
    runpod = import_sdk()

    if settings.stream:
        # One job from the command line runs the handler as a plain function, not as a stream.
        one_job = runs_locally() and "--rp_serve_api" not in sys.argv
        SDK_CONFIG.update(handler=local_stream_job if one_job else stream_handler, return_aggregate_stream=True)
    else:
        SDK_CONFIG.update(handler=local_handler if runs_locally() else handler)
    try:
        runpod.serverless.start(SDK_CONFIG)
    except SystemExit as stop:  # the SDK exits after a local job (--test_input, test_input.json)
        exit_now(stop.code)
    exit_now(0)


if __name__ == "__main__":
    main()
