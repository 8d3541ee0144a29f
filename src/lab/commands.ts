// `uplinkd lab …`: the lab's commands. The lab name comes from --name (on
// `lab` or on the subcommand), else $UPLINKD_LAB, else "lab". Errors are
// thrown for the CLI to report; `lab exec` exits with its command's code.

import type { Command } from 'commander';
import { DEMO_LAB, DemoInterrupted, labDemo } from './demo.js';
import {
  describeLab, labDhcpStart, labDhcpStop, labDown, labExec, labFail, labHeal, labRaMove, labRenumber, labUp, loadLab, type LabState,
} from './lab.js';
import { describePair, labFailRouter, labHealRouter, labUpPair, labWaitForVipHolder, pairFiles, vrrpState } from './pair.js';

const say = (text: string) => process.stdout.write(text + '\n');

function labName(cmd: Command): string {
  return (cmd.optsWithGlobals().name as string | undefined) ?? process.env.UPLINKD_LAB ?? 'lab';
}

/** `isp2,3` → [2, 3]: uplinks by name or 1-based number (labUp checks the range). */
function uplinkList(option: string, text: string | undefined): number[] | undefined {
  return text?.split(',').map((item) => {
    const k = /^(?:isp)?(\d+)$/.exec(item.trim())?.[1];
    if (k === undefined) throw new Error(`${option}: '${item}' is not an uplink (isp1, isp2, … or 1, 2, …)`);
    return Number(k);
  });
}

