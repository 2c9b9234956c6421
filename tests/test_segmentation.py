"Shared segmentation code: mask encodings, confusion matrix and mIoU, cached splits, predictions, overlays."
import numpy as np
import pytest, torch
import torch.nn as nn
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import TensorDataset
import ssl_study.segmentation as seg
from ssl_study.datasets import have_dataset


# ---------------------------------------------------------------- metrics
def test_miou_hand_computed_with_ignored_pixels():
    target = np.array([[0, 0, 1, 2],
                       [0, 255, 1, 2],
                       [255, 1, 1, 2]])
    pred = np.array([[0, 1, 1, 2],
                     [0, 2, 1, 1],
                     [2, 1, 0, 2]])
    # counted pixels (target != 255): 10. class 0: TP 2, FN 1 (->1), FP 1 (from a 1) -> 2/4
    # class 1: TP 3, FN 1 (->0), FP 2 (from a 0 and a 2) -> 3/6; class 2: TP 2, FN 1 (->1), FP 0 -> 2/3
    cm = seg.seg_confusion(pred, target, 3)
    assert cm.tolist() == [[2, 1, 0], [1, 3, 0], [0, 1, 2]]
    s = seg.seg_scores(cm)
    assert s['iou'] == pytest.approx([2 / 4, 3 / 6, 2 / 3])
    assert s['miou'] == pytest.approx((2 / 4 + 3 / 6 + 2 / 3) / 3)
    assert s['pixel_acc'] == pytest.approx(7 / 10)


def test_miou_skips_classes_absent_from_prediction_and_target():
    s = seg.seg_scores(seg.seg_confusion(np.array([0, 0, 1]), np.array([0, 1, 1]), 3))
    assert np.isnan(s['iou'][2]) and s['miou'] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_confusion_matches_scikit_learn():
    from sklearn.metrics import confusion_matrix
    rng = np.random.default_rng(1)
    p, t = rng.integers(0, 4, 5000), rng.integers(0, 4, 5000)
    t[rng.random(5000) < .1] = 255
    keep = t != 255
    assert np.array_equal(seg.seg_confusion(p, t, 4), confusion_matrix(t[keep], p[keep], labels=[0, 1, 2, 3]))
    with pytest.raises(ValueError): seg.seg_confusion(np.array([0, 4]), np.array([0, 1]), 4)


def test_confusion_sums_over_batches():
    rng = np.random.default_rng(0)
    p, t = rng.integers(0, 3, (4, 5, 5)), rng.integers(0, 3, (4, 5, 5))
    t[0, 0] = 255
    assert np.array_equal(seg.seg_confusion(p[:2], t[:2], 3) + seg.seg_confusion(p[2:], t[2:], 3), seg.seg_confusion(p, t, 3))


# ---------------------------------------------------------------- encodings
def test_pet_trimap_encodings():
    trimap = torch.tensor([[1, 2, 3]])
    assert seg.encode_mask(trimap, 'oxford_pets').tolist() == [[1, 0, 255]]               # pet, background, border ignored
    assert seg.encode_mask(trimap, 'oxford_pets', 'trimap3').tolist() == [[0, 1, 2]]      # pet 0, background 1, border 2
    assert seg.seg_classes('oxford_pets') == ('background', 'pet')
    assert seg.seg_classes('oxford_pets', 'trimap3') == ('pet', 'background', 'border')
    assert seg.encode_mask(torch.tensor([[0, 255]]), 'davis').tolist() == [[0, 1]]
    assert seg.encode_mask(torch.tensor([[0, 20, 255]]), 'voc').tolist() == [[0, 20, 255]]


@pytest.mark.parametrize('args', [('voc', 'trimap3'), ('davis', 'trimap3'), ('oxford_pets', 'binary3')])
def test_encode_mask_rejects_unknown_modes(args):
    with pytest.raises(ValueError): seg.encode_mask(torch.tensor([1, 2]), *args)


