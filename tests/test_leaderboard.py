"""The leaderboard's protocol: the budget is training FLOPs turned into steps before training (the same on every machine),
every method trains under the same schedule shape and learning-rate rule, every method of a seed sees the same data and
evaluation split, the read-outs are the toolbox's, and the board reports intervals and verdicts."""
import math, threading
import numpy as np, pandas as pd, pytest, torch, torch.nn as nn
from torch.utils.data import TensorDataset
import ssl_study.evaluate as ev
import ssl_study.papers.leaderboard as lb
import ssl_study.papers.leaderboard_methods as lbm
from ssl_study.runs import ParamError


def linear_method(B=4, lr=0.1):
    "A linear model on flattened 32 px images: one step costs 4 B I O FLOPs (forward 2BIO, weight gradient 2BIO)."
    return lb.Method('linear', lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2)), lambda m: m,
                     lambda m, b: m(b[0].float() / 255).pow(2).mean(), lambda ps: torch.optim.SGD(ps, lr=lr), B, settings=dict(lr=lr))


def test_the_step_count_is_a_pure_function_of_method_budget_and_batch():
    for B in (2, 5):
        lb._FLOPS.clear()
        m, per_step = linear_method(B), 4 * B * 3 * 32 * 32 * 2
        busy = threading.Thread(target=lambda: [torch.randn(400, 400) @ torch.randn(400, 400) for _ in range(300)])
        busy.start(); loaded = lb.train_steps(m, 0.37); busy.join()       # once with the CPU busy, once idle and uncached
        lb._FLOPS.clear()
        assert loaded == lb.train_steps(m, 0.37) == 370_000_000_000 // per_step and lb.flops_per_step(m) == per_step
    assert lb.train_steps(linear_method(2), 1e-9) == 0


def test_step_flops_match_the_closed_form_and_leave_model_and_random_state_alone():
    B, I, H, O = 3, 7, 11, 5
    mlp = nn.Sequential(nn.Linear(I, H), nn.ReLU(), nn.Dropout(0.5), nn.Linear(H, O))
    x = torch.randn(B, I)
    torch.manual_seed(1); before = torch.rand(3)
    torch.manual_seed(1)
    # forward 2B(IH + HO); backward: weight gradients 2B(IH + HO), input gradient of the second layer only 2BHO
    assert lb.step_flops(mlp, lambda m, b: m(b[0]).sum(), (x,)) == 4 * B * I * H + 6 * B * H * O
    assert torch.equal(torch.rand(3), before) and all(p.grad is None for p in mlp.parameters())
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)                   # forward and weight gradient: 2 x 2 x (2 x 4 x 64 x 27)
    assert lb.step_flops(conv, lambda m, b: m(b[0]).sum(), (torch.randn(2, 3, 8, 8),)) == 2 * 2 * (2 * 4 * 64 * 27)


def test_pretrain_runs_exactly_the_budget_steps_under_the_board_schedule_from_the_cache(outputs):
    lb._FLOPS.clear()
    m, data = linear_method(4), TensorDataset(torch.randint(0, 256, (45, 3, 32, 32), dtype=torch.uint8))
    budget = (23 * lb.flops_per_step(m) + 1) / 1e12                     # 23 steps and a FLOP
    r, hit = lb.pretrain(m, dict(seed=0), data, budget, 'cpu')
    assert not hit and r['steps'] == 23 and r['images'] == 92 and len(r['history']) == 3     # passes of 11, 11 and 1 batches
    assert r['history'][-1]['lr'] == 0.0 and r['history'][0]['lr'] > 0            # the cosine ends at the budget's last step
    r2, hit2 = lb.pretrain(m, dict(seed=0), data, budget, 'cpu')
    assert hit2 and all(torch.equal(r['state'][k], r2['state'][k]) for k in r['state'])
    settings = next((outputs / 'cache' / 'leaderboard-linear').iterdir()) / 'settings.json'
    assert '"steps": 23' in settings.read_text() and 'device' not in settings.read_text()
    with pytest.raises(ParamError): lb.pretrain(m, dict(seed=0), data, 1e-9, 'cpu')   # below one step


