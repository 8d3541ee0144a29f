// One structured line per event (pino JSON), or the same lines made readable
// when a person watches the terminal.

import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

export function createLogger(level = process.env.UPLINKD_LOG_LEVEL ?? 'info'): Logger {
  const options = { level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime };
  if (process.stdout.isTTY) {
    return pino(options, pretty({ colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'event', sync: true }));
  }
  return pino(options, pino.destination({ dest: 1, sync: true }));
}
