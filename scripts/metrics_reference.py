#!/usr/bin/env python3
"""Reference for the segmentation metrics: a direct NumPy transcription of the definitions of
Long, Shelhamer & Darrell (the FCN paper and its Caffe `score.py`), used by the test suite to
check src/report/confusion.ts.

Reads JSON from the file named on the command line (or stdin): either one confusion matrix
{"hist": [[...], ...]} (rows = truth, columns = prediction) or a list of them. Prints the
metrics as JSON (one object, or a list), with NaN written as null because JSON has no NaN.
"""
import json
import sys
import warnings

import numpy as np


def metrics(hist):
    hist = np.asarray(hist, dtype=np.float64)
    with np.errstate(divide='ignore', invalid='ignore'), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # nanmean of an all-NaN array
        acc = np.diag(hist).sum() / hist.sum()
        acc_cls = np.diag(hist) / hist.sum(1)
        mean_acc = np.nanmean(acc_cls)
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        mean_iu = np.nanmean(iu)
        freq = hist.sum(1) / hist.sum()
        fwavacc = (freq[freq > 0] * iu[freq > 0]).sum()
    if hist.sum() == 0:
        fwavacc = float('nan')  # an empty sum over no pixels: undefined, like the others
    return {
        'pixelAccuracy': acc,
        'meanAccuracy': mean_acc,
        'meanIoU': mean_iu,
        'frequencyWeightedIoU': fwavacc,
        'perClassIoU': iu.tolist(),
        'perClassAccuracy': acc_cls.tolist(),
        'pixels': hist.sum(),
    }


def to_json_value(value):
    if isinstance(value, list):
        return [to_json_value(v) for v in value]
    value = float(value)
    return None if np.isnan(value) else value


def main():
    source = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
    data = json.load(source)
    many = isinstance(data, list)
    results = [metrics(d['hist']) for d in (data if many else [data])]
    results = [{k: to_json_value(v) for k, v in r.items()} for r in results]
    json.dump(results if many else results[0], sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
