"""The HTTP door's voice store over a local folder (no S3): its names never reach a transcript
or outside the folder, writes of one voice at once do not collide, and its failures are the
store's, in one sentence."""

import threading

import pytest

from errors import StorageError, VoiceNotFound
from voice_store import LocalFolder, VoiceStore


class Settings:
    s3_voices_prefix = "voices/"


@pytest.fixture
def folder(tmp_path):
    store = LocalFolder(tmp_path / "voices-root")
    store.write_text("voices/alice.wav", "RIFF")
    store.write_text("voices/alice.txt", "What alice says.")
    return store


def test_deleting_a_name_that_is_a_transcript_removes_nothing(folder):
    store = VoiceStore(Settings(), folder)
    with pytest.raises(VoiceNotFound):
        store.delete("alice.txt")
    assert folder.read_text("voices/alice.txt")[0] == "What alice says." and folder.exists("voices/alice.wav")
    store.delete("alice")
    assert not folder.exists("voices/alice.wav") and folder.read_text("voices/alice.txt") is None


def test_writes_of_one_file_at_once_never_collide(folder):
    errors = []

    def write(n):
        for _ in range(50):
            try:
                folder.write_text("voices/bob.txt", f"transcript {n}")
            except StorageError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and folder.read_text("voices/bob.txt")[0].startswith("transcript ")
    assert [p.name for p in (folder.root / "voices").iterdir() if p.name.endswith(".tmp")] == []


def test_a_folder_that_cannot_be_written_is_a_storage_error_without_its_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = LocalFolder(blocker)  # a path through a file: nothing can be made under it
    with pytest.raises(StorageError) as raised:
        store.write_text("voices/carol.txt", "hi")
    assert str(tmp_path) not in raised.value.message and "VOICES_DIR" in raised.value.message


def test_a_voice_removed_after_it_was_found_is_not_found(folder, tmp_path):
    assert folder.head("voices/alice.wav") is not None
    (folder.root / "voices" / "alice.wav").unlink()
    assert folder.head("voices/alice.wav") is None
    with pytest.raises(VoiceNotFound, match="no longer in the voices folder"):
        folder.download("voices/alice.wav", tmp_path / "voice.wav", 1000)
