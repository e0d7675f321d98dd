// Used by binding.gyp: finds the system's MPI (Open MPI's or MPICH's compiler wrapper, else
// pkg-config) so that the optional fcn_mpi addon is built where MPI is installed and left out
// where it is not. Never fails the build: without MPI, `found` prints 0.
//   node scripts/find-mpi.cjs found     1 or 0
//   node scripts/find-mpi.cjs include   include directories, space-separated
//   node scripts/find-mpi.cjs libs      linker flags (-L… -l…)
//   node scripts/find-mpi.cjs ldflags   -Wl,-rpath for each library directory (found at run time)
// FCN_NO_MPI=1 builds without it even where it is installed.
const { spawnSync } = require('node:child_process');

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 && !r.error ? r.stdout.trim() : null;
}

function find() {
  if (process.env.FCN_NO_MPI === '1') return null;
  // Open MPI's wrapper answers --showme:compile/link; MPICH's answers -compile-info/-link-info.
  const compile = run('mpicc', ['--showme:compile']), link = run('mpicc', ['--showme:link']);
  if (compile !== null && link !== null) return { compile, link };
  const pc = (pkg) => {
    const c = run('pkg-config', ['--cflags', pkg]), l = run('pkg-config', ['--libs', pkg]);
    return c !== null && l !== null ? { compile: c, link: l } : null;
  };
  return pc('ompi') ?? pc('mpich') ?? pc('mpi');
}

const what = process.argv[2] || 'found';
const flags = find();
const words = (s) => (s ? s.split(/\s+/).filter(Boolean) : []);
switch (what) {
  case 'found':
    console.log(flags ? 1 : 0);
    break;
  case 'include':
    console.log(words(flags?.compile).filter((w) => w.startsWith('-I')).map((w) => w.slice(2)).join(' '));
    break;
  case 'libs':
    console.log(words(flags?.link).filter((w) => w.startsWith('-L') || w.startsWith('-l') || w.startsWith('-Wl,')).join(' '));
    break;
  case 'ldflags':
    console.log(words(flags?.link).filter((w) => w.startsWith('-L')).map((w) => `-Wl,-rpath,${w.slice(2)}`).join(' '));
    break;
  default:
    console.error(`find-mpi: unknown query '${what}' (found, include, libs, ldflags)`);
    process.exit(1);
}
