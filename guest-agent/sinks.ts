import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, open } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { errText, type Log } from './log.js';
import { AGENT_NAME } from './version.js';

/**
 * Where a mark line goes. Each write opens, writes and closes, so a device that comes and goes (a
 * console, /dev/log restarted) is picked up again, and nothing is held or queued: a write that fails
 * is logged once and the line is dropped.
 */
export interface LineSink {
  readonly name: string;
  write(line: string): Promise<void>;
}

/**
 * A console (`/dev/console`, `/dev/ttyS0`, `/dev/hvc0`) or any existing file. O_NOCTTY: a daemon
 * opening a tty must not acquire it as its controlling terminal. O_NONBLOCK: a console stuck in
 * flow control makes the write fail with EAGAIN instead of hanging a thread forever. No O_CREAT:
 * a mistyped device path must not become a regular file in /dev.
 */
export class ConsoleSink implements LineSink {
  readonly name: string;
  constructor(
    readonly path: string,
    private readonly log: Log,
  ) {
    this.name = `console ${path}`;
  }

  async write(line: string): Promise<void> {
    const key = `sink:${this.path}`;
    try {
      const fh = await open(this.path, constants.O_WRONLY | constants.O_APPEND | constants.O_NOCTTY | constants.O_NONBLOCK);
      try {
        await fh.write(`${line}\n`);
      } finally {
        await fh.close();
      }
      this.log.resolved(key, `marks: writing to ${this.path} again`);
    } catch (e) {
      this.log.problem(key, `marks: cannot write to ${this.path} (${errText(e)}); will try again at the next mark`);
    }
  }
}

/** Looks a program up on PATH like a shell would; undefined when absent. */
export async function which(name: string, path = process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'): Promise<string | undefined> {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    const p = join(dir, name);
    try {
      await access(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface SyslogSinkOptions {
  log: Log;
  /** Finds `logger`; default: on PATH. */
  findLogger?: () => Promise<string | undefined>;
  /** Fallback when there is no logger: the kernel log. Default `/dev/kmsg`. */
  kmsgPath?: string;
  /** Kill a logger that has not exited after this long. Default 5000 ms. */
  timeoutMs?: number;
}

/** Syslog facility/severity user.info: `<14>` on the wire (RFC 5424 section 6.2.1: 1*8 + 6). */
export const SYSLOG_PRIORITY = 'user.info';
export const KMSG_PREFIX = '<14>';

/**
 * Syslog through the `logger` command (util-linux or busybox): it knows the local socket, its
 * protocol and its framing. Node has no unix datagram sockets, so without `logger` the line goes to
 * the kernel log instead (`/dev/kmsg`, prefixed `<14>eve-diag-agent: `), which syslog daemons and
 * journald import, and which `dmesg` shows.
 */
export class SyslogSink implements LineSink {
  readonly name = 'syslog';
  readonly #findLogger: () => Promise<string | undefined>;
  readonly #kmsg: string;
  readonly #timeoutMs: number;
  #running = false;

  constructor(private readonly o: SyslogSinkOptions) {
    this.#findLogger = o.findLogger ?? (() => which('logger'));
    this.#kmsg = o.kmsgPath ?? '/dev/kmsg';
    this.#timeoutMs = o.timeoutMs ?? 5000;
  }

  async write(line: string): Promise<void> {
    const { log } = this.o;
    // One logger at a time: a wedged syslog daemon must not pile up processes.
    if (this.#running) {
      log.problem('syslog', 'marks: the previous logger has not finished; dropping a mark for syslog');
      return;
    }
    const logger = await this.#findLogger();
    if (logger !== undefined) {
      this.#running = true;
      try {
        const r = await runLogger(logger, line, this.#timeoutMs);
        if (r === 'ok') {
          log.resolved('syslog', 'marks: syslog works again');
          return;
        }
        log.problem('syslog', `marks: ${logger} failed (${r}); writing marks to ${this.#kmsg} instead`);
      } finally {
        this.#running = false;
      }
    } else {
      log.problem('syslog:logger', `marks: no logger command on PATH; writing marks to ${this.#kmsg} (kernel log) instead`);
    }
    try {
      const fh = await open(this.#kmsg, constants.O_WRONLY | constants.O_APPEND | constants.O_NOCTTY | constants.O_NONBLOCK);
      try {
        await fh.write(`${KMSG_PREFIX}${AGENT_NAME}: ${line}\n`);
      } finally {
        await fh.close();
      }
      log.resolved('syslog:kmsg', `marks: writing to ${this.#kmsg} again`);
    } catch (e) {
      log.problem('syslog:kmsg', `marks: cannot write to ${this.#kmsg} (${errText(e)}); marks reach syslog nowhere`);
    }
  }
}

/** Runs `logger -t eve-diag-agent -p user.info LINE`; resolves 'ok' or why not. */
function runLogger(logger: string, line: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    let settled = false;
    const child = spawn(logger, ['-t', AGENT_NAME, '-p', SYSLOG_PRIORITY, line], { stdio: 'ignore' });
    const done = (r: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      done('timeout');
    }, timeoutMs);
    child.once('error', (e) => done(errText(e)));
    child.once('exit', (code, signal) => done(code === 0 ? 'ok' : signal !== null ? `killed by ${signal}` : `exit ${code}`));
  });
}
