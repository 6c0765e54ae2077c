"""The modules read top-down as a job flows: each imports only modules below it, so a change
low in the house never has to look up, and no import cycle can form."""

import ast

from conftest import ROOT

#: Top to bottom: the job's path, then the model below it, then settings and errors. The README's
#: code map describes the same order.
ORDER = [
    "runpod_handler", "http_server", "openai_api", "voice_store", "engine",
    "job_schema", "scratch", "voice_cache", "transcripts", "asr", "verification", "voices", "url_fetch", "delivery", "captions", "s3_utils",
    "synthesis",
    "batching", "audio_io",
    "loaded_model", "compiled_blocks", "sampler", "model_cache", "random_weights", "fp16_copy", "checkpoints", "runpod_cache", "hub_cache",
    "text_normalization", "english_numbers", "number_words", "lean_imports", "cache_env", "atomic", "proc_stat",
    "config", "errors", "invisible",
]
TOOLS = {"bench"}  # above everything: they may import any module


def project_imports(path) -> set:
    """Every project module `path` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in ORDER)
    return found


def test_every_module_has_a_place_in_the_order():
    modules = {p.stem for p in ROOT.glob("*.py")} - TOOLS
    assert modules == set(ORDER), "place new modules in ORDER (and the README's code map)"


def test_no_module_imports_one_above_it():
    upward = [f"{name} imports {target}" for name in ORDER
              for target in project_imports(ROOT / f"{name}.py") if ORDER.index(target) <= ORDER.index(name)]
    assert upward == []
