#!/usr/bin/env python3
"""Writes Keras-style `.h5` weight files for tests of the TypeScript `.h5` reader, with h5py and
numpy alone (no Keras, no code shared with the reader).

The files reproduce what Keras's `model.save_weights()` writes:
  - root attributes `layer_names` (array of byte strings, every layer including those without
    weights), `backend` and `keras_version` (byte strings);
  - one group per layer, with attribute `weight_names` (byte strings, kernel then bias; an
    empty float64 array for a layer without weights, as Keras's save_attributes_to_hdf5_group
    stores an empty list);
  - each weight at `<layer>/<weight name>`: Keras 2 names (`<layer>/kernel:0`, so a nested
    group `<layer>/<layer>/kernel:0`), Keras 1.2 names (`<layer>_W_1:0`, `<layer>_b_1:0`, as in
    the VGG16 ImageNet release) or Keras 0.x names (`param_0`, `param_1`).
`--model-weights` nests all of it under a `model_weights` group, as `model.save()` does.

Alongside, `--safetensors` writes the same values in the project's naming and layouts
(`<layer>.kernel` / `<layer>.bias`, float32), which is what a correct reader must produce:
for VGG16, fc1 (7*7*C, F) becomes conv6 (7, 7, C, F) by numpy's row-major reshape, fc2 (F, F)
becomes conv7 (1, 1, F, F), and `predictions` is left out.

Modes:
  fcn    the seed's FCN-32s/16s/8s (`--kind`), random weights from `--seed`
  vgg16  Keras's VGG16 ImageNet file, reduced by `--width` (fc layers 4096*width wide,
         `predictions` 4096*width -> `--imagenet-classes`); `--notop` leaves out fc1, fc2 and
         predictions as the `_notop` file does

`--defect` damages the file for error tests (repeatable):
  nan:<layer>        a NaN in the layer's kernel
  inf:<layer>        an infinity in the layer's bias
  bad-bias:<layer>   the bias one element longer than the kernel's output channels
  no-bias:<layer>    the bias left out (weight_names lists only the kernel)
  int:<layer>        the kernel stored as int32
  rank:<layer>       the kernel stored with its two spatial axes merged (rank 3)
  extra:<name>       an extra layer `<name>` with a 1x1 conv kernel and bias
  no-layer-names     the `layer_names` attribute left out
  float64            every weight stored as float64 (valid: readers convert)

Tests write many files in one process: `import make_keras_h5; make_keras_h5.main([...])`.
"""
import argparse
import json
import math
import os
import struct
import sys

import h5py
import numpy as np

VGG_BLOCKS = [(1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512)]
UPSAMPLE_KERNEL = {'fcn32': 64, 'fcn16': 32, 'fcn8': 16, 'score7_upsample': 4, 'skip4_upsample': 4}


def scaled(c, w):
    # Round half up, as JavaScript's Math.round (Python's round() is banker's rounding).
    return max(1, int(math.floor(c * w + 0.5)))


def vgg_body(width):
    """[(layer name or None for a weightless layer, spec)] for the VGG16 convolutions and pools."""
    layers = [('input_1', None)]
    cin = 3
    chans = {}
    for b, n, c in VGG_BLOCKS:
        cout = scaled(c, width)
        for i in range(1, n + 1):
            layers.append((f'block{b}_conv{i}', ('conv', 3, cin, cout)))
            cin = cout
        layers.append((f'block{b}_pool', None))
        chans[b] = cout
    return layers, chans


def fcn_layers(kind, width, classes):
    """Layers of the seed's Keras FCN model in Keras order, weightless ones included."""
    layers, chans = vgg_body(width)
    fc = scaled(4096, width)
    layers += [('conv6', ('conv', 7, chans[5], fc)), ('drop6', None),
               ('conv7', ('conv', 1, fc, fc)), ('drop7', None),
               ('score7', ('conv', 1, fc, classes))]

    def up(name):
        return (name, ('deconv', UPSAMPLE_KERNEL[name], classes, classes))

    if kind == 'fcn32':
        layers += [up('fcn32')]
    elif kind == 'fcn16':
        layers += [up('score7_upsample'), ('score4', ('conv', 1, chans[4], classes)), ('skip4', None), up('fcn16')]
    else:
        layers += [up('score7_upsample'), ('score4', ('conv', 1, chans[4], classes)), ('skip4', None),
                   up('skip4_upsample'), ('score3', ('conv', 1, chans[3], classes)), ('skip3', None), up('fcn8')]
    layers.append(('softmax', None))
    return layers


