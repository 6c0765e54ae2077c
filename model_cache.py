"""Model storage on the network volume: cache locations, what each model needs, local-first
resolution, safe download and verification, the fp16 copy, and the commands that fill the volume.
Loading a model onto a device is `loaded_model`'s job.

Importing it changes nothing in the process: each entry point points the libraries' caches at
`<models>/` with `cache_env.configure` before torch or huggingface_hub is imported (this
module's commands do so first of all).

    python model_cache.py prefetch         # fill the volume with everything the worker needs
    python model_cache.py status           # what is present where, with sizes
    python model_cache.py make-test-model  # a tiny random-weight model for offline tests (F5_MODEL=tiny)
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":  # the command line: a bad setting is one line, not a traceback; then the caches
    import cache_env
    from config import settings_or_exit

    cache_env.configure(settings_or_exit())

import lean_imports
import text_normalization
from cache_env import cache_environment
from config import Settings, get_settings
from errors import ModelLoadError, WorkerSetupError, os_error

log = logging.getLogger("f5worker.model_cache")

#: Folders under the models directory; see the README's storage section.
LAYOUT = ("hub", "transformers", "torch", "f5-tts", "checkpoints")


@dataclass(frozen=True)
class ModelStore:
    """The models' storage: the folders under the models directory (see the README's storage
    section), built from the settings."""

    models_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> "ModelStore":
        return cls(settings.models_dir)

    @property
    def hub_dir(self) -> Path:
        return self.models_dir / "hub"

    @property
    def artifacts_dir(self) -> Path:
        return self.models_dir / "f5-tts"

    @property
    def checkpoints_dir(self) -> Path:
        return self.models_dir / "checkpoints"

    @property
    def tiny_dir(self) -> Path:
        """The tiny random-weight test model."""
        return self.artifacts_dir / "tiny"

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
# What each model needs
# --------------------------------------------------------------------------------------

VOCOS_REPO = "charactr/vocos-mel-24khz"
VOCOS_FILES = ("config.yaml", "pytorch_model.bin")

#: Published checkpoints: model name -> (hub repo, file in the repo). CC-BY-NC weights.
HUB_CHECKPOINTS = {
    "F5TTS_v1_Base": ("SWivid/F5-TTS", "F5TTS_v1_Base/model_1250000.safetensors"),
    "F5TTS_Base": ("SWivid/F5-TTS", "F5TTS_Base/model_1200000.safetensors"),
    "E2TTS_Base": ("SWivid/E2-TTS", "E2TTS_Base/model_1200000.safetensors"),
}

#: The tiny test model: the real DiT class at a size that runs a full sample() on a CPU in
#: well under a second.
TINY_ARCH = dict(dim=64, depth=2, heads=2, dim_head=32, ff_mult=2, text_dim=32, conv_layers=1, text_mask_padding=True)
TINY_VOCOS = dict(dim=64, intermediate_dim=128, num_layers=2)

#: Mel settings shared by every supported model and Vocos (24 kHz, 100 mels, hop 256).
SAMPLE_RATE = 24_000
HOP_LENGTH = 256
MEL_KWARGS = dict(
    n_fft=1024, hop_length=HOP_LENGTH, win_length=1024, n_mel_channels=100, target_sample_rate=SAMPLE_RATE,
    mel_spec_type="vocos",
)


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's files are, once resolved on local disk."""

    name: str
    backbone: str
    arch: dict = field(hash=False)
    checkpoint: Path
    vocab: Path
    vocoder_dir: Path
    #: Where its fp16 copy is (or would be) kept; None for a model that has none.
    fp16_copy: Path | None = None


def f5_package_dir() -> Path:
    spec = importlib.util.find_spec("f5_tts")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("The f5-tts package is not installed.")
    return Path(next(iter(spec.submodule_search_locations)))


def model_config(name: str) -> tuple[str, dict]:
    """(backbone class name, architecture kwargs) for a model name, from f5-tts's own configs."""
    if name == "tiny":
        return "DiT", dict(TINY_ARCH)
    import yaml

    path = f5_package_dir() / "configs" / f"{name}.yaml"
    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)["model"]
    if cfg["mel_spec"]["mel_spec_type"] != "vocos":
        raise ModelLoadError(f"{name} needs the {cfg['mel_spec']['mel_spec_type']} vocoder; only vocos is supported.")
    return cfg["backbone"], dict(cfg["arch"])


