"""Sweeps through submitit (`--executor slurm`) without a cluster.

submitit's own executors stand in for SLURM: `cluster='local'` starts each job as a process on this machine
(the job is really pickled, unpickled and run by `python -m submitit.core._submit`, as on a compute node) and
`cluster='debug'` runs it in this process. The SLURM parameters are checked on submitit's SLURM executor itself,
with stand-ins for `srun` and `sbatch` on the PATH: the sbatch script it would submit is read back."""
import functools, json, os, signal, stat, sys
from pathlib import Path
import pandas as pd, pytest

submitit = pytest.importorskip('submitit')
import ssl_study.sweep as sw
import ssl_study.cluster as cl
from ssl_study.cluster import SlurmExecutor
from ssl_study.sweep import Run, collect, execute, main, plan, sweep

HERE = Path(__file__).resolve().parent


def _status(stats):
    return {s['name']: s['status'] for s in stats}


def _slurm(folder):
    return json.loads((folder / 'slurm.json').read_text())


# ---------------------------------------------------------------------------------------------------
# end to end: real submitit jobs (pickled, run in their own process) running real papermill
# ---------------------------------------------------------------------------------------------------

def test_submitit_local_sweep_end_to_end(outputs, tiny, tmp_path):
    counter = str(tmp_path / 'executions.txt')
    ex = SlurmExecutor(outputs / 'smoke' / 'slurm', timeout_min=10, cluster='local')
    first = plan('tiny', 'smoke', [dict(x=1.0), dict(x=3.0, fail=True)], extra=dict(counter=counter))
    assert _status(sweep(first, ex, timeout=300)) == {'x1.0': 'done', 'x3.0': 'failed'}
    folder = outputs / 'smoke' / 'tiny'
    assert json.loads((folder / 'x1.0' / 'metrics.json').read_text())['metrics'] == {'square': 1.0, 'x': -1.0}
    assert (folder / 'x1.0' / 'notebook.ipynb').exists() and (folder / 'x1.0' / 'log.txt').exists()   # papermill's
    failed = json.loads((folder / 'x3.0' / 'failed.json').read_text())
    assert failed['error'].endswith('ValueError: this run fails on purpose') and failed['returncode'] == 1
    jobs = {n: _slurm(folder / n) for n in ('x1.0', 'x3.0')}
    assert jobs['x1.0']['job_id'] != jobs['x3.0']['job_id'] and jobs['x1.0']['cluster'] == 'local'
    for rec in jobs.values():                      # submitit's own files, named in the run folder
        assert Path(rec['stdout']).exists() and Path(rec['stderr']).exists()
        assert Path(rec['submitit_folder']).parent == outputs / 'smoke' / 'slurm'
    log = Path(jobs['x1.0']['stdout']).read_text()                                        # submitit really ran it
    assert 'Loading pickle' in log and 'Job completed successfully' in log
    # the same sweep again, with the failing run mended: the finished run gets no job, the failed one runs again
    again = plan('tiny', 'smoke', [dict(x=1.0), dict(x=3.0)], extra=dict(counter=counter))
    assert [r.folder for r in again] == [r.folder for r in first]
    assert _status(sweep(again, ex, timeout=300)) == {'x1.0': 'skipped', 'x3.0': 'done'}
    assert _slurm(folder / 'x1.0') == jobs['x1.0'] and _slurm(folder / 'x3.0')['job_id'] != jobs['x3.0']['job_id']
    assert not (folder / 'x3.0' / 'failed.json').exists()
    assert sorted(Path(counter).read_text().split()) == ['x1.0', 'x3.0', 'x3.0']
    df = collect('smoke', ['tiny'])
    assert dict(zip(df.run, df.square)) == {'x1.0': 1.0, 'x3.0': 9.0} and set(df.status) == {'done'}


