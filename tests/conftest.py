"""Test environment: everything offline, on 127.0.0.1.

The worker reads its settings once, on first use, so they are set here before any project
module is imported, and the caches are pointed at the models dir before anything imports torch
or huggingface_hub (`cache_env.configure`, as every entry point does): a models dir of this session with the tiny random-weight model, S3 on a
moto server, and HF_ENDPOINT on a closed port so that any hub request fails loudly.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SESSION_DIR = Path(tempfile.mkdtemp(prefix="f5w-tests-"))
S3_PORT = free_port()
CLOSED_PORT = free_port()  # nothing listens here
BUCKET = "voices-test"
ASR_REPO = "test/whisper-tiny"

TEST_ENV = {
    "RUNPOD_VOLUME": str(SESSION_DIR / "no-volume"),
    "MODELS_DIR": str(SESSION_DIR / "models"),
    "F5_MODEL": "tiny",
    "DEVICE": "cpu",
    "JOB_TMP_DIR": str(SESSION_DIR / "jobs"),
    "OUTPUT_DIR": str(SESSION_DIR / "output"),
    "HF_ENDPOINT": f"http://127.0.0.1:{CLOSED_PORT}",
    "S3_BUCKET": BUCKET,
    "S3_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
    "S3_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "S3_MAX_ATTEMPTS": "2",
    "LOG_LEVEL": "INFO",
    "ASR_MODEL": ASR_REPO,
    # The warm-up (on by default) costs each worker process a synthesis and a grammar's load at
    # start: the tests that start workers to test something else do without; those of the
    # warm-up unset it.
    "WARMUP": "false",
}
os.environ.update(TEST_ENV)
# One thread for torch's CPU kernels, here and in every process a test starts: the tiny model's
# operations are too small to gain from a second thread, and on a machine whose cores are busy two
# threads spin on each other (a tiny job took 7 to 10 times longer with two on a loaded 2-core
# machine). Set it in the environment to use more.
os.environ.setdefault("OMP_NUM_THREADS", "1")
for name in ("WRITE_LOCAL_OUTPUT", "RUNPOD_WEBHOOK_GET_JOB", "RUNPOD_LOG_LEVEL", "REQUIRE_VOLUME", "F5_CKPT_FILE",
             "F5_VOCAB_FILE", "COMPILE"):
    os.environ.pop(name, None)

import cache_env  # noqa: E402  (after the environment above)
from config import get_settings  # noqa: E402

cache_env.configure(get_settings())  # once, before anything imports torch or huggingface_hub
import checkpoints  # noqa: E402
import loaded_model  # noqa: E402
import model_cache  # noqa: E402
import random_weights  # noqa: E402
from fake_hub import place_in_hub_cache  # noqa: E402

#: The session's models storage (MODELS_DIR above).
STORE = model_cache.ModelStore.from_settings(get_settings())

REF_WAV = checkpoints.f5_package_dir() / "infer" / "examples" / "basic" / "basic_ref_en.wav"
REF_TEXT = "Some call me nature, others call me mother nature."


def write_first_words(seconds: float, target: Path) -> Path:
    """The example voice's first `seconds`, as the 16-bit WAV it is."""
    import soundfile as sf

    audio, rate = sf.read(REF_WAV, dtype="int16")
    sf.write(target, audio[: int(seconds * rate)], rate, subtype="PCM_16")
    return target


#: The example voice up to its first pause (2.4 s of its 5.3 s) and what it says there: a real
#: voice with less than half the reference frames to sample in every row, for tests that run many
#: jobs and are not about the voice itself (the sampling is most of a tiny job's time).
SHORT_REF_WAV = write_first_words(2.4, SESSION_DIR / "short_ref_en.wav")
SHORT_REF_TEXT = "Some call me nature,"


