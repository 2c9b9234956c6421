"The SimCLR-for-segmentation paper: NT-Xent and the authors' variant, the video loss and its sampler, the schedule, the decoder, the label subsets, and bad parameters."
import math
import numpy as np, pytest, torch, torch.nn.functional as F
from ssl_study.ssl import NTXentLoss
from ssl_study.datasets import have_dataset
import ssl_study.papers.simclr as sc
import ssl_study.papers.simclr_method as sm
from conftest import papermill


# --- NT-Xent (the correct loss the paper trains with) -------------------------------------------------------------

def test_ntxent_closed_form_two_images():
    e = torch.eye(2)                                   # views z1 = z2 = [[1, 0], [0, 1]]
    assert math.isclose(NTXentLoss(0.5)(e, e).item(), math.log(1 + 2 * math.exp(-2)), rel_tol=1e-6)
    assert math.isclose(NTXentLoss(0.5)(e, e).item(), 0.2395, abs_tol=5e-5)


def test_ntxent_invariant_to_swapping_views_and_permuting_the_batch():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(9, 7, generator=g), torch.randn(9, 7, generator=g)
    loss = NTXentLoss(0.5)
    perm = torch.randperm(9, generator=g)
    assert torch.isclose(loss(z1, z2), loss(z2, z1))
    assert torch.isclose(loss(z1, z2), loss(z1[perm], z2[perm]))


def test_ntxent_equals_lightly_on_random_inputs():
    lightly_loss = pytest.importorskip('lightly.loss')
    g = torch.Generator().manual_seed(1)
    for n, d, t in ((4, 8, 0.5), (16, 32, 0.5), (7, 3, 0.2)):
        z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
        ref = lightly_loss.NTXentLoss(temperature=t)(z1, z2)
        assert torch.isclose(NTXentLoss(t)(z1, z2), ref, rtol=1e-5), (n, d, t)


# --- the authors' variant ------------------------------------------------------------------------------------------

def test_authors_targets_point_at_the_diagonal_for_the_first_half():
    n = 5
    right, theirs = sm.ntxent_targets(n).tolist(), sm.ntxent_targets(n, authors=True).tolist()
    assert right == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
    assert theirs == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert [i for i in range(2 * n) if theirs[i] != right[i]] == [i for i in range(2 * n) if theirs[i] == i] == list(range(n))


def test_authors_closed_form_two_images():
    e = torch.eye(2)   # rows 1-2: target logit 0 among (0, 0, 2, 0); rows 3-4: target 2 among (2, 0, 0, 0)
    by_hand = (2 * math.log(3 + math.exp(2)) + 2 * (math.log(3 + math.exp(2)) - 2)) / 4
    assert math.isclose(sm.authors_nt_xent(e, e, 0.5).item(), by_hand, rel_tol=1e-6)


def _rows_by_hand(z1, z2, t, targets):
    "Per-row cross-entropy of u u^T (1 - I) / t, written out with Python floats."
    u = F.normalize(torch.cat([z1, z2]), dim=1).tolist()
    out = []
    for i, j in enumerate(targets):
        logit = lambda k: 0.0 if k == i else sum(a * b for a, b in zip(u[i], u[k])) / t
        out.append(math.log(sum(math.exp(logit(k)) for k in range(len(u)))) - logit(j))
    return out


def test_authors_differs_from_correct_labels_exactly_where_they_point_at_the_diagonal():
    g = torch.Generator().manual_seed(2)
    n, t = 6, 0.5
    z1, z2 = torch.randn(n, 10, generator=g), torch.randn(n, 10, generator=g)
    theirs = sm.authors_nt_xent(z1, z2, t, reduction='none')
    assert np.allclose(theirs.numpy(), _rows_by_hand(z1, z2, t, sm.ntxent_targets(n, True).tolist()), atol=1e-5)
    right = torch.tensor(_rows_by_hand(z1, z2, t, sm.ntxent_targets(n).tolist()))   # same logits, correct labels
    differs = ~torch.isclose(theirs, right, atol=1e-6)
    assert differs.tolist() == [True] * n + [False] * n


