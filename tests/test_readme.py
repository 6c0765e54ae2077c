"""The README's commands work as written: the blocks marked `<!-- tested: name -->` run, in
order, in one shell, in a folder laid out like the repository after `make run`."""

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, free_port, subprocess_env

pytestmark = pytest.mark.usefixtures("tiny_model")  # the README's commands run the worker on the session's models dir

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = dict(re.findall(r"<!-- tested: ([\w-]+) -->\n```(?:bash|python)\n(.*?)```", README, flags=re.S))


def test_the_tested_blocks_are_there():
    assert list(BLOCKS) == ["local-s3", "upload", "test-input", "serve", "client"]


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the README's commands use the virtual environment "
                                                          "that `make` creates (.venv); this interpreter is not one")
def test_the_local_commands_run_as_written(tmp_path):
    for entry in ROOT.iterdir():  # the repository, as a fresh clone after `make run` has it
        if entry.name not in (".git", ".venv", "output", "models"):
            (tmp_path / entry.name).symlink_to(entry)
    (tmp_path / ".venv").symlink_to(sys.prefix)
    s3_port, api_port = free_port(), free_port()

    def ported(text: str) -> str:  # the README's ports may be taken here
        return (text.replace("127.0.0.1:9000", f"127.0.0.1:{s3_port}").replace("-p 9000", f"-p {s3_port}")
                .replace("localhost:8000", f"localhost:{api_port}").replace("--rp_api_port 8000", f"--rp_api_port {api_port}"))

    python = lambda code: f".venv/bin/python - <<'PYTHON'\n{code}PYTHON\n"
    script = "\n".join([
        "set -euo pipefail",
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
        ported(BLOCKS["local-s3"]),
        python(ported(BLOCKS["upload"])),
        ported(BLOCKS["test-input"]),
        ported(BLOCKS["serve"]),
        python(ported(BLOCKS["client"])),
    ])
    env = subprocess_env(**{name: None for name in ("S3_BUCKET", "S3_ENDPOINT_URL", "S3_REGION", "OUTPUT_DIR",
                                                    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "F5_MODEL")})
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    logs = {name: (tmp_path / name).read_text()[-2000:] for name in ("api.log", "moto.log") if (tmp_path / name).exists()}
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:], logs)
    lines = result.stdout.splitlines()
    assert any(line.startswith("job done: ") and "output/local_test.wav" in line for line in lines), lines
    completed = [line for line in lines if line.startswith("COMPLETED ")]
    assert len(completed) == 2 and f"127.0.0.1:{s3_port}" in completed[0] and " chunks" in completed[1], lines
    assert (tmp_path / "output" / "local_test.wav").stat().st_size > 10_000
    assert os.path.exists(tmp_path / "alice.wav")


def test_every_command_in_a_shell_block_runs_in_the_project_s_environment():
    """A bare `python model_cache.py ...` fails outside the venv (no huggingface_hub there)."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)
    commands = [line.strip() for block in blocks for line in block.splitlines()]
    assert any(c.startswith(".venv/bin/python model_cache.py ") for c in commands)
    bare = [c for c in commands if re.match(r"(\w+=\S+\s+)*python3?\s", c)]
    assert bare == [], bare


def test_the_streaming_client_is_told_that_the_local_api_answers_stream_on_post_only():
    section = README[README.index("### Streaming"):README.index("## Deploying on RunPod")]
    assert "requests.get(f\"{url}/stream/{job_id}\"" in section  # RunPod's /stream is a GET
    assert "answers `/stream/<id>` on POST only" in section
