import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseDefaultRoutes, parseInterfaces, parseNetDev } from '../../src/kernel/facts.js';

test('interface byte counters from /proc/net/dev', () => {
  // As the lab's router prints it (Linux 6.x), header included.
  const text = [
    'Inter-|   Receive                                                |  Transmit',
    ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
    '    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0',
    '  wan1: 1234567890123    9876    0    0    0     0          0         0   555666    4321    0    0    0     0       0          0',
    'ul-lab1-lanveth: 42  1    0    0    0     0          0         0       17       1    0    0    0     0       0          0',
    '',
  ].join('\n');
  assert.deepEqual([...parseNetDev(text)], [
    ['lo', { rxBytes: 0, txBytes: 0 }],
    ['wan1', { rxBytes: 1234567890123, txBytes: 555666 }],
    ['ul-lab1-lanveth', { rxBytes: 42, txBytes: 17 }],
  ]);
});

// `ip -j address show` and `ip -j -6 route show table main default` as
// iproute2 6.1 printed them in a namespace on Linux 6.18 (interface names
// renamed): wan2 took a SLAAC address (mngtmpaddr) and a temporary one from a
// dnsmasq router advertisement, plus 2001:db8:2::77 (static) and
// 2001:db8:2::1 (DAD failed: the router has it); wan1 has an IPv4 address, a
// static IPv6 one, a deprecated one (preferred_lft 0) and 2001:db8:9::7 just
// added (DAD still running).
const ADDRESSES = '[' +
  '{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","addr_info":[' +
    '{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295},' +
    '{"family":"inet6","local":"::1","prefixlen":128,"scope":"host","valid_life_time":4294967295,"preferred_life_time":4294967295}' +
  ']},' +
  '{"ifindex":3,"link":"k6d1","ifname":"wan1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"02:67:70:ee:49:88","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[' +
    '{"family":"inet","local":"192.0.2.5","prefixlen":24,"scope":"global","label":"wan1","valid_life_time":4294967295,"preferred_life_time":4294967295},' +
    '{"family":"inet6","local":"2001:db8:9::7","prefixlen":64,"scope":"global","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295},' +
    '{"family":"inet6","local":"2001:db8:9::6","prefixlen":64,"scope":"global","nodad":true,"deprecated":true,"valid_life_time":4294967295,"preferred_life_time":0},' +
    '{"family":"inet6","local":"2001:db8:9::5","prefixlen":64,"scope":"global","nodad":true,"valid_life_time":4294967295,"preferred_life_time":4294967295},' +
    '{"family":"inet6","local":"fe80::67:70ff:feee:4988","prefixlen":64,"scope":"link","valid_life_time":4294967295,"preferred_life_time":4294967295}' +
  ']},' +
  '{"ifindex":6,"link_index":5,"ifname":"wan2","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"c2:76:6b:01:a5:8b","broadcast":"ff:ff:ff:ff:ff:ff","link_netnsid":1,"addr_info":[' +
    '{"family":"inet6","local":"2001:db8:2::77","prefixlen":64,"scope":"global","valid_life_time":4294967295,"preferred_life_time":4294967295},' +
    '{"family":"inet6","local":"2001:db8:2::1","prefixlen":64,"scope":"global","dadfailed":true,"tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295},' +
    '{"family":"inet6","local":"2001:db8:2:0:5390:77d4:4132:ab9a","prefixlen":64,"scope":"global","temporary":true,"dynamic":true,"valid_life_time":597,"preferred_life_time":597},' +
    '{"family":"inet6","local":"2001:db8:2:0:c076:6bff:fe01:a58b","prefixlen":64,"scope":"global","dynamic":true,"mngtmpaddr":true,"valid_life_time":597,"preferred_life_time":597},' +
    '{"family":"inet6","local":"fe80::c076:6bff:fe01:a58b","prefixlen":64,"scope":"link","valid_life_time":4294967295,"preferred_life_time":4294967295}' +
  ']}' +
  ']';
const DEFAULTS6 = '[{"dst":"default","gateway":"fe80::1","dev":"wan2","protocol":"ra","metric":1024,"flags":[],"expires":599,"metrics":[{"hoplimit":64}],"pref":"medium"},{"dst":"default","metric":2000,"flags":[],"pref":"medium","nexthops":[{"gateway":"fe80::1","dev":"wan2","weight":1,"flags":[]},{"gateway":"fe80::2","dev":"wan2","weight":1,"flags":[]}]},{"dst":"default","gateway":"2001:db8:9::1","dev":"wan1","metric":3000,"flags":[],"pref":"medium"}]';

test('IPv6 addresses: global, usable ones only, stable before temporary', () => {
  const byName = Object.fromEntries(parseInterfaces(ADDRESSES).map((i) => [i.name, i]));
  assert.deepEqual(byName.lo.addresses6, [], '::1 is scope host');
  assert.deepEqual(byName.wan1.addresses, [{ address: '192.0.2.5', prefixLen: 24 }]);
  assert.deepEqual(byName.wan1.addresses6, [{ address: '2001:db8:9::5', prefixLen: 64 }], 'tentative, deprecated and link-local left out');
  assert.deepEqual(byName.wan2.addresses6, [
    { address: '2001:db8:2::77', prefixLen: 64 },
    { address: '2001:db8:2:0:c076:6bff:fe01:a58b', prefixLen: 64 },
    { address: '2001:db8:2:0:5390:77d4:4132:ab9a', prefixLen: 64, temporary: true },
  ], 'dadfailed and link-local left out; the temporary address, listed first by the kernel, last');
});

test('IPv6 default routes: an RA route with a link-local gateway, each hop of a multipath route', () => {
  assert.deepEqual(parseDefaultRoutes(DEFAULTS6), [
    { dev: 'wan2', gateway: 'fe80::1', metric: 1024 },
    { dev: 'wan2', gateway: 'fe80::1', metric: 2000 },
    { dev: 'wan2', gateway: 'fe80::2', metric: 2000 },
    { dev: 'wan1', gateway: '2001:db8:9::1', metric: 3000 },
  ]);
  assert.deepEqual(parseDefaultRoutes('[{"dst":"default","dev":"ppp0","protocol":"boot","scope":"link"}]'), [{ dev: 'ppp0', metric: 0 }]);
});
