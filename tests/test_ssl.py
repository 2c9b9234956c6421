"The shared SSL toolbox: backbones by name, MLP heads, NT-Xent and negative cosine similarity."
import math, socket
from pathlib import Path
import pytest, torch, torch.nn as nn, torch.nn.functional as F
from ssl_study.ssl import BACKBONES, backbone, mlp, NTXentLoss, NegativeCosineSimilarity

n_params = lambda m: sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------- NT-Xent
def test_ntxent_closed_form():
    # z1 = z2 = the two unit vectors: each anchor has its positive at similarity 1 and two negatives at 0,
    # so every term is -log(e^(1/t) / (e^(1/t) + 2)) = log(1 + 2 e^(-1/t)); at t = 0.5 that is 0.2395.
    e = torch.eye(2)
    assert math.isclose(NTXentLoss(0.5)(e, e).item(), math.log(1 + 2 * math.exp(-2)), rel_tol=1e-6)
    assert round(NTXentLoss(0.5)(e, e).item(), 4) == 0.2395
    d = e.double()                                            # float64: the loss is ~1e-4, below float32's resolution at logit 10
    assert math.isclose(NTXentLoss(0.1)(d, d).item(), math.log(1 + 2 * math.exp(-10)), rel_tol=1e-9)
    # opposite views: the positive at similarity -1, both negatives at 0: -log(e^-2 / (e^-2 + 2)) = log(1 + 2 e^2)
    assert math.isclose(NTXentLoss(0.5)(e, -e).item(), math.log(1 + 2 * math.exp(2)), rel_tol=1e-6)


def _ntxent_by_hand(z1, z2, t):
    "The paper's eq. 1 term by term, in plain Python."
    u, n = F.normalize(torch.cat([z1, z2]), dim=1).tolist(), len(z1)
    sim = lambda a, b: math.exp(sum(p * q for p, q in zip(u[a], u[b])) / t)
    return sum(-math.log(sim(i, (i + n) % (2 * n)) / sum(sim(i, k) for k in range(2 * n) if k != i))
               for i in range(2 * n)) / (2 * n)


@pytest.mark.parametrize('t', [0.07, 0.5, 2.0])
def test_ntxent_matches_formula_by_hand(t):
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    assert math.isclose(NTXentLoss(t)(z1, z2).item(), _ntxent_by_hand(z1, z2, t), rel_tol=1e-5)


def test_ntxent_invariances():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    loss = NTXentLoss(0.5)
    ref = loss(z1, z2)
    assert torch.allclose(loss(z2, z1), ref, atol=1e-6)                       # swap the views
    perm = torch.randperm(8, generator=g)
    assert torch.allclose(loss(z1[perm], z2[perm]), ref, atol=1e-6)           # same permutation of both views
    assert torch.allclose(loss(3 * z1, 0.5 * z2), ref, atol=1e-6)             # cosine similarity: scale-free
    assert not torch.allclose(loss(z1, z2[perm]), ref, atol=1e-3)             # breaking the pairs changes it


@pytest.mark.parametrize('t,n,d', [(0.5, 8, 16), (0.1, 32, 128), (1.0, 3, 2)])
def test_ntxent_matches_lightly(t, n, d):
    # lightly's NTXentLoss (memory bank off) also averages the cross entropy over all 2N anchors, the
    # standard convention, so the two must agree in value and gradient.
    from lightly.loss import NTXentLoss as LightlyNTXent
    g = torch.Generator().manual_seed(n)
    a1, a2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    ours, theirs = [x.clone().requires_grad_() for x in (a1, a2)], [x.clone().requires_grad_() for x in (a1, a2)]
    l_ours, l_theirs = NTXentLoss(t)(*ours), LightlyNTXent(temperature=t)(*theirs)
    assert torch.allclose(l_ours, l_theirs, rtol=1e-5, atol=1e-6), (l_ours.item(), l_theirs.item())
    l_ours.backward(); l_theirs.backward()
    for a, b in zip(ours, theirs): assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('t', [0, -0.5, float('inf'), float('nan'), '0.5', True, None])
def test_ntxent_rejects_bad_temperature(t):
    with pytest.raises(ValueError, match='temperature'): NTXentLoss(t)


def test_ntxent_rejects_mismatched_views():
    with pytest.raises(ValueError, match='same shape'): NTXentLoss()(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match='same shape'): NTXentLoss()(torch.randn(4), torch.randn(4))