def _killed(run):
    "A job that dies the way SLURM ends one at its time limit or out of memory: killed, no result."
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_job_is_a_failed_run(outputs, monkeypatch):
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [str(HERE), os.environ.get('PYTHONPATH')])))
    monkeypatch.setattr(submitit.core.core.Job, '_results_timeout_s', 0)      # as submitit's own tests do
    run = Run('tiny', 'tests/fixtures/tiny_paper.ipynb', 'smoke', dict(x=1.0), 'killed')
    ex = SlurmExecutor(outputs / 'smoke' / 'slurm', timeout_min=10, cluster='local')
    st, = ex.map(_killed, [run])
    assert st['status'] == 'failed'
    job_id = _slurm(run.folder)['job_id']
    rec = json.loads((run.folder / 'failed.json').read_text())
    assert rec['error'].startswith(f'job {job_id} ended without a result: ') and 'has not produced any output' in rec['error']
    assert rec['job_id'] == job_id and rec['params'] == dict(x=1.0)
    df = collect('smoke', ['tiny'])
    assert list(zip(df.run, df.status)) == [('killed', 'failed')]


# ---------------------------------------------------------------------------------------------------
# the command line: --executor slurm, run in this process by submitit's debug executor
# ---------------------------------------------------------------------------------------------------

@pytest.fixture
def debug_cluster(monkeypatch):
    "Make `--executor slurm` use submitit's in-process debug executor; returns the keyword arguments it got."
    seen = {}
    def make(folder, **kw):
        seen.update(kw, folder=folder)
        return SlurmExecutor(folder, **{**kw, 'cluster': 'debug'})
    monkeypatch.setattr(cl, 'SlurmExecutor', make)
    monkeypatch.setattr('ssl_study.sweep.shutil.which', lambda name, *a, **k: f'/fake/bin/{name}')   # as on a login node
    return seen


def test_cli_executor_slurm(outputs, tiny, fake_runner, debug_cluster, tmp_path, capsys):
    counter = tmp_path / 'executions.txt'
    args = ['sweep', 'tiny', '--scale', 'smoke', '--executor', 'slurm', '--timeout', '7m', '--partition', 'gpu',
            '--gpus-per-node', '1', '--mem', '8', '--jobs', '4', '--slurm-extra', 'qos=low', '-p', 'counter', str(counter)]
    assert main(args) == 0
    assert debug_cluster == dict(folder=outputs / 'smoke' / 'slurm', timeout_min=7 + 5, max_parallel=4, partition='gpu',
                                 account=None, gpus_per_node=1, mem_gb=8.0, extra={'qos': 'low'})
    folder = outputs / 'smoke' / 'tiny'
    assert {d.name for d in folder.iterdir() if d.is_dir()} == {'x1.0', 'x2.0'}
    assert all(_slurm(folder / n)['cluster'] == 'debug' for n in ('x1.0', 'x2.0'))
    assert (folder / 'tables.md').read_text() == 'x1.0: 1.0\nx2.0: 4.0\n'          # the report, as locally
    assert main(args) == 0 and 'skipped (already complete): 2' in capsys.readouterr().out
    assert main([*args, '-p', 'x', '5', '-p', 'fail', 'true']) == 1
    assert 'ValueError: this run fails on purpose' in capsys.readouterr().err
    assert json.loads((folder / 'x5.0' / 'failed.json').read_text())['error'].startswith('ValueError')
    assert sorted(counter.read_text().split()) == ['x1.0', 'x2.0', 'x5.0']
    df = pd.read_csv(outputs / 'smoke' / 'results.csv')
    assert dict(zip(df.run, df.status)) == {'x1.0': 'done', 'x2.0': 'done', 'x5.0': 'failed'}


@pytest.mark.parametrize('args,message', [
    (['--partition', 'gpu'], '--partition: only with --executor slurm'),
    (['--mem', '8', '--slurm-extra', 'qos=high'], '--mem, --slurm-extra: only with --executor slurm'),
    (['--executor', 'slurm'], '--executor slurm needs --timeout'),
    (['--executor', 'slurm', '--timeout', '1h', '--slurm-extra', 'time=60'], '--slurm-extra time: use --timeout'),
    (['--executor', 'slurm', '--timeout', '1h', '--slurm-extra', 'qos=a', 'qos=b'], 'given twice'),
])
def test_cli_refuses_bad_cluster_options(outputs, tiny, fake_runner, capsys, args, message):
    assert main(['sweep', 'tiny', '--scale', 'smoke', *args]) == 2
    assert message in capsys.readouterr().err and not outputs.exists()


