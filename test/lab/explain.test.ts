// `uplinkd explain` against what the kernel does: for each flow, the uplink
// explain names must be the one whose address the far end saw; for a random
// draw, every uplink the far end saw must be among explain's candidates, and
// every candidate must be seen (README "uplinkd explain").

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import type { Explanation } from '../../src/plan/explain.js';
import { labConfig, writeLabConfig } from '../../src/lab/lab-config.js';
import { startDaemon, type LabDaemon } from '../../src/lab/lab-daemon.js';
import { labClient, labDown, labExec, labFail, labHeal, labUp, labWhoami, type LabState } from '../../src/lab/lab.js';
import { daemonStatus, mustUplinkd, uniqueLabName, uplinkd, waitFor } from './harness.js';

let lab: LabState;
let daemon: LabDaemon | undefined;
const PINNED_PORT = 8081;

const rules = `  - name: to-twenty
    dst: 192.0.2.20
    via: isp2
  - name: alt-port
    proto: tcp
    dport: ${PINNED_PORT}
    via: isp3
  - name: nobody-on-isp3
    user: nobody
    via: isp3
  - name: v6-by-source
    src: 2001:db8:ff00::103
    via: isp1
`;

before(async () => {
  lab = await labUp({ name: uniqueLabName('ex'), uplinks: 3 });
  await labWhoami(lab.name, 'inet', PINNED_PORT);
});
after(() => labDown(lab.name));
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  await mustUplinkd(lab, 'flush');
});

function configFor(balance: string, extra: { name?: string; uplink?: (name: string, k: number) => string; top?: string; rules?: string } = {}): string {
  return writeLabConfig(lab, `explain-${extra.name ?? balance}.yaml`, labConfig(lab, {
    balance, rules: rules + (extra.rules ?? ''), api: { http: 'off' }, uplink: extra.uplink, top: extra.top,
  }));
}

async function explainFlow(config: string, args: string[]): Promise<Explanation & { source: string }> {
  return JSON.parse(await mustUplinkd(lab, 'explain', '-c', config, '--json', ...args));
}

/** Each uplink's addresses, both families, as the running daemon reports them. */
let addressOwner: Map<string, string>;

async function startAndWait(config: string): Promise<void> {
  daemon = await startDaemon(lab, config);
  assert.ok(await waitFor(async () => (await daemon!.status())?.uplinks.every((u) => u.state === 'up' && (u.families?.ipv6.address ?? null) !== null) ?? false, 10_000),
    'every uplink up, with its IPv6 address');
  const status = (await daemon.status())!;
  addressOwner = new Map(status.uplinks.flatMap((u) => [[u.address!, u.name], [u.families!.ipv6.address!, u.name]]));
}

/** The uplink whose address (either family) the far end saw. */
function uplinkOfSeen(seen: string): string {
  const name = addressOwner.get(seen);
  assert.ok(name, `the far end saw ${seen}, no uplink's address`);
  return name;
}

/** One connection's uplink, as the far end saw it. */
async function seenUplinks(args: string[]): Promise<Record<string, number>> {
  const r = await labClient(lab.name, 'lan', ['http', '--timeout-ms', '1500', '--concurrency', '8', ...args]);
  assert.equal(r.failed, 0, JSON.stringify(r.errors));
  const by: Record<string, number> = {};
  for (const [address, n] of Object.entries(r.seen)) by[uplinkOfSeen(address)] = (by[uplinkOfSeen(address)] ?? 0) + n;
  return by;
}

test('hash: explain names the exact uplink of each source, in both families, as the far end sees it', async () => {
  const config = configFor('hash');
  await startAndWait(config);
  const flows: [string, string][] = [
    ...lab.lanSources.slice(0, 8).map((src) => [src, lab.server] as [string, string]),
    ...lab.lanSources6.slice(0, 3).map((src) => [src, lab.server6] as [string, string]),
  ];
  const predicted = new Set<string>();
  for (const [src, dst] of flows) {
    const e = await explainFlow(config, ['--src', src, '--dst', dst, '--dport', String(lab.whoamiPort)]);
    assert.equal(e.source, 'daemon');
    assert.equal(e.stage, src === '2001:db8:ff00::103' ? 'pin' : 'balance', JSON.stringify(e));
    assert.ok(e.uplink, `hash gives one uplink: ${JSON.stringify(e)}`);
    predicted.add(e.uplink);
    const seen = await seenUplinks(['--dst', dst, '--port', String(lab.whoamiPort), '--sources', src, '--count', '4']);
    assert.deepEqual(seen, { [e.uplink]: 4 }, `${src} -> ${dst}: explain said ${e.uplink} (bucket ${e.bucket}), the far end saw ${JSON.stringify(seen)}`);
  }
  // The flows are not all on one uplink, or this would prove little.
  assert.ok(predicted.size >= 2, `all flows on ${[...predicted]}`);
});

