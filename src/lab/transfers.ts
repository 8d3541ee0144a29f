// transfers: long downloads whose every byte is checked, for the router-pair
// lab (README "Router pair"): do transfers in flight survive a router dying?
//
//   transfers serve --host 192.0.2.10 --port 8090
//   transfers get --url http://192.0.2.10:8090/ --bytes N --count 8
//                 [--sources a,b,c] [--progress-ms 200] [--timeout-ms 30000]
//
// serve answers GET /?bytes=N with N bytes of a fixed pattern (byte i is
// i mod 251, so a lost, repeated or reordered segment shows at its offset)
// and the header x-seen-address: the source address the server saw, which
// tells the uplink the transfer used. Prints `listening` once it accepts.
//
// get runs --count downloads at once, bound round-robin to --sources, and
// prints one JSON line every --progress-ms ({"progress": [bytes so far…]}),
// then one {"transfers": [TransferResult…]} when all have ended. A download
// that receives nothing for --timeout-ms ends as ETIMEDOUT.

import http from 'node:http';
import { parseArgs } from 'node:util';

const PATTERN_PERIOD = 251;
const MAX_BYTES = 1 << 30;

export interface TransferResult {
  /** The local address it was bound to, if any. */
  source?: string;
  /** The source address the server saw: the uplink's address. */
  seen?: string;
  expected: number;
  received: number;
  /** Every byte arrived, each the pattern's at its offset. */
  intact: boolean;
  /** Why it ended early (ECONNRESET, ETIMEDOUT, …). */
  error?: string;
  /** From its start to its last byte (or its error). */
  elapsedMs: number;
}

export interface TransfersProgress { progress: number[]; atMs: number }

function patternChunk(offset: number, length: number): Buffer {
  const chunk = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) chunk[i] = (offset + i) % PATTERN_PERIOD;
  return chunk;
}

function serve(host: string, port: number): void {
  // One period-aligned block, sent again and again: the pattern repeats every 251 bytes.
  const block = patternChunk(0, PATTERN_PERIOD * 256);
  const server = http.createServer((req, res) => {
    const asked = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('bytes'));
    if (!Number.isInteger(asked) || asked < 0 || asked > MAX_BYTES) {
      res.writeHead(400).end(`bytes must be a whole number from 0 to ${MAX_BYTES}\n`);
      return;
    }
    const seen = (req.socket.remoteAddress ?? '?').replace(/^::ffff:/, '');
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': asked, 'x-seen-address': seen, connection: 'close' });
    let sent = 0;
    const pump = (): void => {
      while (sent < asked) {
        const piece = block.subarray(0, Math.min(block.length, asked - sent));
        sent += piece.length;
        if (!res.write(piece)) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  });
  server.listen({ host, port, backlog: 1024 }, () => process.stdout.write('listening\n'));
}

function download(url: string, bytes: number, source: string | undefined, timeoutMs: number, progress: number[], index: number): Promise<TransferResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    let received = 0;
    let intact = true;
    let seen: string | undefined;
    let settled = false;
    const finish = (error?: string) => {
      if (settled) return;
      settled = true;
      resolve({
        ...(source ? { source } : {}), ...(seen ? { seen } : {}), expected: bytes, received,
        intact: intact && !error && received === bytes, ...(error ? { error } : {}), elapsedMs: Math.round(performance.now() - started),
      });
    };
    const target = new URL(url);
    target.searchParams.set('bytes', String(bytes));
    const req = http.get(target, { agent: false, localAddress: source }, (res) => {
      seen = res.headers['x-seen-address'] as string | undefined;
      res.on('data', (chunk: Buffer) => {
        for (let i = 0; i < chunk.length && intact; i++) if (chunk[i] !== (received + i) % PATTERN_PERIOD) intact = false;
        received += chunk.length;
        progress[index] = received;
      });
      res.on('end', () => finish(received === bytes ? undefined : 'SHORT'));
      res.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
      res.on('aborted', () => finish('ABORTED'));
    });
    req.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
    req.setTimeout(timeoutMs, () => {
      req.destroy();
      finish('ETIMEDOUT');
    });
  });
}

async function get(values: Record<string, string | undefined>): Promise<void> {
  const count = Number(values.count ?? '8');
  const bytes = Number(values.bytes);
  const sources = values.sources ? values.sources.split(',') : [];
  const progress = Array<number>(count).fill(0);
  const began = performance.now();
  const ticker = setInterval(() => {
    process.stdout.write(JSON.stringify({ progress, atMs: Math.round(performance.now() - began) } satisfies TransfersProgress) + '\n');
  }, Number(values['progress-ms'] ?? '200'));
  const transfers = await Promise.all(Array.from({ length: count }, (_, i) =>
    download(values.url!, bytes, sources.length ? sources[i % sources.length] : undefined, Number(values['timeout-ms'] ?? '30000'), progress, i)));
  clearInterval(ticker);
  process.stdout.write(JSON.stringify({ transfers }) + '\n');
}

// A program, not a library: import its types only (`import type`), which runs nothing.
{
  const [mode, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: {
      host: { type: 'string', default: '192.0.2.10' }, port: { type: 'string', default: '8090' },
      url: { type: 'string' }, bytes: { type: 'string' }, count: { type: 'string' }, sources: { type: 'string' },
      'progress-ms': { type: 'string' }, 'timeout-ms': { type: 'string' },
    },
  });
  if (mode === 'serve') serve(values.host!, Number(values.port));
  else if (mode === 'get' && values.url && values.bytes) void get(values);
  else {
    process.stderr.write('usage: transfers serve [--host H] [--port P] | transfers get --url URL --bytes N [--count C] [--sources a,b] [--progress-ms MS] [--timeout-ms MS]\n');
    process.exit(2);
  }
}
