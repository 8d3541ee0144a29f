// Golden-file tests of the planner: a config and fixed kernel facts in, the
// exact `ip`/`nft` text out. A reviewer reads test/golden/*.plan as the
// kernel state each case installs. UPDATE_GOLDEN=1 rewrites them.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import { BALANCE_BUCKETS } from '../../src/ownership.js';
import { plan } from '../../src/plan/plan.js';
import { rulesOfFamily } from '../../src/plan/pins.js';
import { ownAddress, rotationOrder, splitBuckets } from '../../src/plan/resolve.js';
import { renderPlan } from '../../src/plan/render.js';
import { elementUpdateScript, sameStructure } from '../../src/kernel/update.js';
import type { PinRule } from '../../src/config/types.js';
import type { CgroupFacts, Health, KernelFacts } from '../../src/plan/state.js';

const dir = new URL('../golden/', import.meta.url);
const readFacts = (name: string) => JSON.parse(readFileSync(new URL(name, dir), 'utf8')) as KernelFacts;
const facts = readFacts('facts.json');
/** The same machine with IPv6 on every interface (see test/golden/dual-stack.yaml). */
const dualStackFacts = readFacts('facts-dual-stack.json');

/** A router pair's master: the uplinks' shared addresses held (see test/golden/router-pair.yaml). */
const pairMasterFacts = readFacts('facts-pair-master.json');

/** `down`: both families of these uplinks; `down6`: only their IPv6. */
function planFor(configName: string, down: string[] = [], rotationStart?: number, dual?: { down6?: string[] }, factsOverride?: KernelFacts) {
  const file = `${configName}.yaml`;
  const result = parseConfig(readFileSync(new URL(file, dir), 'utf8'), file);
  assert.ok(result.ok, `golden config ${file} must be valid: ${JSON.stringify(!result.ok && result.errors)}`);
  const health = Object.fromEntries(down.map((name) => [name, 'down' as Health]));
  const health6 = Object.fromEntries([...down, ...dual?.down6 ?? []].map((name) => [name, 'down' as Health]));
  return plan({ config: result.config, facts: factsOverride ?? (dual ? dualStackFacts : facts), health, health6, rotationStart });
}

/** `dual`: planned on facts-dual-stack.json; `master`: on facts-pair-master.json. */
const cases: { name: string; config: string; down?: string[]; down6?: string[]; dual?: boolean; master?: boolean }[] = [
  { name: 'two-uplinks', config: 'two-uplinks' },
  { name: 'weighted-tiers', config: 'weighted-tiers' },
  { name: 'weighted-tiers-tier1-down', config: 'weighted-tiers', down: ['fibre-a', 'fibre-b'] },
  { name: 'host-mode', config: 'host-mode' },
  { name: 'host-pins', config: 'host-pins' },
  { name: 'host-pins-fibres-down', config: 'host-pins', down: ['fibre-a', 'fibre-b'] },
  { name: 'host-mptcp', config: 'host-mptcp' },
  { name: 'host-mptcp-isp1-down', config: 'host-mptcp', down: ['isp1'] },
  { name: 'pins', config: 'pins' },
  { name: 'pins-isp1-isp3-down', config: 'pins', down: ['isp1', 'isp3'] },
  { name: 'sticky', config: 'sticky' },
  { name: 'hash', config: 'hash' },
  { name: 'least-loaded', config: 'least-loaded' },
  { name: 'one-down', config: 'two-uplinks', down: ['isp1'] },
  { name: 'all-down', config: 'two-uplinks', down: ['isp1', 'isp2'] },
  { name: 'unusable', config: 'unusable' },
  { name: 'dual-stack', config: 'dual-stack', dual: true },
  { name: 'dual-stack-ipv6-isp1-isp4-down', config: 'dual-stack', dual: true, down6: ['isp1', 'isp4'] },
  { name: 'dual-stack-isp2-down', config: 'dual-stack', dual: true, down: ['isp2'] },
  { name: 'dual-stack-pins', config: 'dual-stack-pins', dual: true },
  { name: 'dual-stack-pins-ipv6-isp1-down', config: 'dual-stack-pins', dual: true, down6: ['isp1'] },
  { name: 'dual-stack-host', config: 'dual-stack-host', dual: true },
  { name: 'router-pair-master', config: 'router-pair', master: true },
  { name: 'router-pair-master-isp1-down', config: 'router-pair', master: true, down: ['isp1'] },
  { name: 'router-pair-backup', config: 'router-pair' },
  { name: 'no-flush-on-down-isp1-down', config: 'no-flush-on-down', down: ['isp1'] },
];

