"The overlay paper: corruptions against hand loops and torchvision, views, parameters, data, probes, cache and bad input."
import json, math, re
import pytest, torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch.utils.data import TensorDataset
import ssl_study.papers.overlay as ov
import ssl_study.papers.overlay_method as om
import ssl_study.autoaugment as aa_mod
from ssl_study.models import ResNetAutoencoder
from ssl_study.runs import ParamError
from ssl_study.views import to_unit
from conftest import papermill, ROOT

NB = ROOT / 'nbs' / '04_overlay.ipynb'


# --- the overlay corruption -------------------------------------------------------------------------------

def test_overlay_matches_formula_and_never_pairs_self():
    x = torch.rand(7, 3, 5, 5)
    for seed in range(20):
        j = ov.partner_indices(7, torch.Generator().manual_seed(seed))
        xh = ov.Overlay(0.4)(x, generator=torch.Generator().manual_seed(seed))
        for i in range(7):
            assert j[i] != i
            expected = [[[0.4 * x[j[i], c, h, w].item() + 0.6 * x[i, c, h, w].item() for w in range(5)] for h in range(5)] for c in range(3)]
            assert torch.allclose(xh[i], torch.tensor(expected), atol=1e-6)
    assert (ov.partner_indices(2) == torch.tensor([1, 0])).all()      # two images can only swap
    with pytest.raises(ValueError): ov.partner_indices(1)


def test_overlay_partner_is_uniform_over_the_other_images():
    n, draws = 5, 20000
    g = torch.Generator().manual_seed(0)
    j = torch.stack([ov.partner_indices(n, g) for _ in range(draws)])
    for i in range(n):
        counts = torch.bincount(j[:, i], minlength=n).float()
        assert counts[i] == 0
        others = counts[torch.arange(n) != i]
        expected = draws / (n - 1)
        chi2 = ((others - expected) ** 2 / expected).sum().item()
        assert chi2 < 16.3, (i, counts.tolist())     # chi-square, 3 degrees of freedom, p = 0.001


def test_overlay_alpha_zero_is_identity():
    x = torch.rand(4, 3, 6, 6)
    assert torch.equal(ov.Overlay(0)(x), x) and torch.equal(ov.Overlay(0.0)(x), x)


@pytest.mark.parametrize('alpha', [0.5, 0.7, -0.01, 'abc', None, float('nan'), float('inf')])
def test_overlay_rejects_alpha_when_built(alpha):
    with pytest.raises(ParamError): ov.Overlay(alpha)


def test_overlay_checks_alpha_once_not_per_batch(monkeypatch):
    corrupt = ov.Overlay(0.3)
    def boom(*a, **k): raise AssertionError('alpha re-checked on a batch')
    monkeypatch.setattr(om, 'check_number', boom)       # the method module checks alpha
    corrupt(torch.rand(4, 3, 4, 4)); corrupt(torch.rand(4, 3, 4, 4))


# --- random masking ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('m', [1, 2, 3, 4])
def test_random_mask_ratio(m):
    x = torch.rand(16, 3, 32, 32) + 0.5
    xm = ov.RandomMask(m)(x)
    masked = (xm == 0).all(1)                             # pixel masked in every channel
    per_image = masked.float().mean((1, 2))
    assert torch.allclose(per_image, torch.full((16,), round(m / 100 * 1024) / 1024))
    assert ((xm == 0).any(1) == masked).all()             # never a partial pixel
    assert torch.equal(xm[:, :, ~masked[0]][0], x[0][:, ~masked[0]])   # the rest untouched


@pytest.mark.parametrize('m', [0, 100, -1, float('nan'), 'abc'])
def test_random_mask_rejects_ratio_when_built(m):
    with pytest.raises(ParamError): ov.RandomMask(m)


# --- AutoAugment: batched, against torchvision ------------------------------------------------------------

