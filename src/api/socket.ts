// The root-only control socket: `uplinkd status` and `uplinkd explain` (and
// the tests and lab) ask the running daemon here. One request line per
// connection: `status`, or `explain {flow as JSON}`; one JSON reply.

import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from '../log.js';
import { FlowError, type Explanation, type Flow } from '../plan/explain.js';
import type { Status } from './status.js';

/** Where the daemon's view comes from, fresh at each request. */
export type StatusSource = () => Promise<Status>;

export interface ControlHandlers {
  status: StatusSource;
  /** Rejects with a message for the client when the flow cannot be explained. */
  explain: (flow: Flow) => Promise<Explanation>;
}

/** Serves one request per connection: the client writes its line, reads one JSON reply, done. */
export async function serveControlSocket(path: string, handlers: ControlHandlers, log: Logger): Promise<net.Server> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // A socket file left by a daemon that died is stale: nobody can own it now,
  // since `run` refuses to start while another daemon answers (see cli.ts).
  rmSync(path, { force: true });
  const server = net.createServer((socket) => {
    socket.setEncoding('utf8');
    let request = '';
    socket.on('data', async (chunk: string) => {
      request += chunk;
      if (!request.includes('\n')) return;
      const line = request.trim();
      const reply = async (): Promise<unknown> => {
        if (line === 'status') return handlers.status();
        if (line.startsWith('explain ')) return { explanation: await handlers.explain(JSON.parse(line.slice('explain '.length)) as Flow) };
        return { error: `unknown request ${JSON.stringify(line)}` };
      };
      // usage: the flow itself cannot be (the client's exit 2), not the daemon failing.
      const failed = (err: unknown) => ({ error: err instanceof Error ? err.message : String(err), ...(err instanceof FlowError ? { usage: true } : {}) });
      socket.end(JSON.stringify(await reply().catch(failed)) + '\n');
    });
    socket.on('error', () => {});
  });
  // Created 0600 from the start: no window in which others could connect.
  const previous = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(path, resolve));
  } finally {
    process.umask(previous);
  }
  chmodSync(path, 0o600);
  log.debug({ socket: path }, `control socket ${path}`);
  return server;
}

/** Asks a running daemon for its status; undefined when none answers. */
export function requestStatus(path: string, timeoutMs = 2000): Promise<Status | undefined> {
  return request<Status>(path, 'status', timeoutMs);
}

/** Asks a running daemon to explain a flow; undefined when none answers. */
export function requestExplain(path: string, flow: Flow, timeoutMs = 5000): Promise<{ explanation?: Explanation; error?: string; usage?: boolean } | undefined> {
  return request(path, `explain ${JSON.stringify(flow)}`, timeoutMs);
}

function request<T>(path: string, line: string, timeoutMs: number): Promise<T | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect(path);
    let reply = '';
    const done = (value: T | undefined) => {
      socket.destroy();
      resolve(value);
    };
    socket.setTimeout(timeoutMs, () => done(undefined));
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${line}\n`));
    socket.on('data', (d: string) => (reply += d));
    socket.on('end', () => {
      try {
        done(JSON.parse(reply) as T);
      } catch {
        done(undefined);
      }
    });
    socket.on('error', () => done(undefined));
  });
}