for (const c of cases) {
  test(`golden plan: ${c.name}`, () => {
    const downs = [c.down?.length && `down: ${c.down.join(', ')}`, c.down6?.length && `IPv6 down: ${c.down6.join(', ')}`].filter(Boolean);
    const title = `${c.config}.yaml, ${downs.length ? downs.join('; ') : 'all uplinks up'}`;
    const text = renderPlan(planFor(c.config, c.down, undefined, c.dual ? { down6: c.down6 } : undefined, c.master ? pairMasterFacts : undefined), title);
    const golden = new URL(`${c.name}.plan`, dir);
    if (process.env.UPDATE_GOLDEN) writeFileSync(golden, text);
    assert.equal(text, readFileSync(golden, 'utf8'));
  });
}

test('same input, same output', () => {
  assert.equal(renderPlan(planFor('pins'), 't'), renderPlan(planFor('pins'), 't'));
});

test('shares follow weights within the lowest live tier', () => {
  const state = planFor('weighted-tiers');
  assert.deepEqual(state.uplinks.map((u) => [u.name, u.share]), [['fibre-a', 0.75], ['fibre-b', 0.25], ['lte', 0]]);
  const backup = planFor('weighted-tiers', ['fibre-a', 'fibre-b']);
  assert.deepEqual(backup.uplinks.map((u) => [u.name, u.share]), [['fibre-a', 0], ['fibre-b', 0], ['lte', 1]]);
});

test('all down: every bucket is blocked', () => {
  const state = planFor('two-uplinks', ['isp1', 'isp2']);
  const balance = state.nft.sets.find((s) => s.name === 'balance')!;
  assert.deepEqual(balance.elements, [`0-${BALANCE_BUCKETS - 1} : goto blocked`]);
});

test('buckets always add up, ties go to the first', () => {
  for (const weights of [[1], [3, 1], [1, 1, 1], [1000, 1], [7, 11, 13, 17]]) {
    const buckets = splitBuckets(weights, BALANCE_BUCKETS);
    assert.equal(buckets.reduce((a, b) => a + b, 0), BALANCE_BUCKETS);
  }
  assert.deepEqual(splitBuckets([1, 1, 1], 10), [4, 3, 3]);
});

test('pins: overlapping later rule opens a new stage, disjoint same-shape rules share one', () => {
  const state = planFor('pins');
  const stages = state.nft.sets.filter((s) => s.name.startsWith('rules_'));
  // voip | office | streaming+vpn-peers | ssh-out | shadowed-office (overlaps office, so a later stage)
  assert.deepEqual(stages.map((s) => s.name), ['rules_1', 'rules_2', 'rules_3', 'rules_4', 'rules_5']);
  const office = stages[1].elements;
  assert.deepEqual(office, ['198.18.0.32/27 : goto via_2', '198.18.0.200 : goto via_2']);
});

test('a thousand source pins are one lookup', () => {
  const rules = Array.from({ length: 1000 }, (_, i) =>
    `  - { name: pin${i}, src: 198.18.${Math.floor(i / 250) + 1}.${i % 250}, via: ${i % 2 ? 'isp1' : 'isp2'} }`).join('\n');
  const text = `lan: [lan0]\nuplinks:\n  isp1: { interface: wan1 }\n  isp2: { interface: wan2 }\nrules:\n${rules}\n`;
  const result = parseConfig(text, 'many.yaml');
  assert.ok(result.ok);
  const state = plan({ config: result.config, facts });
  const pick = state.nft.chains.find((c) => c.name === 'pick')!;
  assert.deepEqual(pick.rules.map((r) => r.text), ['ip saddr vmap @rules_1', 'goto balance']);
  assert.equal(state.nft.chains.filter((c) => c.name.startsWith('via_')).length, 2);
});

