"""Under CI a skipped test fails unless marked optional: checked in a pytest of its own on three tiny tests."""

import os
import subprocess
import sys
from pathlib import Path

TESTS = '''
import pytest

def test_runs():
    pass

def test_needs_a_browser():
    pytest.skip("Chromium not found")

@pytest.mark.optional(reason="needs a GPU")
def test_needs_a_gpu():
    pytest.skip("no GPU")
'''


def run_pytest(directory: Path, ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    env["PYTHONPATH"] = str(Path(__file__).parent)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "ci_skips", "-p", "no:cacheprovider", "-q", "-rfs",
                           str(directory / "test_three.py")], capture_output=True, text=True, env=env, cwd=directory)


def test_a_skip_fails_under_ci_unless_marked_optional(tmp_path):
    (tmp_path / "test_three.py").write_text(TESTS)
    local = run_pytest(tmp_path, ci=False)
    assert local.returncode == 0 and "1 passed, 2 skipped" in local.stdout
    ci = run_pytest(tmp_path, ci=True)
    assert ci.returncode == 1 and "1 failed, 1 passed, 1 skipped" in ci.stdout
    assert "test_needs_a_browser - skipped under CI, which runs every check: Chromium not found" in ci.stdout.replace("\n", " ")
