"""One job's path as named steps, the same for every front door:

    parse -> script and normalise -> stage voices -> references and transcripts -> plan
    -> synthesise (pieces; with verify, each chunk heard back first) -> post-process -> encode
    -> deliver -> result

`Engine.run` reads as that list; each step is a method (or a function, where it needs no worker
state) that a front door or a test can call on its own. A front door turns its request into a
job's raw input, sends on what `run` yields (the parts of a streamed job's audio as they are
made, then the `JobResult`) and maps the typed errors raised along the way its own way, once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

import asr
import audio_io
import captions
import loaded_model
import synthesis
import text_normalization
import verification
import voices
from config import Settings
from delivery import Delivery
from errors import InvalidInput, JobError, LimitExceeded
from job_schema import JobInput, JobResult, VoiceInput, parse_job_input
from scratch import job_directory, sweep_job_directories
from synthesis import Line, Plan, SynthesisParams
from transcripts import Transcript, Transcripts
from voice_cache import VoiceCache

log = logging.getLogger("f5worker.engine")

#: RunPod's /stream refuses an item over 1 MB: a chunk's audio goes out in parts of at most this
#: long (480 KB of 16-bit samples at 24 kHz, 640 KB as base64).
PART_SECONDS = 10.0


@dataclass(frozen=True)
class Script:
    """Who speaks what: the voices of a job in order of first use (None: the single voice of a
    job without `voices`) and its lines, each naming its voice by place in `names`."""

    names: list[str | None]
    lines: list[Line]


@dataclass(frozen=True)
class StagedAudio:
    """A voice's recording in the job directory, and its audio as read; or, for a recording this
    worker has prepared before, that reference (`prepared`) and nothing read."""

    voice: voices.StagedVoice
    audio: np.ndarray | None
    rate: int
    prepared: np.ndarray | None = None


@dataclass(frozen=True)
class Reference:
    """A voice ready to speak in: its recording prepared for the model, and what it says."""

    audio: np.ndarray
    transcript: Transcript
    #: Whether it came from the worker's memory (`voice_cache`) rather than staged and prepared.
    cached: bool = False


@dataclass(frozen=True)
class StreamPart:
    """A part of a streamed piece of audio (at most PART_SECONDS), encoded in the job's stream_format."""

    index: int
    part: int
    voice: str | None
    text: str
    start_s: float
    duration_s: float
    sample_rate: int
    format: str
    audio: memoryview


@dataclass(frozen=True)
class Speech:
    """The job's audio, where each chunk's own audio lies in it (samples), and the bytes of it
    already sent as streamed parts."""

    wave: np.ndarray
    spans: list[tuple[int, int]]
    streamed_bytes: int = 0
    #: A verified job's words, where they lie in `wave`.
    words: list[verification.PlacedWord] | None = None


@dataclass(frozen=True)
class Encoded:
    """The job's files in its directory: the audio, and its subtitles when asked for."""

    audio: Path
    content_type: str
    subtitles: tuple[Path, str] | None = None  # (path, content type)


class Timings:
    """Seconds per step of one job, from its arrival (`started`, a `time.perf_counter()` reading;
    now by default): `with timings("encode"): ...`."""

    def __init__(self, started: float | None = None):
        self.started = time.perf_counter() if started is None else started
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str):
        start = time.perf_counter()
        yield
        self.seconds[step] = time.perf_counter() - start

    def mark(self, event: str) -> None:
        """The first time `event` happens, counted from the job's arrival."""
        self.seconds.setdefault(event, time.perf_counter() - self.started)

    def finish(self) -> dict[str, float]:
        self.seconds["total"] = time.perf_counter() - self.started
        return {step: round(seconds, 3) for step, seconds in self.seconds.items()}


