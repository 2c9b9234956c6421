"""One SimCLR epoch and one overlay-autoencoder epoch on CIFAR-10, the standard pipeline against ours, side by side in one run.

    python benchmarks/ssl_epoch.py [--images N] [--batch 512] [--device cpu|cuda] [--workers K] [--no-compile]
                                   [--tasks simclr overlay] [--repeats R]

On the CPU, (a) trains in fp32 (the standard recipe) and (b) in the mode `train.fit` picks (`train.cpu_mode`:
bf16 autocast + channels-last for a conv net on a CPU with native bf16; SSL_STUDY_CPU_MODE pins it). The overlay task
is the overlay paper's pre-training step: (a) torchvision RandomResizedCrop per PIL image in a DataLoader, then
Overlay(0.3), a `models.ResNetAutoencoder` (CIFAR stem) and the MSE loss, fp32; (b) the same from uint8 on the device
with the batched view (`overlay.pretrain_view('crop', 32)`), in fit's mode (`--tasks` picks the tasks).

(a) standard: torchvision transforms on one PIL image at a time, in a DataLoader with a worker per core;
(b) ours: the split decoded once into uint8 (`loaders.cached_split`), on the device, batches from
    `loaders.TensorLoader`, both views made batch-wise on the device by `views.TwoViews(views.augment(32))`,
    and `torch.compile` of the model on CUDA.
Both train the same model from the same initial weights: a ResNet-18 with the CIFAR stem, a 2-layer projection
head (512-512-128) and NT-Xent (temperature 0.5), SGD; bf16 autocast and channels-last on CUDA.
For each pipeline it prints the data alone (the epoch's batches of two views, no model) and the whole training
epoch, in s/epoch and images/s, and the ratio (a)/(b). Warm-up steps (and compilation) are not timed; the timed
epoch of (a) includes starting its workers. Defaults: --images 50000 and --batch 512 on a GPU, 512 and 128 on the CPU;
--repeats R times R epochs of each, alternating, and shows the best (useful on a shared CPU); --repeats 0
times the data pipelines alone.
Not a test: the numbers depend on the machine.
"""
import argparse, math, os, time
import torch, torch.nn as nn, torch.nn.functional as F
import torchvision.transforms as T
from torch.utils.data import DataLoader
from ssl_study.data import Transformed, stratified_subset
from ssl_study.datasets import load_dataset
from ssl_study.loaders import TensorLoader, cached_split
from ssl_study.models import ResNetAutoencoder, ResNetEncoder
from ssl_study.papers import overlay
from ssl_study.ssl import NTXentLoss, mlp
from ssl_study.device import default_device
from ssl_study.train import cpu_mode, set_threads
from ssl_study.views import IMAGENET_MEAN, IMAGENET_STD, TwoViews, augment, normalize


class PairOf:
    "Two independent draws of a per-image transform (the standard SimCLR data pipeline)."
    def __init__(self, t): self.t = t
    def __call__(self, im): return self.t(im), self.t(im)


def standard_batches(images: int, batch: int, workers: int, device):
    "(a): PIL images of the CIFAR-10 train split through torchvision transforms in DataLoader workers."
    tf = T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(), T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                    T.RandomGrayscale(0.2), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ds = stratified_subset(load_dataset('cifar10', 'train'), per_class=images // 10, seed=0)
    dl = DataLoader(Transformed(ds, PairOf(tf)), batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                    pin_memory=device.type == 'cuda', generator=torch.Generator().manual_seed(0))
    def epoch():
        for (v1, v2), _ in dl: yield v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)
    return epoch, len(dl) * batch