def test_authors_equals_ntxent_plus_the_two_extra_terms():
    "L_authors = L_NT-Xent + mean positive cosine / (2 t) + mean_i log(1 + 1 / D_i), D_i the correct denominators."
    g = torch.Generator().manual_seed(3)
    for n, t in ((4, 0.5), (12, 0.5), (5, 0.3)):
        z1, z2 = torch.randn(n, 16, generator=g), torch.randn(n, 16, generator=g)
        u = F.normalize(torch.cat([z1, z2]), dim=1).double()
        s = torch.exp(u @ u.T / t)
        d = s.sum(1) - s.diagonal()
        c = F.cosine_similarity(z1.double(), z2.double(), dim=1)
        expected = NTXentLoss(t)(z1.double(), z2.double()) + c.mean() / (2 * t) + torch.log1p(1 / d).mean()
        assert math.isclose(sm.authors_nt_xent(z1, z2, t).item(), expected.item(), rel_tol=1e-5)


def test_authors_loss_never_below_log2():
    g = torch.Generator().manual_seed(4)
    draws = [sm.authors_nt_xent(torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g), t).item()
             for n in (1, 2, 8) for t in (0.1, 0.5, 2.0) for _ in range(30)]
    assert min(draws) > math.log(2)
    # with one image (no negatives) the floor is reached, exactly when the two views are orthogonal
    z = torch.randn(2, 1, 8, generator=g).requires_grad_()
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(300):
        loss = sm.authors_nt_xent(z[0], z[1]); opt.zero_grad(); loss.backward(); opt.step()
    assert math.isclose(loss.item(), math.log(2), abs_tol=1e-4)
    assert abs(F.cosine_similarity(z[0], z[1]).item()) < 0.02


def test_contrastive_loss_by_name():
    assert isinstance(sm.contrastive_loss('correct', 0.5), NTXentLoss)
    assert isinstance(sm.contrastive_loss('authors', 0.5), sm.AuthorsNTXentLoss)
    for bad in (dict(name='other'), dict(temperature=0), dict(temperature=float('nan'))):
        with pytest.raises(ValueError): sm.contrastive_loss(**bad)


# --- the video loss and its sampler --------------------------------------------------------------------------------

@pytest.mark.parametrize('p', [1, 2, 3, 5])
def test_video_weights_normalised_and_growing_with_distance(p):
    w = sm.VideoSimCLRLoss(p=p).weights
    assert math.isclose(w.sum().item(), 1.0, rel_tol=1e-6) and ((w >= 0) & (w <= 1)).all()
    assert (w[1:] > w[:-1]).all()
    assert torch.allclose(w, torch.tensor([i / (p * (p + 1) / 2) for i in range(1, p + 1)]))


def test_video_given_weights_are_normalised():
    assert torch.allclose(sm.VideoSimCLRLoss(weights=[0.1, 0.3, 0.4]).weights, torch.tensor([0.125, 0.375, 0.5]))
    for bad in (dict(weights=[1.2]), dict(weights=[-0.1, 0.5]), dict(weights=[0.0]), dict(weights=[]), dict(p=0), dict(),
                dict(p=2, weights=[0.5, 0.5]), dict(p=2, temperature=0)):
        with pytest.raises(ValueError): sm.VideoSimCLRLoss(**bad)


def test_video_loss_with_p1_is_ntxent_of_anchor_and_next_frame():
    g = torch.Generator().manual_seed(5)
    z0, z1 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    assert torch.isclose(sm.VideoSimCLRLoss(p=1)(z0, z1[:, None]), NTXentLoss(0.5)(z0, z1))


