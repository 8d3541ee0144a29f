// Servers the probe tests need and the lab does not have, run in the lab's
// inet node:
//   probe-responder.ts --host 192.0.2.10 --dns-port 53 --http-port 8081
// DNS (UDP): an A query for any name is answered 192.0.2.10; a name whose
// first label is `nx` gets NXDOMAIN. HTTP: /status/NNN answers status NNN.
// Prints `listening` once both are bound.

import dgram from 'node:dgram';
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '192.0.2.10' },
    'dns-port': { type: 'string', default: '53' },
    'http-port': { type: 'string', default: '8081' },
  },
});
const host = values.host!;
const ANSWER = [192, 0, 2, 10];

/** The reply to one query: the question echoed, and one A record or NXDOMAIN. */
function answer(query: Buffer): Buffer | undefined {
  if (query.length < 12) return undefined;
  // The question's name: length-prefixed labels up to a zero byte.
  let end = 12;
  const labels: string[] = [];
  while (end < query.length && query[end] !== 0) {
    labels.push(query.subarray(end + 1, end + 1 + query[end]).toString('latin1'));
    end += query[end] + 1;
  }
  const question = query.subarray(12, end + 5); // name, its zero byte, type, class
  if (question.length < end - 12 + 5) return undefined;
  const type = question.readUInt16BE(question.length - 4);
  const nx = labels[0] === 'nx';
  const withAnswer = !nx && type === 1;
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2); // id
  header.writeUInt16BE(0x8180 | (nx ? 3 : 0), 2); // response, recursion desired + available, rcode
  header.writeUInt16BE(1, 4); // one question
  header.writeUInt16BE(withAnswer ? 1 : 0, 6);
  const record = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...ANSWER]); // name = the question's, A, IN, TTL 60
  return Buffer.concat([header, question, ...(withAnswer ? [record] : [])]);
}

const dns = dgram.createSocket('udp4');
dns.on('message', (msg, from) => {
  const reply = answer(msg);
  if (reply) dns.send(reply, from.port, from.address);
});

const web = http.createServer((req, res) => {
  const status = Number(/^\/status\/(\d{3})$/.exec(req.url ?? '')?.[1] ?? 200);
  res.writeHead(status, { 'content-type': 'text/plain', connection: 'close' });
  res.end(`${status}\n`);
});

let bound = 0;
const ready = () => ++bound === 2 && console.log('listening');
dns.bind(Number(values['dns-port']), host, ready);
web.listen(Number(values['http-port']), host, ready);

for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => process.exit(0));
