// whoami: tells every client the source address it arrived from, so anyone
// can see which uplink (which NAT address) a connection used.
//
//   whoami [--port 8080] [--host ::]
//
// HTTP: every request is answered `ADDR\n` and the connection closed.
// UDP on the same port: every datagram is answered `ADDR\n`. The reply leaves
// an unbound socket, so its source is the kernel's choice for the route back;
// in the lab's inet namespace that is 192.0.2.10 (the routes say so), which is
// why UDP tests talk to 192.0.2.10 and not to other 192.0.2.x (for IPv6:
// 2001:db8:ffff::10).
// The default host :: takes both families on one socket each (IPv4 clients
// appear as ::ffff:a.b.c.d and are reported plainly); an IPv4 host, IPv4 only.

import dgram from 'node:dgram';
import http from 'node:http';
import { isIPv4 } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { port: { type: 'string', default: '8080' }, host: { type: 'string', default: '::' } },
});
const port = Number(values.port);
const host = values.host;

/** An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d. */
function plain(address: string | undefined): string {
  return (address ?? '?').replace(/^::ffff:/, '');
}

const web = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' });
  res.end(`${plain(req.socket.remoteAddress)}\n`);
});
web.listen({ port, host, backlog: 4096 });

// ipv6Only false: the :: socket takes IPv4 too, whatever net.ipv6.bindv6only says.
const echo = isIPv4(host) ? dgram.createSocket('udp4') : dgram.createSocket({ type: 'udp6', ipv6Only: false });
echo.on('message', (_msg, from) => echo.send(`${plain(from.address)}\n`, from.port, from.address));
echo.bind(port, host);

for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => process.exit(0));
