"""Staging a voice without a model or a whole job: the stager each source picks, names and their
extensions, base64, the S3 sidecar's reading, writing and ownership, and the voice_url client's
address checks (no network: the resolver is a stand-in)."""

import base64
import hashlib
import ipaddress
import socket

import pytest

import url_fetch
import voices
from config import Settings
from errors import InvalidInput, LimitExceeded, VoiceFetchError, VoiceNotFound
from job_schema import VoiceInput

WAV = b"RIFF....WAVEfmt a recording"


@pytest.fixture
def settings(tmp_path):
    return Settings.from_env({"RUNPOD_VOLUME": str(tmp_path)})


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "job"


class FakeStorage:
    """S3Storage's calls that voices make, over a dict of key -> (bytes, metadata); it notes
    every key looked up, in order."""

    bucket = "fake-bucket"

    def __init__(self, **objects: bytes):
        self.objects = {key: (data, {}) for key, data in objects.items()}
        self.looked_up: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = (data, {})

    def exists(self, key):
        self.looked_up.append(key)
        return key in self.objects

    def download(self, key, path, max_bytes):
        data = self.objects[key][0]
        path.write_bytes(data)
        return hashlib.md5(data).hexdigest()  # as S3's ETag of a single-part object

    def read_text(self, key):
        if key not in self.objects:
            return None
        data, metadata = self.objects[key]
        return data.decode(), dict(metadata)

    def write_text(self, key, text, metadata=None):
        self.objects[key] = (text.encode(), dict(metadata or {}))


def in_bucket(**names: bytes) -> FakeStorage:
    """A bucket holding `voices/<name>` for each name given (a '_' in a name stands for '.')."""
    return FakeStorage(**{f"voices/{name.replace('_', '.')}": data for name, data in names.items()})


# --- the stager table ----------------------------------------------------------------------------

STAGERS = [("voice_name", "name", "from_s3"), ("voice_url", "url", "from_url"),
           ("voice_base64", "base64", "from_base64")]


@pytest.mark.parametrize("field, label, stager", STAGERS)
def test_stage_calls_the_stager_of_the_source_given(monkeypatch, settings, folder, field, label, stager):
    calls = []
    for name in ("from_s3", "from_url", "from_base64"):
        monkeypatch.setattr(voices, name, lambda *args, name=name: calls.append((name, args)) or
                            voices.StagedVoice(args[-1] / "voice", "?"))
    storage = object()
    voices.stage(VoiceInput(**{field: "alice"}), folder, settings, storage)
    assert folder.is_dir()
    ((called, args),) = calls
    assert called == stager
    assert args == ((storage, settings, "alice", folder) if field == "voice_name" else ("alice", settings, folder))


@pytest.mark.parametrize("field, label, stager", STAGERS)
def test_source_of_names_each_source(field, label, stager):
    assert voices.source_of(VoiceInput(**{field: "alice"})) == label
    assert voices.SOURCES[field].label == label


def test_the_table_holds_every_source_a_voice_input_has():
    assert set(voices.SOURCES) == {name for name in VoiceInput.model_fields if name.startswith("voice_")}


def test_each_stager_labels_its_voice_as_source_of_does(monkeypatch, settings, tmp_path):
    monkeypatch.setattr(url_fetch, "fetch", lambda url, path, settings: path.write_bytes(WAV))
    given = [VoiceInput(voice_name="alice"), VoiceInput(voice_url="https://example.com/a.wav"),
             VoiceInput(voice_base64=base64.b64encode(WAV).decode())]
    for n, voice in enumerate(given):
        staged = voices.stage(voice, tmp_path / f"voice-{n}", settings, in_bucket(alice_wav=WAV))
        assert staged.source == voices.source_of(voice)
        assert staged.path.parent == tmp_path / f"voice-{n}" and staged.path.read_bytes() == WAV
        assert (staged.sidecar is not None) == (staged.source == "name")


@pytest.mark.parametrize("fields", [{}, {"voice_name": "a", "voice_url": "https://example.com/a.wav"}])
def test_a_voice_without_exactly_one_source_is_an_error_not_base64(settings, folder, fields):
    voice = VoiceInput.model_construct(**fields)  # as validation would never let through
    for call in (lambda: voices.source_of(voice), lambda: voices.stage(voice, folder, settings, None)):
        with pytest.raises(InvalidInput) as err:
            call()
        assert err.value.message == "give exactly one of voice_name, voice_url, voice_base64."
    assert not folder.exists()