class Engine:
    """Runs jobs against one set of settings; `storage` is None when no bucket is configured."""

    def __init__(self, settings: Settings, storage=None, voice_storage=None):
        self.settings = settings
        if storage is not None:
            self.__dict__["storage"] = storage
        if voice_storage is not None:
            self.__dict__["voice_storage"] = voice_storage
        self.transcripts = Transcripts(settings)
        self.voice_cache = VoiceCache(settings.voice_cache_mb * 2**20)
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
    def voice_storage(self):
        """Where voices named by `voice_name` are read: the bucket, or a door's own store (the HTTP
        door's local folder without S3)."""
        return self.storage

    @cached_property
    def delivery(self) -> Delivery:
        return Delivery(self.settings, self.storage)

    def run(self, job_id: str, raw_input, stream: bool = False, progress=None,
            delivery: Delivery | None = None, arrived: float | None = None) -> Iterator[StreamPart | JobResult]:
        """The job's path. Yields its result last; before it, when `stream`, each part of its audio.
        `progress(chunks_done=, chunks=, audio_s=)` hears of a job of several batches as it moves.
        `delivery`: where the answer goes and the limits it must fit (the worker's own by default:
        S3, inline, a local copy); a front door that sends the bytes itself passes its own.
        `raw_input` may be a `JobInput` a door has parsed by its own rules. `arrived`: when the job
        reached the door (`time.perf_counter()`), so that its timings count all the caller waits for."""
        s, timings, delivery = self.settings, Timings(arrived), delivery or self.delivery
        job = raw_input if isinstance(raw_input, JobInput) else parse_job_input(raw_input, s)  # a door may parse it
        params = synthesis_params(job)
        with timings("normalize"):
            script = self.spoken(job, script_of(job))
        log.info("job %s: %d characters, %s%s", job_id, job.text_chars(),
                 f"{len(script.names)} voices in {len(script.lines)} segments" if job.voices else
                 "voice from " + voices.source_of(job), ", streamed" if stream else "")
        with job_directory(s.job_tmp_dir, job_id, s.min_free_disk_mb) as job_dir:
            with timings("download"):
                staged = self.stage_voices(job, script.names, job_dir)
            with timings("model"):
                model = loaded_model.get_model(s)
                verifier = self.verifier(job, params, model.sample_rate) if job.verify else None
            with timings("transcript"):
                references = self.references(job, script.names, staged, model.sample_rate)
            with timings("synthesis"):
                plan = self.plan(job, script, references, params, model, stream, delivery)
                speech = yield from self.synthesize(job, script, references, plan, params, model, stream, progress,
                                                    timings, verifier)
                speech = post_process(speech, plan, model.sample_rate, job.remove_silence)
                timed = captions.timed([c.text for c in plan.chunks], speech.spans, model.sample_rate,
                                       speakers(script, plan))
            if verifier is not None:
                timings.seconds.update(verify=verifier.seconds, verify_asr=verifier.hearing_seconds)
            with timings("encode"):
                files = encode(job, job_id, speech, model.sample_rate, timed, job_dir)
            with timings("upload"):
                output = deliver(delivery, job, files, speech.streamed_bytes)
            for reference in references:  # only now: a failed job leaves no transcript behind
                self.transcripts.keep(reference.transcript)
        result = job_result(job, script, references, plan, params, speech, timed, output, model, timings.finish(),
                            verifier)
        log.info("job %s: %.1f s of audio in %.2f s (synthesis %.2f s, %d chunks in %d batches%s)",
                 job_id, result.duration_s, result.timings["total"], result.timings["synthesis"], result.chunks,
                 result.batches, f"; first audio at {result.timings['first_audio']:.2f} s" if stream else "")
        yield result

    # --- the steps, in order -------------------------------------------------------------------

    def spoken(self, job: JobInput, script: Script) -> Script:
        """The lines as they will be said: numbers, money, dates, times, units and symbols in words
        (unless the job sends normalize: false). The job's limits hold for what is said."""
        if not job.normalize:
            return script
        s = self.settings
        # the spoken form's limit is checked as it is read: reading stops at the piece that passes it
        reading = text_normalization.Reading(self.grammars, job.text_language, s.max_normalize_chars,
                                             max_spoken_chars=s.max_text_chars)
        texts = text_normalization.normalize_all([line.text for line in script.lines], reading)
        for n, text in enumerate(texts):
            if not any(ch.isalnum() for ch in text):  # what validation asks of the text as sent
                where = "text" if job.voices is None else \
                    f"segments.{n}.text" if job.segments is not None else f"text: segment {n + 1}"
                raise InvalidInput(f"Invalid input: {where} has nothing left to speak once its numbers and symbols "
                                   "are read; send words, or normalize: false.")
        return Script(script.names, [dataclasses.replace(line, text=text) for line, text in zip(script.lines, texts)])

    def stage_voices(self, job: JobInput, names: list[str | None], job_dir: Path) -> list[StagedAudio]:
        """Each voice of the job staged and decoded once, however many segments speak in it, in
        the order of `names`. A dialogue's voices are fetched at the same time, so it waits for its
        slowest voice, not for their sum."""
        s = self.settings

        def stage(n: int, name: str | None) -> StagedAudio:
            with voice_named(name):
                voice, prepared = self.voice_cache.stage(voice_of(job, name), job_dir if name is None else
                                                         job_dir / f"voice-{n}", s, self.voice_storage)
                if prepared is not None:
                    return StagedAudio(voice, None, 0, prepared)
                return StagedAudio(voice, *audio_io.read_audio(voice.path, s.max_voice_seconds,
                                                               keep_seconds=s.ref_clip_seconds + 1))

        if len(names) == 1:
            return [stage(0, names[0])]
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="voice") as pool:
            futures = [pool.submit(stage, n, name) for n, name in enumerate(names)]
        # All have ended here (nothing writes into the job directory any more); a failure is the
        # first voice's in order, whichever failed first.
        return [future.result() for future in futures]

    def references(self, job: JobInput, names: list[str | None], staged: list[StagedAudio],
                   rate: int) -> list[Reference]:
        """Each voice's recording clipped and resampled for the model, and its transcript."""
        s, references = self.settings, []
        for name, voice in zip(names, staged):
            spec = voice_of(job, name)
            with voice_named(name):
                audio = voice.prepared
                if audio is None:
                    audio = audio_io.prepare_reference(voice.audio, voice.rate, rate, s.ref_clip_seconds,
                                                       s.min_voice_seconds)
                    self.voice_cache.put(voice.voice.identity, audio)  # at the model's rate: one per process
                transcript = self.transcripts.find(spec.ref_text, spec.language, voice.voice, audio, rate)
            references.append(Reference(audio, transcript, voice.prepared is not None))
        return references

    def plan(self, job: JobInput, script: Script, references: list[Reference], params: SynthesisParams, model,
             stream: bool, delivery: Delivery) -> Plan:
        """The chunks and batches of the job, and what follows from them refused before any work:
        output over MAX_OUTPUT_SECONDS, a chunk over the model's or the memory's limit, an answer
        over RunPod's payload limit (a streamed job's pieces are 16-bit samples, and /run and
        /runsync return them all)."""
        s = self.settings
        refs = [(len(r.audio), r.transcript.text) for r in references]
        plan = synthesis.plan_lines(model, refs, script.lines, params, s.max_batch_frames, s.max_output_seconds,
                                    stream=stream)
        if not job.remove_silence:  # it shortens the audio: the plan's size is no floor then
            delivery.check_planned_size(job.return_base64, job.output_format, plan.samples,
                                             job.stream_format if stream else None)
        return plan

    def verifier(self, job: JobInput, params: SynthesisParams, rate: int) -> verification.Verifier:
        """What checks a verified job's chunks; asked for before any synthesis, so that a worker
        without its ASR model refuses the job at once."""
        s = self.settings
        listener = asr.get_listener(s)
        reading = text_normalization.Reading(self.grammars, job.text_language, s.max_normalize_chars)

        def read(texts: list[str]) -> list[str]:  # what was heard, with its numbers read as the text's were
            try:
                return text_normalization.normalize_all(texts, reading)
            except LimitExceeded:  # heard symbols past the grammars' bound: compared as heard
                return texts

        return verification.Verifier(listener.hear, verification.Comparer(read), rate, params.seed,
                                     s.verify_max_error, s.verify_attempts, job.text_language, s.verify_asr_model)

    def synthesize(self, job: JobInput, script: Script, references: list[Reference], plan: Plan,
                   params: SynthesisParams, model, stream: bool, progress, timings: Timings,
                   verifier: verification.Verifier | None = None) -> Iterator[StreamPart]:
        """The job's speech, piece by piece in reading order; a streamed job's pieces are sent
        (yielded, in parts) as they are made, and sampled ahead while one is sent. Returns the
        whole `Speech`. With `verifier`, each chunk is heard before its piece is made (and sent)."""
        audio = [r.audio for r in references]
        # closed at once on a failure here: the sampling stops and the model is free again
        pieces = synthesis.stream(model, audio, plan, params, verifier) if stream else \
            synthesis.pieces(model, audio, plan, params, progress, verify=verifier)
        made, spans, sent = [], [], 0
        names = speakers(script, plan)
        with closing(pieces):
            for piece in pieces:
                made.append(piece.audio)
                spans.append(piece.span)
                if stream:
                    for part in stream_parts(piece, model.sample_rate, job.stream_format,
                                             names[piece.index] if names else None):
                        timings.mark("first_audio")
                        sent += len(part.audio)
                        yield part
        words = None if verifier is None else verification.placed(verifier.checks, spans, model.sample_rate, names)
        return Speech(np.concatenate(made), spans, sent, words)