test('a rotation deals any run of turns by share give or take two, also every second turn', () => {
  const total = 89;
  for (const weights of [[4, 2, 1], [3, 1], [2, 1, 1], [1, 1, 1], [45, 37, 18], [10, 1], [5, 3, 2, 1]]) {
    const slots = splitBuckets(weights, total);
    const order = rotationOrder(slots);
    assert.equal(order.length, total);
    slots.forEach((s, i) => assert.equal(order.filter((x) => x === i).length, s, `${weights}: uplink ${i} has its slots`));
    for (const stride of [1, 2]) {
      for (const run of [4, 8, 16]) {
        for (let start = 0; start < total; start++) {
          const turns = Array.from({ length: run }, (_, k) => order[(start + k * stride) % total]);
          slots.forEach((s, i) => {
            const got = turns.filter((x) => x === i).length;
            assert.ok(Math.abs(got - (run * s) / total) <= 2,
              `${weights}: ${run} turns (every ${stride}) from ${start} give uplink ${i} ${got}, share ${s}/${total}`);
          });
        }
      }
    }
  }
  // 8 downloads at once on 30+10 or 20/10/10 mbit: every uplink gets one, wherever the
  // rotation stands, and even if each download is two connections.
  for (const weights of [[3, 1], [2, 1, 1]]) {
    const order = rotationOrder(splitBuckets(weights, total));
    for (const stride of [1, 2]) {
      for (let start = 0; start < total; start++) {
        const got = new Set(Array.from({ length: 8 }, (_, k) => order[(start + k * stride) % total]));
        assert.equal(got.size, weights.length, `${weights}, every ${stride} from ${start}`);
      }
    }
  }
});

test('a rotation begun elsewhere is the same order, shifted; only least-loaded maps depend on it', () => {
  const slots = splitBuckets([4, 2, 1], 89);
  const order = rotationOrder(slots);
  assert.deepEqual(rotationOrder(slots, 10), [...order.slice(10), ...order.slice(0, 10)]);
  const balanceOf = (name: string, rotationStart: number) =>
    planFor(name, [], rotationStart).nft.sets.find((s) => s.name === 'balance')!.elements;
  assert.notDeepEqual(balanceOf('least-loaded', 10), balanceOf('least-loaded', 0));
  assert.deepEqual(balanceOf('two-uplinks', 10), balanceOf('two-uplinks', 0));
});

// ------------------------------------------------------------ process pins (user, group, cgroup)

/** The cgroups of process-pins.yaml as a hybrid layout shows them (cgroup2 at /sys/fs/cgroup/unified). */
const cgroupsPresent: CgroupFacts[] = [
  { path: 'system.slice/restic.service', id: 5012, nftPath: 'unified/system.slice/restic.service' },
  { path: 'user.slice', id: 4000, nftPath: 'unified/user.slice' },
];

function processPlan(cgroups: CgroupFacts[], config = 'process-pins', down: string[] = []) {
  const file = `${config}.yaml`;
  const result = parseConfig(readFileSync(new URL(file, dir), 'utf8'), file);
  assert.ok(result.ok, `golden config ${file} must be valid: ${JSON.stringify(!result.ok && result.errors)}`);
  const health = Object.fromEntries(down.map((name) => [name, 'down' as Health]));
  return plan({ config: result.config, facts: { ...facts, cgroups }, health });
}

const processCases: { name: string; title: string; cgroups: CgroupFacts[] }[] = [
  { name: 'process-pins', title: 'process-pins.yaml, all uplinks up, apt-daily.service absent', cgroups: cgroupsPresent },
  { name: 'process-pins-no-cgroups', title: 'process-pins.yaml, all uplinks up, no cgroup exists', cgroups: [] },
];

for (const c of processCases) {
  test(`golden plan: ${c.name}`, () => {
    const text = renderPlan(processPlan(c.cgroups), c.title);
    const golden = new URL(`${c.name}.plan`, dir);
    if (process.env.UPDATE_GOLDEN) writeFileSync(golden, text);
    assert.equal(text, readFileSync(golden, 'utf8'));
  });
}

test('process pins: a cgroup that appears, goes or is created again changes elements only, so no chain is reloaded', () => {
  const none = processPlan([]).nft;
  const present = processPlan(cgroupsPresent).nft;
  const restarted = processPlan(cgroupsPresent.map((c) => (c.path === 'user.slice' ? c : { ...c, id: 5013 }))).nft;
  assert.ok(sameStructure(none, present) && sameStructure(present, restarted));
  // nft keeps the id, not the path: the new id is what makes the update load the element again.
  assert.equal(elementUpdateScript(present, restarted),
    'flush map inet uplinkd rules_5\n' +
    'add element inet uplinkd rules_5 { "unified/system.slice/restic.service" comment "cgroup id 5013" : goto via_2 }\n');
  assert.equal(elementUpdateScript(present, none), 'flush map inet uplinkd rules_5\nflush map inet uplinkd rules_6\n');
});

