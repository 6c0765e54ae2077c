"""RunPod serverless worker: text + a reference voice in, speech in that voice out.

    python runpod_handler.py                      # serve (on RunPod), or run ./test_input.json locally
    python runpod_handler.py --test_input '{...}'  # one local job
    python runpod_handler.py --rp_serve_api        # local HTTP API: POST /runsync, /run

The path of a job: validate -> numbers and symbols as words -> job directory -> stage the voice
(each voice of a dialogue, once) -> prepare the reference -> synthesize -> encode -> deliver (S3
or inline) -> remove the job directory. With STREAM on, the handler is a generator: each piece of
audio goes out as it is made, the whole result last.
"""

from config import get_settings, settings_or_exit  # noqa: I001 - a bad setting is one line and exit status 2, not a traceback

import cache_env  # noqa: E402

cache_env.configure(settings_or_exit())  # next: points every cache at the volume before torch/HF are imported

import base64
import dataclasses
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from functools import cached_property, partial
from pathlib import Path

import numpy as np

import audio_io
import captions
import loaded_model
import voices
from config import Settings
from delivery import Delivery
from errors import InvalidInput, JobError, preview, to_runpod_result
from job_schema import JobInput, VoiceInput, parse_job_input
from scratch import job_directory, sweep_job_directories
import synthesis
import text_normalization
from synthesis import SynthesisParams
from transcripts import Transcripts

log = logging.getLogger("f5worker.handler")

JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class Worker:
    """Runs jobs against one set of settings; `storage` is None when no bucket is configured.
    `progress(job, update)` (RunPod's `progress_update` when serving on RunPod) is told how a
    job of several batches is moving, so `/status` shows it."""

    def __init__(self, settings: Settings, storage=None, progress=None):
        self.settings, self.progress = settings, progress
        if storage is not None:
            self.__dict__["storage"] = storage
        self.transcripts = Transcripts(settings)
        self.grammars = text_normalization.grammars(text_normalization.grammar_root(settings.models_dir),
                                                    settings.allow_model_download)
        sweep_job_directories(settings.job_tmp_dir)

    @cached_property
    def storage(self):
        if not self.settings.s3_enabled:
            return None
        from s3_utils import S3Storage

        return S3Storage(self.settings)

    @cached_property
    def delivery(self) -> Delivery:
        return Delivery(self.settings, self.storage)

    def __call__(self, job: dict) -> dict:
        """The job's result, or its error."""
        return next(self.results(job, stream=False))  # not streamed: the one item is the result

    def stream(self, job: dict) -> Iterator[dict]:
        """The job's pieces of audio as they are made, then its result (`"type": "done"`); a
        failure ends the stream with an error item, whatever was sent before it."""
        yield from self.results(job, stream=True)

    def results(self, job: dict, stream: bool) -> Iterator[dict]:
        job_id = str(job.get("id", "")) if isinstance(job, dict) else ""
        if not JOB_ID.fullmatch(job_id):
            job_id = uuid.uuid4().hex
        report = partial(self.report_progress, job, job_id) if self.progress is not None and isinstance(job, dict) \
            else None
        try:
            yield from self.run(job_id, job.get("input") if isinstance(job, dict) else None, report, stream)
        except Exception as exc:  # every failure leaves through here, as RunPod's error shape
            yield to_runpod_result(exc, job_id)

    def report_progress(self, job: dict, job_id: str, **update) -> None:
        try:
            self.progress(job, update)
        except Exception as exc:  # noqa: BLE001 - news of the job must never fail it
            log.warning("job %s: progress update failed: %s: %s", job_id, type(exc).__name__, preview(str(exc)))

    def run(self, job_id: str, raw_input, progress=None, stream: bool = False) -> Iterator[dict]:
        """The job's path. Yields its result last; before it, when `stream`, each piece."""
        started = time.perf_counter()
        s = self.settings
        job = parse_job_input(raw_input, s)
        seed = job.resolved_seed()
        names, lines = script(job)
        timings, t = {}, time.perf_counter()
        lines = self.spoken(job, lines)
        timings["normalize"] = time.perf_counter() - t
        log.info("job %s: %d characters, %s%s", job_id, job.text_chars(),
                 f"{len(names)} voices in {len(lines)} segments" if job.voices else "voice from " + source(job),
                 ", streamed" if stream else "")
        with job_directory(s.job_tmp_dir, job_id, s.min_free_disk_mb) as job_dir:
            t = time.perf_counter()
            staged = self.stage_voices(job, names, job_dir)
            timings["download"] = time.perf_counter() - t

            t = time.perf_counter()
            model = loaded_model.get_model(s)
            timings["model"] = time.perf_counter() - t
            references, transcripts, t = [], [], time.perf_counter()
            for name, (voice, audio, rate) in zip(names, staged):
                spec = voice_of(job, name)
                with voice_named(name):
                    references.append(audio_io.prepare_reference(audio, rate, model.sample_rate, s.ref_clip_seconds,
                                                                 s.min_voice_seconds))
                    transcripts.append(self.transcripts.find(spec.ref_text, spec.language, voice, references[-1],
                                                             model.sample_rate, self.storage))
            timings["transcript"] = time.perf_counter() - t

            t = time.perf_counter()
            params = SynthesisParams(
                nfe_step=job.nfe_step, cfg_strength=job.cfg_strength, sway_sampling_coef=job.sway_sampling_coef,
                speed=job.speed, cross_fade_duration=job.cross_fade_duration, target_rms=job.target_rms, seed=seed,
            )
            refs = [(len(r), tr.text) for r, tr in zip(references, transcripts)]
            plan = synthesis.plan_lines(model, refs, lines, params, s.max_batch_frames, s.max_output_seconds,
                                        stream=stream)
            speakers = [names[c.voice] for c in plan.chunks] if job.voices else None
            # Refused now, not after the work: sizes that follow from the plan (a streamed job's
            # pieces are 16-bit samples, and /run and /runsync return them all).
            least = audio_io.least_encoded_bytes(job.output_format, plan.samples) or 0
            streamed = audio_io.least_encoded_bytes(job.stream_format, plan.samples) if stream else 0
            if not job.remove_silence:  # it shortens the audio: the plan's size is no floor then
                self.delivery.check_inline_size(job.return_base64, least, job.output_format, planned=True,
                                                streamed=streamed)
            streamed = 0
            if stream:
                made, spans = [], []
                # closed at once on a failure here: the sampling stops and the model is free again
                with closing(synthesis.stream(model, references, plan, params)) as pieces:
                    for piece in pieces:
                        made.append(piece.audio)
                        spans.append(piece.span)
                        for item, size in piece_items(piece, model.sample_rate, job.stream_format,
                                                      speakers[piece.index] if speakers else None):
                            timings.setdefault("first_audio", time.perf_counter() - started)
                            streamed += size
                            yield item
                wave = np.concatenate(made)
            else:
                result = synthesis.run(model, references, plan, params, progress)
                wave, spans = result.audio, result.spans
            if job.remove_silence:
                # the pauses a dialogue asks for are kept whole
                asked = [(end, end + c.pause_after) for c, (_, end) in zip(plan.chunks, spans) if c.pause_after]
                cuts = [cut for cut in audio_io.long_pauses(wave, model.sample_rate)
                        if not any(cut[0] < b and a < cut[1] for a, b in asked)]
                wave = audio_io.without(wave, cuts)
                spans = [(audio_io.after_cuts(a, cuts), audio_io.after_cuts(b, cuts)) for a, b in spans]
            timed = captions.timed([c.text for c in plan.chunks], spans, model.sample_rate, speakers)
            timings["synthesis"] = time.perf_counter() - t

            t = time.perf_counter()
            out_path = job_dir / f"{job_id}.{job.output_format}"
            content_type = audio_io.encode_audio(wave, model.sample_rate, job.output_format, out_path)
            subtitles = None
            if job.captions_format is not None:
                text_path = job_dir / f"{job_id}.{job.captions_format}"
                text_type = captions.write_subtitles(timed, job.captions_format, text_path)
                subtitles = (text_path, f"{s.s3_output_prefix}{job_id}.{job.captions_format}", text_type)
            timings["encode"] = time.perf_counter() - t

            t = time.perf_counter()
            key = f"{s.s3_output_prefix}{job_id}.{job.output_format}"
            output = self.delivery.deliver(out_path, key, content_type, job.return_base64, subtitles, streamed)
            timings["upload"] = time.perf_counter() - t
            for transcript in transcripts:  # only now: a failed job leaves no transcript behind
                self.transcripts.keep(transcript, self.storage)

        duration = len(wave) / model.sample_rate
        timings["total"] = time.perf_counter() - started
        output.update(
            duration_s=round(duration, 3),
            sample_rate=model.sample_rate,
            format=job.output_format,
            seed=seed,
            model=model.files.name,
            **({"voices": {name: {"ref_text": tr.text, "ref_text_source": tr.source}
                           for name, tr in zip(names, transcripts)}, "segments": len(lines)} if job.voices else
               {"ref_text": transcripts[0].text, "ref_text_source": transcripts[0].source}),
            normalized_text=lines[0].text if not job.voices else
            " ".join(f"[{names[line.voice]}] {line.text}" for line in lines),
            chunks=len(plan.chunks),
            batches=len(plan.batches),
            captions=timed,
            timings={k: round(v, 3) for k, v in timings.items()},
            rtf=round(timings["synthesis"] / duration, 4) if duration else None,
        )
        log.info("job %s: %.1f s of audio in %.2f s (synthesis %.2f s, %d chunks in %d batches%s)",
                 job_id, duration, timings["total"], timings["synthesis"], len(plan.chunks), len(plan.batches),
                 f"; first audio at {timings['first_audio']:.2f} s" if stream else "")
        yield {"type": "done", **output} if stream else output

    def spoken(self, job: JobInput, lines: list[synthesis.Line]) -> list[synthesis.Line]:
        """The lines as they will be said: numbers, money, dates, times, units and symbols in words
        (unless the job sends normalize: false). The job's limits hold for what is said."""
        if not job.normalize:
            return lines
        s = self.settings
        # the spoken form's limit is checked as it is read: reading stops at the piece that passes it
        reading = text_normalization.Reading(self.grammars, job.text_language, s.max_normalize_chars,
                                             max_spoken_chars=s.max_text_chars)
        texts = text_normalization.normalize_all([line.text for line in lines], reading)
        for n, text in enumerate(texts):
            if not any(ch.isalnum() for ch in text):  # what validation asks of the text as sent
                where = "text" if job.voices is None else \
                    f"segments.{n}.text" if job.segments is not None else f"text: segment {n + 1}"
                raise InvalidInput(f"Invalid input: {where} has nothing left to speak once its numbers and symbols "
                                   "are read; send words, or normalize: false.")
        return [dataclasses.replace(line, text=text) for line, text in zip(lines, texts)]

    def stage_voices(self, job: JobInput, names: list[str | None], job_dir: Path) -> list[tuple]:
        """Each voice of the job staged and decoded once, however many segments speak in it:
        (staged voice, audio, rate) in the order of `names`. A dialogue's voices are fetched at
        the same time, so it waits for its slowest voice, not for their sum."""
        s = self.settings

        def stage(n: int, name: str | None) -> tuple:
            with voice_named(name):
                voice = self.stage_voice(voice_of(job, name), job_dir if name is None else job_dir / f"voice-{n}")
                return voice, *audio_io.read_audio(voice.path, s.max_voice_seconds, keep_seconds=s.ref_clip_seconds + 1)

        if len(names) == 1:
            return [stage(0, names[0])]
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="voice") as pool:
            futures = [pool.submit(stage, n, name) for n, name in enumerate(names)]
        # All have ended here (nothing writes into the job directory any more); a failure is the
        # first voice's in order, whichever failed first.
        return [future.result() for future in futures]

    def stage_voice(self, voice: VoiceInput, folder: Path) -> voices.StagedVoice:
        folder.mkdir(exist_ok=True)
        if voice.voice_name is not None:
            return voices.from_s3(self.storage, self.settings, voice.voice_name, folder)
        if voice.voice_url is not None:
            return voices.from_url(voice.voice_url, self.settings, folder)
        return voices.from_base64(voice.voice_base64, self.settings, folder)


