import os, shutil, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    "Send results and the encoder cache to a temporary folder."
    out = tmp_path / 'outputs'
    monkeypatch.setenv('SSL_STUDY_OUTPUTS', str(out))
    monkeypatch.setenv('SSL_STUDY_CACHE', str(out / 'cache'))
    return out


def papermill(*args, env=None, timeout=300):
    "Run papermill from the project root; returns the CompletedProcess."
    import subprocess
    e = {**os.environ, **(env or {})}
    e.pop('IN_TEST', None)
    return subprocess.run([sys.executable, '-m', 'papermill', *map(str, args)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)
