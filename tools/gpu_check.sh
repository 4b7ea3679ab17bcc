#!/usr/bin/env bash
# One short check of a machine with a GPU: which WebGPU adapter Deno gets, parity of the
# webgpu backend (the WebGPU tests: logits against the cpu backend and PyTorch fixtures,
# gradients against cpu), inference and training speed, the cost of a dispatch and this
# project's convolution-gradient kernels against TF.js's on webgpu (and a split-K candidate for
# the weight gradients), wasm on every core for comparison, and how the wasm kernel engine
# scales with threads (inference and training).
# Prints the numbers; paste them with the card's name into the README.
#
#   bash tools/gpu_check.sh                  # real sizes: convnext_tiny at 224
#   SIZE=32 BATCHES=1,2 TRAIN_BATCH=2 bash tools/gpu_check.sh   # a quick run (software adapter)
#
# Needs Deno and the project's packages (`deno install --frozen`).
set -uo pipefail
cd "$(dirname "$0")/.."
export DENO_NO_UPDATE_CHECK=1
# The Vulkan loader prints an error without a runtime dir on headless machines; harmless.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
SIZE=${SIZE:-224}
BATCHES=${BATCHES:-1,8,32}
TRAIN_BATCH=${TRAIN_BATCH:-32}
status=0
step() { echo; echo "== $*"; }

step "machine"
nproc
(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv) ||
  echo "no nvidia-smi"
ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null || echo "no Vulkan ICD files"

step "WebGPU adapter"
deno eval 'const a = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
if (!a) { console.log("no adapter"); Deno.exit(1); }
const { vendor, architecture, device, description } = a.info;
console.log(JSON.stringify({ vendor, architecture, device, description,
  isFallbackAdapter: a.info.isFallbackAdapter ?? false,
  maxBufferSize: a.limits.maxBufferSize,
  maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize }));' || status=1

step "parity: the WebGPU tests"
deno test -A tests/webgpu_test.ts tests/webgpu_kernels_test.ts tests/webgpu_grads_test.ts \
  tests/webgpu_conv_grads_test.ts 2>&1 | grep -E "passed|FAILED|error" || status=1

step "inference, webgpu (the stock TF.js graph, then the optimized plan as GPU ops)"
deno task bench --backend webgpu --path both --model convnext_tiny --size "$SIZE" \
  --batch "$BATCHES" --iters 5 --json || status=1

step "dispatch cost on webgpu (host time per kernel dispatch)"
deno task bench:dispatch --json || status=1

step "convolution gradients and weight-gradient matmuls on webgpu: ours against TF.js's"
deno task bench:webgpu-kernels --size "$SIZE" --batch "$TRAIN_BATCH" --iters 3 --json || status=1

step "inference, wasm on every core (the kernel engine)"
deno task bench --backend wasm --path optimized --model convnext_tiny --size "$SIZE" \
  --batch "$BATCHES" --iters 3 --json || status=1

step "training, webgpu"
# --json: the JSON line on stdout; the progress goes to a log, shown when the run fails.
# --profile: then the kernels that took the most time in one step (what to speed up next;
# times only where the adapter offers timestamp queries, the call counts always).
train_log=$(mktemp)
deno task bench:train --backend webgpu --model convnext_tiny --size "$SIZE" \
  --batch "$TRAIN_BATCH" --steps 3 --json --profile 2>"$train_log" ||
  { tail -n 5 "$train_log"; status=1; }
sed -n '/^profiled step/,$p' "$train_log"
rm -f "$train_log"

step "core scaling: wasm inference (kernel engine, batch 16) and engine training (batch 16)"
cores=$(nproc)
for t in 1 2 4 8 16 32 64; do
  [ "$t" -le "$cores" ] || break
  CONVNEXT_THREADS=$t deno task bench --backend wasm --path optimized --model convnext_tiny \
    --size "$SIZE" --batch 16 --iters 2 --json || status=1
done
for t in 2 4 8 16; do
  [ "$t" -le "$cores" ] || break
  deno task bench:train --backend wasm --path engine --threads "$t" --model convnext_tiny \
    --size "$SIZE" --batch 16 --steps 2 --json 2>/dev/null || status=1
done

exit $status