test('process pins: forwarded connections skip the user, group and cgroup stages, in the same order otherwise', () => {
  const chains = (state: ReturnType<typeof plan>) => Object.fromEntries(state.nft.chains.map((c) => [c.name, c.rules.map((r) => r.text)]));
  const router = chains(processPlan(cgroupsPresent));
  assert.equal(router.prerouting.at(-1), 'goto pick_forwarded');
  assert.deepEqual(router.pick_forwarded, ['ip saddr vmap @rules_1', 'ip daddr vmap @rules_7', 'goto balance']);
  assert.equal(router.output.at(-1), 'goto pick');
  assert.equal(router.pick.length, 8);
  // Without process rules nothing changes: both hooks share pick.
  const plain = chains(planFor('pins'));
  assert.equal(plain.prerouting.at(-1), 'goto pick');
  assert.equal(plain.pick_forwarded, undefined);
  // Host mode forwards nothing: one pick, for the machine's own connections.
  const host = parseConfig('uplinks:\n  isp1: { interface: wan1 }\n  isp2: { interface: wan2 }\nrules:\n  - { user: 4242, via: isp2 }\n', 'host.yaml');
  assert.ok(host.ok);
  const hostChains = chains(plan({ config: host.config, facts }));
  assert.equal(hostChains.pick_forwarded, undefined);
  assert.deepEqual(hostChains.pick, ['meta skuid vmap @rules_1', 'goto balance']);
});

test('process pins: a rule is split by cgroup depth, and first match still wins across rules', () => {
  const text = 'lan: [lan0]\nuplinks:\n  isp1: { interface: wan1 }\n  isp2: { interface: wan2 }\nrules:\n' +
    '  - { name: a, cgroup: [x.slice/y.service, z.slice], via: isp1 }\n' +
    '  - { name: b, cgroup: x.slice/y.service, via: isp2 }\n' +
    '  - { name: c, cgroup: w.slice/v.service, via: isp2 }\n';
  const result = parseConfig(text, 'split.yaml', { cgroups: (paths) => ({ mountPoint: '/sys/fs/cgroup', present: [] }) });
  assert.ok(result.ok);
  const all = ['x.slice/y.service', 'z.slice', 'w.slice/v.service'].map((path, i) => ({ path, id: 100 + i, nftPath: path }));
  const state = plan({ config: result.config, facts: { ...facts, cgroups: all } });
  const stages = state.nft.sets.filter((s) => s.name.startsWith('rules_'));
  // b repeats a's cgroup, so it cannot share a's stage; c can share b's.
  assert.deepEqual(stages.map((s) => [s.name, s.elements]), [
    ['rules_1', ['"z.slice" comment "cgroup id 101" : goto via_1']],
    ['rules_2', ['"x.slice/y.service" comment "cgroup id 100" : goto via_1']],
    ['rules_3', ['"x.slice/y.service" comment "cgroup id 100" : goto via_2', '"w.slice/v.service" comment "cgroup id 102" : goto via_2']],
  ]);
  const pick = state.nft.chains.find((c) => c.name === 'pick')!.rules.map((r) => r.text);
  assert.deepEqual(pick.slice(0, 3), ['socket cgroupv2 level 1 vmap @rules_1', 'socket cgroupv2 level 2 vmap @rules_2', 'socket cgroupv2 level 2 vmap @rules_3']);
});

test('a rule that names no field matches every connection: a goto in pick, and no map (an empty key is no nft type)', () => {
  const result = parseConfig('lan: [lan0]\nuplinks:\n  isp1: { interface: wan1 }\n  isp2: { interface: wan2 }\nrules:\n  - { user: 4242, via: isp1 }\n  - { via: isp2 }\n', 'all.yaml');
  assert.ok(result.ok);
  const state = plan({ config: result.config, facts });
  assert.deepEqual(state.nft.sets.filter((s) => s.name.startsWith('rules_')).map((s) => s.declaration), ['type uid : verdict']);
  const chain = (name: string) => state.nft.chains.find((c) => c.name === name)!.rules.map((r) => r.text);
  assert.deepEqual(chain('pick'), ['meta skuid vmap @rules_1', 'goto via_2', 'goto balance']);
  assert.deepEqual(chain('pick_forwarded'), ['goto via_2', 'goto balance']);
});

