"""Model storage on the network volume: its layout (`ModelStore`, built from the settings),
local-first resolution of what the configured model needs, and the commands that fill the volume
and say what is on it. Hub files are `hub_cache`'s job; the model's definition and formats,
`checkpoints`'; the fp16 copy, `fp16_copy`'s; the test model, `random_weights`'; loading a model
onto a device, `loaded_model`'s.

Importing it changes nothing in the process: each entry point points the libraries' caches at
`<models>/` with `cache_env.configure` before torch or huggingface_hub is imported (this
module's commands do so first of all).

    python model_cache.py prefetch         # fill the volume with everything the worker needs
    python model_cache.py status           # what is present where, with sizes
    python model_cache.py make-test-model  # a tiny random-weight model for offline tests (F5_MODEL=tiny)
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":  # the command line: a bad setting is one line, not a traceback; then the caches
    import cache_env
    from config import settings_or_exit

    cache_env.configure(settings_or_exit())

import runpod_cache
import text_normalization
from cache_env import cache_environment
from checkpoints import HUB_CHECKPOINTS, VOCOS_FILES, VOCOS_REPO, ModelFiles, f5_package_dir, model_config
from config import Settings, get_settings
from errors import ModelLoadError, WorkerSetupError, os_error
from fp16_copy import fp16_artifact, fp16_copy_is_current, fp16_copy_is_intact, write_fp16_artifact
from hub_cache import SNAPSHOT_PATTERNS, hub_file, hub_snapshot, verify_hub_file
from random_weights import make_test_model

log = logging.getLogger("f5worker.model_cache")

#: Folders under the models directory; see the README's storage section.
LAYOUT = ("hub", "transformers", "torch", "f5-tts", "checkpoints")


@dataclass(frozen=True)
class ModelStore:
    """The models' storage: the folders under the models directory (see the README's storage
    section), built from the settings."""

    models_dir: Path
    #: RunPod's model cache (RUNPOD_MODEL_CACHE): read first, never written; None: not consulted.
    runpod_cache: Path | None = None
    #: Whether the models directory is on the network volume (how logs and `status` name it).
    on_volume: bool = False
    #: <models>/hub: the Hugging Face hub cache (checkpoints, Vocos, Whisper).
    hub_dir: Path = field(init=False)
    #: <models>/f5-tts: this worker's own files (fp16 copies, the test model, the grammars).
    artifacts_dir: Path = field(init=False)
    #: <models>/checkpoints: your own checkpoints (F5_CKPT_FILE, F5_VOCAB_FILE relative to here).
    checkpoints_dir: Path = field(init=False)
    #: <models>/f5-tts/tiny: the tiny random-weight test model.
    tiny_dir: Path = field(init=False)

    def __post_init__(self):
        models = Path(self.models_dir)
        for name, path in (("models_dir", models), ("hub_dir", models / "hub"), ("artifacts_dir", models / "f5-tts"),
                           ("checkpoints_dir", models / "checkpoints"), ("tiny_dir", models / "f5-tts" / "tiny")):
            object.__setattr__(self, name, path)  # frozen: set once, here

    @classmethod
    def from_settings(cls, settings: Settings) -> "ModelStore":
        return cls(settings.models_dir, settings.runpod_model_cache, settings.on_volume)

    def hub_file(self, repo_id: str, filename: str, *, download: bool, downloads_allowed: bool = True,
                 check: bool = True) -> Path:
        """A hub file local first across both stores: RunPod's model cache (intact files only;
        `check` False: not hashed now, for a caller that checks it as it reads it), then
        <models>/hub, then a download into <models>/hub (`hub_cache.hub_file`)."""
        return runpod_cache.cached_file(self.runpod_cache, repo_id, filename, check=check) or \
            hub_file(self.hub_dir, repo_id, filename, download=download, downloads_allowed=downloads_allowed)

    def hub_snapshot(self, repo_id: str, *, download: bool) -> Path:
        """A whole model repository (Whisper), local first across both stores like `hub_file`."""
        return runpod_cache.cached_snapshot(self.runpod_cache, repo_id, SNAPSHOT_PATTERNS) or \
            hub_snapshot(self.hub_dir, repo_id, download=download)

    def store_of(self, path: Path) -> str:
        """Which store holds `path`, as logs and `status` name it."""
        if runpod_cache.holds(self.runpod_cache, path):
            return runpod_cache.STORE_NAME
        if runpod_cache.holds(self.models_dir, path):
            return "network volume" if self.on_volume else "models folder (not a network volume)"
        return "outside the models folder"

    def fp16_copy(self, name: str) -> Path:
        """Where the fp16 copy of model `name` is kept."""
        return self.artifacts_dir / name / "model_fp16.safetensors"

    def custom_path(self, path: Path) -> Path:
        """Relative custom checkpoint paths are taken under <models>/checkpoints/."""
        return path if path.is_absolute() else self.checkpoints_dir / path

    def ensure_layout(self) -> None:
        for name in LAYOUT:
            try:
                (self.models_dir / name).mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a read-only volume without its folders, a path through a file
                raise os_error(exc, "the models folder", "MODELS_DIR", self.models_dir / name) from None


# --------------------------------------------------------------------------------------
# Resolution: local first, download only what is missing (hub_cache)
# --------------------------------------------------------------------------------------


def resolve_model_files(settings: Settings, *, download: bool | None = None,
                        check_checkpoint: bool = False) -> ModelFiles:
    """Find (and, if allowed, fetch) everything the configured model needs. A checkpoint in
    RunPod's cache is hashed here only with `check_checkpoint`: the loader checks it as it reads
    it ahead, beside the imports (and calls `runpod_cache.intact` on a mismatch); one already
    found corrupt is passed over."""
    download = settings.allow_model_download if download is None else download
    backbone, arch = model_config(settings.f5_model)
    checkpoint = resolve_checkpoint(settings, download, check_checkpoint)
    vocoder_dir = resolve_vocoder(settings, download)
    vocab = resolve_vocab(settings)
    return ModelFiles(settings.f5_model, backbone, arch, checkpoint, vocab, vocoder_dir,
                      ModelStore.from_settings(settings).fp16_copy(settings.f5_model))


def resolve_checkpoint(settings: Settings, download: bool, check: bool = True) -> Path:
    store = ModelStore.from_settings(settings)
    if settings.f5_model == "tiny":
        checkpoint = store.tiny_dir / "model.safetensors"
        if not checkpoint.is_file():
            raise ModelLoadError(f"The tiny test model is not in {store.tiny_dir}; run `python model_cache.py make-test-model`.")
        return checkpoint
    if settings.f5_ckpt_file is not None:
        checkpoint = store.custom_path(settings.f5_ckpt_file)
        if not checkpoint.is_file():
            raise ModelLoadError(f"F5_CKPT_FILE {checkpoint} does not exist.")
        return checkpoint
    if settings.f5_model in HUB_CHECKPOINTS:
        return store.hub_file(*HUB_CHECKPOINTS[settings.f5_model], download=download,
                              downloads_allowed=settings.allow_model_download, check=check)
    raise ModelLoadError(f"{settings.f5_model} has no published checkpoint; set F5_CKPT_FILE to yours.")


def resolve_vocoder(settings: Settings, download: bool) -> Path:
    """The folder holding Vocos's config.yaml and pytorch_model.bin."""
    store = ModelStore.from_settings(settings)
    if settings.f5_model == "tiny":
        return store.tiny_dir / "vocos"
    allowed = settings.allow_model_download
    paths = [store.hub_file(VOCOS_REPO, name, download=download, downloads_allowed=allowed) for name in VOCOS_FILES]
    if len({path.parent for path in paths}) > 1:  # one in RunPod's cache, one on the volume: Vocos reads one folder
        paths = [hub_file(store.hub_dir, VOCOS_REPO, name, download=download, downloads_allowed=allowed)
                 for name in VOCOS_FILES]
    return paths[0].parent


