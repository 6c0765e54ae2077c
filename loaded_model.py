"""The model of this process: the CFM (DiT or UNetT) and Vocos on their device, loaded once,
lazily, from the files `model_cache` resolves on the volume.

Loading overlaps what it can: the weights are read ahead (and their sha256 checked) while torch
and f5-tts import; on a GPU the fp16 copy is loaded (half the bytes); COMPILE compiles the DiT
blocks in the background once a first job's synthesis has been served, unless blocks compiled
ahead of time for this kind of worker are on the volume (`compiled_blocks`): those are loaded with
the model.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import compiled_blocks
import fp16_copy
import hub_cache
import model_cache
import proc_stat
import runpod_cache
from checkpoints import HOP_LENGTH, SAMPLE_RATE, ModelFiles, build_cfm, read_checkpoint
from config import Settings
from errors import JobError, ModelLoadError

log = logging.getLogger("f5worker.loaded_model")


@dataclass
class LoadedModel:
    """The model of this process: the CFM (DiT or UNetT) and the Vocos vocoder, on their device."""

    cfm: object
    vocoder: object
    files: ModelFiles
    device: str
    dtype: object
    load_seconds: float
    loaded_from: Path | None = None
    sample_rate: int = SAMPLE_RATE
    hop_length: int = HOP_LENGTH
    #: CUDA_GRAPHS; the sampler uses graphs only on a CUDA device.
    cuda_graphs: bool = False
    #: The DiT blocks synthesis runs: the eager ones, then the compiled ones once they are ready.
    blocks: list = field(default_factory=list, repr=False)
    #: Set when there is nothing (more) to compile: compiled, failed, or COMPILE off.
    compile_done: threading.Event = field(default_factory=threading.Event, repr=False)
    #: Set when a job's synthesis has finished; compiling waits for it (see compile_in_background).
    served: threading.Event = field(default_factory=threading.Event, repr=False)
    compile_thread: threading.Thread | None = field(default=None, repr=False)
    #: Held by the sampling loop for each call: the model's modules are not thread-safe.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: The sampling loop that runs this model for every job (`batching`), made on first use.
    batcher: object = field(default=None, repr=False)

    def __post_init__(self):
        import sampler

        self.blocks = self.blocks or sampler.blocks_of(self.cfm.transformer)


_model: LoadedModel | None = None
#: Why the load failed, when it did: the next job gets the same sentence at once instead of a
#: second try (minutes of hub retries offline). Such errors ask for a fresh worker, or name a
#: setting or a file that a second try in this process would meet again.
_failure: JobError | None = None
_model_lock = threading.Lock()


def get_model(settings: Settings) -> LoadedModel:
    """The process's model, loaded with `settings` on first use (thread-safe) and returned at no
    cost after (later calls' settings are not read: there is one model per process)."""
    global _model, _failure
    model = _model
    if model is None:
        with _model_lock:
            if _failure is not None:
                raise _failure
            if _model is None:
                try:
                    _model = load_model(settings)
                except JobError as exc:
                    _failure = exc
                    raise
            model = _model
    return model


def load_model(settings: Settings) -> LoadedModel:
    started = time.perf_counter()
    store = model_cache.ModelStore.from_settings(settings)
    store.ensure_layout()
    # A checkpoint in RunPod's model cache is checked as it is read ahead, beside the imports, not
    # before: one that does not match its sha256 is passed over for the volume or a download.
    files = model_cache.resolve_model_files(settings)
    try:
        return load_resolved(settings, store, files, started)
    except ModelLoadError:
        if not runpod_cache.holds(store.runpod_cache, files.checkpoint) or runpod_cache.intact(files.checkpoint):
            raise
        # intact() logged the mismatch once and remembers it: resolving again passes that copy over
        return load_resolved(settings, store, model_cache.resolve_model_files(settings), started)


def load_resolved(settings: Settings, store: model_cache.ModelStore, files: ModelFiles, started: float) -> LoadedModel:
    # which store each file came from: a warning without a network volume (what is not in RunPod's
    # model cache was downloaded to local disk, and the next cold start downloads it again)
    log.log(logging.WARNING if not settings.on_volume and settings.f5_model != "tiny" else logging.INFO,
            "model files: %s", "; ".join(f"{name} from {store.store_of(path)} ({path})" for name, path in
                                         (("checkpoint", files.checkpoint), ("vocoder", files.vocoder_dir))))
    # Read the weights into the page cache while torch and f5-tts import (seconds of CPU work):
    # from a network volume that read takes seconds too, and the two overlap.
    # What load_files picks on a GPU: the fp16 copy when it is current.
    manifest = fp16_copy.fp16_manifest(files) if settings.device != "cpu" else None
    weights = {fp16_copy.fp16_artifact(files): manifest.get("sha256")} if manifest else \
        {files.checkpoint: None if runpod_cache.checked(files.checkpoint) else hub_cache.hub_digest(files.checkpoint)}
    reader = read_ahead({**weights, files.vocoder_dir / "pytorch_model.bin": None})
    return load_files(files, settings.device, started, compile_blocks=settings.compile,
                      cuda_graphs=settings.cuda_graphs, reader=reader,
                      compiled_dir=compiled_blocks.compiled_root(store.artifacts_dir) if settings.aot_compile else None)


def load_files(files: ModelFiles, requested_device: str = "auto", started: float | None = None,
               compile_blocks: bool | None = False, cuda_graphs: bool = False,
               reader: ReadAhead | None = None, compiled_dir: Path | None = None) -> LoadedModel:
    """Load resolved files onto the device: the CFM (DiT) in fp16 on CUDA, fp32 on CPU, and Vocos.
    With compiling on and `compiled_dir` (AOT_COMPILE), the DiT blocks compiled ahead of time are
    loaded from there when a worker of this kind built them (`compiled_blocks`)."""
    started = time.perf_counter() if started is None else started
    phases = {}
    import torch

    phases["import torch"] = time.perf_counter()
    device = resolve_device(requested_device)
    dtype = inference_dtype(device)
    with torch.device(device):  # initialise the weights where they will live: no host copy
        cfm = build_cfm(files)
    phases["import f5-tts, build"] = time.perf_counter()
    checkpoint = checkpoint_to_load(files, dtype, reader)
    state = read_checkpoint(checkpoint, device)
    try:
        cfm.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"The checkpoint {checkpoint} does not fit {files.name}: {str(exc).splitlines()[0]}"
        ) from exc
    del state
    cfm = cfm.to(dtype).eval()
    phases["weights"] = time.perf_counter()
    vocoder = load_vocoder(files.vocoder_dir, device)
    phases["vocoder"] = time.perf_counter()
    compiling = (device.startswith("cuda") if compile_blocks is None else compile_blocks) and files.backbone == "DiT"
    blocks = None  # E2-TTS's UNetT runs its layers eagerly (CUDA graphs still apply)
    if compiling and compiled_dir is not None:
        blocks = compiled_blocks.load_if_built(cfm.transformer, device, dtype, compiled_dir)
        phases["compiled blocks"] = time.perf_counter()
    seconds = time.perf_counter() - started
    marks = [started, *phases.values()]
    age = process_age()
    log.info("loaded %s from %s on %s (%s) in %.2f s (%s)%s", files.name, checkpoint, device, dtype, seconds,
             ", ".join(f"{name} {b - a:.2f} s" for name, a, b in zip(phases, marks, marks[1:])),
             f"; ready {age:.2f} s after the process started" if age is not None else "")
    model = LoadedModel(cfm, vocoder, files, device, dtype, seconds, checkpoint, cuda_graphs=cuda_graphs)
    if blocks:
        model.blocks = blocks  # the first job runs them: nothing to compile
    if blocks or not compiling:
        model.compile_done.set()
    else:
        compile_in_background(model, compiled_dir)
    return model


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"DEVICE={requested} but no CUDA device is available.")
    return requested


