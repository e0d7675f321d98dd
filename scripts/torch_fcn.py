#!/usr/bin/env python3
"""Independent PyTorch reference of the fcn network, for numerical parity tests.

It re-implements the Keras-FCN design (VGG16 + convolutionised classifier + FCN-32s/16s/8s
heads) directly in torch.nn.functional, reading and writing weights in Keras layouts and names
(`<layer>.kernel`, `<layer>.bias`) from safetensors files, so the TypeScript engine can be
compared with something that shares none of its code.

Subcommands (run with --help for every option):
  forward      logits of a preprocessed input
  step         one training step (loss, gradients, updated weights, optimiser state)
  export-onnx  the same network as a fixed-shape ONNX graph (for the speed benchmark)

Conventions shared with the TypeScript side:
  - width multiplier w scales every layer's channels as max(1, round_half_up(c * w));
    the 21 classes are never scaled.
  - Input (N, 3, H, W) float, already preprocessed (BGR, mean subtracted). H and W need not be
    multiples of 32: the input is zero-padded at the bottom/right to the next multiple of 32
    and the logits are cropped back to (N, 21, H, W).
  - Labels (N, H, W) uint8, 255 = ignore.
  - Dropout is off (rate 0) so results are deterministic.
"""
import argparse
import json
import math
import os
import struct
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

NUM_CLASSES = 21
IGNORE = 255
# (block, number of 3x3 convs, channels) of VGG16.
VGG_BLOCKS = [(1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512)]
FC_CHANNELS = 4096
MODELS = ('fcn32', 'fcn16', 'fcn8')
# Transposed-conv kernel sizes (stride k/2): bilinear 2x and the final 32x / 16x / 8x upsampling.
DECONV_KERNEL = {'score7_upsample': 4, 'skip4_upsample': 4, 'fcn32': 64, 'fcn16': 32, 'fcn8': 16}


def die(msg):
    print(f'torch_fcn: {msg}', file=sys.stderr)
    sys.exit(2)


def scaled(c, w):
    # Round half up (not Python's banker's rounding) so it agrees with JavaScript's Math.round.
    return max(1, int(math.floor(c * w + 0.5)))


# ---------------------------------------------------------------------------------------------
# Architecture


