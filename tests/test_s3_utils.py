"""S3Storage against moto over real HTTP (conftest's server, through S3_ENDPOINT_URL), no model:
each call, its limits, and every failure as one StorageError that names the action and the key."""

import pytest
import requests
from conftest import BUCKET, CLOSED_PORT, TEST_ENV

from config import Settings
from errors import LimitExceeded, StorageError
from s3_utils import S3Storage


def storage(**update) -> S3Storage:
    return S3Storage(Settings.from_env(TEST_ENV).model_copy(update=update))


@pytest.fixture
def store(s3):
    return storage()


def test_exists(store, s3):
    s3.put_object(Bucket=BUCKET, Key="voices/here.wav", Body=b"RIFF")
    assert store.exists("voices/here.wav")
    assert not store.exists("voices/missing.wav")


def test_download_streams_the_object_and_returns_its_etag(store, s3, tmp_path):
    body = bytes(range(256)) * 20
    etag = s3.put_object(Bucket=BUCKET, Key="voices/v.wav", Body=body)["ETag"].strip('"')
    target = tmp_path / "voice"
    assert store.download("voices/v.wav", target, max_bytes=len(body)) == etag
    assert target.read_bytes() == body


def test_download_refuses_an_object_over_the_limit_before_reading_it(store, s3, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="voices/big.wav", Body=bytes(5000))
    with pytest.raises(LimitExceeded) as raised:
        store.download("voices/big.wav", tmp_path / "voice", max_bytes=4096)
    assert raised.value.message == "'voices/big.wav' is 5000 bytes; at most 4096 bytes are accepted."
    assert not (tmp_path / "voice").exists()


def test_download_stops_a_body_longer_than_its_stated_length(store, s3, tmp_path, monkeypatch):
    """The limit holds for what is read, not only for what the store says it will send."""
    s3.put_object(Bucket=BUCKET, Key="voices/liar.wav", Body=bytes(3 * 2**20))
    real = store.client.get_object

    def understated(**kwargs):
        obj = real(**kwargs)
        obj["ContentLength"] = 10
        return obj

    monkeypatch.setattr(store.client, "get_object", understated)
    with pytest.raises(LimitExceeded, match="'voices/liar.wav' is over 2097152 bytes."):
        store.download("voices/liar.wav", tmp_path / "voice", max_bytes=2 * 2**20)
    assert (tmp_path / "voice").stat().st_size <= 2 * 2**20


def test_download_of_a_missing_object_is_a_storage_error(store, tmp_path):
    with pytest.raises(StorageError) as raised:
        store.download("voices/none.wav", tmp_path / "voice", max_bytes=1000)
    assert raised.value.message == "S3 download of 'voices/none.wav' failed (NoSuchKey)."


def test_write_text_and_read_text_round_trip_with_metadata(store, s3):
    store.write_text("voices/v.txt", "Some call me nature. Ünïcode.", {"source": "asr", "etag": "abc"})
    head = s3.head_object(Bucket=BUCKET, Key="voices/v.txt")
    assert head["ContentType"] == "text/plain; charset=utf-8"
    assert store.read_text("voices/v.txt") == ("Some call me nature. Ünïcode.", {"source": "asr", "etag": "abc"})
    store.write_text("voices/plain.txt", "Hi.")
    assert store.read_text("voices/plain.txt") == ("Hi.", {})


def test_read_text_of_nothing_is_none_and_of_too_much_is_refused(store, s3):
    assert store.read_text("voices/none.txt") is None
    s3.put_object(Bucket=BUCKET, Key="voices/long.txt", Body=b"word " * 100)
    with pytest.raises(LimitExceeded, match="'voices/long.txt' is over 100 bytes."):
        store.read_text("voices/long.txt", max_bytes=100)
    assert store.read_text("voices/long.txt", max_bytes=500)[0] == "word " * 100
    s3.put_object(Bucket=BUCKET, Key="voices/latin1.txt", Body="café".encode("latin-1"))
    assert store.read_text("voices/latin1.txt")[0] == "caf\ufffd"  # undecodable bytes replaced, not an error