def _images(n=6, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    x[1] = x[1] // 3 + 60          # low contrast
    x[2] = 17                      # flat: autocontrast and equalize leave it alone
    x[3, :, :, : size // 2] = 200  # half flat
    return x


_NEAREST = TF.InterpolationMode.NEAREST
_REFS = {'ShearX': lambda im, m: TF.affine(im, 0.0, [0, 0], 1.0, [math.degrees(math.atan(m)), 0.0], _NEAREST, center=[0, 0]),
         'Rotate': lambda im, m: TF.rotate(im, m, _NEAREST), 'Equalize': lambda im, m: TF.equalize(im),
         'Sharpness': lambda im, m: TF.adjust_sharpness(im, 1 + m), 'AutoContrast': lambda im, m: TF.autocontrast(im),
         'Posterize': lambda im, m: TF.posterize(im, int(m)), 'Solarize': TF.solarize, 'Invert': lambda im, m: TF.invert(im),
         'Color': lambda im, m: TF.adjust_saturation(im, 1 + m), 'Contrast': lambda im, m: TF.adjust_contrast(im, 1 + m)}


@pytest.mark.parametrize('name', sorted(_REFS))
def test_autoaugment_op_equals_torchvision_at_every_magnitude(name):
    x = _images()
    mags, signed = T.AutoAugment()._augmentation_space(10, tuple(x.shape[-2:]))[name]
    for m in sorted({float(v) * s for v in mags.reshape(-1) for s in ((1, -1) if signed else (1,))}):
        ours = aa_mod.AA_OPS[name](x.float(), torch.full((len(x),), m))
        ref = torch.stack([_REFS[name](im, m) for im in x]).float()
        assert torch.equal(ours, ref), (name, m, (ours - ref).abs().max().item())


def test_autoaugment_uses_torchvisions_policy_and_magnitudes():
    aa, tv = aa_mod.AutoAugment(), T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)
    space = tv._augmentation_space(10, (32, 32))
    assert sorted(aa.names) == sorted(_REFS)
    for k, sub in enumerate(tv.policies):
        for s, (op, p, b) in enumerate(sub):
            assert aa.names[aa.op[k, s]] == op and aa.prob[k, s].item() == pytest.approx(p)
            assert aa.mag[k, s].item() == pytest.approx(0.0 if b is None else float(space[op][0][b]))
            assert bool(aa.signed[k, s]) == space[op][1]


def test_autoaugment_whole_policy_equals_torchvision_per_image():
    "Same random state, same draws in the same order: the batch equals torchvision's AutoAugment image by image."
    x = _images(8)[torch.arange(200) % 8]
    aa = aa_mod.AutoAugment()
    torch.manual_seed(1); ours = aa(to_unit(x))
    torch.manual_seed(1); tv = T.AutoAugment(T.AutoAugmentPolicy.IMAGENET); ref = torch.stack([tv(im) for im in x])
    assert torch.equal(ours, ref.float() / 255)
    torch.manual_seed(1); pid = aa.draw(len(x))[0]
    assert len(set(pid.tolist())) == 25                 # every sub-policy occurs in one batch: drawn per image
    params = aa.draw(len(x), torch.Generator().manual_seed(2))
    assert torch.equal(aa(to_unit(x), params), aa(to_unit(x), params))     # given draws: deterministic


def test_autoaugment_draws_follow_torchvision_distribution():
    aa = aa_mod.AutoAugment()
    pid, u, sign = aa.draw(20000, torch.Generator().manual_seed(0))
    counts = torch.bincount(pid, minlength=25).float()
    assert (((counts - 800) ** 2 / 800).sum() < 52.6).item()       # chi-square, 24 dof, p = 0.001
    assert abs(u.mean().item() - 0.5) < 0.01 and u.min() >= 0 and u.max() < 1
    assert abs(sign.float().mean().item() - 0.5) < 0.01
    # the fraction of images no op touches, by the policy's probabilities, as torchvision applies them
    untouched = (u > aa.prob[pid]).all(1).float().mean().item()
    expected = (1 - aa.prob).prod(1).mean().item()
    assert abs(untouched - expected) < 0.015, (untouched, expected)


def test_autoaugment_output_range_and_seeded_repeat():
    x = to_unit(_images(16))
    torch.manual_seed(3); a = aa_mod.AutoAugment()(x)
    torch.manual_seed(3); b = aa_mod.AutoAugment()(x)
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal((a * 255).round() / 255, a)    # whole uint8 steps, as torchvision's uint8 output


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_autoaugment_cuda_equals_cpu():
    x = to_unit(_images(64, 32))
    aa = aa_mod.AutoAugment()
    params = aa.draw(len(x), torch.Generator().manual_seed(0))
    assert torch.equal(aa(x.cuda(), params).cpu(), aa(x, params))


def test_build_corruption_by_name():
    assert isinstance(ov.build_corruption('overlay', 0.2), ov.Overlay)
    assert isinstance(ov.build_corruption('mask', mask_ratio=3), ov.RandomMask)
    assert isinstance(ov.build_corruption('autoaugment'), aa_mod.AutoAugment)
    for bad in (dict(corruption='none'), dict(corruption='blur'), dict(corruption='overlay', alpha=0.5)):
        with pytest.raises(ParamError): ov.build_corruption(**bad)


# --- views (fidelity: the paper crops in pre-training and fine-tunes without transformation) ----------------

def _ramp(n=32, size=32):
    "Every image: red channel = column index, so a crop narrows the range of each row and a flip reverses it."
    col = torch.arange(size, dtype=torch.float32).mul(255 / (size - 1)).round().to(torch.uint8)
    x = torch.zeros(n, 3, size, size, dtype=torch.uint8); x[:, 0] = col
    return x


def test_every_preset_follows_the_paper_views():
    for s, preset in ov.PRESETS.items():
        assert preset['pretrain_aug'] == 'crop' and preset['finetune_aug'] == 'none', s


def test_pretrain_view_crop_is_a_random_resized_crop_without_flip():
    x = _ramp(64)
    torch.manual_seed(0)
    v = ov.pretrain_view('crop', 32)(x)
    red = v[:, 0]
    spans = red[:, 16].amax(-1) - red[:, 16].amin(-1)       # the middle row's range of the ramp
    assert (spans < 0.95).float().mean() > 0.9                # zoomed in: most crops see part of the ramp
    assert (red[:, 16, -1] >= red[:, 16, 0]).all()            # never mirrored
    assert len(torch.unique(v.flatten(1), dim=0)) > 60        # each image its own crop


def test_pretrain_views_flip_and_none():
    x = _ramp(64)
    assert torch.equal(ov.pretrain_view('none', 32)(x), to_unit(x))
    torch.manual_seed(0)
    f = ov.pretrain_view('flip', 32)(x)
    mirrored = torch.tensor([torch.equal(a, to_unit(x[0]).flip(-1)) for a in f])
    plain = torch.tensor([torch.equal(a, to_unit(x[0])) for a in f])
    assert (mirrored | plain).all() and 10 < mirrored.sum() < 54
    torch.manual_seed(0)
    cf = ov.pretrain_view('crop+flip', 32)(x)[:, 0, 16]
    assert (cf[:, -1] < cf[:, 0]).any() and (cf[:, -1] > cf[:, 0]).any()
    with pytest.raises(ParamError): ov.pretrain_view('jitter', 32)
    with pytest.raises(ParamError): ov.finetune_view('crop')


def _tiny(n=12, size=32, classes=3):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g), torch.arange(n) % classes)


