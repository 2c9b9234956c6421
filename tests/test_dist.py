"""One run in several processes: `train.fit` under DDP, the gathered NT-Xent, rank 0 alone writing, and
`cache.pretrain(..., devices=2)` through torchrun. Two CPU processes with the gloo backend stand in for two GPUs.

The references are independent of the code under test: a single process on the whole (global) batch, the NT-Xent
formula evaluated by hand, lightly's NTXentLoss(gather_distributed=True). The models of the equality tests have no
BatchNorm: PyTorch's SyncBatchNorm (what fit uses on GPUs, statistics over the global batch) runs on GPUs only, and
per-process BatchNorm over half the batch is rightly a different computation from BatchNorm over all of it. The
SyncBatchNorm path is checked on a GPU (two processes sharing it through gloo) where one is present."""
import datetime, json, math, os, socket, sys
import pytest, torch, torch.nn as nn, torch.nn.functional as F
import torch.distributed as dist, torch.multiprocessing as mp
from torch.utils.data import TensorDataset
from ssl_study.ssl import NTXentLoss
from ssl_study.train import fit, make_loader, save_atomic
from ssl_study.device import rank, seed_everything, world_size
from ssl_study.loaders import TensorLoader
from ssl_study.runs import RunContext, finish, write_json

N, D = 8, 5                     # the global batch of the NT-Xent tests; each of 2 ranks holds 4 images


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _entry(r, fn, world, port, *args):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(r), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=r, world_size=world, timeout=datetime.timedelta(seconds=120))   # a hang fails
    try: fn(r, world, *args)
    finally: dist.destroy_process_group()


def _spawn(fn, world, *args):
    "Run `fn(rank, world, *args)` in `world` fresh processes joined in a gloo group."
    mp.start_processes(_entry, args=(fn, world, _free_port(), *args), nprocs=world, start_method='spawn')


# ---------------------------------------------------------------------------------------------------
# NT-Xent over the global batch
# ---------------------------------------------------------------------------------------------------

def _views():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, D, generator=g), torch.randn(N, D, generator=g)


def _ntxent_ranks(r, w, out):
    from lightly.loss import NTXentLoss as LightlyNTXent
    z1, z2 = _views()
    n = N // w
    a1, a2 = (z[r * n:(r + 1) * n].clone().requires_grad_() for z in (z1, z2))
    loss = NTXentLoss(0.3)(a1, a2)
    loss.backward()
    rec = dict(loss=loss.item(), g1=a1.grad.tolist(), g2=a2.grad.tolist(),
               lightly=LightlyNTXent(0.3, gather_distributed=True)(a1, a2).item(),
               local=NTXentLoss(0.3, gather=False)(a1, a2).item())
    (out / f'rank{r}.json').write_text(json.dumps(rec))


def _by_hand(z1, z2, t):
    "Each of the 2N anchors' term -log(exp(u_i.u_j(i)/t) / sum_{k != i} exp(u_i.u_k/t)), in plain Python."
    u = F.normalize(torch.cat([z1, z2]), dim=1).tolist()
    e = lambda a, b: math.exp(sum(p * q for p, q in zip(u[a], u[b])) / t)
    return [-math.log(e(i, (i + N) % (2 * N)) / sum(e(i, k) for k in range(2 * N) if k != i)) for i in range(2 * N)]


