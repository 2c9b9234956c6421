"""Loaders of `ssl_study.data` on tiny files written in each dataset's exact on-disk format.

VOC, STL-10, CelebA and Caltech-256 (and CIFAR-10's official pickle batches) are not available on
the development machines, so each test writes a few images in the layout torchvision reads (same
folder and file names, same binary / text formats) and checks that `load_dataset` gives back the
pixels and labels written. JPEG is lossy, so JPEG images are flat colours compared with a tolerance;
binary formats (CIFAR, STL-10) and PNG masks are compared exactly.

About checksums: torchvision verifies the md5 of CIFAR-10's batches, STL-10's .bin files and CelebA's
annotation .txt files against the official files, which a few fake images can never match. Their
`_check_integrity` calls `check_integrity(path, md5)` from the module it lives in; the tests replace
that one name, in that one module, by an existence-only check (`check_integrity(path, None)` is
exactly torchvision's own "file exists" test). So the file *names* are still checked by torchvision
and everything after the checksum (parsing, layout, labels) runs unchanged.
"""
import builtins, os, pickle, warnings
from pathlib import Path

import numpy as np, pytest, torch
from PIL import Image
import torchvision.datasets as tvd
import torchvision.datasets.celeba, torchvision.datasets.cifar, torchvision.datasets.stl10
from torch.utils.data import Subset, TensorDataset

from ssl_study.data import DatasetNotFoundError, InMemory, Transformed, data_root, get_targets, joint_seg_transform, num_classes, stratified_split, stratified_subset
from ssl_study.datasets import DATASETS, check_dataset, load_dataset

TOL = 4  # max abs difference for flat-colour JPEGs


def _exists_only(fpath, md5=None):
    "torchvision's check_integrity without the md5 comparison (see module docstring)."
    return os.path.isfile(fpath)


@pytest.fixture
def no_md5(monkeypatch):
    for mod in (torchvision.datasets.cifar, torchvision.datasets.stl10, torchvision.datasets.celeba):
        monkeypatch.setattr(mod, 'check_integrity', _exists_only)


def jpeg(path, color, size=(12, 10), mode='RGB'):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, 'JPEG', quality=95)


def png(path, arr, mode='L', palette=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(arr, np.uint8), mode)
    if palette is not None: im.putpalette(palette)
    im.save(path)


def close(img, color, tol=TOL):
    a = np.asarray(img.convert('RGB'), dtype=int)
    return np.abs(a - np.array(color)).max() <= tol


def color(k):
    "A distinct flat colour for item k."
    return ((37 * k + 20) % 256, (91 * k + 60) % 256, (53 * k + 200) % 256)


# ---------------------------------------------------------------------------------------------------
# registry, root and error messages
# ---------------------------------------------------------------------------------------------------

def test_registry_names():
    assert set(DATASETS) == {'cifar10', 'flowers102', 'oxford_pets', 'tiny_imagenet', 'davis', 'voc', 'stl10',
                             'celeba', 'caltech256', 'imagefolder'}


def test_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv('SSL_STUDY_DATA', str(tmp_path))
    assert data_root() == tmp_path and data_root('/x/y') == Path('/x/y')
    monkeypatch.delenv('SSL_STUDY_DATA')
    assert data_root() == Path.home() / '.cache' / 'ssl_study' / 'data'


def test_unknown_name():
    for f in (lambda: load_dataset('imagenet22k'), lambda: check_dataset('imagenet22k')):
        with pytest.raises(ValueError) as e: f()
        assert 'imagenet22k' in str(e.value) and 'cifar10' in str(e.value) and 'tiny_imagenet' in str(e.value)


@pytest.mark.parametrize('name', sorted(set(DATASETS) - {'imagefolder'}))
def test_missing_root(tmp_path, name):
    root = tmp_path / 'empty'
    for f in (lambda: check_dataset(name, root), lambda: load_dataset(name, DATASETS[name].splits[0], root=root)):
        with pytest.raises(DatasetNotFoundError) as e: f()
        msg = str(e.value)
        assert isinstance(e.value, FileNotFoundError)
        assert f"'{name}'" in msg and str(root / DATASETS[name].folder) in msg and 'SSL_STUDY_DATA' in msg
        if DATASETS[name].archive: assert f'../shared/data/stage "$SSL_STUDY_DATA" {DATASETS[name].archive}' in msg
        if DATASETS[name].downloadable: assert 'download=True' in msg and '-p download True' in msg
    assert not root.exists()  # nothing was created (torchvision's Caltech256 would mkdir)