def test_upload_stores_the_file_whole_with_its_content_type(store, s3, tmp_path):
    path = tmp_path / "job.mp3"
    path.write_bytes(b"ID3" + bytes(range(256)) * 10)
    store.upload(path, "output/job.mp3", "audio/mpeg")
    obj = s3.get_object(Bucket=BUCKET, Key="output/job.mp3")
    assert obj["ContentType"] == "audio/mpeg" and obj["Body"].read() == path.read_bytes()


def test_presign_gives_a_url_that_fetches_the_object_for_its_lifetime(store, s3):
    s3.put_object(Bucket=BUCKET, Key="output/job.wav", Body=b"RIFF audio")
    url = store.presign("output/job.wav", 600)
    assert url.startswith(f"{TEST_ENV['S3_ENDPOINT_URL']}/{BUCKET}/output/job.wav?")  # path-style, as configured
    assert "X-Amz-Expires=600" in url and "X-Amz-Signature=" in url
    assert requests.get(url, timeout=10).content == b"RIFF audio"


def test_a_missing_bucket_fails_each_call_with_its_action(s3, tmp_path):
    nowhere = storage(s3_bucket="no-such-bucket")
    path = tmp_path / "job.wav"
    path.write_bytes(b"RIFF")
    failures = {
        "download": lambda: nowhere.download("voices/a.wav", tmp_path / "voice", 1000),
        "upload": lambda: nowhere.upload(path, "output/job.wav", "audio/wav"),
    }
    for action, call in failures.items():
        with pytest.raises(StorageError) as raised:
            call()
        assert raised.value.message.startswith(f"S3 {action} of ") and "(NoSuchBucket)" in raised.value.message
    with pytest.raises(StorageError, match=r"S3 upload of 'voices/a.txt' failed \(NoSuchBucket\)."):
        nowhere.write_text("voices/a.txt", "hi")
    with pytest.raises(StorageError, match=r"S3 download of 'voices/a.txt' failed \(NoSuchBucket\)."):
        nowhere.read_text("voices/a.txt")


def test_an_unreachable_store_is_a_storage_error_free_of_secrets(tmp_path):
    down = storage(s3_endpoint_url=f"http://127.0.0.1:{CLOSED_PORT}", s3_max_attempts=1, s3_connect_timeout=1.0,
                   s3_access_key_id="AKIASECRETKEYID", s3_secret_access_key="very-secret")
    path = tmp_path / "job.wav"
    path.write_bytes(b"RIFF")
    calls = [("lookup", "voices/a.wav", lambda: down.exists("voices/a.wav")),
             ("download", "voices/a.wav", lambda: down.download("voices/a.wav", tmp_path / "voice", 1000)),
             ("download", "voices/a.txt", lambda: down.read_text("voices/a.txt")),
             ("upload", "voices/a.txt", lambda: down.write_text("voices/a.txt", "hi")),
             ("upload", "output/job.wav", lambda: down.upload(path, "output/job.wav", "audio/wav"))]
    for action, key, call in calls:
        with pytest.raises(StorageError) as raised:
            call()
        assert raised.value.message == f"S3 {action} of '{key}' failed (EndpointConnectionError).", action
        assert "secret" not in raised.value.message.lower()
    assert down.presign("output/job.wav", 600).startswith(f"http://127.0.0.1:{CLOSED_PORT}/")  # made locally


def test_a_long_key_is_quoted_short(s3, tmp_path):
    key = "voices/" + "k" * 500
    with pytest.raises(StorageError) as raised:
        storage().download(key, tmp_path / "voice", 1000)
    assert raised.value.message == f"S3 download of '{key[:39]}…' failed (NoSuchKey)."
