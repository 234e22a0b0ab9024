// The event types of src/events.ts against the Go structs they mirror. The Go
// tests write what each struct marshals to, field by field, with a real
// sample (test/fixtures/shapes.json from pkg/event, snapshot-shape.json from
// gateway; regenerate both with `go test ./pkg/event ./gateway -run Shapes
// -update-shapes`). Here each TypeScript type has a descriptor the compiler
// checks against the type itself, and this test compares the descriptors
// with Go's: a field changed on one side only fails tsc or this test.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import type { CompleteEvent, JobSnapshot, ProgressEvent, SSEEvent, StatusEvent } from 'ssegate';

type Kind = 'string' | 'number' | 'boolean' | 'object' | 'any';
interface Field { kind: Kind; nullable: boolean; optional: boolean }
type Fields = Record<string, Field>;

/** The JSON kind of V; never, so no descriptor compiles, for one the fixtures do not know. */
type KindOf<V> = unknown extends V ? 'any'
  : NonNullable<V> extends string ? 'string'
  : NonNullable<V> extends number ? 'number'
  : NonNullable<V> extends boolean ? 'boolean'
  : NonNullable<V> extends readonly unknown[] ? never
  : NonNullable<V> extends object ? 'object'
  : never;

/** The only descriptor of T's member K that compiles. */
interface FieldOf<T, K extends keyof T> {
  kind: KindOf<Required<T>[K]>;
  nullable: null extends Required<T>[K] ? true : false;
  optional: {} extends Pick<T, K> ? true : false;
}

/** A descriptor for exactly T's members. */
type Shape<T> = { [K in keyof T]-?: FieldOf<T, K> };

/** One shape per Go struct: every event (named as in Go) and the snapshot. */
type Shapes = { [E in SSEEvent as `${Capitalize<E['type']>}Event`]: Shape<E> } & { JobSnapshot: Shape<JobSnapshot> };

const str = { kind: 'string', nullable: false, optional: false } as const;
const num = { kind: 'number', nullable: false, optional: false } as const;
const bool = { kind: 'boolean', nullable: false, optional: false } as const;

const shapes = {
  StatusEvent: { type: str, jobId: str, status: str, timestamp: str },
  ProgressEvent: {
    type: str, jobId: str, step: num, totalSteps: num, currentStep: str, percentage: num,
    estimatedRemainingMs: { kind: 'number', nullable: true, optional: false }, timestamp: str,
  },
  ErrorEvent: { type: str, jobId: str, error: str, code: str, retryable: bool, timestamp: str },
  CompleteEvent: {
    type: str, jobId: str, reportId: str, includeReport: bool,
    report: { kind: 'any', nullable: true, optional: true },
    reportTooLarge: { kind: 'boolean', nullable: false, optional: true },
    reportUrl: { kind: 'string', nullable: false, optional: true },
    timestamp: str,
  },
  HeartbeatEvent: { type: str, timestamp: str },
  ResetEvent: { type: str, jobId: str, reason: str, timestamp: str },
  JobSnapshot: {
    jobId: str, status: str,
    progress: { kind: 'object', nullable: true, optional: false },
    reportId: { kind: 'string', nullable: true, optional: false },
    error: { kind: 'object', nullable: true, optional: false },
    updatedAt: str, lastEventId: str,
    report: { kind: 'any', nullable: true, optional: true },
    reportTooLarge: { kind: 'boolean', nullable: false, optional: true },
    reportUrl: { kind: 'string', nullable: false, optional: true },
  },
} satisfies Shapes;

// The descriptors bite: a wrong one does not compile.
// @ts-expect-error reportTooLarge is optional
const wrongOptional: Shape<CompleteEvent>['reportTooLarge'] = bool;
// @ts-expect-error estimatedRemainingMs may be null
const wrongNullable: Shape<ProgressEvent>['estimatedRemainingMs'] = num;

