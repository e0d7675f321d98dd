// Finds oneDNN for the native build. binding.gyp asks it for the include and library
// directories; the package's install script runs `check` first, so an install on a machine
// without a usable oneDNN stops with one line that says what to install instead of a page of
// compiler errors.
//   node scripts/find-onednn.cjs check     nothing, exit 0 when found; else the one line, exit 1
//   node scripts/find-onednn.cjs include   <prefix>/include
//   node scripts/find-onednn.cjs lib       <prefix>/lib
// ONEDNN_ROOT, when set, is the only prefix looked at: a wrong value is an error, not a
// silent fall-back on whatever oneDNN the system has.
const fs = require('node:fs');
const path = require('node:path');

// The engine is written against oneDNN 2.x (operation descriptors, removed in 3.0).
const MAJOR = 2;
const PREFIXES = ['/usr', '/usr/local', '/opt/homebrew', '/opt/homebrew/opt/onednn', '/usr/local/opt/onednn'];
const INSTALL = 'install oneDNN 2.x: `sudo apt-get install libdnnl-dev` (Debian/Ubuntu), ' +
  'or build oneDNN 2.x and set ONEDNN_ROOT to its prefix (Homebrew\'s `onednn` is 3.x)';

/** The version in <prefix>/include/oneapi/dnnl/dnnl_version.h, or null when unreadable. */
function versionAt(prefix) {
  const file = path.join(prefix, 'include', 'oneapi', 'dnnl', 'dnnl_version.h');
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const part = (name) => new RegExp(`#define\\s+DNNL_VERSION_${name}\\s+(\\d+)`).exec(text)?.[1];
  const [major, minor, patch] = ['MAJOR', 'MINOR', 'PATCH'].map(part);
  return major === undefined ? null : { major: Number(major), text: [major, minor, patch].filter((x) => x !== undefined).join('.') };
}

/** { prefix } for the first usable oneDNN, else { error } (one line). */
function find() {
  const root = process.env.ONEDNN_ROOT;
  const prefixes = root ? [root] : PREFIXES;
  const wrong = [];
  for (const p of prefixes) {
    if (!fs.existsSync(path.join(p, 'include', 'oneapi', 'dnnl', 'dnnl.hpp'))) continue;
    const v = versionAt(p);
    if (v && v.major === MAJOR) return { prefix: p };
    wrong.push(`${v ? v.text : 'an unknown version'} in ${p}`);
  }
  if (wrong.length) return { error: `fcn: needs oneDNN ${MAJOR}.x, found ${wrong.join('; ')}: ${INSTALL}.` };
  return { error: `fcn: oneDNN not found (looked in ${root ? `ONEDNN_ROOT=${root}` : prefixes.join(', ')}): ${INSTALL}.` };
}

const what = process.argv[2] || 'include';
if (!['check', 'include', 'lib'].includes(what)) {
  console.error(`find-onednn: unknown query '${what}' (check, include, lib)`);
  process.exit(1);
}
const r = find();
if (r.error) {
  console.error(r.error);
  process.exit(1);
}
if (what !== 'check') console.log(path.join(r.prefix, what));