# --------------------------------------------------------------------------------------
# Resolution: local first, download only what is missing
# --------------------------------------------------------------------------------------


def hub_file(hub_dir: Path, repo_id: str, filename: str, *, download: bool, downloads_allowed: bool = True,
             force: bool = False) -> Path:
    """The local path of a hub file in `hub_dir` (<models>/hub), downloading it only when it is
    missing; `downloads_allowed` is ALLOW_MODEL_DOWNLOAD, named in the error when `download` is off.

    A file already in the cache is found without any network call, so a cold start does not
    depend on the hub being up. huggingface_hub downloads to `<blob>.incomplete` under a file
    lock and renames when complete, so workers starting together on an empty volume wait for
    one download instead of writing the same file at once.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not force:
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=hub_dir, local_files_only=True))
        except LocalEntryNotFoundError:
            if not download:
                why = " and ALLOW_MODEL_DOWNLOAD=false keeps the worker from downloading it" \
                    if not downloads_allowed else ""
                raise ModelLoadError(
                    f"{repo_id}/{filename} is not in {hub_dir}{why}; run `python model_cache.py prefetch`."
                ) from None
    log.info("downloading %s/%s into %s", repo_id, filename, hub_dir)
    try:
        path = Path(hf_hub_download(repo_id, filename, cache_dir=hub_dir, force_download=force))
        # The lock above may not hold across hosts on a network volume: check what landed (LFS
        # blobs are named by their sha256) and fetch once more if it is not what the hub sent.
        if not verify_hub_file(path):
            log.warning("%s/%s arrived corrupt; downloading it again", repo_id, filename)
            path = Path(hf_hub_download(repo_id, filename, cache_dir=hub_dir, force_download=True))
    except LocalEntryNotFoundError as exc:  # what the hub's client raises when it cannot reach the hub
        raise ModelLoadError(unreachable(f"{repo_id}/{filename}", exc)) from exc
    except Exception as exc:  # auth, a missing file, disk: all mean the model is not available
        raise ModelLoadError(f"Could not download {repo_id}/{filename}: {type(exc).__name__}: {exc}") from exc
    if not verify_hub_file(path):
        raise ModelLoadError(f"{repo_id}/{filename} is corrupt after two downloads ({os.path.realpath(path)}).")
    return path


def unreachable(what: str, exc: Exception) -> str:
    """One sentence for a download that found no hub (offline, DNS, a firewall), saying what to do."""
    cause = exc.__cause__ or exc.__context__
    why = f" ({type(cause).__name__})" if cause is not None else ""
    return (f"Could not download {what}: the Hugging Face hub could not be reached{why}. Run `python model_cache.py "
            f"prefetch` where it can be, or set F5_MODEL=tiny to run offline with the random-weight test model.")


#: What a transformers model repository needs locally (weights as safetensors only).
SNAPSHOT_PATTERNS = ("*.json", "*.safetensors", "*.txt")


def hub_snapshot(hub_dir: Path, repo_id: str, *, download: bool) -> Path:
    """The local folder of a whole model repository in `hub_dir`, local first like
    `hub_file`; downloads only what is missing."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=hub_dir, allow_patterns=list(SNAPSHOT_PATTERNS),
                                      local_files_only=True))
    except LocalEntryNotFoundError:
        if not download:
            raise ModelLoadError(
                f"{repo_id} is not in {hub_dir} and downloads are off (ALLOW_MODEL_DOWNLOAD=false); "
                "run `python model_cache.py prefetch`."
            ) from None
    log.info("downloading %s into %s", repo_id, hub_dir)
    try:
        return Path(snapshot_download(repo_id, cache_dir=hub_dir, allow_patterns=list(SNAPSHOT_PATTERNS)))
    except LocalEntryNotFoundError as exc:
        raise ModelLoadError(unreachable(repo_id, exc)) from exc
    except Exception as exc:
        raise ModelLoadError(f"Could not download {repo_id}: {type(exc).__name__}: {exc}") from exc