# ---------------------------------------------------------------- negative cosine similarity
def test_negative_cosine_by_hand():
    D = NegativeCosineSimilarity()
    p = torch.randn(6, 10)
    assert math.isclose(D(p, p).item(), -1, rel_tol=1e-6)
    assert math.isclose(D(p, 5 * p).item(), -1, rel_tol=1e-6)
    assert math.isclose(D(p, -p).item(), 1, rel_tol=1e-6)
    p, z = torch.tensor([[1., 0.], [1., 1.], [0., 2.]]), torch.tensor([[3., 0.], [-2., -2.], [5., 0.]])
    assert math.isclose(D(p, z).item(), 0.0, abs_tol=1e-7)                    # (-1 + 1 + 0) / 3
    assert math.isclose(D(torch.tensor([[1., 0.]]), torch.tensor([[1., 1.]])).item(), -1 / math.sqrt(2), rel_tol=1e-6)


def test_negative_cosine_matches_lightly_and_paper():
    from lightly.loss import NegativeCosineSimilarity as LightlyNegCos
    g = torch.Generator().manual_seed(3)
    p, z = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    ours = NegativeCosineSimilarity()(p, z)
    paper = -(F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1).mean()   # SimSiam's Algorithm 1
    assert torch.allclose(ours, LightlyNegCos()(p, z), atol=1e-6)
    assert torch.allclose(ours, paper, atol=1e-6)


def test_negative_cosine_does_not_detach():
    p, z = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    NegativeCosineSimilarity()(p, z).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0 and p.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='same shape'): NegativeCosineSimilarity()(torch.randn(4, 8), torch.randn(8))


# ---------------------------------------------------------------- mlp
def _layout(m): return [(type(l).__name__, getattr(l, 'in_features', None) or getattr(l, 'num_features', None)) for l in m]


def test_mlp_simclr_head():
    m = mlp([512, 2048, 128])
    assert _layout(m) == [('Linear', 512), ('BatchNorm1d', 2048), ('ReLU', None), ('Linear', 2048)]
    assert m[0].bias is None and m[3].bias is not None and m[3].out_features == 128
    assert n_params(m) == 512 * 2048 + 2 * 2048 + (2048 * 128 + 128)       # 1,314,944
    assert m(torch.randn(4, 512)).shape == (4, 128)


def test_mlp_simsiam_projector_and_predictor():
    proj = mlp([512, 2048, 2048, 2048], last_bn=True, last_bn_affine=False)
    assert [type(l).__name__ for l in proj] == ['Linear', 'BatchNorm1d', 'ReLU'] * 2 + ['Linear', 'BatchNorm1d']
    assert all(l.bias is None for l in proj if isinstance(l, nn.Linear))        # every Linear is followed by BN
    assert [l.num_features for l in proj if isinstance(l, nn.BatchNorm1d)] == [2048, 2048, 2048]
    assert [l.affine for l in proj if isinstance(l, nn.BatchNorm1d)] == [True, True, False]
    assert n_params(proj) == 512 * 2048 + 2048 * 2048 * 2 + 2 * 2048 * 2    # 9,445,376
    pred = mlp([2048, 512, 2048])
    assert _layout(pred) == [('Linear', 2048), ('BatchNorm1d', 512), ('ReLU', None), ('Linear', 512)]
    assert pred[0].bias is None and pred[-1].bias is not None
    assert n_params(pred) == 2048 * 512 + 2 * 512 + 512 * 2048 + 2048       # 2,100,224


def test_mlp_options():
    m = mlp([8, 6, 4, 2], bn=False, act=nn.GELU)
    assert [type(l).__name__ for l in m] == ['Linear', 'GELU', 'Linear', 'GELU', 'Linear']
    assert all(l.bias is not None for l in m if isinstance(l, nn.Linear))
    assert n_params(m) == (8 * 6 + 6) + (6 * 4 + 4) + (4 * 2 + 2)
    m = mlp([8, 4], last_bn=True)
    assert [type(l).__name__ for l in m] == ['Linear', 'BatchNorm1d'] and m[0].bias is None and m[1].affine
    assert n_params(m) == 8 * 4 + 2 * 4
    assert _layout(mlp([3, 5])) == [('Linear', 3)] and mlp([3, 5])[0].bias is not None


@pytest.mark.parametrize('bad', [dict(dims=[8]), dict(dims=[8, 0]), dict(dims=[8, 2.5]), dict(dims=[8, True]),
                                 dict(dims=[8, 4], last_bn_affine=False)])
def test_mlp_rejects(bad):
    with pytest.raises(ValueError): mlp(**bad)


