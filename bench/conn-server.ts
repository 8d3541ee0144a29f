// The far end of the connection-rate benchmark (bench/connections.ts), run in
// the lab's internet: it accepts, writes `ok\n` and closes at once, so each
// connection is a handshake, one small segment and the closing exchange, and
// the server (not the LAN host) holds the TIME_WAIT: the LAN host's ports are
// free again as soon as a connection ends.
//
//   conn-server --host 192.0.2.10 --port 8091
//
// Prints `listening` once it accepts connections.

import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { host: { type: 'string', default: '192.0.2.10' }, port: { type: 'string', default: '8091' } },
});

const server = net.createServer((socket) => {
  socket.on('error', () => {});
  socket.end('ok\n');
});
server.listen({ host: values.host, port: Number(values.port), backlog: 4096 }, () => process.stdout.write('listening\n'));
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => process.exit(0));