def vgg16_layers(width, notop, imagenet_classes):
    layers, chans = vgg_body(width)
    if not notop:
        fc = scaled(4096, width)
        layers += [('flatten', None), ('fc1', ('dense', 7 * 7 * chans[5], fc)), ('fc2', ('dense', fc, fc)),
                   ('predictions', ('dense', fc, imagenet_classes))]
    return layers


def random_weights(spec, rng):
    """(kernel, bias or None) in Keras layouts, float32, with fan-in scaled values."""
    what = spec[0]
    if what == 'dense':
        _, cin, cout = spec
        kernel = rng.standard_normal((cin, cout)) * math.sqrt(2.0 / cin)
        return kernel.astype(np.float32), (rng.standard_normal(cout) * 0.05).astype(np.float32)
    _, k, cin, cout = spec
    if what == 'deconv':
        # Conv2DTranspose: (kh, kw, out, in), no bias in the seed's model.
        return (rng.standard_normal((k, k, cout, cin)) / (k * math.sqrt(cin))).astype(np.float32), None
    kernel = rng.standard_normal((k, k, cin, cout)) * math.sqrt(2.0 / (k * k * cin))
    return kernel.astype(np.float32), (rng.standard_normal(cout) * 0.05).astype(np.float32)


def weight_names(layer, naming, has_bias):
    if naming == 'keras2':
        names = [f'{layer}/kernel:0', f'{layer}/bias:0']
    elif naming == 'keras1':
        names = [f'{layer}_W_1:0', f'{layer}_b_1:0']
    else:
        names = ['param_0', 'param_1']
    return names if has_bias else names[:1]