test('IPv4 plan: a rule keeps only its IPv4 prefixes, and one of IPv6 prefixes alone is left out', () => {
  const ipv4Only = readFileSync(new URL('pins.yaml', dir), 'utf8');
  // The same rules with IPv6 prefixes added: to a rule that has IPv4 ones, and
  // as rules of their own (one src-only, one dst-only, one with a port).
  const dualStack = ipv4Only
    .replace('src: 198.18.0.16/28', 'src: [198.18.0.16/28, "fd00::16/127"]')
    .replace('  - name: vpn-peers', [
      '  - {name: v6-src, src: "fd00::/64", via: isp2}',
      '  - {name: v6-dst, dst: "2001:db8::/32", via: isp3}',
      '  - {name: v6-port, dst: ["2001:db8:1::/48"], proto: tcp, dport: 443, via: main}',
      '  - name: vpn-peers',
    ].join('\n'));
  const planOf = (text: string) => {
    const result = parseConfig(text, 'pins.yaml');
    assert.ok(result.ok, JSON.stringify(!result.ok && result.errors));
    return plan({ config: result.config, facts, health: {} });
  };
  assert.deepEqual(planOf(dualStack).nft, planOf(ipv4Only).nft);
});

test('rulesOfFamily cuts src and dst to one family', () => {
  const rule = (name: string, src: string[], dst: string[]): PinRule => ({
    name, src, dst, proto: 'any', sport: [], dport: [], iif: [], user: [], group: [], cgroup: [], via: ['isp1'], fallback: 'any',
  });
  const rules = [
    rule('mixed', ['198.18.0.0/24', 'fd00::/64'], []),
    rule('v6', ['fd00::/64'], []),
    rule('v4-to-any', ['198.18.0.0/24'], []),
    rule('any-to-v6', [], ['2001:db8::/32']),
    rule('any', [], []),
  ];
  const names = (family: 'ipv4' | 'ipv6') => rulesOfFamily(rules, family).map((r) => `${r.name} ${r.src.join(',')} > ${r.dst.join(',')}`);
  assert.deepEqual(names('ipv4'), ['mixed 198.18.0.0/24 > ', 'v4-to-any 198.18.0.0/24 > ', 'any  > ']);
  assert.deepEqual(names('ipv6'), ['mixed fd00::/64 > ', 'v6 fd00::/64 > ', 'any-to-v6  > 2001:db8::/32', 'any  > ']);
});

test('dual stack: an uplink whose IPv6 is down changes only IPv6 elements, its IPv4 keeps its share', () => {
  const up = planFor('dual-stack-pins', [], undefined, {});
  const down6 = planFor('dual-stack-pins', [], undefined, { down6: ['isp1'] });
  assert.ok(sameStructure(up.nft, down6.nft), 'a family going down is an element update, not a reload');
  const changed = down6.nft.sets.filter((s) => JSON.stringify(s.elements) !== JSON.stringify(up.nft.sets.find((x) => x.name === s.name)!.elements));
  assert.deepEqual(changed.map((s) => s.name), ['ended6', 'via6_1', 'via6_3', 'balance6']);
  assert.deepEqual(down6.uplinks.map((u) => [u.name, u.health, u.share, u.ipv6?.health, u.ipv6?.share]),
    [['isp1', 'up', 0.333, 'down', 0], ['isp2', 'up', 0.333, 'up', 1], ['isp3', 'up', 0.333, undefined, undefined]]);
  assert.deepEqual(down6.routes, up.routes);
  assert.deepEqual(down6.rules, up.rules);
});