test('pins, the router\'s own connections by user, and the main table: explain matches the far end', async () => {
  const config = configFor('hash');
  await startAndWait(config);
  const src = lab.lanSources[0];
  const byDst = await explainFlow(config, ['--src', src, '--dst', '192.0.2.20', '--dport', String(lab.whoamiPort)]);
  assert.deepEqual([byDst.stage, byDst.rule, byDst.uplink], ['pin', 'to-twenty', 'isp2']);
  assert.deepEqual(await seenUplinks(['--dst', '192.0.2.20', '--port', String(lab.whoamiPort), '--sources', src, '--count', '4']), { isp2: 4 });
  const byPort = await explainFlow(config, ['--src', src, '--dst', lab.server, '--dport', String(PINNED_PORT)]);
  assert.deepEqual([byPort.stage, byPort.rule, byPort.uplink], ['pin', 'alt-port', 'isp3']);
  assert.deepEqual(await seenUplinks(['--dst', lab.server, '--port', String(PINNED_PORT), '--sources', src, '--count', '4']), { isp3: 4 });

  // The router's own connection, made by user nobody, from its LAN address (its unbound source).
  const own = await explainFlow(config, ['--src', lab.lanAddress, '--dst', lab.server, '--dport', String(lab.whoamiPort), '--user', 'nobody']);
  assert.deepEqual([own.path, own.rule, own.uplink], ['own', 'nobody-on-isp3', 'isp3']);
  const asNobody = await labExec(lab.name, 'router', ['setpriv', '--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups',
    'curl', '-s', '-m', '2', `http://${lab.server}:${lab.whoamiPort}/`]);
  assert.equal(asNobody.code, 0, asNobody.stderr);
  assert.equal(uplinkOfSeen(asNobody.stdout.trim()), 'isp3', `curl as nobody was seen as ${asNobody.stdout}`);

  // As root, no rule matches: hash balancing of the router's own connection, by its unbound source.
  const asRoot = await explainFlow(config, ['--src', lab.lanAddress, '--dst', lab.server, '--dport', String(lab.whoamiPort), '--user', 'root']);
  assert.deepEqual([asRoot.path, asRoot.stage, asRoot.buckets], ['own', 'balance', 65536], JSON.stringify(asRoot));
  const rootCurl = await labExec(lab.name, 'router', ['curl', '-s', '-m', '2', `http://${lab.server}:${lab.whoamiPort}/`]);
  assert.equal(rootCurl.code, 0, rootCurl.stderr);
  assert.equal(uplinkOfSeen(rootCurl.stdout.trim()), asRoot.uplink, `explain said ${asRoot.uplink} (bucket ${asRoot.bucket}), curl as root was seen as ${rootCurl.stdout}`);

  // A connected network of the router is reached by the main table, never by balancing.
  const isp3Gateway = lab.uplinks[2].gateway;
  const main = await explainFlow(config, ['--src', src, '--dst', isp3Gateway]);
  assert.equal(main.decision, 'main');
  assert.equal(main.stage, 'local-route');
});

test('weighted: explain offers the uplinks the far end sees, and no longer offers a failed one', async () => {
  const config = configFor('weighted');
  await startAndWait(config);
  const src = lab.lanSources[1];
  const before = await explainFlow(config, ['--src', src, '--dst', lab.server, '--dport', String(lab.whoamiPort)]);
  assert.equal(before.uplink, undefined);
  assert.deepEqual(before.candidates!.map((c) => c.uplink).sort(), ['isp1', 'isp2', 'isp3']);
  const seen = await seenUplinks(['--dst', lab.server, '--port', String(lab.whoamiPort), '--sources', src, '--count', '60']);
  // With three uplinks at 1/3 each, 60 draws miss one with probability 3·(2/3)^60 < 1e-10.
  assert.deepEqual(Object.keys(seen).sort(), ['isp1', 'isp2', 'isp3'], JSON.stringify(seen));

  await labFail(lab.name, 'isp2', 'link');
  try {
    assert.ok(await waitFor(async () => (await daemon!.status())?.uplinks.find((u) => u.name === 'isp2')?.state === 'down', 5000));
    const after = await explainFlow(config, ['--src', src, '--dst', lab.server, '--dport', String(lab.whoamiPort)]);
    assert.deepEqual(after.candidates!.map((c) => c.uplink).sort(), ['isp1', 'isp3'], JSON.stringify(after));
    assert.deepEqual(after.down, ['isp2']);
    const seenAfter = await seenUplinks(['--dst', lab.server, '--port', String(lab.whoamiPort), '--sources', src, '--count', '40']);
    assert.deepEqual(Object.keys(seenAfter).sort(), ['isp1', 'isp3'], JSON.stringify(seenAfter));
  } finally {
    await labHeal(lab.name, 'isp2');
  }
});