def _cfg(**kw):
    return {**ov.PRESETS['smoke'], 'pretrain_epochs': 3, 'batch_size': 4, **kw}


def test_pretraining_step_sees_the_crop_and_finetuning_sees_the_image(monkeypatch):
    "Wiring: what the autoencoder is fed under the default cfg, and what fine-tuning trains on."
    seen = {}
    def fake_pretrain(name, settings, build, step, data, **kw):
        batch = (_ramp(8),)
        seen['x_hat'] = []
        step(lambda t: seen['x_hat'].append(t) or t, batch)
        return {'state': None, 'history': []}, False
    monkeypatch.setattr(ov.cache, 'pretrain', fake_pretrain)
    torch.manual_seed(0)
    ov.pretrain(_cfg(alpha=0.0), _tiny(), 'cpu')                       # alpha 0: x_hat is the view itself
    x = to_unit(_ramp(8))
    assert not any(torch.equal(v, x[0]) or torch.equal(v, x[0].flip(-1)) for v in seen['x_hat'][0])   # every image cropped
    ov.pretrain(_cfg(alpha=0.0, pretrain_aug='flip'), _tiny(), 'cpu')  # the earlier view: each image as it is, or mirrored
    assert all(torch.equal(v, x[0]) or torch.equal(v, x[0].flip(-1)) for v in seen['x_hat'][0])
    ov.pretrain(_cfg(alpha=0.0, pretrain_aug='none'), _tiny(), 'cpu')
    assert torch.equal(seen['x_hat'][0], to_unit(_ramp(8)))

    def fake_finetune(encoder, n_classes, train_dl, test_dl, epochs, **kw):
        seen['train_prep'] = kw['train_prep']
        return dict(best_acc=0.0, final_acc=0.0, history=[])
    monkeypatch.setattr(ov, 'finetune', fake_finetune)
    ov.evaluate_encoder(ov.ResNetAutoencoder(18).encoder, _cfg(), _tiny(), _tiny(), 3, device='cpu')
    x = _ramp(64)
    assert all(torch.equal(seen['train_prep'](x), to_unit(x)) for _ in range(5))   # no flip, no crop: the image as it is
    ov.evaluate_encoder(ov.ResNetAutoencoder(18).encoder, _cfg(finetune_aug='flip'), _tiny(), _tiny(), 3, device='cpu')
    assert any(not torch.equal(seen['train_prep'](x), to_unit(x)) for _ in range(5))


