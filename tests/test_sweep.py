"The sweep runner: finished runs are skipped, a failing run is recorded and the others go on."
import json
from pathlib import Path
from ssl_study.sweep import Run, LocalExecutor, sweep, collect, main

NB = Path(__file__).parent / 'fixtures' / 'tiny_paper.ipynb'


def _runs(counter, fail_x=2):
    return [Run('overlay', str(NB), 'smoke', dict(x=x, fail=x == fail_x, counter=str(counter)), f'x{x}') for x in (1, 2, 3)]


def test_sweep_skips_finished_and_survives_failure(outputs, tmp_path):
    counter = tmp_path / 'executions.txt'
    status = {s['name']: s['status'] for s in sweep(_runs(counter), LocalExecutor(2))}
    assert status == {'x1': 'done', 'x2': 'failed', 'x3': 'done'}
    folder = outputs / 'smoke' / 'overlay'
    assert json.loads((folder / 'x3' / 'metrics.json').read_text())['metrics'] == {'square': 9, 'x': -3}
    assert not (folder / 'x2' / 'metrics.json').exists()
    failed = json.loads((folder / 'x2' / 'failed.json').read_text())
    assert 'this run fails on purpose' in failed['log_tail'] and failed['returncode'] != 0
    assert sorted(counter.read_text().split()) == ['x1', 'x2', 'x3']

    # a second sweep executes only the failed run again
    status = {s['name']: s['status'] for s in sweep(_runs(counter), LocalExecutor(1))}
    assert status == {'x1': 'skipped', 'x2': 'failed', 'x3': 'skipped'}
    assert sorted(counter.read_text().split()) == ['x1', 'x2', 'x2', 'x3']

    # once fixed, it completes; results.csv holds one row per run
    status = {s['name']: s['status'] for s in sweep(_runs(counter, fail_x=None))}
    assert status['x2'] == 'done'
    df = collect('smoke')
    assert sorted(df.run) == ['x1', 'x2', 'x3'] and set(df.status) == {'done'}
    assert dict(zip(df.run, df.square)) == {'x1': 1, 'x2': 4, 'x3': 9}
    assert dict(zip(df.run, df.x)) == {'x1': -1, 'x2': -2, 'x3': -3}     # a metric named like a parameter wins
    assert (outputs / 'smoke' / 'results.csv').exists()


def test_cli_rejects_unknown_paper(capsys):
    import pytest
    with pytest.raises(SystemExit) as e: main(['sweep', 'no_such_paper'])
    assert e.value.code != 0 and 'no_such_paper' in capsys.readouterr().err