export function registerLabCommands(program: Command): void {
  const lab = program
    .command('lab')
    .description('a multi-uplink network made of network namespaces, to try uplinkd on')
    .option('--name <name>', 'lab name (default: $UPLINKD_LAB, else "lab")')
    // Options after a subcommand belong to it: lets `lab exec` pass its command's options through.
    .enablePositionalOptions();
  const sub = (spec: string, description: string) =>
    lab.command(spec).description(description).option('--name <name>', 'lab name');

  sub('up', 'build the lab: LAN host, router (or with --pair two), one ISP per uplink, internet with servers')
    .option('--uplinks <n>', 'number of uplinks, 1..8', '2')
    .option('--capacity <rates>', 'tc rates, one for all or one per uplink, e.g. 20mbit,10mbit')
    .option('--point-to-point <uplinks>', 'uplinks (isp2 or 2, comma-separated) addressed like PPPoE: a /32 with a peer, no gateway')
    .option('--dhcp <uplinks>', 'uplinks (isp2 or 2, comma-separated) addressed by a real DHCP server (dnsmasq) and client (dhcpcd)')
    .option('--host', "a single multihomed machine: no LAN host, the 'router' node is the host and the config has no lan")
    .option('--pair', 'two routers r1 and r2 as one (keepalived VRRP, conntrackd FTFW over a sync link), IPv4 only; without uplinkd')
    .action(async (opts: { uplinks: string; capacity?: string; pointToPoint?: string; dhcp?: string; host?: boolean; pair?: boolean }, cmd: Command) => {
      const capacities = opts.capacity?.split(',');
      if (opts.pair) {
        const other = (['pointToPoint', 'dhcp', 'host'] as const).find((o) => opts[o] !== undefined);
        if (other) throw new Error(`--pair does not go with --${other.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
        say(describePair(await labUpPair({ name: labName(cmd), uplinks: Number(opts.uplinks), capacities })));
        return;
      }
      const pointToPoint = uplinkList('--point-to-point', opts.pointToPoint);
      const dhcp = uplinkList('--dhcp', opts.dhcp);
      const state = await labUp({ name: labName(cmd), uplinks: Number(opts.uplinks), capacities, pointToPoint, dhcp, host: opts.host });
      say(describeLab(state));
    });

  sub('exec <node> <command...>', 'run a command in a node: lan, router (r1, r2 in a pair), inet, isp1..N')
    .passThroughOptions()
    .action(async (node: string, command: string[], _opts: unknown, cmd: Command) => {
      // Passed through as given, so the `--` that separates it is still there.
      if (command[0] === '--') command = command.slice(1);
      if (command.length === 0) throw new Error('lab exec: no command given');
      const { code } = await labExec(labName(cmd), node, command, { inherit: true });
      process.exit(code);
    });

  sub('fail <uplink>', 'break an uplink')
    .option('--mode <mode>', 'link | upstream | loss:N%', 'upstream')
    .option('--family <family>', 'ipv4 | ipv6: fail upstream or loss:N% for that family only (default: both; not with link)')
    .action(async (uplink: string, opts: { mode: string; family?: string }, cmd: Command) => {
      await labFail(labName(cmd), uplink, opts.mode, opts.family);
      say(`${uplink}: failed (${opts.mode}${opts.family ? `, ${opts.family} only` : ''})`);
    });

  sub('heal <uplink>', 'undo whatever fail did to an uplink, for both families').action(async (uplink: string, _opts: unknown, cmd: Command) => {
    await labHeal(labName(cmd), uplink);
    say(`${uplink}: healed`);
  });

  sub('renumber <uplink>', 'a DHCP renew bringing a new address and gateway (through the real client on a --dhcp uplink)').action(
    async (uplink: string, _opts: unknown, cmd: Command) => {
      const u = await labRenumber(labName(cmd), uplink);
      const how = u.dhcp ? ` (the DHCP client applied it ${u.tookMs} ms after being told to rebind)` : '';
      say(`${u.name}: ${u.routerIf} is now ${u.address}/${u.prefixLen} via ${u.gateway}${how}`);
    },
  );

  sub('dhcp-stop <uplink>', "stop a --dhcp uplink's DHCP server, so its lease runs out").action(
    async (uplink: string, _opts: unknown, cmd: Command) => {
      const { uplink: u, leaseLeftS } = await labDhcpStop(labName(cmd), uplink);
      const left = leaseLeftS === undefined ? 'no lease left' : `its lease on ${u.routerIf} expires in ${leaseLeftS} s`;
      say(`${u.name}: DHCP server stopped; ${left}`);
    },
  );

  sub('dhcp-start <uplink>', "start a --dhcp uplink's DHCP server again; the client rebinds and gets a lease").action(
    async (uplink: string, _opts: unknown, cmd: Command) => {
      const u = await labDhcpStart(labName(cmd), uplink);
      say(`${u.name}: DHCP server started; ${u.routerIf} has ${u.address}/${u.prefixLen} via ${u.gateway} again (${u.tookMs} ms)`);
    },
  );

  sub('ra-move <uplink>', "the ISP's IPv6 router changes: the old one says goodbye, a new one advertises from another link-local address").action(
    async (uplink: string, _opts: unknown, cmd: Command) => {
      const { uplink: u, from, to, tookMs } = await labRaMove(labName(cmd), uplink);
      say(`${u.name}: ${u.routerIf}'s IPv6 default route is now via ${to} (was ${from}; ${tookMs} ms)`);
    },
  );

  sub('fail-router <router>', 'a power loss of r1 or r2 of a pair: its links down, everything in it SIGKILLed').action(
    async (router: string, _opts: unknown, cmd: Command) => {
      const name = labName(cmd);
      const { router: r, downAt } = await labFailRouter(name, router);
      const killed = r.daemon?.restartOnHeal ? ' (uplinkd with it; heal-router starts it again)' : '';
      say(`${r.name}: powered off: links down, keepalived, conntrackd and everything else killed${killed}`);
      const peer = r.name === 'r1' ? 'r2' : 'r1';
      const tookMs = await labWaitForVipHolder(name, peer, downAt, 5000);
      say(tookMs === undefined ? `${peer} did not take every VRRP address within 5 s` : `${peer} holds every VRRP address ${tookMs} ms after the power loss`);
    },
  );

  sub('heal-router <router>', 'boot a failed router again: links, conntrackd, keepalived (as backup), and uplinkd if the lab had it running there').action(
    async (router: string, _opts: unknown, cmd: Command) => {
      const { router: r, daemon: restarted } = await labHealRouter(labName(cmd), router);
      const daemon = restarted ? `; uplinkd running again (pid ${restarted.pid}, log ${pairFiles(r).uplinkdLog})` : '';
      const vrrp = vrrpState(r) === 'MASTER' ? 'VRRP master (the other router is down)' : 'VRRP backup (the addresses stay where they are: nopreempt)';
      say(`${r.name}: up again as ${vrrp}${daemon}`);
    },
  );

  sub('down', 'remove the lab (also a half-built one)').action(async (_opts: unknown, cmd: Command) => {
    await labDown(labName(cmd));
    say(`lab ${labName(cmd)} is down`);
  });

  sub('demo', 'the guided tour: lab up, uplinkd in the router, traffic, an uplink failed and healed, measured failover and failback, lab down')
    .option('--host', "the tour of a single multihomed machine (lab up --host): its own connections' shares and failover")
    .option('--pair', 'the tour of a router pair (lab up --pair): downloads in flight while r1 loses power, and the takeover by r2')
    .action(async (opts: { host?: boolean; pair?: boolean }, cmd: Command) => {
      if (opts.host && opts.pair) throw new Error('lab demo: --host or --pair, not both');
      // Its own default name, so the tour never collides with a lab someone is using.
      const name = (cmd.optsWithGlobals().name as string | undefined) ?? DEMO_LAB;
      try {
        await labDemo(name, { host: opts.host ?? false, pair: opts.pair ?? false });
      } catch (err) {
        if (err instanceof DemoInterrupted) process.exit(130); // the shell's convention for Ctrl-C
        throw err;
      }
    });

  sub('status', 'print the lab')
    .option('--json', 'the state as JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const state = loadLab(labName(cmd));
      say(opts.json ? JSON.stringify(state, null, 2) : describe(state));
    });
}

function describe(state: LabState): string {
  return state.pair ? describePair(state) : describeLab(state);
}
