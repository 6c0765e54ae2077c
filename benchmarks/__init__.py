"""The measurements `bench.py` runs: stock f5-tts and this worker on the same model, inputs and
seed, side by side."""