def inference_dtype(device: str):
    """fp16 on CUDA GPUs of compute capability 7 or more (as f5-tts does), else fp32."""
    import torch

    if device.startswith("cuda") and torch.cuda.get_device_properties(device).major >= 7:
        return torch.float16
    return torch.float32


def checkpoint_to_load(files: ModelFiles, dtype, reader: ReadAhead | None = None) -> Path:
    """The fp16 copy when the model runs in fp16 and the copy belongs to this checkpoint (and,
    when `reader` read it ahead, its digest matched); otherwise the checkpoint itself (a stale,
    partial or corrupt copy is ignored). A checkpoint whose digest does not match is refused."""
    import torch

    target = files.fp16_copy
    if dtype == torch.float16 and target is not None and target.is_file():
        if not fp16_copy.fp16_copy_is_current(files):
            log.warning("ignoring %s: it was not made from %s (run `python model_cache.py prefetch`)",
                        target, files.checkpoint)
        elif reader is not None and reader.intact(target) is False:
            log.error("ignoring %s: its content does not match its sha256 (run `python model_cache.py prefetch` "
                      "to write it again)", target)
        else:
            return target
    if reader is not None and reader.intact(files.checkpoint) is False:
        raise ModelLoadError(f"The checkpoint {files.checkpoint} is corrupt (its sha256 does not match): run "
                             "`python model_cache.py prefetch` to repair it.")
    return files.checkpoint