def resolve_model_files(settings: Settings, *, download: bool | None = None) -> ModelFiles:
    """Find (and, if allowed, fetch) everything the configured model needs."""
    download = settings.allow_model_download if download is None else download
    backbone, arch = model_config(settings.f5_model)
    checkpoint = resolve_checkpoint(settings, download)
    vocoder_dir = resolve_vocoder(settings, download)
    vocab = resolve_vocab(settings)
    return ModelFiles(settings.f5_model, backbone, arch, checkpoint, vocab, vocoder_dir,
                      ModelStore.from_settings(settings).fp16_copy(settings.f5_model))


def resolve_checkpoint(settings: Settings, download: bool) -> Path:
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
        return hub_file(store.hub_dir, *HUB_CHECKPOINTS[settings.f5_model], download=download,
                        downloads_allowed=settings.allow_model_download)
    raise ModelLoadError(f"{settings.f5_model} has no published checkpoint; set F5_CKPT_FILE to yours.")


def resolve_vocoder(settings: Settings, download: bool) -> Path:
    """The folder holding Vocos's config.yaml and pytorch_model.bin."""
    store = ModelStore.from_settings(settings)
    if settings.f5_model == "tiny":
        return store.tiny_dir / "vocos"
    return [hub_file(store.hub_dir, VOCOS_REPO, filename, download=download,
                     downloads_allowed=settings.allow_model_download) for filename in VOCOS_FILES][0].parent


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


def verify_hub_file(path: Path) -> bool:
    """True when a cached hub file is intact. LFS blobs are named by their sha256, so the
    content can be checked against the name; small git files (configs) only need to exist."""
    blob = Path(os.path.realpath(path))
    if not blob.is_file():
        return False
    digest = hub_digest(blob)
    return sha256_of(blob) == digest if digest else blob.stat().st_size > 0


def hub_digest(path: Path) -> str | None:
    """The sha256 a hub file must have: LFS blobs are named by it. None for small git files."""
    name = os.path.basename(os.path.realpath(path))
    return name if re.fullmatch(r"[0-9a-f]{64}", name) else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        for block in iter(lambda: fh.read(16 << 20), b""):
            digest.update(block)  # hashlib lets other threads run meanwhile
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# The model's definition and the published checkpoint formats (loading and the files this
# module writes, the fp16 copy and the test model, both need them)
# --------------------------------------------------------------------------------------


def build_cfm(files: ModelFiles):
    """The CFM model of `files`' architecture, with untrained weights."""
    f5 = lean_imports.import_f5_model()
    from f5_tts.model.utils import get_tokenizer

    vocab_char_map, vocab_size = get_tokenizer(str(files.vocab), "custom")
    backbone = getattr(f5, files.backbone)
    return f5.CFM(
        transformer=backbone(**files.arch, text_num_embeds=vocab_size, mel_dim=MEL_KWARGS["n_mel_channels"]),
        mel_spec_kwargs=MEL_KWARGS,
        odeint_kwargs=dict(method="euler"),
        vocab_char_map=vocab_char_map,
    )


def read_checkpoint(path: Path, device: str = "cpu") -> dict:
    """The CFM state dict of a checkpoint in either published format: `.safetensors` with
    `ema_model.`-prefixed keys, or `.pt` with an `ema_model_state_dict` (or `model_state_dict`)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path), device=device)
        else:
            raw = torch.load(str(path), map_location=device, weights_only=True)
            raw = raw.get("ema_model_state_dict") or raw.get("model_state_dict") or raw
    except Exception as exc:
        raise ModelLoadError(
            f"The checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); it may be truncated "
            "or corrupt: run `python model_cache.py prefetch` to repair it."
        ) from exc
    skip = {"initted", "step", "mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window"}
    state = {}
    for key, value in raw.items():
        key = key.removeprefix("ema_model.")
        if key not in skip:
            state[key] = value
    return state



# --------------------------------------------------------------------------------------
# The fp16 copy: half the bytes to read at every cold start
# --------------------------------------------------------------------------------------


def fp16_artifact(files: ModelFiles) -> Path:
    """Where `files`' fp16 copy is kept (resolution decides: see ModelStore.fp16_copy)."""
    if files.fp16_copy is None:
        raise ValueError(f"{files.name} has no place for an fp16 copy")
    return files.fp16_copy


