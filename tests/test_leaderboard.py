"""The leaderboard's protocol: the budget is enforced and recorded, longer budgets extend shorter ones from the cache,
every method sees the same data and evaluation split, and the read-outs are the toolbox's."""
import math, time
import numpy as np, pandas as pd, pytest, torch, torch.nn as nn
from torch.utils.data import TensorDataset
import ssl_study.evaluate as ev
import ssl_study.papers.leaderboard as lb
import ssl_study.papers.leaderboard_methods as lbm
from ssl_study.loaders import TensorLoader
from ssl_study.runs import ParamError
from ssl_study.train import fit


def ids_loader(n=50, batch=5, seed=0):
    "Batches of the indices 0..n-1, shuffled per epoch: each batch says which items it holds."
    return TensorLoader(torch.arange(n), batch_size=batch, shuffle=True, drop_last=True, seed=seed, device='cpu')


class Slow:
    "A training step that takes at least `dt` seconds and records its batch."
    def __init__(self, dt): self.dt, self.seen = dt, []
    def __call__(self, model, batch):
        self.seen.append(batch[0].clone()); time.sleep(self.dt)
        return model(batch[0].float()[:, None]).pow(2).mean()


def run(stream, step, model=None):
    model = model or nn.Linear(1, 1)
    fit(model, stream, step, torch.optim.SGD(model.parameters(), lr=0.0), 1, device='cpu', progress=False)
    return stream.state


@pytest.mark.parametrize('budget, dt', [(0.12, 0.02), (0.05, 0.03), (0.01, 0.02)])
def test_a_run_stops_within_one_step_of_its_budget_and_records_it(budget, dt):
    step = Slow(dt)
    s, n = run(lb.Budget(ids_loader(), budget), step), len(step.seen)
    assert s['steps'] == n >= 1 and s['images'] == 5 * n              # every step the loop took is counted
    assert s['seconds'] >= budget > s['seconds'] - s['last_step']      # it stopped at the first step that reached the budget
    assert s['last_step'] >= dt and s['seconds'] >= n * dt             # the clock covers the steps
    assert (n - 1) * dt < budget                                       # all steps but the last started below the budget
    assert s['epoch'] * 10 + s['batch'] == n                           # 10 batches an epoch: where the stream stands


def test_a_continued_budget_sees_the_batches_of_one_uninterrupted_run():
    step = Slow(0.01)
    a = lb.Budget(ids_loader(seed=3), 0.04, seed=3); run(a, step)
    b = lb.Budget(ids_loader(seed=3), 0.3, seed=3, state=a.state); run(b, step)
    got, n = torch.cat(step.seen), len(step.seen)
    assert b.state['steps'] == n > 10 and a.state['steps'] < n         # two segments, across an epoch boundary
    ref = Slow(0.0)                                                    # `fit` over the plain loader, seeded by `fit`
    fit(nn.Linear(1, 1), ids_loader(seed=3), ref, torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.0), 2 + n // 10,
        seed=3, device='cpu', progress=False)
    assert torch.equal(got, torch.cat(ref.seen[:n]))


def test_budget_rejects_bad_settings():
    for bad in (0, -1.0, math.inf, math.nan, True):
        with pytest.raises(ValueError): lb.Budget(ids_loader(), bad)
    with pytest.raises(ValueError): lb.Budget(ids_loader(n=4, batch=5), 1.0)      # no batch at all


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


def fake_method(dt=0.01):
    "A method that takes at least `dt` seconds a step, trained with Adam (whose state counts the steps)."
    step = lambda m, b: (time.sleep(dt), m(b[0].float()).pow(2).mean())[1]
    return lb.Method('fake', lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 2)), lambda m: m, step,
                     lambda ps: torch.optim.Adam(ps, lr=1e-3), batch_size=4, settings=dict(dt=dt))


