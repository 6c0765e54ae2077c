"""RunPod serverless worker: text + a reference voice in, speech in that voice out.

    python runpod_handler.py                      # serve (on RunPod), or run ./test_input.json locally
    python runpod_handler.py --test_input '{...}'  # one local job
    python runpod_handler.py --rp_serve_api        # local HTTP API: POST /runsync, /run

The path of a job: validate -> job directory -> stage the voice -> prepare the reference ->
synthesize -> encode -> deliver (S3 or inline) -> remove the job directory.
"""

from config import settings_or_exit  # noqa: I001 - a bad setting is one line and exit status 2, not a traceback

settings_or_exit()
import model_cache  # noqa: E402 - next: points every cache at the volume before torch/HF are imported

import base64
import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

import numpy as np

import asr
import audio_io
import loaded_model
import voices
from config import Settings
from errors import DiskSpaceError, LimitExceeded, StorageError, os_error, to_runpod_result
from job_schema import MAX_TRANSCRIPT_CHARS, JobInput, parse_job_input
import synthesis
from synthesis import SynthesisParams

log = logging.getLogger("f5worker.handler")

JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: Object metadata of a sidecar the worker wrote: the recording it transcribes.
SIDECAR_VOICE_KEY, SIDECAR_VOICE_ETAG = "f5-voice-key", "f5-voice-etag"


@dataclass(frozen=True)
class Transcript:
    text: str
    source: str  # request, sidecar or asr
    store: tuple[str, dict] | None = None  # (sidecar key, metadata) to write once the job succeeded


#: A job directory's name: the job id (no dots in it), the worker process (its id and start
#: time: a restarted container reuses process ids), a random part.
JOB_DIR = re.compile(r"f5job-[A-Za-z0-9_-]+\.(?P<process>\d+-\d+)\.[^.]*")
#: Job directories older than this are left from a dead worker whatever their name says.
STALE_AFTER_SECONDS = 24 * 3600


