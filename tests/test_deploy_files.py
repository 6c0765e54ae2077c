"""What can be checked of the image and the Hub listing without Docker or RunPod."""

import ast
import json
import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT

import cache_env
import checkpoints
from config import Settings
from job_schema import JobInput

DOCKERFILE = ROOT / "Dockerfile.runpod"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def env_values() -> dict:
    values = {}
    for word, rest in instructions():
        if word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                values[key] = value
    return values


def copied_sources() -> list[str]:
    """What the COPY lines take from the build context, their wildcards read as Docker does (in
    the context's top folder)."""
    sources = []
    for word, rest in instructions():
        if word == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            for part in parts[:-1]:
                sources += sorted(p.name for p in ROOT.glob(part)) if "*" in part else [part]
    return sources


def dockerignore_allows(path: str) -> bool:
    """Docker's rules: `*` does not cross `/`, a matched folder takes its contents along, and
    the last matching line wins (`!` re-includes)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern = line.lstrip("!")
        rx = re.compile("".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern))
        if any(rx.fullmatch(p) for p in prefixes):
            excluded = not line.startswith("!")
    return not excluded


def local_imports(module: str, seen=None) -> set:
    """Project modules `module` imports, transitively."""
    seen = set() if seen is None else seen
    path = ROOT / f"{module}.py"
    if module in seen or not path.exists():
        return seen
    seen.add(module)
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module.split(".")[0]]
        for name in names:
            local_imports(name, seen)
    return seen


def test_every_copy_source_exists_and_passes_dockerignore():
    sources = copied_sources()
    assert sources
    for source in sources:
        assert (ROOT / source).is_file(), source
        assert dockerignore_allows(source), f"{source} is excluded by .dockerignore"
    assert not dockerignore_allows("tests/test_handler.py")
    assert not dockerignore_allows("models")


def test_the_image_holds_every_module_the_worker_imports():
    needed = local_imports("runpod_handler") | local_imports("model_cache")
    assert {f"{m}.py" for m in needed} <= set(copied_sources())


def test_cache_variables_match_what_model_cache_computes_for_the_volume():
    env = env_values()
    expected = cache_env.cache_environment(Path("/runpod-volume/models"))
    assert {k: env.get(k) for k in expected} == expected
    assert env["RUNPOD_VOLUME"] == "/runpod-volume"
    assert Settings.from_env({"RUNPOD_VOLUME": "/runpod-volume", "MODELS_DIR": "/runpod-volume/models"}).models_dir \
        == Path(env["HF_HOME"])


def test_no_model_is_downloaded_or_loaded_at_build_time():
    forbidden = re.compile(
        r"prefetch|hf_hub_download|snapshot_download|huggingface-cli|\bhf download|from_pretrained|get_model|"
        r"load_model|make-test-model|git lfs|wget|curl|\.safetensors|\.pt\b|\.bin\b",
        re.IGNORECASE,
    )
    for word, rest in instructions():
        if word == "RUN":
            assert not forbidden.search(rest), rest
            # the text normalisation grammars are compiled onto the volume, never in the image
            assert "build_grammar" not in rest and "Normalizer(" not in rest, rest
    assert "HEALTHCHECK" not in [w for w, _ in instructions()]


def test_the_image_strips_pynini_and_drops_the_grammars_its_wheel_ships():
    """pynini's libraries carry 600 MiB of debug symbols; WeText's wheel carries compiled grammars
    the worker never reads (its own, built with other options, are on the volume)."""
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert re.search(r"find /opt/venv/lib .*_pynini\*\.so.*-exec strip --strip-debug \{\} \+", runs)
    assert "rm -f /opt/venv/lib/python3*/site-packages/tn/*.fst" in runs


def test_start_command_runs_the_handler():
    cmds = [rest for word, rest in instructions() if word == "CMD"]
    assert cmds and json.loads(cmds[-1]) == ["python", "-u", "runpod_handler.py"]


def test_installs_exactly_the_requirements_files():
    installs = [i for word, rest in instructions() if word == "RUN" for i in re.findall(r"pip install ([^&;]+)", rest)]
    assert sorted(i.strip() for i in installs) == ["--no-deps -r requirements-f5.txt", "-r requirements.txt"]
    # requirements-f5.txt must be the f5-tts pin alone (it is installed without dependencies)
    pins = [l for l in (ROOT / "requirements-f5.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert pins == ["f5-tts==1.1.22"]


def test_cuda_of_the_base_image_matches_the_pinned_torch():
    requirements = (ROOT / "requirements.txt").read_text()
    torch_pin = re.search(r"^torch==(\S+)", requirements, re.M).group(1)
    assert re.search(rf"^torchaudio=={re.escape(torch_pin)}$", requirements, re.M)
    cuda_of_torch = {"2.11.0": "13.0"}  # the CUDA build PyPI serves for that torch
    base = next(rest for word, rest in instructions() if word == "FROM")
    assert base.startswith(f"nvidia/cuda:{cuda_of_torch[torch_pin]}.")


# --- RunPod Hub -----------------------------------------------------------------------------


def setting_names() -> set:
    return {f.alias for f in Settings.model_fields.values() if f.alias}


def test_hub_json_parses_and_names_only_real_settings():
    hub = json.loads((ROOT / ".runpod" / "hub.json").read_text())
    assert hub["type"] == "serverless" and hub["category"] == "audio" and hub["title"]
    assert hub["config"]["runsOn"] == "GPU"
    keys = [e["key"] for e in hub["config"]["env"]]
    assert keys and set(keys) <= setting_names()
    for preset in hub["config"]["presets"]:
        assert set(preset["defaults"]) <= setting_names()
    model_options = next(e for e in hub["config"]["env"] if e["key"] == "F5_MODEL")["input"]["options"]
    assert {o["value"] for o in model_options} <= set(checkpoints.HUB_CHECKPOINTS)


@pytest.mark.parametrize("test", json.loads((ROOT / ".runpod" / "tests.json").read_text())["tests"],
                         ids=lambda t: t["name"])
def test_hub_test_jobs_are_valid_jobs(test):
    JobInput.model_validate(test["input"])
    assert {e["key"] for e in test["config"].get("env", [])} <= setting_names()
    assert test["config"]["allowedCudaVersions"] == json.loads(
        (ROOT / ".runpod" / "hub.json").read_text())["config"]["allowedCudaVersions"]


def test_readme_settings_table_matches_config():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)`(?:, `([A-Z0-9_]+)`)?", table, re.M))
    names = {n for pair in documented for n in pair if n}
    assert names == setting_names()
