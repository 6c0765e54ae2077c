"""The DiT blocks compiled ahead of time (AOTInductor), kept on the volume: built once per kind of
worker, loaded by every later one while its model loads, in milliseconds, with no trace and no
compile (dynamo is not even imported).

One package per input form the sampler calls a block with (`FORMS`): one row without a mask, and
several rows with a padding mask. Each is exported from one block with the rows and the frames
dynamic. The weights are not in the package (`package_constants_in_so` off): every block gets a
runner of its own, handed that block's tensors at load (the model's, not a copy). So a package is
the blocks' code only: what it depends on, and what names it (`key_fields`), is torch, f5-tts, the
device kind, the dtype and the block's shape, not the checkpoint: every checkpoint of one
architecture shares it, and a numerical check against the eager blocks at load covers the rest.

    <models>/f5-tts/compiled/<key>/one_row.pt2, masked.pt2   the packages
    <models>/f5-tts/compiled/<key>/manifest.json            key fields and sha256s, written last
    <models>/f5-tts/compiled/<key>.lock                       held while a worker checks or builds
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import time
from importlib.metadata import version
from pathlib import Path

import proc_stat
from atomic import write_atomic
from hub_cache import sha256_of

log = logging.getLogger("f5worker.compiled_blocks")

#: The sampler's two calls of a block: `block(x, t, mask=None, rope=...)` for one row (its
#: conditional and unconditional copies), `mask=` a padding mask for rows of several lengths.
#: Two packages rather than a mask always present: without a mask, SDPA may use its fastest kernels.
FORMS = ("one_row", "masked")
#: Bump when what is written here changes meaning.
FORMAT = 1
#: The rows and frames of the example inputs of the export and of the check at load.
EXAMPLE_ROWS, EXAMPLE_FRAMES = 2, 16


class CompiledBlocksError(Exception):
    """A package that cannot be used. `spoilt`: missing, partial, stale or corrupt, so building it
    again mends it; else it is whole but does not load, run or agree with this worker's eager
    blocks, which a rebuild of the same code would not change (another checkpoint, another GPU's
    memory): it stays for the workers it serves."""

    def __init__(self, message: str, spoilt: bool = True):
        super().__init__(message)
        self.spoilt = spoilt


def compiled_root(artifacts_dir: Path) -> Path:
    """<models>/f5-tts/compiled: where the packages of every kind of worker are kept."""
    return Path(artifacts_dir) / "compiled"


def device_kind(device: str) -> str:
    """What the generated code is specific to: the CUDA capability ("sm90"), or on a CPU the
    vector instructions it was compiled for ("cpu-avx2"): a package of AVX-512 code would crash a
    CPU without them."""
    import torch

    if device.startswith("cuda"):
        major, minor = torch.cuda.get_device_capability(device)
        return f"sm{major}{minor}"
    return f"cpu-{torch.backends.cpu.get_cpu_capability().lower()}"


def host_cpu() -> str:
    """What names the CPU the code is built on: inductor compiles C++ with -march=native, the
    host-side wrapper of a CUDA package too, and a network volume is shared by hosts of several
    CPUs; a package built for another one could die of an illegal instruction, which no check
    catches. A digest of the first processor's vendor, family, model and flags (unknown: "")."""
    named = {key: value for key, value in proc_stat.first_cpu().items()
             if key in ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU part")}
    return hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:16] if named else ""


def key_fields(net, device: str, dtype) -> dict:
    """Everything the compiled code of `net`'s blocks depends on."""
    import torch

    block = net.transformer_blocks[0]
    processor = block.attn.processor
    return {
        "format": FORMAT, "torch": torch.__version__, "f5_tts": version("f5-tts"), "device": device_kind(device),
        "host_cpu": host_cpu(),
        "dtype": str(dtype).removeprefix("torch."), "block": f"{type(block).__module__}.{type(block).__qualname__}",
        "heads": block.attn.heads, "rotary_dim": int(net.rotary_embed.inv_freq.numel()) * 2,
        "attention": {name: getattr(processor, name, None) for name in ("pe_attn_head", "attn_backend", "attn_mask_enabled")},
        "shapes": {name: list(tensor.shape) for name, tensor in block.state_dict().items()},
    }


