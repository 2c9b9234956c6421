"loaders: the uint8 split cache (keys, fingerprints, hits) and TensorLoader's epochs, checked against torchvision."
import os, pickle
from pathlib import Path
import numpy as np, pytest, torch
import torch.nn as nn
import torchvision.datasets.cifar
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset
import ssl_study.loaders as L
from ssl_study.data import DataError
from ssl_study.loaders import TensorLoader, cached_split, loader
from ssl_study.train import _reseed, fit

CLASSES = ('ant', 'bee', 'cat')


def _image(path, seed, size=None, mode='RGB'):
    rng = np.random.default_rng(seed)
    h, w = size or rng.integers(20, 60, 2)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    "An ImageFolder: 3 classes x 4 PNGs of assorted sizes (one grey, one RGBA), an empty data root, its own decoded cache."
    monkeypatch.setenv('SSL_STUDY_DECODED', str(tmp_path / 'decoded'))
    f = tmp_path / 'folder'
    for c, name in enumerate(CLASSES):
        (f / name).mkdir(parents=True)
        for i in range(4): _image(f / name / f'{i}.png', 10 * c + i, mode='L' if (c, i) == (1, 1) else 'RGBA' if (c, i) == (2, 3) else 'RGB')
    return f


def _split(f, **kw):
    return cached_split('imagefolder', 'train', 16, root=f.parent / 'data', path=f, progress=False, **kw)


def _cache_files(f): return sorted((f.parent / 'decoded').glob('*.pt'))


class _NoDecode:
    "Stands in for `_decode` where a cache hit is expected."
    def __call__(self, *a, **k): raise AssertionError('decoded although the cache should have been used')


def test_decoded_like_torchvision(folder):
    xs, ys = _split(folder).tensors
    files = [folder / c / f'{i}.png' for c in CLASSES for i in range(4)]
    ref = torch.stack([TF.pil_to_tensor(TF.center_crop(TF.resize(Image.open(p).convert('RGB'), 16), 16)) for p in files])
    assert xs.dtype == torch.uint8 and ys.dtype == torch.int64 and torch.equal(xs, ref)
    assert ys.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    sq = _split(folder, resize='squash').tensors[0]
    assert torch.equal(sq, torch.stack([TF.pil_to_tensor(TF.resize(Image.open(p).convert('RGB'), [16, 16])) for p in files]))


def test_cache_hit_returns_equal_tensors_without_decoding(folder, monkeypatch):
    a = _split(folder)
    monkeypatch.setattr(L, '_decode', _NoDecode())
    b = _split(folder)
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1]) and len(_cache_files(folder)) == 1


def test_changed_file_list_changes_the_key(folder, monkeypatch):
    n0 = len(_split(folder)); k0 = _cache_files(folder)
    _image(folder / 'bee' / 'new.png', 99)                                # add an image
    assert len(_split(folder)) == n0 + 1 and len(_cache_files(folder)) == 2
    (folder / 'bee' / 'new.png').unlink(); (folder / 'ant' / '0.png').unlink()   # remove two
    assert len(_split(folder)) == n0 - 1 and len(_cache_files(folder)) == 3
    _image(folder / 'ant' / '0.png', 0)          # written back with the same bytes: a new file (mtime, inode), so decoded again
    assert len(_split(folder)) == n0 and len(_cache_files(folder)) == 4 and k0[0] in _cache_files(folder)
    monkeypatch.setattr(L, '_decode', _NoDecode())
    assert len(_split(folder)) == n0                                      # and from then on a cache hit


def test_replaced_image_of_another_size_changes_the_key(folder):
    _split(folder)
    _image(folder / 'cat' / '2.png', 1234, size=(7, 9))
    x = _split(folder).tensors[0][10]
    assert len(_cache_files(folder)) == 2
    assert torch.equal(x, TF.pil_to_tensor(TF.center_crop(TF.resize(Image.open(folder / 'cat' / '2.png'), 16), 16)))


def test_settings_are_part_of_the_key(folder):
    a, b = _split(folder, per_class=2, seed=0), _split(folder, per_class=2, seed=1)
    assert len(a) == len(b) == 6 and a.tensors[1].tolist() == [0, 0, 1, 1, 2, 2]
    assert not torch.equal(a.tensors[0], b.tensors[0])                  # another seed, other images
    c = _split(folder, classes=[2, 0])                                  # classes remapped in the order given
    assert len(c) == 8 and c.tensors[1].tolist() == [1] * 4 + [0] * 4
    cached_split('imagefolder', 'train', 8, root=folder.parent / 'data', path=folder, progress=False)
    assert len(_cache_files(folder)) == 4


@pytest.mark.parametrize('kw', [dict(image_size=0), dict(image_size=2.5), dict(resize='crop'), dict(per_class=0)])
def test_bad_settings(folder, kw):
    with pytest.raises(ValueError, match=list(kw)[0]):
        cached_split('imagefolder', 'train', **{'image_size': 16, **kw}, root=folder.parent / 'data', path=folder, progress=False)