@contextmanager
def job_directory(root: Path, job_id: str, min_free_mb: int):
    """A scratch directory of this job's own, removed when the job ends, whatever happens (but
    a kill: `sweep_job_directories` removes those the next worker finds)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        free_mb = shutil.disk_usage(root).free / 2**20
        if free_mb < min_free_mb:
            raise DiskSpaceError(
                f"Only {free_mb:.0f} MB free in {root}; the job needs {min_free_mb} MB of scratch space (JOB_TMP_DIR).")
        path = Path(tempfile.mkdtemp(prefix=f"f5job-{job_id}.{_process(os.getpid())}.", dir=root))
    except OSError as exc:
        raise os_error(exc, "the job's scratch directory", "JOB_TMP_DIR", root) from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_job_directories(root: Path) -> int:
    """Remove the job directories a killed worker left (a caller's recording among them): those
    of a process that is gone, or older than a day. A live worker's are kept."""
    swept = 0
    for path in root.glob("f5job-*") if root.is_dir() else ():
        match = JOB_DIR.fullmatch(path.name)
        try:
            old = time.time() - path.stat().st_mtime > STALE_AFTER_SECONDS
        except OSError:
            continue
        if old or (match is not None and _process(int(match["process"].split("-")[0])) != match["process"]):
            shutil.rmtree(path, ignore_errors=True)
            swept += 1
    if swept:
        log.warning("removed %d job directories left in %s by a worker that stopped mid-job", swept, root)
    return swept


def _process(pid: int) -> str:
    """'<pid>-<start time in clock ticks>' of a running process; '' when there is none."""
    try:
        return f"{pid}-{Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return ""


def _human(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.1f} KB"


class Worker:
    """Runs jobs against one set of settings; `storage` is None when no bucket is configured."""

    def __init__(self, settings: Settings, storage=None):
        self.settings = settings
        if storage is not None:
            self.__dict__["storage"] = storage
        self.transcripts = asr.TranscriptCache()
        sweep_job_directories(settings.job_tmp_dir)

    @cached_property
    def storage(self):
        if not self.settings.s3_enabled:
            return None
        from s3_utils import S3Storage

        return S3Storage(self.settings)

    def __call__(self, job: dict) -> dict:
        job_id = str(job.get("id", "")) if isinstance(job, dict) else ""
        if not JOB_ID.fullmatch(job_id):
            job_id = uuid.uuid4().hex
        try:
            return self.run(job_id, job.get("input") if isinstance(job, dict) else None)
        except Exception as exc:  # every failure leaves through here, as RunPod's error shape
            return to_runpod_result(exc, job_id)

    def run(self, job_id: str, raw_input) -> dict:
        started = time.perf_counter()
        s = self.settings
        job = parse_job_input(raw_input, s)
        seed = job.resolved_seed()
        log.info("job %s: %d characters, voice from %s", job_id, len(job.text),
                 "name" if job.voice_name else "url" if job.voice_url else "base64")
        timings = {}
        with job_directory(s.job_tmp_dir, job_id, s.min_free_disk_mb) as job_dir:
            t = time.perf_counter()
            voice = self.stage_voice(job, job_dir)
            timings["download"] = time.perf_counter() - t

            audio, rate = audio_io.read_audio(voice.path, s.max_voice_seconds, keep_seconds=s.ref_clip_seconds + 1)
            t = time.perf_counter()
            model = loaded_model.get_model()
            timings["model"] = time.perf_counter() - t
            reference = audio_io.prepare_reference(audio, rate, model.sample_rate, s.ref_clip_seconds,
                                                   s.min_voice_seconds)
            t = time.perf_counter()
            transcript = self.transcript(job, voice, reference, model.sample_rate)
            timings["transcript"] = time.perf_counter() - t

            t = time.perf_counter()
            params = SynthesisParams(
                nfe_step=job.nfe_step, cfg_strength=job.cfg_strength, sway_sampling_coef=job.sway_sampling_coef,
                speed=job.speed, cross_fade_duration=job.cross_fade_duration, target_rms=job.target_rms, seed=seed,
            )
            plan = synthesis.plan_synthesis(model, len(reference), transcript.text, job.text, params,
                                            s.max_batch_frames, s.max_output_seconds)
            least = audio_io.least_encoded_bytes(job.output_format, plan.samples)
            if least is not None and not job.remove_silence:  # refuse now, not after the work
                self.check_inline_size(job, least, planned=True)
            result = synthesis.run(model, reference, plan, params)
            wave = result.audio
            if job.remove_silence:
                wave = audio_io.shorten_silences(wave, result.sample_rate)
            timings["synthesis"] = time.perf_counter() - t

            t = time.perf_counter()
            out_path = job_dir / f"{job_id}.{job.output_format}"
            content_type = audio_io.encode_audio(wave, result.sample_rate, job.output_format, out_path)
            timings["encode"] = time.perf_counter() - t

            t = time.perf_counter()
            output = self.deliver(job, job_id, out_path, content_type)
            timings["upload"] = time.perf_counter() - t
            if transcript.store:  # only now: a failed job leaves no transcript behind
                self.store_sidecar(transcript)

        duration = len(wave) / result.sample_rate
        timings["total"] = time.perf_counter() - started
        output.update(
            duration_s=round(duration, 3),
            sample_rate=result.sample_rate,
            format=job.output_format,
            seed=seed,
            model=model.files.name,
            ref_text=transcript.text,
            ref_text_source=transcript.source,
            chunks=result.chunks,
            batches=result.batches,
            timings={k: round(v, 3) for k, v in timings.items()},
            rtf=round(timings["synthesis"] / duration, 4) if duration else None,
        )
        log.info("job %s: %.1f s of audio in %.2f s (synthesis %.2f s, %d chunks in %d batches)",
                 job_id, duration, timings["total"], timings["synthesis"], result.chunks, result.batches)
        return output

    def stage_voice(self, job: JobInput, job_dir: Path) -> voices.StagedVoice:
        if job.voice_name is not None:
            return voices.from_s3(self.storage, self.settings, job.voice_name, job_dir)
        if job.voice_url is not None:
            return voices.from_url(job.voice_url, self.settings, job_dir)
        return voices.from_base64(job.voice_base64, self.settings, job_dir)

    def transcript(self, job: JobInput, voice: voices.StagedVoice, reference, rate: int) -> Transcript:
        """The reference's transcript and where it came from: the request, the named voice's
        sidecar in S3, or Whisper on the clipped reference (the audio the model sees), kept in
        memory by content and language.

        Sidecars: one you store as `<stem>.txt` is used for every recording of that stem. One
        the worker writes back names the recording it was made from (key and ETag, as object
        metadata) and is used for that recording only: a sibling `bob.flac` never gets
        `bob.wav`'s transcript, and a re-uploaded `bob.wav` is transcribed again. The worker
        writes back only where no sidecar is, or over its own for the same key, and only a
        transcript whose language Whisper chose itself."""
        if job.ref_text:
            return Transcript(job.ref_text, "request")
        may_store = voice.sidecar_key is not None and self.storage is not None
        if may_store:
            stored = self.storage.read_text(voice.sidecar_key)
            if stored is not None:
                text, meta = stored[0].strip(), stored[1]
                owner = meta.get(SIDECAR_VOICE_KEY)
                if owner is None or (owner == quote(voice.key) and meta.get(SIDECAR_VOICE_ETAG) == voice.etag):
                    if len(text) > MAX_TRANSCRIPT_CHARS:
                        raise LimitExceeded(
                            f"The transcript {voice.sidecar_key} is over {MAX_TRANSCRIPT_CHARS} characters.")
                    if text:
                        return Transcript(text, "sidecar")
                may_store = owner == quote(voice.key)  # never over yours, nor over a sibling's
        cache_key = (hashlib.sha256(voice.path.read_bytes()).hexdigest(), job.language)
        text = self.transcripts.get(cache_key)
        if text is None:
            remedy = f"send ref_text, or store the transcript as {voice.sidecar_key}" if voice.sidecar_key else \
                "send ref_text"
            text = asr.transcribe(reference, rate, job.language, self.settings, remedy)
            self.transcripts.put(cache_key, text)
        store = None
        if may_store and job.language is None:
            store = (voice.sidecar_key, {SIDECAR_VOICE_KEY: quote(voice.key), SIDECAR_VOICE_ETAG: voice.etag})
        return Transcript(text, "asr", store)

    def store_sidecar(self, transcript: Transcript) -> None:
        """Write Whisper's transcript back beside the voice (after the job succeeded), so the
        next job with that recording skips ASR. A failure costs only that."""
        key, metadata = transcript.store
        try:
            self.storage.write_text(key, transcript.text, metadata)
        except StorageError as exc:
            log.warning("could not store the transcript sidecar: %s", exc.message)

    def check_inline_size(self, job: JobInput, size: int, planned: bool = False) -> None:
        """Audio returned inline must fit RunPod's payload limits (MAX_INLINE_BYTES)."""
        s = self.settings
        if (self.storage is not None and not job.return_base64) or size <= s.max_inline_bytes:
            return
        remedy = "drop return_base64 to get an S3 URL" if self.storage is not None else "configure S3_BUCKET"
        raise LimitExceeded(
            f"The audio {'would be at least' if planned else 'is'} {_human(size)}, over the "
            f"{_human(s.max_inline_bytes)} that can be returned inline (RunPod refuses large payloads): {remedy}, "
            "or ask for output_format mp3 or a shorter text."
        )

    def deliver(self, job: JobInput, job_id: str, path: Path, content_type: str) -> dict:
        """S3 and/or inline, and the local copy. Whatever fails, the job leaves nothing behind:
        limits and the local copy come before the upload, and a failed upload removes the copy."""
        s, output = self.settings, {}
        inline = self.storage is None or job.return_base64
        self.check_inline_size(job, path.stat().st_size)
        local = self.copy_locally(path) if s.local_output_enabled else None
        try:
            if self.storage is not None:
                key = f"{s.s3_output_prefix}{job_id}.{job.output_format}"
                self.storage.upload(path, key, content_type)
                output.update(s3_key=key, audio_url=self.storage.presign(key, s.s3_presign_expires))
        except BaseException:
            if local is not None:
                local.unlink(missing_ok=True)
            raise
        if inline:
            output["audio_base64"] = base64.b64encode(path.read_bytes()).decode("ascii")
        if local is not None:
            output["local_path"] = str(local)
            log.info("job %s: wrote %s", job_id, local)
        return output

    def copy_locally(self, path: Path) -> Path:
        """The result in OUTPUT_DIR, whole or not at all (through a temporary name)."""
        folder = self.settings.output_dir.absolute()
        local, tmp = folder / path.name, folder / f".{path.name}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp)
            os.replace(tmp, local)
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink()
            raise os_error(exc, "the local copy of the result", "OUTPUT_DIR", folder) from None
        return local


_worker: Worker | None = None


def handler(job: dict) -> dict:
    """RunPod's entry point."""
    global _worker
    if _worker is None:
        _worker = Worker(model_cache.SETTINGS)
    return _worker(job)


def runs_locally() -> bool:
    """Outside RunPod's job queue, or one job from the command line (the SDK's own test)."""
    return "RUNPOD_WEBHOOK_GET_JOB" not in os.environ or "--test_input" in sys.argv


def summary(output: dict) -> str:
    """One line about a job's result for a person at a terminal: never the audio itself."""
    if "error" in output:
        return f"job failed: {output['error']}"
    where = output.get("local_path") or output.get("s3_key") or "inline only (audio_base64)"
    timings = output.get("timings", {})
    return (f"job done: {output['duration_s']:.1f} s of audio, {output['chunks']} chunk(s) in {output['batches']} "
            f"batch(es); synthesis {timings.get('synthesis', 0):.2f} s, total {timings.get('total', 0):.2f} s; "
            f"audio: {where}")


def local_handler(job: dict) -> dict:
    """`handler`, printing a summary line (the SDK prints whole results only at a log level that
    would show the base64 audio)."""
    output = handler(job)
    print(summary(output), flush=True)
    return output


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
        model = loaded_model.get_model()
    except Exception as exc:  # the first job loads again and reports the error to its caller
        log.error("loading the model at start failed: %s: %s", type(exc).__name__, exc)
        return
    if not model_cache.SETTINGS.warmup:
        return
    try:
        t = np.arange(model.sample_rate) / model.sample_rate
        tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        synthesis.synthesize(model, tone, "Warm up.", "Warm up.", SynthesisParams(nfe_step=2, seed=0),
                             model_cache.SETTINGS.max_batch_frames)
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
    configure_logging(model_cache.SETTINGS.log_level)
    # Seconds of loading overlap the SDK's import and start-up (seconds too) instead of following them.
    threading.Thread(target=load_at_start, name="load", daemon=True).start()
    import runpod

    try:
        runpod.serverless.start({"handler": local_handler if runs_locally() else handler})
    except SystemExit as stop:  # the SDK exits after a local job (--test_input, test_input.json)
        exit_now(stop.code)
    exit_now(0)


if __name__ == "__main__":
    main()