def test_a_longer_budget_extends_the_cached_shorter_one(outputs):
    train = TensorDataset(torch.randint(0, 256, (40, 3, 4, 4), dtype=torch.uint8), torch.arange(40) % 2)
    m, cfg = fake_method(), dict(seed=0, first_budget=0.05)
    r1, hit1 = lb.pretrain(m, cfg, train, 0.05, 'cpu')
    r2, hit2 = lb.pretrain(m, cfg, train, 0.1, 'cpu')
    assert not hit1 and not hit2 and lb.pretrain(m, cfg, train, 0.1, 'cpu')[1]
    assert len(r2['history']) == 2 and r2['history'][0] == r1['history'][0]       # 0.1 s went on from the cached 0.05 s
    s1, s2 = r1['stream'], r2['stream']
    assert s2['steps'] > s1['steps'] and s2['images'] == 4 * s2['steps'] and s2['epoch'] * 10 + s2['batch'] == s2['steps']
    assert 0.1 <= s2['seconds'] < 0.1 + s2['last_step']                          # within one step of the budget
    assert float(r2['opt']['state'][0]['step']) == s2['steps']                   # Adam took every step of both segments
    r4, _ = lb.pretrain(m, cfg, train, 0.2, 'cpu')
    assert r4['history'][:2] == r2['history'] and len(list((outputs / 'cache' / 'leaderboard-fake').iterdir())) == 3


def test_check_params_and_the_ladder():
    assert lb.ladder(30, 7.5) == [7.5, 15, 30] and lb.ladder(7.5, 7.5) == [7.5]
    assert lb.ladder(20, 7.5) is None and lb.ladder(0, 7.5) is None and lb.ladder(3.75, 7.5) is None
    assert lb.check_params('smoke', method='random')[1]['budget'] == 0
    for bad in (dict(budget=0.75), dict(budget=0), dict(method='random', budget=1.0), dict(method='byol'), dict(first_budget=0),
                dict(knn_k=0), dict(budget=math.nan), dict(unknown=1)):
        with pytest.raises(ParamError): lb.check_params('smoke', **bad)


def test_the_grid_is_declared_once_and_runs_shorter_budgets_first():
    for scale in lb.PRESETS:
        g = lb.grid(scale)
        for r in g: lb.check_params(scale, **r)
        assert len({lb.run_name(lb.check_params(scale, **r)[1], scale) for r in g}) == len(g)
        for m in lb.METHODS[1:]:
            b = [r['budget'] for r in g if r['method'] == m and r['seed'] == 0]
            assert b == sorted(b) == lb.ladder(lb.PRESETS[scale]['budget'], lb.PRESETS[scale]['first_budget'])
    top = lb.PRESETS['gpu']['budget']
    assert {r['seed'] for r in lb.grid('gpu')} == {0, 1, 2} and {r['budget'] for r in lb.grid('gpu') if r['seed'] > 0} == {0.0, top}


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


def test_labelled_subsets_are_stratified_and_fixed():
    ds = TensorDataset(torch.randn(2000, 1), torch.arange(2000) % 10)
    for f, per in ((0.01, 2), (0.1, 20)):
        a, b = lb.labelled(ds, f), lb.labelled(ds, f)
        assert torch.equal(a.tensors[1].bincount(), torch.full((10,), per)) and torch.equal(a.tensors[0], b.tensors[0])
    small = lb.labelled(TensorDataset(torch.randn(30, 1), torch.arange(30) % 10), 0.01)
    assert torch.equal(small.tensors[1].bincount(), torch.ones(10, dtype=torch.long))   # at least one per class


