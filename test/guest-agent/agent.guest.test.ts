import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { DiagLayout } from '../../acpi/diag/layout.js';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { buildAgentBundle } from '../../build/agent-bundle.js';
import { buildGuestImage, GUEST_AGENT_PATH, GUEST_SH_AGENT_PATH } from '../../build/guest-image.js';
import { installDir } from '../../bake/assets.js';
import { parseMark } from '../../protocol/mark.js';
import { AGENT_VERSION } from '../../guest-agent/version.js';
import type { HeartbeatReport } from '../../host-reader/region/assess.js';
import { openSession, type Session } from '../../host-reader/session.js';
import { qemuArgv } from '../../host-reader/qemu-args/index.js';
import { AgentPingProbe } from '../../monitor/probes/agent-ping.js';
import type { ProbeResult } from '../../monitor/types.js';
import { AGENT_PORT_NAME } from '../../protocol/agent-ping.js';
import { background, launchGuest, stopAllGuests, type Guest } from '../helpers/guest.js';

/**
 * The guest agent in real guests (QEMU TCG, Debian kernel, our SSDT): the host reader sees the agent
 * heartbeat the agent keeps, marks reach the console log and syslog (busybox syslogd). First the Node
 * agent in an image carrying the host's Node (1 GiB guest), then the POSIX-sh agent in the plain
 * busybox guest. The images are passed with a second `-initrd` (QEMU keeps the last one).
 * Timeouts are loose: 2 cores, and other QEMU guests may be running.
 */

