// The command line: check, plan, apply, run, status, flush, lab. Exit codes follow the
// README "Use it on a router": 0 done, 1 invalid config or failed kernel change, 2 usage error,
// 3 `status` with no daemon answering.

import { existsSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { requestExplain, requestStatus } from './api/socket.js';
import { formatDiagnostic, loadConfigFile, resolveConfigPath, type ConfigResult } from './config/load.js';
import { DEFAULT_SOCKET } from './config/schema.js';
import type { Config } from './config/types.js';
import { Daemon } from './daemon/daemon.js';
import { runDoctor } from './doctor/index.js';
import { applyState, flushOwned } from './kernel/apply.js';
import { cgroupFacts, ruleCgroups } from './kernel/cgroups.js';
import { readExplainFacts, readFacts } from './kernel/facts.js';
import { systemRunner } from './kernel/runner.js';
import { registerLabCommands } from './lab/commands.js';
import { createLogger } from './log.js';
import { DEFAULT_OWNERSHIP } from './ownership.js';
import { explain, FlowError, formatExplanation, type Flow } from './plan/explain.js';
import { plan } from './plan/plan.js';
import { renderPlan } from './plan/render.js';
import type { Health, KernelFacts } from './plan/state.js';
import { notifierFromEnvironment } from './service/notify.js';
import { formatStatus } from './api/status.js';
import { parseIpAddress } from './config/net.js';
import { addressFamily } from './config/ipv6.js';
import { parseUser, primaryGroupOf } from './config/process-keys.js';

class ExitError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

const say = (line: string) => process.stdout.write(line + '\n');
const complain = (line: string) => process.stderr.write(line + '\n');

/** Facts from the kernel, or none when they cannot be read (e.g. `check` on a build machine). */
async function tryReadFacts(): Promise<KernelFacts | undefined> {
  try {
    return await readFacts(systemRunner);
  } catch {
    return undefined;
  }
}

function loadWithFacts(path: string, facts: KernelFacts | undefined): ConfigResult {
  return loadConfigFile(path, {
    isPointToPoint: (name) => facts?.interfaces.find((i) => i.name === name)?.pointToPoint,
  });
}

/** Loads and validates the config, printing every diagnostic; throws ExitError(1) if invalid. */
function mustLoad(path: string, facts: KernelFacts | undefined): Config {
  const result = loadWithFacts(path, facts);
  for (const w of result.warnings) complain(formatDiagnostic(w));
  if (!result.ok) {
    for (const e of result.errors) complain(formatDiagnostic(e));
    throw new ExitError(1, `${path}: ${result.errors.length} error${result.errors.length === 1 ? '' : 's'}, nothing changed`);
  }
  return result.config;
}

/** The config and the kernel's facts a plan is made from, as `plan`, `apply` and `explain` make it. */
async function loadForPlanning(path: string): Promise<{ config: Config; facts: KernelFacts }> {
  const facts = await readFacts(systemRunner);
  const config = mustLoad(path, facts);
  // Which cgroups that rules name exist now: the planner leaves out the others.
  facts.cgroups = cgroupFacts(ruleCgroups(config));
  return { config, facts };
}

function downList(value: string | undefined, config: Config): Record<string, Health> {
  const health: Record<string, Health> = {};
  for (const name of (value ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    if (!config.uplinks.some((u) => u.name === name)) {
      throw new ExitError(2, `--down: no uplink named "${name}" (uplinks: ${config.uplinks.map((u) => u.name).join(', ')})`);
    }
    health[name] = 'down';
  }
  return health;
}

function portOf(option: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const port = Number(value);
  if (!/^\d+$/.test(value) || port < 1 || port > 65535) throw new ExitError(2, `${option}: "${value}" is not a port (1-65535)`);
  return port;
}

/** The flow `explain` asks about, checked at the edge: both addresses of one family, real ports, a known user. */
function flowOf(opts: { src: string; dst: string; proto: Flow['proto']; dport?: string; sport?: string; user?: string; cgroup?: string }): Flow {
  for (const [option, value] of [['--src', opts.src], ['--dst', opts.dst]] as const) {
    const parsed = parseIpAddress(value);
    if (!parsed.ok) throw new ExitError(2, `${option}: ${parsed.error}`);
  }
  if (addressFamily(opts.src) !== addressFamily(opts.dst)) throw new ExitError(2, `--src ${opts.src} and --dst ${opts.dst} are not of one family`);
  const flow: Flow = { src: opts.src, dst: opts.dst, proto: opts.proto };
  const dport = portOf('--dport', opts.dport);
  const sport = portOf('--sport', opts.sport);
  if (dport !== undefined) flow.dport = dport;
  if (sport !== undefined) flow.sport = sport;
  if (opts.user !== undefined) {
    const user = parseUser(opts.user);
    if (!user.ok) throw new ExitError(2, `--user: ${user.error}`);
    flow.uid = user.value;
    const gid = primaryGroupOf(user.value);
    if (gid !== undefined) flow.gid = gid;
  }
  // As rules name cgroups: relative to the hierarchy's root, so /system.slice/x is system.slice/x.
  if (opts.cgroup !== undefined) flow.cgroup = opts.cgroup.replace(/^\/+|\/+$/g, '');
  return flow;
}

const configOption = () => new Option('-c, --config <file>', 'config file (default: $UPLINKD_CONFIG or /etc/uplinkd/uplinkd.yaml)');

export function buildProgram(): Command {
  const program = new Command('uplinkd')
    .description('multi-uplink routing for Linux: split access, balancing, failover, pinning')
    .showHelpAfterError()
    .exitOverride();

  program.command('check').description('validate the config').addOption(configOption())
    .action(async (opts: { config?: string }) => {
      const path = resolveConfigPath(opts.config);
      const config = mustLoad(path, await tryReadFacts());
      say(`${path}: valid (${config.uplinks.length} uplinks, ${config.rules.length} rules)`);
    });

  program.command('schema').description('print the JSON Schema of the config file, for editors (README "Configuration reference")')
    .action(async () => {
      const { configJsonSchema } = await import('./config/json-schema.js');
      process.stdout.write(JSON.stringify(configJsonSchema(), null, 2) + '\n');
    });

  program.command('plan').description('print the kernel state it would install, as ip and nft input; changes nothing')
    .addOption(configOption())
    .option('--down <uplinks>', 'plan as if these uplinks (comma-separated) were down')
    .action(async (opts: { config?: string; down?: string }) => {
      const path = resolveConfigPath(opts.config);
      const { config, facts } = await loadForPlanning(path);
      const health = downList(opts.down, config);
      const down = Object.keys(health);
      // --down names uplinks: both their families are taken down.
      process.stdout.write(renderPlan(plan({ config, facts, health, health6: health }), `${path}, ${down.length ? `down: ${down.join(', ')}` : 'all uplinks up'}`));
    });

  program.command('apply').description('install that state once, every uplink taken as up, no tracking')
    .addOption(configOption())
    .action(async (opts: { config?: string }) => {
      const path = resolveConfigPath(opts.config);
      const { config, facts } = await loadForPlanning(path);
      const state = plan({ config, facts });
      for (const u of state.uplinks.filter((x) => x.unusable)) complain(`${path}: warning: ${u.name} unusable: ${u.unusable}`);
      const { changes } = await applyState(state, systemRunner);
      // As wg-quick does: each change as the command that made it; nothing when all was in place.
      for (const c of changes) say(`[#] ${c.args.join(' ')}`);
    });

  program.command('flush').description('remove everything uplinkd owns; needs no config or daemon')
    .addOption(configOption())
    .action(async (opts: { config?: string }) => {
      // The config only matters if it moved the owned ranges; a missing or
      // broken one must not stop a flush.
      const path = resolveConfigPath(opts.config);
      const loaded = loadConfigFile(path);
      const own = loaded.ok ? loaded.config.kernel : DEFAULT_OWNERSHIP;
      if (!loaded.ok && (opts.config || existsSync(path))) complain(`${path}: unreadable or invalid, flushing the default ranges`);
      const changes = await flushOwned(own, systemRunner);
      say(changes.length === 0 ? 'nothing to flush' : `removed: ${changes.map((c) => c.what).join(', ')}`);
    });

  program.command('run').description('the daemon: install or adopt the state, track health, follow kernel events')
    .addOption(configOption())
    .action(async (opts: { config?: string }) => {
      const log = createLogger();
      // Taken out of the environment before anything is spawned (see src/service/notify.ts).
      const service = notifierFromEnvironment(process.env, systemRunner, log);
      const path = resolveConfigPath(opts.config);
      const config = mustLoad(path, await tryReadFacts());
      if (await requestStatus(config.api.socket, 500)) {
        throw new ExitError(1, `another uplinkd answers on ${config.api.socket}; not starting a second one`);
      }
      const daemon = new Daemon(path, config, log);
      await daemon.start();
      service?.start(() => daemon.serviceHealth());
      // One reload at a time, so each RELOADING=1 is answered by its own READY=1.
      let reloads = Promise.resolve();
      await new Promise<void>((resolve) => {
        process.on('SIGHUP', () => {
          reloads = reloads.then(async () => {
            void service?.reloading();
            try {
              await daemon.reload();
            } catch (err) {
              log.error({ event: 'reload-failed' }, `reload failed: ${err instanceof Error ? err.message : String(err)}`);
            } finally {
              void service?.reloaded();
            }
          });
        });
        process.once('SIGTERM', resolve);
        process.once('SIGINT', resolve);
      });
      const stopping = service?.stopping();
      await daemon.stop();
      await stopping;
    });

  program.command('status').description("the running daemon's view")
    .addOption(configOption())
    .option('--json', 'one JSON object (the fields of the table, README "Use it on a router")')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const loaded = loadConfigFile(resolveConfigPath(opts.config));
      const socket = loaded.ok ? loaded.config.api.socket : DEFAULT_SOCKET;
      const status = await requestStatus(socket);
      if (!status) throw new ExitError(3, `uplinkd is not running (no answer on ${socket})`);
      process.stdout.write(opts.json ? JSON.stringify(status, null, 2) + '\n' : formatStatus(status));
    });

  program.command('explain').description('say which uplink a new connection would take now, and why')
    .addOption(configOption())
    .requiredOption('--src <address>', 'source address (a LAN host, or one of this machine\'s own)')
    .requiredOption('--dst <address>', 'destination address')
    .addOption(new Option('--proto <proto>', 'protocol').choices(['tcp', 'udp', 'icmp']).default('tcp'))
    .option('--dport <port>', 'destination port')
    .option('--sport <port>', 'source port')
    .option('--user <user>', "the process's user (name or uid): a connection of this machine")
    .option('--cgroup <path>', "the process's cgroup, e.g. system.slice/restic.service: a connection of this machine")
    .option('--json', 'one JSON object (README "uplinkd explain")')
    .action(async (opts: { config?: string; src: string; dst: string; proto: Flow['proto']; dport?: string; sport?: string; user?: string; cgroup?: string; json?: boolean }) => {
      const flow = flowOf(opts);
      const path = resolveConfigPath(opts.config);
      const loaded = loadConfigFile(path);
      const reply = loaded.ok ? await requestExplain(loaded.config.api.socket, flow) : undefined;
      // A daemon from before `explain` knows only `status`: answer from the config, as with none.
      const live = reply?.error?.startsWith('unknown request') ? undefined : reply;
      if (live?.error) throw new ExitError(live.usage ? 2 : 1, `explain: ${live.error}`);
      let explanation = live?.explanation;
      let source = 'the running daemon';
      if (!explanation) {
        // No daemon: the plan with every uplink up, as `plan` prints it.
        const { config, facts } = await loadForPlanning(path);
        const state = plan({ config, facts });
        const kernel = await readExplainFacts(systemRunner, config.kernel.nftTable);
        try {
          explanation = explain({ config, state, facts, ...kernel }, flow);
        } catch (err) {
          throw new ExitError(err instanceof FlowError ? 2 : 1, `explain: ${err instanceof Error ? err.message : String(err)}`);
        }
        source = `${path}, every uplink taken as up (no daemon answers)`;
      }
      process.stdout.write(opts.json ? JSON.stringify({ source: live ? 'daemon' : 'config', flow, ...explanation }, null, 2) + '\n' : formatExplanation(flow, explanation, source));
    });

  program.command('doctor').description('check this machine for what would break uplinkd, and say how to fix each')
    .addOption(configOption())
    // Tests point the file checks at a fake root.
    .addOption(new Option('--root <dir>', 'read config files and /proc under this directory').hideHelp())
    .action(async (opts: { config?: string; root?: string }) => {
      const report = await runDoctor(opts);
      for (const line of report.lines) say(line);
      const n = report.findings.length;
      if (n > 0) throw new ExitError(1, `${n} problem${n === 1 ? '' : 's'} found`);
    });

  registerLabCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version are not errors; everything else commander rejects is a usage error.
      return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? 0 : 2;
    }
    if (err instanceof ExitError) {
      complain(err.message);
      return err.code;
    }
    complain(`uplinkd: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv);
