// The bundled example pictures: synthetic scenes drawn by the synth module when the server
// starts (nothing is shipped as a file, and no real photo is copied): the demo's models know
// their five shapes, and any model can be tried on them.
import sharp from 'sharp';
import { renderScene } from '../data/synth.js';

export interface Example {
  name: string;
  png: Buffer;
  width: number;
  height: number;
}

/** Scenes of the synthetic set (seed 2024) with three or four shapes each, every class among them. */
const SCENES = [1, 33, 37, 21];
const SEED = 2024;

export async function makeExamples(size = 192): Promise<Example[]> {
  return Promise.all(
    SCENES.map(async (index, i) => {
      const { image } = renderScene(SEED, index, size);
      const png = await sharp(image, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
      return { name: `scene-${i + 1}.png`, png, width: size, height: size };
    }),
  );
}
