"""AOT_COMPILE (on with COMPILE): the DiT blocks compiled ahead of time on the volume. Two first
workers at once over a corrupt package build one package between them, under the lock; a later
worker loads it with its model, before its first job, without tracing; a package that is
truncated, has flipped bytes or was built for another kind of worker is passed over with one log
line; a build that fails leaves the worker on torch.compile. The build is most of a minute on
two cores: the module does it once."""

import json
import logging
import shutil
from pathlib import Path

import pytest
from compiled_volume import aot_result, start_aot_worker
from conftest import SESSION_DIR, STORE, corrupt_in_place, subprocess_env

import compiled_blocks
import hub_cache
import loaded_model
from config import get_settings


@pytest.fixture(scope="module")
def tiny_net(tiny_model):
    """The tiny model's DiT, eager, in this process: what the volume's packages are keyed on."""
    return loaded_model.load_model(get_settings().model_copy(update={"compile": False})).cfm.transformer


def package_folder(models_dir, net):
    import torch

    fields = compiled_blocks.key_fields(net, "cpu", torch.float32)
    return compiled_blocks.compiled_root(models_dir / "f5-tts") / compiled_blocks.key_of(fields), fields


@pytest.fixture(scope="module")
def aot_volume(tiny_net):
    """A volume with the tiny model and, where this kind of worker's package goes, a corrupt one
    (its manifest vouches for other bytes), on which two COMPILE=true workers started at once:
    (the volume's environment, what each saw)."""
    models = SESSION_DIR / "aot-volume" / "models"
    shutil.copytree(STORE.tiny_dir, models / STORE.tiny_dir.relative_to(STORE.models_dir))
    folder, fields = package_folder(models, tiny_net)
    folder.mkdir(parents=True)
    for form in compiled_blocks.FORMS:
        (folder / f"{form}.pt2").write_bytes(b"PK not a package")
    files = {form: {"sha256": "0" * 64, "size": 16} for form in compiled_blocks.FORMS}
    (folder / "manifest.json").write_text(json.dumps({"key": folder.name, "fields": fields, "files": files}))
    env = subprocess_env(MODELS_DIR=models, COMPILE="true")
    workers = [start_aot_worker(env) for _ in range(2)]
    return env, [aot_result(worker) for worker in workers]


def test_two_first_workers_build_one_package_over_a_corrupt_one_and_both_use_it(aot_volume, tiny_net):
    env, workers = aot_volume
    passed_over = [[line for line in seen["logs"] if line.startswith("WARNING not using the compiled DiT blocks")]
                   for seen in workers]
    # Each passed the package over at load and served eagerly meanwhile: the corrupt one, or, when
    # the other had begun to build over it (its first synthesis done first), one without a manifest.
    assert all(len(lines) == 1 and ("does not match its sha256" in lines[0] or "there is no manifest" in lines[0])
               for lines in passed_over), passed_over
    assert any("does not match its sha256" in lines[0] for lines in passed_over), passed_over  # the builder's
    for seen in workers:
        assert not seen["compiled_at_load"] and seen["diff_during"] < 1e-6
        assert seen["uses_compiled"] and max(seen["diffs"]) < 1e-4, seen
    built = [any(line.startswith("INFO built the compiled DiT blocks") for line in seen["logs"]) for seen in workers]
    assert sorted(built) == [False, True], [seen["logs"] for seen in workers]  # the other waited on the lock, then loaded
    waited = workers[built.index(False)]["logs"]
    assert any(line.startswith("INFO loaded the compiled DiT blocks in") for line in waited), waited

    folder, _ = package_folder(env_models(env), tiny_net)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {p.name for p in folder.iterdir()} == {"manifest.json", "one_row.pt2", "masked.pt2"}  # no temporary left
    assert all(hub_cache.sha256_of(folder / f"{form}.pt2") == manifest["files"][form]["sha256"]
               for form in compiled_blocks.FORMS)