def load_vocoder(vocoder_dir: Path, device: str):
    import torch
    from vocos import Vocos

    try:
        vocoder = Vocos.from_hparams(str(vocoder_dir / "config.yaml"))
        state = torch.load(str(vocoder_dir / "pytorch_model.bin"), map_location="cpu", weights_only=True)
        vocoder.load_state_dict(state)
    except Exception as exc:
        raise ModelLoadError(f"The vocoder in {vocoder_dir} could not be loaded: {type(exc).__name__}: {exc}") from exc
    return vocoder.eval().to(device)


class ReadAhead(threading.Thread):
    """Reads files in the background, so that a later read finds them in the page cache, and
    checks the sha256 of those whose digest is known on the way (hashing releases the GIL: it
    runs beside the imports, as the read does)."""

    def __init__(self, files: dict[Path, str | None]):
        super().__init__(name="read-ahead", daemon=True)
        self.files, self.verdicts = files, {}

    def run(self):
        for path, expected in self.files.items():
            try:
                if expected:
                    self.verdicts[Path(path)] = hub_cache.sha256_of(path) == expected
                    continue
                with open(path, "rb", buffering=0) as fh:
                    while fh.read(16 << 20):
                        pass
            except OSError:  # the real read reports it
                pass

    def intact(self, path: Path) -> bool | None:
        """Whether `path` matched its digest; None when it had none or could not be read."""
        self.join()
        return self.verdicts.get(Path(path))


def read_ahead(files: dict[Path, str | None]) -> ReadAhead:
    """Start reading `files` (path -> expected sha256, or None) ahead; see ReadAhead."""
    reader = ReadAhead(files)
    reader.start()
    return reader


def compile_in_background(model: LoadedModel, compiled_dir: Path | None = None) -> None:
    """Regional compilation of the DiT blocks, off the request path.

    With `compiled_dir`, the thread builds the blocks ahead of time into it (`compiled_blocks`),
    or loads what another worker built there meanwhile, for this worker and the next ones; if
    that fails, it compiles as follows.

    Requests keep running the eager blocks while a background thread compiles each block
    (dynamic shapes, so a new text length does not recompile; the blocks are identical and share
    the compiled code) and runs the compiled ones once per input form the sampler uses (one row,
    and several rows with a padding mask). Then `model.blocks` switches to them. Inductor keeps
    the generated code in TORCHINDUCTOR_CACHE_DIR on the volume, where the next worker finds it.

    Compiling starts only once a first synthesis has finished: it takes the CPU and the GIL for
    seconds, and on an H100 it slowed the first request of a cold worker from 0.56 s to 4.1 s.
    """
    import torch

    import sampler

    def build_ahead_of_time() -> bool:
        started = time.perf_counter()
        try:
            model.blocks, built = compiled_blocks.build_and_load(model.cfm.transformer, model.device, model.dtype,
                                                                 compiled_dir, model.lock)
        except Exception as exc:  # noqa: BLE001 - an optimisation: torch.compile, or eager, still serve
            log.warning("COMPILE: the compiled DiT blocks could not be had (%s: %s); compiling them with torch.compile",
                        type(exc).__name__, compiled_blocks.first_line(exc))
            return False
        log.info("%s the compiled DiT blocks in %.1f s; requests now use them", "built" if built else "loaded",
                 time.perf_counter() - started)
        return True

    def compile_blocks():
        model.served.wait()
        if compiled_dir is not None and build_ahead_of_time():
            model.compile_done.set()
            return
        started = time.perf_counter()
        try:
            compiled = [torch.compile(block, dynamic=True) for block in model.cfm.transformer.transformer_blocks]
            generator = torch.Generator().manual_seed(0)
            wave = (0.1 * torch.randn(2, SAMPLE_RATE, generator=generator)).to(model.device)
            texts = ["Warm up the compiled blocks.", "And once more."]
            with torch.inference_mode():
                for rows in (1, 2):
                    duration = torch.full((rows,), 2 * SAMPLE_RATE // HOP_LENGTH, dtype=torch.long)
                    sampler.sample(model.cfm, wave[:rows], texts[:rows], duration, steps=2, blocks=compiled,
                                   cuda_graph=False)
            model.blocks = compiled
            log.info("compiled the DiT blocks in %.1f s; requests now use them", time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - compiling is an optimisation: keep serving eagerly
            log.warning("COMPILE: compiling the DiT blocks failed, requests stay eager: %s: %s",
                        type(exc).__name__, exc)
        finally:
            model.compile_done.set()

    model.compile_thread = threading.Thread(target=compile_blocks, name="compile", daemon=True)
    model.compile_thread.start()


def process_age() -> float | None:
    """Seconds since this process started (Linux; None elsewhere): cold-start logs count from there."""
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - proc_stat.start_ticks("self") / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