def script(job: JobInput) -> tuple[list[str | None], list[synthesis.Line]]:
    """The voices a job speaks in, in order of first use (None: the single voice of a job without
    `voices`), and its lines, each naming its voice by place in that list."""
    if job.voices is None:
        return [None], [synthesis.Line(job.text)]
    names: list[str | None] = []
    lines = []
    for segment in job.script():
        if segment.voice not in names:
            names.append(segment.voice)
        speed = segment.speed if segment.speed is not None else job.voices[segment.voice].speed
        lines.append(synthesis.Line(segment.text, names.index(segment.voice), speed, segment.pause_after))
    return names, lines


def voice_of(job: JobInput, name: str | None) -> VoiceInput:
    """The voice called `name` in a dialogue; None: the job's own, top-level voice."""
    return job if name is None else job.voices[name]


def source(voice: VoiceInput) -> str:
    return "name" if voice.voice_name else "url" if voice.voice_url else "base64"


@contextmanager
def voice_named(name: str | None):
    """A dialogue's voice that fails says which it is: `voices.<name>: <why>`."""
    try:
        yield
    except JobError as exc:
        if name is not None:
            exc.message = f"voices.{name}: {exc.message}"
        raise


#: RunPod's /stream refuses an item over 1 MB: a chunk's audio goes out in parts of at most this
#: long (480 KB of 16-bit samples at 24 kHz, 640 KB as base64).
PART_SECONDS = 10.0


