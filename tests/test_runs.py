"""ssl_study.runs: the parameter spec (NaN/inf, unknown names, types and ranges), the notebook side of the
parameters, metrics.json validity, atomic writes, start_run/finish and the run lock."""
import json, math, os, random, threading, time
import numpy as np, pytest, torch
from ssl_study.runs import (COMMON_SPEC, SCALES, Bool, Choice, Float, Int, ParamError, Str, atomic_write, check_cfg,
                            finish, is_complete, notebook_overrides, read_metrics, resolve_scale, save_metrics, start_run)
from conftest import papermill, FIXTURES

SPEC = {**COMMON_SPEC, 'alpha': Float(0, 0.5, hi_open=True), 'epochs': Int(0), 'lr': Float(0, lo_open=True),
        'mode': Choice('overlay', 'mask'), 'name': Str(optional=True)}
PRESETS = {s: dict(seed=0, num_workers=0, download=False, alpha=0.3, epochs=2, lr=0.1, mode='overlay', name=None) for s in SCALES}


# ---------------------------------------------------------------------------------------------------
# one parameter
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf, float('nan')])
def test_nan_and_inf_are_refused(value):
    for p in (Float(), Float(0, 1), Float(lo_open=True, optional=True)):
        with pytest.raises(ParamError, match='finite'): p.check('alpha', value)
    with pytest.raises(ParamError): Int().check('epochs', value)


@pytest.mark.parametrize('param,value,expected', [
    (Float(0, 0.5, hi_open=True), 0, 0.0), (Float(0, 0.5, hi_open=True), 0.49, 0.49), (Float(0, lo_open=True), 1e-9, 1e-9),
    (Int(0), 0, 0), (Int(1, 3), 3, 3), (Choice('a', 'b'), 'b', 'b'), (Bool(), False, False), (Str(), 'x', 'x'),
    (Str(optional=True), None, None), (Float(optional=True), None, None)])
def test_valid_values_pass(param, value, expected):
    out = param.check('v', value)
    assert out == expected and type(out) is type(expected)          # an int given for a float becomes a float


@pytest.mark.parametrize('param,value', [
    (Float(0, 0.5, hi_open=True), 0.5), (Float(0, 0.5), -0.01), (Float(0, lo_open=True), 0), (Float(), 'abc'),
    (Float(), True), (Float(), None), (Int(0), -1), (Int(0), 1.5), (Int(0), 2.0), (Int(), True), (Int(), '3'),
    (Choice('a', 'b'), 'c'), (Bool(), 'true'), (Str(), 3), (Str(), None)])
def test_invalid_values_are_refused(param, value):
    with pytest.raises(ParamError) as e: param.check('v', value)
    assert str(e.value).startswith('v ')                               # the message names the parameter


@pytest.mark.parametrize('param,value', [(Bool(), 1), (Bool(), 0.0), (Choice(18, 34, 50), 18.0), (Choice(1, 2), True)])
def test_choices_match_type_too(param, value):
    with pytest.raises(ParamError): param.check('v', value)


# ---------------------------------------------------------------------------------------------------
# a run's cfg
# ---------------------------------------------------------------------------------------------------

def test_check_cfg_unknown_names_list_the_valid_ones():
    with pytest.raises(ParamError) as e: check_cfg(SPEC, PRESETS, 'smoke', alpah=0.3)
    assert str(e.value) == ('unknown parameter(s) alpah; valid: alpha, download, epochs, lr, mode, name, num_workers, seed')


def test_check_cfg_values():
    scale, cfg = check_cfg(SPEC, PRESETS, 'quick', alpha=0, epochs=None, lr=0.5)
    assert scale == 'quick' and cfg == dict(PRESETS['quick'], alpha=0.0, lr=0.5) and type(cfg['alpha']) is float
    assert check_cfg(SPEC, PRESETS, 'smoke', alpha=0)[1] == check_cfg(SPEC, PRESETS, 'smoke', alpha=0.0)[1]
    assert check_cfg(SPEC, PRESETS, 'smoke', epochs=0)[1]['epochs'] == 0                     # 0 means 0
    for bad in (dict(alpha=math.nan), dict(lr=math.inf), dict(epochs=-1), dict(mode='blur'), dict(seed=1.5)):
        with pytest.raises(ParamError): check_cfg(SPEC, PRESETS, 'smoke', **bad)
    with pytest.raises(ParamError, match='scale'): check_cfg(SPEC, PRESETS, 'huge')