def test_video_loss_is_the_weighted_sum():
    g = torch.Generator().manual_seed(6)
    z0, zs = torch.randn(5, 6, generator=g), torch.randn(5, 3, 6, generator=g)
    expected = sum(w * NTXentLoss(0.5)(z0, zs[:, i]) for i, w in enumerate((1 / 6, 2 / 6, 3 / 6)))
    assert torch.isclose(sm.VideoSimCLRLoss(p=3)(z0, zs), expected)
    with pytest.raises(ValueError): sm.VideoSimCLRLoss(p=2)(z0, zs)


@pytest.mark.parametrize('p,k', [(0, 1), (1, 1), (3, 2), (2, 5)])
def test_frame_tuples_never_span_two_videos(p, k):
    lengths = [7, 1, 12, 4, 9]
    videos = np.repeat(np.arange(len(lengths)), lengths)
    t = sm.frame_tuples(videos.tolist(), p, k).numpy()
    assert t.shape[1] == p + 1
    assert (videos[t] == videos[t[:, :1]]).all()                      # one video per tuple
    assert (np.diff(t, axis=1) == k).all()                            # every k-th frame
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    expected = sum(max(0, len(range(0, n, k)) - p) for n in lengths)  # every sampled anchor with p sampled successors
    assert len(t) == expected and ((t[:, 0] - starts[videos[t[:, 0]]]) % k == 0).all()


@pytest.mark.skipif(not have_dataset('davis'), reason='DAVIS not staged')
def test_frame_tuples_on_davis():
    frames, videos = sm.davis_frames(32)
    assert frames.dtype == torch.uint8 and frames.shape[1:] == (3, 32, 32) and len(set(videos)) == len(sm.DAVIS_ANIMALS)
    t = sm.frame_tuples(videos, 3, 2)
    assert all(len({videos[i] for i in row}) == 1 for row in t.tolist())


# --- the schedule --------------------------------------------------------------------------------------------------

def _closed_form(epoch, base, spe, warm, restart):
    if epoch < warm:
        w = warm * spe
        return base * (1 / w + (1 - 1 / w) * epoch * spe / w)
    return base * 0.5 * (1 + math.cos(math.pi * ((epoch - warm) % restart) / restart))


@pytest.mark.parametrize('spe,warm,restart', [(1, 10, 50), (7, 10, 50), (3, 2, 5)])
def test_warmup_restarts_gives_the_intended_lr_at_chosen_epochs(spe, warm, restart):
    lrs = sm.schedule_lrs(spe, 300, 0.2, warmup_epochs=warm, restart_epochs=restart)
    for epoch in (0, 1, warm // 2, warm, warm + restart // 2, warm + restart - 1, warm + restart, warm + 2 * restart, 299):
        assert math.isclose(lrs[epoch * spe], _closed_form(epoch, 0.2, spe, warm, restart), rel_tol=1e-9, abs_tol=1e-12), epoch
    assert math.isclose(max(lrs), 0.2) and lrs[warm * spe] == max(lrs)


def test_warmup_restarts_matches_torch_restarts_after_warmup():
    "After the warm-up, epoch-start values equal torch's CosineAnnealingWarmRestarts stepped once per epoch."
    lrs = sm.schedule_lrs(4, 130, 1.0, warmup_epochs=10, restart_epochs=50)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=50)
    for epoch in range(10, 130):
        assert math.isclose(lrs[4 * epoch], opt.param_groups[0]['lr'], rel_tol=1e-9, abs_tol=1e-12), epoch
        opt.step(); ref.step()


def test_no_warmup():
    lrs = sm.schedule_lrs(2, 6, 1.0, warmup_epochs=0, restart_epochs=3)
    assert lrs[0] == 1.0 and lrs[6] == 1.0 and lrs[3] < 1.0


# --- networks ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('arch,stem,size', [('resnet18', 'modified', 32), ('resnet18', 'stock', 64), ('resnet34', 'modified', 48),
                                             ('resnet18', 'modified', 72), ('resnet34', 'stock', 96)])