def test_a_later_worker_has_the_compiled_blocks_when_its_model_loads_and_never_traces(aot_volume):
    env, _ = aot_volume
    seen = aot_result(start_aot_worker(env))
    assert seen["compiled_at_load"] and seen["blocks"] == 2  # from the first job on: nothing to compile
    assert not seen["dynamo"]  # neither torch.compile nor torch.export ran: both import dynamo to trace
    assert seen["diff_during"] < 1e-4 and max(seen["diffs"]) < 1e-4  # two row lengths, one package
    assert [line for line in seen["logs"] if "compiled DiT blocks" in line] == [
        next(line for line in seen["logs"] if line.startswith("INFO loaded the compiled DiT blocks from"))]


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def foreign_manifest(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["fields"]["torch"] = "0.0.1"  # built by a worker of another torch
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("spoil, why", [
    (lambda folder: truncate(folder / "one_row.pt2"), "one_row.pt2 does not match its sha256"),
    (lambda folder: corrupt_in_place(folder / "masked.pt2"), "masked.pt2 does not match its sha256"),
    (foreign_manifest, "it was built for another kind of worker (its torch differs)"),
    (lambda folder: (folder / "manifest.json").unlink(), "there is no manifest"),
])
def test_a_spoilt_package_is_passed_over_with_one_line(aot_volume, tiny_net, tmp_path, caplog, spoil, why):
    import torch

    env, _ = aot_volume
    folder, _ = package_folder(env_models(env), tiny_net)
    root = tmp_path / "compiled"
    shutil.copytree(folder, root / folder.name)
    assert compiled_blocks.load_if_built(tiny_net, "cpu", torch.float32, root)  # whole, it loads
    caplog.clear()
    spoil(root / folder.name)
    with caplog.at_level(logging.INFO, logger="f5worker.compiled_blocks"):
        assert compiled_blocks.load_if_built(tiny_net, "cpu", torch.float32, root) is None
    assert len(caplog.records) == 1 and why in caplog.records[0].getMessage(), caplog.text


def env_models(env) -> Path:
    return Path(env["MODELS_DIR"])


def test_a_build_that_fails_leaves_the_worker_on_torch_compile(tiny_model, tmp_path, monkeypatch, caplog):
    import torch

    def failing_build(*args):
        raise OSError(28, "No space left on device")

    compiled = []
    monkeypatch.setattr(compiled_blocks, "build", failing_build)
    monkeypatch.setattr(torch, "compile", lambda block, dynamic: compiled.append(block) or block)  # no cold compile
    model = loaded_model.load_model(get_settings().model_copy(update={"compile": False}))
    model.compile_done.clear()  # set by the load: compiling was off
    with caplog.at_level(logging.WARNING, logger="f5worker"):
        loaded_model.compile_in_background(model, tmp_path / "compiled")
        model.served.set()
        model.compile_thread.join(120)
    assert "the compiled DiT blocks could not be had (OSError" in caplog.text and "with torch.compile" in caplog.text
    assert model.compile_done.is_set() and compiled == list(model.cfm.transformer.transformer_blocks) == model.blocks


def test_a_whole_package_this_worker_cannot_use_is_left_for_the_others(aot_volume, tiny_net, tmp_path, monkeypatch):
    """Blocks that disagree with this worker's eager ones (another checkpoint of the architecture,
    say), and a package whose manifest vouches for bytes that are no package, are not spoilt: no
    rebuild over what other workers use; this one compiles with torch.compile instead."""
    import torch

    env, _ = aot_volume
    folder, fields = package_folder(env_models(env), tiny_net)
    root = tmp_path / "compiled"
    shutil.copytree(folder, root / folder.name)

    def disagreeing(net, eager, compiled, device, dtype):  # as a block of other weights would
        raise compiled_blocks.CompiledBlocksError("block 0 (one row) differs from the eager block by 0.5",
                                                  spoilt=False)

    monkeypatch.setattr(compiled_blocks, "check", disagreeing)
    monkeypatch.setattr(compiled_blocks, "build", lambda *args: pytest.fail("a whole package was built over"))
    with pytest.raises(compiled_blocks.CompiledBlocksError, match="differs from the eager block"):
        compiled_blocks.build_and_load(tiny_net, "cpu", torch.float32, root)
    assert (root / folder.name / "manifest.json").is_file()
    monkeypatch.undo()
    garbage = root / folder.name / "one_row.pt2"
    garbage.write_bytes(b"PK not a package at all")
    manifest = json.loads((root / folder.name / "manifest.json").read_text())
    manifest["files"]["one_row"]["sha256"] = hub_cache.sha256_of(garbage)
    (root / folder.name / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(compiled_blocks.CompiledBlocksError, match="it does not load or run") as err:
        compiled_blocks.load(tiny_net, "cpu", torch.float32, root / folder.name, fields)
    assert not err.value.spoilt


def test_the_check_refuses_blocks_that_disagree_with_the_eager_ones(tiny_net):
    import torch

    wrong = [lambda x, t, mask=None, rope=None: torch.zeros_like(x)] * len(tiny_net.transformer_blocks)
    with pytest.raises(compiled_blocks.CompiledBlocksError, match="differs from the eager block") as err:
        compiled_blocks.check(tiny_net, list(tiny_net.transformer_blocks), wrong, "cpu", torch.float32)
    assert not err.value.spoilt


def test_the_key_names_the_host_cpu(tiny_net, monkeypatch):
    """Inductor builds with -march=native: a package of another CPU's code could die of an illegal
    instruction, past every check."""
    import torch

    here = compiled_blocks.key_fields(tiny_net, "cpu", torch.float32)
    assert here["host_cpu"] and here["host_cpu"] == compiled_blocks.host_cpu()
    monkeypatch.setattr(compiled_blocks, "host_cpu", lambda: "another-cpu")
    there = compiled_blocks.key_fields(tiny_net, "cpu", torch.float32)
    assert compiled_blocks.key_of(there) != compiled_blocks.key_of(here)