def test_every_method_has_the_same_schedule_shape_and_the_same_lr_rule():
    shapes = []
    for name in lb.METHODS[1:]:
        m = lb.build_method(name, 'gpu'); opt = m.make_opt(nn.Linear(2, 2).parameters()); sch = lbm.schedule(opt, 100)
        lr0 = opt.param_groups[0]['initial_lr']
        shapes.append([(opt.step(), sch.step(), opt.param_groups[0]['lr'] / lr0)[2] for _ in range(100)])
        assert m.batch_size == lbm.BATCH['gpu'] and math.isclose(m.settings['lr'], lr0)
    assert all(np.allclose(s, shapes[0]) for s in shapes) and shapes[0][3] == 1.0 and shapes[0][-1] == 0.0
    assert math.isclose(lb.build_method('overlay', 'cpu').settings['lr'], 0.05 * 64 / 256)              # SGD: linear rule
    assert math.isclose(lb.build_method('simclr', 'cpu').settings['lr'], 1e-3 * math.sqrt(64 / 256))    # Adam: square root


def test_the_handicaps_are_gone():
    pm = lb.build_method('pyramid', 'smoke').build()
    assert all(not isinstance(d[-1], nn.ReLU) for d in pm.decoders) and (pm(torch.randn(2, 3, 32, 32)) < 0).any()
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)); net[1].running_mean.fill_(5.0)
    imgs = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8)
    lb.recalibrate_bn(net, imgs, lambda x: x.float() / 255, batch=100)
    out = net[0](imgs.float() / 255).detach()
    assert torch.allclose(net[1].running_mean, out.mean((0, 2, 3)), atol=1e-5) and not net.training and net[1].momentum == 0.1
    batch_vars = torch.stack([o.var((0, 2, 3)) for o in out.split(100)])     # per batch, unbiased: the mean of the three
    assert torch.allclose(net[1].running_var, batch_vars.mean(0), rtol=1e-3)


def test_check_params_and_the_ladder():
    assert lb.ladder(30, 7.5) == [7.5, 15, 30] and lb.ladder(7.5, 7.5) == [7.5]
    assert lb.ladder(20, 7.5) is None and lb.ladder(0, 7.5) is None and lb.ladder(3.75, 7.5) is None
    assert lb.check_params('smoke', method='random')[1]['budget'] == 0
    for bad in (dict(budget=0.75), dict(budget=0), dict(method='random', budget=1.0), dict(method='byol'), dict(first_budget=0),
                dict(knn_k=0), dict(budget=math.nan), dict(unknown=1)):
        with pytest.raises(ParamError): lb.check_params('smoke', **bad)


def test_the_grid_runs_every_budget_point_with_every_seed_pilot_first():
    for scale in lb.PRESETS:
        g, p = lb.grid(scale), lb.PRESETS[scale]
        for r in g: lb.check_params(scale, **r)
        assert len({lb.run_name(lb.check_params(scale, **r)[1], scale) for r in g}) == len(g)
        seeds = set(lb.SEEDS[scale])
        for m in lb.METHODS[1:]:
            for b in lb.ladder(p['budget'], p['first_budget']):
                assert {r['seed'] for r in g if r['method'] == m and r['budget'] == b} == seeds
        n = len(seeds)
        assert [r['method'] for r in g[:2 * n]] == ['random'] * n + ['simclr'] * n and g[n]['budget'] == p['budget']
    assert len(lb.grid('cpu')) == 26 and lb.RUN_MINUTES['cpu'] <= 30


def test_every_method_steps_at_least_once_at_smoke():
    for name in lb.METHODS[1:]:
        m = lb.build_method(name, 'smoke')
        assert lb.train_steps(m, lb.PRESETS['smoke']['first_budget']) >= 1, name


