import { describe, expect, it } from 'vitest';
import { EVE_DOM_RE, EVE_KVM_DIR, eveDomPaths } from '../../host-reader/eve.js';

describe('eveDomPaths', () => {
  it('lays out a domain as EVE does, with our console log beside the socket', () => {
    expect(eveDomPaths('6a5b.1.1')).toEqual({
      dir: `${EVE_KVM_DIR}/6a5b.1.1`,
      qmp: '/run/hypervisor/kvm/6a5b.1.1/qmp',
      listenerQmp: '/run/hypervisor/kvm/6a5b.1.1/listener.qmp',
      console: '/run/hypervisor/kvm/6a5b.1.1/cons',
      consoleLog: '/run/hypervisor/kvm/6a5b.1.1/cons.log',
      pidfile: '/run/hypervisor/kvm/6a5b.1.1/pid',
    });
    expect(eveDomPaths('d', '/tmp/kvm').qmp).toBe('/tmp/kvm/d/qmp');
  });

  it('takes a domain name as one path segment only', () => {
    expect(EVE_DOM_RE.test('a4f3c2d1-0000-4000-8000-000000000001.1.1')).toBe(true);
    for (const bad of ['', '..', '../x', 'a/b', '.hidden', 'a b']) expect(EVE_DOM_RE.test(bad)).toBe(false);
  });
});