def resolve_vocab(settings: Settings) -> Path:
    store = ModelStore.from_settings(settings)
    if settings.f5_vocab_file is not None:
        vocab = store.custom_path(settings.f5_vocab_file)
        if not vocab.is_file():
            raise WorkerSetupError(f"F5_VOCAB_FILE {vocab} does not exist.")
        return vocab
    vocab = store.tiny_dir / "vocab.txt" if settings.f5_model == "tiny" else f5_package_dir() / "infer/examples/vocab.txt"
    if not vocab.is_file():
        raise WorkerSetupError(f"The vocabulary file {vocab} is missing: reinstall f5-tts, or set F5_VOCAB_FILE.")
    return vocab


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _size(path: Path) -> str:
    size = os.path.getsize(os.path.realpath(path))
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def required_hub_files(settings: Settings) -> list[tuple[str, str]]:
    files = [(VOCOS_REPO, name) for name in VOCOS_FILES]
    if settings.f5_model in HUB_CHECKPOINTS and settings.f5_ckpt_file is None:
        files.insert(0, HUB_CHECKPOINTS[settings.f5_model])
    return files


def prefetch(settings: Settings, verify: bool = True) -> int:
    """Download what is missing, check what is present, repair what is corrupt. Idempotent."""
    store = ModelStore.from_settings(settings)
    store.ensure_layout()
    if settings.f5_model == "tiny":
        print(f"F5_MODEL=tiny: writing the tiny test model into {store.tiny_dir}")
        make_test_model(store.tiny_dir)
        prefetch_grammars(store.models_dir)
        print(f"ASR model not prefetched ({asr_prefetch_skipped(settings)}): {_asr_fetched_by(settings)}")
        return 0
    required = required_hub_files(settings)
    # RunPod's model cache is read, never written: what it holds intact is not fetched again
    cached = {file: runpod_cache.cached_file(store.runpod_cache, *file) for file in required}
    if not all(cached.get((VOCOS_REPO, name)) for name in VOCOS_FILES):  # Vocos is read from one folder
        cached.update({(VOCOS_REPO, name): None for name in VOCOS_FILES})
    for repo_id, filename in required:
        path = cached[(repo_id, filename)]
        if path is None:
            path = hub_file(store.hub_dir, repo_id, filename, download=True)
            if verify and not verify_hub_file(path):
                print(f"CORRUPT  {repo_id}/{filename} at {os.path.realpath(path)}: downloading it again")
                path = hub_file(store.hub_dir, repo_id, filename, download=True, force=True)  # verified, or raises
        print(f"ok       {repo_id}/{filename}  {_size(path)}  {path}  ({store.store_of(path)})")
    files = resolve_model_files(settings, download=False)
    if not fp16_copy_is_current(files):
        print(f"writing the fp16 copy of {files.checkpoint} (what GPU workers load at cold start)")
        write_fp16_artifact(files)
    elif verify and not fp16_copy_is_intact(files):
        print(f"CORRUPT  {fp16_artifact(files)} (or made before its manifest had a digest): writing it again")
        write_fp16_artifact(files)
    print(f"ok       {fp16_artifact(files)}  {_size(fp16_artifact(files))}")
    print(f"model {files.name} ready under {store.models_dir}")
    if asr_prefetch_skipped(settings) is None:
        for model_id, use in asr_models(settings):
            snapshot = store.hub_snapshot(model_id, download=True)
            corrupt = [p for p in snapshot.rglob("*") if p.is_file() and verify and not verify_hub_file(p)] \
                if not runpod_cache.holds(store.runpod_cache, snapshot) else []
            if corrupt:
                print(f"CORRUPT  {model_id}: {', '.join(p.name for p in corrupt)}: downloading again")
                for path in corrupt:
                    hub_file(store.hub_dir, model_id, str(path.relative_to(snapshot)), download=True, force=True)
            print(f"ok       {model_id} (ASR, {use})  {snapshot}  ({store.store_of(snapshot)})")
    else:
        print(f"ASR model not prefetched ({asr_prefetch_skipped(settings)}): {_asr_fetched_by(settings)}")
    prefetch_grammars(store.models_dir)
    return 0