test('sticky: explain finds the live entry a connection left, names the uplink the far end keeps seeing, and drops it when that uplink fails', async () => {
  const config = configFor('weighted', { name: 'sticky', top: 'sticky: 10m\n' });
  await startAndWait(config);
  const src = lab.lanSources[3];
  const args = ['--src', src, '--dst', lab.server, '--dport', String(lab.whoamiPort)];
  const fresh = await explainFlow(config, args);
  assert.equal(fresh.stage, 'balance', 'no entry before the first connection');
  const first = await seenUplinks(['--dst', lab.server, '--port', String(lab.whoamiPort), '--sources', src, '--count', '1']);
  const stuckTo = Object.keys(first)[0];
  const stuck = await explainFlow(config, args);
  assert.deepEqual([stuck.stage, stuck.uplink], ['sticky', stuckTo], JSON.stringify(stuck));
  assert.deepEqual(await seenUplinks(['--dst', lab.server, '--port', String(lab.whoamiPort), '--sources', src, '--count', '12']), { [stuckTo]: 12 });

  await labFail(lab.name, stuckTo, 'link');
  try {
    assert.ok(await waitFor(async () => (await daemon!.status())?.uplinks.find((u) => u.name === stuckTo)?.state === 'down', 5000));
    // The daemon empties a down uplink's sticky set: the source is balanced again, over the others.
    const after = await explainFlow(config, args);
    assert.equal(after.stage, 'balance', JSON.stringify(after));
    assert.ok(!after.candidates!.some((c) => c.uplink === stuckTo), JSON.stringify(after));
  } finally {
    await labHeal(lab.name, stuckTo);
  }
});

test('tiers: explain says which tier carries; with tier 1 down it names tier 2, with every uplink down it says blocked, as the far end finds', async () => {
  const config = configFor('weighted', { name: 'tiers', uplink: (_, k) => (k === 3 ? '    tier: 2\n' : '') });
  await startAndWait(config);
  const src = lab.lanSources[4];
  const args = ['--src', src, '--dst', lab.server, '--dport', String(lab.whoamiPort)];
  const normal = await explainFlow(config, args);
  assert.deepEqual([normal.tier, normal.up, normal.standby, normal.candidates!.map((c) => c.uplink)], [1, ['isp1', 'isp2'], ['isp3'], ['isp1', 'isp2']]);
  const failed: string[] = [];
  try {
    for (const name of ['isp1', 'isp2']) {
      await labFail(lab.name, name, 'link');
      failed.push(name);
    }
    assert.ok(await waitFor(async () => (await daemon!.status())?.uplinks.filter((u) => u.state === 'down').length === 2, 5000));
    const second = await explainFlow(config, args);
    assert.deepEqual([second.tier, second.uplink, second.down], [2, 'isp3', ['isp1', 'isp2']], JSON.stringify(second));
    assert.deepEqual(await seenUplinks(['--dst', lab.server, '--port', String(lab.whoamiPort), '--sources', src, '--count', '8']), { isp3: 8 });

    await labFail(lab.name, 'isp3', 'link');
    failed.push('isp3');
    assert.ok(await waitFor(async () => (await daemon!.status())?.uplinks.every((u) => u.state === 'down') ?? false, 5000));
    const none = await explainFlow(config, args);
    assert.deepEqual([none.decision, none.tier], ['blocked', null], JSON.stringify(none));
    const refused = await labClient(lab.name, 'lan', ['http', '--timeout-ms', '1500', '--dst', lab.server, '--port', String(lab.whoamiPort), '--sources', src, '--count', '3']);
    assert.equal(refused.ok, 0, `blocked, yet the far end answered: ${JSON.stringify(refused.seen)}`);
  } finally {
    for (const name of failed) await labHeal(lab.name, name);
  }
});

