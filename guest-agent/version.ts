/** The agent's version, printed by `--version` and carried in every mark (`agent=VERSION`). */
export const AGENT_VERSION = '0.1.0';

/** The program name in its own messages and the syslog tag of its marks. */
export const AGENT_NAME = 'eve-diag-agent';