def our_batches(images: int, batch: int, device):
    "(b): the cached uint8 split on the device, TensorLoader, kornia views made batch-wise on the device."
    t0 = time.perf_counter()
    xs, ys = cached_split('cifar10', 'train', 32, per_class=images // 10, seed=0).tensors
    t_cache = time.perf_counter() - t0
    dl, views = TensorLoader(xs, batch_size=batch, shuffle=True, drop_last=True, device=device), TwoViews(augment(32))
    def epoch():
        for (x,) in dl:
            v1, v2 = views(x)
            yield normalize(v1), normalize(v2)
    return epoch, len(dl) * batch, t_cache


def simclr_model(device):
    torch.manual_seed(0)
    return nn.Sequential(ResNetEncoder(18, cifar_stem=True), mlp([512, 512, 128])).to(device)


def overlay_model(device):
    torch.manual_seed(0)
    return ResNetAutoencoder(18, cifar_stem=True).to(device)


def mode_of(model, device, ours: bool) -> str:
    "CUDA: bf16 + channels-last for both pipelines (as before); CPU: (a) fp32, (b) the mode `fit` picks for this model."
    if device.type == 'cuda': return 'bf16+cl'
    return cpu_mode(model) if ours else 'fp32'


def trainer(model, device, compile: bool, mode: str, task: str = 'simclr'):
    """One SGD step in `mode` ('fp32' or 'bf16+cl'): SimCLR (both views through the network at once, NT-Xent), or the
    overlay pre-training step (the corrupted image through the autoencoder, MSE to the clean one in fp32)."""
    amp = mode == 'bf16+cl'
    if amp: model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.3 if task == 'simclr' else 0.05, momentum=0.9, weight_decay=1e-6)
    crit = NTXentLoss(0.5)
    def step(a, b):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if task == 'simclr':
                x = torch.cat([a, b])
                z = net(x.contiguous(memory_format=torch.channels_last) if amp else x).float()
                loss = crit(*z.chunk(2))
            else:                                   # a: corrupted, b: clean
                loss = F.mse_loss(net(a.contiguous(memory_format=torch.channels_last) if amp else a).float(), b.float())
        opt.zero_grad(set_to_none=True); loss.float().backward(); opt.step()
        return loss.detach()
    return step


