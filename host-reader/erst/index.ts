// Decoders of the ACPI ERST store QEMU's acpi-erst device keeps in its backing file, and of what
// Linux's pstore writes there (the panic log). Pure functions of the file's bytes.
export { ErstDecodeError } from './errors.js';
export {
  decodeStore,
  ERST_STORE_MAGIC,
  ERST_STORE_VERSION,
  ERST_STORE_HEADER_BYTES,
  ERST_STORE_MAX_BYTES,
  ERST_MIN_RECORD_SIZE,
  ERST_RECORD_ID_UNSPECIFIED,
  ERST_RECORD_ID_END,
  type ErstStore,
  type ErstStoreHeader,
  type ErstSlot,
  type DecodeStoreOptions,
} from './store.js';
export {
  decodeCperRecord,
  CPER_SIGNATURE,
  CPER_SIGNATURE_END,
  CPER_HEADER_BYTES,
  CPER_SECTION_DESCRIPTOR_BYTES,
  CPER_VALID_TIMESTAMP,
  CPER_SEVERITIES,
  type CperRecord,
  type CperRecordHeader,
  type CperSection,
} from './cper.js';
export {
  decodePstoreRecord,
  isPstoreRecord,
  inflateBody,
  parseDumpLine,
  CPER_CREATOR_PSTORE,
  CPER_SECTION_TYPE_DMESG,
  CPER_SECTION_TYPE_DMESG_Z,
  CPER_SECTION_TYPE_MCE,
  PSTORE_MAX_INFLATED_BYTES,
  type PstoreRecord,
  type PstoreType,
  type DecodePstoreOptions,
} from './pstore.js';
export {
  decodeErst,
  readErst,
  joinDumps,
  summarizeRecord,
  ERST_MAX_TOTAL_TEXT_BYTES,
  type ErstContents,
  type ErstReading,
  type ErstRecord,
  type PstoreDump,
  type DecodeErstOptions,
} from './decode.js';
export { hex64 } from './bytes.js';
