import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest

from config import MAX_INLINE_LIMIT, ConfigError, Settings, get_settings


def test_defaults_on_a_mounted_volume(tmp_path):
    s = Settings.from_env({"RUNPOD_VOLUME": str(tmp_path)})
    assert s.models_dir == tmp_path / "models"
    assert s.on_volume
    assert s.f5_model == "F5TTS_v1_Base"
    assert s.device == "auto"
    assert s.job_tmp_dir == Path("/tmp")
    assert s.max_text_chars == 20_000
    assert s.s3_voices_prefix == "voices/" and s.s3_output_prefix == "output/"
    assert s.s3_presign_expires == 3600
    assert not s.s3_enabled


def settings_without_the_volume(tmp_path, caplog, monkeypatch, **env):
    """get_settings() as a process with no volume mounted, in `tmp_path`, sees it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("os.environ", {"RUNPOD_VOLUME": str(tmp_path / "absent"), **env})
    get_settings.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="f5worker.config"):
            return get_settings()
    finally:
        get_settings.cache_clear()


def test_missing_volume_falls_back_to_local_models_with_a_warning(tmp_path, caplog, monkeypatch):
    s = settings_without_the_volume(tmp_path, caplog, monkeypatch)
    assert s.models_dir == tmp_path / "models"
    assert not s.on_volume
    assert "not mounted" in caplog.text and str(tmp_path / "models") in caplog.text


def test_the_tiny_model_downloads_nothing_so_it_gets_no_download_warning(tmp_path, caplog, monkeypatch):
    s = settings_without_the_volume(tmp_path, caplog, monkeypatch, F5_MODEL="tiny")
    assert s.models_dir == tmp_path / "models" and caplog.text == ""


def test_require_volume_makes_a_missing_volume_a_start_up_error(tmp_path):
    with pytest.raises(ConfigError, match="REQUIRE_VOLUME"):
        Settings.from_env({"RUNPOD_VOLUME": str(tmp_path / "absent"), "REQUIRE_VOLUME": "true"})
    # ...and is satisfied by a mounted volume
    assert Settings.from_env({"RUNPOD_VOLUME": str(tmp_path), "REQUIRE_VOLUME": "true"}).on_volume


def test_models_dir_override(tmp_path):
    s = Settings.from_env({"RUNPOD_VOLUME": str(tmp_path), "MODELS_DIR": str(tmp_path / "elsewhere")})
    assert s.models_dir == tmp_path / "elsewhere" and s.on_volume
    s = Settings.from_env({"RUNPOD_VOLUME": str(tmp_path / "v"), "MODELS_DIR": str(tmp_path / "m")})
    assert not s.on_volume


@pytest.mark.parametrize(
    "name, value",
    [
        ("MAX_TEXT_CHARS", "lots"),
        ("MAX_TEXT_CHARS", "0"),
        ("F5_MODEL", "F5TTS_Huge"),
        ("DEVICE", "tpu"),
        ("REQUIRE_VOLUME", "perhaps"),
        ("S3_PRESIGN_EXPIRES", "-5"),
        ("S3_OUTPUT_PREFIX", "out/../../etc/"),
        ("LOG_LEVEL", "LOUD"),
        ("S3_ENDPOINT_URL", "not a url"),
        ("S3_ENDPOINT_URL", "ftp://files.example"),
        ("S3_ENDPOINT_URL", "https://"),
        ("S3_ENDPOINT_URL", "https://host.example:99999"),
    ],
)
def test_a_bad_value_names_its_variable(tmp_path, name, value):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"RUNPOD_VOLUME": str(tmp_path), name: value})
    assert name in str(err.value)


@pytest.mark.parametrize("url", ["https://key:s3cr3t@r2.example", "https://s3cr3t@r2.example", "http://:s3cr3t@minio:9000"])
def test_an_endpoint_with_credentials_is_refused_without_echoing_them(tmp_path, url):
    """Credentials in S3_ENDPOINT_URL would be copied into every presigned audio_url."""
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"RUNPOD_VOLUME": str(tmp_path), "S3_ENDPOINT_URL": url})
    assert "must not carry credentials" in str(err.value) and "s3cr3t" not in str(err.value)


@pytest.mark.parametrize("url", ["https://abc.r2.cloudflarestorage.com", "http://127.0.0.1:9000", "https://s3.example/"])
def test_endpoint_urls_of_s3_compatible_stores_are_accepted(tmp_path, url):
    assert Settings.from_env({"RUNPOD_VOLUME": str(tmp_path), "S3_ENDPOINT_URL": url}).s3_endpoint_url == url


@pytest.mark.parametrize("command", [["runpod_handler.py"], ["model_cache.py", "status"], ["bench.py", "--cold"]])
@pytest.mark.parametrize("name, value", [("F5_MODEL", "F5TTS_Huge"), ("MAX_BATCH_FRAMES", "10"),
                                         ("S3_ENDPOINT_URL", "https://u:s3cr3t@host.example")])
def test_every_command_reports_a_bad_setting_in_one_line_with_status_2(command, name, value):
    from conftest import run_py, subprocess_env

    result = run_py(command, env=subprocess_env(**{name: value}), timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: invalid setting(s): {name}: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and "s3cr3t" not in result.stderr and result.stdout == ""


def test_runpod_bucket_variables_are_accepted(tmp_path):
    s = Settings.from_env({
        "RUNPOD_VOLUME": str(tmp_path), "S3_BUCKET": "b",
        "BUCKET_ENDPOINT_URL": "https://r2.example", "BUCKET_ACCESS_KEY_ID": "AK", "BUCKET_SECRET_ACCESS_KEY": "SK",
    })
    assert (s.s3_endpoint_url, s.s3_access_key_id, s.s3_secret_access_key) == ("https://r2.example", "AK", "SK")
    assert "SK" not in repr(s) and "AK" not in repr(s)


def test_blank_values_mean_unset_and_prefixes_are_normalised(tmp_path):
    s = Settings.from_env({"RUNPOD_VOLUME": str(tmp_path), "S3_BUCKET": "  ", "S3_VOICES_PREFIX": "/my/voices"})
    assert s.s3_bucket is None and s.s3_voices_prefix == "my/voices/"


def test_local_copies_only_outside_the_job_queue(tmp_path, monkeypatch):
    s = Settings.from_env({"RUNPOD_VOLUME": str(tmp_path)})
    monkeypatch.delenv("RUNPOD_WEBHOOK_GET_JOB", raising=False)
    assert s.local_output_enabled
    monkeypatch.setenv("RUNPOD_WEBHOOK_GET_JOB", "https://api.runpod.test/job")
    assert not s.local_output_enabled
    assert Settings.from_env({"RUNPOD_VOLUME": str(tmp_path), "WRITE_LOCAL_OUTPUT": "true"}).local_output_enabled


#: Every float setting, by its variable: each may be given as "inf" or "nan" in the environment.
FLOAT_SETTINGS = [f.alias for f in Settings.model_fields.values() if f.annotation in (float, Optional[float])]


def test_the_float_settings_are_found():
    assert {"MIN_VOICE_SECONDS", "MAX_OUTPUT_SECONDS", "S3_CONNECT_TIMEOUT", "VOICE_URL_TIMEOUT"} <= set(FLOAT_SETTINGS)


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
def test_no_float_setting_may_be_infinite_or_nan(tmp_path, name, value):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"RUNPOD_VOLUME": str(tmp_path), name: value})
    assert f"{name}: Input should be a finite number" in str(err.value)


@pytest.mark.parametrize("env, message", [
    # settings that pass alone, and together refuse every voice
    ({"MIN_VOICE_SECONDS": "12"}, "MIN_VOICE_SECONDS (12) must be below REF_CLIP_SECONDS (12)"),
    ({"MIN_VOICE_SECONDS": "5", "REF_CLIP_SECONDS": "4"}, "MIN_VOICE_SECONDS (5) must be below REF_CLIP_SECONDS (4)"),
    ({"MAX_VOICE_SECONDS": "0.5"}, "MAX_VOICE_SECONDS (0.5) must be at least MIN_VOICE_SECONDS (1)"),
    # values no job could meet
    ({"MAX_OUTPUT_SECONDS": "0.01"}, "MAX_OUTPUT_SECONDS: Input should be greater than or equal to 1"),
    ({"MAX_INLINE_BYTES": "100"}, "MAX_INLINE_BYTES: Input should be greater than or equal to 16384"),
    ({"VOICE_URL_TIMEOUT": "0.001"}, "VOICE_URL_TIMEOUT: Input should be greater than or equal to 1"),
    ({"S3_CONNECT_TIMEOUT": "1e-9"}, "S3_CONNECT_TIMEOUT: Input should be greater than or equal to 1"),
    ({"S3_READ_TIMEOUT": "0.01"}, "S3_READ_TIMEOUT: Input should be greater than or equal to 1"),
    ({"S3_PRESIGN_EXPIRES": "1"}, "S3_PRESIGN_EXPIRES: Input should be greater than or equal to 60"),
    # values past what could ever be waited for or delivered
    ({"S3_CONNECT_TIMEOUT": "1e9"}, "S3_CONNECT_TIMEOUT: Input should be less than or equal to 120"),
    ({"S3_READ_TIMEOUT": "86400"}, "S3_READ_TIMEOUT: Input should be less than or equal to 600"),
    ({"MAX_INLINE_BYTES": str(20 * 2**20)}, "MAX_INLINE_BYTES: Input should be less than or equal to 14680064"),
])
def test_a_setting_that_would_fail_every_job_is_refused_at_start(tmp_path, env, message):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"RUNPOD_VOLUME": str(tmp_path), **env})
    assert str(err.value).startswith(f"invalid setting(s): {message}")


def test_the_edges_of_those_ranges_are_accepted(tmp_path):
    s = Settings.from_env({"RUNPOD_VOLUME": str(tmp_path), "MIN_VOICE_SECONDS": "11.9", "MAX_VOICE_SECONDS": "11.9",
                           "MAX_OUTPUT_SECONDS": "1", "MAX_INLINE_BYTES": str(MAX_INLINE_LIMIT),
                           "S3_CONNECT_TIMEOUT": "1", "S3_READ_TIMEOUT": "600", "S3_PRESIGN_EXPIRES": "60"})
    assert (s.min_voice_seconds, s.max_voice_seconds, s.max_inline_bytes) == (11.9, 11.9, MAX_INLINE_LIMIT)


def base64_size(size: int) -> int:
    return 4 * -(-size // 3)


def test_inline_audio_fits_runpods_payload_limits():
    """/run takes results of 10 MB, /runsync of 20 MB (notes/runpod.md); the rest of a result
    (captions text, timings) needs room beside the audio's base64."""
    assert base64_size(Settings.model_fields["max_inline_bytes"].default) < 10_000_000 - 200_000
    assert base64_size(MAX_INLINE_LIMIT) < 20_000_000 - 400_000


