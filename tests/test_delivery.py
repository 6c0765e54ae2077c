"""Delivery on its own, no model: what fits inline, what goes to S3 (a fake storage here), and the
local copy in OUTPUT_DIR, whole or not at all."""

import base64
import errno
import os
import shutil

import pytest
from conftest import TEST_ENV

from config import Settings
from delivery import Delivery
from errors import DiskSpaceError, LimitExceeded, WorkerSetupError

LIMIT = 64 * 1024  # MAX_INLINE_BYTES in these tests


def settings(tmp_path, **update) -> Settings:
    base = Settings.from_env(TEST_ENV).model_copy(update={"max_inline_bytes": LIMIT, "output_dir": tmp_path / "out",
                                                          "write_local_output": False, "s3_presign_expires": 600})
    return base.model_copy(update=update)


class FakeStorage:
    """S3Storage's two calls that delivery makes, kept in order; `fail_on` a key suffix fails its upload."""

    def __init__(self, fail_on: str | None = None):
        self.calls, self.fail_on = [], fail_on

    def upload(self, path, key, content_type):
        self.calls.append(("upload", key, content_type, path.read_bytes()))
        if self.fail_on and key.endswith(self.fail_on):
            raise ConnectionError("connection reset")

    def presign(self, key, expires):
        self.calls.append(("presign", key, expires))
        return f"https://bucket.test/{key}?X-Amz-Signature=x"


@pytest.fixture
def audio(tmp_path):
    path = tmp_path / "job.wav"
    path.write_bytes(b"RIFF" + bytes(1000))
    return path


@pytest.fixture
def captions(tmp_path):
    path = tmp_path / "job.vtt"
    path.write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nHi\n", encoding="utf-8")
    return path, "output/job.vtt", "text/vtt"


# --- check_inline_size ---------------------------------------------------------------------------


def test_an_answer_within_the_limit_passes(tmp_path):
    inline, stored = Delivery(settings(tmp_path), None), Delivery(settings(tmp_path), FakeStorage())
    inline.check_inline_size(False, LIMIT, "wav")  # exactly the limit fits
    inline.check_inline_size(False, LIMIT - 100, "wav", streamed=100)
    stored.check_inline_size(False, 100 * LIMIT, "wav")  # a URL: the file's size does not count
    stored.check_inline_size(True, LIMIT, "wav")


def test_an_inline_file_over_the_limit_without_s3_is_refused_with_the_remedies(tmp_path):
    delivery = Delivery(settings(tmp_path), None)
    with pytest.raises(LimitExceeded) as raised:
        delivery.check_inline_size(False, LIMIT + 1, "wav")
    assert raised.value.message == ("The audio is 64.0 KB, over the 64.0 KB that can be returned inline (RunPod "
                                    "refuses large payloads): configure S3_BUCKET, ask for output_format mp3 or opus, "
                                    "or send a shorter text.")
    with pytest.raises(LimitExceeded) as raised:  # planned: a floor of the size, before any synthesis
        delivery.check_inline_size(False, 3 * 2**20, "flac", planned=True)
    assert raised.value.message.startswith("The audio would be at least 3.0 MB, over the 64.0 KB")
    for fmt in ("mp3", "ogg", "opus"):  # already compressed: not told to ask for another format
        with pytest.raises(LimitExceeded) as raised:
            delivery.check_inline_size(False, 2 * LIMIT, fmt)
        assert raised.value.message.endswith("configure S3_BUCKET, or send a shorter text.")


def test_return_base64_with_s3_over_the_limit_is_told_to_drop_it(tmp_path):
    with pytest.raises(LimitExceeded) as raised:
        Delivery(settings(tmp_path), FakeStorage()).check_inline_size(True, 2 * LIMIT, "wav")
    assert "drop return_base64 to get an S3 URL, ask for output_format mp3 or opus" in raised.value.message
    assert "S3_BUCKET" not in raised.value.message