# --- the linear probe (fidelity: the paper's protocol is the reported number) ------------------------------

def test_last_layer_probe_equals_hand_written_sgd():
    "Full-batch SGD with momentum, weight decay and a per-step cosine schedule, written out by hand."
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    epochs, lr, mom, wd = 4, 0.05, 0.9, 1e-3
    r = ov.last_layer_probe(x, y, x, y, 3, epochs=epochs, lr=lr, momentum=mom, weight_decay=wd, batch_size=64, seed=7)
    torch.manual_seed(7); ref = torch.nn.Linear(6, 3)
    W, b = ref.weight.detach().clone(), ref.bias.detach().clone()
    vW, vb = torch.zeros_like(W), torch.zeros_like(b)
    onehot = torch.nn.functional.one_hot(y, 3).float()
    for t in range(epochs):
        p = torch.softmax(x @ W.T + b, 1)
        gW, gb = (p - onehot).T @ x / len(x) + wd * W, (p - onehot).mean(0) + wd * b
        vW, vb = (gW, gb) if t == 0 else (mom * vW + gW, mom * vb + gb)
        step = lr * 0.5 * (1 + math.cos(math.pi * t / epochs))
        W, b = W - step * vW, b - step * vb
    assert torch.allclose(r['head'].weight, W, atol=1e-5) and torch.allclose(r['head'].bias, b, atol=1e-5)
    assert r['final_acc'] == pytest.approx(100 * ((x @ W.T + b).argmax(1) == y).float().mean().item())


def test_reported_probe_uses_the_finetuning_optimiser_and_the_standardised_one_probe_lr(outputs):
    enc = ov.ResNetAutoencoder(18).encoder
    run = lambda **kw: ov.evaluate_encoder(enc, _cfg(probe_epochs=2, **kw), _tiny(), _tiny(), 3, device='cpu')
    losses = lambda r, k: [h['loss'] for h in r[k]]
    base, other_probe_lr, other_ft_lr = run(), run(probe_lr=0.5), run(finetune_lr=0.2)
    assert losses(base, 'probe_history') == losses(other_probe_lr, 'probe_history')
    assert losses(base, 'probe_history') != losses(other_ft_lr, 'probe_history')
    assert losses(base, 'probe_std_history') != losses(other_probe_lr, 'probe_std_history')
    assert {'probe_acc', 'probe_std_acc', 'knn_acc', 'finetune_final_acc'} <= set(base) and not any('best' in k for k in base)


