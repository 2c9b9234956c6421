"views: batched kornia augmentations checked against torchvision's own parameter sampling and formulas."
import math
import numpy as np, pytest, torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from scipy.stats import ks_2samp
from ssl_study.views import IMAGENET_MEAN, IMAGENET_STD, TwoViews, augment, denormalize, normalize, to_unit


def _u8(b=8, h=40, w=48, seed=0):
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_normalize_matches_torchvision():
    x = _u8()
    ref = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(x.float() / 255)
    assert torch.allclose(normalize(x), ref, atol=1e-6)
    assert torch.allclose(denormalize(ref), x.float() / 255, atol=1e-6)
    assert torch.equal(to_unit(x), x.float() / 255) and to_unit(x).max() <= 1


@pytest.mark.parametrize('size,blur,dtype', [(32, 0.0, torch.uint8), (24, 0.5, torch.uint8), (64, 1.0, torch.float32)])
def test_output_shape_dtype_range(size, blur, dtype):
    x = _u8(6, 50, 70)
    x = x if dtype == torch.uint8 else x.float() / 255
    v = augment(size, p_blur=blur)(x)
    assert v.shape == (6, 3, size, size) and v.dtype == torch.float32 and v.device.type == 'cpu'
    assert v.min() >= 0 and v.max() <= 1


def test_each_image_gets_its_own_parameters():
    aug = augment(32)
    x = _u8(1, 48, 48).expand(32, -1, -1, -1)          # 32 identical images
    torch.manual_seed(0); v = aug(x)
    crops = {tuple(b.flatten().tolist()) for b in aug.ops.crop._params['src']}
    assert len(crops) >= 28                            # 32 crops drawn; collisions are rare
    flips = aug.ops.flip._params['batch_prob']
    assert 0 < flips.float().sum() < 32                # some flipped, some not
    b = aug.ops.jitter._params['brightness_factor']
    assert len(set(b.tolist())) == len(b) > 1          # own brightness factor per jittered image
    assert len({tuple(t.flatten().tolist()) for t in v}) == 32


def test_seeded_runs_repeat_on_cpu():
    aug, x = augment(32, p_blur=0.5), _u8(16)
    torch.manual_seed(3); a = aug(x)
    torch.manual_seed(3); b = aug(x)
    torch.manual_seed(4); c = aug(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def _kornia_crops(n, h, w, scale, ratio, seed=0):
    torch.manual_seed(seed)
    src = augment(16, scale=scale, ratio=ratio).ops.crop.forward_parameters(torch.Size([n, 3, h, w]))['src']
    cw, ch = (src[:, 1, 0] - src[:, 0, 0] + 1).double().numpy(), (src[:, 2, 1] - src[:, 1, 1] + 1).double().numpy()
    return cw * ch / (h * w), np.log(cw / ch), src          # float64 like torchvision's, so equal sizes tie exactly


def _torchvision_crops(n, h, w, scale, ratio, seed=1):
    torch.manual_seed(seed)
    img = torch.zeros(3, h, w)
    p = np.array([T.RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)], dtype=float)
    return p[:, 2] * p[:, 3] / (h * w), np.log(p[:, 3] / p[:, 2])


@pytest.mark.parametrize('h,w,scale,ratio', [(48, 64, (0.08, 1.0), (3 / 4, 4 / 3)),
                                             (32, 32, (0.2, 1.0), (3 / 4, 4 / 3)),
                                             (20, 90, (0.08, 1.0), (3 / 4, 4 / 3)),      # the fallback crop matters here
                                             (64, 64, (0.5, 0.9), (0.5, 2.0))])
def test_crop_distribution_matches_torchvision(h, w, scale, ratio):
    n = 3000
    ka, kr, src = _kornia_crops(n, h, w, scale, ratio)
    ta, tr = _torchvision_crops(n, h, w, scale, ratio)
    assert ks_2samp(ka, ta).pvalue > 1e-3 and ks_2samp(kr, tr).pvalue > 1e-3
    assert (src[..., 0] >= 0).all() and (src[..., 0] <= w - 1).all() and (src[..., 1] >= 0).all() and (src[..., 1] <= h - 1).all()


