import { isArithmeticDType, type DType, type FloatDType } from "../../dtypes.js";
import { DeltaError } from "../../errors.js";
import { isIntegerDType } from "../../kernels/index.js";
import { pairingProblem, rowOrderProblem, sameShape, type Pairing, type RowOrder } from "./pairing.js";

/**
 * How one output tensor is made: the one description every element-wise
 * convention gives and the one streaming loop (tensor-transform.ts) carries
 * out. The delta pairs with the output element by element in order, or row
 * by row from another layout (`rowOrder`: transposed, rows permuted by
 * heads). The engine's other recipe is "base plus low-rank products"
 * (`MergedTensor`, low-rank-merge.ts: LoRA adapters). Which files the
 * outputs go to is the convention's declared layout (output-layout.ts).
 *
 * Ops (apply side; make writes their inverse):
 *   add   out = delta + base   (floats: RNE in the output dtype, as torch on CPU;
 *                              integers: wrap-around; bool: logical or)
 *   xor   out = delta XOR base (bit for bit)
 *   copy  out = delta          (the delta holds the value itself)
 *   base  out = base           (converted to the output dtype)
 */
export type Op = "add" | "xor" | "copy" | "base";

/**
 * What the output elements no base element pairs with (rows beyond the
 * base's vocabulary) become: the delta's values as stored; the delta added
 * to zero (FastChat v0 grows the base by zero rows: -0.0 becomes +0.0); the
 * delta added to the mean of the base's rows (Alpaca's `[PAD]` row).
 */
export type Unpaired = "stored" | "zero" | "mean";

export interface TensorRecipe {
  name: string;
  /** The output's dtype and shape (the delta tensor's, except for op "base"). */
  dtype: DType;
  shape: number[];
  op: Op;
  /** The base tensor paired with it (every op but copy). */
  base?: { name: string; dtype: DType; shape: number[] };
  pairing: Pairing;
  unpaired: Unpaired;
  /**
   * The delta tensor's stored dtype, when it is not the output's: the delta
   * is converted first, as a publisher's script loading it with
   * `torch_dtype` does (round to nearest even).
   */
  deltaDtype?: DType;
  /** The delta is stored in another layout, paired row by row (pairing.ts); the base pairs same-shape. */
  rowOrder?: RowOrder;
  /**
   * How `add` rounds when not as torch does (the delta converted to the
   * output dtype, then added): `promoted`, as numpy adds arrays of two
   * dtypes (EasyLM): both exact in float32, their float32 sum rounded to
   * `through` and then to the output dtype.
   */
  sum?: { promoted: true; through: FloatDType };
}

/** A tensor's name, dtype and shape. */
export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
}

/**
 * The one place a tensor's recipe is made and checked: the base must be
 * convertible to the output dtype and pair with its shape, and the op must
 * have arithmetic for the dtype. Throws naming the tensor and the base.
 */
export function planTensor(
  output: TensorSpec,
  base: TensorSpec | undefined,
  op: Op,
  rules: {
    pairing?: Pairing;
    unpaired?: Unpaired;
    baseSource: string;
    role: string;
    deltaDtype?: DType;
    /** The delta's stored layout and shape, when it pairs row by row (pairing.ts RowOrder). */
    rowOrder?: { order: RowOrder; storedShape: readonly number[] };
    sum?: TensorRecipe["sum"];
  },
): TensorRecipe {
  const recipe: TensorRecipe = { name: output.name, dtype: output.dtype, shape: output.shape, op, pairing: rules.rowOrder === undefined ? (rules.pairing ?? "block") : "same-shape", unpaired: rules.unpaired ?? "stored" };
  if (rules.rowOrder !== undefined) {
    const problem = op === "add" ? rowOrderProblem(output.shape, rules.rowOrder.storedShape, rules.rowOrder.order) : `op ${op} cannot read a delta row by row, only add can`;
    if (problem !== undefined) throw new DeltaError(`tensor "${output.name}" of the ${rules.role}: ${problem}`);
    recipe.rowOrder = rules.rowOrder.order;
  }
  if (rules.sum !== undefined) {
    if (op !== "add" || !isArithmeticDType(output.dtype)) throw new DeltaError(`tensor "${output.name}" of the ${rules.role}: a promoted sum needs op add on floats, not ${op} on ${output.dtype}`);
    recipe.sum = rules.sum;
  }
  if (rules.deltaDtype !== undefined && rules.deltaDtype !== output.dtype) {
    const problem = conversionProblem(output.dtype, rules.deltaDtype);
    if (problem !== undefined) throw new DeltaError(`tensor "${output.name}" of the ${rules.role}: ${problem}`);
    recipe.deltaDtype = rules.deltaDtype;
  }
  if (op === "copy") return recipe;
  if (base === undefined) throw new DeltaError(`tensor "${output.name}" needs a base tensor, and the base ${rules.baseSource} has none`);
  const problem =
    (op === "add" ? addProblem(output.dtype) : undefined) ??
    conversionProblem(output.dtype, base.dtype) ??
    (op === "base" ? undefined : pairingProblem(output.shape, base.shape, recipe.pairing)) ??
    (recipe.unpaired === "mean" && base.shape.length === 2 && output.shape[1] !== base.shape[1] ? `shape [${base.shape}] grows in columns, but only rows can be mean-filled` : undefined);
  if (problem !== undefined) {
    throw new DeltaError(`base ${rules.baseSource}: tensor "${output.name}" cannot pair with the ${rules.role}'s ${output.dtype} [${output.shape}]: ${problem}`);
  }
  recipe.base = { name: base.name, dtype: base.dtype, shape: base.shape };
  // Only a grown tensor has unpaired elements.
  if (sameShape(output.shape, base.shape)) recipe.unpaired = "stored";
  return recipe;
}

/** Why a base tensor of `baseDtype` cannot be converted to `dtype`, or undefined: floats convert among themselves, nothing else does. */
export function conversionProblem(dtype: DType, baseDtype: DType): string | undefined {
  if (dtype === baseDtype) return undefined;
  if (isArithmeticDType(dtype) && isArithmeticDType(baseDtype)) return undefined;
  return `dtype ${baseDtype} cannot be converted to ${dtype}`;
}

/** Why `add` has no arithmetic for this dtype (torch adds floats, integers and bools; not 8-bit floats), or undefined. */
export function addProblem(dtype: DType): string | undefined {
  if (isArithmeticDType(dtype) || isIntegerDType(dtype)) return undefined;
  return `it is ${dtype}, which torch cannot add`;
}
