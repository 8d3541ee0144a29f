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
import { mustUplinkd, uniqueLabName, waitFor } from './harness.js';

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

function configFor(balance: string): string {
  return writeLabConfig(lab, `explain-${balance}.yaml`, labConfig(lab, {
    balance, rules, api: { http: 'off' },
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

test('without a daemon, explain answers from the config with every uplink up, and bad input is a usage error', async () => {
  const config = configFor('hash');
  const e = await explainFlow(config, ['--src', lab.lanSources[2], '--dst', lab.server]);
  assert.equal(e.source, 'config');
  assert.deepEqual(e.up, ['isp1', 'isp2', 'isp3']);
  assert.deepEqual(e.down, []);
  const bad = await mustUplinkd(lab, 'explain', '-c', config, '--src', '198.18.0.300', '--dst', lab.server).then(() => 'ok', (err: Error) => err.message);
  assert.match(bad, /exited 2: --src: "198.18.0.300" is not an IPv4 or IPv6 address/);
});