def layer_specs(model, w, classes=NUM_CLASSES):
    """Ordered dict name -> spec. spec: kind ('conv' | 'deconv'), k, cin, cout, and for deconvs
    stride and pad (PyTorch padding equal to Keras 'same': (k - s) / 2)."""
    if model not in MODELS:
        die(f'unknown model {model!r} (expected one of {", ".join(MODELS)})')
    specs = {}
    cin = 3
    chans = {}
    for b, n, c in VGG_BLOCKS:
        cout = scaled(c, w)
        for i in range(1, n + 1):
            specs[f'block{b}_conv{i}'] = dict(kind='conv', k=3, cin=cin, cout=cout)
            cin = cout
        chans[b] = cout
    fc = scaled(FC_CHANNELS, w)
    specs['conv6'] = dict(kind='conv', k=7, cin=chans[5], cout=fc)
    specs['conv7'] = dict(kind='conv', k=1, cin=fc, cout=fc)
    specs['score7'] = dict(kind='conv', k=1, cin=fc, cout=classes)

    def deconv(k, s):
        return dict(kind='deconv', k=k, cin=classes, cout=classes, stride=s, pad=(k - s) // 2)

    if model == 'fcn32':
        specs['fcn32'] = deconv(DECONV_KERNEL['fcn32'], 32)
    else:
        specs['score7_upsample'] = deconv(4, 2)
        specs['score4'] = dict(kind='conv', k=1, cin=chans[4], cout=classes)
        if model == 'fcn16':
            specs['fcn16'] = deconv(32, 16)
        else:
            specs['skip4_upsample'] = deconv(4, 2)
            specs['score3'] = dict(kind='conv', k=1, cin=chans[3], cout=classes)
            specs['fcn8'] = deconv(16, 8)
    return specs


def param_names(specs):
    """Parameter names in Keras naming; deconvs have no bias."""
    names = []
    for layer, s in specs.items():
        names.append(f'{layer}.kernel')
        if s['kind'] == 'conv':
            names.append(f'{layer}.bias')
    return names


def keras_shape(specs, name):
    layer, what = name.rsplit('.', 1)
    s = specs[layer]
    if what == 'bias':
        return (s['cout'],)
    if s['kind'] == 'conv':
        return (s['k'], s['k'], s['cin'], s['cout'])  # (kh, kw, in, out)
    return (s['k'], s['k'], s['cout'], s['cin'])  # Conv2DTranspose: (kh, kw, out, in)


def keras_to_torch(a):
    """Conv (kh, kw, in, out) -> (out, in, kh, kw); Conv2DTranspose (kh, kw, out, in) ->
    ConvTranspose2d (in, out, kh, kw): the same axis permutation. Biases unchanged."""
    return np.ascontiguousarray(np.transpose(a, (3, 2, 0, 1))) if a.ndim == 4 else a


def torch_to_keras(a):
    return np.ascontiguousarray(np.transpose(a, (2, 3, 1, 0))) if a.ndim == 4 else a


def bilinear_kernel(k, channels):
    """Keras layout (k, k, out, in) with the bilinear filter on the class i -> i diagonal only."""
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    og = np.arange(k)
    f1 = 1 - np.abs(og - centre) / factor
    filt = np.outer(f1, f1)
    w = np.zeros((k, k, channels, channels), dtype=np.float64)
    for i in range(channels):
        w[:, :, i, i] = filt
    return w


def random_weights(specs, seed):
    """Keras-layout weights for benchmarks and smoke tests: He-normal convs, small biases,
    bilinear deconvs (as the seed initialises them)."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer, s in specs.items():
        if s['kind'] == 'deconv':
            out[f'{layer}.kernel'] = bilinear_kernel(s['k'], s['cout']).astype(np.float32)
            continue
        fan_in = s['k'] * s['k'] * s['cin']
        out[f'{layer}.kernel'] = (rng.standard_normal((s['k'], s['k'], s['cin'], s['cout'])) * math.sqrt(2.0 / fan_in)).astype(np.float32)
        out[f'{layer}.bias'] = (rng.standard_normal(s['cout']) * 0.01).astype(np.float32)
    return out


def plain_relu(layer, t):
    return F.relu(t)


def fcn_forward(model, p, x, relu=plain_relu):
    """Logits (N, 21, H, W) for input x (N, 3, H, W); p maps Keras names to torch-layout tensors.
    relu(layer, pre) applies each layer's ReLU (see MaskedRelu)."""
    # Plain ints, so ONNX tracing bakes the (fixed) shape in instead of tracing shape arithmetic.
    h, w = int(x.shape[2]), int(x.shape[3])
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, wp - w, 0, hp - h))
    t = x
    pools = {}
    for b, nconv, _ in VGG_BLOCKS:
        for i in range(1, nconv + 1):
            name = f'block{b}_conv{i}'
            t = relu(name, F.conv2d(t, p[f'{name}.kernel'], p[f'{name}.bias'], padding=1))
        t = F.max_pool2d(t, 2, 2)  # block{b}_pool: 2x2 stride 2, floor
        pools[b] = t
    t = relu('conv6', F.conv2d(t, p['conv6.kernel'], p['conv6.bias'], padding=3))
    # drop6: identity (rate 0 in the reference)
    t = relu('conv7', F.conv2d(t, p['conv7.kernel'], p['conv7.bias']))
    # drop7: identity
    score = F.conv2d(t, p['score7.kernel'], p['score7.bias'])

    def up(layer, t):
        # Every deconv here has stride k/2; padding (k - s)/2 = k/4 is Keras 'same'.
        k = DECONV_KERNEL[layer]
        return F.conv_transpose2d(t, p[f'{layer}.kernel'], stride=k // 2, padding=k // 4)

    if model == 'fcn32':
        out = up('fcn32', score)
    else:
        skip4 = up('score7_upsample', score) + F.conv2d(pools[4], p['score4.kernel'], p['score4.bias'])
        if model == 'fcn16':
            out = up('fcn16', skip4)
        else:
            skip3 = up('skip4_upsample', skip4) + F.conv2d(pools[3], p['score3.kernel'], p['score3.bias'])
            out = up('fcn8', skip3)
    return out[:, :, :h, :w]


# The paper's Caffe network: its crop offsets as the released prototxts state them (written
# out here on purpose: the engine computes its own from the layer geometry).
CAFFE_CROPS = {'fcn32': {'final': 19}, 'fcn16': {'score4': 5, 'final': 27}, 'fcn8': {'score4': 5, 'score3': 9, 'final': 31}}


def caffe_forward(model, p, x, relu=plain_relu, skip_scales=None):
    """The Caffe-style FCN: conv1_1 padding 100, ceil pooling, fc6 (conv6) 7x7 unpadded,
    unpadded deconvolutions and Caffe's crops; skip_scales multiplies pool4/pool3 before
    their score layers (the at-once FCN-8s)."""
    h, w = int(x.shape[2]), int(x.shape[3])
    crops = CAFFE_CROPS[model]
    t = x
    pools = {}
    for b, nconv, _ in VGG_BLOCKS:
        for i in range(1, nconv + 1):
            name = f'block{b}_conv{i}'
            t = relu(name, F.conv2d(t, p[f'{name}.kernel'], p[f'{name}.bias'], padding=100 if (b, i) == (1, 1) else 1))
        t = F.max_pool2d(t, 2, 2, ceil_mode=True)
        pools[b] = t
    t = relu('conv6', F.conv2d(t, p['conv6.kernel'], p['conv6.bias']))
    t = relu('conv7', F.conv2d(t, p['conv7.kernel'], p['conv7.bias']))
    score = F.conv2d(t, p['score7.kernel'], p['score7.bias'])

    def up(layer, t):
        k = DECONV_KERNEL[layer]
        return F.conv_transpose2d(t, p[f'{layer}.kernel'], stride=k // 2)

    def crop(t, o, like_h, like_w):
        return t[:, :, o:o + like_h, o:o + like_w]

    def skip_scores(b, layer, scale_index):
        pool = pools[b]
        if skip_scales is not None:
            pool = pool * skip_scales[scale_index]
        return F.conv2d(pool, p[f'{layer}.kernel'], p[f'{layer}.bias'])

    if model == 'fcn32':
        out = up('fcn32', score)
    else:
        u = up('score7_upsample', score)
        fuse = u + crop(skip_scores(4, 'score4', 0), crops['score4'], u.shape[2], u.shape[3])
        if model == 'fcn16':
            out = up('fcn16', fuse)
        else:
            u = up('skip4_upsample', fuse)
            fuse = u + crop(skip_scores(3, 'score3', 1), crops['score3'], u.shape[2], u.shape[3])
            out = up('fcn8', fuse)
    return crop(out, crops['final'], h, w)


def network(args):
    """The forward function the arguments select: (model, p, x, relu) -> logits."""
    if args.style == 'keras':
        if args.skip_scales:
            die('--skip-scales applies to --style caffe')
        return fcn_forward
    scales = None
    if args.skip_scales:
        scales = [float(v) for v in args.skip_scales.split(',')]
        if len(scales) != 2 or args.model != 'fcn8':
            die('--skip-scales takes two numbers (pool4, pool3) and applies to fcn8')
    return lambda model, p, x, relu=plain_relu: caffe_forward(model, p, x, relu, scales)


class MaskedRelu:
    """ReLU whose on/off pattern comes from the engine under test (U8 masks, 1 = positive,
    named by layer, at the padded size). A pre-activation within float32 rounding of zero can
    land on either side of the kink in two correct implementations, and where its gradient is
    large that one element moves a whole weight gradient. Following the engine's decisions
    keeps the comparison on one side of every kink; `worst` records how far from zero any
    disagreeing pre-activation was (relative to its layer's largest), so a wrong mask — a
    real bug — still shows."""

    def __init__(self, masks):
        self.masks = masks
        self.flips = 0
        self.worst = 0.0

    def __call__(self, layer, t):
        if layer not in self.masks:
            die(f'--relu-masks: no mask for layer {layer}')
        m = torch.from_numpy(self.masks[layer].astype(np.bool_))
        if tuple(m.shape) != tuple(t.shape):
            die(f'--relu-masks: {layer} mask has shape {list(m.shape)}, expected {list(t.shape)}')
        with torch.no_grad():
            flip = (t > 0) != m
            n = int(flip.sum())
            if n:
                self.flips += n
                self.worst = max(self.worst, float(t[flip].abs().max() / t.abs().max().clamp_min(1e-300)))
        return torch.where(m, t, torch.zeros_like(t))


# ---------------------------------------------------------------------------------------------
# Safetensors by hand (the safetensors package is not a dependency)

ST_DTYPES = {'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'BF16': '<u2', 'I64': '<i8', 'I32': '<i4', 'I16': '<i2',
             'I8': '|i1', 'U8': '|u1', 'U16': '<u2', 'U32': '<u4', 'U64': '<u8', 'BOOL': '|u1'}
NP_TO_ST = {('f', 8): 'F64', ('f', 4): 'F32', ('f', 2): 'F16', ('i', 8): 'I64', ('i', 4): 'I32', ('u', 1): 'U8'}


def read_safetensors(path):
    try:
        raw = open(path, 'rb').read()
    except OSError as e:
        die(f'{path}: cannot read ({e.strerror})')
    if len(raw) < 8:
        die(f'{path}: truncated safetensors file')
    (n,) = struct.unpack('<Q', raw[:8])
    if 8 + n > len(raw):
        die(f'{path}: header length {n} beyond file size {len(raw)}')
    try:
        header = json.loads(raw[8:8 + n].decode('utf8'))
    except ValueError as e:
        die(f'{path}: bad header JSON ({e})')
    meta = header.pop('__metadata__', {}) or {}
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, e in header.items():
        if e['dtype'] not in ST_DTYPES:
            die(f'{path}: tensor {name!r} has unsupported dtype {e["dtype"]}')
        s, t = e['data_offsets']
        dt = np.dtype(ST_DTYPES[e['dtype']])
        count = int(np.prod(e['shape'], dtype=np.int64))
        if t > len(data) or t - s != count * dt.itemsize:
            die(f'{path}: tensor {name!r} offsets [{s}, {t}] do not match shape {e["shape"]} x {e["dtype"]}')
        out[name] = np.frombuffer(data[s:t], dtype=dt).reshape(e['shape']).copy()
    return out, meta


def write_safetensors(path, tensors, metadata=None):
    """Sorted names, data ordered by element size then name, header padded to 8 with spaces,
    written to a temporary file and renamed so readers never see a partial file."""
    arrs = {}
    for k, a in tensors.items():
        a = np.asarray(a)
        dt = NP_TO_ST.get((a.dtype.kind, a.dtype.itemsize))
        if dt is None:
            die(f'cannot write dtype {a.dtype} of {k!r}')
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder('<'))
        arrs[k] = (dt, a)
    order = sorted(arrs, key=lambda k: (-arrs[k][1].dtype.itemsize, k))
    offsets, pos = {}, 0
    for k in order:
        offsets[k] = [pos, pos + arrs[k][1].nbytes]
        pos += arrs[k][1].nbytes
    header = {}
    if metadata:
        header['__metadata__'] = {k: str(metadata[k]) for k in sorted(metadata)}
    for k in sorted(arrs):
        header[k] = {'dtype': arrs[k][0], 'shape': list(arrs[k][1].shape), 'data_offsets': offsets[k]}
    hj = json.dumps(header, separators=(',', ':')).encode('utf8')
    hj += b' ' * ((-(8 + len(hj))) % 8)
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'wb') as f:
        f.write(struct.pack('<Q', len(hj)))
        f.write(hj)
        for k in order:
            f.write(arrs[k][1].tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Inputs


def load_weights(path, specs, np_dtype, seed=None):
    if path is None:
        weights = random_weights(specs, 0 if seed is None else seed)
    else:
        weights, _ = read_safetensors(path)
    out = {}
    missing = []
    for name in param_names(specs):
        if name not in weights:
            missing.append(name)
            continue
        a = weights[name]
        want = keras_shape(specs, name)
        if tuple(a.shape) != want:
            die(f'{path}: {name} has shape {list(a.shape)}, expected {list(want)} (Keras layout) for this model and width')
        out[name] = a.astype(np_dtype)
    if missing:
        die(f'{path}: missing weights: {", ".join(missing)}')
    return out


def load_input(path, np_dtype):
    try:
        x = np.load(path)
    except Exception as e:  # noqa: BLE001 - report any reader failure with the file name
        die(f'{path}: cannot read .npy ({e})')
    if x.ndim != 4 or x.shape[1] != 3:
        die(f'{path}: input must be (N, 3, H, W), got {list(x.shape)}')
    if x.dtype.kind != 'f':
        die(f'{path}: input must be float, got {x.dtype}')
    return np.ascontiguousarray(x.astype(np_dtype))


def load_labels(path, x_shape):
    try:
        y = np.load(path)
    except Exception as e:  # noqa: BLE001
        die(f'{path}: cannot read .npy ({e})')
    n, _, h, w = x_shape
    if tuple(y.shape) != (n, h, w):
        die(f'{path}: labels must be (N, H, W) = {[n, h, w]}, got {list(y.shape)}')
    y = y.astype(np.int64)
    bad = ~(((y >= 0) & (y < NUM_CLASSES)) | (y == IGNORE))
    if bad.any():
        die(f'{path}: label values must be 0-{NUM_CLASSES - 1} or {IGNORE}, found {int(y[bad][0])}')
    return y


def torch_params(weights, requires_grad=()):
    p = {}
    for name, a in weights.items():
        t = torch.from_numpy(keras_to_torch(a))
        if name.rsplit('.', 1)[0] in requires_grad:
            t.requires_grad_(True)
        p[name] = t
    return p


def resolve_trainable(spec_str, specs):
    """'all' = every conv layer (transposed convs stay frozen, as in the seed); names may be
    added after it (e.g. 'all,fcn8'), or listed alone."""
    layers = []
    for part in [s.strip() for s in spec_str.split(',') if s.strip()]:
        if part == 'all':
            layers += [l for l, s in specs.items() if s['kind'] == 'conv']
        elif part in specs:
            layers.append(part)
        else:
            die(f'--trainable: unknown layer {part!r} for this model (layers: {", ".join(specs)})')
    seen = []
    for l in layers:
        if l not in seen:
            seen.append(l)
    if not seen:
        die('--trainable selects no layer')
    return seen


# ---------------------------------------------------------------------------------------------
# Subcommands


def add_common(ap):
    ap.add_argument('--model', required=True, choices=MODELS)
    ap.add_argument('--width', type=float, default=1.0, help='channel width multiplier')
    ap.add_argument('--weights', help='Keras-layout weights (.safetensors)')
    ap.add_argument('--input', required=True, help='(N, 3, H, W) float .npy, preprocessed')
    ap.add_argument('--out', required=True, help='output .safetensors')
    ap.add_argument('--dtype', choices=('float32', 'float64'), default='float32')
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0 = torch default)')
    ap.add_argument('--classes', type=int, default=NUM_CLASSES, help='number of classes (forward only; training uses 21)')
    ap.add_argument('--style', choices=('keras', 'caffe'), default='keras', help="keras: the seed's network; caffe: the paper's")
    ap.add_argument('--skip-scales', help='caffe fcn8 at-once: factors of pool4,pool3 before their scores, e.g. 0.01,0.0001')


