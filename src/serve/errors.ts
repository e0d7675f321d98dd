// Errors the server answers with a status and a message meant for the person who sent the
// request: every 4xx says what was wrong and what is accepted.
import { FcnError } from '../errors.js';

export class HttpError extends FcnError {
  constructor(
    readonly statusCode: number,
    message: string,
    /** Extra response headers (Retry-After for a full queue). */
    readonly headers: Record<string, string> = {},
  ) {
    super('HTTP', message);
  }
}

/** The JSON body of every error answer. */
export const errorBody = (statusCode: number, message: string) => ({ error: message, statusCode });
