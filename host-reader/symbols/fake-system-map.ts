/**
 * A small synthetic System.map (link-time addresses, the layout of an x86-64 kernel: _text, _stext,
 * functions, _etext, init text, data, linux_banner, _end) for the tests of the symbol table, the KASLR
 * search, the stack walk and the gdb-stacks collector, like fake-stub.ts beside the gdb client.
 */
export const SYNTHETIC_MAP = [
  'ffffffff81000000 T _text',
  'ffffffff81000000 T startup_64',
  'ffffffff81001000 T _stext',
  'ffffffff81001000 T do_one',
  'ffffffff81001000 t __do_one_alias',
  'ffffffff81001100 W do_two',
  'ffffffff81001100 T do_two_strong',
  'ffffffff81001200 t native_safe_halt',
  'ffffffff81001210 T default_idle',
  'ffffffff81001240 T do_idle',
  'ffffffff81001400 T ksys_sync',
  'ffffffff810014a0 T __do_sys_sync',
  'ffffffff810014c0 T do_syscall_64',
  'ffffffff81001600 T last_fn',
  'ffffffff81001700 T _etext',
  'ffffffff81002000 T _sinittext',
  'ffffffff81002000 T init_fn',
  'ffffffff81002100 T _einittext',
  'ffffffff81200000 D some_data',
  'ffffffff81200100 R linux_banner',
  'ffffffff82000000 B _end',
].join('\n');

/** linux_banner's address in SYNTHETIC_MAP. */
export const LINK_BANNER = 0xffffffff81200100n;
