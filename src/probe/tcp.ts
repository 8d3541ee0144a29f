// tcp: the target answers when a connection to target:port from the
// uplink's address is established; it is closed at once, before any data.
// Binding the source address is what sends it out through the uplink:
// uplinkd's `ip rule from <address> lookup <uplink's table>` routes it there,
// whether the uplink is up or down. An IPv6 link-local target carries its
// zone (fe80::1%wan2, targets.ts), which Node's connect takes.

import { connect } from 'node:net';
import type { Probe } from './oneshot.js';

export const tcpProbe: Probe = (target, from, check, signal) =>
  new Promise<void>((resolve, reject) => {
    const socket = connect({ host: target, port: check.port, localAddress: from.address, family: from.family === 'ipv6' ? 6 : 4 });
    const onAbort = () => socket.destroy();
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject); // ECONNREFUSED, EHOSTUNREACH, EADDRNOTAVAIL...
    socket.once('close', () => signal.removeEventListener('abort', onAbort));
  });
