import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatDuration } from '../../src/io/download.js';
import { progress, type ProgressStream } from '../../src/report/progress.js';

function fakeStream(isTTY: boolean, columns?: number): ProgressStream & { output: string } {
  return { isTTY, columns, output: '', write(chunk: string) { this.output += chunk; return true; } };
}

function fakeClock(): { now: () => number; advance: (s: number) => void } {
  let t = 1000;
  return { now: () => t, advance: (s) => { t += s; } };
}

test('not a terminal: plain lines at most every interval, then a final line', () => {
  const stream = fakeStream(false);
  const clock = fakeClock();
  const p = progress({ label: 'train', total: 35, stream, intervalSeconds: 10, now: clock.now, unit: 'img' });
  for (let i = 0; i < 35; i++) {
    clock.advance(1);
    p.tick(1, { loss: 1 / (i + 1) });
  }
  p.done();
  const lines = stream.output.split('\n');
  assert.equal(lines.pop(), '', 'output ends with a newline');
  assert.ok(!stream.output.includes('\r') && !stream.output.includes('\x1b'), 'no terminal control codes');
  // One line each at t = 10, 20, 30 s, then the final one.
  assert.equal(lines.length, 4, stream.output);
  assert.match(lines[0], /^train {2}10\/35 {2}29% {2}1\.00 img\/s {2}ETA 0:25 {2}loss 0\.1000$/);
  assert.match(lines[1], /20\/35/);
  assert.match(lines[2], /30\/35 .*ETA 0:05/);
  assert.match(lines[3], /35\/35 {2}100% .*in 0:35 .*loss 0\.02857/);
  assert.ok(!lines[3].includes('ETA'));
  assert.equal(p.count, 35);
});

test('not a terminal: fast ticks produce no line before the interval has passed', () => {
  const stream = fakeStream(false);
  const clock = fakeClock();
  const p = progress({ label: 'eval', total: 1000, stream, intervalSeconds: 5, now: clock.now });
  for (let i = 0; i < 999; i++) { clock.advance(0.004); p.tick(); }
  assert.equal(stream.output, '');
  clock.advance(1.1);
  p.tick();
  assert.equal(stream.output.split('\n').length - 1, 1);
  p.done();
  p.done(); // a second done prints nothing more
  assert.equal(stream.output.split('\n').length - 1, 2);
});

test('terminal: one line redrawn in place with a bar, throttled, truncated to the width', () => {
  const stream = fakeStream(true, 60);
  const clock = fakeClock();
  const p = progress({ label: 'epoch 3', total: 200, stream, now: clock.now });
  for (let i = 0; i < 200; i++) { clock.advance(0.01); p.tick(1, { loss: 0.5 }); }
  const redraws = stream.output.split('\r').length - 1;
  assert.ok(redraws >= 15 && redraws <= 25, `${redraws} redraws over 2 s`);
  assert.ok(!stream.output.includes('\n'), 'no newline before done');
  p.done();
  assert.ok(stream.output.endsWith('\n'));
  const frames = stream.output.split('\r').slice(1).map((f) => f.replace(/\x1b\[K\n?$/, ''));
  assert.ok(frames.every((f) => f.length <= 59), 'fits the terminal width');
  assert.match(frames[frames.length - 1], /^epoch 3 {2}\[#{24}\] {2}200\/200/);
  assert.match(frames[0], /\[#?-+\]/);
});

test('without a total: count and rate, no bar or ETA', () => {
  const stream = fakeStream(false);
  const clock = fakeClock();
  const p = progress({ label: 'segment', stream, intervalSeconds: 1, now: clock.now });
  clock.advance(2);
  p.tick(8);
  assert.equal(stream.output, 'segment  8  4.00 it/s\n');
});

test('formatDuration', () => {
  assert.equal(formatDuration(5), '0:05');
  assert.equal(formatDuration(125), '2:05');
  assert.equal(formatDuration(3 * 3600 + 7 * 60 + 9), '3:07:09');
  assert.equal(formatDuration(Infinity), '?');
});