def test_decoder_output_equals_input_resolution(arch, stem, size):
    net = sm.SegNet(sm.stem_encoder(arch, stem, 32 if stem == 'modified' else 64), n_classes=3).eval()
    x = torch.rand(2, 3, size, size)
    assert net(x).shape == (2, 3, size, size)


def test_stems():
    mod, stock = sm.stem_encoder('resnet34', 'modified', 32), sm.stem_encoder('resnet34', 'stock', 32)
    assert mod.stem[0].kernel_size == (3, 3) and mod.stem[0].stride == (1, 1) and isinstance(mod.stem[3], torch.nn.Identity)
    assert stock.stem[0].kernel_size == (7, 7) and stock.stem[0].stride == (2, 2) and isinstance(stock.stem[3], torch.nn.MaxPool2d)
    with pytest.raises(ValueError): sm.stem_encoder('resnet34', 'tiny', 32)


def test_projection_head_has_one_hidden_layer_with_bn():
    head = sm.SimCLRNet(sm.stem_encoder('resnet18', 'modified', 32)).head
    assert [type(m).__name__ for m in head] == ['Linear', 'BatchNorm1d', 'ReLU', 'Linear']


# --- data ----------------------------------------------------------------------------------------------------------

def test_label_subsets_nested_stable_and_counted():
    for seed in (0, 1, 7):
        s = [set(sc.label_subset(347, fraction=f, seed=seed)) for f in (0.01, 0.1)] + \
            [set(sc.label_subset(347, n_labels=37, seed=seed)), set(sc.label_subset(347, fraction=1.0, seed=seed))]
        assert [len(x) for x in s] == [3, 35, 37, 347]
        assert s[0] <= s[1] <= s[2] <= s[3] == set(range(347))
        assert np.array_equal(sc.label_subset(347, 0.1, seed=seed), sc.label_subset(347, 0.1, seed=seed))
    assert not np.array_equal(sc.label_subset(347, 0.1, seed=0), sc.label_subset(347, 0.1, seed=1))
    with pytest.raises(ValueError): sc.label_subset(10, n_labels=11)


def test_tiny_animals_are_the_imagenet_animal_wnids():
    assert len(sc.TINY_ANIMALS) == 59 and list(sc.TINY_ANIMALS) == sorted(sc.TINY_ANIMALS)
    assert all(w < 'n02666196' for w in sc.TINY_ANIMALS)       # ImageNet-1k's animals come before 'abacus'


def test_label_fractions_share_one_pretraining():
    _, a = sc.check_params('smoke', fraction=0.01)
    _, b = sc.check_params('smoke', n_labels=37, image_size=64, finetune_epochs=3, test_n=4)
    _, c = sc.check_params('smoke', stem='stock')
    assert sc.pretrain_settings(a) == sc.pretrain_settings(b) != sc.pretrain_settings(c)


# --- grid, names and tables ----------------------------------------------------------------------------------------

def test_grid_names_are_unique_and_valid():
    for scale in ('smoke', 'quick', 'cpu', 'gpu', 'paper'):
        g = sc.grid(scale)
        names = [sc.run_name(p, scale) for p in g]
        assert len(set(names)) == len(names) and all('%' not in n for n in names)
        for p in g: sc.check_cfg(sc.SPEC, sc.PRESETS, scale, **p)
    gpu = sc.grid('gpu')
    assert {(p['source'], p.get('stem', 'modified'), p.get('loss', 'correct')) for p in gpu if p['seed'] == 2} == \
        {(s, 'modified', 'correct') for s in sc.SOURCES} | {('none', 'stock', 'correct'), ('cifar10', 'stock', 'correct')}
    cpu = sc.grid('cpu')
    assert [(p['source'], p['seed']) for p in cpu[:4]] == [('none', 0), ('cifar10', 0), ('none', 1), ('cifar10', 1)]   # the pilot