def test_gathered_ntxent_equals_one_process(tmp_path):
    _spawn(_ntxent_ranks, 2, tmp_path)
    ranks = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1)]
    z1, z2 = _views()
    z1.requires_grad_(); z2.requires_grad_()
    whole = NTXentLoss(0.3)(z1, z2)
    whole.backward()
    terms = _by_hand(z1.detach(), z2.detach(), 0.3)
    for r, rec in enumerate(ranks):           # rank r: the mean over its own anchors, against every rank's negatives
        mine = terms[r * 4:(r + 1) * 4] + terms[N + r * 4:N + (r + 1) * 4]
        assert math.isclose(rec['loss'], sum(mine) / len(mine), rel_tol=1e-5)
        assert math.isclose(rec['loss'], rec['lightly'], rel_tol=1e-5)
        assert abs(rec['local'] - rec['loss']) > 1e-3          # gather=False: the rank's own 4 images only
    assert math.isclose((ranks[0]['loss'] + ranks[1]['loss']) / 2, whole.item(), rel_tol=1e-6)
    # DDP averages the ranks' gradients: that average is the gradient of the loss over the global batch
    g1 = torch.tensor(ranks[0]['g1'] + ranks[1]['g1']) / 2
    g2 = torch.tensor(ranks[0]['g2'] + ranks[1]['g2']) / 2
    assert torch.allclose(g1, z1.grad, atol=1e-6) and torch.allclose(g2, z2.grad, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# fit: two processes, one global batch; resume; rank 0 alone writes
# ---------------------------------------------------------------------------------------------------

def _train(kind, ckpt=None, epochs=2):
    "A SimCLR-like run without augmentation: an MLP on fixed pairs of views, NT-Xent, SGD with momentum."
    seed_everything(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(40, 8, generator=g), torch.randn(40, 8, generator=g)
    dl = (TensorLoader(x1, x2, batch_size=8, shuffle=True, seed=3, device='cpu') if kind == 'tensor'
          else make_loader(TensorDataset(x1, x2), 8, shuffle=True, seed=3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    crit = NTXentLoss(0.5)
    def evaluate(m):          # on rank 0 alone: a loss (which would gather) and the world it sees
        return dict(by=rank(), world=world_size(), probe=crit(m(x1[:8]), m(x2[:8])).item())
    hist = fit(model, dl, lambda m, b: crit(m(b[0]), m(b[1])), opt, epochs, ckpt=ckpt, seed=3, device='cpu',
               progress=False, evaluate=evaluate)
    return dict(loss=[h['loss'] for h in hist], evaluated=[(h['by'], h['world']) for h in hist],
                probe=[h['probe'] for h in hist], params=[p.detach().tolist() for p in model.parameters()])


def _fit_ranks(r, w, out):
    res = {k: _train(k) for k in ('tensor', 'loader')}
    _train('tensor', out / 'shared.ckpt', epochs=1)                  # "killed" after epoch 1 ...
    res['resumed'] = _train('tensor', out / 'shared.ckpt', epochs=2)  # ... and resumed from rank 0's checkpoint
    save_atomic({'rank': r}, out / f'save_atomic_rank{r}.pt')
    write_json({'rank': r}, out / f'write_json_rank{r}.json')
    run = RunContext('tiny', 'smoke', {}, out / f'run_rank{r}', 'cpu', 0.0)
    finish(run, {'rank': r}, histories={'h': [1]})
    (out / f'result{r}.json').write_text(json.dumps(res))            # (the test's own record, by plain writes)


def test_fit_in_two_processes_equals_one(tmp_path):
    _spawn(_fit_ranks, 2, tmp_path)
    one = _train('tensor')                                           # one process, the whole batch of 8
    for r in (0, 1):
        res = json.loads((tmp_path / f'result{r}.json').read_text())
        for kind in ('tensor', 'loader', 'resumed'):
            got = res[kind]
            assert got['loss'] == pytest.approx(one['loss'], rel=1e-6), (r, kind)
            for a, b in zip(got['params'], one['params']):
                assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-6), (r, kind)
            assert got['evaluated'] == [[0, 1], [0, 1]]              # evaluate ran on rank 0 alone; its record reached rank 1
            assert got['probe'] == pytest.approx(one['probe'], rel=1e-6)
    written = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith('result'))
    assert written == ['run_rank0', 'save_atomic_rank0.pt', 'shared.ckpt', 'write_json_rank0.json']
    assert sorted(p.name for p in (tmp_path / 'run_rank0').iterdir()) == ['history.json', 'metrics.json']


# ---------------------------------------------------------------------------------------------------
# cache.pretrain(devices=2): the pre-training in two torchrun processes
# ---------------------------------------------------------------------------------------------------

def _pretrain_args():
    g = torch.Generator().manual_seed(2)
    views = TensorDataset(torch.randn(48, 8, generator=g), torch.randn(48, 8, generator=g))
    crit = NTXentLoss(0.5)
    return (('toy', dict(model='mlp'), lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)),
             lambda m, b: crit(m(b[0]), m(b[1])), views),
            dict(epochs=2, batch_size=16, seed=1, device='cpu', make_opt=lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9),
                 make_sched=lambda opt, total: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / total),
                 evaluate=lambda m: dict(w=m[0].weight.norm().item())))


