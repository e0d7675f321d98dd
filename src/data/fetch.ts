// The public datasets (Pascal VOC 2012, SBD): where each is published, its checksum, and
// where its root lies once extracted. The download itself is io/download.ts.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { downloadFile, extractArchive, type DownloadOptions } from '../io/download.js';

export interface DataSource {
  name: string;
  description: string;
  url: string;
  md5: string;
  /** Archive size in bytes (approximate; only used when the server does not say). */
  approxBytes: number;
  /** File name of the archive in the download folder. */
  file: string;
  /** Where the dataset root is after extraction, relative to the download folder. */
  root: string;
}

/** Official addresses and checksums. Override with --url/--md5 or FCN_<NAME>_URL / FCN_<NAME>_MD5. */
export const DATA_SOURCES: Record<'voc2012' | 'sbd', DataSource> = {
  voc2012: {
    name: 'voc2012',
    description: 'Pascal VOC 2012 trainval',
    url: 'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar',
    md5: '6cd6e144f989b92b3379bac3b3de84fd',
    approxBytes: 2.0e9,
    file: 'VOCtrainval_11-May-2012.tar',
    root: join('VOCdevkit', 'VOC2012'),
  },
  sbd: {
    name: 'sbd',
    description: 'Berkeley Semantic Boundaries Dataset (SBD)',
    url: 'http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz',
    md5: '82b4d87ceb2ed10f6038a1cba92111cb',
    approxBytes: 1.4e9,
    file: 'benchmark.tgz',
    root: join('benchmark_RELEASE', 'dataset'),
  },
};

export interface FetchOptions extends DownloadOptions {
  /** Download folder (default `data`). */
  dir?: string;
  url?: string;
  /** Skip extraction. */
  noExtract?: boolean;
  env?: NodeJS.ProcessEnv;
}

/** Downloads and extracts a known dataset; returns the dataset root. */
export async function fetchDataset(name: string, o: FetchOptions = {}): Promise<{ root: string; archive: string; md5: string }> {
  const src = DATA_SOURCES[name as keyof typeof DATA_SOURCES];
  if (!src) throw new Error(`unknown dataset "${name}" (known: ${Object.keys(DATA_SOURCES).join(', ')})`);
  const env = o.env ?? process.env;
  const key = `FCN_${name.toUpperCase()}`;
  const url = o.url ?? env[`${key}_URL`] ?? src.url;
  const md5 = o.md5 ?? env[`${key}_MD5`] ?? src.md5;
  const dir = o.dir ?? 'data';
  await mkdir(dir, { recursive: true });
  const archive = join(dir, src.file);
  const { md5: sum } = await downloadFile(url, archive, { ...o, md5, approxBytes: o.approxBytes ?? src.approxBytes });
  const root = join(dir, src.root);
  if (!o.noExtract) {
    await extractArchive(archive, dir);
    if (!existsSync(root)) throw new Error(`${archive}: extracted, but ${root} is not in it`);
  }
  return { root, archive, md5: sum };
}
