import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkDomainRef, libvirtPidFile, LibvirtRefError } from '../../../host-reader/libvirt/domain-ref.js';
import { consoleLogOf, DomainXmlError, MAX_DOMAIN_XML_BYTES, parseDomainXml } from '../../../host-reader/libvirt/domain-xml.js';
import { parseLifecycleLine, parseQemuEventLine } from '../../../host-reader/libvirt/event-line.js';
import { LibvirtError, parseMonitorReply, virshErrorOf } from '../../../host-reader/libvirt/virsh.js';

describe('domain references', () => {
  it('takes local URIs and refuses remote ones, naming the field', () => {
    expect(checkDomainRef({ domain: 'vm1', uri: 'qemu:///system' }).domain).toBe('vm1');
    expect(() => checkDomainRef({ domain: 'vm1', uri: 'qemu+unix:///session?socket=/tmp/x/libvirt-sock' })).not.toThrow();
    for (const uri of ['qemu+ssh://host/system', 'qemu://host/system', 'xen:///system', 'qemu:///embed', 'nonsense', 'qemu:///session?socket=rel/sock']) {
      expect(() => checkDomainRef({ domain: 'vm1', uri }), uri).toThrow(LibvirtRefError);
    }
    for (const domain of ['', '-x', 'a/b', 'a\nb', 'x'.repeat(201)]) {
      const e = (() => {
        try {
          checkDomainRef({ domain, uri: 'qemu:///system' });
        } catch (err) {
          return err as LibvirtRefError;
        }
        return undefined;
      })();
      expect(e?.field, JSON.stringify(domain)).toBe('domain');
    }
  });

  it("finds libvirt's pidfile for the system and session daemons", () => {
    expect(libvirtPidFile({ domain: 'vm1', uri: 'qemu:///system' })).toBe('/run/libvirt/qemu/vm1.pid');
    expect(libvirtPidFile({ domain: 'vm1', uri: 'qemu:///system?socket=/run/libvirt/virtqemud-sock' })).toBe('/run/libvirt/qemu/vm1.pid');
    expect(libvirtPidFile({ domain: 'vm1', uri: 'qemu:///session?socket=/tmp/d/run/libvirt/libvirt-sock' })).toBe('/tmp/d/run/libvirt/qemu/run/vm1.pid');
    expect(libvirtPidFile({ domain: 'vm1', uri: 'qemu:///session' }, { XDG_RUNTIME_DIR: '/run/user/1000' })).toBe('/run/user/1000/libvirt/qemu/run/vm1.pid');
  });
});

describe('virsh event lines', () => {
  it('decodes QEMU events, with and without data', () => {
    expect(parseQemuEventLine("event STOP at 1796418731.031861 for domain 'vm1': <null>", 'vm1')).toEqual({
      event: 'STOP',
      data: {},
      timestamp: { seconds: 1796418731, microseconds: 31861 },
    });
    expect(parseQemuEventLine(`event SHUTDOWN at 1.000001 for domain 'vm1': {"guest":false,"reason":"host-signal"}`, 'vm1')?.data).toEqual({ guest: false, reason: 'host-signal' });
    // A name with a quote and a colon is matched whole.
    expect(parseQemuEventLine("event RESUME at 1.000000 for domain 'a': b': <null>", "a': b")?.event).toBe('RESUME');
  });

  it('refuses other domains, bad data, deep nesting and long lines', () => {
    expect(parseQemuEventLine("event STOP at 1.000000 for domain 'other': <null>", 'vm1')).toBeUndefined();
    expect(parseQemuEventLine("event STOP at 1.000000 for domain 'vm1': [1]", 'vm1')).toBeUndefined();
    expect(parseQemuEventLine("event STOP at 1.000000 for domain 'vm1': {", 'vm1')).toBeUndefined();
    expect(parseQemuEventLine(`event STOP at 1.000000 for domain 'vm1': ${'{"a":'.repeat(1000)}1${'}'.repeat(1000)}`, 'vm1')).toBeUndefined();
    expect(parseQemuEventLine(`event STOP at 1.000000 for domain 'vm1': {"a":"${'x'.repeat(70_000)}"}`, 'vm1')).toBeUndefined();
    expect(parseQemuEventLine('2026-12-04 21:12:11.032+0000: event STOP for domain', 'vm1')).toBeUndefined();
  });

  it('decodes lifecycle lines', () => {
    expect(parseLifecycleLine("event 'lifecycle' for domain 'vm1': Stopped Destroyed", 'vm1')).toEqual({ kind: 'Stopped', detail: 'Destroyed' });
    expect(parseLifecycleLine("event 'lifecycle' for domain 'vm1': Shutdown Finished after host request", 'vm1')).toEqual({ kind: 'Shutdown', detail: 'Finished after host request' });
    expect(parseLifecycleLine("event 'lifecycle' for domain 'vm1': Exploded", 'vm1')).toBeUndefined();
    expect(parseLifecycleLine("event 'lifecycle' for domain 'vm2': Started Booted", 'vm1')).toBeUndefined();
  });

  it('never throws on any line', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (line) => {
        parseQemuEventLine(line, 'vm1');
        parseLifecycleLine(line, 'vm1');
        parseQemuEventLine(`event X at 1.000000 for domain 'vm1': ${line}`, 'vm1');
      }),
      { seed: 14, numRuns: 500 },
    );
  });
});

