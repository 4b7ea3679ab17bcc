#!/usr/bin/env bash
# Packs what tools/gpu_check.sh needs on a machine with no network and no Deno (such as the
# GPU machines lent to some development sessions, which receive the working tree and at most
# 64 MiB in all) into .device-kit/ (git-ignored), with .device-kit/run.sh to run it there:
#
#   bash tools/device_kit.sh         # here: deno, the npm files the check opens, libvulkan1
#   bash .device-kit/run.sh          # there, from the repository root (args go to gpu_check.sh)
#
# The npm files are exactly those a small run of the check opens here (traced with strace):
# about 1 MB compressed instead of the 380 MB node_modules. Deno is ~30 MB compressed.
# Needs deno, strace, xz, python3 and apt-get here; there, python3 or xz, tar, and dpkg for the
# Vulkan loader when the machine has none (the NVIDIA driver brings its own Vulkan driver).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in deno strace xz apt-get python3; do
  command -v "$tool" >/dev/null || { echo "device_kit: needs $tool" >&2; exit 1; }
done
kit=.device-kit
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$kit.new"' EXIT
rm -rf "$kit.new"
mkdir -p "$kit.new"

deno_dir=$(deno info --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["denoDir"])')
# The npm registry's package lists from Deno's cache: without them Deno tries the registry
# for the library's `npm:` imports on every start (and waits on a network that is not there).
(cd "$deno_dir" && find npm -name registry.json | tar cf - -T -) | xz -T0 -9 >"$kit.new/deno_dir.tar.xz"

echo "tracing a small run of tools/gpu_check.sh (a few minutes)..."
# With a Deno cache as the kit brings (cold: the type checks read every declaration file).
mkdir -p "$tmp/deno_dir"
xz -dc "$kit.new/deno_dir.tar.xz" | tar xf - -C "$tmp/deno_dir"
DENO_DIR="$tmp/deno_dir" SIZE=32 BATCHES=1 TRAIN_BATCH=2 strace -f -qq -o "$tmp/trace" \
  -e trace=openat,open,statx,newfstatat,stat,lstat,readlinkat,access,faccessat,faccessat2 \
  bash tools/gpu_check.sh >"$tmp/check.log" 2>&1 || {
  tail -n 20 "$tmp/check.log" >&2
  echo "device_kit: the small check failed here; fix that first" >&2
  exit 1
}
# Files (not directories: those would bring everything in them) the run touched, by their
# real paths (a path through a linked folder would unpack as a file under a link), every
# link of the node_modules tree, and Deno's record that the tree is installed.
{
  grep -oE '"[^"]*node_modules/[^"]*"' "$tmp/trace" | tr -d '"' | sed "s|^$PWD/||" |
    grep '^node_modules/' | sort -u | while read -r f; do
    if [ -f "$f" ]; then realpath --relative-to=. "$f"; fi
  done | grep '^node_modules/'
  find node_modules -type l
  ls node_modules/.deno/.setup-cache.bin node_modules/.deno/.deno.lock 2>/dev/null || true
} | sort -u >"$tmp/files"
tar cf - -T "$tmp/files" | xz -T0 -9 >"$kit.new/node_modules.tar.xz"
xz -T0 -9 -c "$(readlink -f "$(command -v deno)")" >"$kit.new/deno.xz"
(cd "$kit.new" && apt-get download libvulkan1 2>/dev/null)
deno --version | head -n1 >"$kit.new/VERSION"

cat >"$kit.new/run.sh" <<'EOF'
#!/usr/bin/env bash
# Unpacks the kit that tools/device_kit.sh made and runs tools/gpu_check.sh with its
# arguments (run from anywhere; it works in the repository the kit lies in).
set -uo pipefail
kit=$(cd "$(dirname "$0")" && pwd)
cd "$kit/.."
# xz may be missing on a bare machine; Python's lzma reads the same files.
unxz_to() {
  if command -v xz >/dev/null; then xz -dc "$1" >"$2"; else
    python3 -c 'import lzma, shutil, sys
shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
  fi
}
bin=$(mktemp -d)
unxz_to "$kit/deno.xz" "$bin/deno" && chmod +x "$bin/deno" || exit 1
export PATH="$bin:$PATH" DENO_NO_UPDATE_CHECK=1
unxz_to "$kit/node_modules.tar.xz" "$bin/nm.tar" && tar xf "$bin/nm.tar" || exit 1
export DENO_DIR="$bin/deno_dir"
mkdir -p "$DENO_DIR"
unxz_to "$kit/deno_dir.tar.xz" "$bin/dd.tar" && tar xf "$bin/dd.tar" -C "$DENO_DIR" || exit 1
# Deno's WebGPU needs the Vulkan loader; the NVIDIA driver's Vulkan driver is found through
# its ICD file, which the device machines mount under /usr/local/nvidia.
if ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
  dpkg -x "$kit"/libvulkan1_*.deb / && ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; fi
echo "kit: $(cat "$kit/VERSION"), $(command -v deno)"
bash tools/gpu_check.sh "$@"
EOF
chmod +x "$kit.new/run.sh"
rm -rf "$kit"
mv "$kit.new" "$kit"
echo "wrote $kit ($(du -sh "$kit" | cut -f1)): carry it and run: bash $kit/run.sh"