def standard_overlay_batches(images: int, batch: int, workers: int, device, corrupt):
    "(a) of the overlay task: RandomResizedCrop per PIL image in DataLoader workers, then Overlay on the batch."
    tf = T.Compose([T.RandomResizedCrop(32), T.ToTensor()])
    ds = stratified_subset(load_dataset('cifar10', 'train'), per_class=images // 10, seed=0)
    dl = DataLoader(Transformed(ds, tf), batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                    pin_memory=device.type == 'cuda', generator=torch.Generator().manual_seed(0))
    def epoch():
        for x, _ in dl:
            x = x.to(device, non_blocking=True)
            yield corrupt(x), x
    return epoch, len(dl) * batch


def our_overlay_batches(images: int, batch: int, device):
    "(b) of the overlay task: the cached uint8 split, TensorLoader, the paper's batched view and Overlay on the device."
    xs, _ = cached_split('cifar10', 'train', 32, per_class=images // 10, seed=0).tensors
    dl = TensorLoader(xs, batch_size=batch, shuffle=True, drop_last=True, device=device)
    pretext = overlay.Pretext(overlay.pretrain_view('crop', 32), overlay.build_corruption('overlay', 0.3)).to(device)
    def epoch():
        for (x,) in dl: yield pretext(x)
    return epoch, len(dl) * batch


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def timed(f, device) -> float:
    sync(device); t0 = time.perf_counter(); f(); sync(device)
    return time.perf_counter() - t0


def measure(pipes, device, warmup: int, repeats: int, label: str = 'SimCLR'):
    "Per pipeline (name, epoch, n, step): seconds for the epoch's data alone, then the best of `repeats` training epochs."
    for _, epoch, _, _ in pipes: next(epoch())     # first-call set-up (kornia, CUDA kernels), untimed
    t_data = [timed(lambda: [None for _ in epoch()], device) for _, epoch, _, _ in pipes]
    if repeats == 0:
        for (name, _, n, _), td in zip(pipes, t_data): print(f"  {name}\n      data only : {td:7.2f} s/epoch {n / td:9,.0f} images/s")
        return t_data, [math.nan] * len(pipes)
    for _, epoch, _, step in pipes:                 # warm-up (and compilation), untimed
        it = epoch()
        for _ in range(warmup): step(*next(it))
        del it
    t_epoch, losses = [[] for _ in pipes], [[] for _ in pipes]
    for _ in range(repeats):                        # alternate, so drifting machine load hits both alike
        for k, (_, epoch, _, step) in enumerate(pipes):
            t_epoch[k].append(timed(lambda: losses[k].extend(step(v1, v2) for v1, v2 in epoch()), device))
    for (name, _, n, _), td, te, ls in zip(pipes, t_data, t_epoch, losses):
        print(f"  {name}\n      data only : {td:7.2f} s/epoch {n / td:9,.0f} images/s"
              f"\n      {label:10s}: {min(te):7.2f} s/epoch {n / min(te):9,.0f} images/s   (mean loss {torch.stack(ls).mean():.3f}"
              + (f"; epochs {', '.join(f'{t:.1f}' for t in te)} s" if repeats > 1 else '') + ')')
    return t_data, [min(te) for te in t_epoch]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--images', type=int, default=None, help='CIFAR-10 training images used, N // 10 per class (default 50000 on a GPU, 512 on the CPU)')
    ap.add_argument('--batch', type=int, default=None, help='batch size (default 512 on a GPU, 128 on the CPU)')
    ap.add_argument('--device', default=None)
    ap.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)), help='DataLoader workers of (a) (default: every core)')
    ap.add_argument('--no-compile', action='store_true', help='do not torch.compile the model in (b) on CUDA')
    ap.add_argument('--repeats', type=int, default=1, help='timed epochs per pipeline, alternating (a) and (b); the best is shown; 0: time the data alone')
    ap.add_argument('--tasks', nargs='+', default=['simclr', 'overlay'], choices=['simclr', 'overlay'])
    a = ap.parse_args()
    device = torch.device(a.device) if a.device else default_device()
    if device.type == 'cpu': set_threads()
    images = a.images or (50_000 if device.type == 'cuda' else 512)
    batch = a.batch or (512 if device.type == 'cuda' else 128)
    compile = device.type == 'cuda' and not a.no_compile
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'cpu ({torch.get_num_threads()} threads)'
    print(f"CIFAR-10, {images // 10 * 10} images (drop_last epochs), batch {batch}, ResNet-18 (CIFAR stem); {name}, torch {torch.__version__}")
    warmup = 3 if device.type == 'cuda' else 1
    summary, a_name = [], f'(a) torchvision per image, DataLoader with {a.workers} workers'
    for task in a.tasks:
        ma, mb = (simclr_model if task == 'simclr' else overlay_model)(device), (simclr_model if task == 'simclr' else overlay_model)(device)
        mode_a, mode_b = mode_of(ma, device, False), mode_of(mb, device, True)
        if task == 'simclr':
            print("\nSimCLR: two views, ResNet-18 + 2-layer head (512-512-128), NT-Xent (temperature 0.5), SGD")
            ep_a, n_a = standard_batches(images, batch, a.workers, device)
            ep_b, n_b, t_cache = our_batches(images, batch, device)
            print(f"  cached uint8 split ready in {t_cache:.2f} s (decoded on the first run only, then read from the data root)")
            b_name = "(b) uint8 on the device + TensorLoader + kornia TwoViews"
        else:
            print("\nOverlay pre-training: RandomResizedCrop, Overlay(0.3), ResNet-18 autoencoder (CIFAR stem), MSE, SGD")
            ep_a, n_a = standard_overlay_batches(images, batch, a.workers, device, overlay.build_corruption('overlay', 0.3).to(device))
            ep_b, n_b = our_overlay_batches(images, batch, device)
            b_name = "(b) uint8 on the device + TensorLoader + batched crop + Overlay"
        step_a, step_b = trainer(ma, device, False, mode_a, task), trainer(mb, device, compile, mode_b, task)
        (da, db), (ea, eb) = measure([(f'{a_name}, {mode_a}', ep_a, n_a, step_a),
                                      (f"{b_name}{' + torch.compile' if compile else ''}, {mode_b}", ep_b, n_b, step_b)],
                                     device, warmup, a.repeats, 'SimCLR' if task == 'simclr' else 'overlay AE')
        print(f"  ratio (a)/(b): data only {da / db:.1f}x" + (f", training epoch {ea / eb:.2f}x" if a.repeats else ''))
        summary.append(f"{task}: (a) {mode_a} {n_a / ea:,.0f} images/s, (b) {mode_b} {n_b / eb:,.0f} images/s, {ea / eb:.2f}x"
                       if a.repeats else f"{task}: data only {da / db:.1f}x")
    print('\nsummary: ' + '; '.join(summary))


if __name__ == '__main__':
    main()
