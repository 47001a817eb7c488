// Kernel symbols on the host: System.map parsing, symbolization, the KASLR offset of a running guest.
export {
  SymbolTable,
  SystemMapError,
  loadSystemMap,
  formatSymbol,
  SYSTEM_MAP_MAX_BYTES,
  SYSTEM_MAP_MAX_LINE,
  MARKER_SYMBOLS,
  type Symbolized,
  type SystemMapStats,
} from './system-map.js';
export { findKaslrOffset, kaslrCandidates, KaslrError, KASLR_ALIGN, KASLR_RANGE, type KaslrOptions, type KaslrResult, type VirtualMemoryReader } from './kaslr.js';