def script_of(job: JobInput) -> Script:
    """The job's voices and lines as written (before normalisation)."""
    if job.voices is None:
        return Script([None], [Line(job.text)])
    names: list[str | None] = []
    lines = []
    for segment in job.segments_in_order():
        if segment.voice not in names:
            names.append(segment.voice)
        speed = segment.speed if segment.speed is not None else job.voices[segment.voice].speed
        lines.append(Line(segment.text, names.index(segment.voice), speed, segment.pause_after))
    return Script(names, lines)


def voice_of(job: JobInput, name: str | None) -> VoiceInput:
    """The voice called `name` in a dialogue; None: the job's own, top-level voice."""
    return job if name is None else job.voices[name]


@contextmanager
def voice_named(name: str | None):
    """A dialogue's voice that fails says which it is: `voices.<name>: <why>`."""
    try:
        yield
    except JobError as exc:
        if name is not None:
            exc.message = f"voices.{name}: {exc.message}"
        raise


def speakers(script: Script, plan: Plan) -> list[str] | None:
    """Each chunk's voice by name, in a dialogue."""
    return [script.names[c.ref] for c in plan.chunks] if script.names != [None] else None


def synthesis_params(job: JobInput) -> SynthesisParams:
    """How the job is sampled; its seed drawn now when it sent none, and reported in its result."""
    return SynthesisParams(
        nfe_step=job.nfe_step, cfg_strength=job.cfg_strength, sway_sampling_coef=job.sway_sampling_coef,
        speed=job.speed, cross_fade_duration=job.cross_fade_duration, target_rms=job.target_rms,
        seed=job.resolved_seed(),
    )


