#!/usr/bin/env python3
"""PyTorch timings of the fcn network, as a peer in the speed benchmark.

Prints one JSON line: {"ms": median milliseconds per iteration, "reps": n, "threads": t, ...}.
  forward: inference (no grad) on a random (1, 3, size, size) input.
  train:   forward + mean cross-entropy (255 ignored) + backward + Adam step over the conv
           layers (transposed convs frozen, as in the seed).
bf16 runs under torch.autocast('cpu', dtype=torch.bfloat16); --channels-last converts the
weights and input to channels-last memory format. int8 (forward, fcn8 only) is PyTorch's static
post-training quantization (torch_int8.py) calibrated on the timed input.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torch_fcn  # noqa: E402
import torch_int8  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--mode', choices=('forward', 'train'), default='forward')
    ap.add_argument('--precision', choices=('fp32', 'bf16', 'int8'), default='fp32')
    ap.add_argument('--channels-last', action='store_true')
    ap.add_argument('--model', choices=torch_fcn.MODELS, default='fcn32')
    ap.add_argument('--width', type=float, default=1.0, help='channel width multiplier')
    ap.add_argument('--size', type=int, default=512, help='input height and width in pixels')
    ap.add_argument('--batch', type=int, default=1)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--reps', type=int, default=3)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    specs = torch_fcn.layer_specs(args.model, args.width)
    weights = torch_fcn.random_weights(specs, 0)
    trainable = [l for l, s in specs.items() if s['kind'] == 'conv'] if args.mode == 'train' else []
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    params = {}
    for name, a in weights.items():
        t = torch.from_numpy(torch_fcn.keras_to_torch(a))
        if t.dim() == 4:
            t = t.contiguous(memory_format=fmt)
        t.requires_grad_(name.rsplit('.', 1)[0] in trainable)
        params[name] = t
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=fmt) * 50
    y = torch.randint(0, torch_fcn.NUM_CLASSES, (args.batch, args.size, args.size))
    y[:, :, : args.size // 8] = torch_fcn.IGNORE
    if args.precision == 'int8' and (args.mode != 'forward' or args.model != 'fcn8'):
        ap.error('int8 is a forward of fcn8 only')
    qmodel = torch_int8.quantized_fcn8(params, [x]) if args.precision == 'int8' else None
    # The int8 logits' distance from the float network's, relative to its norm: the peer
    # computes the network it stands for.
    int8_rel_err = None
    if qmodel is not None:
        with torch.no_grad():
            ref = torch_fcn.fcn_forward(args.model, params, x)
            int8_rel_err = float((qmodel(x) - ref).norm() / ref.norm())
    opt = torch.optim.Adam([p for p in params.values() if p.requires_grad], lr=1e-4, eps=1e-7) if trainable else None

    def once():
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=args.precision == 'bf16'):
            if args.mode == 'forward':
                with torch.no_grad():
                    if qmodel is not None:
                        return qmodel(x)
                    return torch_fcn.fcn_forward(args.model, params, x)
            logits = torch_fcn.fcn_forward(args.model, params, x)
            loss = F.cross_entropy(logits.float(), y, ignore_index=torch_fcn.IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        once()
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        once()
        times.append((time.perf_counter() - t0) * 1000.0)
    print(json.dumps({'ms': statistics.median(times), 'all_ms': times, 'reps': args.reps, 'threads': args.threads,
                      'mode': args.mode, 'precision': args.precision, 'channels_last': args.channels_last,
                      'model': args.model, 'width': args.width, 'size': args.size, 'torch': torch.__version__,
                      'quantized_engine': torch.backends.quantized.engine if qmodel is not None else None, 'int8_rel_err': int8_rel_err}))


if __name__ == '__main__':
    main()
