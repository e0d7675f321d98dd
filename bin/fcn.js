#!/usr/bin/env node
// The `fcn` command: runs the compiled CLI (npm run setup builds it).
import { main } from '../dist/cli/main.js';
main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