# ---------------------------------------------------------------- predictions and overlays
class _Channels(nn.Module):
    "Logits = the input's channels: the arg-max is the brightest channel of each pixel."
    def __init__(self): super().__init__(); self.w = nn.Parameter(torch.zeros(1))
    def forward(self, x): return x


def test_predict_masks_keeps_order_across_batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (7, 3, 4, 4), dtype=torch.uint8, generator=g)
    m = torch.randint(0, 3, (7, 4, 4), dtype=torch.uint8, generator=g)
    pred, mask = seg.predict_masks(_Channels(), TensorDataset(x, m), batch_size=3, prep=lambda t: t.float())
    assert torch.equal(pred, x.long().argmax(1).to(torch.uint8)) and torch.equal(mask, m)


def test_predict_masks_default_input_is_imagenet_normalised_and_resized():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    seen = []
    class Spy(_Channels):
        def forward(self, t): seen.append(t); return t
    seg.predict_masks(Spy(), TensorDataset(x, torch.zeros(2, 8, 8, dtype=torch.uint8)), size=4)
    ref = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(x.float() / 255)
    ref = torch.nn.functional.interpolate(ref, size=(4, 4), mode='bilinear', antialias=True, align_corners=False)
    assert torch.allclose(seen[0], ref, atol=1e-5)


def test_mask_overlay_colours():
    img = torch.full((1, 3, 1, 3), 0.2)
    ov = seg.mask_overlay(img, torch.tensor([[[0, 2, 255]]]), alpha=0.5)
    assert torch.allclose(ov[0, :, 0, 0], img[0, :, 0, 0])                              # background untinted
    assert torch.allclose(ov[0, :, 0, 1], 0.1 + 0.5 * torch.tensor([60, 180, 75]) / 255)  # class 2, palette colour 2
    assert torch.allclose(ov[0, :, 0, 2], torch.full((3,), 0.6))                         # void: white


# ---------------------------------------------------------------- cached splits on the real files
@pytest.mark.skipif(not have_dataset('oxford_pets'), reason='Oxford-IIIT Pet not in the data root')
def test_cached_pet_split_matches_the_trimap_files(monkeypatch):
    ds = seg.cached_seg_split('oxford_pets', False, 24, n=3)
    raw = seg.seg_split('oxford_pets', False)
    idx = np.linspace(0, len(raw) - 1, 3).round().astype(int)
    assert ds.tensors[0].shape == (3, 3, 24, 24) and ds.tensors[1].shape == (3, 24, 24)
    for k, i in enumerate(idx):
        img, trimap = raw[int(i)]
        small = np.array(trimap.resize((24, 24), Image.NEAREST))
        expected = np.vectorize({1: 1, 2: 0, 3: 255}.get)(small)
        assert np.array_equal(ds.tensors[1][k].numpy(), expected)
        rgb = np.array(img.convert('RGB').resize((24, 24), Image.BILINEAR, reducing_gap=None))
        assert np.abs(ds.tensors[0][k].permute(1, 2, 0).numpy().astype(int) - rgb).mean() < 3    # squashed, not cropped
    monkeypatch.setattr(seg, '_decode_pairs', lambda *a: pytest.fail('decoded again instead of reading the cache'))
    again = seg.cached_seg_split('oxford_pets', False, 24, n=3)
    assert torch.equal(again.tensors[1], ds.tensors[1])
    monkeypatch.undo()
    t3 = seg.cached_seg_split('oxford_pets', False, 24, n=3, mode='trimap3')              # the same trimaps, 3 classes
    assert torch.equal(torch.tensor([1, 0, 255], dtype=torch.uint8)[t3.tensors[1].long()], ds.tensors[1])


@pytest.mark.skipif(not have_dataset('davis'), reason='DAVIS not in the data root')
def test_davis_parts_share_no_sequence():
    tr, te = seg.seg_split('davis', True), seg.seg_split('davis', False)
    seqs = lambda s: {s.dataset.seq_names[i] for i in s.indices}
    assert seqs(tr) and seqs(te) and not seqs(tr) & seqs(te)
    assert all(s.dataset.frame_ids[i] % 4 == 0 for s in (tr, te) for i in s.indices)
