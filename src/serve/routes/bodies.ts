// Request bodies: multipart forms (the page), or the picture's bytes as the whole body (curl
// --data-binary) whatever the Content-Type says: the content decides what it is.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fastifyMultipart from '@fastify/multipart';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HttpError } from '../errors.js';
import { tooLarge, ACCEPTED } from '../uploads.js';

/** Reads what is left of a request and drops it, up to `cap` bytes and 30 s (past either, the request is cut off). */
async function drain(stream: Readable, cap: number): Promise<void> {
  if (stream.readableEnded) return;
  let bytes = 0;
  const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => done((bytes += chunk.length) > cap ? new Error('over the cap') : null) });
  await pipeline(stream, sink, { signal: AbortSignal.timeout(30_000) }).catch(() => {});
}

export type UploadReader = (request: FastifyRequest) => Promise<Buffer>;

/** Installs the body parsers; returns the function that gives a request's picture bytes. */
export async function installBodies(app: FastifyInstance, maxBytes: number): Promise<UploadReader> {
  app.removeAllContentTypeParsers();
  // An upload over the limit is read to its end (up to a bound) before the 413 goes out:
  // a server that answers and closes while the client is still sending leaves most clients
  // (fetch, browsers) with a reset connection instead of the message.
  const drainCap = Math.max(64 * 2 ** 20, 4 * maxBytes);
  app.addContentTypeParser('*', (request, payload, done) => {
    const declared = Number(request.headers['content-length']);
    if (declared > drainCap) return done(tooLarge(declared, maxBytes), undefined);
    const chunks: Buffer[] = [];
    let bytes = 0;
    payload.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes <= maxBytes) chunks.push(chunk);
      else if (bytes > drainCap) payload.destroy(tooLarge(bytes, maxBytes));
    });
    payload.on('error', (e) => done(e instanceof HttpError ? e : new HttpError(400, `the upload was cut short (${e.message})`), undefined));
    payload.on('end', () => (bytes > maxBytes ? done(tooLarge(bytes, maxBytes), undefined) : done(null, Buffer.concat(chunks))));
  });
  await app.register(fastifyMultipart, { limits: { fileSize: maxBytes, files: 1, fields: 8, parts: 9, fieldSize: 1024, headerPairs: 100 } });

  return async (request) => {
    if (request.isMultipart()) {
      const part = await request.file();
      if (!part) throw new HttpError(400, `the form has no file: send the picture in a file field (e.g. image=@photo.jpg)`);
      try {
        return await part.toBuffer();
      } catch (e) {
        if ((e as { code?: string }).code !== 'FST_REQ_FILE_TOO_LARGE') throw e;
        await drain(request.raw, drainCap);
        throw tooLarge(null, maxBytes);
      }
    }
    const body = request.body;
    if (!Buffer.isBuffer(body) || body.length === 0) throw new HttpError(400, `no picture in the request: send a ${ACCEPTED} image as the body or as a multipart form file`);
    return body;
  };
}