# --- parameters ---------------------------------------------------------------------------------------------

def _parameters_cell():
    nb = json.loads(NB.read_text())
    cell = next(c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', []))
    return re.findall(r'^(\w+)\s*:\s*\w+\s*=\s*None', ''.join(cell['source']), re.M)


def test_every_preset_key_is_declared_and_in_the_parameters_cell():
    declared = set(_parameters_cell())
    assert declared == set(ov.SPEC) | {'scale', 'output_name'}
    for s, preset in ov.PRESETS.items():
        assert set(preset) == set(ov.SPEC), s
    assert all(p.help for p in ov.SPEC.values())
    assert {'momentum', 'weight_decay', 'probe_lr', 'cifar_stem', 'pretrain_aug', 'finetune_aug'} <= declared


@pytest.mark.parametrize('bad', [dict(alpha=0.5), dict(alpha=-0.2), dict(alpha='abc'), dict(alpha=float('nan')),
                                 dict(lr=float('inf')), dict(corruption='blur'), dict(dataset='imagenet22k'),
                                 dict(pretrain_epochs=1.5), dict(pretrain_epochs=0), dict(finetune_epochs=0),
                                 dict(probe_epochs=0), dict(image_size=50), dict(pretrain_aug='jitter'),
                                 dict(finetune_aug='crop'), dict(alhpa=0.1), dict(scale='huge')])
def test_check_params_rejects(bad):
    scale = bad.pop('scale', 'smoke')
    with pytest.raises(ValueError): ov.check_params(scale, **bad)


def test_check_params_normalises_and_keeps_epochs():
    _, cfg = ov.check_params('smoke', alpha=0, finetune_epochs=2)
    assert cfg['alpha'] == 0.0 and isinstance(cfg['alpha'], float) and cfg['finetune_epochs'] == 2


def test_run_name_same_for_int_and_float_values():
    assert ov.run_name(dict(corruption='overlay', alpha=0), 'quick') == ov.run_name(dict(corruption='overlay', alpha=0.0), 'quick')
    assert ov.run_name(dict(corruption='mask', mask_ratio=2), 'quick') == ov.run_name(dict(corruption='mask', mask_ratio=2.0), 'quick') == 'mask-m2'
    assert ov.run_name(dict(corruption='overlay', alpha=0.3, lr=1), 'quick') == ov.run_name(dict(corruption='overlay', alpha=0.3, lr=1.0), 'quick')
    assert len({ov.run_name(g, 'gpu') for g in ov.grid('gpu')}) == len(ov.grid('gpu')) == 33     # every run its own folder


def test_gpu_grid_gives_every_arm_of_a_declared_claim_three_seeds():
    "A verdict needs a standard error: every arm of every declared claim runs at seeds 0, 1 and 2 (gpu and paper)."
    for scale in ('gpu', 'paper'):            # (the paper's Caltech-256 is not here: the presets, not check_params)
        cfgs = [{**ov.PRESETS[scale], **g} for g in ov.grid(scale)]
        for c in ov.CLAIMS:
            for arm in (c.a, c.b):
                assert sorted(x['seed'] for x in cfgs if all(x[k] == v for k, v in arm.items())) == [0, 1, 2], (c.id, arm)
    assert ov.run_name(ov.check_params('gpu', **ov.grid('gpu')[-1])[1], 'gpu') == 'supervised-seed2'


def test_cpu_grid_starts_with_the_primary_pair():
    prim = [c for c in ov.CLAIMS if c.primary]
    assert len(prim) == 1 and prim[0].id == 'overlay-beats-supervised'
    assert ov.grid('cpu')[:4] == [dict(prim[0].a, seed=0), dict(prim[0].b, seed=0), dict(prim[0].a, seed=1), dict(prim[0].b, seed=1)]
    under = {c.id for c in ov.CLAIMS if c.underpowered}
    assert under == {c.id for c in ov.CLAIMS if not c.primary and c.id != 'overlay-beats-autoaugment'}
    arms = {(g.get('corruption'), g.get('alpha')) for g in ov.grid('cpu')}     # every cpu arm backs a claim; no masking arm at cpu
    assert arms == {('overlay', a) for a in ov.ALPHAS} | {('none', None), ('autoaugment', None)}


def _runs(arms, seeds=(0, 1, 2), metric='finetune_final_acc'):
    import pandas as pd
    return pd.DataFrame([dict(status='done', corruption=c, alpha=a, mask_ratio=m, seed=s, **{metric: v(s)})
                         for s in seeds for c, a, m, v in arms])


def test_verdicts_come_from_the_declared_claims_with_the_hand_computed_interval():
    "overlay 0.3 vs supervised, per-seed gaps 8, 10, 12: mean 10, sd 2, 95% CI 10 -+ 4.303 * 2 / sqrt 3 -> holds; reversed fails."
    from scipy import stats
    half = stats.t.ppf(0.975, 2) * 2 / math.sqrt(3)
    df = _runs([('overlay', 0.3, 1.0, lambda s: 40.0 + 2 * s), ('none', 0.3, 1.0, lambda s: 32.0)])
    v = ov.verdicts(df).set_index('id')
    assert v.verdict['overlay-beats-supervised'] == 'holds' and v.gap['overlay-beats-supervised'] == pytest.approx(10)
    assert v.lo['overlay-beats-supervised'] == pytest.approx(10 - half) and v.hi['overlay-beats-supervised'] == pytest.approx(10 + half)
    rev = _runs([('overlay', 0.3, 1.0, lambda s: 32.0), ('none', 0.3, 1.0, lambda s: 40.0 + 2 * s)])
    assert ov.verdicts(rev).set_index('id').verdict['overlay-beats-supervised'] == 'fails'
    one = _runs([('overlay', 0.3, 1.0, lambda s: 40.0), ('none', 0.3, 1.0, lambda s: 30.0)], seeds=(0,))
    assert ov.verdicts(one).set_index('id').verdict['overlay-beats-supervised'] == 'inconclusive'
    # every mask ratio is judged (Holm over the tested secondaries), none picked by its mean
    masks = _runs([('overlay', 0.3, 1.0, lambda s: 40.0 + s)] + [('mask', 0.3, m, lambda s, m=m: 30.0 + m + 0.5 * s) for m in (1.0, 2.0, 3.0, 4.0)])
    vm = ov.verdicts(masks).set_index('id')
    assert list(vm.verdict[[f'overlay-beats-mask-m{m}' for m in (1, 2, 3, 4)]]) == ['holds'] * 4
    assert sorted(vm.level[[f'overlay-beats-mask-m{m}' for m in (1, 2, 3, 4)]]) == pytest.approx([0.05 / 4, 0.05 / 3, 0.05 / 2, 0.05])


def test_reported_finetune_accuracy_ignores_earlier_epochs_test_accuracy(monkeypatch):
    "The fine-tune number is the last epoch's: whatever the test accuracy of earlier epochs, metrics and verdicts are the same."
    import ssl_study.evaluate as ev
    enc = ov.ResNetAutoencoder(18).encoder
    out = []
    for earlier in ((90.0, 85.0), (1.0, 2.0)):
        accs = iter(list(earlier) + [30.0])
        monkeypatch.setattr(ev, 'accuracy', lambda *a, **k: next(accs))
        out.append(ov.evaluate_encoder(enc, _cfg(finetune_epochs=3, probe_epochs=1), _tiny(), _tiny(), 3, device='cpu'))
    assert [h['test_acc'] for h in out[0]['finetune_history']] == [90.0, 85.0, 30.0]
    assert out[0]['finetune_final_acc'] == out[1]['finetune_final_acc'] == 30.0
    assert not any('best' in k for k in out[0])                     # no best epoch is recorded, for the fine-tune or the probes
    rows = lambda r: _runs([('overlay', 0.3, 1.0, lambda s: r['finetune_final_acc'] + s), ('none', 0.3, 1.0, lambda s: 20.0)])
    assert ov.verdicts(rows(out[0])).equals(ov.verdicts(rows(out[1])))
    assert all(c.metric == 'finetune_final_acc' for c in ov.CLAIMS)


# --- data (fidelity: Caltech-256 at paper scale has 256 classes, no clutter) ---------------------------------

def _fake_caltech(root, per_class=2):
    "caltech256/256_ObjectCategories/NNN.name/NNN_MMMM.jpg, 256 classes + 257.clutter; clutter images pure red."
    from PIL import Image
    base = root / 'caltech256' / '256_ObjectCategories'
    for c in range(257):
        folder = base / (f'{c + 1:03d}.class{c}' if c < 256 else '257.clutter')
        folder.mkdir(parents=True)
        for k in range(1, per_class + 1):
            colour = (255, 0, 0) if c == 256 else (0, c, 40 + 100 * (k % 2))
            Image.new('RGB', (8, 8), colour).save(folder / f'{c + 1:03d}_{k:04d}.jpg', quality=95)


def test_paper_preset_leaves_out_caltech_clutter(tmp_path, monkeypatch):
    _fake_caltech(tmp_path)
    monkeypatch.setenv('SSL_STUDY_DATA', str(tmp_path))
    scale, cfg = ov.check_params('paper', image_size=32)
    assert cfg['n_classes'] == 256 and cfg['dataset'] == 'caltech256'
    train, test = ov.load_data(cfg)
    for ds in (train, test):
        x, y = ds.tensors
        assert sorted(set(y.tolist())) == list(range(256)) and len(ds) == 256     # one image of each object class
        red = (x[:, 0].float().mean((1, 2)) > 200) & (x[:, 1].float().mean((1, 2)) < 50)
        assert not red.any()                                                       # no clutter image


# --- pre-training through the cache ---------------------------------------------------------------------------

def test_pretrain_cache_hit_on_identical_settings(outputs):
    ds = _tiny()
    r1, hit1 = ov.pretrain(_cfg(), ds, 'cpu')
    r2, hit2 = ov.pretrain(_cfg(finetune_epochs=7, probe_epochs=3, finetune_aug='flip'), ds, 'cpu')   # downstream settings only
    r3, hit3 = ov.pretrain(_cfg(alpha=0.1), ds, 'cpu')
    r4, hit4 = ov.pretrain(_cfg(pretrain_aug='flip'), ds, 'cpu')
    ds2 = TensorDataset(ds.tensors[0].flip(0), ds.tensors[1])                                         # other images
    r5, hit5 = ov.pretrain(_cfg(), ds2, 'cpu')
    assert (hit1, hit2, hit3, hit4, hit5) == (False, True, False, False, False)
    assert all(torch.equal(r1['state'][k], r2['state'][k]) for k in r1['state'])
    assert any(not torch.equal(r1['state'][k], r3['state'][k]) for k in r1['state'] if r1['state'][k].is_floating_point())
    assert len(r1['history']) == 3


def test_autoencoder_loss_matches_hand_computation():
    recon, x = torch.rand(3, 3, 4, 4), torch.rand(3, 3, 4, 4)
    ref = sum((recon[b, c, h, w].item() - x[b, c, h, w].item()) ** 2
              for b in range(3) for c in range(3) for h in range(4) for w in range(4)) / (3 * 3 * 4 * 4)
    assert ov.ReconstructionLoss()(recon, x).item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize('depth,stem,size', [(18, False, 64), (18, True, 32), (50, False, 64), (34, False, 96)])
def test_autoencoder_output_shape_equals_input(depth, stem, size):
    x = torch.rand(2, 3, size, size)
    y = ResNetAutoencoder(depth, stem).eval()(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


# --- the notebook's text (fidelity statements) ---------------------------------------------------------------

def test_notebook_states_where_we_differ_from_the_paper_text():
    nb = json.loads(NB.read_text())
    md = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    assert re.search(r'\$j \\ne i\$ is \*\*our choice\*\*', md)                     # not the paper's text
    assert '244 × 244' in md and 'typo for 224' in md
    assert '29,780' in md and '257.clutter' in md and '30,607' in md
    assert 'probe_std_acc' in md and 'standardised' in md and 'the last layer only, 5 epochs, the fine-tuning optimiser' in md
    assert 'without any additional transformation' in md and "pretrain_aug='crop'" in md


# --- papermill: bad input fails before any work ---------------------------------------------------------------

def _no_results(out):
    files = [p for p in out.rglob('*') if p.is_file()] if out.exists() else []
    return files == []


@pytest.mark.parametrize('args,env,message', [
    (['-p', 'alpha', '0.5'], {}, 'alpha must be in [0, 0.5)'),
    (['-p', 'alpha', 'abc'], {}, 'alpha must be a number'),
    (['-p', 'dataset', 'imagenet22k'], {}, 'imagenet22k'),
    (['-p', 'alhpa', '0.1'], {}, 'unknown parameter(s) alhpa'),
    (['-p', 'finetune_epochs', '0'], {}, 'finetune_epochs must be in [1, inf]'),
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
    r = papermill('--help-notebook', 'nbs/04_overlay.ipynb')
    assert r.returncode == 0
    declared = _parameters_cell()
    assert set(ov.SPEC) <= set(declared)
    text = ' '.join(r.stdout.split())
    for name in declared:
        m = re.search(rf'\b{name}: \w+ \(default None\) (.+?)(?= \w+: \w+ \(default|$)', text)
        assert m and len(m.group(1).split()) >= 3, name     # type, default and a one-line description


# --- devices: the pre-training on several GPUs ---------------------------------------------------------------

def test_devices_names_the_same_run_and_more_gpus_than_here_are_refused():
    assert 'devices' in ov.SPEC and 'devices' in _parameters_cell() and all(p['devices'] == 1 for p in ov.PRESETS.values())
    for scale in ('quick', 'gpu'):
        assert all(ov.run_name(dict(x, devices=4), scale) == ov.run_name(x, scale) for x in ov.grid(scale))
    if torch.cuda.device_count() < 2:
        with pytest.raises(ParamError, match=r'devices=2: .* CUDA GPUs .* this machine has'): ov.check_params('smoke', devices=2)
    with pytest.raises(ParamError): ov.check_params('smoke', devices=0)


def test_pretrain_goes_through_cache_pretrain_and_devices_keeps_its_cache_entry(monkeypatch, outputs):
    import cloudpickle
    calls, real = [], ov.cache.pretrain
    monkeypatch.setattr(ov.cache, 'pretrain', lambda *a, **kw: calls.append((a, kw)) or real(*a, **kw))
    ds, cfg = _tiny(), _cfg(pretrain_epochs=1)
    r1, hit1 = ov.pretrain(cfg, ds, 'cpu')
    assert not hit1 and len(r1['history']) == 1 and calls[0][1]['devices'] == 1
    r2, hit2 = ov.pretrain({**cfg, 'devices': 2}, ds, 'cpu')        # asked on 2 devices: found where 1 device stored it
    assert hit2 and calls[1][1]['devices'] == 2 and all(torch.equal(r1['state'][k], r2['state'][k]) for k in r1['state'])
    (name, settings, build, step, data), kw = cloudpickle.loads(cloudpickle.dumps(calls[1]))    # what torchrun's workers get
    assert name == 'overlay' and 'devices' not in settings
    torch.manual_seed(0)
    assert torch.isfinite(step(build(), (data.tensors[0][:4],)))