def _source_identity(path: Path) -> dict:
    """What the fp16 copy was made from. Hub blobs are named by their sha256, so the resolved
    name identifies the content; size and mtime cover custom checkpoints."""
    real = Path(os.path.realpath(path))
    stat = real.stat()
    return {"path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_fp16_artifact(files: ModelFiles) -> Path:
    """Write `<models>/f5-tts/<model>/model_fp16.safetensors`: the checkpoint's weights cast to
    fp16 (what the GPU runs anyway), checked tensor by tensor against the original. The
    manifest beside it, written last, records the source it belongs to."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    state = read_checkpoint(files.checkpoint)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    target = fp16_artifact(files)
    target.parent.mkdir(parents=True, exist_ok=True)

    def write_verified(tmp):
        save_file(half, str(tmp))
        back = load_file(str(tmp))
        if back.keys() != half.keys() or not all(torch.equal(back[k], half[k]) for k in half):
            raise ModelLoadError(f"The fp16 copy of {files.checkpoint} did not read back equal; not kept.")

    _write_atomic(target, write_verified)
    manifest = {"source": _source_identity(files.checkpoint), "size": target.stat().st_size,
                "sha256": sha256_of(target), "format": 2}
    _write_atomic(target.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(manifest)))
    return target


def fp16_manifest(files: ModelFiles) -> dict | None:
    """The fp16 copy's manifest when the copy exists whole (its recorded size) and was made from
    the checkpoint now in place; None otherwise. No torch needed: asked before it is imported."""
    import json

    if files.fp16_copy is None:
        return None
    target = fp16_artifact(files)
    try:
        manifest = json.loads(target.with_suffix(".json").read_text())
        if manifest["source"] == _source_identity(files.checkpoint) and manifest["size"] == target.stat().st_size:
            return manifest
    except (OSError, ValueError, KeyError):
        pass
    return None


def fp16_copy_is_current(files: ModelFiles) -> bool:
    return fp16_manifest(files) is not None


def fp16_copy_is_intact(files: ModelFiles) -> bool:
    """Current, and its content is what was written (the manifest's sha256): a copy of the
    right size can still hold flipped bits or zeroed blocks, which load as wrong or NaN weights.
    Reads the whole copy: `prefetch` and `status` ask; a worker's load checks while it reads ahead."""
    manifest = fp16_manifest(files)
    return manifest is not None and manifest.get("sha256") == sha256_of(fp16_artifact(files))



# --------------------------------------------------------------------------------------
# The tiny random-weight test model
# --------------------------------------------------------------------------------------


def make_test_model(target: Path, seed: int = 0) -> Path:
    """Write a tiny F5-TTS (real DiT/CFM classes) and Vocos with random weights, in the
    published formats, so the whole worker runs offline. Its speech is noise."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(f5_package_dir() / "infer" / "examples" / "vocab.txt", target / "vocab.txt")
    files = ModelFiles("tiny", "DiT", dict(TINY_ARCH), target / "model.safetensors", target / "vocab.txt", target / "vocos")
    write_random_model(files, TINY_VOCOS, seed)
    return target


#: Vocos as published (charactr/vocos-mel-24khz).
VOCOS_ARCH = dict(dim=512, intermediate_dim=1536, num_layers=8)


def write_random_model(files: ModelFiles, vocos_arch: dict, seed: int = 0) -> None:
    """Random weights for `files`' architecture and a Vocos of `vocos_arch`, in the published
    formats (checkpoint with `ema_model.` keys, Vocos config.yaml + pytorch_model.bin). For the
    real architectures the compute per step is that of the published weights."""
    import torch
    import yaml
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    cfm = build_cfm(files)
    with torch.no_grad():
        # DiT.initialize_weights zeroes the output projection and AdaLN layers: the output would
        # not depend on the weights at all, and a test could not tell the model ran.
        for param in cfm.transformer.parameters():
            if not param.any():
                param.normal_(0.0, 0.05)
    # As published: every key `ema_model.<CFM key>`, nothing else (stock's loader rejects others).
    state = {f"ema_model.{k}": v.contiguous() for k, v in cfm.state_dict().items()}
    files.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(files.checkpoint, lambda tmp: save_file(state, str(tmp)))

    vocos_cfg = {
        "feature_extractor": {
            "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
            "init_args": {"sample_rate": SAMPLE_RATE, "n_fft": 1024, "hop_length": HOP_LENGTH, "n_mels": 100,
                          "padding": "center"},
        },
        "backbone": {"class_path": "vocos.models.VocosBackbone", "init_args": {"input_channels": 100, **vocos_arch}},
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {"dim": vocos_arch["dim"], "n_fft": 1024, "hop_length": HOP_LENGTH, "padding": "same"},
        },
    }
    files.vocoder_dir.mkdir(parents=True, exist_ok=True)
    (files.vocoder_dir / "config.yaml").write_text(yaml.safe_dump(vocos_cfg), encoding="utf-8")
    from vocos import Vocos

    vocoder = Vocos.from_hparams(str(files.vocoder_dir / "config.yaml"))
    _write_atomic(files.vocoder_dir / "pytorch_model.bin", lambda tmp: torch.save(vocoder.state_dict(), str(tmp)))


def _write_atomic(path: Path, write) -> None:
    """Write through a temp name in the same folder, then rename: readers on the shared volume
    never see a half-written file. Readable by all, as the hub's own files are (safetensors
    creates its file 0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    for repo_id, filename in required_hub_files(settings):
        path = hub_file(store.hub_dir, repo_id, filename, download=True)
        if verify and not verify_hub_file(path):
            print(f"CORRUPT  {repo_id}/{filename} at {os.path.realpath(path)}: downloading it again")
            path = hub_file(store.hub_dir, repo_id, filename, download=True, force=True)  # verified, or raises
        print(f"ok       {repo_id}/{filename}  {_size(path)}  {path}")
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
        snapshot = hub_snapshot(store.hub_dir, settings.asr_model, download=True)
        corrupt = [p for p in snapshot.rglob("*") if p.is_file() and verify and not verify_hub_file(p)]
        if corrupt:
            print(f"CORRUPT  {settings.asr_model}: {', '.join(p.name for p in corrupt)}: downloading again")
            for path in corrupt:
                hub_file(store.hub_dir, settings.asr_model, str(path.relative_to(snapshot)), download=True, force=True)
        print(f"ok       {settings.asr_model} (ASR, for references without a transcript)  {snapshot}")
    else:
        print(f"ASR model not prefetched ({asr_prefetch_skipped(settings)}): {_asr_fetched_by(settings)}")
    prefetch_grammars(store.models_dir)
    return 0


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
    root = text_normalization.grammar_root(models_dir)
    for language in text_normalization.GRAMMAR_LANGUAGES:
        folder = text_normalization.grammar_dir(root, language)
        if not text_normalization.grammar_is_complete(folder, language):
            print(f"compiling the {language} text normalisation grammar into {folder}")
        text_normalization.build_grammar(root, language)
        print(f"ok       text normalisation grammar ({language})  {folder}")


def status(settings: Settings) -> int:
    """What is present where: every file on its own line, each found (or not) on its own."""
    store = ModelStore.from_settings(settings)
    print(f"models dir   {store.models_dir}  ({'network volume' if settings.on_volume else 'NOT on the network volume'})")
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
        print(f"  {label:<11} ok       {_size(path):>9}  {path}")
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
    root = text_normalization.grammar_root(store.models_dir)
    for language in text_normalization.GRAMMAR_LANGUAGES:
        folder = text_normalization.grammar_dir(root, language)
        found = "ok      " if text_normalization.grammar_is_complete(folder, language) else \
            "MISSING  (prefetch compiles it; else the first job with a number in it does)"
        print(f"grammar {language}   {found}  {folder}")
    try:
        print(f"ASR          ok        {hub_snapshot(store.hub_dir, settings.asr_model, download=False)}")
    except ModelLoadError:
        skipped = asr_prefetch_skipped(settings)
        prefetched = "prefetch downloads it" if skipped is None else f"prefetch skips it: {skipped}"
        print(f"ASR          MISSING   {settings.asr_model} ({prefetched}; else {_asr_fetched_by(settings)})")
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
