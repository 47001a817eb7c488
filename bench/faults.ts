/**
 * The fault suite's scoreboard (issue 13 §2): runs every scripted fault of test/faults/ (the delivery
 * faults: controller down, 500, 429, slow, cut, killed mid-ingest, PostgreSQL restarted, the shipper
 * and the bundle writer SIGKILLed, the spool full, read-only or a bundle removed; the guest faults:
 * QEMU SIGKILLed, SIGSTOPped, restarted on the same paths, QMP and the console held by another
 * client, the console log rotated/truncated/deleted, a console flood, the vCPU thread starved) one at a
 * time, and prints one table: fault, expected, observed, crashes, lost reports, duplicates stored,
 * false hang verdicts, visible in logs and metrics, pass. Exits 1 when a row is not clean.
 * The quick ones also run in `npm test` (test/faults/*.test.ts). Needs `npm run build` (the guest
 * faults run the compiled monitor).
 * Run: `bash bench/run.sh faults [--only NAME,NAME] [--quick] [--json FILE]`.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { deliveryScenarios, stopEverything } from '../test/faults/delivery-scenarios.js';
import { guestScenarios } from '../test/faults/guest-scenarios.js';
import { clean, formatScoreboard, type FaultRow, type FaultScenario } from '../test/faults/scoreboard.js';
import { stopAllGuests } from '../test/helpers/guest.js';
import { killMonitors } from '../test/helpers/monitor-cli.js';

const ALL: FaultScenario[] = [...deliveryScenarios, ...guestScenarios];
const USAGE = `usage: bash bench/run.sh faults [--only NAME,NAME] [--quick] [--json FILE]
  --only   run these scenarios (known: ${ALL.map((s) => s.name).join(', ')})
  --quick  only the ones npm test runs
  --json   also write the rows as JSON to FILE`;

function die(msg: string): never {
  console.error(`${msg}\n${USAGE}`);
  process.exit(2);
}

let values;
try {
  values = parseArgs({ options: { only: { type: 'string' }, quick: { type: 'boolean' }, json: { type: 'string' }, help: { type: 'boolean' } } }).values;
} catch (e) {
  die((e as Error).message);
}
if (values.help === true) {
  console.log(USAGE);
  process.exit(0);
}
const only = values.only?.split(',').filter((n) => n !== '');
const unknown = (only ?? []).filter((n) => !ALL.some((s) => s.name === n));
if (unknown.length > 0) die(`--only: no scenario ${unknown.map((n) => JSON.stringify(n)).join(', ')}`);
const chosen = ALL.filter((s) => (only === undefined || only.includes(s.name)) && (values.quick !== true || s.quick));
if (chosen.length === 0) die('no scenario chosen');

const rows: FaultRow[] = [];
for (const [i, s] of chosen.entries()) {
  const t0 = performance.now();
  process.stderr.write(`[${i + 1}/${chosen.length}] ${s.name} ...`);
  let row: FaultRow;
  try {
    row = await s.run();
  } catch (e) {
    // A scenario that throws did not get to its verdict: a failed row (the harness, not the product, may be at fault).
    row = { fault: s.name, expected: '(the scenario ran to its end)', observed: `the scenario threw: ${(e as Error).message.slice(0, 300)}`, crashes: 0, lost: 0, duplicates: 0, falseHangs: 0, visible: false, pass: false };
  } finally {
    killMonitors();
    await stopAllGuests();
    const left = await stopEverything();
    if (left.length > 0) process.stderr.write(` (cleanup: ${left.join('; ')})`);
  }
  process.stderr.write(` ${clean(row) ? 'clean' : 'NOT CLEAN'} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  rows.push(row);
}
console.log(formatScoreboard(rows));
if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify(rows, null, 2)}\n`);
process.exit(rows.every(clean) ? 0 : 1);
