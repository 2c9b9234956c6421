"""One SimCLR epoch on CIFAR-10, the standard input pipeline against ours, timed side by side in one run.

    python benchmarks/ssl_epoch.py [--images N] [--batch 512] [--device cpu|cuda] [--workers K] [--no-compile]

(a) standard: torchvision transforms on one PIL image at a time, in a DataLoader with a worker per core;
(b) ours: the split decoded once into uint8 (`loaders.cached_split`), on the device, batches from
    `loaders.TensorLoader`, both views made batch-wise on the device by `views.TwoViews(views.augment(32))`,
    and `torch.compile` of the model on CUDA.
Both train the same model from the same initial weights: a ResNet-18 with the CIFAR stem, a 2-layer projection
head (512-512-128) and NT-Xent (temperature 0.5), SGD, batch 512, bf16 autocast and channels-last on CUDA.
For each pipeline it prints the data alone (the epoch's batches of two views, no model) and the whole training
epoch, in s/epoch and images/s, and the ratio (a)/(b). Warm-up steps (and compilation) are not timed; the timed
epoch of (a) includes starting its workers. Default --images: 50000 on a GPU, 2048 on the CPU;
--repeats R times R epochs of each, alternating, and shows the best (useful on a shared CPU); --repeats 0
times the data pipelines alone.
Not a test: the numbers depend on the machine.
"""
import argparse, math, os, time
import torch, torch.nn as nn
import torchvision.transforms as T
from torch.utils.data import DataLoader
from ssl_study.data import Transformed, stratified_subset
from ssl_study.datasets import load_dataset
from ssl_study.loaders import TensorLoader, cached_split
from ssl_study.models import ResNetEncoder
from ssl_study.ssl import NTXentLoss, mlp
from ssl_study.device import default_device
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
    m = nn.Sequential(ResNetEncoder(18, cifar_stem=True), mlp([512, 512, 128])).to(device)
    return m.to(memory_format=torch.channels_last) if device.type == 'cuda' else m


def trainer(model, device, compile: bool):
    "One SimCLR step on a batch of two views: both views through the network at once, NT-Xent, SGD."
    net = torch.compile(model) if compile else model
    opt, crit, amp = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-6), NTXentLoss(0.5), device.type == 'cuda'
    def step(v1, v2):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            x = torch.cat([v1, v2])
            z = net(x.contiguous(memory_format=torch.channels_last) if amp else x).float()
            loss = crit(*z.chunk(2))
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        return loss.detach()
    return step


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def timed(f, device) -> float:
    sync(device); t0 = time.perf_counter(); f(); sync(device)
    return time.perf_counter() - t0


def measure(pipes, device, warmup: int, repeats: int):
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
              f"\n      SimCLR    : {min(te):7.2f} s/epoch {n / min(te):9,.0f} images/s   (mean loss {torch.stack(ls).mean():.3f}"
              + (f"; epochs {', '.join(f'{t:.1f}' for t in te)} s" if repeats > 1 else '') + ')')
    return t_data, [min(te) for te in t_epoch]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--images', type=int, default=None, help='CIFAR-10 training images used, N // 10 per class (default 50000 on a GPU, 2048 on the CPU)')
    ap.add_argument('--batch', type=int, default=512)
    ap.add_argument('--device', default=None)
    ap.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)), help='DataLoader workers of (a) (default: every core)')
    ap.add_argument('--no-compile', action='store_true', help='do not torch.compile the model in (b) on CUDA')
    ap.add_argument('--repeats', type=int, default=1, help='timed epochs per pipeline, alternating (a) and (b); the best is shown; 0: time the data alone')
    a = ap.parse_args()
    device = torch.device(a.device) if a.device else default_device()
    images = a.images or (50_000 if device.type == 'cuda' else 2048)
    compile = device.type == 'cuda' and not a.no_compile
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'cpu ({torch.get_num_threads()} threads)'
    print(f"SimCLR epoch on CIFAR-10: {images // 10 * 10} images (a drop_last epoch), batch {a.batch}, ResNet-18 (CIFAR stem) + 2-layer head, NT-Xent; "
          f"{name}, torch {torch.__version__}")
    warmup = 3 if device.type == 'cuda' else 1
    ep_a, n_a = standard_batches(images, a.batch, a.workers, device)
    ep_b, n_b, t_cache = our_batches(images, a.batch, device)
    print(f"\n  cached uint8 split ready in {t_cache:.2f} s (decoded on the first run only, then read from the data root)")
    step_a, step_b = trainer(simclr_model(device), device, False), trainer(simclr_model(device), device, compile)
    (da, db), (ea, eb) = measure([(f'(a) torchvision per image, DataLoader with {a.workers} workers', ep_a, n_a, step_a),
                                  (f"(b) uint8 on the device + TensorLoader + kornia TwoViews{' + torch.compile' if compile else ''}", ep_b, n_b, step_b)],
                                 device, warmup, a.repeats)
    print(f"  ratio (a)/(b): data only {da / db:.1f}x" + (f", SimCLR epoch {ea / eb:.2f}x" if a.repeats else ''))


if __name__ == '__main__':
    main()
