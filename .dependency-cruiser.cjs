// The import rules of src/, checked by `npm run lint:deps` and test/architecture/deps.test.ts.
//
// src/ is built in floors; a module may import from its own floor or a lower one, never a
// higher one, and never round in a circle. Lowest first:
const FLOORS = [
  ['errors'], // src/errors.ts: the error base every floor throws
  ['engine', 'io'], // the native engine; file formats and the file system
  ['data'], // datasets, labels, preprocessing
  ['report'], // metrics, logs, plots, pictures, pages
  ['nn'], // layers and parameters
  ['models'], // the FCN, its weights and their files
  ['infer', 'export', 'quant'], // using a model: segmenting, ONNX export, int8 calibration
  ['eval'], // scoring a model on a dataset
  ['train'], // training
  ['serve'], // the web server
  ['cli'], // the commands
];

// A folder of src/, or src/<name>.ts for a module that is a floor of its own.
const area = (name) => `^src/(${name}/|${name}\\.ts$)`;
const anyOf = (names) => `^src/(${names.map((n) => `${n}/|${n}\\.ts$`).join('|')})`;

// One rule per floor: nothing in it reaches a floor above.
const floorRules = FLOORS.slice(0, -1).map((floor, i) => ({
  name: `floor-${floor.join('-')}`,
  comment: `${floor.join(', ')} may import only from its own floor or below, not from ${FLOORS.slice(i + 1).flat().join(', ')}`,
  severity: 'error',
  from: { path: anyOf(floor) },
  to: { path: anyOf(FLOORS.slice(i + 1).flat()) },
}));

// infer, export and quant share a floor but are three separate uses of a model: none of
// them builds on another, so each can change (or go) without touching the others.
const SIBLINGS = ['infer', 'export', 'quant'];
const siblingRules = SIBLINGS.map((name) => ({
  name: `no-sibling-${name}`,
  comment: `${name} builds on models and below, not on ${SIBLINGS.filter((n) => n !== name).join(' or ')}`,
  severity: 'error',
  from: { path: area(name) },
  to: { path: anyOf(SIBLINGS.filter((n) => n !== name)) },
}));

module.exports = {
  forbidden: [
    ...floorRules,
    ...siblingRules,
    {
      name: 'no-circular',
      comment: 'modules that import each other (directly or round a longer circle) cannot be understood, tested or moved one at a time',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'in-a-floor',
      comment: 'every module of src belongs to a floor (a new folder is added to FLOORS above, in its place)',
      severity: 'error',
      from: { path: '^src/', pathNot: `${anyOf(FLOORS.flat())}|^src/index\\.ts$` },
      to: {},
    },
    {
      name: 'no-import-of-index',
      comment: 'src/index.ts is the package\'s public face, above every floor: modules import what they use from where it lives',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^src/index\\.ts$' },
    },
    {
      name: 'no-test-code-in-src',
      comment: 'the package must not depend on its tests, fixtures or benchmarks',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'no-orphans',
      comment: 'a module nothing imports and that imports nothing is dead code',
      severity: 'error',
      from: { path: '^src/', orphan: true },
      to: {},
    },
    {
      name: 'not-to-unresolvable',
      comment: 'an import that resolves to no file or package',
      severity: 'error',
      from: { path: '^src/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // Type-only imports count: a type from a higher floor ties the two floors together as much as a value does.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.build.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