test('dual stack: a routed prefix (nat6: none) leaves by its uplink only, and is refused while that uplink\'s IPv6 is down', () => {
  const routed = (down6: string[]) => planFor('dual-stack', [], undefined, { down6 }).nft.sets.find((s) => s.name === 'routed6')!.elements;
  assert.deepEqual(routed([]), ['2001:db8:400:1::/64 : goto mark_isp4']);
  assert.deepEqual(routed(['isp4']), ['2001:db8:400:1::/64 : goto blocked']);
  const balance6 = planFor('dual-stack', [], undefined, {}).nft.sets.find((s) => s.name === 'balance6')!.elements;
  assert.ok(balance6.every((e) => !e.includes('isp4')), 'other sources are never balanced onto a nat6: none uplink');
});

test('dual stack: the stable IPv6 address is chosen over a temporary one listed first', () => {
  const isp1 = planFor('dual-stack', [], undefined, {}).uplinks.find((u) => u.name === 'isp1')!;
  assert.equal(isp1.ipv6?.address, '2001:db8:100::2');
});

test('dual stack: IPv6 routes and rules take the uplink\'s table and the IPv4 priorities, printed as ip -6', () => {
  const state = planFor('dual-stack', [], undefined, {});
  const v6 = state.rules.filter((r) => r.family === 'ipv6');
  assert.deepEqual([...new Set(v6.map((r) => r.priority))], [10000, 10010, 10101, 10102, 10103, 10104, 10301, 10302, 10303, 10304, 10590, 10600]);
  assert.deepEqual([...new Set(state.routes.filter((r) => r.family === 'ipv6').map((r) => r.table))], state.ownedTables);
  const text = renderPlan(state, 't');
  assert.match(text, /^ip -6 route replace default via fe80::2:1 dev wan2 src fd00:0:0:1::1 table 202$/m);
  assert.match(text, /^sysctl -w net\.ipv6\.conf\.wan2\.accept_ra=2\n(.*\n)*sysctl -w net\.ipv6\.conf\.all\.forwarding=1$/m);
});

test("dual stack: the router's unbound IPv6 sockets take the LAN address, through the first NATed uplink; host mode keeps main's", () => {
  const state = planFor('dual-stack', [], undefined, {});
  const at = (p: number) => state.rules.filter((r) => r.family === 'ipv6' && r.priority === p).map((r) => renderPlan({ ...state, rules: [r] }, 't'))
    .map((t) => t.split('\n').find((l) => l.startsWith('ip -6 rule'))).join();
  assert.equal(at(10590), 'ip -6 rule add priority 10590 iif lo ipproto ipv6-icmp lookup main');
  assert.equal(at(10600), 'ip -6 rule add priority 10600 iif lo lookup 201');
  const defaults = Object.fromEntries(state.routes.filter((r) => r.family === 'ipv6' && r.dst === 'default' && r.type === 'unicast').map((r) => [r.table, r.src]));
  // isp4 (nat6: none) would let the LAN source leave untranslated: its own address stays.
  assert.deepEqual(defaults, { 201: 'fd00:0:0:1::1', 202: 'fd00:0:0:1::1', 203: 'fd00:0:0:1::1', 204: '2001:db8:400::2' });
  // With isp1's IPv6 unusable (no global address), the next one's table.
  const noWan1 = { ...dualStackFacts, interfaces: dualStackFacts.interfaces.map((i) => (i.name === 'wan1' ? { ...i, addresses6: [] } : i)) };
  const result = parseConfig(readFileSync(new URL('dual-stack.yaml', dir), 'utf8'), 'dual-stack');
  assert.ok(result.ok);
  const moved = plan({ config: result.config, facts: noWan1 }).rules.find((r) => r.family === 'ipv6' && r.priority === 10600);
  assert.equal(moved?.lookup, 202);
  const host = planFor('dual-stack-host', [], undefined, {});
  assert.ok(!host.rules.some((r) => r.family === 'ipv6' && r.priority >= 10590), 'host mode: no neutral IPv6 source');
  assert.ok(host.routes.filter((r) => r.family === 'ipv6' && r.dst === 'default' && r.type === 'unicast').every((r) => r.src?.startsWith('2001:db8:')));
});