@pytest.mark.parametrize('name', lb.METHODS)
def test_every_method_trains_the_same_backbone(name):
    m = lb.build_method(name, 'smoke')
    model = m.build(); enc = m.encoder(model)
    ref = {k: v.shape for k, v in lbm.board_backbone().state_dict().items()}
    assert {k: v.shape for k, v in enc.state_dict().items()} == ref and enc.cifar_stem and enc.feat_dim == 512
    if m.step is None: return
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    loss = m.step(model, (x, torch.arange(4)) if m.labels else (x,)); loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())   # the task reaches every layer


def test_labelled_subsets_are_stratified_and_drawn_per_seed():
    ds = TensorDataset(torch.arange(2000), torch.arange(2000) % 10)
    for f, per in ((0.01, 2), (0.1, 20)):
        a, b, c = lb.labelled(ds, f, 0), lb.labelled(ds, f, 0), lb.labelled(ds, f, 1)
        assert torch.equal(a.tensors[1].bincount(), torch.full((10,), per)) and torch.equal(a.tensors[0], b.tensors[0])
        assert not torch.equal(a.tensors[0], c.tensors[0])
    small = lb.labelled(TensorDataset(torch.randn(30, 1), torch.arange(30) % 10), 0.01)
    assert torch.equal(small.tensors[1].bincount(), torch.ones(10, dtype=torch.long))   # at least one per class
    (tr0, te0), (tr1, te1) = (lb.board_data(dict(lb.PRESETS['smoke'], seed=s)) for s in (0, 1))
    assert not torch.equal(tr0.tensors[0], tr1.tensors[0]) and torch.equal(te0.tensors[0], te1.tensors[0])


def test_every_method_sees_the_same_data_and_split_and_the_toolbox_reads_it_out(outputs, monkeypatch):
    "Random init (no training) and overlay (trained, reads [0, 1] images): the same images, labels, split and read-outs."
    calls = []
    for name in ('knn_accuracy', 'linear_probe', 'finetune'):
        def record(*a, _f=getattr(ev, name), _name=name, **k):
            calls.append((_name, a, k)); return _f(*a, **k)
        monkeypatch.setattr(ev, name, record)
    train, test = lb.board_data(lb.PRESETS['smoke'])
    seen = {}
    for method in ('random', 'overlay'):
        calls.clear()
        scale, cfg = lb.check_params('smoke', method=method, **({} if method == 'random' else dict(budget=0.06)))
        metrics, history = lb.run_method(cfg, scale, 'cpu')
        seen[method] = metrics['data_fingerprint'], metrics['split_fingerprint']
        assert [c[0] for c in calls] == ['knn_accuracy', 'linear_probe', 'finetune', 'finetune']
        (_, (fx, fy, tx, ty), knn) = calls[0]
        assert knn['k'] == 200 and np.array_equal(fy, train.tensors[1].numpy()) and np.array_equal(ty, test.tensors[1].numpy())
        for (_, a, k), f in zip(calls[2:], lb.LABEL_FRACTIONS):
            labels = a[2].dl.dataset.tensors[1]                              # the fine-tuning images: per class, 1 here
            assert torch.equal(labels.bincount(), torch.ones(10, dtype=torch.long)) and len(a[3].dataset) == len(test)
        assert metrics['images_seen'] == metrics['steps'] * metrics['batch_size'] and len(history) == (method != 'random')
        if method != 'random':
            m = lb.build_method(method, 'smoke')
            assert metrics['steps'] == lb.train_steps(m, 0.06) and metrics['train_flops'] == metrics['steps'] * lb.flops_per_step(m)
    assert len(set(seen.values())) == 1


def test_the_readouts_are_the_ones_the_paper_notebooks_use():
    import ssl_study.papers.overlay as ov, ssl_study.papers.simsiam_method as ssm
    assert ov.knn_accuracy is ev.knn_accuracy and ov.linear_probe is ev.linear_probe and ov.finetune is ev.finetune
    assert ov.extract_features is ev.extract_features and ssm.knn_accuracy is ev.knn_accuracy