def test_declared_claims_exactly_one_primary():
    assert sum(c.primary for c in sc.CLAIMS) == 1 and sc.CLAIMS[0].primary
    ids = {c.id for c in sc.CLAIMS}
    assert {'pretraining-beats-baseline', 'animals-beat-baseline', 'frames-beat-baseline', 'temporal-beat-baseline',
            'video-worse-at-1pct', 'animals-beat-cifar-with-more-data', 'same-at-100pct', 'slight-disparity'} <= ids
    assert not any('temporal-loss-helps' in i for i in ids)


def test_judge_on_a_hand_made_table():
    "Paired by seed: the t interval of the per-seed differences, computed by hand with scipy's t quantile."
    import pandas as pd
    from scipy import stats
    none, cifar = [0.50, 0.52, 0.49], [0.55, 0.58, 0.52]
    frames, temporal, animals = [0.53, 0.55, 0.50], [0.51, 0.53, 0.51], [0.56, 0.57, 0.54]
    rows = [dict(status='done', source=src, stem='modified', loss='correct', label_point='37 images', n_train=37, seed=s,
                 pixel_acc=v[s], miou=0.5)
            for src, v in (('none', none), ('cifar10', cifar), ('davis_frames', frames), ('davis_temporal', temporal),
                           ('tiny_animals', animals)) for s in range(3)]
    t = sc.verdicts(pd.DataFrame(rows)).set_index('id')
    d = 100 * (np.array(cifar) - np.array(none))                          # +5, +6, +3 points (the claims read %)
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert np.isclose(t.gap['pretraining-beats-baseline'], d.mean()) and np.isclose(t.lo['pretraining-beats-baseline'], d.mean() - half)
    assert t.verdict['pretraining-beats-baseline'] == ('holds' if d.mean() - half > 0 else 'inconclusive') == 'holds'
    # video (mean of frames and temporal) minus images (mean of cifar10 and animals), per seed: -3.5, -3.5, -2.5 points
    dv = 100 * ((np.array(frames) + np.array(temporal)) / 2 - (np.array(cifar) + np.array(animals)) / 2)
    assert np.isclose(t.gap['video-worse-at-1pct'], dv.mean())
    assert t.verdict['animals-beat-cifar-with-more-data'] == 'not run' and t.verdict['same-at-100pct'] == 'untestable'
    assert t.level['pretraining-beats-baseline'] == 0.05 and t.level['video-worse-at-1pct'] < 0.05   # Holm for the secondaries


def test_video_tuples_stay_out_of_their_own_negatives():
    lengths = dict(blackswan=50, camel=90, cows=104, dog=60, goat=90, horsejump=50, libby=49)
    tup = sm.frame_tuples([v for v, n in lengths.items() for _ in range(n)], p=3, k=2)
    assert sm.repeated_frames(tup) == (636, 678) and sm.repeated_frames(tup, masked=True) == (0, 678)
    m = sm.tuple_negatives(torch.tensor([[0, 2, 4], [2, 4, 6], [10, 12, 14]]), 1)   # rows: anchors 0, 2, 10; frames 2, 4, 12
    # columns: frames [0, 2, 10 | 2, 4, 12]; the diagonal (self) is dropped anyway, the positive (r + 3) % 6 is kept
    assert m[0].tolist() == [True, True, False, False, True, False]      # tuple {0, 2, 4}: frames 2 and 4 are not negatives
    assert m[1].tolist() == [False, True, False, True, False, False]     # tuple {2, 4, 6}: the other frame 2; frame 4 is its positive
    assert m[2].tolist() == [False, False, True, False, False, False]    # a tuple sharing nothing keeps every negative
    z0, zs = torch.randn(3, 8), torch.randn(3, 2, 8)
    far = torch.tensor([[0, 1, 2], [10, 11, 12], [20, 21, 22]])
    assert torch.isclose(sm.VideoSimCLRLoss(p=2)(z0, zs, far), sm.VideoSimCLRLoss(p=2)(z0, zs), atol=1e-6)


