"The overlay paper: corruption formulas, the autoencoder, the encoder cache, resume, and bad input."
import json, os
import pytest, torch
from torch.utils.data import TensorDataset
import ssl_study.overlay as ov
from ssl_study.models import ResNetAutoencoder
from ssl_study.runs import ParamError
from conftest import papermill, ROOT


def test_overlay_matches_formula_and_never_pairs_self():
    x = torch.rand(7, 3, 5, 5)
    for seed in range(20):
        j = ov.partner_indices(7, torch.Generator().manual_seed(seed))
        xh = ov.overlay(x, 0.4, torch.Generator().manual_seed(seed))
        for i in range(7):
            assert j[i] != i
            expected = [[[0.4 * x[j[i], c, h, w].item() + 0.6 * x[i, c, h, w].item() for w in range(5)] for h in range(5)] for c in range(3)]
            assert torch.allclose(xh[i], torch.tensor(expected), atol=1e-6)
    assert (ov.partner_indices(2) == torch.tensor([1, 0])).all()      # two images can only swap
    with pytest.raises(ValueError): ov.partner_indices(1)


@pytest.mark.parametrize('alpha', [0.5, 0.7, -0.01, 'abc', None])
def test_overlay_rejects_alpha_outside_range(alpha):
    with pytest.raises(ParamError): ov.overlay(torch.rand(4, 3, 4, 4), alpha)


@pytest.mark.parametrize('m', [1, 2, 3, 4])
def test_random_mask_ratio(m):
    x = torch.rand(16, 3, 32, 32) + 0.5
    xm = ov.random_mask(x, m)
    masked = (xm == 0).all(1)                             # pixel masked in every channel
    per_image = masked.float().mean((1, 2))
    assert torch.allclose(per_image, torch.full((16,), round(m / 100 * 1024) / 1024))
    assert ((xm == 0).any(1) == masked).all()             # never a partial pixel
    assert torch.equal(xm[:, :, ~masked[0]][0], x[0][:, ~masked[0]])   # the rest untouched


@pytest.mark.parametrize('depth,stem,size', [(18, False, 64), (18, True, 32), (50, False, 64), (34, False, 96)])
def test_autoencoder_output_shape_equals_input(depth, stem, size):
    x = torch.rand(2, 3, size, size)
    y = ResNetAutoencoder(depth, stem).eval()(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def _tiny():
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(12) % 3)


def _params(**kw):
    return {**ov.PRESETS['smoke'], 'pretrain_epochs': 3, 'batch_size': 4, **kw}


def test_pretrain_cache_hit_on_identical_settings(outputs):
    ds = _tiny()
    r1, hit1 = ov.pretrain(_params(), ds, 'cpu')
    r2, hit2 = ov.pretrain(_params(finetune_epochs=7, probe_epochs=3), ds, 'cpu')   # downstream settings only
    r3, hit3 = ov.pretrain(_params(alpha=0.1), ds, 'cpu')
    assert (hit1, hit2, hit3) == (False, True, False)
    assert all(torch.equal(r1['state'][k], r2['state'][k]) for k in r1['state'])
    assert any(not torch.equal(r1['state'][k], r3['state'][k]) for k in r1['state'] if r1['state'][k].is_floating_point())
    assert len(r1['history']) == 3


def test_pretrain_resume_after_kill_matches_uninterrupted(outputs, monkeypatch, tmp_path):
    ds = _tiny()
    ref, _ = ov.pretrain(_params(), ds, 'cpu')

    monkeypatch.setenv('SSL_STUDY_CACHE', str(tmp_path / 'cache2'))
    real_fit = ov.fit
    def killed_fit(*a, **kw):
        def die(rec):
            if rec['epoch'] == 2: raise KeyboardInterrupt('simulated kill')
        return real_fit(*a, **kw, on_epoch_end=die)
    monkeypatch.setattr(ov, 'fit', killed_fit)
    with pytest.raises(KeyboardInterrupt): ov.pretrain(_params(), ds, 'cpu')
    ckpts = list((tmp_path / 'cache2').rglob('pretrain.ckpt'))
    assert len(ckpts) == 1 and torch.load(ckpts[0], weights_only=False)['epoch'] == 2
    monkeypatch.setattr(ov, 'fit', real_fit)
    resumed, hit = ov.pretrain(_params(), ds, 'cpu')
    assert not hit
    assert [h['loss'] for h in resumed['history']] == [h['loss'] for h in ref['history']]
    assert all(torch.equal(ref['state'][k], resumed['state'][k]) for k in ref['state'])


@pytest.mark.parametrize('bad', [dict(alpha=0.5), dict(alpha=-0.2), dict(alpha='abc'), dict(corruption='blur'),
                                 dict(dataset='imagenet22k'), dict(pretrain_epochs=1.5), dict(scale='huge')])
def test_check_params_rejects(bad):
    scale = bad.pop('scale', 'smoke')
    with pytest.raises(ValueError): ov.check_params(scale, **bad)


def _no_results(out):
    files = [p for p in out.rglob('*') if p.is_file()] if out.exists() else []
    return files == []


@pytest.mark.parametrize('args,env,message', [
    (['-p', 'alpha', '0.5'], {}, 'alpha must be in [0, 0.5)'),
    (['-p', 'alpha', 'abc'], {}, 'alpha must be a number'),
    (['-p', 'dataset', 'imagenet22k'], {}, 'imagenet22k'),
    ([], {'SSL_STUDY_DATA': '/nonexistent/data_root'}, '/nonexistent/data_root'),
])
def test_papermill_bad_input_fails_before_work(tmp_path, args, env, message):
    out = tmp_path / 'outputs'
    executed = tmp_path / 'executed.ipynb'
    r = papermill('nbs/04_overlay.ipynb', executed, '-p', 'scale', 'smoke', *args,
                  env={'SSL_STUDY_OUTPUTS': str(out), 'SSL_STUDY_CACHE': str(out / 'cache'), **env})
    assert r.returncode != 0
    assert message in r.stdout + r.stderr
    assert _no_results(out)
    if 'SSL_STUDY_DATA' in env: assert 'tiny_imagenet' in r.stdout + r.stderr


def test_papermill_help_lists_every_parameter():
    import json, re
    r = papermill('--help-notebook', 'nbs/04_overlay.ipynb')
    assert r.returncode == 0
    nb = json.loads((ROOT / 'nbs' / '04_overlay.ipynb').read_text())
    cell = next(c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', []))
    declared = re.findall(r'^(\w+)\s*:\s*\w+\s*=', ''.join(cell['source']), re.M)
    assert {'scale', 'corruption', 'alpha', 'mask_ratio', 'dataset', 'seed', 'download'} <= set(declared)
    text = ' '.join(r.stdout.split())
    for name in declared:
        m = re.search(rf'\b{name}: \w+ \(default None\) (.+?)(?= \w+: \w+ \(default|$)', text)
        assert m and len(m.group(1).split()) >= 3, name     # type, default and a one-line description