def test_stage_uses_a_folder_made_already(settings, folder):
    folder.mkdir()
    staged = voices.stage(VoiceInput(voice_base64=base64.b64encode(WAV).decode()), folder, settings, None)
    assert staged.path == folder / "voice"


# --- voice names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["alice", "alice.wav", "Bob Smith_2-x.flac", "a" * 200, "v1.2"])
def test_plain_names_pass(name):
    assert voices.check_voice_name(name) == name


@pytest.mark.parametrize("name", ["", "..", "../alice", "a..b", "a/b", "/etc/passwd", ".hidden", "a\\b",
                                  "a" * 201, "tab\tname", "new\nline"])
def test_names_that_could_leave_the_prefix_are_refused(name):
    with pytest.raises(InvalidInput) as err:
        voices.check_voice_name(name)
    assert err.value.message == (
        "voice_name must be a plain file name (letters, digits, '.', '_', '-', spaces; no '/' or '..').")


def test_a_bad_name_is_refused_before_the_bucket_is_asked(settings, folder):
    storage = in_bucket()
    with pytest.raises(InvalidInput):
        voices.from_s3(storage, settings, "../secrets", folder)
    assert storage.looked_up == []


# --- S3 by name: extensions ----------------------------------------------------------------------

def test_a_name_without_a_suffix_is_tried_bare_then_with_each_extension_in_order(settings, folder):
    folder.mkdir()
    storage = in_bucket(bob_mp3=WAV, bob_ogg=b"another")
    staged = voices.from_s3(storage, settings, "bob", folder)
    assert storage.looked_up == ["voices/bob", "voices/bob.wav", "voices/bob.flac", "voices/bob.mp3"]
    assert staged.path == folder / "voice.mp3" and staged.path.read_bytes() == WAV
    assert (staged.source, staged.sidecar.key, staged.sidecar.voice_key) == ("name", "voices/bob.txt", "voices/bob.mp3")
    assert staged.sidecar.voice_etag == hashlib.md5(WAV).hexdigest()


def test_the_first_extension_found_wins(settings, folder):
    folder.mkdir()
    staged = voices.from_s3(in_bucket(bob_flac=b"flac", bob_wav=WAV), settings, "bob", folder)
    assert staged.path == folder / "voice.wav" and staged.sidecar.voice_key == "voices/bob.wav"


def test_an_object_stored_without_a_suffix_is_staged_without_one(settings, folder):
    folder.mkdir()
    storage = in_bucket(bob=WAV, bob_wav=b"never looked at")
    staged = voices.from_s3(storage, settings, "bob", folder)
    assert storage.looked_up == ["voices/bob"] and staged.path == folder / "voice"
    assert staged.sidecar.key == "voices/bob.txt"


def test_a_name_with_a_suffix_is_tried_as_given_only(settings, folder):
    storage = in_bucket(bob_flac=WAV)
    with pytest.raises(VoiceNotFound) as err:
        voices.from_s3(storage, settings, "bob.wav", folder)
    assert storage.looked_up == ["voices/bob.wav"]
    assert err.value.message == "No voice named 'bob.wav' under 'voices/' in the bucket."


def test_an_upper_case_suffix_is_staged_as_the_decoders_know_it(settings, folder):
    folder.mkdir()
    storage = FakeStorage(**{"voices/Bob.WAV": WAV})
    assert voices.from_s3(storage, settings, "Bob.WAV", folder).path == folder / "voice.wav"


def test_voices_are_looked_up_under_the_prefix(settings, folder):
    folder.mkdir()
    storage = FakeStorage(**{"team/voices/bob.flac": WAV})
    team = settings.model_copy(update={"s3_voices_prefix": "team/voices/"})
    staged = voices.from_s3(storage, team, "bob", folder)
    assert storage.looked_up[0] == "team/voices/bob" and staged.sidecar.key == "team/voices/bob.txt"
    with pytest.raises(VoiceNotFound) as err:
        voices.from_s3(storage, team, "nobody", folder)
    assert err.value.message == "No voice named 'nobody' under 'team/voices/' in the bucket."


def test_a_name_needs_a_bucket(settings, folder):
    with pytest.raises(InvalidInput) as err:
        voices.stage(VoiceInput(voice_name="bob"), folder, settings, None)
    assert err.value.message == "voice_name needs S3 (set S3_BUCKET); send voice_url or voice_base64 instead."


