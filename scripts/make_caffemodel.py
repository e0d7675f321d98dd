#!/usr/bin/env python3
"""Writes small Caffe .caffemodel test fixtures with random weights, independently of the
TypeScript reader: the messages come from Caffe's own schema compiled by protoc.

For each network — the Caffe-style FCN-32s, FCN-16s and FCN-8s of the paper's release, the
at-once FCN-8s (with its constant Scale layers on pool4 and pool3) and Caffe's VGG16 (fc6 and
fc7 as InnerProduct layers, fc8 the ImageNet classifier) — it writes:

  <net>.v2.caffemodel   NetParameter with the current `layer` list (blob shapes in `shape`)
  <net>.v1.caffemodel   the same weights in the deprecated V1 `layers` list (blob shapes as
                        num/channels/height/width, as in Caffe's VGG16 release); not for the
                        at-once net, whose Scale layer has no V1 type
  <net>.safetensors     the same arrays under the project's names in Keras layouts
                        (conv (kh, kw, in, out), transposed conv (kh, kw, out, in)), with the
                        metadata the reader should report (style, model/backbone, width,
                        classes, skip_scales)

With --bad it also writes FCN-8s files each with one defect (deconv with a bias, a wrong
shape, a NaN, an unknown layer with weights, a missing bias blob, a non-constant Scale), and
fcn32 with every blob in `double_data`. A JSON manifest of everything written goes to stdout.

Usage:
  make_caffemodel.py --caffe-proto /path/to/caffe.proto --out DIR [--width 0.0625]
                     [--classes 21] [--seed 0] [--nets fcn32,fcn16,fcn8,fcn8-atonce,vgg16] [--bad]

Needs protoc (Debian protobuf-compiler), python3-protobuf and numpy.
"""
import argparse
import importlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

VGG_BLOCKS = [(1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512)]
FC = 4096
IMAGENET_CLASSES = 1000
NETS = ('fcn32', 'fcn16', 'fcn8', 'fcn8-atonce', 'vgg16')
AT_ONCE_SCALES = {'scale_pool4': 0.01, 'scale_pool3': 0.0001}
# Caffe's crop offsets of the paper's nets (conv1_1 padding 100): skip name -> offset.
CROPS = {
    'fcn32': {'score': 19},
    'fcn16': {'score_pool4c': 5, 'score': 27},
    'fcn8': {'score_pool4c': 5, 'score_pool3c': 9, 'score': 31},
}


def die(msg):
    print(f'make_caffemodel: {msg}', file=sys.stderr)
    sys.exit(2)


def scaled(c, w):
    # Round half up, as JavaScript's Math.round.
    return max(1, int(math.floor(c * w + 0.5)))


def compile_caffe_schema(proto_path, workdir):
    """caffe_pb2 compiled by protoc from Caffe's caffe.proto, read where it is."""
    if not os.path.isfile(proto_path):
        die(f'{proto_path}: no such file')
    if shutil.which('protoc') is None:
        die('protoc not found (Debian: apt-get install protobuf-compiler)')
    proto_dir, proto_name = os.path.split(os.path.abspath(proto_path))
    r = subprocess.run(['protoc', f'--proto_path={proto_dir}', f'--python_out={workdir}', proto_name], capture_output=True, text=True)
    if r.returncode != 0:
        die(f'protoc failed on {proto_path}: {r.stderr.strip()}')
    sys.path.insert(0, workdir)
    return importlib.import_module(os.path.splitext(proto_name)[0] + '_pb2')


# ---------------------------------------------------------------------------------------------
# Networks as lists of layer descriptions with Caffe-layout weights


class Layer:
    """One Caffe layer: name, type, bottoms/tops, Caffe-layout blobs and layer parameters."""

    def __init__(self, name, type_, bottom, top, blobs=(), **params):
        self.name, self.type, self.bottom, self.top = name, type_, list(bottom), list(top)
        self.blobs = list(blobs)
        self.params = params


