// Finding the cgroup v2 hierarchy, naming cgroups for nft, and telling when
// the cgroups a config names changed (kernel/cgroups.ts).

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CGROUP_IDLE_POLL_MS, CGROUP_POLL_MS, cgroup2MountPoint, cgroupChanges, cgroupLevel, nftCgroupPath, readCgroups, watchCgroups } from '../../src/kernel/cgroups.js';

const line = (id: number, root: string, mountPoint: string, fstype: string) =>
  `${id} 23 0:${id} ${root} ${mountPoint} rw,relatime shared:${id} - ${fstype} ${fstype} rw`;

const HYBRID = [
  line(31, '/', '/sys/fs/cgroup', 'tmpfs'),
  line(32, '/', '/sys/fs/cgroup/cpu', 'cgroup'),
  line(40, '/', '/sys/fs/cgroup/systemd', 'cgroup'),
  line(41, '/', '/sys/fs/cgroup/unified', 'cgroup2'),
].join('\n');
const UNIFIED = [line(30, '/', '/sys', 'sysfs'), line(31, '/', '/sys/fs/cgroup', 'cgroup2')].join('\n');

describe('the cgroup v2 hierarchy', () => {
  it('is found at /sys/fs/cgroup on a unified layout and at /sys/fs/cgroup/unified on a hybrid one', () => {
    assert.equal(cgroup2MountPoint(UNIFIED), '/sys/fs/cgroup');
    assert.equal(cgroup2MountPoint(HYBRID), '/sys/fs/cgroup/unified');
  });

  it('is not found under `ip netns exec`, whose fresh /sys has no cgroup mounts, nor in a bind mount of a subtree', () => {
    assert.equal(cgroup2MountPoint(line(48, '/', '/sys', 'sysfs')), undefined);
    assert.equal(cgroup2MountPoint(line(50, '/system.slice', '/sys/fs/cgroup', 'cgroup2')), undefined);
  });

  it('may be mounted anywhere, with escapes in the path', () => {
    assert.equal(cgroup2MountPoint(line(60, '/', '/run/my\\040cgroups', 'cgroup2')), '/run/my cgroups');
  });
});

describe('naming a cgroup for nft', () => {
  it('is relative to /sys/fs/cgroup, where nft 1.0.6 looks cgroup paths up', () => {
    assert.equal(nftCgroupPath('/sys/fs/cgroup', 'system.slice/restic.service'), 'system.slice/restic.service');
    assert.equal(nftCgroupPath('/sys/fs/cgroup/unified', 'system.slice/restic.service'), 'unified/system.slice/restic.service');
    assert.equal(nftCgroupPath('/run/cgroup2', 'user.slice'), '../../../run/cgroup2/user.slice');
  });

  it('counts the level from the hierarchy root', () => {
    assert.equal(cgroupLevel('user.slice'), 1);
    assert.equal(cgroupLevel('system.slice/restic.service'), 2);
  });
});

describe('which named cgroups exist', () => {
  it('reads their ids (directory inodes) under the mount point the mountinfo names', () => {
    const root = mkdtempSync(join(tmpdir(), 'uplinkd-cgroups-'));
    try {
      const mountinfo = join(root, 'mountinfo');
      const hierarchy = join(root, 'cg2');
      mkdirSync(join(hierarchy, 'system.slice', 'restic.service'), { recursive: true });
      writeFileSync(mountinfo, line(41, '/', hierarchy, 'cgroup2') + '\n');
      const first = readCgroups(['system.slice/restic.service', 'system.slice/gone.service'], mountinfo);
      assert.equal(first.mountPoint, hierarchy);
      assert.deepEqual(first.present, [{
        path: 'system.slice/restic.service',
        id: statSync(join(hierarchy, 'system.slice', 'restic.service')).ino,
        nftPath: nftCgroupPath(hierarchy, 'system.slice/restic.service'),
      }]);

      // A service restart: removed and created again, which makes a new directory.
      rmdirSync(join(hierarchy, 'system.slice', 'restic.service'));
      mkdirSync(join(hierarchy, 'system.slice', 'gone.service'));
      mkdirSync(join(hierarchy, 'system.slice', 'restic.service'));
      const second = readCgroups(['system.slice/restic.service', 'system.slice/gone.service'], mountinfo);
      const paths = ['system.slice/restic.service', 'system.slice/gone.service'];
      assert.match(cgroupChanges(paths, first.present, second.present), /cgroup system\.slice\/gone\.service appeared/);
      assert.equal(cgroupChanges(paths, second.present, second.present), '');
      // (An ordinary file system may hand the new directory the old inode; cgroupfs never does: its ids only grow.)
      assert.match(cgroupChanges(paths, second.present, first.present), /cgroup system\.slice\/gone\.service is gone/);
      assert.deepEqual(readCgroups(paths, join(root, 'no-mountinfo')), { present: [] });
    } finally {
      rmSync(root, { recursive: true });
    }
  });

  it('says what changed: appeared, gone, recreated', () => {
    const a = { path: 'a.service', id: 10, nftPath: 'a.service' };
    const b = { path: 'b.service', id: 11, nftPath: 'b.service' };
    assert.equal(cgroupChanges(['a.service', 'b.service'], [a], [{ ...a, id: 12 }, b]), 'cgroup a.service recreated, cgroup b.service appeared');
    assert.equal(cgroupChanges(['a.service'], [a, b], []), 'cgroup a.service is gone');
  });
});

describe('watchCgroups', () => {
  it('looks twice a second while rules name cgroups, and only every 5 s while none does', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    let named: string[] = [];
    let looks = 0;
    const seen: string[] = [];
    // A cgroup the plan knew that is not there now: each look that reads it reports it gone.
    const known = () => (looks++, [{ path: 'uplinkd-test/none', id: 1, nftPath: 'uplinkd-test/none' }]);
    const watcher = watchCgroups(() => named, known, (what) => seen.push(what));
    try {
      t.mock.timers.tick(CGROUP_IDLE_POLL_MS - 1);
      assert.equal(looks, 0, 'no cgroup named: nothing read');
      named = ['uplinkd-test/none'];
      // A reload now names one: found at the next idle look, then followed twice a second.
      t.mock.timers.tick(1);
      assert.equal(looks, 1);
      assert.deepEqual(seen, ['cgroup uplinkd-test/none is gone']);
      t.mock.timers.tick(CGROUP_POLL_MS);
      assert.equal(looks, 2);
      named = [];
      t.mock.timers.tick(CGROUP_POLL_MS);
      t.mock.timers.tick(CGROUP_IDLE_POLL_MS - 1);
      assert.equal(looks, 2, 'none named again: back to idle looks that read nothing');
    } finally {
      watcher.stop();
    }
  });

  it('stops looking once stopped, also when stopped from its own callback', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    let looks = 0;
    const watcher = watchCgroups(() => ['uplinkd-test/none'], () => (looks++, [{ path: 'uplinkd-test/none', id: 1, nftPath: 'x' }]), () => watcher.stop());
    t.mock.timers.tick(CGROUP_POLL_MS);
    t.mock.timers.tick(10 * CGROUP_POLL_MS);
    assert.equal(looks, 1);
  });
});