def test_video_sources_take_the_image_sources_steps():
    for scale in ('cpu', 'gpu'):
        cfg = sc.PRESETS[scale]
        img = sc.pretrain_schedule({**cfg, 'source': 'cifar10'}, 10 * (cfg['pretrain_images'] // 10))['steps']
        for src, n in (('davis_frames', 247), ('davis_temporal', 226)):
            assert abs(sc.pretrain_schedule({**cfg, 'source': src}, n)['steps'] - img) <= cfg['pretrain_epochs'], (scale, src)


@pytest.mark.skipif(not have_dataset('oxford_pets'), reason='Oxford-IIIT Pet not staged')
def test_report_writes_tables_and_figures(tmp_path):
    import pandas as pd
    rows, g = [], torch.Generator().manual_seed(0)
    for src in ('none', 'cifar10'):
        for pt, n in (('1%', 3), ('100%', 347)):
            run = f"{src}-{sc.slug(pt)}"
            sc.save_samples(tmp_path / run, torch.randint(0, 3, (8, 32, 32), dtype=torch.uint8, generator=g))
            rows.append(dict(status='done', scale='smoke', run=run, source=src, stem='modified', loss='correct', label_point=pt,
                             n_train=n, seed=0, pixel_acc=0.5 + 0.1 * (src == 'cifar10'), miou=0.3, image_size=32, test_n=8))
    names = {p.name for p in sc.report(pd.DataFrame(rows), tmp_path)}
    assert {'tables.md', 'pixel_acc.csv', 'claims.csv', 'fig2_pixel_acc.png', 'fig3_1pct.png', 'fig3_100pct.png'} <= names
    md = (tmp_path / 'tables.md').read_text()
    assert 'bar chart' in md and '60.0' in md and '50.0' in md
    assert len(np.load(tmp_path / 'none-1pct' / 'samples.npz')['pred']) == 6


# --- bad parameters stop the notebook before any work --------------------------------------------------------------

@pytest.mark.parametrize('bad', [dict(source='imagenet'), dict(fraction=0), dict(fraction=0.0), dict(fraction=1.5),
                                 dict(pretrain_epochs=-1), dict(finetune_epochs=-3), dict(n_labels=0), dict(stem='big'),
                                 dict(loss='wrong'), dict(image_size=40, stem='stock'), dict(source='cifar10', pretrain_epochs=0),
                                 dict(source='davis_temporal', loss='authors'), dict(lr=float('inf')), dict(unknown=1)])
def test_check_params_rejects(bad):
    with pytest.raises(ValueError): sc.check_params('smoke', **bad)


@pytest.mark.parametrize('args,message', [(['-p', 'fraction', '0'], 'fraction must be in (0, 1]'),
                                          (['-p', 'source', 'imagenet'], "source must be one of")])
def test_papermill_bad_parameter_fails_before_any_work(tmp_path, args, message):
    out = tmp_path / 'outputs'
    r = papermill('nbs/01_simclr.ipynb', tmp_path / 'executed.ipynb', '-p', 'scale', 'smoke', *args,
                  env={'SSL_STUDY_OUTPUTS': str(out), 'SSL_STUDY_CACHE': str(out / 'cache')})
    assert r.returncode != 0
    assert message in r.stdout + r.stderr
    assert not out.exists() or not [p for p in out.rglob('*') if p.is_file()]


# --- devices: the pre-training on several GPUs ---------------------------------------------------------------------

def _parameters(nb: str) -> set:
    import json, re
    from conftest import ROOT
    cell = next(c for c in json.loads((ROOT / nb).read_text())['cells'] if 'parameters' in c['metadata'].get('tags', []))
    return set(re.findall(r'^(\w+)\s*:\s*\w+\s*=\s*None', ''.join(cell['source']), re.M))


def test_devices_names_the_same_run_and_more_gpus_than_here_are_refused():
    assert 'devices' in sc.SPEC and 'devices' in _parameters(sc.NOTEBOOK) and all(p['devices'] == 1 for p in sc.PRESETS.values())
    assert 'devices: int (default None) ' in ' '.join(papermill('--help-notebook', sc.NOTEBOOK).stdout.split())   # papermill reads it
    for scale in ('quick', 'gpu'):
        assert all(sc.run_name(dict(x, devices=4), scale) == sc.run_name(x, scale) for x in sc.grid(scale))
    _, cfg = sc.check_params('smoke')
    assert sc.pretrain_settings({**cfg, 'devices': 4}) == sc.pretrain_settings(cfg)
    if torch.cuda.device_count() < 2:
        from ssl_study.runs import ParamError
        with pytest.raises(ParamError, match=r'devices=2: .* CUDA GPUs .* this machine has'): sc.check_params('smoke', devices=2)


def test_pretrain_goes_through_cache_pretrain_and_devices_keeps_its_cache_entry(monkeypatch, outputs):
    import cloudpickle
    from torch.utils.data import TensorDataset
    calls, real = [], sc.cache.pretrain
    monkeypatch.setattr(sc.cache, 'pretrain', lambda *a, **kw: calls.append((a, kw)) or real(*a, **kw))
    data = TensorDataset(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    cfg = dict(sc.PRESETS['smoke'], pretrain_batch=4)
    r1, hit1 = sc.pretrain_encoder(cfg, data, device='cpu')
    assert not hit1 and len(r1['history']) == 1 and calls[0][1]['devices'] == 1
    r2, hit2 = sc.pretrain_encoder({**cfg, 'devices': 2}, data, device='cpu')    # asked on 2 devices: found where 1 device stored it
    assert hit2 and calls[1][1]['devices'] == 2 and all(torch.equal(r1['state'][k], r2['state'][k]) for k in r1['state'])
    (name, settings, build, step, data), kw = cloudpickle.loads(cloudpickle.dumps(calls[1]))    # what torchrun's workers get
    assert name == 'simclr' and 'devices' not in settings
    torch.manual_seed(0)
    assert torch.isfinite(step(build(), (data.tensors[0][:4],)))


# ---------------------------------------------------------------------------------------------------
# figures a reader can read: the all-background line, no one-seed error bars, colour keys, class names
# ---------------------------------------------------------------------------------------------------

def test_fig2_starts_at_zero_with_the_all_background_line_and_no_one_seed_error_bars():
    import pandas as pd
    one_seed = pd.DataFrame({'37': ['61.2', '70.0'], '100%': ['66.0', '71.0']}, index=['none', 'cifar10'])
    ax = sc._bars(one_seed, 'Fig. 2', 0.59).axes[0]
    assert ax.get_ylim() == (0, 100) and 'n = 1' in ax.get_title()
    assert [type(c).__name__ for c in ax.containers] == ['BarContainer', 'BarContainer']       # no error bars
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ['all background (59.0 %)', 'none', 'cifar10']
    seeds = one_seed.assign(**{'37': ['61.2 ± 1.0', '70.0 ± 2.0']})
    assert any(type(c).__name__ == 'ErrorbarContainer' for c in sc._bars(seeds, 'Fig. 2', 0.59).axes[0].containers)


def test_the_all_background_score_of_the_staged_pet_trimaps():
    try: acc = sc.background_acc(32)
    except FileNotFoundError: pytest.skip('no Oxford-IIIT Pet in the data root')
    assert 0.5 < acc < 0.7                          # about 59 % on the staged subset


def test_fig3_has_a_colour_key_and_the_tsne_names_the_classes():
    import numpy as np
    from ssl_study.plots import image_rows
    fig = sc.mask_key(image_rows({'image': torch.rand(2, 3, 8, 8)}))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ['pet', 'border', 'background (untinted)']
    from ssl_study.plots import tsne_figure
    fig = tsne_figure(np.random.default_rng(0).normal(size=(40, 5)), np.arange(40) % 10, sc.CIFAR10_CLASSES)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == list(sc.CIFAR10_CLASSES)