def test_check_cfg_refuses_presets_that_disagree_with_the_spec():
    with pytest.raises(ParamError, match='undeclared parameter.*extra'):
        check_cfg(SPEC, {'smoke': dict(PRESETS['smoke'], extra=1)}, 'smoke')
    with pytest.raises(ParamError, match='lr'):
        check_cfg(SPEC, {'smoke': {k: v for k, v in PRESETS['smoke'].items() if k != 'lr'}}, 'smoke')
    with pytest.raises(ParamError, match='alpha'):                      # preset values are checked too
        check_cfg(SPEC, {'smoke': dict(PRESETS['smoke'], alpha=0.7)}, 'smoke')


def test_resolve_scale(monkeypatch):
    monkeypatch.setenv('IN_TEST', '1'); assert resolve_scale() == 'smoke' and resolve_scale('paper') == 'paper'
    monkeypatch.delenv('IN_TEST'); assert resolve_scale() == 'quick'
    assert 'gpu' in SCALES


def test_notebook_overrides():
    before = {'SPEC', 'np'}
    ns = {'SPEC': 1, 'np': 2, 'alpha': 0.1, 'epochs': None, 'scale': 'smoke', 'output_name': None, '_x': 3}
    assert notebook_overrides(ns, SPEC, before) == dict(alpha=0.1, epochs=None)
    with pytest.raises(ParamError) as e: notebook_overrides({**ns, 'alpah': 0.2}, SPEC, before)
    assert 'alpah' in str(e.value) and 'valid: alpha' in str(e.value)


def test_papermill_refuses_an_unknown_name(tmp_path):
    out = tmp_path / 'outputs'
    r = papermill(FIXTURES / 'tiny_paper.ipynb', tmp_path / 'executed.ipynb', '-p', 'alpah', '1', '-p', 'scale', 'smoke',
                  env={'SSL_STUDY_OUTPUTS': str(out)})
    assert r.returncode != 0
    assert 'unknown parameter(s) alpah; valid: counter, download, fail, num_workers, seed, x' in r.stdout + r.stderr
    assert not out.exists()


def test_a_direct_papermill_run_records_the_papermill_command(tmp_path, monkeypatch):
    "Run directly (no sweep, so no SSL_STUDY_COMMAND), metrics.json names the papermill command, not the kernel's."
    monkeypatch.delenv('SSL_STUDY_COMMAND', raising=False)
    out = tmp_path / 'outputs'
    r = papermill(FIXTURES / 'tiny_paper.ipynb', tmp_path / 'executed.ipynb', '-p', 'scale', 'smoke', '-p', 'x', '3',
                  '-p', 'output_name', 'direct', env={'SSL_STUDY_OUTPUTS': str(out)})
    assert r.returncode == 0, r.stderr[-2000:]
    command = json.loads((out / 'smoke' / 'tiny' / 'direct' / 'metrics.json').read_text())['environment']['command']
    assert command.startswith('papermill ') and 'tiny_paper.ipynb' in command and '-p x 3' in command, command
    assert 'ipykernel' not in command


# ---------------------------------------------------------------------------------------------------
# files: atomic writes, metrics.json
# ---------------------------------------------------------------------------------------------------

def test_atomic_write(tmp_path):
    f = tmp_path / 'sub' / 'a.txt'
    assert atomic_write(f, 'one') == f and f.read_text() == 'one'
    atomic_write(f, b'\x00two')
    assert f.read_bytes() == b'\x00two' and os.listdir(f.parent) == ['a.txt']       # no temporary file left


@pytest.mark.parametrize('text,message', [
    ('{"paper": "x", "sca', 'not valid JSON'), ('', 'not valid JSON'), ('[1, 2]', 'missing key'),
    ('{"paper": "x", "scale": "smoke", "params": {}, "metrics": {}, "wall_seconds": 1}', 'missing key(s) environment')])
def test_corrupt_metrics_json(tmp_path, text, message):
    (tmp_path / 'metrics.json').write_text(text)
    assert not is_complete(tmp_path)
    with pytest.raises(ValueError) as e: read_metrics(tmp_path)
    assert str(tmp_path / 'metrics.json') in str(e.value) and message in str(e.value)


def test_metrics_json_complete(tmp_path):
    assert not is_complete(tmp_path) and not is_complete(tmp_path / 'missing')
    save_metrics(tmp_path, 'p', 'smoke', dict(a=1), dict(acc=0.5), time.time() - 2)
    rec = read_metrics(tmp_path)
    assert is_complete(tmp_path) and rec['params'] == dict(a=1) and rec['metrics'] == dict(acc=0.5) and rec['wall_seconds'] >= 2


# ---------------------------------------------------------------------------------------------------
# start_run / finish and the run lock
# ---------------------------------------------------------------------------------------------------