def setup(args):
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.weights is None:
        die('--weights is required')
    np_dtype = np.float64 if args.dtype == 'float64' else np.float32
    specs = layer_specs(args.model, args.width, args.classes)
    weights = load_weights(args.weights, specs, np_dtype)
    x = load_input(args.input, np_dtype)
    return np_dtype, specs, weights, x


def st_name(dtype):
    return 'F64' if dtype == np.float64 else 'F32'


def cmd_forward(args):
    np_dtype, specs, weights, x = setup(args)
    with torch.no_grad():
        logits = network(args)(args.model, torch_params(weights), torch.from_numpy(x))
    write_safetensors(args.out, {'logits': logits.numpy().astype(np_dtype)},
                      {'model': args.model, 'width': repr(args.width), 'dtype': args.dtype})


def cmd_step(args):
    if args.classes != NUM_CLASSES:
        die(f'step: the labels are VOC classes (0-{NUM_CLASSES - 1}): --classes must be {NUM_CLASSES}')
    np_dtype, specs, weights, x = setup(args)
    y = load_labels(args.labels, x.shape)
    trainable = resolve_trainable(args.trainable, specs)
    p = torch_params(weights, requires_grad=trainable)
    relu = MaskedRelu(read_safetensors(args.relu_masks)[0]) if args.relu_masks else plain_relu
    logits = network(args)(args.model, p, torch.from_numpy(x), relu)
    yt = torch.from_numpy(y)
    count = int((yt != IGNORE).sum())
    loss_sum = F.cross_entropy(logits, yt, ignore_index=IGNORE, reduction='sum')
    # With every pixel ignored the mean is defined as 0 (and so are the gradients), not NaN.
    loss = loss_sum / max(count, 1) if args.reduction == 'mean' else loss_sum
    loss.backward()

    state = read_safetensors(args.state)[0] if args.state else {}
    out = {'logits': logits.detach().numpy().astype(np_dtype), 'loss': np.array([loss.item()], dtype=np_dtype)}
    if args.relu_masks:
        out['relu_flips'] = np.array([relu.flips], dtype=np.int64)
        out['relu_flip_worst'] = np.array([relu.worst], dtype=np.float64)
    names = [n for n in param_names(specs) if n.rsplit('.', 1)[0] in trainable]

    def state_of(key, like):
        if key not in state:
            return np.zeros_like(like)
        a = state[key]
        if a.shape != like.shape:
            die(f'{args.state}: {key} has shape {list(a.shape)}, expected {list(like.shape)}')
        return a.astype(np_dtype)

    if args.optimizer == 'adam':
        t = int(np.asarray(state['t']).reshape(-1)[0]) + 1 if 't' in state else 1
        b1, b2, eps = args.beta1, args.beta2, args.epsilon
        # Keras: lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t); w -= lr_t * m / (sqrt(v) + eps).
        alpha = args.lr * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
        for name in names:
            layer, what = name.rsplit('.', 1)
            w = weights[name]
            g = torch_to_keras(p[name].grad.numpy()).astype(np_dtype)
            if what == 'kernel' and specs[layer]['kind'] == 'conv':
                g = g + np_dtype(2.0 * args.l2) * w  # Keras l2(λ) adds λ·Σw² to the loss
            m = np_dtype(b1) * state_of(f'm.{name}', w) + np_dtype(1.0 - b1) * g
            v = np_dtype(b2) * state_of(f'v.{name}', w) + np_dtype(1.0 - b2) * g * g
            out[f'grad.{name}'] = g
            out[f'updated.{name}'] = w - np_dtype(alpha) * m / (np.sqrt(v) + np_dtype(eps))
            out[f'm.{name}'] = m
            out[f'v.{name}'] = v
        out['t'] = np.array([t], dtype=np.int64)
    else:
        # Caffe: kernels lr_mult 1, decay_mult 1; biases lr_mult 2, decay_mult 0.
        for name in names:
            what = name.rsplit('.', 1)[1]
            lr_mult, decay_mult = (2.0, 0.0) if what == 'bias' else (1.0, 1.0)
            w = weights[name]
            g = torch_to_keras(p[name].grad.numpy()).astype(np_dtype)
            if decay_mult:
                g = g + np_dtype(args.weight_decay * decay_mult) * w
            vel = np_dtype(args.momentum) * state_of(f'velocity.{name}', w) - np_dtype(args.lr * lr_mult) * g
            out[f'grad.{name}'] = g
            out[f'updated.{name}'] = w + vel
            out[f'velocity.{name}'] = vel
    # Full-width models have 134M parameters: callers may leave out what they do not compare.
    keep = set(args.outputs.split(','))
    kinds = {'grad': 'grad', 'updated': 'updated', 'm': 'state', 'v': 'state', 'velocity': 'state', 't': 'state'}
    out = {k: v for k, v in out.items() if kinds.get(k.split('.', 1)[0], 'always') in keep | {'always'}}
    meta = {'model': args.model, 'width': repr(args.width), 'dtype': args.dtype, 'optimizer': args.optimizer,
            'reduction': args.reduction, 'trainable': ','.join(trainable), 'valid_pixels': str(count)}
    write_safetensors(args.out, out, meta)