let dir: string;
let aml: string;
let layout: DiagLayout;
let bundle: string;
let shAgent: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-agent-guest-'));
  const t = buildDiagSsdt({ kernelPeriodMs: 1000 });
  aml = join(dir, 'diag.aml');
  await writeFile(aml, t.aml);
  layout = t.layout;
  bundle = (await buildAgentBundle({ outfile: join(dir, 'eve-diag-agent.js') })).code;
  shAgent = readFileSync(join(installDir(), 'eve-diag-agent.sh'), 'utf8');
});
afterAll(async () => {
  await stopAllGuests();
  await rm(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls the region about once a second until `pred` holds; returns every report (last one matched). */
async function pollUntil(s: Session, what: string, pred: (r: HeartbeatReport) => boolean, timeoutMs: number): Promise<HeartbeatReport[]> {
  const reports: HeartbeatReport[] = [];
  const end = Date.now() + timeoutMs;
  for (;;) {
    const p = await s.poller.poll();
    reports.push(p.report);
    if (pred(p.report)) return reports;
    if (Date.now() > end) {
      const last = p.report;
      throw new Error(`${what}: not reached in ${timeoutMs} ms; last: kernel ${last.kernel.status} (${last.kernel.detail}), agent ${last.agent.status} (${last.agent.detail})`);
    }
    await sleep(1000);
  }
}


const MARK_RE = (agent: string) => new RegExp(`eve-diag mark seq=\\d+ uptime=\\d+\\.\\d+ load=\\d+\\.\\d+ mem_avail=\\d+kB agent=${agent.replace(/\./g, '\\.')}`);

describe('Node agent in a real guest', () => {
  let guest: Guest;
  let session: Session;
  let pid: number;
  let portPath: string;
  let virtioPortPath: string;

  beforeAll(async () => {
    // virtio_console for the agent port on virtio-serial (Debian builds it as a module).
    const image = await buildGuestImage({ node: true, agent: { bundle, sh: shAgent }, modules: ['virtio_console', 'virtio_pci'] });
    portPath = join(dir, 'agent-port.sock');
    virtioPortPath = join(dir, 'agent-vport.sock');
    // The table and the agent port as `eve-diag qemu-args --table T --agent-port P` prints them.
    const flags = qemuArgv({ acpiTable: aml, agentPort: { path: virtioPortPath } });
    guest = await launchGuest({
      memoryMiB: 1024,
      append: 'quiet',
      bootTimeoutMs: 180_000,
      extraArgs: [
        ...['-initrd', image.initrd],
        ...flags,
        // ttyS1 for a second responder, on an ISA serial port.
        ...['-chardev', `socket,id=agentport,path=${portPath},server=on,wait=off`, '-device', 'isa-serial,chardev=agentport'],
      ],
    });
    // Loopback up, for the TCP check; syslogd for the marks; the /dev/virtio-ports links udev would make.
    await guest.run(
      'busybox ip link set lo up; mkdir -p /var/log /etc/eve-diag /dev/virtio-ports && busybox syslogd -O /var/log/messages; ' +
        'for p in /sys/class/virtio-ports/*; do ln -sf /dev/${p##*/} /dev/virtio-ports/$(cat $p/name); done',
    );
    expect(await guest.run(`readlink /dev/virtio-ports/${AGENT_PORT_NAME}`)).toMatch(/^\/dev\/vport\d+p1$/);
    pid = await background(guest, `/usr/bin/node ${GUEST_AGENT_PATH} --period 1 --mark-period 5 --responder /dev/virtio-ports/${AGENT_PORT_NAME} >/tmp/agent.out 2>/tmp/agent.err`);
    session = await openSession({ qmpPath: guest.qmpPath, layout });
  });
  afterAll(async () => {
    await session?.close();
    await guest?.stop();
  });

  const agentErr = () => guest.run('cat /tmp/agent.err');

  test('the host sees the agent heartbeat advance at the agent period (alive), the kernel heartbeat alive', async () => {
    // Node starts in ~2 s under TCG; then the agent counter moves once a second.
    await pollUntil(session, 'agent alive', (r) => r.agent.status === 'alive' && r.kernel.status === 'alive', 90_000);
    const a = await session.poller.poll();
    const t0 = performance.now();
    await sleep(10_000);
    const b = await session.poller.poll();
    const seconds = (performance.now() - t0) / 1000;
    const beats = (b.report.agent.beats ?? 0) - (a.report.agent.beats ?? 0);
    console.log(`[node agent] ${beats} agent beats in ${seconds.toFixed(1)} s host time; kernel ${b.report.kernel.status}, agent ${b.report.agent.status}`);
    expect(b.report.agent.status).toBe('alive');
    expect(b.report.kernel.status).toBe('alive');
    expect(beats).toBeGreaterThanOrEqual(Math.floor(seconds * 0.7));
    expect(beats).toBeLessThanOrEqual(Math.ceil(seconds * 1.3) + 1);
    expect(await agentErr()).toMatch(/heartbeat: reading \/sys\/class\/thermal\/thermal_zone\d+\/temp \(\\_TZ_\.EDGA\)/);
  });

  test('marks reach the console log and syslog (busybox syslogd, /var/log/messages)', async () => {
    const line = await guest.waitForConsole(MARK_RE(AGENT_VERSION), 60_000);
    expect(parseMark(line)?.fields.agent).toBe(AGENT_VERSION);
    const end = Date.now() + 60_000;
    let messages = '';
    while (Date.now() < end && !MARK_RE(AGENT_VERSION).test(messages)) {
      messages = await guest.run('cat /var/log/messages');
      if (!MARK_RE(AGENT_VERSION).test(messages)) await sleep(2000);
    }
    expect(messages).toMatch(new RegExp(`user\\.info eve-diag-agent: ${MARK_RE(AGENT_VERSION).source}`));
  });

  /** The host's agent-ping probe on `port` until it succeeds (the agent may still be opening its port). */
  async function pingUntilAnswered(port: string): Promise<ProbeResult> {
    const probe = new AgentPingProbe();
    const end = Date.now() + 90_000;
    for (;;) {
      const r = await probe.run({ name: 'vm', agentPort: port }, { timeoutMs: 3000, signal: new AbortController().signal });
      if (r.outcome === 'success' || Date.now() > end) return r;
      await sleep(1000);
    }
  }

  test('the agent-ping probe gets PONG from the agent on virtio-serial (qemu-args --agent-port), with its uptime', async () => {
    const r = await pingUntilAnswered(virtioPortPath);
    console.log(`[agent-ping virtio-serial] ${r.detail}`);
    expect(r.outcome, `${r.detail}\n${await agentErr()}`).toBe('success');
    expect(r.evidence?.['guestUptimeS']).toBeGreaterThan(0);
    expect(await agentErr()).toContain(`responder: serving /dev/virtio-ports/${AGENT_PORT_NAME}`);
  });

  test('the responder on an ISA serial port (ttyS1) answers PING and ignores garbage; the probe too', async () => {
    const second = await background(guest, `/usr/bin/node ${GUEST_AGENT_PATH} --period 0 --mark-period 0 --responder /dev/ttyS1 >/tmp/agent2.out 2>/tmp/agent2.err`);
    try {
      const sock = connect(portPath);
      try {
        await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
        let got = '';
        sock.setEncoding('utf8').on('data', (s: string) => (got += s));
        const end = Date.now() + 60_000;
        // The agent may still be opening the port: ask until it answers.
        while (!/PONG 42 /.test(got) && Date.now() < end) {
          sock.write('garbage that is no ping\nPING 42\n');
          await sleep(2000);
        }
        expect(got).toMatch(/^PONG 42 uptime=\d+\.\d+ load=\d+\.\d+\r?\n/m);
        expect(got).not.toContain('garbage');
      } finally {
        sock.destroy();
      }
      expect((await pingUntilAnswered(portPath)).outcome).toBe('success');
    } finally {
      await guest.run(`kill -TERM ${second}`);
    }
  });

  test('kill -STOP: the agent heartbeat stalls while the kernel heartbeat goes on; -CONT: alive again', async () => {
    await guest.run(`kill -STOP ${pid}`);
    try {
      const reports = await pollUntil(session, 'agent stalled', (r) => r.agent.status === 'stalled', 60_000).catch(async (e: unknown) => {
        // Who still reads the agent zone? (The processes, their states and who holds a thermal file.)
        const who = await guest.run(`ps -o pid,stat,args; for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null | grep -q thermal && echo "$p holds: $(ls -l $p/fd | grep thermal)"; done; grep State /proc/${pid}/status`);
        throw new Error(`${String(e)}\n--- guest ---\n${who}`);
      });
      const last = reports.at(-1) as HeartbeatReport;
      expect(last.kernel.status).toBe('alive');
      expect(last.vm.running).toBe(true);
      // The userspace round trip fails too: no PONG from a stopped agent.
      const ping = await new AgentPingProbe().run({ name: 'vm', agentPort: virtioPortPath }, { timeoutMs: 2000, signal: new AbortController().signal });
      expect(ping.outcome).toBe('failure');
      expect(ping.detail).toBe('agent PING: timed out after 2000 ms (no PONG)');
    } finally {
      await guest.run(`kill -CONT ${pid}`);
    }
    const back = await pollUntil(session, 'agent alive again', (r) => r.agent.status === 'alive', 60_000);
    expect((back.at(-1) as HeartbeatReport).kernel.status).toBe('alive');
    expect((await pingUntilAnswered(virtioPortPath)).outcome).toBe('success');
  });

  test('SIGHUP reloads /etc/eve-diag/agent.json (a check appears in the marks)', async () => {
    await guest.run(`echo '{"checks": [{"name": "self", "command": "true"}, {"name": "nothing", "tcp": "127.0.0.1:9"}]}' > /etc/eve-diag/agent.json && kill -HUP ${pid}`);
    const since = guest.consoleText().length;
    const line = await guest.waitForConsole(/eve-diag mark seq=\d+ [^\n]*check\.self=ok check\.nothing=fail:refused/, 60_000, since).catch(async (e: unknown) => {
      throw new Error(`${String(e)}\n--- agent stderr ---\n${await agentErr()}\n--- ps ---\n${await guest.run('ps -o pid,stat,args 2>/dev/null || ps')}`);
    });
    expect(line).toMatch(MARK_RE(AGENT_VERSION));
    expect(await agentErr()).toContain(`reloaded: heartbeat \\_TZ_.EDGA every 1 s; marks every 5 s to syslog, /dev/console; checks self, nothing; responder on /dev/virtio-ports/${AGENT_PORT_NAME}`);
  });

  test('a zone that is not there (another table, thermal.off): said once, the agent keeps running', async () => {
    const other = await background(guest, `/usr/bin/node ${GUEST_AGENT_PATH} --zone '\\_TZ_.NOPE' --mark-period 1 --console none --no-syslog --zone-retry 1 2>/tmp/other.err`);
    try {
      const end = Date.now() + 60_000;
      let err = '';
      while (Date.now() < end && !/started/.test(err)) {
        await sleep(2000);
        err = await guest.run('cat /tmp/other.err');
      }
      await sleep(4000); // a few more lookups, one message
      err = await guest.run('cat /tmp/other.err');
      const paused = err.split('\n').filter((l) => l.includes('heartbeat paused'));
      expect(paused).toHaveLength(1);
      expect(paused[0]).toMatch(/no thermal zone \\_TZ_\.NOPE under \/sys\/class\/thermal \(zones seen: \\_TZ_\.EDGK, \\_TZ_\.EDGA\): is the eve-diag SSDT loaded\?/);
      expect(await guest.run(`kill -0 ${other} && echo running`)).toContain('running');
    } finally {
      await guest.run(`kill -TERM ${other}`);
    }
  });

  test('its footprint, for the record (the benchmark measures it properly)', async () => {
    const status = await guest.run(`grep VmRSS /proc/${pid}/status`);
    console.log(`[node agent] ${status.trim()}`);
    expect(status).toMatch(/VmRSS:\s+\d+ kB/);
  });

  test('SIGTERM: the agent exits cleanly and its heartbeat stalls', async () => {
    await guest.run(`kill -TERM ${pid}`);
    const end = Date.now() + 30_000;
    let state = '';
    while (Date.now() < end) {
      state = await guest.run(`kill -0 ${pid} 2>/dev/null && echo running || echo gone`);
      if (/gone/.test(state)) break;
      await sleep(500);
    }
    expect(state).toMatch(/gone/);
    expect(await agentErr()).toContain('SIGTERM: stopping');
    await pollUntil(session, 'agent stalled after exit', (r) => r.agent.status === 'stalled' && r.kernel.status === 'alive', 60_000);
  });
});

describe('POSIX-sh agent in the plain busybox guest', () => {
  let guest: Guest;
  let session: Session;

  beforeAll(async () => {
    // busybox crond needs root's passwd entry to run root's crontab.
    const image = await buildGuestImage({
      agent: { sh: shAgent },
      files: [{ path: 'etc/passwd', data: Buffer.from('root:x:0:0:root:/root:/bin/sh\n') }],
    });
    guest = await launchGuest({ acpiTables: [aml], append: 'quiet', extraArgs: ['-initrd', image.initrd] });
    await guest.run('mkdir -p /var/log /etc/crontabs && busybox syslogd -O /var/log/messages');
    session = await openSession({ qmpPath: guest.qmpPath, layout });
  });
  afterAll(async () => {
    await session?.close();
    await guest?.stop();
  });

  test('heartbeat loop: the host sees the agent heartbeat alive at its period; -STOP stalls it', async () => {
    const pid = await background(guest, `${GUEST_SH_AGENT_PATH} heartbeat --period 1 2>/tmp/hb.err`);
    await pollUntil(session, 'agent alive', (r) => r.agent.status === 'alive' && r.kernel.status === 'alive', 60_000);
    const a = await session.poller.poll();
    const t0 = performance.now();
    await sleep(8000);
    const b = await session.poller.poll();
    const seconds = (performance.now() - t0) / 1000;
    const beats = (b.report.agent.beats ?? 0) - (a.report.agent.beats ?? 0);
    console.log(`[sh agent] ${beats} agent beats in ${seconds.toFixed(1)} s host time`);
    expect(b.report.agent.status).toBe('alive');
    expect(beats).toBeGreaterThanOrEqual(Math.floor(seconds * 0.7));
    expect(beats).toBeLessThanOrEqual(Math.ceil(seconds * 1.3) + 1);
    expect(await guest.run('cat /tmp/hb.err')).toMatch(/heartbeat: reading \/sys\/class\/thermal\/thermal_zone\d+\/temp/);

    await guest.run(`kill -STOP ${pid}`);
    const reports = await pollUntil(session, 'agent stalled', (r) => r.agent.status === 'stalled', 60_000);
    expect((reports.at(-1) as HeartbeatReport).kernel.status).toBe('alive');
    await guest.run(`kill -CONT ${pid}`);
    await pollUntil(session, 'agent alive again', (r) => r.agent.status === 'alive', 60_000);
  });

  test('mark mode: one mark line on the console and in syslog, the Node agent’s format', async () => {
    const since = guest.consoleText().length;
    await guest.run(`${GUEST_SH_AGENT_PATH} mark`);
    const line = await guest.waitForConsole(MARK_RE(`${AGENT_VERSION}-sh`), 30_000, since);
    expect(parseMark(line)?.seq).toBe(1);
    const end = Date.now() + 30_000;
    let messages = '';
    while (Date.now() < end && !messages.includes('eve-diag mark seq=1 ')) {
      messages = await guest.run('cat /var/log/messages');
      if (!messages.includes('eve-diag mark seq=1 ')) await sleep(1000);
    }
    expect(messages).toMatch(new RegExp(`user\\.info eve-diag-agent: ${MARK_RE(`${AGENT_VERSION}-sh`).source}`));
  });

  test('from cron (busybox crond, the cron line): the next mark arrives within a minute', async () => {
    await guest.run(`echo '* * * * * ${GUEST_SH_AGENT_PATH} mark' > /etc/crontabs/root && busybox crond -c /etc/crontabs`);
    const end = Date.now() + 150_000;
    let messages = '';
    while (Date.now() < end && !messages.includes('eve-diag mark seq=2 ')) {
      await sleep(3000);
      messages = await guest.run('cat /var/log/messages');
    }
    expect(messages).toMatch(new RegExp(`eve-diag-agent: eve-diag mark seq=2 uptime=\\S+ load=\\S+ mem_avail=\\d+kB agent=${AGENT_VERSION.replace(/\./g, '\\.')}-sh`));
  });
});