def asr_models(settings: Settings) -> list[tuple[str, str]]:
    """The Whisper models a worker may load, and what for: ASR_MODEL, and VERIFY_ASR_MODEL where it
    is another."""
    if settings.verify_asr_model == settings.asr_model:
        return [(settings.asr_model, "for references without a transcript, and for verify")]
    return [(settings.asr_model, "for references without a transcript"), (settings.verify_asr_model, "for verify")]


def asr_prefetch_skipped(settings: Settings) -> str | None:
    """Why `prefetch` leaves the ASR model out, or None when it fetches it."""
    if settings.f5_model == "tiny":
        return "F5_MODEL=tiny is the offline test model"
    return None if settings.prefetch_asr else "PREFETCH_ASR=false"


def _asr_fetched_by(settings: Settings) -> str:
    return (f"the first job without ref_text downloads {settings.asr_model}" if settings.allow_model_download else
            "jobs without ref_text fail: ALLOW_MODEL_DOWNLOAD=false")


def prefetch_grammars(models_dir: Path) -> None:
    """Compile the text normalisation grammars onto the volume (WeTextProcessing's, built with our
    options: half a minute on two cores); a worker would otherwise compile them at its first job
    with a number in it."""
    for language, folder, complete in text_normalization.grammar_status(models_dir):
        if not complete:
            print(f"compiling the {language} text normalisation grammar into {folder}")
        text_normalization.compile_grammar(models_dir, language)
        print(f"ok       text normalisation grammar ({language})  {folder}")