def _write_cifar_pickle(root, n, seed):
    "The official CIFAR-10 python batches (a loader without a file list), n images per batch."
    d = root / 'cifar-10-batches-py'; d.mkdir(parents=True, exist_ok=True)
    rng, out = np.random.default_rng(seed), []
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        imgs, labels = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).tolist()
        (d / name).write_bytes(pickle.dumps({'labels': labels, 'data': imgs.transpose(0, 3, 1, 2).reshape(n, -1)}))
        out.append((imgs, labels))
    (d / 'batches.meta').write_bytes(pickle.dumps({'label_names': [str(k) for k in range(10)]}))
    return out


def test_pickle_dataset_is_fingerprinted_by_its_files(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.cifar, 'check_integrity', lambda p, md5=None: os.path.isfile(p))   # fake batches
    written = _write_cifar_pickle(tmp_path, 2, 0)
    xs, ys = cached_split('cifar10', 'test', 32, root=tmp_path, progress=False).tensors
    assert torch.equal(xs, torch.from_numpy(written[5][0]).permute(0, 3, 1, 2)) and ys.tolist() == written[5][1]
    _write_cifar_pickle(tmp_path, 3, 1)                                 # the files change: decoded again
    assert len(cached_split('cifar10', 'test', 32, root=tmp_path, progress=False)) == 3


def test_tensor_loader_covers_every_index_once_per_epoch():
    n = 103
    dl = TensorLoader(torch.arange(n), -torch.arange(n), batch_size=10, shuffle=True, seed=0, device='cpu')
    for epoch in range(3):
        batches = list(dl)
        idx = torch.cat([b[0] for b in batches])
        assert sorted(idx.tolist()) == list(range(n)) and len(batches) == len(dl) == 11
        assert all(torch.equal(b[1], -b[0]) for b in batches) and all(b[0].device.type == 'cpu' for b in batches)
    dl = TensorLoader(torch.arange(n), batch_size=10, shuffle=True, drop_last=True, device='cpu')
    idx = torch.cat([b[0] for b in dl])
    assert len(dl) == 10 == len(list(dl)) and len(idx) == 100 == len(set(idx.tolist()))


@pytest.mark.parametrize('n,b,drop,expected', [(10, 4, False, 3), (10, 4, True, 2), (8, 4, False, 2), (8, 4, True, 2), (3, 4, True, 0), (3, 4, False, 1)])
def test_len_matches_dataloader(n, b, drop, expected):
    ds = TensorDataset(torch.arange(n))
    assert len(TensorLoader(torch.arange(n), batch_size=b, drop_last=drop, device='cpu')) == expected == len(DataLoader(ds, b, drop_last=drop))
    assert len(list(TensorLoader(torch.arange(n), batch_size=b, drop_last=drop, shuffle=True, device='cpu'))) == expected


def test_tensor_loader_order_follows_the_seed():
    order = lambda dl: torch.cat([b[0] for b in dl]).tolist()
    a, b, c = (TensorLoader(torch.arange(50), batch_size=8, shuffle=True, seed=s, device='cpu') for s in (5, 5, 6))
    assert order(a) == order(b) != order(c)
    _reseed(a, 0, 3); e3 = order(a)
    _reseed(a, 0, 3); assert order(a) == e3                              # fit re-seeds per epoch: same epoch, same order
    _reseed(a, 0, 4); assert order(a) != e3
    assert order(TensorLoader(torch.arange(50), batch_size=8, device='cpu')) == list(range(50))   # no shuffle: in order
    assert isinstance(a.dataset, TensorDataset) and len(a.dataset) == 50 and isinstance(a.generator, torch.Generator)


def test_fit_on_a_tensor_loader_resumes_exactly(tmp_path):
    def run(ckpt=None, kill_after=None):
        torch.manual_seed(0); m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))
        g = torch.Generator().manual_seed(1)
        dl = TensorLoader(torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g), batch_size=8, shuffle=True, device='cpu')
        def hook(rec):
            if rec['epoch'] == kill_after: raise KeyboardInterrupt
        fit(m, dl, lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]), torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), 4,
            ckpt=ckpt, device='cpu', on_epoch_end=hook, progress=False)
        return m
    ref = run()
    with pytest.raises(KeyboardInterrupt): run(tmp_path / 'c.pt', kill_after=2)
    res = run(tmp_path / 'c.pt')
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), res.state_dict().values()))


def test_bad_tensor_loader_arguments():
    with pytest.raises(ValueError): TensorLoader(batch_size=2)
    with pytest.raises(ValueError): TensorLoader(torch.arange(3), torch.arange(4), batch_size=2)
    with pytest.raises(ValueError): TensorLoader(torch.arange(3), batch_size=0)


