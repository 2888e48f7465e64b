// fal's 64-bit seeds kept exact for every number shape JSON allows, wherever JSON crosses a wire: the
// scanner that quotes integer "seed" values (exactJson.ts) must skip string contents however they are
// escaped, leave every non-integer number alone, and always hand JSON.parse valid JSON; the writer
// must write BigInts with every digit. Pure functions, so this file is fast (the mutation runs use
// it); exact-json-wires.test.ts takes the same seeds through the receiver and the fal client.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseJsonExactSeeds, quoteSeeds, stringifyJson } from '../src/core/exactJson.ts';
import { seededRandom } from '../src/emulator/faults.ts';

const BIG = '17454220438242315174'; // fal's own example; JSON.parse rounds it to ...314000
const MAX_U64 = '18446744073709551615';

describe('quoteSeeds / parseJsonExactSeeds: every number shape', () => {
  // [the seed's JSON text, what parsing must give]: integers as their exact digits, anything else as JSON.parse reads it.
  const shapes: [string, unknown][] = [
    [BIG, BIG],
    [MAX_U64, MAX_U64],
    ['0', '0'],
    ['7', '7'],
    ['-1', '-1'],
    ['-9223372036854775808', '-9223372036854775808'],
    ['-0', '-0'],
    ['123456789012345678901234567890', '123456789012345678901234567890'],
    ['9'.repeat(60), '9'.repeat(60)],
    [`${'1'.repeat(45)}.5`, Number(`${'1'.repeat(45)}.5`)],
    [`-${'2'.repeat(39)}e2`, Number(`-${'2'.repeat(39)}e2`)],
    ['1.5', 1.5],
    ['-1.5', -1.5],
    ['12.25', 12.25],
    ['1.0', 1],
    ['0.5', 0.5],
    ['1e5', 1e5],
    ['1E5', 1e5],
    ['1e+5', 1e5],
    ['12E-3', 12e-3],
    ['-2e10', -2e10],
    ['17454220438242315174.0', Number('17454220438242315174.0')],
    ['1.5e3', 1500],
  ];
  // Texts around the seed that a scanner can get wrong: escaped quotes and backslashes, a string that
  // mentions a seed, braces and colons inside strings.
  const prompts = ['6\\" tall', 'C:\\\\', 'a \\\\\\" b', '{\\"seed\\": 1}', '\\"seed\\": 2, [', 'x:y}', '\\u0022seed\\u0022:3'];

  for (const [seedText, expected] of shapes) {
    test(`seed ${seedText}`, () => {
      for (const prompt of prompts) {
        const text = `{"prompt":"${prompt}","seed":${seedText},"after":{"seed" : ${seedText} },"n":[1.5,${BIG}]}`;
        const quoted = quoteSeeds(text);
        let parsed: unknown;
        assert.doesNotThrow(() => (parsed = JSON.parse(quoted)), `valid JSON for prompt ${prompt}: ${quoted}`);
        const plain = JSON.parse(text) as Record<string, unknown>;
        assert.deepEqual(parsed, { ...plain, seed: expected, after: { seed: expected } }, `prompt ${prompt}`);
        assert.deepEqual(parseJsonExactSeeds(text), parsed);
      }
    });
  }

  test('only values of a "seed" key, at any depth; keys and strings that look like one are left alone', () => {
    const cases: [string, unknown][] = [
      [`{"a":{"b":[{"seed":${BIG}}]}}`, { a: { b: [{ seed: BIG }] } }],
      [`[{"seed":${BIG}},{"seed":-5}]`, [{ seed: BIG }, { seed: '-5' }]],
      [`{"seeds":${BIG}}`, { seeds: Number(BIG) }],
      [`{"my_seed":${BIG}}`, { my_seed: Number(BIG) }],
      [`{"x":"seed","y":${BIG}}`, { x: 'seed', y: Number(BIG) }],
      [`["seed",${BIG}]`, ['seed', Number(BIG)]],
      [`{"seed":"${BIG}"}`, { seed: BIG }],
      [`{"seed":null,"k":1}`, { seed: null, k: 1 }],
      [`{"seed":[${BIG}]}`, { seed: [Number(BIG)] }],
      [`{"seed":{"v":${BIG}}}`, { seed: { v: Number(BIG) } }],
      [`{"seed":true}`, { seed: true }],
      [`{ "seed"\n:\t${BIG}\r\n}`, { seed: BIG }],
      [`{"p":"say \\"seed\\": ${BIG}"}`, { p: `say "seed": ${BIG}` }],
      [`{"seed":${BIG},"seed2":${BIG}}`, { seed: BIG, seed2: Number(BIG) }],
      [`{"a":"\\\\","seed":${BIG}}`, { a: '\\', seed: BIG }],
      [`{"seed":1}`, { seed: '1' }],
      [`{"seed":\r${BIG}}`, { seed: BIG }],
      [`{"seed":\n-${BIG}}`, { seed: `-${BIG}` }],
      [`{"seed": [1], "n": 2, "seed2": {"seed": 3}}`, { seed: [1], n: 2, seed2: { seed: '3' } }],
      ['{}', {}],
      ['', undefined],
    ];
    for (const [text, expected] of cases) {
      if (expected === undefined) {
        assert.equal(quoteSeeds(text), text);
        continue;
      }
      assert.deepEqual(parseJsonExactSeeds(text), expected, text);
    }
    // A text without the word is returned as it is (no work on the hot path).
    const noSeed = `{"n":${BIG}}`;
    assert.equal(quoteSeeds(noSeed), noSeed);
  });

  test('invalid JSON stays invalid (the caller refuses it); never made valid by quoting', () => {
    for (const text of [`{"seed":${BIG}`, `{"seed":}`, `{"seed":1 2}`, `{"prompt":"open`, `{"seed":0x10}`, `{"seed":1,"prompt":"open`, `{"seed":1,"p":"ends in \\`]) {
      assert.throws(() => parseJsonExactSeeds(text), SyntaxError, text);
    }
  });

  test('random documents: valid JSON out, every integer seed exact, everything else as JSON.parse reads it', () => {
    const random = seededRandom(17);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    const stringParts = ['a', ' ', '\\"', '\\\\', '{', '}', '[', ']', ':', ',', 'seed', '"seed":', '\\u0041', '\\n', '\\/', 'é'];
    const ws = () => pick(['', '', ' ', '\n', '\t ']);
    const integer = () => (random() < 0.3 ? '-' : '') + pick(['0', '7', BIG, MAX_U64, String(Math.floor(random() * 1e6))]);
    const nonInteger = () => pick(['1.5', '-0.25', '1e3', '2E-2', '3.0', '-4e+2', `${BIG}.5`, `${BIG}e0`]);
    // Returns [text, the value exact parsing must give].
    const value = (depth: number): [string, unknown] => {
      const r = random();
      if (depth > 3 || r < 0.3) {
        const kind = pick(['str', 'num', 'lit']);
        if (kind === 'str') {
          const s = `"${Array.from({ length: Math.floor(random() * 6) }, () => pick(stringParts).replace(/^"seed":$/, '\\"seed\\":')).join('')}"`;
          return [s, JSON.parse(s)];
        }
        if (kind === 'num') {
          const n = random() < 0.5 ? integer() : nonInteger();
          return [n, JSON.parse(n)];
        }
        const l = pick(['true', 'false', 'null']);
        return [l, JSON.parse(l)];
      }
      if (r < 0.5) {
        const items = Array.from({ length: Math.floor(random() * 4) }, () => value(depth + 1));
        return [`[${items.map(([t]) => `${ws()}${t}${ws()}`).join(',')}]`, items.map(([, v]) => v)];
      }
      const obj: Record<string, unknown> = {};
      const parts: string[] = [];
      for (let i = Math.floor(random() * 5); i > 0; i--) {
        const key = pick(['seed', 'seed', 'prompt', 'x', 'seeds', 'a\\"b']);
        const name = JSON.parse(`"${key}"`) as string;
        let entry: [string, unknown];
        if (name === 'seed' && random() < 0.8) {
          const n = random() < 0.6 ? integer() : nonInteger();
          entry = [n, /^-?\d+$/.test(n) ? n : Number(n)];
        } else {
          entry = value(depth + 1);
          if (name === 'seed' && /^-?\d+$/.test(entry[0])) entry = [entry[0], entry[0]]; // an integer of any origin
        }
        if (name in obj) continue; // JSON.parse keeps the last of a repeated key: keep the documents simple
        obj[name] = entry[1];
        parts.push(`${ws()}"${key}"${ws()}:${ws()}${entry[0]}${ws()}`);
      }
      return [`{${parts.join(',')}}`, obj];
    };
    let seeds = 0;
    for (let i = 0; i < 2000; i++) {
      const [text, expected] = value(0);
      seeds += (text.match(/"seed"/g) ?? []).length;
      let parsed: unknown;
      assert.doesNotThrow(() => (parsed = parseJsonExactSeeds(text)), text);
      assert.deepEqual(parsed, expected, text);
    }
    assert.ok(seeds > 500, `the documents held ${seeds} seed keys`);
  });
});

