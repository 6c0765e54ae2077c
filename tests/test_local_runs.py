"""What a person running the worker at a terminal sees and is left with."""

import subprocess

import pytest
from conftest import GRAMMAR_CACHE, ROOT, run_py


@pytest.mark.usefixtures("tiny_model")
def test_the_normalisation_library_s_log_lines_are_not_printed_at_all_or_twice():
    """WeTextProcessing logs each load at INFO through a handler of its own (and through the root
    logger once more): a worker's terminal shows our one line per grammar instead."""
    script = ("import logging, text_normalization as t\n"
              "logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')\n"
              f"t.Grammars({str(GRAMMAR_CACHE)!r}, allow_build=False).get('en')\n")
    result = run_py(["-c", script])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "found existing fst" not in result.stderr and "WETEXT" not in result.stderr
    assert result.stderr.count("loaded the en text normalisation grammar") == 1


def test_what_the_readme_s_local_commands_leave_behind_is_ignored_by_git():
    leftovers = ["alice.wav", "api.log", "moto.log", "output/local_test.wav", "models/f5-tts/tiny/vocab.txt"]
    ignored = subprocess.run(["git", "check-ignore", *leftovers], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == leftovers