def project_tensors(mode, layers, weights):
    """The arrays a reader must produce, by project name."""
    out = {}
    for name, spec in layers:
        if spec is None or name not in weights:
            continue
        kernel, bias = weights[name]
        if mode == 'vgg16' and name == 'predictions':
            continue
        target = {'fc1': 'conv6', 'fc2': 'conv7'}.get(name, name) if mode == 'vgg16' else name
        if name == 'fc1':
            # Keras's Flatten flattens (7, 7, C) row-major, so the reshape is numpy's default order.
            kernel = kernel.reshape(7, 7, kernel.shape[0] // 49, kernel.shape[1])
        elif name == 'fc2':
            kernel = kernel.reshape(1, 1, *kernel.shape)
        out[f'{target}.kernel'] = kernel
        if bias is not None:
            out[f'{target}.bias'] = bias
    return out


def write_safetensors(path, tensors, metadata):
    names = sorted(tensors)
    header = {'__metadata__': {k: str(v) for k, v in metadata.items()}}
    pos = 0
    blobs = []
    for n in names:
        a = np.ascontiguousarray(tensors[n], dtype='<f4')
        header[n] = {'dtype': 'F32', 'shape': list(a.shape), 'data_offsets': [pos, pos + a.nbytes]}
        pos += a.nbytes
        blobs.append(a.tobytes())
    hj = json.dumps(header, separators=(',', ':')).encode('utf8')
    hj += b' ' * ((-len(hj)) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def apply_defects(defects, weights, names_by_layer, dtypes):
    """Changes `weights` (name -> (kernel, bias)) in place; returns the set of layers to store as int32."""
    int_layers = set()
    for d in defects:
        what, _, layer = d.partition(':')
        if what == 'float64':
            dtypes['all'] = np.float64
            continue
        if what in ('extra', 'no-layer-names'):
            continue
        if layer not in weights:
            sys.exit(f'make_keras_h5: --defect {d}: no layer {layer!r} with weights')
        kernel, bias = weights[layer]
        kernel = kernel.copy()
        bias = None if bias is None else bias.copy()
        if what == 'nan':
            kernel.reshape(-1)[kernel.size // 2] = np.nan
        elif what == 'inf':
            bias[0] = np.inf
        elif what == 'bad-bias':
            bias = np.concatenate([bias, np.zeros(1, np.float32)])
        elif what == 'no-bias':
            bias = None
            names_by_layer[layer] = names_by_layer[layer][:1]
        elif what == 'int':
            int_layers.add(layer)
        elif what == 'rank':
            kernel = kernel.reshape(kernel.shape[0] * kernel.shape[1], *kernel.shape[2:])
        else:
            sys.exit(f'make_keras_h5: unknown defect {d!r}')
        weights[layer] = (kernel, bias)
    return int_layers


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('mode', choices=['fcn', 'vgg16'])
    ap.add_argument('--out', required=True, help='the .h5 file to write')
    ap.add_argument('--safetensors', help='also write the expected tensors in project naming here')
    ap.add_argument('--kind', choices=['fcn32', 'fcn16', 'fcn8'], default='fcn32')
    ap.add_argument('--width', type=float, default=0.0625)
    ap.add_argument('--classes', type=int, default=21)
    ap.add_argument('--imagenet-classes', type=int, default=1000)
    ap.add_argument('--notop', action='store_true')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--naming', choices=['keras2', 'keras1', 'param'], default=None,
                    help='weight dataset names (default: keras2 for fcn, keras1 for vgg16)')
    ap.add_argument('--model-weights', action='store_true', help='nest the weights under model_weights, as model.save()')
    ap.add_argument('--defect', action='append', default=[])
    a = ap.parse_args(argv)

    naming = a.naming or ('keras2' if a.mode == 'fcn' else 'keras1')
    if a.mode == 'fcn':
        layers = fcn_layers(a.kind, a.width, a.classes)
    else:
        layers = vgg16_layers(a.width, a.notop, a.imagenet_classes)
    for d in a.defect:
        if d.startswith('extra:'):
            fc_in = dict(layers)['block1_conv1'][3]
            layers.append((d.split(':', 1)[1], ('conv', 1, fc_in, fc_in)))

    rng = np.random.default_rng(a.seed)
    weights = {name: random_weights(spec, rng) for name, spec in layers if spec is not None}
    expected = project_tensors(a.mode, layers, weights)
    names_by_layer = {name: weight_names(name, naming, weights[name][1] is not None) for name in weights}
    dtypes = {}
    int_layers = apply_defects(a.defect, weights, names_by_layer, dtypes)
    store_dtype = dtypes.get('all', np.float32)

    with h5py.File(a.out, 'w') as f:
        root = f
        if a.model_weights:
            f.attrs['keras_version'] = b'2.2.4'
            f.attrs['backend'] = b'tensorflow'
            f.attrs['model_config'] = json.dumps({'class_name': 'Model', 'config': {'name': 'model_1'}}).encode('utf8')
            root = f.create_group('model_weights')
        if 'no-layer-names' not in a.defect:
            root.attrs['layer_names'] = np.asarray([name.encode('utf8') for name, _ in layers])
        root.attrs['backend'] = b'tensorflow'
        root.attrs['keras_version'] = b'2.2.4' if naming == 'keras2' else b'1.2.2'
        for name, spec in layers:
            g = root.create_group(name)
            if spec is None:
                g.attrs['weight_names'] = np.asarray([])
                continue
            wn = names_by_layer[name]
            g.attrs['weight_names'] = np.asarray([n.encode('utf8') for n in wn])
            kernel, bias = weights[name]
            values = [kernel] if bias is None else [kernel, bias]
            for n, v in zip(wn, values):
                dt = np.int32 if name in int_layers and v is kernel else store_dtype
                g.create_dataset(n, data=v.astype(dt))

    if a.safetensors:
        if a.mode == 'fcn':
            meta = {'format': 'fcn-keras-layout', 'model': a.kind, 'width': repr(a.width), 'classes': str(a.classes)}
        else:
            meta = {'backbone': 'vgg16', 'width': repr(a.width)}
        write_safetensors(a.safetensors, expected, meta)


if __name__ == '__main__':
    main()
