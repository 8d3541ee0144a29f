// `uplinkd doctor`: what on this machine would break uplinkd, one finding per
// hazard with its fix. The checks only read (files, /proc, `ip`/`nft`/
// `conntrack`/`nmcli` listings); nothing is changed. The daemon logs the
// same findings once at start.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_CONFIG_PATH, formatDiagnostic, loadConfigFile } from '../config/load.js';
import type { Config } from '../config/types.js';
import { readFacts } from '../kernel/facts.js';
import { systemRunner, type Runner } from '../kernel/runner.js';
import { DEFAULT_OWNERSHIP } from '../ownership.js';
import { checkNetworkManager } from './networkmanager.js';
import { checkNetworkd } from './networkd.js';
import { checkNftablesConf } from './nftables.js';
import { checkLiveRpFilter, checkSysctlFiles } from './rp-filter.js';
import { checkForeignDefaults, checkForeignRules, checkWideRoutes, ownRulesPresent, readMainRoutes, readRules } from './routing.js';
import { checkKernelFeatures, checkTools } from './tools.js';
import { Files, type Finding, type MachineView } from './view.js';

export type { Finding } from './view.js';

export interface DiagnoseOptions {
  /** Config files and /proc are read under it; default `/`. */
  root?: string;
  runner?: Runner;
  /** Default: $PATH. */
  path?: string;
  /** Without one, the checks about uplinks and the LAN are skipped. */
  config?: Config;
}

export async function diagnose(opts: DiagnoseOptions = {}): Promise<Finding[]> {
  const view: MachineView = { root: opts.root ?? '/', runner: opts.runner ?? systemRunner, path: opts.path ?? process.env.PATH ?? '', config: opts.config };
  const { config } = view;
  const files = new Files(view.root);
  const rulePriority = (config?.kernel ?? DEFAULT_OWNERSHIP).rulePriority;

  const tools = checkTools(view);
  const findings = [...tools.findings, ...(await checkKernelFeatures(view, tools.present))];
  findings.push(...checkNetworkd(files), ...checkNftablesConf(files));
  if (tools.present.has('ip')) {
    const routes = (await readMainRoutes(view)) ?? [];
    const rules = (await readRules(view)) ?? [];
    findings.push(...checkWideRoutes(routes, rulePriority), ...(await checkForeignRules(view, rules, rulePriority)));
    if (config) {
      findings.push(...checkForeignDefaults(routes, config), ...checkLiveRpFilter(files, config.uplinks, ownRulesPresent(rules, rulePriority)));
    }
  }
  if (config) findings.push(...checkSysctlFiles(files, config.uplinks), ...(await checkNetworkManager(view, config.uplinks)));
  return findings;
}

export function formatFinding(f: Finding): string {
  return `${f.id}: ${f.message}; fix: ${f.fix}`;
}

export interface DoctorReport {
  /** What to print: notes about skipped checks, then one line per finding (or that none was found). */
  lines: string[];
  findings: Finding[];
}

/**
 * The command: finds and loads the config (-c, $UPLINKD_CONFIG, else the
 * default path under the root), then diagnoses. A config that does not load
 * is a finding itself; the per-uplink checks are then skipped.
 */
export async function runDoctor(opts: { config?: string; root?: string }, runner: Runner = systemRunner, toolPath = process.env.PATH ?? ''): Promise<DoctorReport> {
  const root = opts.root ?? '/';
  const given = opts.config || process.env.UPLINKD_CONFIG;
  const path = given ?? join(root, DEFAULT_CONFIG_PATH);
  const lines: string[] = [];
  const findings: Finding[] = [];
  let config: Config | undefined;
  if (!given && !existsSync(path)) {
    lines.push(`no config (${path}): skipped per-uplink checks`);
  } else {
    const facts = await readFacts(runner).catch(() => undefined);
    const loaded = loadConfigFile(path, { isPointToPoint: (name) => facts?.interfaces.find((i) => i.name === name)?.pointToPoint });
    if (loaded.ok) {
      config = loaded.config;
    } else {
      const n = loaded.errors.length;
      findings.push({
        id: 'config',
        message: `${path} is not a valid config (${n} error${n === 1 ? '' : 's'}, the first: ${formatDiagnostic(loaded.errors[0])}), so uplinkd will not start`,
        fix: `uplinkd check -c ${path} lists every error`,
      });
      lines.push(`invalid config: skipped per-uplink checks`);
    }
  }
  findings.push(...(await diagnose({ root, runner, path: toolPath, config })));
  lines.push(...(findings.length ? findings.map(formatFinding) : ['no problems found']));
  return { lines, findings };
}