def test_cli_says_when_there_is_no_slurm(outputs, tiny, fake_runner, capsys, monkeypatch):
    "submitit installed, no SLURM: one line that says so and how to run here, before any work (was a 22-line traceback)."
    monkeypatch.setattr('ssl_study.sweep.shutil.which', lambda name, *a, **k: None)
    assert main(['sweep', 'tiny', '--scale', 'smoke', '--executor', 'slurm', '--timeout', '1h']) == 2
    err = capsys.readouterr().err
    assert 'no SLURM on this machine' in err and 'drop --executor slurm' in err and 'Traceback' not in err
    assert not outputs.exists()


def test_cli_refuses_bad_durations(outputs, tiny, capsys):
    for bad in ('0', '2d', 'nan', 'soon'):
        with pytest.raises(SystemExit): main(['sweep', 'tiny', '--timeout', bad])
        assert '--timeout' in capsys.readouterr().err
    assert not outputs.exists()


def test_missing_submitit_says_how_to_install(outputs, tiny, fake_runner, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'submitit', None)          # `import submitit` raises ImportError
    monkeypatch.setattr('ssl_study.sweep.shutil.which', lambda name, *a, **k: f'/fake/bin/{name}')   # on a login node
    assert main(['sweep', 'tiny', '--scale', 'smoke', '--executor', 'slurm', '--timeout', '1h']) == 2
    assert "pip install -e '.[cluster]'" in capsys.readouterr().err and not outputs.exists()


# ---------------------------------------------------------------------------------------------------
# the SLURM parameters a user passes, on submitit's SLURM executor (no cluster: srun and sbatch stand-ins)
# ---------------------------------------------------------------------------------------------------

@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    "`srun` and `sbatch` stand-ins on the PATH; sbatch keeps a copy of each script it is given. Returns the copies' folder."
    bin_, scripts = tmp_path / 'bin', tmp_path / 'sbatch_scripts'
    bin_.mkdir(); scripts.mkdir()
    (bin_ / 'srun').write_text('#!/bin/sh\nexit 0\n')
    (bin_ / 'sbatch').write_text(f'#!/bin/sh\ncp "$1" {scripts}/\necho "Submitted batch job 4242"\n')
    for f in bin_.iterdir(): f.chmod(f.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', f"{bin_}{os.pathsep}{os.environ['PATH']}")
    return scripts


def test_slurm_parameters_reach_the_executor(outputs, tiny, fake_slurm):
    a = sw._parser().parse_args(['sweep', 'tiny', '--executor', 'slurm', '--partition', 'gpu', '--account', 'proj',
                                 '--gpus-per-node', '2', '--mem', '32', '--timeout', '1h', '--jobs', '3', '--slurm-extra',
                                 'qos=high', 'constraint=a100', 'exclusive', 'mail_user=me@lab.org'])
    ex = sw._executor(a, 'smoke')
    assert ex.executor.cluster == 'slurm'
    params = ex.executor._executor.parameters                      # what submitit's SlurmExecutor will write
    assert params == dict(job_name='ssl-study', time=60 + 5, mem='32GB', gpus_per_node=2, partition='gpu', account='proj',
                          array_parallelism=3, additional_parameters={'qos': 'high', 'constraint': 'a100',
                                                                      'exclusive': True, 'mail-user': 'me@lab.org'})
    runs = plan('tiny', 'smoke')
    jobs = ex.submit(functools.partial(execute, timeout=3600), runs)   # sbatch (the stand-in) is called once: a job array
    script, = fake_slurm.iterdir()
    lines = set(script.read_text().splitlines())
    assert {'#SBATCH --partition=gpu', '#SBATCH --account=proj', '#SBATCH --gpus-per-node=2', '#SBATCH --mem=32GB',
            '#SBATCH --time=65', '#SBATCH --array=0-1%2', '#SBATCH --qos=high', '#SBATCH --constraint=a100',
            '#SBATCH --exclusive', '#SBATCH --mail-user=me@lab.org', '#SBATCH --job-name=ssl-study'} <= lines
    assert [j.job_id for j in jobs] == ['4242_0', '4242_1']
    for run, i in zip(runs, (0, 1)):
        rec = _slurm(run.folder)
        assert rec['job_id'] == f'4242_{i}' and rec['cluster'] == 'slurm'
        assert rec['stdout'] == str(outputs / 'smoke' / 'slurm' / f'4242_{i}' / f'4242_{i}_0_log.out')
        assert (outputs / 'smoke' / 'slurm' / f'4242_{i}' / f'4242_{i}_submitted.pkl').exists()   # the pickled job
