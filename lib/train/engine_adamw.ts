/**
 * AdamW on the kernel engine: the optimizer's update where the gradients and the weights
 * already are (./engine_grads.ts), shared by the training threads, instead of a dozen TF.js
 * ops per parameter on the main thread while the other cores wait (~460 ms per step for
 * convnext_tiny on 2 cores, an eighth of an engine step).
 *
 * {@link EngineAdamW} is an {@link AdamWKernel}: `optimizer.stepWith(engine.adamw, lr)` runs
 * the update of ./optimizer.ts's {@link AdamW} (same hyper-parameters, bias corrections,
 * per-parameter learning rate and decay, and the same float32 operations in the same order,
 * so the same bits) while the engine holds the moments. After the update the weights are
 * repacked for the next step and written back into the model's variables (EMA, evaluation
 * and checkpoints read them there).
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import type { KernelEngine } from "../infer/engine/engine.ts";
import { TASK, trainKernels } from "../infer/engine/train.ts";
import { engineTensor, type LoadedProgram, type Task } from "./engine_program.ts";
import type { AdamWKernel, AdamWParam, AdamWStep } from "./optimizer.ts";

/** Floats per update task: enough tasks for the threads to share, few enough to post. */
const CHUNK = 1 << 16;
/** Floats of hyper-parameters per parameter (kernels.c `adamw`'s `hp`). */
const HP = 8;

/** The engine's side of one trained parameter. */
interface Param {
  /** The model's variable (updated after each step). */
  variable: tf.Variable;
  /** Index in the program's weights and gradient slots. */
  index: number;
  /** Floats, and floats rounded up to 4 (the kernels' vectors). */
  size: number;
  padded: number;
}

/** Hooks into ./engine_grads.ts: its thread pool and the last step's gradients. */
export interface EngineAdamWHooks {
  /** Run tasks on every thread (lib/infer/engine/train.ts `runTasks`). */
  run(tasks: Task[]): void;
  /**
   * The byte offset of the summed gradients of the last step, which the update consumes;
   * throws when there are none (no step since the last update).
   */
  takeGradients(): number;
}

/**
 * AdamW's moments and update on the engine, for the parameters `params` of a loaded
 * training program (see the module doc). Built by `EngineGradients.start(..., { adamw:
 * true })`, which owns it.
 */
export class EngineAdamW implements AdamWKernel {
  private readonly byName = new Map<string, Param>();
  private readonly m: number;
  private readonly v: number;
  private readonly hp: number;
  private freed = false;
  /** Optimizers whose moments this holds (given back before the memory goes). */
  private readonly owners = new Set<{ release(kernel: AdamWKernel): void }>();

  /** Floats of engine memory the moments and hyper-parameters of `params` take. */
  static floats(loaded: LoadedProgram, params: AdamWParam[]): number {
    return 2 * loaded.program.gradFloats + HP * params.length;
  }

  /**
   * @throws Error when a parameter is not one of the program's weights.
   */
  constructor(
    private readonly engine: KernelEngine,
    private readonly loaded: LoadedProgram,
    params: AdamWParam[],
    private readonly hooks: EngineAdamWHooks,
  ) {
    const slots = new Map(loaded.program.slots.map((s, i) => [s.name, i]));
    for (const p of params) {
      const index = slots.get(p.name);
      if (index === undefined || loaded.weights[index].variable !== p.variable) {
        throw new Error(`EngineAdamW: parameter "${p.name}" is not a weight of the program`);
      }
      const size = p.variable.size;
      this.byName.set(p.name, {
        variable: p.variable,
        index,
        size,
        padded: Math.ceil(size / 4) * 4,
      });
    }
    const floats = loaded.program.gradFloats;
    this.m = engine.alloc(2 * floats);
    this.v = this.m + 4 * floats;
    this.hp = engine.alloc(HP * params.length);
    trainKernels(engine).zero(this.m, 2 * floats);
  }

  private param(name: string): Param {
    const p = this.byName.get(name);
    if (!p) throw new Error(`EngineAdamW: no parameter "${name}"`);
    return p;
  }

  private offset(p: Param): number {
    return 4 * this.loaded.program.slots[p.index].offset;
  }

  /** Remember `owner`, to give its moments back before {@link free}. */
  hold(owner: { release(kernel: AdamWKernel): void }): void {
    this.owners.add(owner);
  }

  /** Take the moments of parameter `name`. */
  loadMoments(name: string, m: Float32Array, v: Float32Array): void {
    const p = this.param(name);
    if (m.length !== p.size || v.length !== p.size) {
      throw new Error(`EngineAdamW.loadMoments: "${name}" has ${p.size} values, got ${m.length}`);
    }
    this.engine.write(this.m + this.offset(p), m);
    this.engine.write(this.v + this.offset(p), v);
  }

  /** A copy of the moments of parameter `name`. */
  readMoments(name: string): { m: Float32Array; v: Float32Array } {
    const p = this.param(name);
    return {
      m: this.engine.read(this.m + this.offset(p), p.size),
      v: this.engine.read(this.v + this.offset(p), p.size),
    };
  }

  /** One update of every parameter with the last step's gradients, on all threads. */
  update(step: AdamWStep): void {
    if (this.freed) throw new Error("EngineAdamW: used after its engine closed");
    const grads = this.hooks.takeGradients();
    const hp = new Float32Array(this.engine.memory.buffer, this.hp, HP * step.params.length);
    const tasks: Task[] = [];
    const derive: Task[] = [];
    step.params.forEach(({ name, lr, weightDecay }, i) => {
      const p = this.param(name);
      // The scalars TF.js's step multiplies by, computed the same way in float64.
      hp.set([
        step.beta1,
        1 - step.beta1,
        step.beta2,
        1 - step.beta2,
        step.bc2Sqrt,
        step.eps,
        lr / step.bc1,
        1 - lr * weightDecay,
      ], HP * i);
      const raw = this.loaded.weights[p.index].raw, at = this.offset(p);
      for (let k = 0; k < p.padded; k += CHUNK) {
        const len = Math.min(CHUNK, p.padded - k);
        tasks.push([
          TASK.ADAMW,
          raw + 4 * k,
          grads + at + 4 * k,
          this.m + at + 4 * k,
          this.v + at + 4 * k,
          len,
          this.hp + 4 * HP * i,
        ]);
      }
      derive.push(...this.loaded.weights[p.index].derive);
    });
    this.hooks.run(tasks);
    this.hooks.run(derive);
    this.writeBack();
  }

  /** The updated weights into the model's variables, marked as the engine's copy. */
  private writeBack(): void {
    for (const p of this.byName.values()) {
      const slot = this.loaded.weights[p.index];
      tf.tidy(() => p.variable.assign(engineTensor(this.engine, slot.raw, p.variable.shape)));
      slot.version = (p.variable as unknown as { dataId: unknown }).dataId;
    }
  }

  /** Give the moments back to their optimizers and free them (the engine's close does). */
  free(): void {
    if (this.freed) return;
    for (const owner of this.owners) owner.release(this);
    this.owners.clear();
    this.freed = true;
    this.engine.free(this.hp);
    this.engine.free(this.m);
  }
}