def stream_parts(piece: synthesis.Piece, rate: int, fmt: str, voice: str | None = None) -> Iterator[StreamPart]:
    """One streamed piece in parts of at most PART_SECONDS, each encoded in `fmt`."""
    step = int(PART_SECONDS * rate)
    for part, at in enumerate(range(0, max(len(piece.audio), 1), step)):
        audio = piece.audio[at:at + step]
        yield StreamPart(piece.index, part, voice, piece.text, round((piece.start + at) / rate, 3),
                         round(len(audio) / rate, 3), rate, fmt, audio_io.encoded(audio, rate, fmt))


def post_process(speech: Speech, plan: Plan, rate: int, remove_silence: bool) -> Speech:
    """Everything done to the whole wave after sampling, in the one order that is right, with the
    caption spans moved along: long pauses cut (remove_silence) but the pauses a dialogue asks
    for kept whole. A step that changes levels (a gain) belongs here, and before the cuts only if
    the cuts should hear it: it moves which pauses are quiet enough to cut."""
    if not remove_silence:
        return speech
    asked = [(end, end + c.pause_after) for c, (_, end) in zip(plan.chunks, speech.spans) if c.pause_after]
    cuts = [cut for cut in audio_io.long_pauses(speech.wave, rate)
            if not any(cut[0] < b and a < cut[1] for a, b in asked)]
    spans = [(audio_io.after_cuts(a, cuts), audio_io.after_cuts(b, cuts)) for a, b in speech.spans]
    words = None if speech.words is None else [
        dataclasses.replace(w, start=audio_io.after_cuts(w.start, cuts), end=audio_io.after_cuts(w.end, cuts))
        for w in speech.words]
    return Speech(audio_io.without(speech.wave, cuts), spans, speech.streamed_bytes, words)


