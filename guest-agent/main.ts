import { Agent, describeDuties, type AgentDeps } from './agent.js';
import { ConfigError, describeConfig, loadConfig, parseFlags, USAGE, type Flags } from './config.js';
import { errText, Log, oneLine } from './log.js';
import { systemClock } from './timing.js';
import { AGENT_NAME, AGENT_VERSION } from './version.js';

/**
 * The agent's process: flags, configuration, signals. `main` returns an exit code for what ends at
 * once (--version, --help, --once, --print-config, bad input: 2), or undefined while the agent runs;
 * it then runs until SIGTERM/SIGINT (exit 0). SIGHUP reloads the configuration file; a bad file is
 * reported and the running configuration is kept.
 */

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export interface MainIo {
  out(line: string): void;
  err(line: string): void;
  /** Registers a signal handler. */
  onSignal(signal: 'SIGHUP' | 'SIGTERM' | 'SIGINT', fn: () => void): void;
  exit(code: number): void;
  readConfig?: (path: string) => Promise<string>;
  deps?: Partial<AgentDeps>;
}

export async function main(argv: readonly string[], io: MainIo): Promise<number | undefined> {
  const log = new Log((line) => io.err(`${AGENT_NAME}: ${line}`));
  let flags: Flags;
  try {
    flags = parseFlags(argv);
  } catch (e) {
    io.err(`${AGENT_NAME}: ${(e as Error).message}`);
    return EXIT_USAGE;
  }
  if (flags.help) {
    io.out(USAGE);
    return EXIT_OK;
  }
  if (flags.version) {
    io.out(`${AGENT_NAME} ${AGENT_VERSION}`);
    return EXIT_OK;
  }
  const load = () => loadConfig(flags, io.readConfig);
  let loaded;
  try {
    loaded = await load();
  } catch (e) {
    io.err(`${AGENT_NAME}: ${e instanceof ConfigError ? e.message : errText(e)}`);
    return EXIT_USAGE;
  }
  if (flags.printConfig) {
    io.out(JSON.stringify(describeConfig(loaded.config), null, 2));
    return EXIT_OK;
  }
  const agent = new Agent({ clock: systemClock, log, ...io.deps });
  if (flags.once) {
    io.out(await agent.markOnce(loaded.config));
    return EXIT_OK;
  }

  log.info(`${AGENT_VERSION} started: ${describeDuties(loaded.config, loaded.source)}`);
  agent.apply(loaded.config);
  let reloading = false;
  io.onSignal('SIGHUP', () => {
    if (reloading) return;
    reloading = true;
    load()
      .then((next) => {
        agent.apply(next.config);
        log.info(`reloaded: ${describeDuties(next.config, next.source)}`);
      })
      .catch((e: unknown) => log.info(`reload failed, keeping the running configuration: ${e instanceof ConfigError ? e.message : errText(e)}`))
      .finally(() => (reloading = false));
  });
  const quit = (sig: string) => () => {
    log.info(`${sig}: stopping`);
    agent.stop();
    io.exit(EXIT_OK);
  };
  io.onSignal('SIGTERM', quit('SIGTERM'));
  io.onSignal('SIGINT', quit('SIGINT'));
  return undefined;
}

/** The process entry (the bundle calls this). */
export function start(): void {
  const io: MainIo = {
    out: (s) => process.stdout.write(`${s}\n`),
    err: (s) => process.stderr.write(`${s}\n`),
    onSignal: (sig, fn) => process.on(sig, fn),
    // Exit now, even with a read still blocked on a port in the libuv pool.
    exit: (code) => process.exit(code),
  };
  // A bug in one duty must not take the heartbeat down: report it and go on (a supervisor restarts
  // the agent only if it really dies).
  process.on('uncaughtException', (e) => io.err(`${AGENT_NAME}: internal error: ${oneLine(String(e?.stack ?? e), 1000)}`));
  process.on('unhandledRejection', (e) => io.err(`${AGENT_NAME}: internal error: ${oneLine(String((e as Error)?.stack ?? e), 1000)}`));
  // Writes to a closed stdout/stderr (EPIPE) must not kill the agent.
  process.stdout.on('error', () => undefined);
  process.stderr.on('error', () => undefined);
  main(process.argv.slice(2), io).then(
    (code) => {
      if (code !== undefined) process.exitCode = code;
      // Running until a signal, even with every duty off (a SIGHUP may turn one on).
      else setInterval(() => undefined, 3_600_000);
    },
    (e: unknown) => {
      io.err(`${AGENT_NAME}: ${errText(e)}`);
      process.exitCode = EXIT_FAILURE;
    },
  );
}
