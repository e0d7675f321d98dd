// Runs the CLI from source, for tests that need it in a process of its own.
import { main } from '../../src/cli/main.js';

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
