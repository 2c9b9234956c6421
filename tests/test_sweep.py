"""The sweep runner and the `ssl-study` command: parameters checked before anything runs, finished runs
skipped, failures recorded and printed, corrupt files named, identical runs never run twice at once.

Most tests replace papermill by tests/fixtures/fake_papermill.py (the `fake_runner` fixture: a second a
run); `test_cli_end_to_end` runs the fixture paper notebook through real papermill processes."""
import json, subprocess, sys, threading, time
import pandas as pd, pytest
import ssl_study.sweep as sw
from ssl_study.sweep import Run, LocalExecutor, collect, execute, main, plan, sweep
from ssl_study.runs import ParamError, save_metrics
from conftest import ROOT, FIXTURES

NB = FIXTURES / 'tiny_paper.ipynb'


def _run(name, **params):
    return Run('tiny', str(NB), 'smoke', params, name)


def _status(stats):
    return {s['name']: s['status'] for s in stats}


# ---------------------------------------------------------------------------------------------------
# one run: skip, failure, lock, corrupt metrics.json, a file in the way
# ---------------------------------------------------------------------------------------------------

def test_sweep_skips_finished_and_survives_failure(outputs, tmp_path, fake_runner, capsys):
    counter = tmp_path / 'executions.txt'
    runs = lambda fail_x: [_run(f'x{x}', x=x, fail=x == fail_x, counter=str(counter)) for x in (1, 2, 3)]
    assert _status(sweep(runs(2), LocalExecutor(2))) == {'x1': 'done', 'x2': 'failed', 'x3': 'done'}
    folder = outputs / 'smoke' / 'tiny'
    assert json.loads((folder / 'x3' / 'metrics.json').read_text())['metrics'] == {'square': 9, 'x': -3}
    assert not (folder / 'x2' / 'metrics.json').exists()
    failed = json.loads((folder / 'x2' / 'failed.json').read_text())
    assert failed['error'] == 'ValueError: this run fails on purpose\n  (second line)' and failed['returncode'] == 1
    assert 'run x2 failed:\n  ValueError: this run fails on purpose' in capsys.readouterr().err   # printed, not only filed
    assert _status(sweep(runs(None))) == {'x1': 'skipped', 'x2': 'done', 'x3': 'skipped'}
    assert sorted(counter.read_text().split()) == ['x1', 'x2', 'x2', 'x3']
    assert not (folder / 'x2' / 'failed.json').exists()


def test_identical_runs_at_once_run_once(outputs, tmp_path, fake_runner):
    counter = tmp_path / 'executions.txt'
    r = _run('same', x=2, sleep=1.5, counter=str(counter))
    out = []
    threads = [threading.Thread(target=lambda: out.append(execute(r))) for _ in range(2)]
    for t in threads: t.start(); time.sleep(0.2)
    for t in threads: t.join(30)
    assert sorted(s['status'] for s in out) == ['done', 'skipped']
    assert counter.read_text().split() == ['same']


def test_corrupt_metrics_is_named_and_redone(outputs, tmp_path, fake_runner, capsys):
    r = _run('x2', x=2)
    r.folder.mkdir(parents=True)
    (r.folder / 'metrics.json').write_text('{"paper": "tiny", "metr')       # a write cut short
    st = execute(r)
    assert st['status'] == 'done' and str(r.folder / 'metrics.json') in st['note']
    assert str(r.folder / 'metrics.json') in capsys.readouterr().err
    assert json.loads((r.folder / 'metrics.json').read_text())['metrics']['square'] == 4
    assert (r.folder / 'metrics.json.corrupt').read_text().startswith('{"paper": "tiny"')
    # valid JSON without the required keys is not a finished run either
    (r.folder / 'metrics.json').write_text(json.dumps(dict(paper='tiny', metrics={'square': 4})))
    st = execute(r)
    assert st['status'] == 'done' and 'missing key(s)' in st['note']


