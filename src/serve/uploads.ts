// Checking an uploaded picture before any work is spent on it, in order of cost: its type from
// its first bytes (the name and the Content-Type header are not trusted), then its dimensions
// from the header alone (sharp's metadata reads no pixel), so a decompression bomb — a small
// file that decodes to billions of pixels — is refused before anything is decoded. Only then
// is it decoded, to RGB exactly as readImageRgb decodes a file, so a label map served here is
// the one `fcn predict` writes for the same file.
import sharp from 'sharp';
import type { RgbImage } from '../io/image.js';
import { HttpError } from './errors.js';

export type ImageType = 'png' | 'jpeg' | 'webp' | 'gif';

export const ACCEPTED = 'PNG, JPEG, WebP or GIF';

/** The image type announced by the file's signature, or null. */
export function sniffImageType(bytes: Uint8Array): ImageType | null {
  const at = (offset: number, signature: number[]) => signature.every((b, i) => bytes[offset + i] === b);
  if (at(0, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (at(0, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (at(0, [0x52, 0x49, 0x46, 0x46]) && at(8, [0x57, 0x45, 0x42, 0x50])) return 'webp'; // RIFF....WEBP
  if (at(0, [0x47, 0x49, 0x46, 0x38]) && (bytes[4] === 0x37 || bytes[4] === 0x39) && bytes[5] === 0x61) return 'gif'; // GIF87a, GIF89a
  return null;
}

export const megapixels = (pixels: number) => `${(pixels / 1e6).toLocaleString('en-US', { maximumFractionDigits: 1 })} MP`;

/**
 * Checks an upload's type and dimensions (within `maxBytes` of upload and `maxPixels` decoded)
 * and decodes it to RGB. Throws HttpError: 400 (empty or unreadable), 413 (more bytes or
 * pixels than allowed), 415 (not an accepted image type).
 */
export async function decodeUpload(bytes: Buffer, limits: { maxBytes: number; maxPixels: number }): Promise<RgbImage & { type: ImageType }> {
  if (bytes.length === 0) throw new HttpError(400, `the upload is empty: send a ${ACCEPTED} image`);
  if (bytes.length > limits.maxBytes) throw tooLarge(bytes.length, limits.maxBytes);
  const type = sniffImageType(bytes);
  if (!type) throw new HttpError(415, `the upload is not a ${ACCEPTED} image (its content was checked, not its name or Content-Type)`);
  let width: number | undefined, height: number | undefined;
  try {
    // Header only: sharp reads the dimensions without decoding a pixel (its own pixel limit
    // is lifted here so that the answer can say how large the picture claims to be).
    ({ width, height } = await sharp(bytes, { limitInputPixels: false }).metadata());
  } catch (e) {
    throw new HttpError(400, `the ${type.toUpperCase()} image cannot be read (${(e as Error).message})`);
  }
  if (!width || !height) throw new HttpError(400, `the ${type.toUpperCase()} image has no dimensions in its header`);
  if (width * height > limits.maxPixels) {
    throw new HttpError(413, `the image is ${width}×${height} (${megapixels(width * height)}), more than the limit of ${megapixels(limits.maxPixels)} (--max-pixels): it was refused before decoding`);
  }
  try {
    // The same pipeline as readImageRgb; limitInputPixels guards the decoder as well.
    const { data, info } = await sharp(bytes, { limitInputPixels: limits.maxPixels })
      .rotate().removeAlpha().toColourspace('srgb').raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`expected 3 channels, got ${info.channels}`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, type };
  } catch (e) {
    throw new HttpError(400, `the ${type.toUpperCase()} image cannot be decoded (${(e as Error).message})`);
  }
}

export function tooLarge(bytes: number | null, maxBytes: number): HttpError {
  const mb = (n: number) => `${(n / 2 ** 20).toLocaleString('en-US', { maximumFractionDigits: 2 })} MB`;
  return new HttpError(413, `the upload${bytes !== null ? ` (${mb(bytes)})` : ''} is larger than the limit of ${mb(maxBytes)} (--max-upload-mb)`);
}