def he(rng, shape, fan_in):
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


def small(rng, n):
    return (rng.standard_normal(n) * 0.1).astype(np.float32)


def build_net(net, w, classes, rng):
    """The Caffe layers of `net` and the project tensors (Keras layouts) of the same weights."""
    layers = [Layer('input', 'Input', [], ['data'])]
    keras = {}

    def conv(name, project, bottom, cin, cout, k, pad=0, relu=True):
        kernel = he(rng, (cout, cin, k, k), cin * k * k)
        bias = small(rng, cout)
        layers.append(Layer(name, 'Convolution', [bottom], [name], [kernel, bias], num_output=cout, kernel_size=k, pad=pad))
        keras[f'{project}.kernel'] = kernel.transpose(2, 3, 1, 0)
        keras[f'{project}.bias'] = bias
        if relu:
            layers.append(Layer(f'relu{name[4:]}' if name.startswith('conv') else f'relu{name[2:]}', 'ReLU', [name], [name]))
        return name

    def inner_product(name, project, bottom, cin_flat, cout, cin, k, relu=True):
        weights = he(rng, (cout, cin_flat), cin_flat)
        bias = small(rng, cout)
        layers.append(Layer(name, 'InnerProduct', [bottom], [name], [weights, bias], num_output=cout))
        if project is not None:
            # Caffe flattens an input blob as C, H, W.
            keras[f'{project}.kernel'] = weights.reshape(cout, cin, k, k).transpose(2, 3, 1, 0)
            keras[f'{project}.bias'] = bias
        if relu:
            layers.append(Layer(f'relu{name[2:]}', 'ReLU', [name], [name]))
        return name

    def deconv(name, project, bottom, k, s):
        # (in, out, kh, kw); random rather than bilinear so that any transposition shows.
        kernel = (rng.standard_normal((classes, classes, k, k)) * math.sqrt(1.0 / (classes * (k / s) ** 2))).astype(np.float32)
        layers.append(Layer(name, 'Deconvolution', [bottom], [name], [kernel], num_output=classes, kernel_size=k, stride=s, bias_term=False))
        keras[f'{project}.kernel'] = kernel.transpose(2, 3, 1, 0)
        return name

    def crop(name, bottom, like, offset):
        layers.append(Layer(name, 'Crop', [bottom, like], [name], axis=2, offset=offset))
        return name

    fcn = net != 'vgg16'
    bottom, cin = 'data', 3
    chans = {}
    for b, n, c in VGG_BLOCKS:
        cout = scaled(c, w)
        for i in range(1, n + 1):
            pad = 100 if (fcn and b == 1 and i == 1) else 1
            bottom = conv(f'conv{b}_{i}', f'block{b}_conv{i}', bottom, cin, cout, 3, pad=pad)
            cin = cout
        layers.append(Layer(f'pool{b}', 'Pooling', [bottom], [f'pool{b}'], pool='MAX', kernel_size=2, stride=2))
        bottom = f'pool{b}'
        chans[b] = cout
    fc = scaled(FC, w)
    if not fcn:
        inner_product('fc6', 'conv6', 'pool5', chans[5] * 49, fc, chans[5], 7)
        layers.append(Layer('drop6', 'Dropout', ['fc6'], ['fc6'], dropout_ratio=0.5))
        inner_product('fc7', 'conv7', 'fc6', fc, fc, fc, 1)
        layers.append(Layer('drop7', 'Dropout', ['fc7'], ['fc7'], dropout_ratio=0.5))
        inner_product('fc8', None, 'fc7', fc, IMAGENET_CLASSES, fc, 1, relu=False)
        layers.append(Layer('prob', 'Softmax', ['fc8'], ['prob']))
        return layers, keras

    conv('fc6', 'conv6', 'pool5', chans[5], fc, 7)
    layers.append(Layer('drop6', 'Dropout', ['fc6'], ['fc6'], dropout_ratio=0.5))
    conv('fc7', 'conv7', 'fc6', fc, fc, 1)
    layers.append(Layer('drop7', 'Dropout', ['fc7'], ['fc7'], dropout_ratio=0.5))
    conv('score_fr', 'score7', 'fc7', fc, classes, 1, relu=False)
    kind = 'fcn8' if net == 'fcn8-atonce' else net
    offsets = CROPS[kind]
    if kind == 'fcn32':
        deconv('upscore', 'fcn32', 'score_fr', 64, 32)
        crop('score', 'upscore', 'data', offsets['score'])
        return layers, keras

    def skip(b, upscored):
        # pool<b> (scaled first in the at-once net) scored, cropped to the upscored map, summed.
        pool = f'pool{b}'
        if net == 'fcn8-atonce':
            scale = f'scale_pool{b}'
            layers.append(Layer(scale, 'Scale', [pool], [scale], [np.full(chans[b], AT_ONCE_SCALES[scale], np.float32)]))
            pool = scale
        conv(f'score_pool{b}', f'score{b}', pool, chans[b], classes, 1, relu=False)
        crop(f'score_pool{b}c', f'score_pool{b}', upscored, offsets[f'score_pool{b}c'])
        layers.append(Layer(f'fuse_pool{b}', 'Eltwise', [upscored, f'score_pool{b}c'], [f'fuse_pool{b}'], operation='SUM'))

    deconv('upscore2', 'score7_upsample', 'score_fr', 4, 2)
    skip(4, 'upscore2')
    if kind == 'fcn16':
        deconv('upscore16', 'fcn16', 'fuse_pool4', 32, 16)
        crop('score', 'upscore16', 'data', offsets['score'])
        return layers, keras

    deconv('upscore_pool4', 'skip4_upsample', 'fuse_pool4', 4, 2)
    skip(3, 'upscore_pool4')
    deconv('upscore8', 'fcn8', 'fuse_pool3', 16, 8)
    crop('score', 'upscore8', 'data', offsets['score'])
    return layers, keras


