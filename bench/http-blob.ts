// A web server for the aggregation benchmark, run in the lab's internet:
// every request is answered with `--bytes` bytes (or ?bytes=N) and the
// connection closed, so each download is one short TCP connection.
//
//   http-blob --host 192.0.2.10 --port 8090 --bytes 200000
//
// Prints `listening` once it accepts connections.

import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '192.0.2.10' },
    port: { type: 'string', default: '8090' },
    bytes: { type: 'string', default: '200000' },
  },
});
const MAX = 64 * 1024 * 1024;
const blob = Buffer.alloc(Math.min(MAX, Number(values.bytes)), 'x');

const server = http.createServer((req, res) => {
  const asked = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('bytes') ?? blob.length);
  const size = Number.isInteger(asked) && asked >= 0 && asked <= blob.length ? asked : blob.length;
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size, connection: 'close' });
  res.end(blob.subarray(0, size));
});
server.listen({ host: values.host, port: Number(values.port), backlog: 1024 }, () => process.stdout.write('listening\n'));
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => process.exit(0));
