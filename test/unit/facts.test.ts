import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseNetDev } from '../../src/kernel/facts.js';

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