# ---------------------------------------------------------------- backbones
FEAT_DIM = {'resnet18': 512, 'resnet34': 512, 'resnet50': 2048, 'efficientnet_b0': 1280, 'vit_small': 384, 'pit_ti': 256}


@pytest.mark.parametrize('size', [32, 64])
@pytest.mark.parametrize('name', BACKBONES)
def test_backbone_features(name, size):
    torch.manual_seed(0)
    m = backbone(name, size)
    assert (m.name, m.image_size, m.feat_dim) == (name, size, FEAT_DIM[name])
    x = torch.randn(2, 3, size, size)
    with torch.no_grad(): f = m(x)
    assert f.shape == (2, FEAT_DIM[name]) and torch.isfinite(f).all()
    if name in ('vit_small', 'pit_ti'): return
    with torch.no_grad(): fm = m.feature_map(x)
    assert fm.shape[:2] == (2, FEAT_DIM[name]) and fm.shape[2] == fm.shape[3] == size // m.reduction
    expected_reduction = 8 if name.startswith('resnet') else 16    # CIFAR stem / stride-1 stem at <= 64 px
    assert m.reduction == expected_reduction


def test_backbone_large_images_use_the_standard_layout():
    assert backbone('resnet18', 96).reduction == 32 and not backbone('resnet18', 96).cifar_stem
    assert backbone('resnet18', 224, cifar_stem=True).reduction == 8
    m = backbone('efficientnet_b0', 96)
    assert m.reduction == 32 and m.net.conv_stem.stride == (2, 2)
    assert backbone('efficientnet_b0', 64).net.conv_stem.stride == (1, 1)
    patch = lambda s: backbone('vit_small', s).net.patch_embed.patch_size
    assert [patch(s) for s in (32, 64, 128)] == [(4, 4), (8, 8), (16, 16)]


def test_resnet18_parameters_match_torchvision():
    # torchvision's published 11,689,512 for ResNet-18 includes the 512 x 1000 + 1000 classifier;
    # the CIFAR stem swaps the 7x7x3x64 first convolution for a 3x3x3x64 one.
    assert n_params(backbone('resnet18', 224)) == 11_689_512 - 513_000 == 11_176_512
    assert n_params(backbone('resnet18', 32)) == 11_176_512 - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 == 11_168_832