@pytest.mark.parametrize("key, sidecar", [
    ("voices/alice.wav", "voices/alice.txt"),
    ("voices/alice", "voices/alice.txt"),
    ("voices/alice.FLAC", "voices/alice.txt"),
    ("voices/a.b.ogg", "voices/a.b.txt"),
    ("voices/v1.2", "voices/v1.2.txt"),  # not a voice's suffix: part of the name
    ("team/voices/my voice.mp3", "team/voices/my voice.txt"),
])
def test_sidecar_key_for(key, sidecar):
    assert voices.sidecar_key_for(key) == sidecar


# --- base64 --------------------------------------------------------------------------------------

def staged_base64(data: str, settings, folder):
    folder.mkdir(exist_ok=True)
    return voices.from_base64(data, settings, folder)


def test_base64_is_written_as_the_voice(settings, folder):
    staged = staged_base64(base64.b64encode(WAV).decode(), settings, folder)
    assert (staged.path, staged.source, staged.sidecar) == (folder / "voice", "base64", None)
    assert staged.path.read_bytes() == WAV


def test_a_data_url_prefix_is_dropped(settings, folder):
    staged = staged_base64("data:audio/wav;base64," + base64.b64encode(WAV).decode(), settings, folder)
    assert staged.path.read_bytes() == WAV


def test_whitespace_and_line_breaks_inside_base64_are_ignored(settings, folder):
    encoded = base64.encodebytes(WAV * 20).decode()  # 76 characters a line
    assert "\n" in encoded
    spaced = " ".join(encoded[i:i + 10] for i in range(0, len(encoded), 10))
    assert staged_base64(spaced, settings, folder).path.read_bytes() == WAV * 20


@pytest.mark.parametrize("data, message", [
    ("not base64!", "voice_base64 is not valid base64."),
    ("QUJ", "voice_base64 is not valid base64."),  # a length no base64 has
    ("data:audio/wav;base64,", "voice_base64 is empty."),
    ("\n \t", "voice_base64 is empty."),
])
def test_bad_base64_is_refused(settings, folder, data, message):
    with pytest.raises(InvalidInput) as err:
        staged_base64(data, settings, folder)
    assert err.value.message == message
    assert not (folder / "voice").exists()


def test_base64_over_the_limit_is_refused_before_decoding(settings, folder):
    small = settings.model_copy(update={"max_voice_bytes": 1024})
    assert staged_base64(base64.b64encode(b"\0" * 1000).decode(), small, folder).path.stat().st_size == 1000
    with pytest.raises(LimitExceeded) as err:
        staged_base64(base64.b64encode(b"\0" * 2000).decode(), small, folder)
    assert err.value.message == "voice_base64 decodes to over 1024 bytes."


# --- the S3 sidecar ------------------------------------------------------------------------------

def staged_by_name(storage, name, settings, tmp_path):
    return voices.stage(VoiceInput(voice_name=name), tmp_path / name, settings, storage)


def test_the_sidecar_writes_itself_with_the_recording_it_transcribes_and_reads_itself_back(settings, tmp_path):
    storage = in_bucket(**{"my voice_wav": WAV})
    sidecar = staged_by_name(storage, "my voice", settings, tmp_path).sidecar
    assert sidecar.where == "voices/my voice.txt" and sidecar.read() is None
    sidecar.write("Some words.")
    text, metadata = sidecar.read()
    assert text == "Some words."
    assert metadata == {voices.SIDECAR_VOICE_KEY: "voices/my%20voice.wav",
                        voices.SIDECAR_VOICE_ETAG: hashlib.md5(WAV).hexdigest()}
    assert sidecar.serves(metadata) and sidecar.may_replace(metadata)


def test_a_transcript_a_person_stored_serves_every_recording_of_its_stem_and_is_never_replaced(settings, tmp_path):
    storage = in_bucket(bob_wav=WAV, bob_flac=b"flac")
    storage.put("voices/bob.txt", b"Their words.")
    for name in ("bob.wav", "bob.flac"):
        sidecar = staged_by_name(storage, name, settings, tmp_path).sidecar
        text, metadata = sidecar.read()
        assert text == "Their words." and sidecar.serves(metadata) and not sidecar.may_replace(metadata)


