"""The CPU fast path of `fit`: bf16 autocast + channels-last (mode 'bf16+cl') against fp32. No speed is asserted here
(that is benchmarks/ssl_epoch.py's job): only that the bf16 path learns, keeps the loss and BatchNorm in fp32,
resumes exactly, and that SSL_STUDY_CPU_MODE=fp32 is the old fp32 loop to the last bit."""
import copy
import pytest, torch, torch.nn as nn, torch.nn.functional as F
from tqdm.auto import tqdm
from ssl_study.device import seed_everything
from ssl_study.train import cpu_mode, epoch_seed, fit, make_loader, set_threads, _reseed


def data(n=128, seed=0):
    "A learnable toy task: the label is which of two colour channels is brighter, plus noise."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > x[:, 1].mean((1, 2))).long()
    return torch.utils.data.TensorDataset(x, y)


def net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


ce_step = lambda m, b: F.cross_entropy(m(b[0]), b[1])


def run(mode, monkeypatch, epochs=4, ckpt=None, kill_after=None, step=ce_step):
    monkeypatch.setenv('SSL_STUDY_CPU_MODE', mode)
    seed_everything(0); m = net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    dl = make_loader(data(), 16, shuffle=True)
    def hook(rec):
        if rec['epoch'] == kill_after: raise KeyboardInterrupt
    h = fit(m, dl, step, opt, epochs, ckpt=ckpt, device='cpu', on_epoch_end=hook, progress=False)
    return m, h


def test_cpu_mode_rule(monkeypatch):
    monkeypatch.setenv('SSL_STUDY_CPU_MODE', 'fp32'); assert cpu_mode(net()) == 'fp32'
    monkeypatch.setenv('SSL_STUDY_CPU_MODE', 'bf16'); assert cpu_mode(nn.Linear(2, 2)) == 'bf16+cl'
    assert cpu_mode(net(), amp=False) == 'fp32' and cpu_mode(nn.Linear(2, 2), amp=True) == 'bf16+cl'   # the argument wins
    monkeypatch.setenv('SSL_STUDY_CPU_MODE', 'auto'); assert cpu_mode(nn.Linear(2, 2)) == 'fp32'       # no conv: fp32
    monkeypatch.setenv('SSL_STUDY_CPU_MODE', 'fast')
    with pytest.raises(ValueError): cpu_mode(net())


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv('OMP_NUM_THREADS', '1'); assert set_threads(4) == 1 == torch.get_num_threads()
        monkeypatch.delenv('OMP_NUM_THREADS')
        import os
        cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
        assert set_threads() == cores and set_threads(cores * 2) == 1
    finally: torch.set_num_threads(before)


def test_fp32_mode_is_the_plain_fp32_loop(monkeypatch):
    "SSL_STUDY_CPU_MODE=fp32: the same bits as a hand-written loop (same seed, batches and SGD)."
    set_threads()
    m, h = run('fp32', monkeypatch, epochs=2)
    assert [r['mode'] for r in h] == ['fp32', 'fp32']
    seed_everything(0); ref = net()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    dl = make_loader(data(), 16, shuffle=True)
    for epoch in range(2):
        _reseed(dl, 0, epoch); ref.train()
        for x, y in tqdm(dl, disable=True):      # as fit iterates: making the bar draws once from the loader's generator
            loss = F.cross_entropy(ref(x), y)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), m.state_dict().values()))


def test_bf16_learns_like_fp32(monkeypatch):
    """Both runs start from the same weights and see the same batches; bf16 keeps ~3 significant digits, so the
    per-epoch losses may differ by rounding, not by trend: each must fall by at least 30% over 6 epochs, and
    bf16's last loss be within 0.1 (absolute, on a loss that starts near ln 2 = 0.69) of fp32's."""
    (_, h32), (m16, h16) = run('fp32', monkeypatch, epochs=6), run('bf16', monkeypatch, epochs=6)
    l32, l16 = [r['loss'] for r in h32], [r['loss'] for r in h16]
    assert {r['mode'] for r in h16} == {'bf16+cl'}
    assert l32[-1] < 0.7 * l32[0] and l16[-1] < 0.7 * l16[0], (l32, l16)
    assert abs(l16[-1] - l32[-1]) < 0.1, (l32, l16)
    assert all(p.dtype == torch.float32 for p in m16.parameters())                 # fp32 master weights
    assert m16[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_backward_starts_from_fp32_and_batchnorm_stays_fp32(monkeypatch):
    seen = []
    real = torch.Tensor.backward
    def spy(self, *a, **k):
        seen.append(self.dtype); return real(self, *a, **k)
    monkeypatch.setattr(torch.Tensor, 'backward', spy)
    outs = []
    def step(m, b):                              # a careless step: its loss stays bf16 (sum of bf16 logits)
        z = m(b[0]); outs.append(z.dtype)
        return (z[:, 0] - z[:, 1]).pow(2).mean()
    m, h = run('bf16', monkeypatch, epochs=1, step=step)
    assert outs[0] == torch.bfloat16 and set(seen) == {torch.float32}     # the model ran in bf16; backward from fp32
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    assert all(t.dtype == torch.float32 for b in bns for t in (b.running_mean, b.running_var, b.weight, b.bias))
    assert all(torch.isfinite(b.running_var).all() and (b.running_var != 1).any() for b in bns)   # updated, in fp32


def test_bf16_resume_is_bit_identical(monkeypatch, tmp_path):
    ref, ref_h = run('bf16', monkeypatch, epochs=3)
    with pytest.raises(KeyboardInterrupt): run('bf16', monkeypatch, epochs=3, ckpt=tmp_path / 'c.pt', kill_after=1)
    res, res_h = run('auto', monkeypatch, epochs=3, ckpt=tmp_path / 'c.pt')      # auto: the checkpoint's mode goes on
    assert [r['mode'] for r in res_h] == ['bf16+cl'] * 3
    assert [r['loss'] for r in ref_h] == [r['loss'] for r in res_h]
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), res.state_dict().values()))
