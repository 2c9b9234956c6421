"""Throughput (images/s) of the overlay paper's pre-training and fine-tuning steps, of each corruption, and the gpu grid estimate.

    python benchmarks/overlay_throughput.py [--device cpu|cuda] [--steps N] [--scales quick gpu paper] [--compile]

For each preset: one pre-training step as `pretrain` runs it (uint8 batch already on the device ->
the preset's pre-training view -> Overlay(0.3) -> ResNet autoencoder -> ReconstructionLoss -> SGD),
and one fine-tuning step (encoder + linear head, cross-entropy). Then each corruption alone at the
gpu preset's size, the batched AutoAugment beside torchvision's per-image one, and the gpu grid's
estimated wall time from the measured rates. On CPU the paper setting (ResNet-50, 224 px) uses a
batch of 8 so that it finishes; each line says which batch was measured. Not a test: the numbers
depend on the machine.
"""
import argparse, time
import torch, torch.nn.functional as F
import torchvision.transforms as T
from ssl_study.evaluate import Classifier
from ssl_study.models import ResNetAutoencoder
from ssl_study.papers.overlay import PRESETS, AutoAugment, Pretext, ReconstructionLoss, build_corruption, grid, pretrain_view
from ssl_study.device import default_device


def _timed(fn, device, steps, warmup=2):
    for _ in range(warmup): fn()
    if device.type == 'cuda': torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps): fn()
    if device.type == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - t0


def _train_step(model, loss_fn, opt, device):
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == 'cuda'):
            loss = loss_fn(model)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return step


def step_rates(cfg, device, batch, steps, compile=False):
    "Images/s of one pre-training step and one fine-tuning step at `cfg`, and peak memory."
    torch.manual_seed(0)
    s = cfg['image_size']
    x = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, device=device)
    y = torch.randint(0, 200, (batch,), device=device)
    ae = ResNetAutoencoder(cfg['arch'], cfg['cifar_stem']).to(device)
    clf = Classifier(ResNetAutoencoder(cfg['arch'], cfg['cifar_stem']).encoder, 200).to(device)
    if device.type == 'cuda':
        ae, clf = ae.to(memory_format=torch.channels_last), clf.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats()
    net_ae, net_clf = (torch.compile(ae), torch.compile(clf)) if compile and device.type == 'cuda' else (ae, clf)
    pretext = Pretext(pretrain_view(cfg['pretrain_aug'], s), build_corruption('overlay', 0.3)).to(device)
    rec = ReconstructionLoss()
    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    def pre(m):
        x_hat, xv = pretext(x)
        return rec(m(x_hat), xv)
    pre_dt = _timed(_train_step(net_ae, pre, sgd(ae), device), device, steps)
    ft_dt = _timed(_train_step(net_clf, lambda m: F.cross_entropy(m(x.float() / 255), y), sgd(clf), device), device, steps)
    mem = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == 'cuda' else '-'
    return batch * steps / pre_dt, batch * steps / ft_dt, mem


def corruption_rates(size, batch, device, steps):
    "Images/s of each corruption alone on a [0, 1] float batch on `device`, and of torchvision's per-image AutoAugment (CPU)."
    x = torch.rand(batch, 3, size, size, device=device)
    out = {}
    for name, mod in (('overlay', build_corruption('overlay', 0.3)), ('mask', build_corruption('mask', mask_ratio=2)),
                      ('autoaugment (batched)', AutoAugment())):
        out[name] = batch * steps / _timed(lambda: mod(x), device, steps)
    tv, u8 = T.AutoAugment(T.AutoAugmentPolicy.IMAGENET), (x.cpu() * 255).round().to(torch.uint8)
    n = min(batch, 256)
    out['autoaugment (torchvision, per image, 1 CPU process)'] = n / _timed(lambda: [tv(im) for im in u8[:n]], torch.device('cpu'), 1, 0)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default=None)
    ap.add_argument('--steps', type=int, default=None)
    ap.add_argument('--scales', nargs='+', default=['quick', 'gpu', 'paper'])
    ap.add_argument('--compile', action='store_true', help='torch.compile the models (CUDA only)')
    a = ap.parse_args()
    device = torch.device(a.device) if a.device else default_device()
    name = torch.cuda.get_device_name(0) if device.type == 'cuda' else f'cpu ({torch.get_num_threads()} threads)'
    print(f"overlay throughput on {name}, torch {torch.__version__}{', compiled' if a.compile else ''}")
    rates = {}
    for scale in a.scales:
        cfg = PRESETS[scale]
        big = cfg['image_size'] * cfg['arch'] > 64 * 18
        batch = cfg['batch_size'] if device.type == 'cuda' or not big else 8
        steps = a.steps or (20 if device.type == 'cuda' else 2 if big else 5)
        pre, ft, mem = rates[scale] = step_rates(cfg, device, batch, steps, a.compile)
        print(f"  {scale:6s} ResNet-{cfg['arch']} {cfg['image_size']}px batch {batch:3d} ({cfg['pretrain_aug']} view): "
              f"pre-train {pre:8.1f} images/s, fine-tune {ft:8.1f} images/s, peak memory {mem}")
    g = PRESETS['gpu']
    print(f"  corruptions alone, {g['image_size']}px batch {g['batch_size']}:")
    for k, v in corruption_rates(g['image_size'], g['batch_size'], device, a.steps or 10).items():
        print(f"    {k:52s} {v:10.1f} images/s")
    if 'gpu' in rates:
        pre, ft, _ = rates['gpu']
        runs, n = grid('gpu'), 200 * 60
        work = sum(r['corruption'] != 'none' for r in runs) * n * g['pretrain_epochs'] / pre + len(runs) * n * g['finetune_epochs'] / ft
        print(f"  gpu grid: {len(runs)} runs, {work:.0f} s of training at these single-run rates "
              f"(+ about 20 s per run of start-up, run 4 at once: `make study SCALE=gpu JOBS=4`)")


if __name__ == '__main__':
    main()