def test_crop_distribution_test_detects_a_different_scale():
    "The KS check above can fail: kornia at scale (0.2, 1) vs torchvision at (0.08, 1)."
    ka, _, _ = _kornia_crops(3000, 48, 64, (0.2, 1.0), (3 / 4, 4 / 3))
    ta, _ = _torchvision_crops(3000, 48, 64, (0.08, 1.0), (3 / 4, 4 / 3))
    assert ks_2samp(ka, ta).pvalue < 1e-6


def test_jitter_factor_ranges_are_torchvision_ranges():
    aug, ref = augment(16, p_jitter=1.0, jitter=(0.4, 0.3, 0.2, 0.1)), T.ColorJitter(0.4, 0.3, 0.2, 0.1)
    torch.manual_seed(0); aug(_u8(2000, 16, 16))
    p = aug.ops.jitter._params
    for name, (lo, hi) in (('brightness', ref.brightness), ('contrast', ref.contrast), ('saturation', ref.saturation), ('hue', ref.hue)):
        f = p[f'{name}_factor']
        assert lo <= f.min() < lo + 0.02 and hi - 0.02 < f.max() <= hi, (name, f.min(), f.max(), lo, hi)


def _identity_crop(**kw):
    return augment(32, scale=(1, 1), ratio=(1, 1), flip=False, **{'p_jitter': 0.0, 'p_gray': 0.0, **kw})


def test_identity_settings_return_the_input():
    x = _u8(4, 32, 32)
    assert torch.allclose(_identity_crop()(x), x.float() / 255, atol=1e-5)


def test_grayscale_and_brightness_match_torchvision_formulas():
    x = _u8(4, 32, 32).float() / 255
    assert torch.allclose(_identity_crop(p_gray=1.0)(x), TF.rgb_to_grayscale(x, 3), atol=1e-3)   # weights .299 vs .2989
    aug = _identity_crop(p_jitter=1.0, jitter=(0.4, 0, 0, 0))
    v = aug(x)
    f = aug.ops.jitter._params['brightness_factor']
    ref = torch.stack([TF.adjust_brightness(xi, float(fi)) for xi, fi in zip(x, f)])
    assert torch.allclose(v, ref, atol=1e-5)


def test_blur_matches_torchvision_gaussian_blur():
    x = _u8(3, 32, 32).float() / 255
    v = _identity_crop(p_blur=1.0, blur_sigma=(1.3, 1.3))(x)            # kernel 3 at 32 px (SimCLR: 10%, odd)
    assert torch.allclose(v, TF.gaussian_blur(x, [3, 3], [1.3, 1.3]), atol=1e-5)


@pytest.mark.parametrize('kw', [dict(scale=(0, 1)), dict(scale=(0.9, 0.1)), dict(scale=(0.5, 1.5)), dict(ratio=(2, 1)),
                                dict(ratio='ab'), dict(jitter=(0.4, 0.4, 0.4)), dict(jitter=(0.4, -1, 0.4, 0.1)),
                                dict(jitter=(0.4, 0.4, 0.4, 0.6)), dict(p_jitter=1.2), dict(p_gray=-0.1),
                                dict(p_blur=float('nan')), dict(blur_sigma=(0, 1)), dict(flip='yes')])
def test_bad_settings_raise_when_built(kw):
    with pytest.raises(ValueError, match=list(kw)[0]): augment(32, **kw)


@pytest.mark.parametrize('size', [0, -3, 2.5, True])
def test_bad_image_size(size):
    with pytest.raises(ValueError, match='image_size'): augment(size)


def test_two_views_are_independent_and_seeded():
    x = _u8(8)
    tv = TwoViews(augment(24))
    torch.manual_seed(0); v1, v2 = tv(x)
    torch.manual_seed(0); w1, w2 = tv(x)
    assert torch.equal(v1, w1) and torch.equal(v2, w2) and not torch.equal(v1, v2)
    a, b = TwoViews(augment(24), augment(16))(x)
    assert a.shape[-1] == 24 and b.shape[-1] == 16
    with pytest.raises(ValueError): TwoViews(3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu_parameters():
    aug, x = augment(32, p_blur=0.5), _u8(16)
    torch.manual_seed(0); c = aug(x)
    torch.manual_seed(0); g = aug(x.cuda())
    assert g.device.type == 'cuda' and torch.allclose(g.cpu(), c, atol=1e-3)