def metadata_of(net, w, classes):
    if net == 'vgg16':
        return {'style': 'caffe', 'backbone': 'vgg16', 'width': repr(w)}
    meta = {'style': 'caffe', 'model': 'fcn8' if net == 'fcn8-atonce' else net, 'width': repr(w), 'classes': str(classes)}
    if net == 'fcn8-atonce':
        meta['skip_scales'] = f"{AT_ONCE_SCALES['scale_pool4']},{AT_ONCE_SCALES['scale_pool3']}"
    return meta


# ---------------------------------------------------------------------------------------------
# Serialisation


def fill_blob(pb, blob, array, form, double=False):
    if form == 'V2':
        blob.shape.dim.extend(array.shape)
    else:
        # The old 4-D shape: leading dimensions of 1 (a bias is 1×1×1×out, a matrix 1×1×out×in).
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        blob.num, blob.channels, blob.height, blob.width = dims
    flat = array.ravel().tolist()
    if double:
        blob.double_data.extend(flat)
    else:
        blob.data.extend(flat)


def set_params(pb, msg, layer):
    """Layer parameters, the same fields in both forms (V1 nets have no Crop or Input layers)."""
    p = layer.params
    if layer.type in ('Convolution', 'Deconvolution'):
        cp = msg.convolution_param
        cp.num_output = p['num_output']
        cp.kernel_size.append(p['kernel_size'])
        if p.get('pad'):
            cp.pad.append(p['pad'])
        if p.get('stride'):
            cp.stride.append(p['stride'])
        if p.get('bias_term') is False:
            cp.bias_term = False
    elif layer.type == 'InnerProduct':
        msg.inner_product_param.num_output = p['num_output']
    elif layer.type == 'Pooling':
        msg.pooling_param.pool = pb.PoolingParameter.MAX
        msg.pooling_param.kernel_size = p['kernel_size']
        msg.pooling_param.stride = p['stride']
    elif layer.type == 'Dropout':
        msg.dropout_param.dropout_ratio = p['dropout_ratio']
    elif layer.type == 'Crop':
        msg.crop_param.axis = p['axis']
        msg.crop_param.offset.append(p['offset'])
    elif layer.type == 'Eltwise':
        msg.eltwise_param.operation = pb.EltwiseParameter.SUM
    elif layer.type == 'Input':
        shape = msg.input_param.shape.add()
        shape.dim.extend([1, 3, 500, 500])