describe('qemu-monitor-command output', () => {
  it('gives the reply or the error QEMU sent', () => {
    expect(parseMonitorReply('{"return":{"status":"running"},"id":"libvirt-413"}\n\n')).toEqual({ return: { status: 'running' } });
    expect(parseMonitorReply('{"id":"libvirt-414","error":{"class":"CommandNotFound","desc":"The command nope has not been found"}}')).toEqual({
      error: { class: 'CommandNotFound', desc: 'The command nope has not been found' },
    });
  });

  it('refuses what is not a QMP reply, with a typed error', () => {
    for (const out of ['', 'not json', '[1]', '{"id":"x"}', '{"error":"x"}', `${'['.repeat(100)}${']'.repeat(100)}`]) {
      expect(() => parseMonitorReply(out), out).toThrow(LibvirtError);
    }
  });

  it("keeps virsh's error lines", () => {
    expect(virshErrorOf('error: failed to get domain \'x\'\n')).toBe("failed to get domain 'x'");
    expect(virshErrorOf('error: Requested operation is not valid: domain is not running\n')).toBe('Requested operation is not valid: domain is not running');
    expect(virshErrorOf('')).toBe('no message');
  });
});

const DOMAIN = `<domain type='qemu' id='1' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>eve-diag-lv1</name>
  <uuid>1b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid>
  <devices>
    <serial type='pty'>
      <source path='/dev/pts/3'/>
      <log file='/var/log/libvirt/qemu/lv1-serial0.log' append='on'/>
      <target type='isa-serial' port='0'/>
    </serial>
    <console type='pty' tty='/dev/pts/3'>
      <log file='/var/log/libvirt/qemu/lv1-console.log'/>
    </console>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-acpitable'/>
    <qemu:arg value='file=/var/lib/eve-diag/ssdt.aml'/>
  </qemu:commandline>
</domain>`;

describe('domain XML', () => {
  it('gives the name, the console log and our command-line arguments', () => {
    const d = parseDomainXml(DOMAIN);
    expect(d).toMatchObject({ name: 'eve-diag-lv1', uuid: '1b4e28ba-2fa1-11d2-883f-0016d3cca427', type: 'qemu', qemuArgs: ['-acpitable', 'file=/var/lib/eve-diag/ssdt.aml'] });
    expect(consoleLogOf(d)).toBe('/var/log/libvirt/qemu/lv1-serial0.log');
  });

  it('takes a file serial port, else the console log, else none', () => {
    expect(consoleLogOf(parseDomainXml("<domain><name>a</name><devices><serial type='file'><source path='/var/log/a.log'/></serial></devices></domain>"))).toBe('/var/log/a.log');
    expect(consoleLogOf(parseDomainXml("<domain><name>a</name><devices><serial type='pty'/><console type='pty'><log file='/c.log'/></console></devices></domain>"))).toBe('/c.log');
    expect(consoleLogOf(parseDomainXml("<domain><name>a</name><devices><serial type='pty'/></devices></domain>"))).toBeUndefined();
  });

  it('ignores qemu:arg outside the qemu namespace (libvirt would drop them too)', () => {
    expect(parseDomainXml("<domain><name>a</name><commandline><arg value='-x'/></commandline></domain>").qemuArgs).toEqual([]);
  });

  it('refuses what is not a domain, typed', () => {
    for (const x of ['', '<domain>', '<network><name>a</name></network>', '<domain><name></name></domain>', 'x'.repeat(MAX_DOMAIN_XML_BYTES + 1)]) {
      expect(() => parseDomainXml(x), x.slice(0, 40)).toThrow(DomainXmlError);
    }
  });

  it('decodes deep and wide documents in bounded time', () => {
    const deep = `<domain><name>a</name>${'<x>'.repeat(100_000)}${'</x>'.repeat(100_000)}</domain>`;
    const t0 = performance.now();
    expect(parseDomainXml(deep).name).toBe('a');
    expect(performance.now() - t0).toBeLessThan(5000);
  });
});