test('gateway6 auto follows the main table\'s IPv6 default routes on its own interface: lowest metric, link-local next hop kept', () => {
  const result = parseConfig(readFileSync(new URL('dual-stack.yaml', dir), 'utf8'), 'dual-stack');
  assert.ok(result.ok);
  const gateways = (routes: KernelFacts['mainDefaultRoutes6']) => Object.fromEntries(plan({ config: result.config, facts: { ...dualStackFacts, mainDefaultRoutes6: routes } })
    .uplinks.map((u) => [u.name, u.ipv6?.gateway ?? u.ipv6?.unusable]));
  // Two routers advertising on wan2 (one multipath route, each hop read apart by kernel/facts.ts), and wan3's route gone.
  assert.deepEqual(gateways([
    { dev: 'wan2', gateway: 'fe80::2:7', metric: 2048 },
    { dev: 'wan2', gateway: 'fe80::2:1', metric: 1024 },
    { dev: 'wan2', gateway: 'fe80::2:2', metric: 1024 },
  ]), {
    isp1: 'fe80::1', isp2: 'fe80::2:1', isp3: 'no IPv6 default route on wan3 in the main table (gateway6: auto)', isp4: undefined,
  });
});

test('dual stack: a LAN prefix outside every nat6: none uplink\'s /48 is not routed unNATed, it is NATed by the others', () => {
  const text = readFileSync(new URL('dual-stack.yaml', dir), 'utf8').replace(/nat6:\n      prefix: \{lan: fd00:0:0:1::\/64, uplink: 2001:db8:300:1::\/64\}/, 'nat6: snat');
  const result = parseConfig(text, 'dual-stack.yaml');
  assert.ok(result.ok);
  const state = plan({ config: result.config, facts: dualStackFacts });
  // fd00:0:0:1::/64 (a ULA) shares no /48 with isp4's 2001:db8:400::…; 2001:db8:400:1::/64 does.
  assert.deepEqual(state.nft.sets.find((s) => s.name === 'routed6')!.elements, ['2001:db8:400:1::/64 : goto mark_isp4']);
  assert.ok(!state.rules.some((r) => r.family === 'ipv6' && r.from === 'fd00:0:0:1::/64'), 'the ULA prefix gets no source rule to isp4');
});

test('router pair: taking the shared addresses over changes only the SNAT elements; probes and routes keep the own address', () => {
  const backup = planFor('router-pair');
  const master = planFor('router-pair', [], undefined, undefined, pairMasterFacts);
  assert.ok(sameStructure(backup.nft, master.nft), 'becoming master is an element update, not a reload');
  const changed = master.nft.sets.filter((s) => JSON.stringify(s.elements) !== JSON.stringify(backup.nft.sets.find((x) => x.name === s.name)!.elements));
  assert.deepEqual(changed.map((s) => s.name), ['snat_address']);
  assert.deepEqual(master.routes, backup.routes);
  assert.deepEqual(master.rules, backup.rules);
  assert.deepEqual(master.uplinks.map((u) => [u.address, u.sharedAddress]), [['198.51.100.10', '198.51.100.10'], ['198.51.100.26', '198.51.100.26']]);
  assert.deepEqual(backup.uplinks.map((u) => [u.address, u.sharedAddress]), [['198.51.100.2', '198.51.100.10'], ['198.51.100.18', '198.51.100.26']]);
  // The shared address listed first (keepalived added it before a DHCP renew re-added the own one): probes keep the own address.
  const loaded = parseConfig(readFileSync(new URL('router-pair.yaml', dir), 'utf8'), 'router-pair.yaml');
  assert.ok(loaded.ok);
  const wan1 = structuredClone(pairMasterFacts.interfaces.find((i) => i.name === 'wan1')!);
  wan1.addresses.reverse();
  assert.equal(ownAddress(loaded.config.uplinks[0], wan1)?.address, '198.51.100.2');
});

test('flush_on_down: a down uplink\'s mark is in `ended` (its TCP connections get a reset) while it is down, and only then', () => {
  const ended = (state: ReturnType<typeof planFor>) => state.nft.sets.find((s) => s.name === 'ended')?.elements;
  assert.deepEqual(ended(planFor('two-uplinks')), []);
  assert.deepEqual(ended(planFor('two-uplinks', ['isp1'])), ['0x00000100']);
  assert.deepEqual(ended(planFor('no-flush-on-down', ['isp1'])), undefined, 'flush_on_down: false leaves connections alone');
  const dual = planFor('dual-stack', [], undefined, { down6: ['isp1'] });
  assert.deepEqual([dual.nft.sets.find((s) => s.name === 'ended')?.elements, dual.nft.sets.find((s) => s.name === 'ended6')?.elements], [[], ['0x00000100']]);
});