def test_a_streamed_answer_counts_its_pieces(tmp_path):
    with pytest.raises(LimitExceeded) as raised:  # with S3, only the pieces are in the answer
        Delivery(settings(tmp_path), FakeStorage()).check_inline_size(False, 10, "wav", planned=True,
                                                                      streamed=LIMIT + 1)
    assert raised.value.message.startswith("A streamed job's answer holds every piece of its audio: this one would be "
                                           "at least 64.0 KB, over the 64.0 KB that /run and /runsync can return")
    assert raised.value.message.endswith("(with S3, its answer is a URL).")
    with pytest.raises(LimitExceeded) as raised:  # inline: the pieces and the file together
        Delivery(settings(tmp_path), None).check_inline_size(False, LIMIT // 2, "wav", streamed=LIMIT // 2 + 1)
    assert raised.value.message.startswith("A streamed job's pieces and its audio together is 64.0 KB, over the "
                                           "64.0 KB that can be returned inline")


# --- deliver -------------------------------------------------------------------------------------


def test_deliver_without_storage_is_inline(tmp_path, audio, captions):
    out = Delivery(settings(tmp_path), None).deliver(audio, "output/job.wav", "audio/wav", False, captions)
    assert out == {"audio_base64": base64.b64encode(audio.read_bytes()).decode("ascii"),
                   "captions_text": captions[0].read_text(encoding="utf-8")}
    assert not (tmp_path / "out").exists()  # no local copy unless asked for


def test_deliver_with_storage_uploads_and_presigns(tmp_path, audio, captions):
    storage = FakeStorage()
    out = Delivery(settings(tmp_path), storage).deliver(audio, "output/job.wav", "audio/wav", False, captions)
    assert out == {"s3_key": "output/job.wav", "audio_url": "https://bucket.test/output/job.wav?X-Amz-Signature=x",
                   "captions_s3_key": "output/job.vtt",
                   "captions_url": "https://bucket.test/output/job.vtt?X-Amz-Signature=x"}
    assert storage.calls == [("upload", "output/job.wav", "audio/wav", audio.read_bytes()),
                             ("presign", "output/job.wav", 600),
                             ("upload", "output/job.vtt", "text/vtt", captions[0].read_bytes()),
                             ("presign", "output/job.vtt", 600)]
    both = Delivery(settings(tmp_path), FakeStorage()).deliver(audio, "output/job.wav", "audio/wav", True)
    assert both["s3_key"] == "output/job.wav" and base64.b64decode(both["audio_base64"]) == audio.read_bytes()


def test_deliver_with_a_local_copy_names_it(tmp_path, audio, captions):
    out = Delivery(settings(tmp_path, write_local_output=True), FakeStorage()).deliver(
        audio, "output/job.wav", "audio/wav", False, captions)
    assert out["local_path"] == str((tmp_path / "out" / "job.wav").absolute())
    assert out["captions_local_path"] == str((tmp_path / "out" / "job.vtt").absolute())
    assert (tmp_path / "out" / "job.wav").read_bytes() == audio.read_bytes()


def test_deliver_checks_the_size_before_anything_is_stored(tmp_path, audio):
    storage = FakeStorage()
    big = tmp_path / "big.wav"
    big.write_bytes(bytes(LIMIT + 1))
    with pytest.raises(LimitExceeded):
        Delivery(settings(tmp_path, write_local_output=True), storage).deliver(big, "output/big.wav", "audio/wav", True)
    assert storage.calls == [] and not (tmp_path / "out" / "big.wav").exists()
    with pytest.raises(LimitExceeded):  # the pieces already sent count
        Delivery(settings(tmp_path), None).deliver(audio, "output/job.wav", "audio/wav", False, streamed=LIMIT)


@pytest.mark.parametrize("fail_on", [".wav", ".vtt"])
def test_a_failed_upload_removes_the_local_copies(tmp_path, audio, captions, fail_on):
    with pytest.raises(ConnectionError):
        Delivery(settings(tmp_path, write_local_output=True), FakeStorage(fail_on=fail_on)).deliver(
            audio, "output/job.wav", "audio/wav", False, captions)
    assert list((tmp_path / "out").iterdir()) == []


# --- copy_locally --------------------------------------------------------------------------------


def test_copy_locally_makes_the_folder_and_replaces_an_older_copy(tmp_path, audio):
    delivery = Delivery(settings(tmp_path, output_dir=tmp_path / "a" / "b"), None)
    first = delivery.copy_locally(audio)
    assert first == (tmp_path / "a" / "b" / "job.wav").absolute() and first.read_bytes() == audio.read_bytes()
    audio.write_bytes(b"RIFF" + b"\x01" * 10)
    assert delivery.copy_locally(audio).read_bytes() == audio.read_bytes()
    assert sorted(p.name for p in first.parent.iterdir()) == ["job.wav"]  # no temporary left


def test_a_failed_copy_leaves_neither_copy_nor_temporary(tmp_path, audio, monkeypatch):
    delivery = Delivery(settings(tmp_path), None)

    def full(src, dst):
        open(dst, "wb").write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(DiskSpaceError) as raised:
        delivery.copy_locally(audio)
    assert raised.value.message == (f"The disk is full: the local copy of the result could not be written to "
                                    f"{(tmp_path / 'out').absolute()} (OUTPUT_DIR).")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_output_dir_that_cannot_be_made_names_the_setting(tmp_path, audio):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(WorkerSetupError) as raised:
        Delivery(settings(tmp_path, output_dir=tmp_path / "file" / "out"), None).copy_locally(audio)
    assert raised.value.message.startswith("The local copy of the result could not be written to ")
    assert "(OUTPUT_DIR)" in raised.value.message


# --- check_planned_size and keys -----------------------------------------------------------------


def test_the_planned_size_is_the_fewest_bytes_the_plan_s_audio_takes(tmp_path):
    inline = Delivery(settings(tmp_path), None)
    inline.check_planned_size(False, "wav", LIMIT // 2)  # 16-bit samples: exactly the limit
    with pytest.raises(LimitExceeded, match="would be at least 64.0 KB"):
        inline.check_planned_size(False, "wav", LIMIT // 2 + 1)
    inline.check_planned_size(False, "flac", 2 * LIMIT)  # FLAC's floor is a quarter of that
    inline.check_planned_size(False, "mp3", 10 * LIMIT)  # unknown before encoding: checked after
    with pytest.raises(LimitExceeded, match="A streamed job's pieces and its audio together would be at least"):
        inline.check_planned_size(False, "flac", LIMIT // 2, stream_fmt="pcm")  # 64 KB of pieces + 16 KB of FLAC


def test_keys_are_under_the_output_prefix(tmp_path):
    assert Delivery(settings(tmp_path, s3_output_prefix="runs/"), None).key("job-1.wav") == "runs/job-1.wav"