def v1_type(pb, type_):
    names = {
        'Convolution': 'CONVOLUTION', 'Deconvolution': 'DECONVOLUTION', 'InnerProduct': 'INNER_PRODUCT',
        'ReLU': 'RELU', 'Pooling': 'POOLING', 'Dropout': 'DROPOUT', 'Eltwise': 'ELTWISE', 'Softmax': 'SOFTMAX',
    }
    return getattr(pb.V1LayerParameter, names[type_])


def net_message(pb, name, layers, form, double=False):
    net = pb.NetParameter()
    net.name = name
    if form == 'V2':
        for layer in layers:
            msg = net.layer.add()
            msg.name, msg.type = layer.name, layer.type
            msg.bottom.extend(layer.bottom)
            msg.top.extend(layer.top)
            set_params(pb, msg, layer)
            for array in layer.blobs:
                fill_blob(pb, msg.blobs.add(), array, form, double)
        return net
    # V1: the input is declared on the net; Input and Crop layers have no V1 type (a V1 net
    # cropped with its old Crop-free arithmetic), so they are left out, as is Scale.
    net.input.append('data')
    net.input_dim.extend([1, 3, 500, 500])
    for layer in layers:
        if layer.type in ('Input', 'Crop'):
            continue
        if layer.type == 'Scale':
            die('the at-once net has Scale layers, which the V1 layer list cannot express')
        msg = net.layers.add()
        msg.name = layer.name
        msg.type = v1_type(pb, layer.type)
        msg.bottom.extend(layer.bottom)
        msg.top.extend(layer.top)
        set_params(pb, msg, layer)
        for array in layer.blobs:
            fill_blob(pb, msg.blobs.add(), array, form, double)
    return net


def write_bytes(path, data):
    with open(path, 'wb') as f:
        f.write(data)


