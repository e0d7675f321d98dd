// Used by binding.gyp: prints the oneDNN include directory, or stops the build with one
// line that says how to install oneDNN.
const fs = require('node:fs');
const path = require('node:path');
const prefixes = [process.env.ONEDNN_ROOT, '/usr', '/usr/local', '/opt/homebrew', '/opt/homebrew/opt/onednn', '/usr/local/opt/onednn'].filter(Boolean);
const what = process.argv[2] || 'include';
for (const p of prefixes) {
  if (fs.existsSync(path.join(p, 'include', 'oneapi', 'dnnl', 'dnnl.hpp'))) {
    console.log(path.join(p, what === 'lib' ? 'lib' : 'include'));
    process.exit(0);
  }
}
console.error('fcn: oneDNN not found. Install it: `sudo apt-get install libdnnl-dev` (Debian/Ubuntu) or `brew install onednn` (macOS), or set ONEDNN_ROOT.');
process.exit(1);