def test_the_workers_transcript_serves_its_own_recording_only(settings, tmp_path):
    storage = in_bucket(bob_wav=WAV, bob_flac=b"flac")
    staged_by_name(storage, "bob.wav", settings, tmp_path).sidecar.write("Words of bob.wav.")
    _, metadata = storage.read_text("voices/bob.txt")

    sibling = staged_by_name(storage, "bob.flac", settings, tmp_path).sidecar
    assert not sibling.serves(metadata) and not sibling.may_replace(metadata)

    storage.put("voices/bob.wav", b"uploaded again")
    again = staged_by_name(storage, "bob", settings, tmp_path).sidecar
    assert again.voice_key == "voices/bob.wav"
    assert not again.serves(metadata) and again.may_replace(metadata)  # stale: transcribed again, then replaced


# --- the voice_url client's address checks -------------------------------------------------------

@pytest.mark.parametrize("address", [
    "10.0.0.7", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254", "0.0.0.0", "100.64.0.1",
    "224.0.0.1", "240.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fc00::1", "fec0::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.7",      # IPv4-mapped
    "2002:7f00:1::", "2002:a9fe:a9fe::",        # 6to4 of loopback, of the metadata service
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1",    # NAT64
    "::127.0.0.1", "::a00:7",                   # IPv4-compatible
])
def test_private_loopback_link_local_and_reserved_addresses_are_refused(address):
    assert url_fetch._refuse_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001::1",
                                     "2002:808:808::"])  # 6to4 of a public address
def test_public_addresses_pass(address):
    assert not url_fetch._refuse_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address, inner", [
    ("::ffff:10.0.0.7", "10.0.0.7"), ("2002:a9fe:a9fe::", "169.254.169.254"), ("64:ff9b::7f00:1", "127.0.0.1"),
    ("::a00:7", "10.0.0.7"), ("2606:4700:4700::1111", None), ("10.0.0.7", None),
])
def test_the_ipv4_address_an_ipv6_address_carries(address, inner):
    found = url_fetch._embedded_ipv4(ipaddress.ip_address(address))
    assert (None if found is None else str(found)) == inner


def answering(monkeypatch, *addresses):
    """The resolver answers every name with `addresses` (none: the name does not resolve)."""
    def getaddrinfo(host, port, type=0):
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]

    monkeypatch.setattr(url_fetch.socket, "getaddrinfo", getaddrinfo)


def test_the_first_public_address_is_the_one_connected_to(monkeypatch, settings):
    answering(monkeypatch, "93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    assert url_fetch._resolve("example.com", 443, settings, 5.0) == "93.184.216.34"


@pytest.mark.parametrize("addresses", [("93.184.216.34", "10.0.0.7"), ("fe80::1%eth0",), ("::ffff:127.0.0.1",)])
def test_one_private_address_among_the_answers_refuses_the_host(monkeypatch, settings, addresses):
    answering(monkeypatch, *addresses)
    with pytest.raises(VoiceFetchError) as err:
        url_fetch._resolve("example.com", 443, settings, 5.0)
    assert err.value.message == "voice_url points to a private, loopback, link-local or reserved address; refused."
    relaxed = settings.model_copy(update={"allow_private_urls": True})
    first = ipaddress.ip_address(url_fetch._resolve("example.com", 443, relaxed, 5.0))
    assert first == ipaddress.ip_address(addresses[0].split("%")[0])


def test_a_name_that_does_not_resolve(monkeypatch, settings):
    answering(monkeypatch)
    with pytest.raises(VoiceFetchError) as err:
        url_fetch._resolve("nowhere.test", 443, settings, 5.0)
    assert err.value.message == "voice_url host 'nowhere.test' could not be resolved."


@pytest.mark.parametrize("url, allow_http, message", [
    ("http://example.com/a.wav", False, "voice_url must be an https URL."),
    ("ftp://example.com/a.wav", True, "voice_url must be an https or http URL."),
    ("file:///etc/passwd", False, "voice_url must be an https URL."),
    ("https:///a.wav", False, "voice_url has no host."),
    ("https://user:secret@example.com/a.wav", False, "voice_url must not carry credentials."),
    ("https://example.com:99999/a.wav", False, "voice_url has an invalid port."),
])
def test_urls_refused_before_any_lookup(monkeypatch, settings, tmp_path, url, allow_http, message):
    monkeypatch.setattr(url_fetch.socket, "getaddrinfo", lambda *a, **k: pytest.fail("looked up"))
    with pytest.raises(InvalidInput) as err:
        url_fetch.fetch(url, tmp_path / "voice", settings.model_copy(update={"allow_http_urls": allow_http}))
    assert err.value.message == message
    assert not (tmp_path / "voice").exists()