def write_safetensors(path, tensors, metadata):
    """safetensors: 8-byte little-endian header length, JSON header, raw little-endian data."""
    header = {'__metadata__': {k: str(v) for k, v in sorted(metadata.items())}}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype='<f4')
        header[name] = {'dtype': 'F32', 'shape': list(a.shape), 'data_offsets': [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a.tobytes())
    text = json.dumps(header, separators=(',', ':')).encode()
    text += b' ' * (-len(text) % 8)  # data starts 8-byte aligned
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------------------------------------
# Defective files (FCN-8s based), each with one thing the reader must reject


def bad_variants(layers, classes):
    """name -> (layers with one defect, the layer the error must name)."""

    def edited(name, change):
        out = []
        for layer in layers:
            if layer.name == name:
                layer = Layer(layer.name, layer.type, layer.bottom, layer.top, [b.copy() for b in layer.blobs], **layer.params)
                change(layer)
            out.append(layer)
        return out

    variants = {}
    variants['deconv-bias'] = (edited('upscore8', lambda l: l.blobs.append(np.zeros(classes, np.float32))), 'upscore8')

    def widen_input(l):
        o, i, kh, kw = l.blobs[0].shape
        l.blobs[0] = np.zeros((o, i + 1, kh, kw), np.float32)
    variants['wrong-shape'] = (edited('score_pool4', widen_input), 'score_pool4')

    def poison(l):
        l.blobs[0].flat[5] = np.nan
    variants['nan'] = (edited('fc7', poison), 'fc7')

    def drop_bias(l):
        del l.blobs[1]
    variants['missing-bias'] = (edited('fc6', drop_bias), 'fc6')

    extra = Layer('mystery', 'Convolution', ['pool5'], ['mystery'], [np.ones((2, 2, 1, 1), np.float32), np.zeros(2, np.float32)], num_output=2, kernel_size=1)
    variants['unknown-layer'] = (layers + [extra], 'mystery')
    return variants


def bad_atonce_variants(layers):
    def uneven(l):
        l.blobs[0] = l.blobs[0].copy()
        l.blobs[0][1] = 0.02
    out = []
    for layer in layers:
        if layer.name == 'scale_pool4':
            layer = Layer(layer.name, layer.type, layer.bottom, layer.top, [b.copy() for b in layer.blobs], **layer.params)
            uneven(layer)
        out.append(layer)
    return {'uneven-scale': (out, 'scale_pool4')}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--caffe-proto', required=True, help="Caffe's caffe.proto (compiled with protoc, read where it is)")
    ap.add_argument('--out', required=True, help='output directory')
    ap.add_argument('--width', type=float, default=0.0625, help='VGG16 channel multiplier (0.0625: convs 4..32, fc 256)')
    ap.add_argument('--classes', type=int, default=21)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--nets', default=','.join(NETS), help=f'comma-separated, of {", ".join(NETS)}')
    ap.add_argument('--bad', action='store_true', help='also write defective files and a double_data fcn32')
    args = ap.parse_args()
    nets = [n for n in args.nets.split(',') if n]
    for n in nets:
        if n not in NETS:
            die(f'unknown net {n!r} (expected {", ".join(NETS)})')
    os.makedirs(args.out, exist_ok=True)

    workdir = tempfile.mkdtemp(prefix='caffe-pb2-')
    try:
        pb = compile_caffe_schema(args.caffe_proto, workdir)
        manifest = {'fixtures': [], 'bad': []}
        for k, net in enumerate(nets):
            rng = np.random.default_rng(args.seed * 100 + k)
            layers, keras = build_net(net, args.width, args.classes, rng)
            entry = {'net': net, 'metadata': metadata_of(net, args.width, args.classes), 'caffemodels': {}}
            forms = ['V2'] if net == 'fcn8-atonce' else ['V2', 'V1']
            for form in forms:
                path = os.path.join(args.out, f'{net}.{form.lower()}.caffemodel')
                write_bytes(path, net_message(pb, net, layers, form).SerializeToString())
                entry['caffemodels'][form] = path
            st = os.path.join(args.out, f'{net}.safetensors')
            write_safetensors(st, keras, {'format': 'fcn-keras-layout', **entry['metadata']})
            entry['safetensors'] = st
            manifest['fixtures'].append(entry)

            if args.bad and net == 'fcn8':
                for name, (bad_layers, layer) in bad_variants(layers, args.classes).items():
                    path = os.path.join(args.out, f'bad-{name}.caffemodel')
                    write_bytes(path, net_message(pb, name, bad_layers, 'V2').SerializeToString())
                    manifest['bad'].append({'defect': name, 'path': path, 'layer': layer})
            if args.bad and net == 'fcn8-atonce':
                for name, (bad_layers, layer) in bad_atonce_variants(layers).items():
                    path = os.path.join(args.out, f'bad-{name}.caffemodel')
                    write_bytes(path, net_message(pb, name, bad_layers, 'V2').SerializeToString())
                    manifest['bad'].append({'defect': name, 'path': path, 'layer': layer})
            if args.bad and net == 'fcn32':
                path = os.path.join(args.out, 'fcn32.double.caffemodel')
                write_bytes(path, net_message(pb, net, layers, 'V2', double=True).SerializeToString())
                manifest['double'] = {'path': path, 'safetensors': st}
        json.dump(manifest, sys.stdout, indent=1)
        print()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
