"The pyramid paper: shapes, the patch mask, the masked loss, who gets gradient, removed scales, metrics, bad input."
import numpy as np
import pytest, torch, torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import TensorDataset
import pandas as pd
import ssl_study.pyramid as pyr
from ssl_study.runs import ParamError
from conftest import papermill


# ---------------------------------------------------------------- architecture
@pytest.mark.parametrize('size', [128, 64, 32, 48])
def test_shapes_through_every_scale(size):
    m = pyr.PyramidInpainter('as_described')
    x = torch.rand(2, 3, size, size)
    levels = pyr.gaussian_pyramid(x)
    assert [l.shape[-1] for l in levels] == [size, size // 2, size // 4]
    for i, (e, l) in enumerate(zip(m.encoders, levels)):
        code = e(l)
        assert code.shape == (2, 512, *[-(-s // 16) for s in l.shape[-2:]])      # four stride-2 convs: ceil(s/16)
    outs = m.scale_outputs(x)
    for o, l in zip(outs, levels):
        assert o.shape[:2] == (2, 3) and o.shape[-1] == 16 * -(-l.shape[-1] // 16)
    for fusion in pyr.FUSIONS:
        assert pyr.PyramidInpainter(fusion)(x).shape == x.shape


def test_shape_table_at_128():
    t = pyr.scale_shapes(pyr.PyramidInpainter(), 128)
    assert list(t['enc4 (code)']) == ['512x8x8', '512x4x4', '512x2x2']
    assert list(t['dec4 (output)']) == ['3x128x128', '3x64x64', '3x32x32']
    clf = pyr.PyramidClassifier(pyr.PyramidInpainter().encoders, 102)
    x = torch.rand(1, 3, 128, 128)
    assert torch.cat([e(x) for e in clf.encoders], 1).shape == (1, 1536, 8, 8)
    assert clf.head[0].in_features == 1536 and clf.head[0].out_features == 256 and clf(x).shape == (1, 102)


def test_as_described_output_is_the_fused_sum():
    torch.manual_seed(0)
    m = pyr.PyramidInpainter('as_described').eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        half = lambda t: F.interpolate(t, scale_factor=.5, mode='bilinear', align_corners=False)
        l1, l2, l3 = x, half(x), half(half(x))                 # the pyramid halves twice
        d = [m.decoders[i](m.encoders[i](l)) for i, l in enumerate((l1, l2, l3))]
        up = lambda t, s: F.interpolate(t, size=(s, s), mode='bilinear', align_corners=False)
        expected = d[0] + up(d[1] + up(d[2], 32), 64)
        assert torch.allclose(m(x), expected, atol=1e-5)
        a = pyr.PyramidInpainter('authors_code').eval(); a.load_state_dict(m.state_dict())
        assert torch.allclose(a(x), d[0], atol=1e-5)       # authors' code: largest scale only


def test_removed_encoder_outputs_zero():
    enc = pyr.remove_scale(pyr.PyramidInpainter().encoders, 1)
    assert (enc[0](torch.randn(2, 3, 32, 32)) == 0).all() and not enc[0][0].weight.requires_grad
    with pytest.raises(ParamError): pyr.remove_scale(pyr.PyramidInpainter().encoders, 4)


# ---------------------------------------------------------------- pretext task
@pytest.mark.parametrize('h,w', [(128, 128), (32, 32), (33, 17), (2, 2)])
def test_patch_mask_is_half_size_and_inside(h, w):
    g = torch.Generator().manual_seed(0)
    tops, lefts = set(), set()
    for _ in range(300):
        m = pyr.random_patch_mask(h, w, g)
        assert m.shape == (h, w) and m.dtype == torch.bool
        ys, xs = m.nonzero(as_tuple=True)
        assert m.sum() == (h // 2) * (w // 2)
        assert ys.max() - ys.min() + 1 == h // 2 and xs.max() - xs.min() + 1 == w // 2
        assert ys.max() < h and xs.max() < w                        # inside the image
        assert m[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()  # one solid rectangle
        tops.add(ys.min().item()); lefts.add(xs.min().item())
    assert max(tops) < h / 2 and max(lefts) < w / 2                 # corner in [0, H/2) x [0, W/2)
    if h == 32: assert tops == set(range(16)) and lefts == set(range(16))


def test_patch_is_zeroed_in_every_image_at_the_same_place():
    x = torch.rand(3, 3, 8, 8) + 1
    m = pyr.random_patch_mask(8, 8, torch.Generator().manual_seed(1))
    xm = pyr.mask_patch(x, m)
    assert (xm[..., m] == 0).all() and torch.equal(xm[..., ~m], x[..., ~m])


def test_loss_only_on_masked_region():
    target = torch.arange(16.).view(1, 1, 4, 4)
    mask = torch.zeros(4, 4, dtype=torch.bool); mask[1:3, 0:2] = True        # pixels 4, 5, 8, 9
    pred = torch.zeros(1, 1, 4, 4, requires_grad=True)
    loss = pyr.masked_mse(pred, target, mask)
    assert loss.item() == pytest.approx((16 + 25 + 64 + 81) / 4)
    loss.backward()
    assert (pred.grad[..., ~mask] == 0).all() and (pred.grad[..., mask] != 0).all()
    other = torch.full((1, 1, 4, 4), 99.); other[..., mask] = 0              # differs only outside the mask
    assert pyr.masked_mse(other, target, mask).item() == pytest.approx(loss.item())


def _grads(fusion):
    torch.manual_seed(0)
    m = pyr.PyramidInpainter(fusion)
    x = pyr.normalize(torch.rand(4, 3, 64, 64))
    m.zero_grad(set_to_none=True)
    pyr.inpainting_loss(m, x, torch.Generator().manual_seed(0)).backward()
    norm = lambda mod: sum(float(p.grad.abs().sum()) for p in mod.parameters() if p.grad is not None)
    return [norm(e) for e in m.encoders], [norm(d) for d in m.decoders]


def test_authors_code_trains_only_the_largest_scale():
    enc, dec = _grads('authors_code')
    assert enc[0] > 0 and dec[0] > 0
    assert enc[1] == enc[2] == 0 and dec[1] == dec[2] == 0


def test_as_described_trains_every_scale():
    enc, dec = _grads('as_described')
    assert all(g > 0 for g in enc) and all(g > 0 for g in dec)


# ---------------------------------------------------------------- downstream
def _tiny(n=8, size=32, classes=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    m = torch.randint(0, 2, (n, size, size), dtype=torch.uint8, generator=g); m[:, :3] = 255
    return TensorDataset(x, torch.arange(n) % classes), TensorDataset(x, m)


@pytest.mark.parametrize('removed', [1, 2, 3])
def test_removed_scale_stays_zero_after_finetuning(removed):
    p = dict(pyr.PRESETS['smoke'], batch_size=4, cls_epochs=2, seg_epochs=1, removed_scale=removed, seed=0)
    cls_ds, seg_ds = _tiny()
    model = pyr.initial_model(p)
    c = pyr.classify(model, p, cls_ds, cls_ds, 3, 'cpu', progress=False)
    s = pyr.segment(model, p, seg_ds, seg_ds, 'proper', 2, 'cpu', progress=False)
    a = pyr.segment(model, p, seg_ds, seg_ds, 'authors', 2, 'cpu', progress=False)
    for net in (c['model'], s['net'], a['net']):
        for i, e in enumerate(net.encoders):
            zero = all((q == 0).all() for q in e.parameters())
            assert zero == (i == removed - 1), (removed, i)
    # the starting model is untouched (runs copy it)
    assert not any(all((q == 0).all() for q in e.parameters()) for e in model.encoders)


def test_segmentation_head_has_class_channels_and_no_final_relu():
    seg = pyr.segmentation_head(pyr.PyramidInpainter('as_described'), 21)
    out = seg(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 21, 32, 32) and (out < 0).any()


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
    cm = pyr.seg_confusion(pred, target, 3)
    assert cm.tolist() == [[2, 1, 0], [1, 3, 0], [0, 1, 2]]
    s = pyr.seg_scores(cm)
    assert s['iou'] == pytest.approx([2 / 4, 3 / 6, 2 / 3])
    assert s['miou'] == pytest.approx((2 / 4 + 3 / 6 + 2 / 3) / 3)
    assert s['pixel_acc'] == pytest.approx(7 / 10)


def test_miou_skips_classes_absent_from_prediction_and_target():
    s = pyr.seg_scores(pyr.seg_confusion(np.array([0, 0, 1]), np.array([0, 1, 1]), 3))
    assert np.isnan(s['iou'][2]) and s['miou'] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_authors_iou_hand_computed():
    t1, p1 = np.array([[0, 0], [0, 1]]), np.array([[0, 0], [0, 0]])       # IoU0 3/4, IoU1 0 -> 0.375
    t2, p2 = np.array([[1, 1], [0, 0]]), np.array([[1, 0], [0, 0]])       # IoU0 2/3, IoU1 1/2 -> 7/12
    assert pyr.authors_iou([p1, p2], [t1, t2]) == pytest.approx((0.375 + 7 / 12) / 2)


def test_authors_target_is_totensor_of_the_mask():
    mask = np.array([[0, 1, 20], [255, 255, 3]], dtype=np.uint8)
    via_torchvision = (TF.to_tensor(Image.fromarray(mask, 'L'))[0]).long()
    assert torch.equal(pyr.authors_target(torch.from_numpy(mask)), via_torchvision)
    assert via_torchvision.tolist() == [[0, 0, 0], [1, 1, 0]]


def test_pet_trimap_encoding():
    trimap = torch.tensor([[1, 2, 3]])
    assert pyr.encode_mask(trimap, 'oxford_pets').tolist() == [[1, 0, 255]]
    assert pyr.encode_mask(torch.tensor([[0, 255]]), 'davis').tolist() == [[0, 1]]


# ---------------------------------------------------------------- declarations, cache, tables
def test_grid_and_run_names():
    for scale in ('smoke', 'quick', 'paper'):
        g = pyr.grid(scale)
        names = [pyr.run_name(x, scale) for x in g]
        assert len(set(names)) == len(g)
        for x in g: pyr.check_params(scale, **x)
    q = pyr.grid('quick')
    assert sum(x['init'] == 'ssl' for x in q) == 8 and {x['removed_scale'] for x in q} == {'none', 1, 2, 3}
    assert {x['seed'] for x in pyr.grid('paper')} == {0, 1, 2}


def test_pretrain_cache_shared_across_downstream_settings(outputs):
    ds = TensorDataset(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    p = dict(pyr.PRESETS['smoke'], batch_size=4)
    r1, h1 = pyr.pretrain(p, ds, 'cpu', progress=False)
    r2, h2 = pyr.pretrain({**p, 'removed_scale': 2, 'init': 'ssl', 'cls_epochs': 3, 'seg_dataset': 'davis'}, ds, 'cpu', progress=False)
    r3, h3 = pyr.pretrain({**p, 'fusion': 'as_described'}, ds, 'cpu', progress=False)
    assert (h1, h2, h3) == (False, True, False)
    assert all(torch.equal(r1['state'][k], r2['state'][k]) for k in r1['state'])
    # authors_code pre-training leaves the two smaller scales exactly at their initialisation; as_described does not
    torch.manual_seed(p['seed']); fresh = pyr.PyramidInpainter('authors_code').state_dict()
    small = [k for k in fresh if k.startswith(('encoders.1', 'encoders.2', 'decoders.1', 'decoders.2'))]
    assert small and all(torch.equal(r1['state'][k], fresh[k]) for k in small)
    assert not any(torch.equal(r1['state'][k], fresh[k]) for k in fresh if k.startswith('encoders.0'))
    assert not any(torch.equal(r3['state'][k], fresh[k]) for k in small)


@pytest.mark.parametrize('bad', [dict(removed_scale=7), dict(removed_scale='2'), dict(fusion='sum'), dict(init='supervised'),
                                 dict(image_size=40), dict(image_size=8), dict(cls_epochs=0), dict(seed=-1),
                                 dict(lr='abc'), dict(seg_dataset='coco'), dict(cls_dataset='cifar10'), dict(unknown=1)])
def test_check_params_rejects(bad):
    with pytest.raises(ParamError): pyr.check_params('smoke', **bad)


def test_tables_mean_and_std_over_seeds():
    rows = [dict(status='done', fusion='as_described', init='ssl', removed_scale=r, seed=s, cls_final_acc=acc, cls_best_acc=acc,
                 authors_iou=0.5, authors_iou_all_background=0.47, seg_miou=iou, seg_pixel_acc=0.9)
            for r, s, acc, iou in (('none', 0, 30.0, 0.6), ('none', 1, 34.0, 0.7), ('3', 0, 25.0, 0.5))]
    t = pyr.tables(pd.DataFrame(rows)).set_index(['fusion', 'variant'])
    assert t.loc[('as_described', 'SSL'), 'ours acc % (final)'] == '32.00 ± 2.83'         # std ddof=1 of (30, 34)
    assert t.loc[('as_described', 'SSL'), 'ours mIoU (proper)'] == '0.6500 ± 0.0707'
    assert t.loc[('as_described', 'SSL, scale 3 removed'), 'ours acc % (final)'] == '25.00'  # '3' from a CSV is scale 3
    assert t.loc[('as_described', 'SSL, scale 1 removed'), 'paper acc %'] == 23.91
    assert t.loc[('authors_code', 'SSL'), 'seeds'] == 0


def test_report_writes_table(tmp_path):
    rows = [dict(status='done', scale='smoke', fusion=f, init=i, removed_scale=r, seed=0, cls_final_acc=20.0, cls_best_acc=21.0,
                 authors_iou=0.48, authors_iou_all_background=0.47, seg_miou=0.5, seg_pixel_acc=0.8,
                 cls_dataset='flowers102', seg_dataset='oxford_pets')
            for f in pyr.FUSIONS for i, r in (('ssl', 'none'), ('ssl', 1), ('random', 'none'))]
    out = pyr.report(pd.DataFrame(rows), tmp_path)
    md = (tmp_path / 'table1.md').read_text()
    assert '28.55' in md and '0.4982' in md and (tmp_path / 'table1.csv').exists() and (tmp_path / 'table1.png').exists()
    assert pd.read_csv(tmp_path / 'table1.csv').shape[0] == 10


# ---------------------------------------------------------------- papermill
@pytest.mark.parametrize('args,message', [
    (['-p', 'removed_scale', '7'], "removed_scale must be one of 'none', 1, 2, 3; got 7"),
    (['-p', 'seg_dataset', 'voc'], "Dataset 'voc' not found"),
])
def test_papermill_bad_input_fails_before_work(tmp_path, args, message):
    out = tmp_path / 'outputs'
    r = papermill('nbs/00_pyramid.ipynb', tmp_path / 'executed.ipynb', '-p', 'scale', 'smoke', *args,
                  env={'SSL_STUDY_OUTPUTS': str(out), 'SSL_STUDY_CACHE': str(out / 'cache')})
    assert r.returncode != 0
    assert message in r.stdout + r.stderr
    assert not out.exists() or not [f for f in out.rglob('*') if f.is_file()]


def test_papermill_help_lists_every_parameter():
    r = papermill('--help-notebook', 'nbs/00_pyramid.ipynb')
    assert r.returncode == 0
    for name in ('scale', 'fusion', 'removed_scale', 'init', 'seed', 'image_size', 'pretrain_epochs', 'cls_epochs',
                 'seg_dataset', 'seg_epochs', 'output_name'):
        line = next(l for l in r.stdout.splitlines() if l.strip().startswith(name + ':'))
        assert len(line.split(':', 1)[1].strip()) > 10, line


def test_decoded_tensors_are_cached(outputs):
    calls = []
    def build():
        calls.append(1); return torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1])
    a = pyr.cached_tensors(dict(dataset='toy', size=4), build)
    b = pyr.cached_tensors(dict(size=4, dataset='toy'), build)
    c = pyr.cached_tensors(dict(dataset='toy', size=8), build)
    assert len(calls) == 2 and len(a) == len(b) == 2 and torch.equal(b.tensors[1], torch.tensor([0, 1]))
