"""A short job (one sentence) with an S3 voice, through the engine, S3 on a local moto server: the
voice warm (its prepared reference kept from an earlier job: one HEAD, nothing downloaded or
decoded) against the same job cold (looked up, downloaded, decoded, resampled and clipped, as
every job did before `voice_cache`). moto answers from this host: a real store adds its round
trips (and the download's bytes) to the cold side only."""

from __future__ import annotations

import socket
import statistics
import time

from benchmarks.inputs import REF_TEXT

BUCKET = "bench-voices"
VOICE = "basic/basic_ref_en.wav"
KEY = "voices/voice.flac"
#: As callers upload a voice: a 44.1 kHz FLAC of 20 s (the worker decodes, resamples and clips it to 12 s).
UPLOAD_RATE, UPLOAD_SECONDS = 44_100, 20


def uploaded_voice(example) -> bytes:
    """The example recording repeated to UPLOAD_SECONDS at UPLOAD_RATE, as FLAC."""
    import io

    import numpy as np
    import soundfile as sf

    from audio_io import resample

    audio, rate = sf.read(example, dtype="float32")
    audio = resample(audio, rate, UPLOAD_RATE)
    audio = np.tile(audio, int(np.ceil(UPLOAD_SECONDS * UPLOAD_RATE / len(audio))))[: UPLOAD_SECONDS * UPLOAD_RATE]
    buffer = io.BytesIO()
    sf.write(buffer, audio, UPLOAD_RATE, format="FLAC")
    return buffer.getvalue()
TEXT = "Hello, and thank you for calling."


def measure(args, arch):
    import logging
    import os

    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise SystemExit("--voice-cache needs moto (pip install -r requirements-test.txt)") from None
    import boto3

    import checkpoints
    import loaded_model
    from benchmarks.warm import describe_device
    from config import get_settings
    from engine import Engine

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key=KEY, Body=uploaded_voice(checkpoints.f5_package_dir() / "infer" /
                                                                       "examples" / VOICE))
        base = get_settings().model_copy(update={"f5_model": arch, "s3_bucket": BUCKET, "s3_endpoint_url": endpoint,
                                                 "s3_region": "us-east-1"})
        model = loaded_model.get_model(base)
        job = {"text": TEXT, "voice_name": KEY.removeprefix("voices/"), "ref_text": REF_TEXT, "nfe_step": args.nfe, "seed": 7,
               "return_base64": True}
        runs = args.runs or (5 if model.device.startswith("cuda") else 3)
        engines, calls = {}, {}
        for case, cache_mb in (("cold", 0), ("warm", base.voice_cache_mb)):
            engines[case] = Engine(base.model_copy(update={"voice_cache_mb": cache_mb}))
            calls[case] = []
            engines[case].storage.client.meta.events.register(  # the requests for the voice, by operation
                "provide-client-params.s3", lambda params, event_name, seen=calls[case], **_: seen.append(
                    event_name.split(".")[-1]) if params.get("Key", "").startswith("voices/") else None)
        results = {case: [] for case in engines}
        times = {case: [] for case in engines}
        for n in range(runs + 1):  # the first of each warms the model (and, warm, the voice); then in turn
            for case, engine in engines.items():
                calls[case].clear()
                start = time.perf_counter()
                *_, result = engine.run(f"{case}-{n}", job)
                times[case].append(time.perf_counter() - start)
                results[case].append(result)
        rows = {}
        for case in engines:
            timed, last = results[case][1:], results[case][-1]
            rows[case] = {"s": statistics.median(times[case][1:]), "range": [min(times[case][1:]), max(times[case][1:])],
                          **{f"{step}_s": statistics.median(r.timings[step] for r in timed)
                             for step in ("download", "transcript", "synthesis")},
                          "voice_cached": last.voice_cached, "s3_calls": sorted(calls[case]),
                          "audio": last.audio_base64}
        same = rows["cold"].pop("audio") == rows["warm"].pop("audio")
    finally:
        server.stop()
    return {"device": describe_device(model.device), "arch": arch, "nfe": args.nfe, "runs": runs, "text": TEXT,
            "voice": f"{VOICE} as a {UPLOAD_SECONDS} s {UPLOAD_RATE} Hz FLAC", "rows": rows, "same_audio": same}


def report(result):
    print(f"\nA short job with an S3 voice ({result['voice']}; moto on this host), {result['arch']} on "
          f"{result['device']}, nfe {result['nfe']}, median of {result['runs']}:")
    print(f"  {'voice':<6} {'job s':>8} {'download s':>11} {'reference s':>12} {'synthesis s':>12}  "
          "S3 calls on the voice")
    for case, row in result["rows"].items():
        print(f"  {case:<6} {row['s']:8.3f} {row['download_s']:11.3f} {row['transcript_s']:12.3f} "
              f"{row['synthesis_s']:12.3f}  {', '.join(row['s3_calls'])}")
    cold, warm = result["rows"]["cold"], result["rows"]["warm"]
    saved = cold["download_s"] + cold["transcript_s"] - warm["download_s"] - warm["transcript_s"]
    print(f"  warm saves {saved:.3f} s of staging and preparing the voice (the whole job: {cold['s']:.3f} s cold, "
          f"{warm['s']:.3f} s warm); the same audio for the same seed: {result['same_audio']}")