def key_of(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


class CompiledBlock:
    """One DiT block's runners, called as the sampler calls the block. f5-tts's DiT rotary
    embedding has no xpos scale (it is always 1.0), which the packages take as fixed."""

    def __init__(self, runners: dict):
        self.one_row, self.masked = (runners[form] for form in FORMS)

    def __call__(self, x, t, mask=None, rope=None):
        # The generated code reads its inputs as the contiguous tensors it was exported with
        # (they already are: .contiguous() then returns the tensor itself).
        inputs = [x.contiguous(), t.contiguous(), rope[0].contiguous()]
        if mask is None:
            return self.one_row.boxed_run(inputs)[0]
        return self.masked.boxed_run([*inputs, mask.contiguous()])[0]


def _form_module(block, masked: bool):
    """`block` as a module of flat tensors, as the export takes it: rope is (freqs, 1.0)."""
    import torch

    class OneRow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = block

        def forward(self, x, t, freqs):
            return self.block(x, t, mask=None, rope=(freqs, 1.0))

    class Masked(OneRow):
        def forward(self, x, t, freqs, mask):
            return self.block(x, t, mask=mask, rope=(freqs, 1.0))

    return (Masked if masked else OneRow)()


def example_inputs(net, device: str, dtype, masked: bool, frames: int = EXAMPLE_FRAMES) -> tuple:
    """Inputs of a block's call in one form: rows of width `dim`, the time embedding, the
    rotary frequencies as the sampler makes them, and for `masked` a mask whose last row is padded."""
    import torch

    generator = torch.Generator().manual_seed(0)
    dim = net.transformer_blocks[0].attn_norm.linear.in_features
    x = torch.randn(EXAMPLE_ROWS, frames, dim, generator=generator).to(device, dtype)
    t = torch.randn(EXAMPLE_ROWS, dim, generator=generator).to(device, dtype)
    freqs, scale = net.rotary_embed.forward_from_seq_len(frames)
    if scale != 1.0:
        raise CompiledBlocksError(f"the rotary embedding has an xpos scale ({scale}); the packages take it as 1.0")
    if not masked:
        return x, t, freqs
    mask = torch.ones(EXAMPLE_ROWS, frames, dtype=torch.bool, device=device)
    mask[-1, frames // 2:] = False
    return x, t, freqs, mask


def build(net, device: str, dtype, folder: Path, fields: dict) -> None:
    """Export one block in each form and compile it into `folder` (about a minute on two CPU
    cores for the tiny model; unmeasured on a GPU); the manifest is written last."""
    import torch
    from torch.export import Dim

    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    # Readers check without the lock: with the old manifest gone, none tries the old packages
    # while they are replaced.
    (folder / "manifest.json").unlink(missing_ok=True)
    for stale in folder.glob(".*.tmp"):  # a builder killed mid-way (the lock is ours: none is alive)
        stale.unlink(missing_ok=True)
    # A copy: exporting swaps the module's parameters for fake ones while it traces, and
    # requests run the real block meanwhile.
    block = copy.deepcopy(net.transformer_blocks[0])
    # Unbounded above: a call past a bound would fail its job. A row is at least 2 frames long.
    rows, frames = Dim("rows", min=1), Dim("frames", min=2)
    files = {}
    for form in FORMS:
        masked = form == "masked"
        shapes = ({0: rows, 1: frames}, {0: rows}, {1: frames}) + (({0: rows, 1: frames},) if masked else ())
        with torch.no_grad():
            program = torch.export.export(_form_module(block, masked), example_inputs(net, device, dtype, masked),
                                          dynamic_shapes=shapes)
        path = folder / f"{form}.pt2"

        def compile_into(tmp, program=program):
            with open(tmp, "w+b") as fh:  # a file object: the temporary name does not end in .pt2
                torch._inductor.aoti_compile_and_package(
                    program, package_path=fh, inductor_configs={"aot_inductor.package_constants_in_so": False})

        write_atomic(path, compile_into)
        files[form] = {"sha256": sha256_of(path), "size": path.stat().st_size}
    manifest = {"key": key_of(fields), "fields": fields, "files": files,
                "build_seconds": round(time.perf_counter() - started, 1)}
    write_atomic(folder / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    log.info("built the compiled DiT blocks into %s in %.1f s", folder, time.perf_counter() - started)


def load(net, device: str, dtype, folder: Path, fields: dict, lock=None) -> list[CompiledBlock]:
    """The compiled blocks of `net` from `folder`, checked: the manifest's key, each package's
    sha256, and each block's output against the eager block on a small input in both forms (under
    `lock`, the model's, when requests may be running the eager blocks meanwhile). Raises
    CompiledBlocksError saying what is wrong."""
    import torch

    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except FileNotFoundError:
        raise CompiledBlocksError("there is no manifest (never built, or a build that did not finish)") from None
    except (OSError, ValueError) as exc:
        raise CompiledBlocksError(f"its manifest cannot be read: {exc}") from None
    built_for = manifest.get("fields") if isinstance(manifest.get("fields"), dict) else {}
    if manifest.get("key") != key_of(fields) or built_for != fields:
        differing = sorted(name for name in fields.keys() | built_for.keys() if built_for.get(name) != fields.get(name))
        raise CompiledBlocksError(f"it was built for another kind of worker (its {', '.join(differing) or 'key'} "
                                  f"differ{'s' if len(differing) < 2 else ''})")
    for form in FORMS:
        path, expected = folder / f"{form}.pt2", manifest.get("files", {}).get(form, {}).get("sha256")
        try:
            if sha256_of(path) != expected:
                raise CompiledBlocksError(f"{path.name} does not match its sha256")
        except OSError as exc:
            raise CompiledBlocksError(f"{path.name} cannot be read: {exc}") from None
    eager = list(net.transformer_blocks)
    compiled = []
    index = torch.device(device).index  # DEVICE=cuda:N; -1: the current device
    index = -1 if index is None else index
    try:
        for block in eager:
            runners = {}
            for form in FORMS:
                # The default runner serialises calls in a container of its own, which torch's
                # documentation says conflicts with CUDA graphs; the model's lock serialises ours.
                runner = torch._C._aoti.AOTIModelPackageLoader(str(folder / f"{form}.pt2"), "model", True, 1, index)
                # (constants, use_inactive, check_full_update, user_managed): every weight must be
                # given (a runner run without its weights killed the process here), and the runner
                # uses the model's own tensors rather than a copy.
                runner.load_constants({f"block.{name}": tensor for name, tensor in block.state_dict().items()},
                                      False, True, True)
                runners[form] = runner
            compiled.append(CompiledBlock(runners))
        with lock or contextlib.nullcontext():
            check(net, eager, compiled, device, dtype)
    except (RuntimeError, TypeError, ValueError) as exc:  # what the runners raise, loading or running
        raise CompiledBlocksError(f"it does not load or run: {first_line(exc)}", spoilt=False) from exc
    return compiled


def first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def check(net, eager: list, compiled: list, device: str, dtype) -> None:
    """Each compiled block gives what its eager block gives, in both forms, on a small input
    (odd frames: not the export's)."""
    import torch

    tolerance = 1e-2 if dtype == torch.float16 else 1e-4
    for masked in (False, True):
        x, t, freqs, *mask = example_inputs(net, device, dtype, masked, frames=EXAMPLE_FRAMES - 3)
        mask = mask[0] if mask else None
        with torch.inference_mode():
            for i, (block, fast) in enumerate(zip(eager, compiled)):
                want = block(x, t, mask=mask, rope=(freqs, 1.0)).float()
                got = fast(x, t, mask=mask, rope=(freqs, 1.0)).float()
                diff = float((got - want).norm() / want.norm())
                if not diff < tolerance:  # NaN included
                    raise CompiledBlocksError(f"block {i} ({'masked' if masked else 'one row'}) differs from the eager "
                                              f"block by {diff:.2g} (more than {tolerance:g})", spoilt=False)


def load_if_built(net, device: str, dtype, root: Path) -> list[CompiledBlock] | None:
    """At model load: the compiled blocks when a usable package is on the volume; None (one log
    line saying why) otherwise, and the worker builds one after its first synthesis."""
    started = time.perf_counter()
    folder = root
    try:
        fields = key_fields(net, device, dtype)
        folder = root / key_of(fields)
        blocks = load(net, device, dtype, folder, fields)
    except Exception as exc:  # noqa: BLE001 - never fatal: the worker serves eagerly meanwhile
        why = exc if isinstance(exc, CompiledBlocksError) else f"{type(exc).__name__}: {first_line(exc)}"
        log.log(logging.INFO if folder == root or not folder.exists() else logging.WARNING,
                "not using the compiled DiT blocks in %s: %s; compiling them after the first synthesis", folder, why)
        return None
    log.info("loaded the compiled DiT blocks from %s in %.2f s", folder, time.perf_counter() - started)
    return blocks


#: How long a worker waits for another's build (a cold build took about a minute here) before it
#: compiles with torch.compile instead: a builder that hangs must not leave the rest eager for life.
LOCK_TIMEOUT_S = 600


def build_and_load(net, device: str, dtype, root: Path, lock=None) -> tuple[list[CompiledBlock], bool]:
    """The compiled blocks, built first unless a usable package is there once the build lock is
    held (another worker may have built it meanwhile): (the blocks, whether this call built them).
    A spoilt package is built again over; one that is whole but unusable here is left for the
    workers it serves. `lock`: the model's, held while the blocks are checked against the eager
    ones. Raises CompiledBlocksError, filelock's Timeout, or what building raises."""
    from filelock import FileLock

    fields = key_fields(net, device, dtype)
    folder = root / key_of(fields)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock", timeout=LOCK_TIMEOUT_S):
        try:
            return load(net, device, dtype, folder, fields, lock), False
        except CompiledBlocksError as exc:
            if not exc.spoilt:
                raise
            log.info("building the compiled DiT blocks into %s (%s)", folder, exc)
        build(net, device, dtype, folder, fields)
        return load(net, device, dtype, folder, fields, lock), True
