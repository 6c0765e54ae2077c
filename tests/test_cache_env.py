"""The cache environment: set by an explicit call at each entry point, never by an import."""

import logging
import os
import sys
from pathlib import Path

import cache_env
from config import get_settings


def test_configure_points_every_cache_under_the_models_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    settings = get_settings().model_copy(update={"models_dir": tmp_path / "models"})
    cache_env.configure(settings)
    assert {name: os.environ[name] for name in cache_env.cache_environment(tmp_path / "models")} == {
        "HF_HOME": str(tmp_path / "models"),
        "HF_HUB_CACHE": str(tmp_path / "models" / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(tmp_path / "models" / "hub"),
        "TRANSFORMERS_CACHE": str(tmp_path / "models" / "transformers"),
        "TORCH_HOME": str(tmp_path / "models" / "torch"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "models" / "torch" / "inductor"),
        "TRITON_CACHE_DIR": str(tmp_path / "models" / "torch" / "triton"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def test_a_late_call_warns_only_when_it_would_move_a_cache(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setitem(sys.modules, "torch", sys.modules.get("torch", object()))
    with caplog.at_level(logging.WARNING, logger="f5worker.model_cache"):
        cache_env.configure(get_settings())  # what the session already set (conftest): nothing moves
        assert caplog.records == []
        cache_env.configure(get_settings().model_copy(update={"models_dir": tmp_path}))
    assert len(caplog.records) == 1 and "torch" in caplog.text and "caches may not be on the volume" in caplog.text


def test_importing_the_storage_modules_changes_no_environment_variable():
    from conftest import run_py, subprocess_env

    code = ("import os, json; before = dict(os.environ)\n"
            "import cache_env, model_cache, loaded_model, hub_cache, checkpoints, fp16_copy, random_weights\n"
            "print(json.dumps(dict(os.environ) == before))")
    env = subprocess_env(**{name: None for name in cache_env.cache_environment(Path("/x"))})
    result = run_py(["-c", code], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "true"
