"""What every measurement uses: the texts, and random-weight models laid out as `prefetch` lays out
the volume."""

from __future__ import annotations

import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
REF_TEXT = "Some call me nature, others call me mother nature."
ONE_CHUNK = ("The quick brown fox jumps over the lazy dog while the evening sun sets slowly behind the distant "
             "hills, painting the sky in shades of orange, pink and a deep violet blue.")
TWO_SENTENCES = ("Thank you for calling, this is the front desk of the Grand Hotel. "
                 "How may I help you with your reservation today?")
LONG_TEXT = " ".join([
    "Once upon a time, in a small village at the edge of a great forest, there lived an old clockmaker named Elias.",
    "Every morning he opened the shutters of his workshop and greeted the people who passed by on their way to the market.",
    "His clocks were known far and wide, for each one told not only the hour but also the phase of the moon and the tides.",
    "One winter evening a stranger arrived, wrapped in a grey cloak, carrying a broken pocket watch that no one could mend.",
    "Elias turned it over in his hands and noticed that the gears were made of a metal he had never seen before.",
    "He worked through the night, polishing each wheel and spring, listening to the quiet ticking of a hundred clocks around him.",
    "By dawn the watch was running again, but its hands moved backwards, slowly and steadily, as if counting down to something.",
    "The stranger smiled, thanked him, and left a single silver coin on the table before vanishing into the morning mist.",
    "In the weeks that followed, strange things began to happen in the village, small at first and then harder to ignore.",
    "Flowers bloomed in the snow, the river ran a little faster, and the church bell rang thirteen times at midnight.",
    "The children said the forest was whispering, and the old men at the inn swore that their memories were growing younger.",
    "Elias knew that the watch was the cause, and so he set out into the forest to find the stranger and return the coin.",
    "He walked for three days, following a path that seemed to appear only in front of him and to vanish behind his steps.",
    "On the fourth day he reached a clearing where time itself seemed to pause, and the stranger was waiting for him there.",
    "They spoke for hours about the nature of time, about beginnings and endings, and about the clocks that measure our lives.",
    "When Elias finally returned home, the village was as it had always been, and the watch on his bench had stopped for good.",
])


def load_models(arch: str, *ours: dict):
    """Stock's model (eager, no CUDA graphs) and one of ours per settings update in `ours`, all of
    `arch`, loaded as the worker loads them; f5-tts's model code imported the lean way first, so
    stock's utils_infer imports without the training stack."""
    import lean_imports
    import loaded_model
    from config import get_settings

    lean_imports.import_f5_model()
    settings = get_settings().model_copy(update={"f5_model": arch})
    stock = loaded_model.load_model(settings.model_copy(update={"compile": False, "cuda_graphs": False}))
    return stock, [loaded_model.load_model(settings.model_copy(update=update)) for update in ours]


def example_reference(model, name: str = "basic/basic_ref_en.wav"):
    """One of f5-tts's example recordings as the worker prepares a reference."""
    import soundfile as sf

    import audio_io
    import checkpoints

    audio, rate = sf.read(checkpoints.f5_package_dir() / "infer" / "examples" / name, dtype="float32")
    return audio_io.prepare_reference(audio, rate, model.sample_rate, 12.0, 1.0)


def budget_and_runs(args, model) -> tuple[int, int]:
    """MAX_BATCH_FRAMES (the flag, else the setting) and timed runs (the flag, else 5 on a GPU, 1 on
    a CPU)."""
    from config import get_settings

    budget = args.max_batch_frames or get_settings().max_batch_frames
    return budget, args.runs or (5 if model.device.startswith("cuda") else 1)


def prepare_models(arch: str) -> dict:
    """Random weights of `arch` in the bench's models dir; the environment of a worker using them."""
    import checkpoints
    import fp16_copy
    import model_cache
    import random_weights
    from config import get_settings
    from errors import ModelLoadError

    store = model_cache.ModelStore.from_settings(get_settings())
    env = {"MODELS_DIR": str(store.models_dir), "F5_MODEL": arch, "ALLOW_MODEL_DOWNLOAD": "false",
           "PREFETCH_ASR": "false"}
    settings = get_settings().model_copy(update={"f5_model": arch, "allow_model_download": False})
    if arch == "tiny":
        if not (store.tiny_dir / "model.safetensors").is_file():
            random_weights.make_test_model(store.tiny_dir)
        return env
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_hub import place_in_hub_cache

    repo, filename = checkpoints.HUB_CHECKPOINTS[arch]
    try:
        files = model_cache.resolve_model_files(settings)
    except ModelLoadError:
        backbone, layers = checkpoints.model_config(arch)
        scratch = store.models_dir / "scratch"
        files = checkpoints.ModelFiles(arch, backbone, layers, scratch / "model.safetensors",
                                       checkpoints.f5_package_dir() / "infer" / "examples" / "vocab.txt",
                                       scratch / "vocos")
        print(f"writing random {arch} weights into {store.models_dir} ...", file=sys.stderr)
        random_weights.write_random_model(files, random_weights.VOCOS_ARCH)
        place_in_hub_cache(store.hub_dir, repo, filename, files.checkpoint.read_bytes())
        for name in checkpoints.VOCOS_FILES:
            place_in_hub_cache(store.hub_dir, checkpoints.VOCOS_REPO, name, (files.vocoder_dir / name).read_bytes())
        import shutil

        shutil.rmtree(scratch)
        files = model_cache.resolve_model_files(settings)
    if not fp16_copy.fp16_copy_is_current(files):
        fp16_copy.write_fp16_artifact(files)
    return env