def subprocess_env(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def run_py(args, *, env=None, cwd=ROOT, timeout=240, input=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env or subprocess_env(), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, input=input)


@pytest.fixture(scope="session")
def tiny_model(grammars_on_volume, whisper_in_hub):
    """What a job of the tiny model needs in the session's models dir, written once: the tiny
    random-weight F5-TTS, the grammars that normalise its text and the Whisper that transcribes a
    voice sent without ref_text. Tests that run jobs, load the model or start a worker on the
    session's models dir ask for it (a module of them: `pytestmark = pytest.mark.usefixtures(...)`)."""
    STORE.ensure_layout()
    random_weights.make_test_model(STORE.tiny_dir)
    return STORE.tiny_dir


@pytest.fixture(scope="session")
def grammars_on_volume():
    """The compiled text normalisation grammars, linked into the session's models dir."""
    STORE.ensure_layout()
    share_grammars()


@pytest.fixture(scope="session")
def whisper_in_hub():
    """A tiny random Whisper in the session's hub cache as the repository ASR_REPO."""
    from fake_hub import place_folder_in_hub_cache
    from tiny_whisper import make_tiny_whisper

    STORE.ensure_layout()
    place_folder_in_hub_cache(STORE.hub_dir, ASR_REPO, make_tiny_whisper(SESSION_DIR / "whisper-src"))


def pytest_unconfigure(config):
    """The session's folders go at the end, whichever fixtures wrote into them."""
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def first_compiled_worker(tiny_model):
    """A fresh volume with the tiny model on which a first COMPILE=true worker ran, compiling cold
    (see compiled_volume.py): (the worker's environment, what it saw). Once per test process:
    its tests are test_compile.py's, one file, so it is made once."""
    from compiled_volume import run_worker

    models = SESSION_DIR / "compiled-volume" / "models"
    shutil.copytree(tiny_model, models / tiny_model.relative_to(STORE.models_dir))
    env = subprocess_env(MODELS_DIR=models, COMPILE="true")
    return env, run_worker(env)


#: Compiled text normalisation grammars kept between local runs (half a minute to compile on two
#: cores; CI starts without them and compiles them through the same code as `prefetch`).
GRAMMAR_CACHE = ROOT / "models" / "test-grammars"


def share_grammars() -> None:
    """The session's `<models>/f5-tts/tn` is the grammar cache, filled as prefetch fills a volume."""
    import text_normalization

    GRAMMAR_CACHE.mkdir(parents=True, exist_ok=True)
    for language in text_normalization.GRAMMAR_LANGUAGES:
        text_normalization.build_grammar(GRAMMAR_CACHE, language)
    link_grammars(STORE.models_dir)


#: A tiny E2-TTS: the real UNetT class, shaped like E2TTS_Base's config at toy size.
TINY_E2_ARCH = dict(dim=64, depth=2, heads=2, dim_head=32, ff_mult=2, text_mask_padding=False, pe_attn_head=1)


@pytest.fixture(scope="session")
def tiny_e2_model(tiny_model):
    """A tiny random-weight E2-TTS (UNetT), written in the published format and loaded by the
    code that loads published weights."""
    folder = SESSION_DIR / "tiny-e2"
    files = checkpoints.ModelFiles("tiny-e2", "UNetT", dict(TINY_E2_ARCH), folder / "model.safetensors",
                                   tiny_model / "vocab.txt", folder / "vocos")
    random_weights.write_random_model(files, random_weights.TINY_VOCOS, seed=1)
    return loaded_model.load_files(files, "cpu")


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    import boto3

    client = boto3.client("s3", endpoint_url=TEST_ENV["S3_ENDPOINT_URL"], region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()


@pytest.fixture
def s3(s3_server):
    """A bucket with nothing in it at the start of each test."""
    for obj in s3_server.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3_server.delete_object(Bucket=BUCKET, Key=obj["Key"])
    return s3_server


@pytest.fixture
def private_tmp(tmp_path_factory, monkeypatch) -> Path:
    """A folder of this test's own as the process's temporary directory (tempfile's, and TMPDIR for
    what it starts): whatever the worker, or a library it calls, leaves in "/tmp" shows there, and
    nothing that another process on the machine writes to the real /tmp does."""
    path = tmp_path_factory.mktemp("private-tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    monkeypatch.setenv("TMPDIR", str(path))
    return path


@pytest.fixture
def sampling_calls(monkeypatch):
    """Every call of the sampler, in order: the number of rows it sampled."""
    import sampler

    calls, real = [], sampler.sample

    def spy(cfm, ref_wave, text, duration, **kwargs):
        calls.append(len(text))
        return real(cfm, ref_wave, text, duration, **kwargs)

    monkeypatch.setattr(sampler, "sample", spy)
    return calls


@pytest.fixture
def ref_wav_bytes() -> bytes:
    return REF_WAV.read_bytes()


def job_dirs() -> list:
    root = Path(TEST_ENV["JOB_TMP_DIR"])
    return sorted(root.glob("f5job-*")) if root.exists() else []


# --- model files in the published formats, for the storage and loading tests -------------------


def tiny_checkpoint_state() -> dict:
    state = checkpoints.read_checkpoint(STORE.tiny_dir / "model.safetensors")
    return {f"ema_model.{k}": v for k, v in state.items()}


def safetensors_bytes(state: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def vocos_files() -> dict:
    return {name: (STORE.tiny_dir / "vocos" / name).read_bytes() for name in checkpoints.VOCOS_FILES}


@pytest.fixture
def v1_base_in_hub_cache(tiny_model):
    """A tiny-architecture checkpoint stored under the real F5TTS_v1_Base repo and file name."""
    hub = STORE.hub_dir
    repo, name = checkpoints.HUB_CHECKPOINTS["F5TTS_v1_Base"]
    path = place_in_hub_cache(hub, repo, name, safetensors_bytes(tiny_checkpoint_state()))
    for filename, data in vocos_files().items():
        place_in_hub_cache(hub, checkpoints.VOCOS_REPO, filename, data)
    yield path
    for repo_id in (repo, checkpoints.VOCOS_REPO):
        shutil.rmtree(hub / f"models--{repo_id.replace('/', '--')}", ignore_errors=True)


@pytest.fixture
def copied_tiny(tmp_path, tiny_model):
    checkpoint = tmp_path / "model.safetensors"
    shutil.copyfile(STORE.tiny_dir / "model.safetensors", checkpoint)
    files = checkpoints.ModelFiles("tiny-copy", "DiT", dict(checkpoints.TINY_ARCH), checkpoint,
                                   STORE.tiny_dir / "vocab.txt", STORE.tiny_dir / "vocos", STORE.fp16_copy("tiny-copy"))
    yield files
    shutil.rmtree(STORE.artifacts_dir / "tiny-copy", ignore_errors=True)


def corrupt_in_place(path: Path) -> None:
    """Bits gone bad on the volume: the same size, a block of 0xff (NaN in fp16) in the middle."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))


def link_grammars(models_dir: Path) -> None:
    """A models dir of a test's own shares the compiled grammars (else a job or `prefetch` there
    would spend half a minute compiling them again)."""
    import text_normalization

    root = text_normalization.grammar_root(models_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    root.symlink_to(GRAMMAR_CACHE, target_is_directory=True)