def test_notebook_without_metrics_is_a_failure(outputs, fake_runner):
    st = execute(_run('quiet', x=1, no_metrics=True))
    assert st['status'] == 'failed' and 'without a valid metrics.json' in st['error']


def test_a_file_where_the_run_folder_should_be(outputs, fake_runner, capsys):
    (outputs / 'smoke' / 'tiny').mkdir(parents=True)
    (outputs / 'smoke' / 'tiny' / 'x1').write_text('not a folder')
    stats = sweep([_run('x1', x=1), _run('x2', x=2)])
    assert _status(stats) == {'x1': 'failed', 'x2': 'done'}
    err = next(s['error'] for s in stats if s['name'] == 'x1')
    assert str(outputs / 'smoke' / 'tiny' / 'x1') in err and 'x1' in capsys.readouterr().err
    assert list(collect('smoke', ['tiny']).run) == ['x2']      # the file is no run folder


# ---------------------------------------------------------------------------------------------------
# collect: bad files named and skipped, results.csv merged across papers
# ---------------------------------------------------------------------------------------------------

def test_collect_names_bad_files_and_merges(outputs, tiny, capsys):
    t0 = time.time()
    folder = outputs / 'smoke' / 'tiny'
    save_metrics(folder / 'good', 'tiny', 'smoke', dict(x=2.0), dict(square=4.0), t0)
    save_metrics(folder / 'cut', 'tiny', 'smoke', dict(x=3.0), dict(square=9.0), t0)
    (folder / 'cut' / 'metrics.json').write_text((folder / 'cut' / 'metrics.json').read_text()[:40])
    (folder / 'nokeys').mkdir(); (folder / 'nokeys' / 'metrics.json').write_text('{"params": {}, "metrics": {}}')
    (folder / 'badfail').mkdir(); (folder / 'badfail' / 'failed.json').write_text('{"name": ')
    (folder / 'fail').mkdir(); (folder / 'fail' / 'failed.json').write_text(json.dumps(dict(params=dict(x=5.0), error='ValueError: no')))
    (folder / 'stray.txt').write_text('a file among the run folders')
    pd.DataFrame([dict(paper='pyramid', run='p1', status='done', miou=0.5),
                  dict(paper='tiny', run='old', status='done', square=1.0)]).to_csv(outputs / 'smoke' / 'results.csv', index=False)
    df = collect('smoke', ['tiny'])
    assert sorted(df.run) == ['fail', 'good'] and dict(zip(df.run, df.status)) == {'good': 'done', 'fail': 'failed'}
    assert df.set_index('run').loc['fail', 'error'] == 'ValueError: no'
    bad = df.attrs['bad_files']
    assert len(bad) == 3 and all(any(str(folder / n) in b for b in bad) for n in ('cut', 'nokeys', 'badfail'))
    err = capsys.readouterr().err
    assert str(folder / 'cut' / 'metrics.json') in err and 'missing key(s)' in err
    csv = pd.read_csv(outputs / 'smoke' / 'results.csv')
    assert sorted(zip(csv.paper, csv.run)) == [('pyramid', 'p1'), ('tiny', 'fail'), ('tiny', 'good')]   # 'old' replaced


# ---------------------------------------------------------------------------------------------------
# plan and the command line: every parameter checked before anything runs
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('args,message', [
    (['-p', 'xx', '1'], 'unknown parameter(s) xx; valid: counter, download, fail, num_workers, seed, x'),
    (['-p', 'x', 'nan'], 'finite'), (['-p', 'x', 'NaN'], 'finite'), (['-p', 'x', 'Infinity'], 'finite'),
    (['-p', 'x', 'inf'], 'finite'), (['-p', 'x', '11'], 'x must be in [-10, 10]'), (['-p', 'fail', 'yes'], 'fail must be one of'),
    (['-p', 'x', '1', '-p', 'x', '2'], 'given twice'), (['-p', 'scale', 'paper'], 'use --scale'),
])
def test_cli_refuses_bad_parameters_before_anything_runs(outputs, tiny, fake_runner, capsys, args, message):
    assert main(['sweep', 'tiny', '--scale', 'smoke', *args]) == 2
    assert message in capsys.readouterr().err
    assert not outputs.exists()       # no run folder, nothing written