class _Net(torch.nn.Module):
    def __init__(self, model, weights):
        super().__init__()
        self.model = model
        self.names = list(weights)
        for i, name in enumerate(self.names):
            self.register_buffer(f'p{i}', torch.from_numpy(keras_to_torch(weights[name])))

    def forward(self, x):
        p = {name: getattr(self, f'p{i}') for i, name in enumerate(self.names)}
        return fcn_forward(self.model, p, x)


def cmd_export_onnx(args):
    specs = layer_specs(args.model, args.width)
    weights = load_weights(args.weights, specs, np.float32, seed=args.seed)
    net = _Net(args.model, weights).eval()
    dummy = torch.zeros(args.batch, 3, args.height, args.width_px)
    tmp = f'{args.out}.{os.getpid()}.tmp'
    warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
    with torch.no_grad():
        torch.onnx.export(net, dummy, tmp, input_names=['input'], output_names=['logits'],
                          opset_version=args.opset, do_constant_folding=True)
    os.replace(tmp, args.out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog='torch_fcn.py', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)

    f = sub.add_parser('forward', help='write logits (N, 21, H, W)')
    add_common(f)

    s = sub.add_parser('step', help='one training step')
    add_common(s)
    s.add_argument('--labels', required=True, help='(N, H, W) uint8 .npy, 255 = ignore')
    s.add_argument('--optimizer', choices=('adam', 'sgd'), default='adam')
    s.add_argument('--lr', type=float, default=1e-4)
    s.add_argument('--l2', type=float, default=0.0, help='Adam: Keras l2 on conv kernels')
    s.add_argument('--beta1', type=float, default=0.9)
    s.add_argument('--beta2', type=float, default=0.999)
    s.add_argument('--epsilon', type=float, default=1e-7)
    s.add_argument('--momentum', type=float, default=0.99, help='SGD momentum')
    s.add_argument('--weight-decay', type=float, default=0.0, help='SGD weight decay (kernels only)')
    s.add_argument('--reduction', choices=('mean', 'sum'), default='mean')
    s.add_argument('--trainable', default='all', help="'all' (every conv layer, transposed convs frozen) and/or comma-separated layer names")
    s.add_argument('--outputs', default='grad,updated,state', help='which of grad, updated, state to write (comma-separated)')
    s.add_argument('--relu-masks', help="U8 ReLU on/off masks by layer name (.safetensors): the reference follows them (see MaskedRelu)")
    s.add_argument('--state', help='optimiser state in: m.<name>, v.<name>, t (Adam) or velocity.<name> (SGD)')

    e = sub.add_parser('export-onnx', help='fixed-shape ONNX graph, input "input", output "logits"')
    e.add_argument('--model', required=True, choices=MODELS)
    e.add_argument('--width', type=float, default=1.0, help='channel width multiplier')
    e.add_argument('--height', type=int, required=True, help='input height in pixels')
    e.add_argument('--width-px', type=int, required=True, help='input width in pixels')
    e.add_argument('--batch', type=int, default=1)
    src = e.add_mutually_exclusive_group()
    src.add_argument('--weights', help='Keras-layout weights (.safetensors)')
    src.add_argument('--seed', type=int, default=None, help='random weights from this seed (default when no --weights: 0)')
    e.add_argument('--opset', type=int, default=13)
    e.add_argument('--out', required=True)

    args = ap.parse_args(argv)
    if args.cmd == 'forward':
        cmd_forward(args)
    elif args.cmd == 'step':
        cmd_step(args)
    else:
        cmd_export_onnx(args)


if __name__ == '__main__':
    main()
