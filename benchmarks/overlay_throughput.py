"""Training throughput (images/s) of the overlay autoencoder, at the quick and paper settings.

    python benchmarks/overlay_throughput.py [--device cpu|cuda] [--steps N]

Prints one line per setting: device, architecture, image size, batch size, images/s and peak
memory. On CPU the paper setting (ResNet-50, 224 px) uses a smaller batch so that it finishes;
the line says which batch was measured. Not a test: numbers depend on the machine.
"""
import argparse, time
import torch
from ssl_study.models import ResNetAutoencoder
from ssl_study.overlay import PRESETS, corruption_fn, reconstruction_loss
from ssl_study.train import default_device


def throughput(device, depth, size, batch, steps, warmup=2):
    torch.manual_seed(0)
    model = ResNetAutoencoder(depth).to(device)
    if device.type == 'cuda': model = model.to(memory_format=torch.channels_last); torch.cuda.reset_peak_memory_stats()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    x = torch.rand(batch, 3, size, size, device=device)
    corrupt = corruption_fn('overlay', 0.3)
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == 'cuda'):
            loss = reconstruction_loss(model, x, corrupt)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    for _ in range(warmup): step()
    if device.type == 'cuda': torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps): step()
    if device.type == 'cuda': torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    mem = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == 'cuda' else '-'
    return batch * steps / dt, mem


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default=None)
    ap.add_argument('--steps', type=int, default=None)
    a = ap.parse_args()
    device = torch.device(a.device) if a.device else default_device()
    name = torch.cuda.get_device_name(0) if device.type == 'cuda' else f'cpu ({torch.get_num_threads()} threads)'
    print(f"overlay autoencoder training throughput on {name}, torch {torch.__version__}")
    for scale in ('quick', 'paper'):
        p = PRESETS[scale]
        batch = p['batch_size'] if device.type == 'cuda' or scale == 'quick' else 8
        steps = a.steps or (20 if device.type == 'cuda' else 5 if scale == 'quick' else 2)
        ips, mem = throughput(device, p['arch'], p['image_size'], batch, steps)
        print(f"  {scale:6s} ResNet-{p['arch']} {p['image_size']}px batch {batch:3d}: {ips:8.1f} images/s  peak memory {mem}")


if __name__ == '__main__':
    main()