describe('stringifyJson', () => {
  test('BigInts are written with every digit, at any depth, negative too; the rest exactly as JSON.stringify', () => {
    const v = { seed: BigInt(MAX_U64), n: [1.5, -2n, { deep: BigInt(BIG) }], s: 'x', u: undefined, nil: null };
    const text = stringifyJson(v);
    assert.equal(text, `{"seed":${MAX_U64},"n":[1.5,-2,{"deep":${BIG}}],"s":"x","nil":null}`);
    assert.deepEqual(parseJsonExactSeeds(text), { seed: MAX_U64, n: [1.5, -2, { deep: Number(BIG) }], s: 'x', nil: null });
    for (const plain of [{ a: 1, b: 'two', c: [true, null] }, 'text', 3, null, []]) assert.equal(stringifyJson(plain), JSON.stringify(plain));
  });

  test('strings that look like the BigInt mark are left as strings', () => {
    const text = stringifyJson({ seed: 5n, a: 'bigint-000000000000000000:123', b: '"bigint-x:1"', id: '42', neg: '-7' });
    assert.deepEqual(JSON.parse(text), { seed: 5, a: 'bigint-000000000000000000:123', b: '"bigint-x:1"', id: '42', neg: '-7' });
    // Without a BigInt nothing is rewritten, whatever the strings hold.
    assert.equal(stringifyJson({ a: 'undefined5', b: '12' }), '{"a":"undefined5","b":"12"}');
    // Each call draws its own mark: a string copied from an earlier output is not turned into a number.
    const first = stringifyJson({ a: 1n, s: '' });
    const again = stringifyJson({ a: 2n, s: first });
    assert.deepEqual(JSON.parse(again), { a: 2, s: first });
  });

  test('round trip: written seeds read back exactly', () => {
    for (const s of [BIG, MAX_U64, '0', '1', '9007199254740993']) {
      const text = stringifyJson({ prompt: 'a 6" tall "seed": 1 \\', seed: BigInt(s) });
      assert.deepEqual(parseJsonExactSeeds(text), { prompt: 'a 6" tall "seed": 1 \\', seed: s });
    }
  });
});