def test_loader_picks_the_fast_path_for_tensors(folder):
    assert isinstance(loader(TensorDataset(torch.arange(5)), 2, device='cpu'), TensorLoader)
    from ssl_study.datasets import load_dataset
    dl = loader(load_dataset('imagefolder', path=folder), 2, shuffle=True, seed=3, device='cpu')
    assert isinstance(dl, DataLoader) and dl.batch_size == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_tensor_loader_on_cuda():
    dl = loader(TensorDataset(torch.arange(10), torch.arange(10)), 4, shuffle=True, device='cuda')
    assert isinstance(dl, TensorLoader) and all(t.device.type == 'cuda' for b in dl for t in b)


def test_a_cache_miss_leaves_the_global_rng_alone(folder):
    "Decoding on a miss must not draw from torch's global RNG, or what is seeded before it would depend on the cache."
    torch.manual_seed(0); ref = torch.rand(3)
    torch.manual_seed(0); _split(folder); after_miss = torch.rand(3)
    torch.manual_seed(0); _split(folder); after_hit = torch.rand(3)
    assert torch.equal(after_miss, ref) and torch.equal(after_hit, ref)


def test_train_test_refuses_splits_with_different_classes(folder, tmp_path):
    "A class present in one split only is named before any training."
    from ssl_study.data import DataError
    from ssl_study.loaders import train_test
    tr, te = train_test('imagefolder', 16, splits=('train', 'train'), root=folder.parent / 'data', path=folder, progress=False)
    assert len(tr) == len(te) == 12
    other = tmp_path / 'other'                                             # the same folder without 'cat'
    for name in CLASSES[:2]:
        (other / name).mkdir(parents=True)
        for i in range(2): _image(other / name / f'{i}.png', i)
    import ssl_study.loaders as L
    real = L.cached_split
    def split_from(name, split, size, **kw):
        return real(name, split, size, **{**kw, 'path': other if split == 'test' else folder})
    L.cached_split = split_from
    try:
        with pytest.raises(DataError, match='in train but not in test: 2'):    # class 2 ('cat') by its id
            train_test('imagefolder', 16, root=folder.parent / 'data', progress=False)
    finally: L.cached_split = real


# --- issue 18: stale decoded data, truncated caches, a data root that cannot be written ---

def test_an_image_replaced_by_one_of_the_same_size_is_decoded_again(folder):
    "BMPs of one size have the same byte count: replacing one must not serve the old decoded tensors (nor their encoder)."
    for c in CLASSES:
        for i in range(4): Image.new('RGB', (20, 20), (10 * i, 50, 100)).save(folder / c / f'{i}.bmp'); (folder / c / f'{i}.png').unlink()
    first = _split(folder).tensors[0].clone()
    target = folder / CLASSES[0] / '0.bmp'
    size = target.stat().st_size
    Image.new('RGB', (20, 20), (255, 0, 0)).save(target)
    assert target.stat().st_size == size                                   # the same byte count
    again = _split(folder).tensors[0]
    assert not torch.equal(again[0], first[0]) and torch.equal(again[1:], first[1:]) and again[0, 0].float().mean() > 250


def test_a_truncated_cache_file_is_named_set_aside_and_rebuilt(folder, capsys):
    ref = _split(folder).tensors[0].clone()
    (f,) = _cache_files(folder)
    f.write_bytes(f.read_bytes()[:200])
    again = _split(folder).tensors[0]
    assert torch.equal(again, ref) and f.exists() and f.with_name(f.name + '.corrupt').exists()
    assert str(f) in capsys.readouterr().err


def test_the_decoded_cache_lives_outside_the_data_root_and_says_when_it_cannot_write(folder, monkeypatch, tmp_path):
    _split(folder)
    assert not (folder.parent / 'data' / '.ssl_study_cache').exists() and _cache_files(folder)
    blocker = tmp_path / 'a-file'; blocker.write_text('not a folder')
    monkeypatch.setenv('SSL_STUDY_DECODED', str(blocker / 'decoded'))
    with pytest.raises(DataError, match='SSL_STUDY_DECODED'): _split(folder)


def test_a_truncated_pretrained_encoder_is_trained_again(tmp_path, monkeypatch, capsys):
    from ssl_study.cache import pretrained
    monkeypatch.setenv('SSL_STUDY_CACHE', str(tmp_path / 'cache'))
    calls = []
    train = lambda folder: calls.append(folder) or dict(state=torch.arange(5000))
    r, hit = pretrained('demo', dict(a=1), train); assert not hit
    (f,) = (tmp_path / 'cache').rglob('pretrained.pt'); f.write_bytes(f.read_bytes()[:300])
    r, hit = pretrained('demo', dict(a=1), train)
    assert not hit and len(calls) == 2 and torch.equal(r['state'], torch.arange(5000)) and 'pretrained.pt' in capsys.readouterr().err
