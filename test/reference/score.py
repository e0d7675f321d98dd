#!/usr/bin/env python3
"""The FCN paper's scoring (Long, Shelhamer & Darrell, the Caffe release's `score.py`),
transcribed to Python 3 and NumPy, as an independent scorer of label maps for the tests.

    score.py N TRUTH.npy PRED.npy [TRUTH.npy PRED.npy ...]
    score.py --hists < HISTS.json


Each pair is one image: truth and prediction as uint8 arrays of the same shape (H, W). As in
score.py, the confusion matrix adds `fast_hist(truth.flatten(), pred.flatten(), N)` over the
images (truth outside [0, N), such as the void label 255, is left out), and the metrics are
its overall accuracy, per-class and mean accuracy, per-class and mean IU, and fwavacc.
Prints one JSON object; NaN is written as null (JSON has no NaN). With --hists it reads a JSON
list of confusion matrices (rows = truth, columns = prediction) and prints the metrics of each.
"""
import json
import sys
import warnings

import numpy as np


def fast_hist(a, b, n):
    # score.py's fast_hist: rows are the truth `a`, columns the prediction `b`.
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n ** 2).reshape(n, n)


def scores(hist):
    # score.py's seg_tests, with the printed values returned instead.
    with np.errstate(divide='ignore', invalid='ignore'), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # nanmean of all-NaN
        acc = np.diag(hist).sum() / hist.sum()
        acc_cls = np.diag(hist) / hist.sum(1)
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        freq = hist.sum(1) / hist.sum()
        fwavacc = (freq[freq > 0] * iu[freq > 0]).sum()
        if hist.sum() == 0:
            fwavacc = float('nan')  # score.py's empty sum says 0.0; over no pixels it is undefined
        return {
            'overallAccuracy': acc,
            'meanAccuracy': np.nanmean(acc_cls),
            'meanIU': np.nanmean(iu),
            'fwavacc': fwavacc,
            'perClassAccuracy': acc_cls.tolist(),
            'perClassIU': iu.tolist(),
        }


def json_value(v):
    if isinstance(v, list):
        return [json_value(x) for x in v]
    v = float(v)
    return None if np.isnan(v) else v


def score_hists(hists):
    out = []
    for hist in hists:
        hist = np.asarray(hist, dtype=np.float64)
        r = {k: json_value(v) for k, v in scores(hist).items()}
        r['pixels'] = float(hist.sum())
        out.append(r)
    return out


def main(argv):
    if argv == ['--hists']:
        json.dump(score_hists(json.load(sys.stdin)), sys.stdout)
        sys.stdout.write('\n')
        return
    if len(argv) < 3 or len(argv) % 2 != 1:
        sys.exit('usage: score.py N TRUTH.npy PRED.npy [TRUTH.npy PRED.npy ...]')
    n = int(argv[0])
    hist = np.zeros((n, n), dtype=np.int64)
    for truth_file, pred_file in zip(argv[1::2], argv[2::2]):
        truth, pred = np.load(truth_file), np.load(pred_file)
        if truth.shape != pred.shape:
            sys.exit(f'{pred_file}: shape {pred.shape}, but the truth {truth_file} is {truth.shape}')
        hist += fast_hist(truth.flatten(), pred.flatten(), n)
    out = {k: json_value(v) for k, v in scores(hist.astype(np.float64)).items()}
    out['hist'] = hist.tolist()
    out['images'] = (len(argv) - 1) // 2
    json.dump(out, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main(sys.argv[1:])
