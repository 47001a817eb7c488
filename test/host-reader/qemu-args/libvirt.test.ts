import { describe, expect, test } from 'vitest';
import { LIBVIRT_QEMU_NS, qemuArgv, renderLibvirt, xmlEscape, type QemuArgsSpec } from '../../../host-reader/qemu-args/index.js';

const GOLDEN = `<!-- eve-diag qemu-args: libvirt domain XML fragment. Put it inside <domain>, which must declare the
     namespace: <domain type="kvm" xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">.
     Without that declaration libvirt drops qemu:commandline silently. -->
<qemu:commandline>
  <qemu:arg value="-acpitable"/>
  <qemu:arg value="file=/var/lib/eve-diag/ssdt.aml"/>
  <qemu:arg value="-qmp"/>
  <qemu:arg value="unix:/run/vm1/qmp,server=on,wait=off"/>
  <qemu:arg value="-device"/>
  <qemu:arg value="pvpanic,id=evediag-pvpanic"/>
  <qemu:arg value="-chardev"/>
  <qemu:arg value="socket,id=evediag-gdb,path=/run/vm1/gdb,server=on,wait=off"/>
  <qemu:arg value="-gdb"/>
  <qemu:arg value="chardev:evediag-gdb"/>
</qemu:commandline>`;

const unescape = (s: string) =>
  s.replace(/&(amp|lt|gt|quot|apos);/g, (_m, e: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" })[e] as string);

describe('libvirt', () => {
  test('golden', () => {
    const spec: QemuArgsSpec = {
      acpiTable: '/var/lib/eve-diag/ssdt.aml',
      qmp: { path: '/run/vm1/qmp', style: 'qmp' },
      pvpanic: true,
      gdb: { path: '/run/vm1/gdb' },
    };
    expect(renderLibvirt(spec)).toBe(GOLDEN);
    expect(GOLDEN).toContain(LIBVIRT_QEMU_NS);
  });

  test('XML escaping: every value reads back as the argv word, and no raw markup leaks', () => {
    const nasty = `/srv/<a href="x">&amp;'b'</a>,&/t.aml`;
    const spec: QemuArgsSpec = { acpiTable: nasty, console: { path: '/run/"c"', logfile: "/log/<it's>&" } };
    const xml = renderLibvirt(spec);
    const values = [...xml.matchAll(/<qemu:arg value="([^"<>]*)"\/>/g)].map((m) => unescape(m[1] as string));
    expect(values).toEqual(qemuArgv(spec));
    const body = xml.split('\n').filter((l) => l.startsWith('  <qemu:arg'));
    expect(body).toHaveLength(qemuArgv(spec).length);
    expect(xml).toContain('value="file=/srv/&lt;a href=&quot;x&quot;&gt;&amp;amp;&apos;b&apos;&lt;/a&gt;,,&amp;/t.aml"');
  });

  test('xmlEscape', () => {
    expect(xmlEscape(`<&>"'x`)).toBe('&lt;&amp;&gt;&quot;&apos;x');
    expect(xmlEscape('plain /path,,x')).toBe('plain /path,,x');
  });

  test('the comment holds no "--" (not allowed inside an XML comment)', () => {
    const comment = GOLDEN.slice(4, GOLDEN.indexOf('-->'));
    expect(comment).not.toContain('--');
  });
});

describe('libvirt: vmcoreinfo', () => {
  test('two qemu:arg words', () => {
    const xml = renderLibvirt({ acpiTable: '/t.aml', vmcoreinfo: true });
    expect(xml).toContain('<qemu:arg value="-device"/>\n  <qemu:arg value="vmcoreinfo,id=evediag-vmcoreinfo"/>');
  });
});