test('least-loaded: explain gives the shares the daemon\'s steering installed, and drops an uplink the loop found full', async () => {
  const IPERF_PORT = 5207;
  const r = await labExec(lab.name, 'inet', ['iperf3', '-s', '-D', '-p', String(IPERF_PORT), '-B', lab.server]);
  assert.equal(r.code, 0, r.stderr);
  // Capacities 2:1:1 where the weights are all 1: idle, the loop shares by capacity.
  const capacity = ['18mbit', '9mbit', '9mbit'];
  const config = configFor('least-loaded', {
    uplink: (_, k) => `    capacity: { up: ${capacity[k - 1]}, down: ${capacity[k - 1]} }\n`,
    rules: `  - name: download-on-isp2\n    proto: tcp\n    dport: ${IPERF_PORT}\n    via: isp2\n`,
  });
  await startAndWait(config);
  const src = lab.lanSources[5];
  const args = ['--src', src, '--dst', lab.server, '--dport', String(lab.whoamiPort)];
  const sharesAgree = async () => {
    const status = await daemonStatus(lab, config);
    const e = await explainFlow(config, args);
    const fromStatus = Object.fromEntries(status.uplinks.filter((u) => u.share > 0).map((u) => [u.name, u.share]));
    const fromExplain = Object.fromEntries(e.candidates!.map((c) => [c.uplink, c.share]));
    return { e, fromStatus, ok: Object.keys(fromStatus).sort().join() === Object.keys(fromExplain).sort().join() &&
      Object.entries(fromStatus).every(([name, share]) => Math.abs(share - fromExplain[name]) <= 0.001) };
  };
  let idle: Awaited<ReturnType<typeof sharesAgree>> | undefined;
  assert.ok(await waitFor(async () => (idle = await sharesAgree()).ok && idle.fromStatus.isp1 > 0.45, 5000),
    `idle shares by capacity, explain = status: ${JSON.stringify(idle)}`);
  // A paced 30 Mbit/s download pinned to isp2 (capacity 9 Mbit/s) fills it.
  const download = labExec(lab.name, 'lan', ['iperf3', '-c', lab.server, '-p', String(IPERF_PORT), '-R', '-b', '30M', '-t', '8']);
  try {
    let loaded: Awaited<ReturnType<typeof sharesAgree>> | undefined;
    assert.ok(await waitFor(async () => (loaded = await sharesAgree()).ok && loaded.fromStatus.isp2 === undefined, 6000, 200),
      `isp2 full: explain must drop it as status does: ${JSON.stringify(loaded)}`);
    assert.deepEqual(loaded!.e.candidates!.map((c) => c.uplink).sort(), ['isp1', 'isp3']);
    const seen = await seenUplinks(['--dst', lab.server, '--port', String(lab.whoamiPort), '--sources', src, '--count', '8']);
    assert.deepEqual(Object.keys(seen).sort(), ['isp1', 'isp3'], JSON.stringify(seen));
  } finally {
    await download;
  }
});

test('without a daemon, explain answers from the config with every uplink up, and bad input is a usage error', async () => {
  const config = configFor('hash');
  const e = await explainFlow(config, ['--src', lab.lanSources[2], '--dst', lab.server]);
  assert.equal(e.source, 'config');
  assert.deepEqual(e.up, ['isp1', 'isp2', 'isp3']);
  assert.deepEqual(e.down, []);
  const bad = await mustUplinkd(lab, 'explain', '-c', config, '--src', '198.18.0.300', '--dst', lab.server).then(() => 'ok', (err: Error) => err.message);
  assert.match(bad, /exited 2: --src: "198.18.0.300" is not an IPv4 or IPv6 address/);
  for (const [args, why] of [
    [['--src', lab.lanSources[2], '--dst', lab.server6], /not of one family/],
    [['--src', lab.lanAddress, '--dst', lab.server, '--user', 'no-such-user-here'], /--user: .*no-such-user-here/],
    [['--src', lab.lanSources[2], '--dst', lab.server, '--user', 'nobody'], /forwarded connection has no local process/],
    [['--src', lab.lanSources[2], '--dst', lab.server, '--dport', '70000'], /--dport: "70000" is not a port/],
  ] as [string[], RegExp][]) {
    const r = await uplinkd(lab, 'explain', '-c', config, ...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, why);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  }
});
