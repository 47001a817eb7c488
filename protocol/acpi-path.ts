/**
 * An ACPI name path as Linux's sysfs prints it (`/sys/class/thermal/thermal_zoneN/device/path`): the
 * agent finds its zone by it, and the host side (bake, the monitor's config) writes it into the
 * agent's configuration. Pure.
 */

/** The agent zone of the diagnostic SSDT with its default names (acpi/diag/ssdt.ts DEFAULTS), as sysfs prints it. */
export const DEFAULT_AGENT_ZONE = '\\_TZ_.EDGA';

/**
 * An ACPI path in the form sysfs prints: a leading `\`, segments of 4 characters padded with `_`,
 * upper case. `\_TZ.EDGA` and `\_tz_.edga` give `\_TZ_.EDGA`. Returns undefined when `path` is not an
 * absolute ACPI name path.
 */
export function normalizeAcpiPath(path: string): string | undefined {
  const m = /^\\((?:[A-Za-z_][A-Za-z0-9_]{0,3})(?:\.[A-Za-z_][A-Za-z0-9_]{0,3})*)$/.exec(path.trim());
  if (m === null) return undefined;
  return '\\' + (m[1] as string).split('.').map((s) => s.toUpperCase().padEnd(4, '_')).join('.');
}

