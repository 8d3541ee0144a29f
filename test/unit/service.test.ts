// The service packaging as a user meets it: scripts/install.sh into a
// temporary root (--destdir, never this machine's /etc or /usr/local), the
// files it puts there, the unit accepted by `systemd-analyze verify` as
// installed, the launcher running, an existing config never overwritten,
// and --uninstall leaving the root as it found it, except a config the user
// changed.

import assert from 'node:assert/strict';
import {
  appendFileSync, chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { runCommand, type CommandResult } from '../../src/kernel/runner.js';

const CHECKOUT = fileURLToPath(new URL('../../', import.meta.url));
const INSTALL = join(CHECKOUT, 'scripts/install.sh');
const UNIT = readFileSync(join(CHECKOUT, 'packaging/uplinkd.service'), 'utf8');
const EXAMPLE = readFileSync(join(CHECKOUT, 'packaging/uplinkd.yaml'), 'utf8');
const PREFIX = '/opt/uplinkd';

const roots: string[] = [];
after(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

/**
 * A temporary root laid out like a Debian system as far as
 * `systemd-analyze verify --root` looks: the distribution's unit files (for
 * sysinit.target, multi-user.target) and /bin/kill for ExecReload.
 */
function debianRoot(): string {
  const root = mkdtempSync(join(tmpdir(), 'uplinkd-root-'));
  roots.push(root);
  mkdirSync(join(root, 'usr/bin'), { recursive: true });
  cpSync('/usr/bin/kill', join(root, 'usr/bin/kill'));
  symlinkSync('usr/bin', join(root, 'bin'));
  cpSync('/usr/lib/systemd/system', join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
  return root;
}

/** install.sh, always into a staging root: these tests never touch the machine's own /etc or /usr/local. */
function install(root: string, ...args: string[]): Promise<CommandResult> {
  assert.ok(root.startsWith(tmpdir()) && root.length > tmpdir().length + 1);
  return runCommand(['bash', INSTALL, '--destdir', root, '--prefix', PREFIX, ...args]);
}

async function mustInstall(root: string, ...args: string[]): Promise<string> {
  const r = await install(root, ...args);
  assert.equal(r.code, 0, `install.sh ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
  return r.stdout;
}

/** Every path under root with its kind, sorted: what "as it was" is compared by. */
function listing(root: string, dir = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, dir)).sort()) {
    const rel = join(dir, name);
    const st = lstatSync(join(root, rel));
    const kind = st.isSymbolicLink() ? 'l' : st.isDirectory() ? 'd' : 'f';
    out.push(`${kind} /${rel}`);
    if (kind === 'd') out.push(...listing(root, rel));
  }
  return out;
}

const at = (root: string, path: string) => join(root, path);
/** Listings in one order by path, to compare as sets. */
const sorted = (entries: string[]) => [...entries].sort((a, b) => (a.slice(2) < b.slice(2) ? -1 : a.slice(2) > b.slice(2) ? 1 : 0));

test('install puts the app, the launcher, the unit and the example config in place, and nothing else', async () => {
  const root = debianRoot();
  const before = listing(root);
  const out = await mustInstall(root);
  assert.match(out, /systemctl daemon-reload && systemctl enable --now uplinkd/);

  const lib = at(root, `${PREFIX}/lib/uplinkd`);
  for (const f of ['dist/cli.js', 'package.json', 'node_modules/pino/package.json', 'node_modules/zod/package.json', 'install-manifest']) {
    assert.ok(existsSync(join(lib, f)), f);
  }
  for (const dev of ['typescript', 'tsx', 'esbuild', '@types']) assert.ok(!existsSync(join(lib, 'node_modules', dev)), `dev package ${dev} left out`);
  assert.ok(!existsSync(join(lib, 'package-lock.json')));

  const launcher = at(root, `${PREFIX}/bin/uplinkd`);
  assert.equal(statSync(launcher).mode & 0o777, 0o755);
  const node = /^exec '([^']+)' /m.exec(readFileSync(launcher, 'utf8'))?.[1];
  assert.ok(node?.startsWith('/') && existsSync(node), `the launcher names an absolute Node.js: ${node}`);

  // The shipped unit, with only ExecStart moved to the installed launcher.
  const unit = readFileSync(at(root, '/etc/systemd/system/uplinkd.service'), 'utf8');
  assert.equal(unit, UNIT.replace(/^ExecStart=.*$/m, `ExecStart=${PREFIX}/bin/uplinkd run`));
  assert.equal(readFileSync(at(root, '/etc/uplinkd/uplinkd.yaml'), 'utf8'), EXAMPLE);

  const now = new Set(listing(root));
  const added = [...now].filter((p) => !before.includes(p));
  const outside = added.filter((p) => !/^[dfl] \/(opt(\/uplinkd(\/.*)?)?|etc(\/systemd(\/system(\/uplinkd\.service)?)?|\/uplinkd(\/uplinkd\.yaml)?)?)$/.test(p));
  assert.deepEqual(outside, [], 'nothing outside the app, the launcher, the unit and the config');
  assert.ok(before.every((p) => now.has(p)), 'nothing removed');
});

test('systemd-analyze verify accepts the unit as installed, and the launcher runs', async () => {
  const root = debianRoot();
  await mustInstall(root);
  // --root makes verify look for ExecStart's launcher and /bin/kill in the
  // installed tree; it reports unknown or malformed settings on stderr
  // without failing, so stderr must be empty too.
  const verify = await runCommand(['systemd-analyze', 'verify', `--root=${root}`, '/etc/systemd/system/uplinkd.service']);
  assert.equal(verify.code, 0, verify.stderr);
  assert.equal(verify.stderr, '');

  const launcher = at(root, `${PREFIX}/bin/uplinkd`);
  const help = await runCommand([launcher, '--help']);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^Usage: uplinkd/);
  // The production packages are enough to load and validate the example config.
  const check = await runCommand([launcher, 'check', '-c', at(root, '/etc/uplinkd/uplinkd.yaml')]);
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, /valid \(2 uplinks, 0 rules\)/);
});

test('a second install keeps the config the user edited; uninstall keeps it too and removes everything else', async () => {
  const root = debianRoot();
  const before = listing(root);
  await mustInstall(root);
  const config = at(root, '/etc/uplinkd/uplinkd.yaml');
  appendFileSync(config, 'sticky: 10m\n');
  const edited = readFileSync(config, 'utf8');

  const again = await mustInstall(root);
  assert.match(again, /kept the existing \/etc\/uplinkd\/uplinkd.yaml/);
  assert.equal(readFileSync(config, 'utf8'), edited, 'not overwritten');

  const r = await install(root, '--uninstall');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /kept \/etc\/uplinkd\/uplinkd.yaml: changed since install/);
  assert.equal(readFileSync(config, 'utf8'), edited);
  assert.deepEqual(sorted(listing(root)), sorted([...before, 'd /etc', 'd /etc/uplinkd', 'f /etc/uplinkd/uplinkd.yaml']));
});

test('uninstall after an untouched install leaves the root exactly as it was, and a file the user added stays, through a reinstall too', async () => {
  const root = debianRoot();
  const before = listing(root);
  await mustInstall(root);
  await mustInstall(root); // a reinstall must not make the manifest forget anything
  const r = await install(root, '--uninstall');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(listing(root), before);

  await mustInstall(root);
  writeFileSync(at(root, `${PREFIX}/lib/uplinkd/local-notes.txt`), 'mine\n');
  await mustInstall(root); // the reinstall must not adopt it either
  assert.equal((await install(root, '--uninstall')).code, 0);
  assert.deepEqual(sorted(listing(root)),
    sorted([...before, 'd /opt', 'd /opt/uplinkd', 'd /opt/uplinkd/lib', 'd /opt/uplinkd/lib/uplinkd', 'f /opt/uplinkd/lib/uplinkd/local-notes.txt']));
});

test('refusals: no Node.js >= 20.19, an unbuilt checkout, a unit not ours, uninstall while enabled or not installed', async () => {
  const root = debianRoot();
  const before = listing(root);

  const oldNode = join(root, 'old-node');
  writeFileSync(oldNode, '#!/bin/sh\n[ "$1" = --version ] && echo v18.19.0\nexit 1\n');
  chmodSync(oldNode, 0o755);
  const tooOld = await install(root, '--node', oldNode);
  assert.equal(tooOld.code, 1);
  assert.match(tooOld.stderr, /needs Node.js >= 20.19; .*old-node is v18.19.0/);
  rmSync(oldNode);
  assert.deepEqual(listing(root), before, 'nothing installed');

  const bare = mkdtempSync(join(tmpdir(), 'uplinkd-checkout-'));
  roots.push(bare);
  mkdirSync(join(bare, 'scripts'));
  cpSync(INSTALL, join(bare, 'scripts/install.sh'));
  const unbuilt = await runCommand(['bash', join(bare, 'scripts/install.sh'), '--destdir', root]);
  assert.equal(unbuilt.code, 1);
  assert.match(unbuilt.stderr, /not built; run scripts\/setup.sh first/);

  const notInstalled = await install(root, '--uninstall');
  assert.equal(notInstalled.code, 1);
  assert.match(notInstalled.stderr, /nothing to uninstall/);

  mkdirSync(at(root, '/etc/systemd/system'), { recursive: true });
  writeFileSync(at(root, '/etc/systemd/system/uplinkd.service'), '[Service]\nExecStart=/usr/sbin/someone-elses\n');
  const foreign = await install(root);
  assert.equal(foreign.code, 1);
  assert.match(foreign.stderr, /uplinkd.service exists and was not installed by this script/);
  rmSync(at(root, '/etc'), { recursive: true });

  await mustInstall(root);
  const wants = at(root, '/etc/systemd/system/multi-user.target.wants');
  mkdirSync(wants);
  symlinkSync('/etc/systemd/system/uplinkd.service', join(wants, 'uplinkd.service'));
  const enabled = await install(root, '--uninstall');
  assert.equal(enabled.code, 1);
  assert.match(enabled.stderr, /still enabled; first run: systemctl disable --now uplinkd/);
  assert.ok(existsSync(at(root, `${PREFIX}/bin/uplinkd`)), 'nothing removed');
  rmSync(wants, { recursive: true });
  assert.equal((await install(root, '--uninstall')).code, 0);
  assert.deepEqual(listing(root), before);
});

test('an install that stops part-way still records what it added, and --uninstall takes it away', async () => {
  const root = debianRoot();
  writeFileSync(at(root, '/etc'), 'a file where /etc should be a directory\n');
  const before = listing(root);
  const r = await install(root);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /stopped part-way; what it added is listed in .*install-manifest, and --uninstall removes it/);
  assert.notDeepEqual(listing(root), before);
  assert.equal((await install(root, '--uninstall')).code, 0);
  assert.deepEqual(listing(root), before);
});