def test_timm_parameters_by_hand():
    # EfficientNet-B0: 5,288,548 published, minus its 1280 x 1000 + 1000 classifier; the stem stride holds no weights.
    assert n_params(backbone('efficientnet_b0', 32)) == 5_288_548 - 1_281_000
    # ViT-S (D = 384): 12 blocks of 12 D^2 + 13 D, patch embedding 3 P^2 D + D, class token, (S/P)^2 + 1
    # position embeddings and the final LayerNorm; at 224 px this is the published 22,050,664 minus 385,000.
    vit = lambda S, P, D=384: 12 * (12 * D * D + 13 * D) + 3 * P * P * D + D + D + ((S // P) ** 2 + 1) * D + 2 * D
    assert vit(224, 16) == 22_050_664 - 385_000
    assert n_params(backbone('vit_small', 32)) == vit(32, 4)
    assert n_params(backbone('vit_small', 64)) == vit(64, 8)
    # PiT-Ti at 32 px vs its 224-px self: only the 64-channel patch embedding (kernel 16 -> 4) and the
    # position embedding (27x27 -> 15x15 grid) change.
    d224, d32 = n_params(backbone('pit_ti', 224)), n_params(backbone('pit_ti', 32))
    assert d224 - d32 == 3 * 64 * (16 * 16 - 4 * 4) + 64 * (27 * 27 - 15 * 15)


@pytest.mark.parametrize('args,kwargs,match', [
    (('resnet101', 32), {}, 'must be one of resnet18, resnet34, resnet50, efficientnet_b0, vit_small, pit_ti'),
    (('ResNet18', 32), {}, 'must be one of'),
    (('resnet18', 16), {}, 'integer >= 32'),
    (('resnet18', 32.0), {}, 'integer >= 32'),
    (('resnet18', 100), {}, 'multiples of 32.*96 or 128'),
    (('resnet18', 36), {}, 'multiples of 8.*32 or 40'),
    (('efficientnet_b0', 40), {}, 'multiples of 16.*32 or 48'),
    (('vit_small', 66), {}, 'multiples of 8.*64 or 72'),
    (('pit_ti', 33), {}, 'multiples of 2.*32 or 34'),
    (('vit_small', 32), dict(cifar_stem=True), 'cifar_stem applies to the ResNets only'),
    (('resnet18', 32), dict(cifar_stem=True, pretrained=True), '7x7 stem'),
    (('pit_ti', 64), dict(pretrained=True), '224 px only'),
    (('resnet18', 32), dict(pretrained='yes'), 'pretrained must be'),
])
def test_backbone_rejects(args, kwargs, match):
    with pytest.raises(ValueError, match=match): backbone(*args, **kwargs)


@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    "Empty torch and Hugging Face caches, and no network: a download attempt fails at once."
    for var in ('HF_HOME', 'HF_HUB_CACHE', 'XDG_CACHE_HOME'): monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hf'))
    def no_network(*a, **k): raise OSError('tests run without network')
    monkeypatch.setattr(socket.socket, 'connect', no_network)
    monkeypatch.setattr(socket, 'create_connection', no_network)
    return tmp_path


@pytest.mark.parametrize('name,size,file', [('resnet18', 32, 'resnet18-f37072fd.pth'), ('resnet50', 224, 'resnet50-11ad3fa6.pth'),
                                            ('efficientnet_b0', 64, 'efficientnet_b0.ra_in1k'),
                                            ('vit_small', 32, 'vit_small_patch16_224'), ('pit_ti', 224, 'pit_ti_224.in1k')])
def test_pretrained_without_weights_raises(offline_caches, name, size, file):
    with pytest.raises(RuntimeError) as err: backbone(name, size, pretrained=True)
    msg = str(err.value)
    assert 'never downloads' in msg and file in msg and str(offline_caches) in msg and 'python -c' in msg


def test_pretrained_resnet_loads_torchvision_weights(offline_caches):
    import torchvision
    tv = torchvision.models.resnet18().eval()
    folder = offline_caches / 'torch' / 'hub' / 'checkpoints'
    folder.mkdir(parents=True)
    torch.save(tv.state_dict(), folder / 'resnet18-f37072fd.pth')
    m = backbone('resnet18', 32, pretrained=True).eval()
    assert not m.cifar_stem                                       # ImageNet weights keep the 7x7 stem
    tv.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): assert torch.allclose(m(x), tv(x), atol=1e-5)


def _fake_hf_weights(cache: Path, repo: str, state_dict: dict):
    "A Hugging Face hub cache entry as `hf_hub_download` leaves it: refs/main -> snapshots/<commit>/model.safetensors."
    from safetensors.torch import save_file
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / 'refs').mkdir(parents=True)
    (root / 'refs' / 'main').write_text('0' * 40)
    (root / 'snapshots' / ('0' * 40)).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(root / 'snapshots' / ('0' * 40) / 'model.safetensors'))


@pytest.mark.parametrize('name,arch,size,key', [('efficientnet_b0', 'efficientnet_b0', 32, 'conv_stem.weight'),
                                                ('vit_small', 'vit_small_patch16_224', 32, 'blocks.3.attn.qkv.weight'),
                                                ('pit_ti', 'pit_ti_224', 224, 'pos_embed')])
def test_pretrained_timm_loads_from_the_cache(offline_caches, name, arch, size, key):
    import timm
    torch.manual_seed(0)
    ref = timm.create_model(arch)                                 # stands in for the ImageNet weights, 1000 classes
    _fake_hf_weights(offline_caches / 'hf', timm.models.get_pretrained_cfg(arch).hf_hub_id, ref.state_dict())
    m = backbone(name, size, pretrained=True)
    assert torch.equal(m.net.state_dict()[key], ref.state_dict()[key])
    with torch.no_grad(): assert m(torch.randn(2, 3, size, size)).shape == (2, FEAT_DIM[name])
    if name == 'vit_small':                                       # timm resamples the 16-px patch embedding to 4 px
        assert m.net.patch_embed.proj.weight.shape[-1] == 4 and not torch.allclose(m.net.pos_embed, torch.zeros(1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_losses_and_backbones_on_cuda_under_autocast(dtype):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(64, 128, generator=g).cuda(), torch.randn(64, 128, generator=g).cuda()
    ref = NTXentLoss(0.1)(z1, z2)
    a1 = z1.clone().requires_grad_()
    with torch.autocast('cuda', dtype=dtype): loss = NTXentLoss(0.1)(a1, z2)
    loss.backward()
    assert torch.allclose(loss.float(), ref, rtol=2e-2) and torch.isfinite(a1.grad).all()
    for name in BACKBONES:
        m = backbone(name, 32).cuda()
        with torch.autocast('cuda', dtype=dtype): f = m(torch.randn(4, 3, 32, 32, device='cuda'))
        assert f.shape == (4, FEAT_DIM[name]) and torch.isfinite(f).all()