def test_a_free_space_floor_larger_than_the_disk_is_refused(tmp_path):
    disk_mb = shutil.disk_usage(tmp_path).total // 2**20
    env = {"RUNPOD_VOLUME": str(tmp_path), "JOB_TMP_DIR": str(tmp_path / "not" / "made" / "yet")}
    with pytest.raises(ConfigError, match=rf"MIN_FREE_DISK_MB \({disk_mb + 1}\) must be below the size of the disk "
                                          rf"that holds JOB_TMP_DIR \({disk_mb} MB\)"):
        Settings.from_env({**env, "MIN_FREE_DISK_MB": str(disk_mb + 1)})
    assert Settings.from_env({**env, "MIN_FREE_DISK_MB": str(disk_mb - 1)}).min_free_disk_mb == disk_mb - 1


def test_no_free_space_floor_suits_any_disk(tmp_path, monkeypatch):
    """MIN_FREE_DISK_MB=0 turns the check off, also on a disk of less than a megabyte."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=64 * 1024, used=0, free=64 * 1024))
    env = {"RUNPOD_VOLUME": str(tmp_path), "JOB_TMP_DIR": str(tmp_path)}
    assert Settings.from_env({**env, "MIN_FREE_DISK_MB": "0"}).min_free_disk_mb == 0
    with pytest.raises(ConfigError, match="MIN_FREE_DISK_MB"):
        Settings.from_env({**env, "MIN_FREE_DISK_MB": "1"})


@pytest.mark.parametrize("name, value, line", [
    ("S3_CONNECT_TIMEOUT", "inf", "S3_CONNECT_TIMEOUT: Input should be a finite number"),
    ("MIN_VOICE_SECONDS", "12", "MIN_VOICE_SECONDS (12) must be below REF_CLIP_SECONDS (12)"),
])
def test_such_a_setting_stops_the_start_in_one_line_with_status_2(name, value, line):
    from conftest import run_py, subprocess_env

    result = run_py(["-c", "import config; config.settings_or_exit()"], env=subprocess_env(**{name: value}),
                    timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: invalid setting(s): {line}") and result.stderr.count("\n") == 1
