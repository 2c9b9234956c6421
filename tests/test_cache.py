"""ssl_study.cache: the data fingerprint in the cache key, and `pretrain`: cached, and resumed bit-identically
after a kill."""
import json
import pytest, torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import TensorDataset
import ssl_study.cache as cache
from ssl_study.cache import cache_root, data_key, fingerprint, pretrain, pretrained
from ssl_study.runs import ParamError
from ssl_study.train import warmup_cosine


def _images(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % 3


def test_fingerprint_follows_the_data():
    x, y = _images()
    fp = fingerprint(x, y)
    assert len(fp) == 16 and fp == fingerprint(x.clone(), y.clone()) == data_key(TensorDataset(x, y)) == data_key([x, y])
    changed = x.clone(); changed[11, 2, 7, 7] ^= 1                             # one bit of the last pixel
    variants = [fingerprint(changed, y), fingerprint(x, y.roll(1)), fingerprint(x.view(12, 3, 64), y),
                fingerprint(x.to(torch.int32), y), fingerprint(x.float(), y), fingerprint(y, x), fingerprint(x),
                fingerprint(x[:11], y[:11])]
    assert len({fp, *variants}) == len(variants) + 1
    assert fingerprint(x[::2]) == fingerprint(x[::2].contiguous())              # strides do not matter, values do
    assert fingerprint(torch.tensor([1.0, 2.0], dtype=torch.bfloat16)) != fingerprint(torch.tensor([1.0, 2.0], dtype=torch.float16))
    assert data_key('abc') == 'abc'
    with pytest.raises(TypeError): data_key([1, 2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_fingerprint_same_on_gpu():
    x, y = _images()
    assert fingerprint(x.cuda(), y.cuda()) == fingerprint(x, y)


def test_pretrained_key_includes_the_data(outputs):
    x, y = _images()
    calls = []
    train = lambda folder: calls.append(folder) or dict(state={}, history=[])
    assert pretrained('t', dict(lr=0.1), train, data=(x, y))[1] is False
    assert pretrained('t', dict(lr=0.1), train, data=TensorDataset(x.clone(), y))[1] is True
    x2 = x.clone(); x2[0, 0, 0, 0] += 1
    assert pretrained('t', dict(lr=0.1), train, data=(x2, y))[1] is False      # a changed tensor: never the stale entry
    assert pretrained('t', dict(lr=0.1), train, data=fingerprint(x2, y))[1] is True
    assert len(calls) == 2 and calls[0] != calls[1]
    settings = json.loads((calls[1] / 'settings.json').read_text())
    assert settings == dict(lr=0.1, data_fingerprint=fingerprint(x2, y))
    assert pretrained('t', dict(lr=0.1), train)[1] is False                    # without data: the settings alone


class _Net(nn.Module):
    "Conv + BatchNorm (running statistics) + linear head: enough state for a resume to get wrong."
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 3)
    def forward(self, x): return self.head(self.body(x))


def _step(model, batch):
    x, y = batch
    x = x.float() / 255
    x = x + 0.1 * torch.randn_like(x)                   # a random augmentation: the RNG must resume too
    return F.cross_entropy(model(x), y)


def _pretrain(data, **kw):
    args = dict(epochs=4, batch_size=5, make_opt=lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
                make_sched=lambda opt, n: warmup_cosine(opt, n, warmup_steps=2), seed=3, device='cpu')
    return pretrain('net', dict(model='net'), _Net, _step, data, **{**args, **kw})


def test_pretrain_caches_by_settings_and_data(outputs):
    data = TensorDataset(*_images())
    r1, hit1 = _pretrain(data)
    r2, hit2 = _pretrain(data)
    assert (hit1, hit2) == (False, True) and len(r1['history']) == 4
    assert all(torch.equal(r1['state'][k], r2['state'][k]) for k in r1['state'])
    assert all(v.device.type == 'cpu' for v in r1['state'].values())
    assert _pretrain(data, seed=4)[1] is False and _pretrain(data, batch_size=4)[1] is False
    assert _pretrain(TensorDataset(*_images(seed=1)))[1] is False
    assert not list(cache_root().rglob('*.ckpt'))                               # resume checkpoints removed


def test_pretrain_zero_epochs_means_none(outputs):
    data = TensorDataset(*_images())
    r, _ = _pretrain(data, epochs=0)
    torch.manual_seed(3)
    fresh = _Net().state_dict()
    assert r['history'] == [] and all(torch.equal(r['state'][k], fresh[k]) for k in fresh)
    # epochs and batch sizes are validated once, by the paper's spec (tests/test_*: check_params), not again here


def test_pretrain_resume_after_kill_is_bit_identical(outputs, monkeypatch, tmp_path):
    data = TensorDataset(*_images())
    ref, _ = _pretrain(data)
    monkeypatch.setenv('SSL_STUDY_CACHE', str(tmp_path / 'cache2'))
    real_fit = cache.fit
    def killed_fit(*a, **kw):
        def die(rec):
            if rec['epoch'] == 2: raise KeyboardInterrupt('simulated kill')
        return real_fit(*a, **kw, on_epoch_end=die)
    monkeypatch.setattr(cache, 'fit', killed_fit)
    with pytest.raises(KeyboardInterrupt): _pretrain(data)
    ckpts = list((tmp_path / 'cache2').rglob('pretrain.ckpt'))
    assert len(ckpts) == 1 and torch.load(ckpts[0], weights_only=False)['epoch'] == 2
    monkeypatch.setattr(cache, 'fit', real_fit)
    resumed, hit = _pretrain(data)
    assert not hit and not ckpts[0].exists()
    assert [h['loss'] for h in resumed['history']] == [h['loss'] for h in ref['history']]
    assert [h['lr'] for h in resumed['history']] == [h['lr'] for h in ref['history']]
    assert all(torch.equal(ref['state'][k], resumed['state'][k]) for k in ref['state'])


def test_pretrain_passes_evaluate_into_the_history(outputs):
    "Per-epoch monitors (e.g. SimSiam's collapse monitor) reach the cached history, evaluated on the trained weights."
    data = TensorDataset(*_images())
    seen = []
    def monitor(model):
        w = model.head.weight.detach().clone(); seen.append(w)
        return dict(head_norm=w.norm().item())
    r, _ = _pretrain(data, epochs=2, evaluate=monitor)
    assert [h['head_norm'] for h in r['history']] == pytest.approx([w.norm().item() for w in seen])
    assert torch.equal(seen[-1], r['state']['head.weight'])                   # the last call saw the final weights
    assert not torch.equal(seen[0], seen[1])