def test_pretrain_in_two_processes(tmp_path, monkeypatch):
    from ssl_study.cache import pretrain
    from ssl_study.dist import launch
    args, kw = _pretrain_args()
    monkeypatch.setenv('SSL_STUDY_CACHE', str(tmp_path / 'one'))
    one, hit = pretrain(*args, **kw)                                  # the single-process reference
    assert not hit
    monkeypatch.setenv('SSL_STUDY_CACHE', str(tmp_path / 'two'))
    two, hit = pretrain(*args, devices=2, **kw)                # torchrun, 2 gloo processes
    assert not hit
    for k, v in one['state'].items(): assert torch.allclose(two['state'][k], v, atol=1e-6), k
    assert [h['loss'] for h in two['history']] == pytest.approx([h['loss'] for h in one['history']], rel=1e-6)
    assert [h['w'] for h in two['history']] == pytest.approx([h['w'] for h in one['history']], rel=1e-6)
    again, hit = pretrain(*args, devices=1, **kw)              # the same cache entry as one device's
    assert hit and all(torch.equal(again['state'][k], v) for k, v in two['state'].items())
    assert not list((tmp_path / 'two').rglob('*.ckpt'))               # resume checkpoints cleaned, as by cache.pretrain
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='GPU'): launch(print, devices=2, backend='nccl')


def _raises():
    raise ValueError('rank fails on purpose')


@pytest.fixture
def importable(monkeypatch):
    "torchrun's workers can import this file (cloudpickle sends its module-level functions by reference)."
    here = os.path.dirname(os.path.abspath(__file__))
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [here, os.environ.get('PYTHONPATH')])))


def test_launch_names_a_ranks_error(importable):
    from ssl_study.dist import launch
    with pytest.raises(RuntimeError, match='ValueError: rank fails on purpose'): launch(_raises, devices=2, backend='gloo')


# ---------------------------------------------------------------------------------------------------
# GPU only: SyncBatchNorm, two processes sharing one GPU through gloo (NCCL wants a GPU per process)
# ---------------------------------------------------------------------------------------------------

def _bn_train():
    seed_everything(0)
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    dl = TensorLoader(x1, x2, batch_size=16, shuffle=True, seed=3, device='cuda')
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    crit = NTXentLoss(0.5)
    step = lambda m, b: crit(*m(torch.cat([b[0], b[1]])).chunk(2))      # one BN batch over both views, as SimCLR
    hist = fit(model, dl, step, opt, 2, seed=3, device='cuda', amp=False, progress=False)
    syncs = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    return dict(loss=[h['loss'] for h in hist], state={k: v.cpu() for k, v in model.state_dict().items()}, syncs=syncs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='SyncBatchNorm runs on GPUs only')
def test_syncbn_two_processes_equal_one_on_a_gpu(importable):
    from ssl_study.dist import launch
    torch.backends.cuda.matmul.allow_tf32 = False; torch.backends.cudnn.allow_tf32 = False
    one = _bn_train()
    two = launch(_bn_train, devices=2, backend='gloo')
    assert one['syncs'] == 0 and two['syncs'] == 1                  # converted only in the 2-process run
    assert two['loss'] == pytest.approx(one['loss'], rel=1e-4)
    for k, v in one['state'].items():                                 # incl. the running mean and variance
        assert torch.allclose(two['state'][k].float(), v.float(), atol=1e-4), k