def status(settings: Settings) -> int:
    """What is present where: every file on its own line, each found (or not) on its own."""
    store = ModelStore.from_settings(settings)
    print(f"models dir   {store.models_dir}  ({'network volume' if settings.on_volume else 'NOT on the network volume'})")
    held = "present, read first, never written" if store.runpod_cache and store.runpod_cache.is_dir() else \
        "absent: the endpoint's Model field set to SWivid/F5-TTS has RunPod place the checkpoint there"
    print(f"{runpod_cache.STORE_NAME}  {store.runpod_cache}  {held}")
    for name, value in cache_environment(store.models_dir).items():
        print(f"  {name}={value}")
    for name in LAYOUT:
        folder = store.models_dir / name
        total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) if folder.is_dir() else 0
        print(f"  {name + '/':<14} {'present' if folder.is_dir() else 'missing':<8} {total / 2**20:10.1f} MB")
    print(f"model        {settings.f5_model}")

    def line(label, find):
        try:
            path = find()
        except (ModelLoadError, WorkerSetupError) as exc:
            print(f"  {label:<11} MISSING   {exc.message}")
            return None
        print(f"  {label:<11} ok       {_size(path):>9}  {path}  ({store.store_of(path)})")
        return path

    checkpoint = line("checkpoint", lambda: resolve_checkpoint(settings, download=False))
    vocab = line("vocab", lambda: resolve_vocab(settings))
    vocoder = line("vocoder", lambda: resolve_vocoder(settings, download=False) / "pytorch_model.bin")
    missing = sum(path is None for path in (checkpoint, vocab, vocoder))
    if checkpoint is not None and settings.f5_model != "tiny":
        files = ModelFiles(settings.f5_model, "", {}, checkpoint, Path(), Path(), store.fp16_copy(settings.f5_model))
        artifact = fp16_artifact(files)
        if not fp16_copy_is_current(files):
            print(f"  {'fp16 copy':<11} none      {'':>9}  {artifact} (prefetch writes it; GPU workers load it)")
        elif not fp16_copy_is_intact(files):
            missing += 1
            print(f"  {'fp16 copy':<11} CORRUPT   {_size(artifact):>9}  {artifact}: its content does not match its "
                  "sha256 (or its manifest predates digests); run `python model_cache.py prefetch`")
        else:
            print(f"  {'fp16 copy':<11} ok       {_size(artifact):>9}  {artifact} (sha256 checked)")
    for language, folder, complete in text_normalization.grammar_status(store.models_dir):
        found = "ok      " if complete else \
            "MISSING  (prefetch compiles it; else the first job with a number in it does)"
        print(f"grammar {language}   {found}  {folder}")
    for model_id, use in asr_models(settings):
        label = "ASR" if model_id == settings.asr_model else "ASR verify"
        try:
            snapshot = store.hub_snapshot(model_id, download=False)
            print(f"{label:<12} ok        {snapshot}  ({store.store_of(snapshot)})")
        except ModelLoadError:
            skipped = asr_prefetch_skipped(settings)
            prefetched = "prefetch downloads it" if skipped is None else f"prefetch skips it: {skipped}"
            fetched_by = _asr_fetched_by(settings) if model_id == settings.asr_model else (
                "the first verified job downloads it" if settings.allow_model_download else
                "verified jobs fail: ALLOW_MODEL_DOWNLOAD=false")
            print(f"{label:<12} MISSING   {model_id} ({prefetched}; else {fetched_by})")
    return 1 if missing else 0


def main(settings: Settings, argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="model_cache.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prefetch", help="download what is missing into the models dir and verify it")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of present files")
    sub.add_parser("status", help="show what is present where, with sizes")
    sub.add_parser("make-test-model", help="write the tiny random-weight model (F5_MODEL=tiny)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("huggingface_hub").propagate = False  # it prints through a handler of its own
    try:
        if args.command == "prefetch":
            return prefetch(settings, verify=not args.no_verify)
        if args.command == "status":
            return status(settings)
        path = make_test_model(ModelStore.from_settings(settings).tiny_dir)
        print(f"wrote the tiny random-weight test model to {path}")
        print("its speech is noise: it exists so the worker runs end to end offline; select it with F5_MODEL=tiny")
        return 0
    except ModelLoadError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(get_settings()))