def test_missing_not_downloadable(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e: load_dataset('davis', 'val', root=tmp_path, download=True)
    assert 'davischallenge.org' in str(e.value)
    assert check_dataset('voc', tmp_path, download=True) == tmp_path / 'VOCdevkit' / 'VOC2012'  # downloadable: passes


def test_missing_imagefolder(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e: load_dataset('imagefolder', path=tmp_path / 'nope')
    assert 'imagefolder' in str(e.value) and str(tmp_path / 'nope') in str(e.value)


def test_bad_split(tmp_path):
    with pytest.raises(ValueError) as e: load_dataset('flowers102', 'validation', root=tmp_path)
    assert 'train, val, test' in str(e.value)
    with pytest.raises(ValueError) as e: load_dataset('stl10', 'val', root=tmp_path)
    assert 'train+unlabeled' in str(e.value)


def test_check_dataset_is_cheap(tmp_path, monkeypatch):
    write_tiny_imagenet(tmp_path)
    def boom(*a, **k): raise AssertionError('check_dataset opened a file')
    with monkeypatch.context() as m:
        m.setattr(builtins, 'open', boom); m.setattr(Image, 'open', boom)
        assert check_dataset('tiny_imagenet', tmp_path, split='val') == tmp_path / 'tiny-imagenet-200'


# ---------------------------------------------------------------------------------------------------
# CIFAR-10: torchvision's pickle batches, and the ImageFolder tree
# ---------------------------------------------------------------------------------------------------

CIFAR_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


def write_cifar_pickle(root, n=2):
    "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}: pickled dicts, data [N, 3072] uint8 (R, G, B planes, row-major)."
    d = root / 'cifar-10-batches-py'; d.mkdir(parents=True)
    rng, out = np.random.default_rng(0), {}
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        entry = {'batch_label': name, 'labels': labels, 'data': imgs.transpose(0, 3, 1, 2).reshape(n, -1),
                 'filenames': [f'{name}_{k}.png' for k in range(n)]}
        (d / name).write_bytes(pickle.dumps(entry))
        out[name] = (imgs, labels)
    (d / 'batches.meta').write_bytes(pickle.dumps({'label_names': CIFAR_NAMES, 'num_cases_per_batch': n, 'num_vis': 3072}))
    return out


def test_cifar10_pickle(tmp_path, no_md5):
    written = write_cifar_pickle(tmp_path)
    tr, te = load_dataset('cifar10', 'train', root=tmp_path), load_dataset('cifar10', 'test', root=tmp_path)
    assert isinstance(tr, tvd.CIFAR10) and len(tr) == 10 and len(te) == 2 and tr.classes == CIFAR_NAMES
    imgs = np.concatenate([written[f'data_batch_{i}'][0] for i in range(1, 6)])
    labels = sum((written[f'data_batch_{i}'][1] for i in range(1, 6)), [])
    for k in range(10):
        img, y = tr[k]
        assert img.size == (32, 32) and np.array_equal(np.asarray(img), imgs[k]) and y == labels[k]
    assert get_targets(tr).tolist() == labels
    assert np.array_equal(np.asarray(te[1][0]), written['test_batch'][0][1]) and te[1][1] == written['test_batch'][1][1]


def test_cifar10_pickle_checksum_failure_is_not_found(tmp_path):
    write_cifar_pickle(tmp_path)  # right names, wrong md5 (torchvision's real check active)
    with pytest.raises(DatasetNotFoundError) as e: load_dataset('cifar10', 'train', root=tmp_path)
    assert 'checksum' in str(e.value) and 'cifar10' in str(e.value)


def test_cifar10_folder_tree(tmp_path, no_md5):
    for split, per in (('train', 2), ('test', 1)):
        for c, name in enumerate(CIFAR_NAMES[:3]):
            for k in range(per): jpeg(tmp_path / 'cifar10' / split / name / f'{k:04d}.jpg', color(c), (32, 32))
    tr = load_dataset('cifar10', 'train', root=tmp_path)
    assert isinstance(tr, tvd.ImageFolder) and len(tr) == 6 and get_targets(tr).tolist() == [0, 0, 1, 1, 2, 2]
    assert close(tr[2][0], color(1)) and tr[2][1] == 1 and len(load_dataset('cifar10', 'test', root=tmp_path)) == 3
    write_cifar_pickle(tmp_path)  # both layouts: the official pickle batches win, layout='folder' forces the tree
    assert isinstance(load_dataset('cifar10', root=tmp_path), tvd.CIFAR10)
    assert isinstance(load_dataset('cifar10', root=tmp_path, layout='folder'), tvd.ImageFolder)


# ---------------------------------------------------------------------------------------------------
# STL-10
# ---------------------------------------------------------------------------------------------------

def test_stl10(tmp_path, no_md5):
    "stl10_binary/*_X.bin: uint8 images 3x96x96 stored column-major (C, W, H); *_y.bin: uint8 labels 1..10."
    d = tmp_path / 'stl10_binary'; d.mkdir()
    rng = np.random.default_rng(1)
    imgs = {s: rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8) for s, n in (('train', 3), ('test', 2), ('unlabeled', 2))}
    for s, a in imgs.items(): (d / f'{s}_X.bin').write_bytes(a.transpose(0, 3, 2, 1).tobytes())
    (d / 'train_y.bin').write_bytes(np.array([1, 5, 10], np.uint8).tobytes())
    (d / 'test_y.bin').write_bytes(np.array([2, 2], np.uint8).tobytes())
    (d / 'class_names.txt').write_text('\n'.join(['airplane', 'bird', 'car', 'cat', 'deer', 'dog', 'horse', 'monkey', 'ship', 'truck']) + '\n')
    (d / 'fold_indices.txt').write_text('\n'.join(['2 0'] + ['1'] * 9) + '\n')
    tr = load_dataset('stl10', 'train', root=tmp_path)
    assert len(tr) == 3 and get_targets(tr).tolist() == [0, 4, 9] and num_classes(tr) == 10
    for k in range(3): assert np.array_equal(np.asarray(tr[k][0]), imgs['train'][k])
    te = load_dataset('stl10', 'test', root=tmp_path)
    assert np.array_equal(np.asarray(te[1][0]), imgs['test'][1]) and te[1][1] == 1
    un = load_dataset('stl10', 'unlabeled', root=tmp_path)
    assert len(un) == 2 and get_targets(un).tolist() == [-1, -1] and np.array_equal(np.asarray(un[0][0]), imgs['unlabeled'][0])
    both = load_dataset('stl10', 'train+unlabeled', root=tmp_path)
    assert get_targets(both).tolist() == [0, 4, 9, -1, -1]
    assert stratified_subset(both, per_class=1).indices == [0, 1, 2]  # unlabelled items are never drawn
    f0 = load_dataset('stl10', 'train', root=tmp_path, folds=0)
    assert get_targets(f0).tolist() == [9, 0] and np.array_equal(np.asarray(f0[0][0]), imgs['train'][2])


# ---------------------------------------------------------------------------------------------------
# PASCAL VOC segmentation
# ---------------------------------------------------------------------------------------------------

VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 252 + [224, 224, 192]


def write_voc(root, year='2012', ids=('2007_000032', '2007_000039', '2007_000063'), sets=None):
    base = root / 'VOCdevkit' / f'VOC{year}'
    masks = {}
    for k, i in enumerate(ids):
        jpeg(base / 'JPEGImages' / f'{i}.jpg', color(k), (20, 16))
        m = np.zeros((16, 20), np.uint8); m[4:12, 5:15] = k % 2 + 1; m[4:6, 5:15] = 255  # object + 255 border (2 px, survives the 2x nearest downsizing)
        png(base / 'SegmentationClass' / f'{i}.png', m, 'P', VOC_PALETTE); masks[i] = m
    sets = sets or {'train': ids[:2], 'val': ids[2:], 'trainval': ids}
    for s, names in sets.items():
        (base / 'ImageSets' / 'Segmentation').mkdir(parents=True, exist_ok=True)
        (base / 'ImageSets' / 'Segmentation' / f'{s}.txt').write_text(''.join(f'{n}\n' for n in names))
    return masks


def test_voc_segmentation(tmp_path):
    masks = write_voc(tmp_path)
    tr = load_dataset('voc', 'train', root=tmp_path)
    assert isinstance(tr, tvd.VOCSegmentation) and len(tr) == 2 and len(load_dataset('voc', 'val', root=tmp_path)) == 1
    img, mask = tr[1]
    assert close(img, color(1)) and mask.mode == 'P' and np.array_equal(np.asarray(mask), masks['2007_000039'])
    with pytest.raises(TypeError): get_targets(tr)  # segmentation: no class labels
    seg = load_dataset('voc', 'train', root=tmp_path, transforms=joint_seg_transform((8, 10)))
    x, y = seg[1]
    assert x.shape == (3, 8, 10) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.long and y.shape == (8, 10) and set(y.unique().tolist()) == {0, 2, 255}
    with pytest.raises(ValueError): load_dataset('voc', 'test', root=tmp_path)  # only 2007 has a test split
    with pytest.raises(DatasetNotFoundError): load_dataset('voc', 'train', root=tmp_path, year=2007)


def test_voc2007_test(tmp_path):
    write_voc(tmp_path, '2007', ids=('000001', '000002'), sets={'test': ('000001', '000002')})
    te = load_dataset('voc', 'test', root=tmp_path, year='2007')
    assert len(te) == 2 and close(te[0][0], color(0))


# ---------------------------------------------------------------------------------------------------
# CelebA
# ---------------------------------------------------------------------------------------------------

CELEBA_ATTRS = ('5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair '
                'Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup '
                'High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose '
                'Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat '
                'Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young').split()


def test_celeba(tmp_path, no_md5):
    "celeba/img_align_celeba/NNNNNN.jpg + space-separated txt files (count line and header line where the real ones have them)."
    d = tmp_path / 'celeba'
    # (two images per split: torchvision's CelebA fails on a split of exactly one image, squeezing its index to 0-d)
    names = [f'{k:06d}.jpg' for k in range(1, 7)]
    for k, n in enumerate(names): jpeg(d / 'img_align_celeba' / n, color(k), (18, 22))
    rng = np.random.default_rng(2)
    attr = rng.choice([-1, 1], (6, 40))
    (d / 'list_eval_partition.txt').write_text(''.join(f'{n} {p}\n' for n, p in zip(names, [0, 0, 1, 1, 2, 2])))
    (d / 'identity_CelebA.txt').write_text(''.join(f'{n} {i}\n' for n, i in zip(names, [2880, 2937, 8692, 2880, 10, 11])))
    (d / 'list_bbox_celeba.txt').write_text('6\nimage_id x_1 y_1 width height\n' +
                                            ''.join(f'{n}    95  71 226 313\n' for n in names))
    (d / 'list_landmarks_align_celeba.txt').write_text(
        '6\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n' +
        ''.join(f'{n}   69  109  106  113   77  142   73  152  108  154\n' for n in names))
    (d / 'list_attr_celeba.txt').write_text('6\n' + ' '.join(CELEBA_ATTRS) + ' \n' +
                                            ''.join(n + ''.join(f' {a:2d}' for a in row) + '\n' for n, row in zip(names, attr)))
    tr = load_dataset('celeba', 'train', root=tmp_path)
    assert len(tr) == 2 and tr.attr_names[:40] == CELEBA_ATTRS
    img, a = tr[1]
    assert img.mode == 'RGB' and close(img, color(1)) and torch.equal(a, torch.tensor((attr[1] + 1) // 2))
    assert np.array_equal(get_targets(tr), (attr[:2] + 1) // 2) and num_classes(tr) == 40
    va = load_dataset('celeba', 'val', root=tmp_path)  # alias of torchvision's 'valid'
    assert len(va) == 2 and close(va[1][0], color(3)) and torch.equal(va[1][1], torch.tensor((attr[3] + 1) // 2))
    ids = load_dataset('celeba', 'all', root=tmp_path, target_type='identity')
    assert get_targets(ids).tolist() == [2880, 2937, 8692, 2880, 10, 11] and ids[2][1] == 8692


# ---------------------------------------------------------------------------------------------------
# Caltech-256
# ---------------------------------------------------------------------------------------------------

def write_caltech(root, folders, per_class):
    "caltech256/256_ObjectCategories/NNN.name/NNN_MMMM.jpg (torchvision rebuilds file names from the folder rank)."
    base = root / 'caltech256' / '256_ObjectCategories'
    for c, f in enumerate(folders):
        for k in range(1, per_class + 1):
            jpeg(base / f / f'{c + 1:03d}_{k:04d}.jpg', 128 if (c, k) == (1, 1) else color(10 * c + k), (8, 8),
                 mode='L' if (c, k) == (1, 1) else 'RGB')  # one greyscale image, as in the real set


def test_caltech256(tmp_path):
    write_caltech(tmp_path, ['001.ak47', '002.american-flag', '003.backpack'], 5)
    everything = load_dataset('caltech256', 'all', root=tmp_path)
    assert len(everything) == 15 and get_targets(everything).tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert everything.classes == ['ak47', 'american-flag', 'backpack']
    img, y = everything[11]  # class 2, image 2
    assert y == 2 and close(img, color(22))
    g, _ = everything[5]
    assert g.mode == 'RGB' and close(g, (128, 128, 128))
    tr, te = load_dataset('caltech256', 'train', root=tmp_path), load_dataset('caltech256', 'test', root=tmp_path)
    assert len(tr) == 12 and len(te) == 3 and not set(tr.indices) & set(te.indices)
    assert np.bincount(get_targets(te)).tolist() == [1, 1, 1] and num_classes(tr) == 3
    for i in range(3):
        img, y = te[i]; j = te.indices[i]
        assert y == j // 5 and close(img, (128,) * 3 if j == 5 else color(10 * y + j % 5 + 1))
    assert load_dataset('caltech256', 'test', root=tmp_path, seed=0).indices == te.indices
    assert len(load_dataset('caltech256', 'test', root=tmp_path, test_fraction=0.4)) == 6


def test_caltech256_clutter(tmp_path):
    "257.clutter is left out by default: 256 classes (29,780 images in the real set); clutter=True keeps it."
    folders = [f'{i:03d}.c{i}' for i in range(1, 257)] + ['257.clutter']
    write_caltech(tmp_path, folders, 1)
    base = tmp_path / 'caltech256' / '256_ObjectCategories'
    for k in (2, 3): jpeg(base / '257.clutter' / f'257_{k:04d}.jpg', color(k), (8, 8))   # 3 clutter images
    no = load_dataset('caltech256', 'all', root=tmp_path)
    assert len(no) == 256 and get_targets(no).tolist() == list(range(256)) and num_classes(no) == 256
    assert close(no[255][0], color(2550 + 1))                                   # the last object class, not clutter
    tr, te = load_dataset('caltech256', 'train', root=tmp_path), load_dataset('caltech256', 'test', root=tmp_path)
    assert len(tr) + len(te) == 256 and num_classes(tr) == 256 and 256 not in get_targets(tr).tolist() + get_targets(te).tolist()
    full = load_dataset('caltech256', 'all', root=tmp_path, clutter=True)
    assert len(full) == 259 and num_classes(full) == 257 and [full[i][1] for i in (256, 258)] == [256, 256]


# ---------------------------------------------------------------------------------------------------
# Oxford-IIIT Pet: contiguous category ids, trimaps
# ---------------------------------------------------------------------------------------------------

def test_oxford_pets(tmp_path):
    base = tmp_path / 'oxford-iiit-pet'
    # Image CLASS-ID SPECIES BREED-ID; ids 1, 6, 37 only: not contiguous, 37 only in test
    rows = {'trainval': [('Abyssinian_1', 1, 1, 1), ('Bengal_2', 6, 1, 6), ('Abyssinian_3', 1, 1, 1)],
            'test': [('yorkshire_terrier_4', 37, 2, 25), ('Bengal_5', 6, 1, 6)]}
    for s, rs in rows.items():
        (base / 'annotations').mkdir(parents=True, exist_ok=True)
        (base / 'annotations' / f'{s}.txt').write_text(''.join(' '.join(map(str, r)) + '\n' for r in rs))
        for k, r in enumerate(rs):
            n = int(r[0].rsplit('_', 1)[1])
            jpeg(base / 'images' / f'{r[0]}.jpg', color(n), (16, 12))
            t = np.full((12, 16), 2, np.uint8); t[3:9, 4:12] = 1; t[3, 4:12] = 3
            png(base / 'annotations' / 'trimaps' / f'{r[0]}.png', t)
    tv, te = load_dataset('oxford_pets', 'trainval', root=tmp_path), load_dataset('oxford_pets', 'test', root=tmp_path)
    assert get_targets(tv).tolist() == [0, 1, 0] and get_targets(te).tolist() == [2, 1]
    assert [te[i][1] for i in range(2)] == [2, 1] and close(te[0][0], color(4))
    assert tv.classes == te.classes == ['Abyssinian', 'Bengal', 'Yorkshire Terrier'] and tv.category_ids == [0, 5, 36]
    assert num_classes(tv) == num_classes(te) == 3
    assert len(load_dataset('oxford_pets', 'train', root=tmp_path)) == 3  # alias of trainval
    seg = load_dataset('oxford_pets', 'test', root=tmp_path, target='segmentation')
    img, tri = seg[1]
    assert np.asarray(tri)[3, 4] == 3 and np.asarray(tri)[5, 5] == 1 and np.asarray(tri)[0, 0] == 2


# ---------------------------------------------------------------------------------------------------
# Tiny ImageNet-200 (official layout)
# ---------------------------------------------------------------------------------------------------

WNIDS = ['n02124075', 'n01443537', 'n04067472']  # deliberately not sorted: wnids.txt fixes the order


def write_tiny_imagenet(root, per_class=3):
    base = root / 'tiny-imagenet-200'; base.mkdir(parents=True)
    (base / 'wnids.txt').write_text('\n'.join(WNIDS) + '\n')
    (base / 'words.txt').write_text('n01443537\tgoldfish, Carassius auratus\nn02124075\tEgyptian cat\nn04067472\treel\nn00000001\tother\n')
    for c, w in enumerate(WNIDS):
        boxes = []
        for k in range(per_class):
            jpeg(base / 'train' / w / 'images' / f'{w}_{k}.JPEG', color(10 * c + k), (64, 64)); boxes.append(f'{w}_{k}.JPEG\t0\t0\t63\t63')
        (base / 'train' / w / f'{w}_boxes.txt').write_text('\n'.join(boxes) + '\n')
    val = [(f'val_{k}.JPEG', WNIDS[k % 3]) for k in range(5)]
    for k, (f, w) in enumerate(val): jpeg(base / 'val' / 'images' / f, color(100 + k), (64, 64))
    (base / 'val' / 'val_annotations.txt').write_text(''.join(f'{f}\t{w}\t1\t2\t40\t50\n' for f, w in val))


def test_tiny_imagenet(tmp_path, monkeypatch):
    write_tiny_imagenet(tmp_path)
    monkeypatch.setenv('SSL_STUDY_DATA', str(tmp_path))  # found through the environment variable
    tr = load_dataset('tiny_imagenet', 'train')
    assert len(tr) == 9 and tr.classes == WNIDS and get_targets(tr).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    img, y = tr[4]
    assert img.size == (64, 64) and img.mode == 'RGB' and y == 1 and close(img, color(11))
    assert tr.class_names == ['Egyptian cat', 'goldfish', 'reel'] and num_classes(tr) == 3
    va = load_dataset('tiny_imagenet', 'val')
    assert len(va) == 5 and get_targets(va).tolist() == [0, 1, 2, 0, 1] and close(va[3][0], color(103))
    with pytest.raises(ValueError): load_dataset('tiny_imagenet', 'test')
    (tmp_path / 'tiny-imagenet-200' / 'val' / 'val_annotations.txt').unlink()
    with pytest.raises(DatasetNotFoundError) as e: load_dataset('tiny_imagenet', 'val')
    assert 'val_annotations.txt' in str(e.value)


# ---------------------------------------------------------------------------------------------------
# DAVIS (official layout)
# ---------------------------------------------------------------------------------------------------

def write_davis(root, seqs={'bear': 3, 'cows': 2, 'dog': 4}, val=('cows', 'dog')):
    base = root / 'DAVIS'
    for s, n in seqs.items():
        for k in range(n):
            jpeg(base / 'JPEGImages' / '480p' / s / f'{k:05d}.jpg', color(k + 10 * len(s)), (20, 12))
            m = np.zeros((12, 20), np.uint8); m[2:2 + k + 1, 3:9] = 255
            png(base / 'Annotations' / '480p' / s / f'{k:05d}.png', m)
    if val is not None:
        (base / 'ImageSets' / '2016').mkdir(parents=True)
        (base / 'ImageSets' / '2016' / 'val.txt').write_text('\n'.join(val) + '\n')


def test_davis(tmp_path):
    write_davis(tmp_path)
    va = load_dataset('davis', 'val', root=tmp_path)
    assert va.sequences == ['cows', 'dog'] and len(va) == 6
    assert va.seq_names == ['cows'] * 2 + ['dog'] * 4 and va.frame_ids == [0, 1, 0, 1, 2, 3]
    frame, mask = va[4]  # dog, frame 2
    assert close(frame, color(2 + 30)) and mask.mode == 'L'
    m = np.asarray(mask)
    assert set(np.unique(m).tolist()) == {0, 255} and (m == 255).sum() == 3 * 6
    assert (m[2:5, 3:9] == 255).all()  # where it was drawn
    assert va.frames('dog') == [2, 3, 4, 5]
    assert va.pairs(1) == [(0, 1), (2, 3), (3, 4), (4, 5)] and va.pairs(2) == [(2, 4), (3, 5)]
    with pytest.warns(UserWarning, match='no ImageSets list'):
        tr = load_dataset('davis', 'train', root=tmp_path)  # no train.txt: every sequence folder
    assert tr.sequences == ['bear', 'cows', 'dog'] and len(tr) == 9
    one = load_dataset('davis', 'val', root=tmp_path, sequences=['dog'])
    assert one.sequences == ['dog'] and len(one) == 4
    with pytest.raises(ValueError): load_dataset('davis', 'val', root=tmp_path, sequences=['bear'])
    with pytest.raises(TypeError): get_targets(va)
    x, y = load_dataset('davis', 'val', root=tmp_path, transforms=joint_seg_transform(6))[5]
    assert x.shape == (3, 6, 6) and set(y.unique().tolist()) <= {0, 255}


def test_davis_2016_list_and_palette_masks(tmp_path):
    "DAVIS-2016's own ImageSets/480p/val.txt (frame/mask path pairs) and multi-object palette masks."
    write_davis(tmp_path, val=None)
    lst = tmp_path / 'DAVIS' / 'ImageSets' / '480p'; lst.mkdir(parents=True)
    lst.joinpath('val.txt').write_text(''.join(f'/JPEGImages/480p/bear/{k:05d}.jpg /Annotations/480p/bear/{k:05d}.png\n' for k in range(3)))
    m = np.zeros((12, 20), np.uint8); m[0, 0] = 1; m[5, 5] = 2
    png(tmp_path / 'DAVIS' / 'Annotations' / '480p' / 'bear' / '00001.png', m, 'P', VOC_PALETTE)
    va = load_dataset('davis', 'val', root=tmp_path)
    assert va.sequences == ['bear'] and len(va) == 3
    mk = np.asarray(va[1][1])
    assert mk[0, 0] == 255 and mk[5, 5] == 255 and (mk == 255).sum() == 2


# ---------------------------------------------------------------------------------------------------
# labels, subsets, wrappers
# ---------------------------------------------------------------------------------------------------

def toy(counts=(50, 30, 20)):
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return TensorDataset(torch.arange(len(y)).float(), y)


def test_stratified_subset_counts_and_determinism():
    ds = toy()
    s = stratified_subset(ds, per_class=7, seed=0)
    assert np.bincount(get_targets(s)).tolist() == [7, 7, 7] and len(set(s.indices)) == 21
    assert s.indices == stratified_subset(ds, per_class=7, seed=0).indices
    assert s.indices != stratified_subset(ds, per_class=7, seed=1).indices
    assert [int(ds[i][1]) for i in s.indices] == get_targets(s).tolist()
    f = stratified_subset(ds, fraction=0.1, seed=3)
    assert np.bincount(get_targets(f)).tolist() == [5, 3, 2]
    assert np.bincount(get_targets(stratified_subset(ds, fraction=0.001))).tolist() == [1, 1, 1]  # at least one
    assert np.bincount(get_targets(stratified_subset(ds, fraction=0.25))).tolist() == [12, 8, 5]  # Python's round
    with pytest.raises(ValueError): stratified_subset(ds, per_class=21)  # class 2 has only 20
    with pytest.raises(ValueError): stratified_subset(ds, fraction=0.5, per_class=2)


def test_stratified_subset_classes_remap():
    ds = toy()
    s = stratified_subset(ds, per_class=4, classes=[2, 0], seed=0)  # listed classes, renumbered in that order
    t = get_targets(s)
    assert sorted(t.tolist()) == [0] * 4 + [1] * 4 and num_classes(s) == 2
    for i, j in enumerate(s.indices):
        orig = int(ds[j][1]); assert orig in (0, 2) and t[i] == {2: 0, 0: 1}[orig] and s[i][1] == t[i]
    first2 = stratified_subset(ds, fraction=0.5, classes=2)
    assert np.bincount(get_targets(first2)).tolist() == [25, 15] and num_classes(first2) == 2
    assert all(int(ds[j][1]) in (0, 1) for j in first2.indices)
    with pytest.raises(ValueError): stratified_subset(ds, classes=[5])


def test_stratified_subset_on_files(tmp_path):
    write_tiny_imagenet(tmp_path, per_class=4)
    tr = load_dataset('tiny_imagenet', 'train', root=tmp_path)
    s = stratified_subset(tr, per_class=2, classes=[1, 2], seed=5)
    assert len(s) == 4 and [s[i][1] for i in range(4)] == get_targets(s).tolist() and sorted(get_targets(s)) == [0, 0, 1, 1]
    assert all(4 <= j < 12 for j in s.indices)
    assert s.dataset.classes == WNIDS[1:] and num_classes(s) == 2


def test_stratified_split():
    ds = toy((10, 5, 1))
    tr, te = stratified_split(ds, 0.2, seed=0)
    assert not set(tr.indices) & set(te.indices) and sorted(tr.indices + te.indices) == list(range(16))
    assert np.bincount(get_targets(te), minlength=3).tolist() == [2, 1, 0]  # a single-item class stays in train
    assert stratified_split(ds, 0.2, seed=0)[1].indices == te.indices != stratified_split(ds, 0.2, seed=9)[1].indices


def test_transformed_and_in_memory(tmp_path):
    write_tiny_imagenet(tmp_path)
    va = load_dataset('tiny_imagenet', 'val', root=tmp_path)
    a, b = Subset(va, [0, 1, 2]), Subset(va, [3, 4])
    ta = Transformed(a, transform=lambda im: np.asarray(im)[0, 0].tolist())
    tb = Transformed(b, transform=lambda im: im.size)
    assert ta[0][1] == 0 and np.allclose(ta[0][0], color(100), atol=TOL) and tb[0] == ((64, 64), 0)
    assert get_targets(ta).tolist() == [0, 1, 2] and get_targets(tb).tolist() == [0, 1] and ta.classes == WNIDS
    shifted = Transformed(va, target_transform=lambda y: y + 10)
    assert get_targets(shifted).tolist() == [10, 11, 12, 10, 11] and shifted[1][1] == 11
    calls = []
    def pre(im): calls.append(1); return im.resize((8, 8))
    mem = InMemory(va, pre_transform=pre, progress=False)
    assert len(calls) == 5 and len(mem) == 5
    for i in range(5):
        assert mem[i][0].size == (8, 8) and close(mem[i][0], color(100 + i)) and mem[i][1] == va[i][1]
    assert len(calls) == 5  # served from memory
    assert get_targets(mem).tolist() == get_targets(va).tolist() and num_classes(mem) == 3


def test_get_targets_does_not_decode(tmp_path, monkeypatch):
    write_tiny_imagenet(tmp_path)
    tr = load_dataset('tiny_imagenet', 'train', root=tmp_path)
    s = Subset(Transformed(tr, transform=lambda x: x), [8, 0, 4])
    monkeypatch.setattr(Image, 'open', lambda *a, **k: (_ for _ in ()).throw(AssertionError('decoded an image')))
    assert get_targets(s).tolist() == [2, 0, 1] and get_targets(stratified_subset(tr, per_class=1)).tolist() == [0, 1, 2]


def test_joint_seg_transform_values():
    m = np.zeros((30, 40), np.uint8); m[:, 20:] = 3; m[:3] = 255  # 3 rows: one survives 3x nearest downsizing
    x, y = joint_seg_transform(10)(Image.new('RGB', (40, 30), (0, 255, 0)), Image.fromarray(m))
    assert x.shape == (3, 10, 10) and torch.allclose(x[1], torch.ones(10, 10)) and x[0].abs().max() == 0
    assert y[5, :5].tolist() == [0] * 5 and y[5, 5:].tolist() == [3] * 5 and y[0].tolist() == [255] * 10


# ---------------------------------------------------------------------------------------------------
# data faults: unreadable images, empty folders, classes missing from a split
# ---------------------------------------------------------------------------------------------------

def _cut(path, keep=0.5):
    "Truncate the file at `path` to `keep` of its bytes (an interrupted copy)."
    data = path.read_bytes(); path.write_bytes(data[:int(len(data) * keep)])


def _noisy_jpeg(path, seed=0):
    "A JPEG of random pixels: every part of the file carries image data, so any cut is detectable."
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, quality=90)


def test_open_image_names_unreadable_files(tmp_path):
    import pickle
    from ssl_study.data import CorruptImageError, DataError, open_image
    _noisy_jpeg(tmp_path / 'ok.jpg')
    im = open_image(tmp_path / 'ok.jpg')
    assert im.size == (32, 32) and np.array_equal(np.asarray(im), np.asarray(Image.open(tmp_path / 'ok.jpg').convert('RGB')))
    assert open_image(tmp_path / 'ok.jpg', 'L').mode == 'L'
    (tmp_path / 'cut.jpg').write_bytes((tmp_path / 'ok.jpg').read_bytes()); _cut(tmp_path / 'cut.jpg', 0.9)
    png(tmp_path / 'cut.png', np.arange(256, dtype=np.uint8).reshape(16, 16).repeat(4, 0)); _cut(tmp_path / 'cut.png')
    (tmp_path / 'empty.jpg').write_bytes(b'')
    (tmp_path / 'text.jpg').write_text('not an image')
    for name in ('cut.jpg', 'cut.png', 'empty.jpg', 'text.jpg'):
        for draft in (False, True):
            with pytest.raises(CorruptImageError) as e: open_image(tmp_path / name, draft=draft)
            assert str(tmp_path / name) in str(e.value) and e.value.path == str(tmp_path / name)
            assert isinstance(e.value, DataError) and isinstance(e.value, ValueError)
    assert pickle.loads(pickle.dumps(e.value)).path == e.value.path       # survives DataLoader workers
    with pytest.raises(FileNotFoundError): open_image(tmp_path / 'missing.jpg')


def test_loaders_name_a_truncated_image(tmp_path):
    from ssl_study.data import CorruptImageError
    write_tiny_imagenet(tmp_path)
    bad = tmp_path / 'tiny-imagenet-200' / 'train' / WNIDS[1] / 'images' / f'{WNIDS[1]}_2.JPEG'
    _noisy_jpeg(bad); _cut(bad)
    tr = load_dataset('tiny_imagenet', 'train', root=tmp_path)
    assert close(tr[4][0], color(11))                                     # the others read as before
    with pytest.raises(CorruptImageError) as e: tr[5]
    assert str(bad) in str(e.value)
    with pytest.raises(CorruptImageError) as e: InMemory(tr, progress=False)      # decoding a whole split
    assert str(bad) in str(e.value)
    write_caltech(tmp_path, ['001.ak47', '002.american-flag'], 2)
    cbad = tmp_path / 'caltech256' / '256_ObjectCategories' / '002.american-flag' / '002_0002.jpg'
    cbad.write_bytes(b'\xff\xd8\xff')
    with pytest.raises(CorruptImageError) as e: load_dataset('caltech256', 'all', root=tmp_path)[3]
    assert str(cbad) in str(e.value)
    for c in ('cat', 'dog'): _noisy_jpeg(tmp_path / 'folder' / c / '0.jpg')
    _cut(tmp_path / 'folder' / 'dog' / '0.jpg')
    f = load_dataset('imagefolder', path=tmp_path / 'folder')
    assert f[0][0].mode == 'RGB'
    with pytest.raises(CorruptImageError, match='dog/0.jpg'): f[1]


def test_verify_images_lists_every_bad_file(tmp_path):
    from ssl_study.data import CorruptImageError, image_files, verify_images
    write_tiny_imagenet(tmp_path)
    base = tmp_path / 'tiny-imagenet-200'
    tr = load_dataset('tiny_imagenet', 'train', root=tmp_path)
    assert image_files(tr) == [base / 'train' / w / 'images' / f'{w}_{k}.JPEG' for w in WNIDS for k in range(3)]
    assert image_files(Subset(Transformed(tr), [8, 0])) == [base / 'train' / WNIDS[2] / 'images' / f'{WNIDS[2]}_2.JPEG',
                                                          base / 'train' / WNIDS[0] / 'images' / f'{WNIDS[0]}_0.JPEG']
    assert verify_images(tr, progress=False) == 9
    bad = [base / 'train' / WNIDS[0] / 'images' / f'{WNIDS[0]}_1.JPEG', base / 'train' / WNIDS[2] / 'images' / f'{WNIDS[2]}_0.JPEG']
    _noisy_jpeg(bad[0]); _cut(bad[0]); bad[1].write_bytes(b'')
    with pytest.raises(CorruptImageError) as e: verify_images(Transformed(tr, transform=lambda x: x), progress=False)
    assert '2 of 9 image files' in str(e.value) and all(str(b) in str(e.value) for b in bad)
    assert verify_images(Subset(tr, [0, 2, 3, 4, 5]), progress=False) == 5
    write_caltech(tmp_path, ['001.ak47', '002.american-flag'], 2)
    cal = load_dataset('caltech256', 'all', root=tmp_path)
    cbase = tmp_path / 'caltech256' / '256_ObjectCategories'
    assert image_files(cal) == [cbase / '001.ak47' / '001_0001.jpg', cbase / '001.ak47' / '001_0002.jpg',
                                cbase / '002.american-flag' / '002_0001.jpg', cbase / '002.american-flag' / '002_0002.jpg']
    write_davis(tmp_path)
    assert image_files(load_dataset('davis', 'val', root=tmp_path))[2] == tmp_path / 'DAVIS' / 'JPEGImages' / '480p' / 'dog' / '00000.jpg'
    with pytest.raises(TypeError): image_files(toy())


def test_empty_class_folders_are_named(tmp_path):
    from ssl_study.data import DataError
    write_tiny_imagenet(tmp_path)
    empty = tmp_path / 'tiny-imagenet-200' / 'train' / WNIDS[1] / 'images'
    for f in empty.iterdir(): f.unlink()
    with pytest.raises(DataError) as e: load_dataset('tiny_imagenet', 'train', root=tmp_path)
    assert str(empty) in str(e.value) and WNIDS[1] in str(e.value)
    write_caltech(tmp_path, ['001.ak47', '002.american-flag', '003.backpack'], 2)
    for f in (tmp_path / 'caltech256' / '256_ObjectCategories' / '002.american-flag').iterdir(): f.unlink()
    with pytest.raises(DataError, match='002.american-flag'): load_dataset('caltech256', 'all', root=tmp_path)
    for c in ('cat', 'dog'): (tmp_path / 'folder' / c).mkdir(parents=True)
    jpeg(tmp_path / 'folder' / 'cat' / '0.jpg', color(0))
    with pytest.raises(DatasetNotFoundError, match='dog'): load_dataset('imagefolder', path=tmp_path / 'folder')
    write_davis(tmp_path)
    (tmp_path / 'DAVIS' / 'JPEGImages' / '480p' / 'emu').mkdir()
    with pytest.raises(DataError, match='emu'): load_dataset('davis', 'all', root=tmp_path)


def test_check_split_classes(tmp_path):
    from ssl_study.data import DataError, check_split_classes
    assert check_split_classes(toy((3, 2, 2)), toy((1, 1, 1))) == [0, 1, 2]
    with pytest.raises(DataError) as e: check_split_classes(toy((3, 2, 2)), toy((1, 1)))
    assert str(e.value) == 'the splits have different classes; 1 class(es) in train but not in test: 2'
    with pytest.raises(DataError, match='in test but not in train: 3'): check_split_classes(toy((1, 1, 1)), toy((1, 1, 1, 1)))
    with pytest.raises(DataError, match='test split has no labelled items'): check_split_classes(toy(), Subset(toy(), []))
    write_tiny_imagenet(tmp_path)     # val: 5 images of classes 0, 1, 2, 0, 1
    tr = load_dataset('tiny_imagenet', 'train', root=tmp_path)
    va = Subset(load_dataset('tiny_imagenet', 'val', root=tmp_path), [0, 1, 3])        # no image of class 2 left
    with pytest.raises(DataError) as e: check_split_classes(tr, va)
    assert f'in train but not in test: 2 ({WNIDS[2]})' in str(e.value)
    assert check_split_classes(stratified_subset(tr, per_class=1, classes=[0, 1]), stratified_subset(va, per_class=1)) == [0, 1]


# ---------------------------------------------------------------------------------------------------
# issue 18: label ids come from one class list for both splits; a class missing from a split is named
# ---------------------------------------------------------------------------------------------------

def test_a_val_split_without_the_first_class_is_named_not_shifted(tmp_path, monkeypatch):
    "Tiny ImageNet with every val image of wnids.txt's first class removed: `classes=2` used to relabel each split on its"
    " own (train 0 = n02124075, val 0 = n01443537) and pass the check; now the ids follow wnids.txt and the class is named."
    from ssl_study.data import DataError, stratified_subset
    from ssl_study.loaders import train_test
    write_tiny_imagenet(tmp_path, per_class=3)
    ann = tmp_path / 'tiny-imagenet-200' / 'val' / 'val_annotations.txt'
    ann.write_text(''.join(l + '\n' for l in ann.read_text().splitlines() if WNIDS[0] not in l))
    monkeypatch.setenv('SSL_STUDY_DATA', str(tmp_path)); monkeypatch.setenv('SSL_STUDY_DECODED', str(tmp_path / 'decoded'))
    va = load_dataset('tiny_imagenet', 'val')
    assert get_targets(stratified_subset(va, classes=2)).tolist() == [1, 1]         # n01443537 keeps id 1 (was shifted to 0)
    with pytest.raises(DataError, match=WNIDS[0]):
        train_test('tiny_imagenet', 16, splits=('train', 'val'), classes=2, progress=False)


def test_a_cifar10_folder_split_without_a_class_is_named(tmp_path, monkeypatch):
    from ssl_study.datasets import CIFAR10_CLASSES
    for split in ('train', 'test'):
        for c in CIFAR10_CLASSES:
            if split == 'test' and c == 'airplane': continue
            jpeg(tmp_path / 'cifar10' / split / c / '0.jpg', color(3), (32, 32))
    monkeypatch.setenv('SSL_STUDY_DATA', str(tmp_path))
    assert load_dataset('cifar10', 'train').class_to_idx['automobile'] == 1
    with pytest.raises(DatasetNotFoundError, match="'airplane'"): load_dataset('cifar10', 'test')


def test_an_unreadable_file_is_not_called_corrupt(tmp_path, monkeypatch):
    "Permission denied is not a corrupt image (as root, chmod cannot make a file unreadable, so the open is made to fail)."
    from PIL import Image
    from ssl_study.data import CorruptImageError, DataError, open_image
    p = tmp_path / 'x.png'; Image.new('RGB', (4, 4)).save(p)
    def denied(*a, **k): raise PermissionError(13, 'Permission denied', str(p))
    monkeypatch.setattr(Image, 'open', denied)
    with pytest.raises(DataError, match='permission denied') as e: open_image(p)
    assert not isinstance(e.value, CorruptImageError)