def test_the_sweep_runs_the_grid_and_the_first_slot_is_seed_0(monkeypatch):
    import ssl_study.sweep as sw
    monkeypatch.setitem(sw.PAPERS, 'leaderboard', 'ssl_study.papers.leaderboard')     # the line the sweep's PAPERS needs
    runs = sw.plan('leaderboard', 'gpu')
    assert [r.params for r in runs] == lb.grid('gpu') and {r.notebook for r in runs} == {lb.NOTEBOOK}
    slot1 = sw.plan('leaderboard', 'gpu', extra={'seed': 0})                     # `ssl-study run ... -p seed 0`
    assert [r.name for r in slot1] == [r.name for r in runs if r.params['seed'] == 0] and len(slot1) == 1 + 6 * 3


def fake_results():
    rows = []
    for m, base in (('random', 20), ('simclr', 40), ('simsiam', 40), ('pyramid', 30), ('supervised', 60)):
        for b in ((0.0,) if m == 'random' else (75.0, 150.0, 300.0)):
            for s in ((0, 1, 2) if b in (0.0, 300.0) else (0,)):
                acc = base + b / 30 + 2 * s + (0.5 * (-1) ** s if m == 'simsiam' else 0)
                rows.append(dict(status='done', scale='gpu', method=m, budget=b, seed=s, knn_acc=acc, linear_acc=acc + 1, ft1_acc=acc - 5,
                                 ft10_acc=acc + 3, steps=100 * (m != 'random'), images_seen=25600 * (m != 'random'),
                                 train_flops=b * 1e12, ms_per_step=30.0 if m != 'random' else None, timed_on='NVIDIA H100'))
    return pd.DataFrame(rows + [dict(status='failed', method='selfie', budget=300.0, seed=0)])


def test_the_board_has_intervals_ranks_with_verdicts_and_judges_the_claims(tmp_path):
    df = fake_results()
    board, curve = lb.tables(df)
    b = board.set_index('method')
    assert list(board.method[:2]) == ['supervised', 'simsiam'] and b.loc['random', 'seeds'] == 3
    half = 4.302652729911275 * 2 / math.sqrt(3)                         # t(0.975, 2) x sd 2 / sqrt(3)
    assert b.loc["simclr", "kNN"] == f"{52:.1f} ± {half:.1f}" and b.loc['selfie', 'kNN'] == '–'
    assert b.loc['simclr', 'TFLOPs'] == 300 and b.loc['simclr', 'ms / step (this machine)'] == 30.0
    c = curve.set_index(['method', 'budget (TFLOPs)'])
    assert c.loc[('pyramid', 75.0), 'kNN'] == '32.5 (1 seed)' and len(curve) == 1 + 4 * 3      # one seed: no interval, never ± 0
    assert lb.ci95([3.0])[1] != lb.ci95([3.0])[1] and lb.ci95([1.0, 3.0])[1] == pytest.approx(12.706204736 * math.sqrt(2) / math.sqrt(2))
    rk = lb.ranking(df).set_index('method')
    assert rk.index[0] == 'simsiam' and rk.loc['simclr', 'against the best'] == 'tied with the best'
    assert rk.loc['pyramid', 'against the best'] == 'behind the best'                # 10 points on every seed
    v = lb.verdicts(df).set_index('id')
    assert v.loc['simclr-beats-random', 'verdict'] == 'holds' and v.loc['selfie-beats-random', 'verdict'] == 'not run'
    files = lb.report(df, tmp_path)
    assert {f.name for f in files} == {'leaderboard.md', 'board.csv', 'curve.csv', 'accuracy_vs_budget.png'}
    md = (tmp_path / 'leaderboard.md').read_text()
    assert f"52.0 ± {half:.1f}" in md and 'tied with the best' in md and 'simclr-beats-random' in md