// Narrowing on `type` works, and a status event has no percentage.
function summary(e: SSEEvent): string {
  switch (e.type) {
    case 'status': return e.status;
    case 'progress': return `${e.percentage}%`;
    case 'error': return e.code;
    case 'complete': return e.reportId;
    case 'heartbeat': return e.timestamp;
    case 'reset': return e.reason;
    default: return e satisfies never;
  }
}
function noPercentage(e: StatusEvent): unknown {
  // @ts-expect-error only a progress event has a percentage
  return e.percentage;
}

type GoShapes = Record<string, { fields: Fields; sample: Record<string, unknown> } | undefined>;
const fixture = (file: string) =>
  JSON.parse(readFileSync(new URL(`../../test/fixtures/${file}`, import.meta.url), 'utf8')) as GoShapes;
const go: GoShapes = { ...fixture('shapes.json'), ...fixture('snapshot-shape.json') };
const ts: Record<string, Fields | undefined> = shapes;
const hint = 'src/events.ts and the Go shapes differ: make them agree (regenerate the fixtures with `go test ./pkg/event ./gateway -run Shapes -update-shapes`)';
/** The Go struct of an event type: `progress` → `ProgressEvent`. */
const goName = (type: string) => `${type.charAt(0).toUpperCase()}${type.slice(1)}Event`;
const check = (what: string, problems: string[]) => {
  if (problems.length > 0) assert.fail(`${what}: ${hint}\n  ${problems.join('\n  ')}`);
};

/** How the TypeScript and the Go descriptors of one struct differ. */
function differences(mine: Fields, theirs: Fields): string[] {
  const out: string[] = [];
  for (const k of new Set([...Object.keys(mine), ...Object.keys(theirs)])) {
    const [t, g] = [mine[k], theirs[k]];
    if (!t) out.push(`${k}: in Go, not in TypeScript`);
    else if (!g) out.push(`${k}: in TypeScript, not in Go`);
    else for (const p of ['kind', 'nullable', 'optional'] as const) if (t[p] !== g[p]) out.push(`${k}.${p}: Go ${g[p]}, TypeScript ${t[p]}`);
  }
  return out;
}

/** Why a value Go marshalled is not of the TypeScript type described by shape. */
function misfits(value: Record<string, unknown>, shape: Fields, at: string): string[] {
  const out: string[] = [];
  for (const [k, f] of Object.entries(shape)) if (!f.optional && !(k in value)) out.push(`${at}.${k}: missing`);
  for (const [k, v] of Object.entries(value)) {
    const f = shape[k];
    const kind = Array.isArray(v) ? 'array' : typeof v;
    if (!f) out.push(`${at}.${k}: not in the TypeScript type`);
    else if (v === null ? !f.nullable : f.kind !== 'any' && kind !== f.kind) out.push(`${at}.${k}: ${JSON.stringify(v)} is not a ${f.kind}`);
    else if (kind === 'object' && v !== null && typeof (v as { type?: unknown }).type === 'string') {
      const inner = v as Record<string, unknown> & { type: string };
      const nested = ts[goName(inner.type)];
      if (nested) out.push(...misfits(inner, nested, `${at}.${k}`));
      else out.push(`${at}.${k}: no TypeScript shape ${goName(inner.type)}`);
    }
  }
  return out;
}

test('every Go shape has a TypeScript type, and the other way round', () => {
  assert.deepEqual(Object.keys(go).sort(), Object.keys(ts).sort(), hint);
});

for (const [name, mine] of Object.entries(shapes) as [string, Fields][]) {
  test(`${name}: the Go struct has the same fields, kinds and optionality`, () => {
    const theirs = go[name];
    assert.ok(theirs, `${name}: no Go shape in test/fixtures. ${hint}`);
    check(name, differences(mine, theirs.fields));
  });

  test(`${name}: the Go sample is a ${name}`, () => {
    const sample = go[name]?.sample;
    assert.ok(sample, `${name}: no Go sample in test/fixtures`);
    check(`${name} sample`, misfits(sample, mine, name));
    if (name === 'JobSnapshot') return;
    assert.equal(goName(String(sample.type)), name, `${name}: its sample's type`);
    assert.equal(typeof summary(sample as unknown as SSEEvent), 'string');
  });
}