def test_run_names_come_from_the_validated_cfg(outputs, tiny):
    assert [r.name for r in plan('tiny', 'smoke')] == ['x1.0', 'x2.0']
    r0, = plan('tiny', 'smoke', [dict(x=0)])
    assert r0.name == plan('tiny', 'smoke', [dict(x=0.0)])[0].name == 'x0.0'
    assert r0.params == dict(x=0.0) and isinstance(r0.params['x'], float)   # the notebook gets the checked value
    assert len({r.name for r in plan('tiny', 'smoke', extra=dict(seed=1))}) == 2
    assert plan('tiny', 'smoke', extra=dict(seed=1))[0].name != 'x1.0'        # a non-default setting: its own folder
    assert [r.name for r in plan('tiny', 'smoke', extra=dict(x=3))] == ['x3.0']   # the grid collapses to one run


def test_overlay_cli_refuses_misspelt_name(outputs, capsys):
    import ssl_study.papers.overlay as ov
    if not hasattr(ov, 'SPEC'): pytest.skip('overlay has no SPEC yet (the sweep falls back to unchecked parameters)')
    assert main(['sweep', 'overlay', '--scale', 'smoke', '-p', 'alpah', '0.3']) == 2
    err = capsys.readouterr().err
    assert 'alpah' in err and 'alpha' in err.split('valid:')[1]
    assert not outputs.exists()
    from ssl_study.datasets import have_dataset
    if have_dataset('tiny_imagenet'):
        assert plan('overlay', 'smoke', [dict(alpha=0)])[0].name == plan('overlay', 'smoke', [dict(alpha=0.0)])[0].name


def test_cli_rejects_unknown_paper_and_bad_jobs(outputs, tiny, fake_runner, capsys):
    with pytest.raises(SystemExit) as e: main(['sweep', 'no_such_paper'])
    assert e.value.code != 0 and 'no_such_paper' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: main(['sweep', 'tiny', '--jobs', '0'])
    assert e.value.code != 0 and '--jobs' in capsys.readouterr().err and not outputs.exists()


def test_in_test_selects_smoke(outputs, tiny, fake_runner, monkeypatch):
    monkeypatch.setenv('IN_TEST', '1')
    assert main(['notebook', 'tiny', '-p', 'x', '3']) == 0
    assert (outputs / 'smoke' / 'tiny' / 'x3.0' / 'metrics.json').exists()
    monkeypatch.delenv('IN_TEST')
    assert main(['notebook', 'tiny', '-p', 'x', '3']) == 0
    assert (outputs / 'quick' / 'tiny' / 'x3.0' / 'metrics.json').exists()


def test_papers_not_written_yet_are_skipped(outputs, tiny, fake_runner, monkeypatch, capsys):
    assert {'pyramid', 'simclr', 'simsiam', 'selfie', 'overlay'} <= set(sw.PAPERS)
    monkeypatch.setattr(sw, 'PAPERS', {'ghost': 'ssl_study.ghost_paper', 'tiny': 'tiny_paper'})
    assert sw.available_papers() == ['tiny']
    assert main(['list']) == 0
    assert 'ghost: not written yet' in capsys.readouterr().out
    assert main(['run', '--scale', 'smoke']) == 0          # default: the papers that exist
    assert 'not written yet, skipped: ghost' in capsys.readouterr().out
    assert sorted(p.name for p in (outputs / 'smoke' / 'tiny').iterdir()) == ['tables.md', 'x1.0', 'x2.0']
    assert main(['run', '--scale', 'smoke', '--papers', 'ghost']) == 2
    assert 'not written yet' in capsys.readouterr().err