def test_every_method_sees_the_same_data_and_split_and_the_toolbox_reads_it_out(outputs, monkeypatch):
    calls = []
    for name in ('knn_accuracy', 'linear_probe', 'finetune'):
        def record(*a, _f=getattr(ev, name), _name=name, **k):
            calls.append((_name, a, k)); return _f(*a, **k)
        monkeypatch.setattr(ev, name, record)
    train, test = lb.board_data(lb.PRESETS['smoke'])
    seen = {}
    for method in ('random', 'pyramid', 'overlay'):
        calls.clear()
        scale, cfg = lb.check_params('smoke', method=method, **({} if method == 'random' else dict(budget=0.5)))
        metrics, history = lb.run_method(cfg, scale, 'cpu')
        seen[method] = metrics['data_fingerprint'], metrics['split_fingerprint']
        assert [c[0] for c in calls] == ['knn_accuracy', 'linear_probe', 'finetune', 'finetune']
        (_, (fx, fy, tx, ty), knn) = calls[0]
        assert knn['k'] == 200 and np.array_equal(fy, train.tensors[1].numpy()) and np.array_equal(ty, test.tensors[1].numpy())
        for (_, a, k), f in zip(calls[2:], lb.LABEL_FRACTIONS):
            labels = a[2].dl.dataset.tensors[1]                              # the fine-tuning images: per class, 1 here
            assert torch.equal(labels.bincount(), torch.ones(10, dtype=torch.long)) and len(a[3].dataset) == len(test)
        assert metrics['images_seen'] == metrics['steps'] * metrics['batch_size'] and len(history) == (method != 'random')
        assert method == 'random' or 0.5 <= metrics['step_seconds'] < 0.5 + metrics['last_step_seconds']
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
    for m, base in (('random', 20), ('simclr', 40), ('pyramid', 30), ('supervised', 60)):
        for b in ((0.0,) if m == 'random' else (7.5, 15.0, 30.0)):
            for s in ((0, 1, 2) if b in (0.0, 30.0) else (0,)):
                acc = base + b / 3 + 2 * s
                rows.append(dict(status='done', scale='gpu', method=m, budget=b, seed=s, knn_acc=acc, linear_acc=acc + 1, ft1_acc=acc - 5,
                                 ft10_acc=acc + 3 - 20 * (m == 'pyramid' and b == 7.5), steps=100 * (m != 'random'),
                                 images_seen=25600 * (m != 'random'), epochs=0.5, step_seconds=b, train_flops=3e14 * (m != 'random'),
                                 budget_device='NVIDIA H100'))
    return pd.DataFrame(rows + [dict(status='failed', method='selfie', budget=30.0, seed=0)])


def test_tables_reading_and_report(tmp_path):
    df = fake_results()
    board, curve = lb.tables(df)
    b = board.set_index('method')
    assert list(board.method[:4]) == ['supervised', 'simclr', 'pyramid', 'random']
    assert b.loc['simclr', 'kNN'] == '52.0 ± 2.0' and b.loc['random', 'kNN'] == '22.0 ± 2.0'     # mean and sample std of 3 seeds
    assert b.loc['simclr', 'seeds'] == 3 and b.loc['selfie', 'seeds'] == 0 and b.loc['selfie', 'kNN'] == '–'
    assert b.loc['simclr', 'TFLOPs'] == 300 and b.loc['simclr', 'ms / step'] == 300.0            # 30 s / 100 steps
    assert len(curve) == 1 + 3 * 3 and curve[(curve.method == 'pyramid') & (curve.budget == 7.5)]['fine-tune 10%'].item() == 15.5
    lines = lb.reading(df)
    assert lines[0] == 'at 7.5 s: kNN: simclr (42.5); linear: simclr (43.5); fine-tune 1%: simclr (37.5); fine-tune 10%: simclr (45.5)'
    simclr = next(l for l in lines if l.startswith('simclr:'))
    assert 'fine-tune 10% +30.0' in simclr and next(l for l in lines if l.startswith('selfie:')).endswith('not run yet')
    files = lb.report(df, tmp_path)
    assert {f.name for f in files} == {'leaderboard.md', 'board.csv', 'curve.csv', 'accuracy_vs_budget.png'}
    assert '52.0 ± 2.0' in (tmp_path / 'leaderboard.md').read_text()