def test_start_run_and_finish(outputs):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    cfg = dict(seed=7, alpha=0.1)
    run = start_run('demo', 'smoke', cfg, 'first', device='cpu')
    assert run.folder == outputs / 'smoke' / 'demo' / 'first' and run.folder.is_dir() and run.device == torch.device('cpu')
    drawn = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(7); np.random.seed(7); random.seed(7)
    assert torch.equal(drawn[0], torch.rand(3)) and drawn[1] == np.random.rand() and drawn[2] == random.random()
    (run.folder / 'pretrain.ckpt').write_bytes(b'resume state')
    fig, ax = plt.subplots(); ax.plot([0, 1]); run.figs['curve'] = fig
    path = finish(run, dict(acc=0.25), histories={'pretrain': [dict(epoch=1, loss=2.0)]})
    assert path == run.folder / 'metrics.json'
    rec = read_metrics(run.folder)
    assert rec['paper'] == 'demo' and rec['scale'] == 'smoke' and rec['params'] == cfg and rec['metrics'] == dict(acc=0.25)
    assert json.loads((run.folder / 'history.json').read_text()) == {'pretrain': [dict(epoch=1, loss=2.0)]}
    assert (run.folder / 'curve.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not (run.folder / 'pretrain.ckpt').exists()
    plt.close(fig); assert run.lock is None          # finish released the lock


def test_finish_writes_metrics_last(outputs):
    class Broken:
        def savefig(self, *a, **k): raise OSError('disk full')
    run = start_run('demo', 'smoke', dict(seed=0), 'broken', device='cpu')
    with pytest.raises(OSError): finish(run, dict(acc=1.0), figs={'fig': Broken()})
    assert not (run.folder / 'metrics.json').exists() and not is_complete(run.folder)
    run.lock.close()


def _start_in_thread(name):
    out = []
    t = threading.Thread(target=lambda: out.append(start_run('demo', 'smoke', dict(seed=0), name, device='cpu')), daemon=True)
    t.start()
    return t, out


def test_identical_run_waits_for_the_lock(outputs, capsys):
    first = start_run('demo', 'smoke', dict(seed=0), 'twin', device='cpu')
    t, out = _start_in_thread('twin')
    t.join(1.0)
    assert t.is_alive() and not out                                   # waits while the first holds the folder
    assert 'being run by another process' in capsys.readouterr().out
    first.lock.close()                                               # the first one ends
    t.join(10)
    assert not t.is_alive() and out[0].folder == first.folder
    out[0].lock.close()
    other = start_run('demo', 'smoke', dict(seed=0), 'other', device='cpu')   # another folder: no wait
    other.lock.close()


def test_finish_releases_the_lock(outputs):
    run = start_run('demo', 'smoke', dict(seed=0), 'again', device='cpu')
    finish(run, dict(acc=1.0))                       # `run` is still referenced, as in a notebook
    t, out = _start_in_thread('again')
    t.join(3)
    assert out, 'start_run still waiting for a finished run'


# --- issue 18: -p NAME null, and a run name that would leave outputs/ ---

def test_null_sets_none_where_allowed_and_is_refused_elsewhere():
    from ssl_study.runs import NULL
    spec = dict(COMMON_SPEC, n_classes=Int(1, optional=True, help='first N classes (None: all)'), lr=Float(0, lo_open=True, help='lr'))
    presets = {s: dict(seed=0, num_workers=0, download=False, n_classes=4, lr=0.1) for s in SCALES}
    assert check_cfg(spec, presets, 'smoke', n_classes=NULL)[1]['n_classes'] is None       # was: the preset's 4
    assert check_cfg(spec, presets, 'smoke', n_classes=None)[1]['n_classes'] == 4          # not given: the preset
    with pytest.raises(ParamError, match='lr cannot be null'): check_cfg(spec, presets, 'smoke', lr=NULL)


def test_cli_null_reaches_the_paper_as_null():
    from ssl_study.sweep import _parse_p
    assert _parse_p([['n_classes', 'null'], ['x', '3']]) == dict(n_classes='null', x=3)


@pytest.mark.parametrize('name', ['../../../../../elsewhere/x', '/tmp/abs', '..', 'a/b', 'a\\b', ''])
def test_output_name_cannot_leave_outputs(tmp_path, monkeypatch, name):
    from ssl_study.runs import start_run
    monkeypatch.setenv('SSL_STUDY_OUTPUTS', str(tmp_path / 'outputs'))
    with pytest.raises(ParamError, match='plain run name'): start_run('demo', 'smoke', dict(seed=0), name, device='cpu')
    assert not any(tmp_path.rglob('*'))