def test_failed_only_paper_shows_the_runs_error_not_the_reports(outputs, tiny, fake_runner, capsys):
    assert main(['sweep', 'tiny', '--scale', 'smoke', '-p', 'fail', 'true']) == 1
    err = capsys.readouterr().err
    assert 'ValueError: this run fails on purpose' in err and 'no finished run' in err
    assert 'KeyError' not in err and not (outputs / 'smoke' / 'tiny' / 'tables.md').exists()


def test_python_m_sweep():
    r = subprocess.run([sys.executable, '-m', 'ssl_study.sweep', '--help'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and 'usage: ssl-study' in r.stdout and 'collect' in r.stdout


# ---------------------------------------------------------------------------------------------------
# end to end: the fixture paper notebook through real papermill processes (3 executions)
# ---------------------------------------------------------------------------------------------------

def test_cli_end_to_end(outputs, tiny, tmp_path, capsys):
    counter = tmp_path / 'executions.txt'
    base = ['sweep', 'tiny', '--scale', 'smoke', '--jobs', '2', '-p', 'counter', str(counter)]
    assert main(base) == 0
    folder = outputs / 'smoke' / 'tiny'
    rec = json.loads((folder / 'x2.0' / 'metrics.json').read_text())
    assert rec['metrics'] == {'square': 4.0, 'x': -2.0} and rec['params']['x'] == 2.0 and rec['scale'] == 'smoke'
    assert (folder / 'x1.0' / 'notebook.ipynb').exists() and (folder / 'tables.md').read_text() == 'x1.0: 1.0\nx2.0: 4.0\n'
    capsys.readouterr()
    assert main([*base, '-p', 'x', '3', '-p', 'fail', 'true']) == 1
    err = capsys.readouterr().err
    assert 'x3.0 failed' in err and 'ValueError: this run fails on purpose' in err
    assert json.loads((folder / 'x3.0' / 'failed.json').read_text())['error'].endswith('ValueError: this run fails on purpose')
    assert main(base) == 0                                    # both finished: skipped
    assert sorted(counter.read_text().split()) == ['x1.0', 'x2.0', 'x3.0']
    df = pd.read_csv(outputs / 'smoke' / 'results.csv')
    assert dict(zip(df.run, df.status)) == {'x1.0': 'done', 'x2.0': 'done', 'x3.0': 'failed'}
    assert dict(zip(df.run[df.status == 'done'], df.x[df.status == 'done'])) == {'x1.0': -1.0, 'x2.0': -2.0}  # metric wins


# --- campaigns (--hours), verdicts from declared claims, stale runs, the README left alone by tests ---

def test_campaign_runs_then_skips_and_judges_declared_claims(outputs, tiny, fake_runner, capsys, monkeypatch):
    from ssl_study.claims import Claim
    monkeypatch.setattr(tiny, 'CLAIMS', [Claim('two-beats-one', 'x = 2 squares higher than x = 1', dict(run='x2.0'), dict(run='x1.0'),
                                               'square', paper=dict(a=4, b=1), effect=3.0, primary=True)], raising=False)
    readme = (ROOT / 'README.md').read_text()
    assert main(['run', '--scale', 'cpu', '--papers', 'tiny', '--hours', '1']) == 0
    out = capsys.readouterr().out
    assert 'campaign: 2 runs, 0 already complete, 2 to run' in out and 'campaign: run 2/2' in out
    md = (outputs / 'cpu' / 'tiny' / 'verdicts.md').read_text()
    assert '**primary** `two-beats-one`' in md and 'inconclusive' in md          # one seed per arm: no interval
    assert (outputs / 'cpu' / 'tiny' / 'summary.png').stat().st_size > 1000
    assert (ROOT / 'README.md').read_text() == readme                           # a test's outputs never reach the README
    assert main(['run', '--scale', 'cpu', '--papers', 'tiny', '--hours', '1']) == 0
    assert 'campaign: 2 runs, 2 already complete, 0 to run' in capsys.readouterr().out


def test_campaign_stops_before_a_run_that_does_not_fit(outputs, tiny, fake_runner, capsys, monkeypatch):
    monkeypatch.setattr(tiny, 'RUN_MINUTES', {'cpu': 90}, raising=False)        # each run "takes" 90 min; 1 h given
    assert main(['run', '--scale', 'cpu', '--papers', 'tiny', '--hours', '1']) == 0
    out = capsys.readouterr().out
    assert 'stopping before run 1/2' in out and not list((outputs / 'cpu').rglob('metrics.json'))


def test_campaign_refuses_slurm(outputs, tiny, fake_runner, capsys):
    assert main(['run', '--scale', 'cpu', '--papers', 'tiny', '--hours', '1', '--executor', 'slurm', '--timeout', '1h']) == 2


def test_runs_of_another_method_version_are_flagged(outputs, tiny, fake_runner, capsys, monkeypatch):
    from ssl_study.claims import Claim
    monkeypatch.setattr(tiny, 'CLAIMS', [Claim('c', 's', dict(run='x2.0'), dict(run='x1.0'), 'square', primary=True)], raising=False)
    monkeypatch.setattr('ssl_study.evidence.code_version', lambda paper: 'today')
    assert main(['sweep', 'tiny', '--scale', 'cpu']) == 0                        # fake runs record no code_version
    md = (outputs / 'cpu' / 'tiny' / 'verdicts.md').read_text()
    assert '2 of 2 runs were made by another version' in md and 'Rerun them' in md


# --- issue 18: messages ---

def test_a_negative_or_infinite_value_is_a_value(outputs, tiny, capsys):
    assert main(['sweep', 'tiny', '--scale', 'smoke', '-p', 'x', '-inf']) == 2           # was: "expected 2 arguments"
    assert 'x must be a finite number' in capsys.readouterr().err
    assert sw._parse_p([['x', ' -3']]) == dict(x=-3)


def test_a_duplicate_value_is_shown_as_given(outputs, tiny, capsys):
    assert main(['sweep', 'tiny', '--scale', 'smoke', '-p', 'x', '0.3', '-p', 'x', '0.2']) == 2
    assert '-p x is given twice (0.3 and 0.2)' in capsys.readouterr().err


def test_collect_on_empty_outputs_claims_nothing(outputs, capsys):
    assert main(['collect', '--scale', 'smoke']) == 0
    out = capsys.readouterr().out
    assert 'nothing written' in out and not (outputs / 'smoke' / 'results.csv').exists()


def test_ctrl_c_records_the_reason_and_exits_130(outputs, tiny, monkeypatch, capsys):
    import ssl_study.jobs as jobs
    def interrupted(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(jobs.subprocess, 'run', interrupted)
    assert main(['sweep', 'tiny', '--scale', 'smoke']) == 130
    err = capsys.readouterr().err
    assert 'interrupted (Ctrl-C)' in err and 'Traceback' not in err
    failed = list((outputs / 'smoke' / 'tiny').rglob('failed.json'))
    assert failed and 'interrupted (Ctrl-C)' in json.loads(failed[0].read_text())['error']


def test_list_says_the_scale_of_its_runs_and_keeps_notes_apart(monkeypatch, capsys):
    "`ssl-study list`: counts per scale on one line, the quick grid under its name, what a grid prints after both."
    import ssl_study.papers.simsiam as ss
    monkeypatch.setattr(ss, '_noted', set())
    monkeypatch.setattr(ss, 'grid', lambda scale, _g=ss.grid: print('grid: a note from the grid') or _g(scale))
    assert main(['list']) == 0
    out = capsys.readouterr().out
    block = out[out.index('simsiam:'):out.index('selfie:')]
    head, notes = block.split('  notes (runs the grids leave out here):')
    assert 'grid:' not in head and 'grid: a note from the grid' in notes and notes.count('a note from the grid') == 1
    n_quick = len(ss.grid('quick'))
    assert f'  runs per scale: smoke {len(ss.grid("smoke"))}, quick {n_quick}' in head
    assert f'  the quick grid ({n_quick} runs;' in head