def piece_items(piece: synthesis.Piece, rate: int, fmt: str, voice: str | None = None
                ) -> Iterator[tuple[dict, int]]:
    """One streamed piece as the caller reads it from /stream, in parts of at most PART_SECONDS,
    each with its encoded size in bytes."""
    step = int(PART_SECONDS * rate)
    for part, at in enumerate(range(0, max(len(piece.audio), 1), step)):
        audio = audio_io.encoded(piece.audio[at:at + step], rate, fmt)
        yield {
            "type": "audio",
            "index": piece.index,
            "part": part,
            **({"voice": voice} if voice is not None else {}),
            "text": piece.text,
            "start_s": round((piece.start + at) / rate, 3),
            "duration_s": round(len(piece.audio[at:at + step]) / rate, 3),
            "sample_rate": rate,
            "format": fmt,
            "audio_base64": base64.b64encode(audio).decode("ascii"),
        }, len(audio)


_worker: Worker | None = None
#: The configuration handed to the RunPod SDK; it reads `refresh_worker` there after each job.
SDK_CONFIG: dict = {}


def worker() -> Worker:
    global _worker
    if _worker is None:
        import runpod

        _worker = Worker(get_settings(), progress=None if runs_locally() else runpod.serverless.progress_update)
    return _worker


def handler(job: dict) -> dict:
    """RunPod's entry point."""
    return worker()(job)


def stream_handler(job: dict) -> Iterator[dict]:
    """RunPod's entry point with STREAM on (a generator, started with `return_aggregate_stream`).
    The SDK ends a stream at an item with `error`, but takes no `refresh_worker` from one: a
    failure that needs a fresh worker asks for it through the configuration the SDK reads."""
    for item in worker().stream(job):
        if item.pop("refresh_worker", False):
            SDK_CONFIG["refresh_worker"] = True
        yield item


def runs_locally() -> bool:
    """Outside RunPod's job queue, or one job from the command line (the SDK's own test)."""
    return "RUNPOD_WEBHOOK_GET_JOB" not in os.environ or "--test_input" in sys.argv


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


def load_at_start() -> None:
    """Load the model (and with WARMUP, run one tiny synthesis: CUDA kernels, cuBLAS and cuDNN
    handles) while the RunPod SDK imports and fetches the first job. Jobs that arrive meanwhile
    wait for this load, not for a second one."""
    try:
        model = loaded_model.get_model(get_settings())
    except Exception as exc:  # the first job loads again and reports the error to its caller
        log.error("loading the model at start failed: %s: %s", type(exc).__name__, exc)
        return
    if not get_settings().warmup:
        return
    try:
        t = np.arange(model.sample_rate) / model.sample_rate
        tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        synthesis.synthesize(model, tone, "Warm up.", "Warm up.", SynthesisParams(nfe_step=2, seed=0),
                             get_settings().max_batch_frames)
        age = loaded_model.process_age()
        log.info("warm-up done%s", f" {age:.2f} s after the process started" if age is not None else "")
    except Exception as exc:  # noqa: BLE001 - a job reports its own errors
        log.error("warm-up failed: %s: %s", type(exc).__name__, exc)


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
    configure_logging(get_settings().log_level)
    # Seconds of loading overlap the SDK's import and start-up (seconds too) instead of following them.
    threading.Thread(target=load_at_start, name="load", daemon=True).start()
    import runpod

    if get_settings().stream:
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
