import json, os, shutil, sys
from pathlib import Path
import pytest

# One CPU thread a process (here and in the papermill kernels, torchrun workers and submitit jobs the tests start):
# the tests' tensors are tiny, and two OpenMP threads on a 2-core machine shared with other work spin against each
# other (test_simsiam's collapse test: 2.6 s with one thread, 158 s with two while a training run used a core).
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / 'fixtures'


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    "Send results and the encoder cache to a temporary folder."
    out = tmp_path / 'outputs'
    monkeypatch.setenv('SSL_STUDY_OUTPUTS', str(out))
    monkeypatch.setenv('SSL_STUDY_CACHE', str(out / 'cache'))
    return out


@pytest.fixture
def tiny(monkeypatch):
    "Register the fixture paper `tiny` (tests/fixtures/tiny_paper.py and .ipynb) with the sweep runner."
    import ssl_study.sweep as sw
    monkeypatch.syspath_prepend(str(FIXTURES))
    monkeypatch.setitem(sw.PAPERS, 'tiny', 'tiny_paper')
    import tiny_paper
    return tiny_paper


@pytest.fixture
def fake_runner(monkeypatch):
    "Run each sweep run with tests/fixtures/fake_papermill.py (a second) instead of papermill and a kernel."
    import ssl_study.jobs as jobs
    def command(run):
        params = {**run.params, 'scale': run.scale, 'output_name': run.name}
        return [sys.executable, str(FIXTURES / 'fake_papermill.py'), json.dumps(params), str(run.folder)]
    monkeypatch.setattr(jobs, 'papermill_command', command)
    return command


def papermill(*args, env=None, timeout=300):
    "Run papermill from the project root; returns the CompletedProcess."
    import subprocess
    e = {**os.environ, **(env or {})}
    e.pop('IN_TEST', None)
    return subprocess.run([sys.executable, '-m', 'papermill', *map(str, args)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)
