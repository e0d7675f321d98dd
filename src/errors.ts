// The base of the errors fcn throws on purpose. Each carries a `code` that tells its kind
// without parsing the text, and its message has one form,
//
//   <command or op>: <file or argument>: <problem>
//
// with the parts that do not apply left out (a parser that knows only the file says
// "<file>: <problem>"; the command that called it adds its own name in front). As with
// Node's own errors, `name` stays 'Error' and the code is what programs match on, so a
// printed error reads the same whatever its class.

/** Where a problem arose: the command or operation, and the file or argument concerned. */
export interface ErrorContext {
  /** The command or operation: 'fcn train', 'convForward'. */
  op?: string;
  /** The file or argument the problem is in: a path, "--epochs '0'", a tensor's name. */
  subject?: string;
}

/** The message of one error: the parts that are given, joined by ': '. */
export function formatError(problem: string, context: ErrorContext = {}): string {
  return [context.op, context.subject, problem].filter((part) => part !== undefined && part !== '').join(': ');
}

export class FcnError extends Error {
  /** The kind of error, upper case ('USAGE', 'BAD_MAT_FILE'): stable, unlike the wording. */
  readonly code: string;
  readonly op: string | undefined;
  readonly subject: string | undefined;
  /** The message without its op and subject. */
  readonly problem: string;

  constructor(code: string, problem: string, context: ErrorContext = {}, options?: ErrorOptions) {
    super(formatError(problem, context), options);
    this.code = code;
    this.op = context.op;
    this.subject = context.subject;
    this.problem = problem;
  }
}

/** A class of FcnError with one code, for a module's own kind of error (caught by class, matched by code). */
export function fcnErrorClass(code: string) {
  return class extends FcnError {
    constructor(problem: string, context?: ErrorContext) {
      super(code, problem, context);
    }
  };
}

/** The code of an FcnError anywhere in `e`'s chain of causes, if there is one. */
export function errorCode(e: unknown): string | undefined {
  for (let cur = e, depth = 0; cur instanceof Error && depth < 8; cur = cur.cause, depth++) {
    if (cur instanceof FcnError) return cur.code;
  }
  return undefined;
}
