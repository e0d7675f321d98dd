// The standard train/val splits.
//
// seed:  train = SBD train (8,498) + the last 1,657 of SBD val (2,857), as .mat labels, sorted by id,
//        followed by the VOC 2012 segmentation trainval images that SBD does not contain (676),
//        with their palette PNG labels; val = the first 1,200 of SBD val (.mat labels).
//        10,831 / 1,200 images.
// paper: train = SBD train (8,498, .mat labels); val = seg11valid (736 VOC 2011 val images that are
//        not in SBD train, VOC PNG labels). The list cannot be derived from a VOC 2012 download (it
//        needs VOC 2011's val list), so pass it in: it is `data/pascal/seg11valid.txt` in the FCN
//        authors' repository (github.com/shelhamer/fcn.berkeleyvision.org).
import { join } from 'node:path';
import {
  concatDatasets, readIdList, resolveSbdRoot, resolveVocRoot, sbdEntries, vocEntries,
  type Dataset, type SampleEntry,
} from './datasets.js';
import { vocClassSet } from './classes.js';

export interface KerasSplitIds {
  /** SBD ids used for training (.mat labels), sorted. */
  trainMat: string[];
  /** VOC-only ids used for training (.png labels), in VOC's list order. */
  trainPng: string[];
  /** SBD ids used for validation (.mat labels), in SBD val's order. */
  valMat: string[];
}

/** Number of SBD val images that Keras-FCN validates on (the rest go to training). */
export const SEED_VAL_COUNT = 1200;

/** Keras-FCN's split from the three id lists (pure: no files). */
export function kerasSplitIds(vocTrainval: string[], sbdTrain: string[], sbdVal: string[]): KerasSplitIds {
  const valMat = sbdVal.slice(0, SEED_VAL_COUNT);
  const trainMat = [...new Set([...sbdTrain, ...sbdVal.slice(SEED_VAL_COUNT)])].sort();
  const inSbd = new Set([...sbdTrain, ...sbdVal]);
  const trainPng = vocTrainval.filter((id) => !inSbd.has(id));
  return { trainMat, trainPng, valMat };
}

export interface SplitDatasets {
  name: string;
  train: Dataset;
  val: Dataset;
}

function ds(name: string, kind: Dataset['kind'], root: string, entries: SampleEntry[]): Dataset {
  return { name, kind, root, classes: vocClassSet(), entries };
}

/** Keras-FCN's split, built from a VOC 2012 root and an SBD root (only their id lists are read). */
export async function kerasSplit(vocRoot: string, sbdRoot: string): Promise<SplitDatasets & { ids: KerasSplitIds }> {
  const voc = resolveVocRoot(vocRoot);
  const sbd = resolveSbdRoot(sbdRoot);
  const ids = kerasSplitIds(
    await readIdList(join(voc, 'ImageSets', 'Segmentation', 'trainval.txt')),
    await readIdList(join(sbd, 'train.txt')),
    await readIdList(join(sbd, 'val.txt')),
  );
  const train = concatDatasets(
    'seed:train',
    ds('seed:train_mat', 'sbd', sbd, sbdEntries(sbd, ids.trainMat)),
    ds('seed:train_png', 'voc', voc, vocEntries(voc, ids.trainPng)),
  );
  return { name: 'keras', train, val: ds('keras:val', 'sbd', sbd, sbdEntries(sbd, ids.valMat)), ids };
}

/** The paper's split: SBD train for training, seg11valid (VOC images and PNG labels) for validation. */
export async function paperSplit(vocRoot: string, sbdRoot: string, seg11validList: string): Promise<SplitDatasets> {
  const voc = resolveVocRoot(vocRoot);
  const sbd = resolveSbdRoot(sbdRoot);
  const trainIds = await readIdList(join(sbd, 'train.txt'));
  const valIds = await readIdList(seg11validList);
  return {
    name: 'paper',
    train: ds('paper:train', 'sbd', sbd, sbdEntries(sbd, trainIds)),
    val: ds('paper:val', 'voc', voc, vocEntries(voc, valIds)),
  };
}
