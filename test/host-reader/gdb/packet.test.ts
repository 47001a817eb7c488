import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { encodePacket, errorCode, fromHex, PacketDecoder, type RspItem } from '../../../host-reader/gdb/packet.js';

const packets = (items: RspItem[]) => items.filter((i) => i.kind === 'packet').map((i) => (i as { payload: Buffer }).payload.toString('latin1'));

describe('RSP framing', () => {
  test('a packet: $payload#checksum, the special bytes escaped', () => {
    expect(encodePacket('OK').toString('latin1')).toBe('$OK#9a');
    expect(encodePacket('g').toString('latin1')).toBe('$g#67');
    // # $ } * become } and the byte ^ 0x20; the checksum is over the escaped bytes.
    expect(encodePacket('a#b$c}d*').toString('latin1')).toBe('$a}\x03b}\x04c}]d}\x0a#ec');
  });

  test('acks, packets, notifications and noise in one stream, split anywhere', () => {
    const stream = Buffer.concat([Buffer.from('+'), encodePacket('T05thread:p01.01;'), Buffer.from('xx-'), Buffer.from('%Stop:T05#'), Buffer.from('00'), encodePacket('OK')]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const d = new PacketDecoder();
      const items = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))];
      expect(items.filter((i) => i.kind === 'ack')).toHaveLength(1);
      expect(items.filter((i) => i.kind === 'nack')).toHaveLength(1);
      expect(packets(items)).toEqual(['T05thread:p01.01;', 'OK']);
    }
  });

  test('run-length encoding: X*N repeats X N-29 more times', () => {
    // "0* " = '0' then 3 more: 0000. Checksum over the raw bytes.
    const raw = '0* ';
    const sum = [...Buffer.from(raw)].reduce((a, b) => a + b, 0) & 0xff;
    expect(packets(new PacketDecoder().push(Buffer.from(`$${raw}#${sum.toString(16).padStart(2, '0')}`)))).toEqual(['0000']);
  });

  test('a wrong checksum is reported, not delivered; the next packet still is', () => {
    const items = new PacketDecoder().push(Buffer.concat([Buffer.from('$OK#00'), encodePacket('E14')]));
    expect(items.map((i) => i.kind)).toEqual(['bad-checksum', 'packet']);
    expect(errorCode(packets(items)[0] as string)).toBe(0x14);
  });

  test('a packet over the limit is dropped whole and memory stays bounded; the stream goes on', () => {
    const d = new PacketDecoder(16);
    const items = d.push(Buffer.concat([encodePacket('x'.repeat(1000)), encodePacket('OK')]));
    expect(items.map((i) => i.kind)).toEqual(['too-long', 'packet']);
    // A run-length bomb: each `*~` adds 97 bytes.
    const bomb = Buffer.from(`$0${'*~'.repeat(10000)}#00`);
    expect(new PacketDecoder(1024).push(bomb).map((i) => i.kind)).toEqual(['too-long']);
  });

  test('property: any payload survives encode → decode, whatever the chunking', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.array(fc.nat(400), { maxLength: 5 }), (bytes, cuts) => {
        const wire = encodePacket(Buffer.from(bytes));
        const d = new PacketDecoder();
        const items: RspItem[] = [];
        let at = 0;
        for (const c of [...cuts].sort((a, b) => a - b)) {
          items.push(...d.push(wire.subarray(at, Math.max(at, c))));
          at = Math.max(at, c);
        }
        items.push(...d.push(wire.subarray(at)));
        const p = items.filter((i) => i.kind === 'packet');
        expect(p).toHaveLength(1);
        expect(Buffer.compare((p[0] as { payload: Buffer }).payload, Buffer.from(bytes))).toBe(0);
      }),
    );
  });

  test('property: arbitrary bytes from a hostile stub never throw and never yield more than the limit', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), (bytes) => {
        const d = new PacketDecoder(64);
        for (const i of d.push(bytes)) if (i.kind === 'packet' || i.kind === 'notification') expect(i.payload.length).toBeLessThanOrEqual(64);
      }),
    );
  });

  test('hex helpers', () => {
    expect(fromHex('00ff')).toEqual(Buffer.from([0, 255]));
    expect(fromHex('0')).toBeUndefined();
    expect(fromHex('zz')).toBeUndefined();
    expect(errorCode('OK')).toBeUndefined();
  });
});