def encode(job: JobInput, job_id: str, speech: Speech, rate: int, timed: list[dict], job_dir: Path) -> Encoded:
    """The audio in the job's output_format, and its subtitles in captions_format when asked for
    (vtt_words: each word's time inside its cue, from a verified job's words)."""
    path = job_dir / f"{job_id}.{job.output_format}"
    content_type = audio_io.encode_audio(speech.wave, rate, job.output_format, path)
    subtitles = None
    if job.captions_format is not None:
        text_path = job_dir / f"{job_id}.{captions.EXTENSIONS[job.captions_format]}"
        words = None
        if speech.words is not None:
            words = [[] for _ in timed]
            for w in speech.words:
                words[w.chunk].append(captions.CueWord(w.word, w.start / rate, w.spaced))
        subtitles = (text_path, captions.write_subtitles(timed, job.captions_format, text_path, words))
    return Encoded(path, content_type, subtitles)


def deliver(delivery: Delivery, job: JobInput, files: Encoded, streamed_bytes: int) -> dict:
    """The files to where the job's answer goes: the answer's fields."""
    subtitles = None
    if files.subtitles is not None:
        path, content_type = files.subtitles
        subtitles = (path, delivery.key(path.name), content_type)
    return delivery.deliver(files.audio, delivery.key(files.audio.name), files.content_type, job.return_base64,
                            subtitles, streamed_bytes)


def job_result(job: JobInput, script: Script, references: list[Reference], plan: Plan, params: SynthesisParams,
               speech: Speech, timed: list[dict], delivered: dict, model, timings: dict[str, float],
               verifier: verification.Verifier | None = None) -> JobResult:
    duration = len(speech.wave) / model.sample_rate
    names, transcripts = script.names, [r.transcript for r in references]
    if job.voices:
        about = {"voices": {name: {"ref_text": r.transcript.text, "ref_text_source": r.transcript.source,
                                   "voice_cached": r.cached} for name, r in zip(names, references)},
                 "segments": len(script.lines),
                 "normalized_text": " ".join(f"[{names[line.ref]}] {line.text}" for line in script.lines)}
    else:
        about = {"ref_text": transcripts[0].text, "ref_text_source": transcripts[0].source,
                 "voice_cached": references[0].cached, "normalized_text": script.lines[0].text}
    if verifier is not None:
        about.update(verification=verifier.summary(), words=verification.word_dicts(speech.words, model.sample_rate))
    return JobResult(
        **delivered, duration_s=round(duration, 3), sample_rate=model.sample_rate, format=job.output_format,
        seed=params.seed, model=model.files.name, **about, chunks=len(plan.chunks), batches=len(plan.batches),
        captions=timed, timings=timings, rtf=round(timings["synthesis"] / duration, 4) if duration else None,
    )


def synthesize_once(model, max_batch_frames: int) -> None:
    """One tiny synthesis (CUDA kernels, cuBLAS and cuDNN handles) before the first job needs them."""
    t = np.arange(model.sample_rate) / model.sample_rate
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    synthesis.synthesize(model, tone, "Warm up.", "Warm up.", SynthesisParams(nfe_step=2, seed=0), max_batch_frames,
                         serves=False)
