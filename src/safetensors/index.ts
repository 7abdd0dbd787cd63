export {
  compareForWriting,
  encodeHeader,
  encodeHeaderVerbatim,
  jsonString,
  parseHeader,
  parseHeaderJson,
  readHeaderLength,
  type HeaderTensor,
  type MetadataInput,
  type SafetensorsHeader,
} from "./header.js";
export { openSafetensorsFile, type ReadRange, type SafetensorsFile } from "./reader.js";
export { SafetensorsWriter, type ByteSink } from "./writer.js";
