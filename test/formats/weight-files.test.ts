import { describe, expect, it } from "vitest";
import {
  FIXUPS_FILE, META_FILES, PYTORCH_FILES, SAFETENSORS_FILES, isCheckpointName, isIndexName, isPytorchWeightName,
  isSafetensorsIndexName, isSafetensorsWeightName, isTransformersPytorchName, isTransformersSafetensorsName, isWeightFileName,
} from "../../src/formats/weight-files.js";

describe("weight-file names", () => {
  it("transformers' names, one file or shards with an index", () => {
    expect(isTransformersSafetensorsName(SAFETENSORS_FILES.single)).toBe(true);
    expect(isTransformersSafetensorsName("model-00001-of-00002.safetensors")).toBe(true);
    expect(isTransformersSafetensorsName("adapter_model.safetensors")).toBe(false);
    expect(isTransformersPytorchName(PYTORCH_FILES.single)).toBe(true);
    expect(isTransformersPytorchName("pytorch_model-00002-of-00003.bin")).toBe(true);
    expect(isTransformersPytorchName("training_args.bin")).toBe(false);
    expect(isSafetensorsIndexName(SAFETENSORS_FILES.index)).toBe(true);
    expect(isSafetensorsIndexName(PYTORCH_FILES.index)).toBe(false);
    expect(isIndexName(PYTORCH_FILES.index)).toBe(true);
  });

  it("weights among a directory's files: not our fix-ups, not the trainer's pickles", () => {
    expect(isSafetensorsWeightName("model.SAFETENSORS")).toBe(true);
    expect(isSafetensorsWeightName(FIXUPS_FILE)).toBe(false);
    expect(isPytorchWeightName("pytorch_model.bin")).toBe(true);
    for (const trainer of ["training_args.bin", "optimizer.bin", "scheduler.bin"]) expect(isPytorchWeightName(trainer)).toBe(false);
    expect(isCheckpointName("x.pth") && isCheckpointName("x.pt") && isCheckpointName("x.BIN")).toBe(true);
    expect(isWeightFileName("model.gguf") && isWeightFileName("tf_model.h5") && !isWeightFileName("config.json")).toBe(true);
  });

  it("Meta's parts are numbered with two digits", () => {
    expect(META_FILES.part.exec("consolidated.03.pth")?.[1]).toBe("03");
    expect(META_FILES.part.test("consolidated.3.pth")).toBe(false);
    expect(META_FILES.part.test(META_FILES.first)).toBe(true);
  });
});
