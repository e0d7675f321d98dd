#!/usr/bin/env python3
"""Writes MATLAB level-5 .mat fixtures with scipy for the MAT reader's tests.

Usage: make_mat_fixtures.py OUT_DIR

Writes, in OUT_DIR, each fixture both uncompressed (<name>.mat) and compressed
(<name>_z.mat), plus expected.json describing what each file holds (arrays row-major, as lists),
so the test compares the reader against numpy's own view of the data.
"""
import json
import os
import sys

import numpy as np
import scipy.io
from scipy import sparse


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] in ('-h', '--help') or sys.argv[1].startswith('-'):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) == 2 and sys.argv[1] in ('-h', '--help') else 2)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)

    h, w = 37, 53
    seg = np.zeros((h, w), dtype=np.uint8)
    seg[5:20, 10:30] = 15
    seg[22:35, 31:50] = 13
    seg[0, :] = 1
    seg[:, -1] = 20
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        m = np.zeros((h, w), dtype=bool)
        if k in (12, 14):
            m[rng.integers(0, h, 9), rng.integers(0, w, 9)] = True
        boundaries[k, 0] = sparse.csc_matrix(m)
    categories = np.array([[1], [13], [15], [20]], dtype=np.uint8)
    gtcls = {'Segmentation': seg, 'Boundaries': boundaries, 'CategoriesPresent': categories}

    mixed = {
        'd': np.arange(12, dtype=np.float64).reshape(3, 4) / 4.0,
        'small_ints_as_double': np.array([[1.0, 2.0, 3.0]]),
        'i16': (rng.integers(-3000, 3000, size=(4, 5))).astype(np.int16),
        'u16': (rng.integers(0, 60000, size=(2, 3))).astype(np.uint16),
        'i32': np.array([[-7, 7]], dtype=np.int32),
        'f32': rng.standard_normal((3, 2)).astype(np.float32),
        'cube': np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        'flag': np.array([[True, False, True]]),
        'z': np.array([[1 + 2j, 3 - 4j]]),
        'text': 'hello GTcls',
        'cells': np.array([[np.array([[1.0, 2.0]]), 'abc', np.zeros((0, 0))]], dtype=object),
        'nested': {'inner': {'value': np.array([[42]], dtype=np.uint8)}, 'name': 'n'},
    }

    expected = {
        'gtcls': {'height': h, 'width': w, 'segmentation': seg.tolist(), 'categories': categories.ravel().tolist(),
                  'boundary_nnz': [int(boundaries[k, 0].nnz) for k in range(20)]},
        'mixed': {
            'd': mixed['d'].tolist(), 'small_ints_as_double': mixed['small_ints_as_double'].tolist(),
            'i16': mixed['i16'].tolist(), 'u16': mixed['u16'].tolist(), 'i32': mixed['i32'].tolist(),
            'f32': mixed['f32'].astype(np.float64).tolist(),
            'cube_dims': list(mixed['cube'].shape),
            # MATLAB stores column-major: the flat data is the Fortran-order ravel.
            'cube_colmajor': mixed['cube'].ravel(order='F').tolist(),
            'flag': [int(v) for v in mixed['flag'].ravel()],
            'z_real': [1.0, 3.0], 'z_imag': [2.0, -4.0],
            'text': mixed['text'],
        },
    }
    for compress in (False, True):
        suffix = '_z' if compress else ''
        scipy.io.savemat(os.path.join(out, f'gtcls{suffix}.mat'), {'GTcls': gtcls}, do_compression=compress)
        scipy.io.savemat(os.path.join(out, f'mixed{suffix}.mat'), mixed, do_compression=compress)
    # A struct without the Segmentation field, and a level-4 file.
    scipy.io.savemat(os.path.join(out, 'nofield.mat'), {'GTcls': {'Other': np.zeros((2, 2), dtype=np.uint8)}})
    scipy.io.savemat(os.path.join(out, 'v4.mat'), {'x': np.zeros((2, 2))}, format='4')
    with open(os.path.join(out, 'expected.json'), 'w') as f:
        json.dump(expected, f)


if __name__ == '__main__':
    main()
