// ConvNeXt inference kernels for WebAssembly SIMD (128-bit), compiled by
// tools/build_kernels.sh into kernels_wasm.ts. No libc and no static buffers: every buffer
// lives in the imported memory and is laid out by the TypeScript side (./engine.ts). The
// memory is shared: several threads run these kernels on it at once, each with its own
// stack (the exported __stack_pointer, set per instance) and its own scratch.
//
// Layout: activations are NHWC float32; a GEMM's right-hand matrix is packed by pack_b
// into panels of 8 columns (K rows x 8 floats each, the last panel zero-filled).
//
// Why 4x8 register tiles, A packed four rows at a time and broadcast by shuffles: Deno runs
// WebAssembly without V8's trap handler, so every load carries an explicit bounds check; this
// tile needs 3 loads per 8 fused multiply-adds and leaves V8 enough of the 15 usable xmm
// registers not to spill (6x8 and 5x8 tiles, broadcast loads, and unrolling the k loop all
// spilled or ran 15-40% slower here).
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
typedef float f4 __attribute__((vector_size(16)));

#ifdef RELAXED
// a * b + c, fused where the CPU has FMA (relaxed SIMD lets the engine pick).
#define MADD(a, b, c) ((v128_t)__builtin_wasm_relaxed_madd_f32x4((f4)(a), (f4)(b), (f4)(c)))
#else
#define MADD(a, b, c) wasm_f32x4_add(wasm_f32x4_mul(a, b), c)
#endif

enum { EPI_BIAS = 0, EPI_GELU = 1, EPI_RESIDUAL = 2 };

// The constants of gelu4: erf(x) as a rational function, |error| about 1e-7 on [-4, 4]
// (beyond, erf is +-1 in float32), with the coefficients of XLA/Eigen's float erf.
typedef struct {
  v128_t lim, nlim, p13, p11, p9, p7, p5, p3, p1, q8, q6, q4, q2, q0, rsqrt2, half;
} gelu_consts;

// Built from `one` (1.0 at run time): splats of literal constants would be rematerialized
// by V8 inside every loop, at three or four instructions each; built from a value the
// compiler cannot see, they stay in registers (or on the native stack) across the loop.
static inline gelu_consts gelu_make(float one) {
  gelu_consts k;
  k.lim = wasm_f32x4_splat(4.f * one);
  k.nlim = wasm_f32x4_splat(-4.f * one);
  k.p13 = wasm_f32x4_splat(-2.72614225801306e-10f * one);
  k.p11 = wasm_f32x4_splat(2.77068142495902e-08f * one);
  k.p9 = wasm_f32x4_splat(-2.10102402082508e-06f * one);
  k.p7 = wasm_f32x4_splat(-5.69250639462346e-05f * one);
  k.p5 = wasm_f32x4_splat(-7.34990630326855e-04f * one);
  k.p3 = wasm_f32x4_splat(-2.95459980854025e-03f * one);
  k.p1 = wasm_f32x4_splat(-1.60960333262415e-02f * one);
  k.q8 = wasm_f32x4_splat(-1.45660718464996e-05f * one);
  k.q6 = wasm_f32x4_splat(-2.13374055278905e-04f * one);
  k.q4 = wasm_f32x4_splat(-1.68282697438203e-03f * one);
  k.q2 = wasm_f32x4_splat(-7.37332916720468e-03f * one);
  k.q0 = wasm_f32x4_splat(-1.42647390514189e-02f * one);
  k.rsqrt2 = wasm_f32x4_splat(0.70710678118654752f * one);
  k.half = wasm_f32x4_splat(0.5f * one);
  return k;
}

// 0.5 v (1 + erf(v / sqrt 2)): the exact GELU of PyTorch's nn.GELU().
static inline v128_t gelu4k(v128_t v, const gelu_consts k) {
  v128_t x = wasm_f32x4_mul(v, k.rsqrt2);
  x = wasm_f32x4_pmax(wasm_f32x4_pmin(x, k.lim), k.nlim);
  v128_t x2 = wasm_f32x4_mul(x, x);
  v128_t p = MADD(k.p13, x2, k.p11);
  p = MADD(p, x2, k.p9);
  p = MADD(p, x2, k.p7);
  p = MADD(p, x2, k.p5);
  p = MADD(p, x2, k.p3);
  p = MADD(p, x2, k.p1);
  p = wasm_f32x4_mul(p, x);
  v128_t q = MADD(k.q8, x2, k.q6);
  q = MADD(q, x2, k.q4);
  q = MADD(q, x2, k.q2);
  q = MADD(q, x2, k.q0);
  v128_t e = wasm_f32x4_div(p, q);
  v128_t h = wasm_f32x4_mul(v, k.half);
  return MADD(h, e, h);
}

// GELU of one vector with literal constants (the rare dense layer with a GELU activation).
static inline v128_t gelu4(v128_t v) { return gelu4k(v, gelu_make(1.f)); }

// GELU in place over `size` floats (a multiple of 4); `one` must be 1 (see gelu_make).
static void gelu_run(float* x, long size, float one) {
  const gelu_consts k = gelu_make(one);
  for (long i = 0; i < size; i += 4) wasm_v128_store(x + i, gelu4k(wasm_v128_load(x + i), k));
}

// The machine's ceiling for these kernels: `iters` rounds of 12 independent multiply-adds
// on registers only (no memory access, so no bounds check), 96 FLOPs a round with relaxed
// SIMD's fused multiply-add. Returns a value derived from the results so none is dropped.
EXPORT(fma_peak) float fma_peak(int iters) {
  v128_t m = wasm_f32x4_splat(0.999999f), c = wasm_f32x4_splat(1e-7f), a[12];
  for (int k = 0; k < 12; k++) a[k] = wasm_f32x4_splat((float)k);
  // A constant trip count: clang unrolls it and keeps the 12 accumulators in registers.
  for (int i = 0; i < iters; i++)
    for (int k = 0; k < 12; k++) a[k] = MADD(a[k], m, c);
  v128_t s = a[0];
  for (int k = 1; k < 12; k++) s = wasm_f32x4_add(s, a[k]);
  return wasm_f32x4_extract_lane(s, 0);
}

// Copy B (K x N, row-major) into panels of 8 columns; N is padded to a multiple of 8 with
// zeros. dst holds K * ceil(N / 8) * 8 floats.
EXPORT(pack_b) void pack_b(const float* src, int K, int N, float* dst) {
  int panels = (N + 7) / 8;
  for (int p = 0; p < panels; p++) {
    float* d = dst + (long)p * K * 8;
    for (int k = 0; k < K; k++) {
      const float* s = src + (long)k * N + p * 8;
      for (int j = 0; j < 8; j++) d[k * 8 + j] = p * 8 + j < N ? s[j] : 0.f;
    }
  }
}

// Rows of A per packing chunk: gemm's `pack` scratch holds MC * K floats.
#define MC 32

// tile4x8's accumulators hold diagonals: lane l of d[q] belongs to row (q + l) mod 4 (the
// A vector was rotated by q lanes). Turns them into rows: row r takes lane l from
// d[(r - l) mod 4], two lanes from each of two blends.
static inline void derotate(v128_t* d0, v128_t* d1, v128_t* d2, v128_t* d3) {
  v128_t v = wasm_i32x4_shuffle(*d0, *d3, 0, 5, 2, 7);
  v128_t u = wasm_i32x4_shuffle(*d2, *d1, 0, 5, 2, 7);
  v128_t w = wasm_i32x4_shuffle(*d1, *d0, 0, 5, 2, 7);
  v128_t z = wasm_i32x4_shuffle(*d3, *d2, 0, 5, 2, 7);
  *d0 = wasm_i32x4_shuffle(v, u, 0, 1, 6, 7);
  *d1 = wasm_i32x4_shuffle(w, z, 0, 1, 6, 7);
  *d2 = wasm_i32x4_shuffle(u, v, 0, 1, 6, 7);
  *d3 = wasm_i32x4_shuffle(z, w, 0, 1, 6, 7);
}

// A 4x8 tile of A B: `ap` holds 4 rows of A interleaved (ap[4k + r]), `bk` a packed panel.
// One vector load of A per k: fewer loads means fewer of the bounds checks Deno's V8 puts
// on every access (4x8 tiles with four broadcast loads per k, and 5x8 or 6x8 tiles, ran
// 15-30% slower here; 4x12 spilled and ran 20-60% slower). The A vector is used as loaded
// and rotated by one, two and three lanes (three shuffles per k, not four broadcasts: 3-4%
// faster, the same sums), so the accumulators hold diagonals until derotate.
static inline void tile4x8(const float* ap, const float* bk, int K,
                           float* C, int ldc, const float* bias, const float* R, int ldr,
                           float* acc) {
  v128_t c00 = wasm_f32x4_splat(0.f), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00;
  const float* end = bk + 8 * K;
  for (; bk < end; bk += 8, ap += 4) {
    v128_t a = wasm_v128_load(ap);
    v128_t b0 = wasm_v128_load(bk), b1 = wasm_v128_load(bk + 4);
    c00 = MADD(a, b0, c00);
    c01 = MADD(a, b1, c01);
    v128_t x = wasm_i32x4_shuffle(a, a, 1, 2, 3, 0);
    c10 = MADD(x, b0, c10);
    c11 = MADD(x, b1, c11);
    x = wasm_i32x4_shuffle(a, a, 2, 3, 0, 1);
    c20 = MADD(x, b0, c20);
    c21 = MADD(x, b1, c21);
    x = wasm_i32x4_shuffle(a, a, 3, 0, 1, 2);
    c30 = MADD(x, b0, c30);
    c31 = MADD(x, b1, c31);
  }
  derotate(&c00, &c10, &c20, &c30);
  derotate(&c01, &c11, &c21, &c31);
  if (acc) {
    // A partial tile: finish_tile takes it from here.
    wasm_v128_store(acc, c00);
    wasm_v128_store(acc + 4, c01);
    wasm_v128_store(acc + 8, c10);
    wasm_v128_store(acc + 12, c11);
    wasm_v128_store(acc + 16, c20);
    wasm_v128_store(acc + 20, c21);
    wasm_v128_store(acc + 24, c30);
    wasm_v128_store(acc + 28, c31);
    return;
  }
  // A full 4x8 tile: bias (and residual) straight from the registers.
  if (bias) {
    v128_t b0 = wasm_v128_load(bias), b1 = wasm_v128_load(bias + 4);
    c00 = wasm_f32x4_add(c00, b0);
    c01 = wasm_f32x4_add(c01, b1);
    c10 = wasm_f32x4_add(c10, b0);
    c11 = wasm_f32x4_add(c11, b1);
    c20 = wasm_f32x4_add(c20, b0);
    c21 = wasm_f32x4_add(c21, b1);
    c30 = wasm_f32x4_add(c30, b0);
    c31 = wasm_f32x4_add(c31, b1);
  }
  if (R) {
    c00 = wasm_f32x4_add(c00, wasm_v128_load(R));
    c01 = wasm_f32x4_add(c01, wasm_v128_load(R + 4));
    c10 = wasm_f32x4_add(c10, wasm_v128_load(R + ldr));
    c11 = wasm_f32x4_add(c11, wasm_v128_load(R + ldr + 4));
    c20 = wasm_f32x4_add(c20, wasm_v128_load(R + 2 * ldr));
    c21 = wasm_f32x4_add(c21, wasm_v128_load(R + 2 * ldr + 4));
    c30 = wasm_f32x4_add(c30, wasm_v128_load(R + 3 * ldr));
    c31 = wasm_f32x4_add(c31, wasm_v128_load(R + 3 * ldr + 4));
  }
  wasm_v128_store(C, c00);
  wasm_v128_store(C + 4, c01);
  wasm_v128_store(C + ldc, c10);
  wasm_v128_store(C + ldc + 4, c11);
  wasm_v128_store(C + 2 * ldc, c20);
  wasm_v128_store(C + 2 * ldc + 4, c21);
  wasm_v128_store(C + 3 * ldc, c30);
  wasm_v128_store(C + 3 * ldc + 4, c31);
}

// Bias, activation or residual on `rows` rows of an accumulated 8-wide tile (`acc`, rows of
// 8), written to the first `nc` columns of C.
static void finish_tile(const float* acc, int rows, const float* bias, int nc, float* C,
                        int ldc, int mode, const float* R, int ldr) {
  float bb[8], rr[8], out[8];
  for (int j = 0; j < 8; j++) bb[j] = j < nc && bias ? bias[j] : 0.f;
  v128_t bias0 = wasm_v128_load(bb), bias1 = wasm_v128_load(bb + 4);
  for (int r = 0; r < rows; r++) {
    v128_t lo = wasm_f32x4_add(wasm_v128_load(acc + 8 * r), bias0);
    v128_t hi = wasm_f32x4_add(wasm_v128_load(acc + 8 * r + 4), bias1);
    if (mode == EPI_GELU) {
      lo = gelu4(lo);
      hi = gelu4(hi);
    } else if (mode == EPI_RESIDUAL) {
      const float* res = R + (long)r * ldr;
      if (nc == 8) {
        lo = wasm_f32x4_add(lo, wasm_v128_load(res));
        hi = wasm_f32x4_add(hi, wasm_v128_load(res + 4));
      } else {
        for (int j = 0; j < 8; j++) rr[j] = j < nc ? res[j] : 0.f;
        lo = wasm_f32x4_add(lo, wasm_v128_load(rr));
        hi = wasm_f32x4_add(hi, wasm_v128_load(rr + 4));
      }
    }
    float* c = C + (long)r * ldc;
    if (nc == 8) {
      wasm_v128_store(c, lo);
      wasm_v128_store(c + 4, hi);
    } else {
      wasm_v128_store(out, lo);
      wasm_v128_store(out + 4, hi);
      for (int j = 0; j < nc; j++) c[j] = out[j];
    }
  }
}

// Pack rows row0..row0+3 of A (rows at or beyond M are zeros) interleaved: dst[4k + r] =
// A[row0 + r][k]. Four columns at a time through a 4x4 transpose in registers: a scalar
// copy cost two bounds-checked accesses per float, a tenth of a K = 384 matmul's time.
static void pack_rows4(const float* A, int lda, int M, int row0, int K, float* dst) {
  const float* src[4];
  int valid[4];
  for (int r = 0; r < 4; r++) {
    valid[r] = row0 + r < M;
    src[r] = A + (long)(valid[r] ? row0 + r : row0) * lda;
  }
  v128_t z = wasm_f32x4_splat(0.f);
  int k = 0;
  for (; k + 4 <= K; k += 4) {
    v128_t v0 = wasm_v128_load(src[0] + k);
    v128_t v1 = valid[1] ? wasm_v128_load(src[1] + k) : z;
    v128_t v2 = valid[2] ? wasm_v128_load(src[2] + k) : z;
    v128_t v3 = valid[3] ? wasm_v128_load(src[3] + k) : z;
    v128_t t0 = wasm_i32x4_shuffle(v0, v1, 0, 4, 1, 5);
    v128_t t1 = wasm_i32x4_shuffle(v2, v3, 0, 4, 1, 5);
    v128_t t2 = wasm_i32x4_shuffle(v0, v1, 2, 6, 3, 7);
    v128_t t3 = wasm_i32x4_shuffle(v2, v3, 2, 6, 3, 7);
    float* d = dst + 4 * k;
    wasm_v128_store(d, wasm_i32x4_shuffle(t0, t1, 0, 1, 4, 5));
    wasm_v128_store(d + 4, wasm_i32x4_shuffle(t0, t1, 2, 3, 6, 7));
    wasm_v128_store(d + 8, wasm_i32x4_shuffle(t2, t3, 0, 1, 4, 5));
    wasm_v128_store(d + 12, wasm_i32x4_shuffle(t2, t3, 2, 3, 6, 7));
  }
  for (; k < K; k++)
    for (int r = 0; r < 4; r++) dst[4 * k + r] = valid[r] ? src[r][k] : 0.f;
}

// Floats of `pack` scratch gemm needs for inner dimension K.
EXPORT(gemm_scratch) long gemm_scratch(int K) { return (long)MC * K; }

// C[M x N] = epilogue(A[M x K] B + bias): A rows at stride lda, B packed by pack_b, C rows
// at stride ldc; mode EPI_RESIDUAL adds R (rows at stride ldr). `pack` is scratch of
// gemm_scratch(K) floats (each thread its own: the memory is shared between threads).
// Rows go in chunks of MC, packed four by four; each B panel then serves the whole chunk
// from cache.
EXPORT(gemm) void gemm(const float* A, int lda, int M, int K, const float* Bp, int N,
                       const float* bias, float* C, int ldc, int mode, const float* R,
                       int ldr, float* pack) {
  int panels = (N + 7) / 8;
  float acc[32];
  for (int i0 = 0; i0 < M; i0 += MC) {
    int mc = M - i0 < MC ? M - i0 : MC;
    int groups = (mc + 3) / 4;
    for (int g = 0; g < groups; g++) pack_rows4(A, lda, M, i0 + 4 * g, K, pack + (long)g * 4 * K);
    for (int p = 0; p < panels; p++) {
      int j0 = p * 8;
      int nc = N - j0 < 8 ? N - j0 : 8;
      const float* b = Bp + (long)p * K * 8;
      for (int g = 0; g < groups; g++) {
        int row = i0 + 4 * g;
        int rows = M - row < 4 ? M - row : 4;
        float* c = C + (long)row * ldc + j0;
        const float* r = R ? R + (long)row * ldr + j0 : 0;
        const float* bj = bias ? bias + j0 : 0;
        if (rows == 4 && nc == 8 && mode != EPI_GELU) {
          tile4x8(pack + (long)g * 4 * K, b, K, c, ldc, bj, mode == EPI_RESIDUAL ? r : 0, ldr,
                  0);
        } else {
          tile4x8(pack + (long)g * 4 * K, b, K, 0, 0, 0, 0, 0, acc);
          finish_tile(acc, rows, bj, nc, c, ldc, mode, r, ldr);
        }
      }
    }
  }
}

// LayerNorm over the last axis (C, a multiple of 4) of M rows, in place or into out;
// gamma = 0 skips the affine (it is folded into the next layer). Two passes over each row
// (mean, then centered variance), as PyTorch computes it.
EXPORT(layer_norm) void layer_norm(const float* x, int M, int C, float eps, const float* gamma,
                                   const float* beta, float* out) {
  for (int m = 0; m < M; m++) {
    const float* r = x + (long)m * C;
    float* o = out + (long)m * C;
    v128_t s = wasm_f32x4_splat(0.f);
    for (int c = 0; c < C; c += 4) s = wasm_f32x4_add(s, wasm_v128_load(r + c));
    float mean = (wasm_f32x4_extract_lane(s, 0) + wasm_f32x4_extract_lane(s, 1) +
                  wasm_f32x4_extract_lane(s, 2) + wasm_f32x4_extract_lane(s, 3)) /
                 (float)C;
    v128_t mv = wasm_f32x4_splat(mean);
    v128_t q = wasm_f32x4_splat(0.f);
    for (int c = 0; c < C; c += 4) {
      v128_t d = wasm_f32x4_sub(wasm_v128_load(r + c), mv);
      q = MADD(d, d, q);
    }
    float var = (wasm_f32x4_extract_lane(q, 0) + wasm_f32x4_extract_lane(q, 1) +
                 wasm_f32x4_extract_lane(q, 2) + wasm_f32x4_extract_lane(q, 3)) /
                (float)C;
    v128_t inv = wasm_f32x4_div(wasm_f32x4_splat(1.f),
                                wasm_f32x4_sqrt(wasm_f32x4_splat(var + eps)));
    for (int c = 0; c < C; c += 4) {
      v128_t v = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(r + c), mv), inv);
      if (gamma) v = MADD(v, wasm_v128_load(gamma + c), wasm_v128_load(beta + c));
      wasm_v128_store(o + c, v);
    }
  }
}

// One output pixel's k x k depthwise conv with bounds checks (the map's edges): input
// rows ky0..ky1-1 are in the slab, columns outside 0..W-1 are the zero padding.
static void dw_pixel(const float* x, int W, int C, int k, const float* w, const float* bias,
                     float* yp, int oy, int ox, int padTop, int ky0, int ky1) {
  int half = (k - 1) / 2;
  for (int c = 0; c < C; c += 4) {
    v128_t a = wasm_v128_load(bias + c);
    for (int ky = ky0; ky < ky1; ky++) {
      const float* in = x + (long)(oy + ky - padTop) * W * C + c;
      const float* wr = w + (long)ky * k * C + c;
      for (int kx = 0; kx < k; kx++) {
        int ix = ox + kx - half;
        if (ix < 0 || ix >= W) continue;
        a = MADD(wasm_v128_load(in + (long)ix * C), wasm_v128_load(wr + kx * C), a);
      }
    }
    wasm_v128_store(yp + c, a);
  }
}

// Rows oy0..oy1-1 of a k x k depthwise conv (stride 1, zero padding) of a slab of `rows`
// rows of W x C, with padTop zero rows above it (and (k - 1) / 2 columns each side), into
// y. Reads the slab in place: no padded copy (that copy was a third of a block's memory
// traffic, which the two cores share). Inside the map, four output columns at a time share
// each weight load and the input taps roll through four registers: per kernel column one
// input load, one weight load and 4 FMAs; the edge columns take dw_pixel.
static inline void dw_rows(const float* x, int rows, int W, int C, int k, int padTop,
                           const float* w, const float* bias, float* y, int oy0, int oy1) {
  int half = (k - 1) / 2;
  for (int oy = oy0; oy < oy1; oy++) {
    float* yr = y + (long)(oy - oy0) * W * C;
    // Kernel rows whose input row oy + ky - padTop lies in the slab.
    int ky0 = padTop - oy > 0 ? padTop - oy : 0;
    int ky1 = rows + padTop - oy < k ? rows + padTop - oy : k;
    int ox = 0;
    for (; ox < half && ox < W; ox++)
      dw_pixel(x, W, C, k, w, bias, yr + (long)ox * C, oy, ox, padTop, ky0, ky1);
    for (; ox + 4 + half <= W; ox += 4) {
      for (int c = 0; c < C; c += 4) {
        v128_t b = wasm_v128_load(bias + c);
        v128_t a0 = b, a1 = b, a2 = b, a3 = b;
        for (int ky = ky0; ky < ky1; ky++) {
          const float* in = x + ((long)(oy + ky - padTop) * W + ox - half) * C + c;
          const float* wr = w + (long)ky * k * C + c;
          v128_t i0 = wasm_v128_load(in), i1 = wasm_v128_load(in + C),
                 i2 = wasm_v128_load(in + 2 * C);
          for (int kx = 0; kx < k; kx++) {
            v128_t i3 = wasm_v128_load(in + (kx + 3) * C);
            v128_t wv = wasm_v128_load(wr + kx * C);
            a0 = MADD(i0, wv, a0);
            a1 = MADD(i1, wv, a1);
            a2 = MADD(i2, wv, a2);
            a3 = MADD(i3, wv, a3);
            i0 = i1;
            i1 = i2;
            i2 = i3;
          }
        }
        wasm_v128_store(yr + (ox + 0) * C + c, a0);
        wasm_v128_store(yr + (ox + 1) * C + c, a1);
        wasm_v128_store(yr + (ox + 2) * C + c, a2);
        wasm_v128_store(yr + (ox + 3) * C + c, a3);
      }
    }
    for (; ox < W; ox++)
      dw_pixel(x, W, C, k, w, bias, yr + (long)ox * C, oy, ox, padTop, ky0, ky1);
  }
}

// Floats of scratch block() needs: a group of depthwise rows, a tile of hidden units and
// the matmuls' packing buffer.
EXPORT(block_scratch) long block_scratch(int rows, int W, int C, int k, int tile) {
  int group = tile / W > 0 ? tile / W : 1;
  return (long)group * W * C + (long)tile * 4 * C + gemm_scratch(4 * C) + 64;
}

// One ConvNeXt block with folded weights on a slab of n images x rows x W x C:
//   out = x + W2' gelu(W1' norm(dwconv(x)) + b1') + b2'
// padTop/padBottom zero rows lie outside the slab (a full map: both (k-1)/2; a band of a
// map split over threads: fewer, the slab then carries neighbour rows instead). out has
// rows + padTop + padBottom - (k - 1) rows per image. Works tile by tile (`tile` pixels),
// so the hidden activations stay in cache. Tiles run across image boundaries: on small
// maps (stages 3 and 4) a tile then spans several images, and the large weights stream
// through the cache once per tile rather than once per image.
EXPORT(block) void block(const float* x, int n, int rows, int W, int C, int padTop,
                         int padBottom, int k, const float* dww, const float* dwb, float eps,
                         const float* w1p, const float* b1, const float* w2p, const float* b2,
                         int tile, float* scratch, float* out) {
  int half = (k - 1) / 2;
  int orow = rows + padTop + padBottom - 2 * half;
  int hidden = 4 * C;
  int group = tile / W > 0 ? tile / W : 1;
  float* y = scratch;
  float* h = y + (long)group * W * C;
  float* pack = h + (long)tile * hidden;
  // Output row r of the batch is row r % orow of image r / orow. Its residual is slab row
  // r % orow + half - padTop of that image: consecutive across images only when the slab
  // has no halo rows (padTop = padBottom = half), else tiles stop at image boundaries.
  int across = padTop == half && padBottom == half;
  // 1, unknown to the compiler (eps * 0 is not folded: eps could be infinite).
  float one = eps * 0.f + 1.f;
  long map = (long)rows * W * C;
  int total = n * orow;
  for (int r0 = 0; r0 < total;) {
    int r1 = r0 + group < total ? r0 + group : total;
    if (!across) {
      int end = (r0 / orow + 1) * orow;
      if (r1 > end) r1 = end;
    }
    for (int r = r0; r < r1; r++) {
      int img = r / orow, oy = r % orow;
      float* yr = y + (long)(r - r0) * W * C;
      if (k == 7)
        dw_rows(x + img * map, rows, W, C, 7, padTop, dww, dwb, yr, oy, oy + 1);
      else
        dw_rows(x + img * map, rows, W, C, k, padTop, dww, dwb, yr, oy, oy + 1);
    }
    int pixels = (r1 - r0) * W;
    layer_norm(y, pixels, C, eps, 0, 0, y);
    const float* res = x + (r0 / orow) * map + (long)(r0 % orow + half - padTop) * W * C;
    float* o = out + (long)r0 * W * C;
    for (int p0 = 0; p0 < pixels; p0 += tile) {
      int m = pixels - p0 < tile ? pixels - p0 : tile;
      gemm(y + (long)p0 * C, C, m, C, w1p, hidden, b1, h, hidden, EPI_BIAS, 0, 0, pack);
      // A pass of its own over the tile (in cache): the constants stay in registers.
      gelu_run(h, (long)m * hidden, one);
      gemm(h, hidden, m, hidden, w2p, C, b2, o + (long)p0 * C, C, EPI_RESIDUAL,
           res + (long)p0 * C, C, pack);
    }
    r0 = r1;
  }
}

// Patches of a kernel = stride = s convolution without padding, as GEMM rows: image n,
// patch (py, px) becomes row (n, py, px) of s*s*C floats in (ky, kx, c) order, the order of
// an HWIO kernel's rows.
EXPORT(patchify) void patchify(const float* x, int n, int H, int W, int C, int s, float* out) {
  int ph = H / s, pw = W / s;
  long row = (long)s * s * C;
  for (int img = 0; img < n; img++)
    for (int py = 0; py < ph; py++)
      for (int px = 0; px < pw; px++) {
        float* o = out + (((long)img * ph + py) * pw + px) * row;
        for (int ky = 0; ky < s; ky++) {
          const float* src = x + (((long)img * H + py * s + ky) * W + px * s) * C;
          float* d = o + (long)ky * s * C;
          for (int i = 0; i < s * C; i++) d[i] = src[i];
        }
      }
}

// Mean over the pixels of each image: x is n x pixels x C, out n x C.
EXPORT(avg_pool) void avg_pool(const float* x, int n, int pixels, int C, float* out) {
  for (int img = 0; img < n; img++) {
    float* o = out + (long)img * C;
    for (int c = 0; c < C; c++) o[c] = 0.f;
    for (int p = 0; p < pixels; p++) {
      const float* r = x + ((long)img * pixels + p) * C;
      for (int c = 0; c < C; c++) o[c] += r[c];
    }
    for (int c = 0; c < C; c++) o[c] /= (float)pixels;
  }
}

// GELU in place over `size` floats; `one` must be 1 (see gelu_make).
EXPORT(gelu) void gelu(float* x, long size, float one) {
  long whole = size / 4 * 4;
  gelu_run(x, whole, one);
  for (long i = whole; i < size; i++) {
    float t[4] = {x[i], 0, 0, 0};
    wasm_v128_store(t, gelu4(wasm_v128_load(t)));
    x[i] = t[0];
  }
}

// ---------------------------------------------------------------------------------------
// Training kernels: the backward pass of ConvNeXt (lib/infer/engine/train.ts drives them).
// Everything above is the inference engine and stays as it is; these functions only call
// it. Gradients accumulate (+=) into the caller's buffers, so that the images of a shard,
// and the tiles of a map, add up without a copy.
// ---------------------------------------------------------------------------------------

// Packs B = src^T for gemm, where src is R x S row-major (so B is S x R: K = S, N = R):
// panel p holds rows 8p..8p+7 of src as its 8 columns. For the backward matmuls, which
// multiply by the transposed weights. Eight rows of src are read four floats at a time and
// transposed in registers (a scalar copy costs two bounds-checked accesses per float).
EXPORT(pack_bt) void pack_bt(const float* src, int R, int S, float* dst) {
  int panels = (R + 7) / 8;
  for (int p = 0; p < panels; p++) {
    float* d = dst + (long)p * S * 8;
    int r0 = p * 8;
    if (r0 + 8 > R || S % 4 != 0) {
      for (int k = 0; k < S; k++)
        for (int j = 0; j < 8; j++) d[k * 8 + j] = r0 + j < R ? src[(long)(r0 + j) * S + k] : 0.f;
      continue;
    }
    for (int k = 0; k < S; k += 4) {
      for (int half = 0; half < 2; half++) {
        const float* s = src + (long)(r0 + 4 * half) * S + k;
        v128_t v0 = wasm_v128_load(s), v1 = wasm_v128_load(s + S);
        v128_t v2 = wasm_v128_load(s + 2 * S), v3 = wasm_v128_load(s + 3 * S);
        v128_t t0 = wasm_i32x4_shuffle(v0, v1, 0, 4, 1, 5);
        v128_t t1 = wasm_i32x4_shuffle(v2, v3, 0, 4, 1, 5);
        v128_t t2 = wasm_i32x4_shuffle(v0, v1, 2, 6, 3, 7);
        v128_t t3 = wasm_i32x4_shuffle(v2, v3, 2, 6, 3, 7);
        float* o = d + k * 8 + 4 * half;
        wasm_v128_store(o, wasm_i32x4_shuffle(t0, t1, 0, 1, 4, 5));
        wasm_v128_store(o + 8, wasm_i32x4_shuffle(t0, t1, 2, 3, 6, 7));
        wasm_v128_store(o + 16, wasm_i32x4_shuffle(t2, t3, 0, 1, 4, 5));
        wasm_v128_store(o + 24, wasm_i32x4_shuffle(t2, t3, 2, 3, 6, 7));
      }
    }
  }
}

// Packs B (K x N row-major) as pack_b does, eight floats at a time when N is a multiple of
// 8 (the weights are repacked after every optimizer step, 28 M floats for convnext_tiny).
EXPORT(pack_b_fast) void pack_b_fast(const float* src, int K, int N, float* dst) {
  if (N % 8 != 0) {
    pack_b(src, K, N, dst);
    return;
  }
  int panels = N / 8;
  for (int p = 0; p < panels; p++) {
    float* d = dst + (long)p * K * 8;
    const float* s = src + p * 8;
    for (int k = 0; k < K; k++) {
      wasm_v128_store(d + k * 8, wasm_v128_load(s + (long)k * N));
      wasm_v128_store(d + k * 8 + 4, wasm_v128_load(s + (long)k * N + 4));
    }
  }
}

// Rows of A and B per pass of gemm_tn (its scratch holds TN_MB x N + MC x TN_MB floats).
#define TN_MB 128

// Pack B (M x N, rows at stride ldb) into panels of 8 columns, as pack_b does.
static void pack_b_ld(const float* src, int ldb, int M, int N, float* dst) {
  int panels = (N + 7) / 8;
  for (int p = 0; p < panels; p++) {
    float* d = dst + (long)p * M * 8;
    int j0 = p * 8;
    if (j0 + 8 <= N) {
      for (int m = 0; m < M; m++) {
        const float* s = src + (long)m * ldb + j0;
        wasm_v128_store(d + m * 8, wasm_v128_load(s));
        wasm_v128_store(d + m * 8 + 4, wasm_v128_load(s + 4));
      }
    } else {
      for (int m = 0; m < M; m++)
        for (int j = 0; j < 8; j++) d[m * 8 + j] = j0 + j < N ? src[(long)m * ldb + j0 + j] : 0.f;
    }
  }
}

// Pack columns f0..f0+3 of A (M x K1, stride lda) interleaved: dst[4m + r] = A[m][f0 + r]
// (columns at or beyond K1 are zeros): the layout tile4x8 reads, for A^T.
static void pack_cols4(const float* A, int lda, int M, int K1, int f0, float* dst) {
  if (f0 + 4 <= K1) {
    for (int m = 0; m < M; m++) wasm_v128_store(dst + 4 * m, wasm_v128_load(A + (long)m * lda + f0));
    return;
  }
  for (int m = 0; m < M; m++)
    for (int r = 0; r < 4; r++) dst[4 * m + r] = f0 + r < K1 ? A[(long)m * lda + f0 + r] : 0.f;
}

// Floats of scratch gemm_tn needs for N output columns.
EXPORT(gemm_tn_scratch) long gemm_tn_scratch(int N) {
  return (long)TN_MB * ((N + 7) / 8 * 8) + (long)MC * TN_MB + 64;
}

// C[K1 x N] += A^T B, with A M x K1 (rows at stride lda) and B M x N (stride ldb): the
// weight gradients (activations^T times output gradients, summed over pixels). The same
// loop as gemm with A^T in A's place: B packed once per TN_MB rows, A^T packed 32 rows
// (MC columns of A) at a time, tile4x8 adding its tile to C (C as its own residual).
// Reading A and B in place instead ran at half the speed: rows of 384 or 3072 floats put
// the 4 KiB-strided loads of a tile into the same few cache sets.
EXPORT(gemm_tn) void gemm_tn(const float* A, int lda, const float* B, int ldb, int M, int K1,
                             int N, float* C, int ldc, float* scratch) {
  int panels = (N + 7) / 8;
  float* bp = scratch;
  float* ap = bp + (long)TN_MB * panels * 8;
  float acc[32];
  for (int m0 = 0; m0 < M; m0 += TN_MB) {
    int mk = M - m0 < TN_MB ? M - m0 : TN_MB;
    pack_b_ld(B + (long)m0 * ldb, ldb, mk, N, bp);
    for (int f0 = 0; f0 < K1; f0 += MC) {
      int fc = K1 - f0 < MC ? K1 - f0 : MC;
      int groups = (fc + 3) / 4;
      for (int g = 0; g < groups; g++)
        pack_cols4(A + (long)m0 * lda, lda, mk, K1, f0 + 4 * g, ap + (long)g * 4 * mk);
      for (int p = 0; p < panels; p++) {
        int j0 = p * 8;
        int nc = N - j0 < 8 ? N - j0 : 8;
        const float* b = bp + (long)p * mk * 8;
        for (int g = 0; g < groups; g++) {
          int row = f0 + 4 * g;
          int rows = K1 - row < 4 ? K1 - row : 4;
          float* c = C + (long)row * ldc + j0;
          if (rows == 4 && nc == 8) {
            tile4x8(ap + (long)g * 4 * mk, b, mk, c, ldc, 0, c, ldc, 0);
          } else {
            tile4x8(ap + (long)g * 4 * mk, b, mk, 0, 0, 0, 0, 0, acc);
            for (int r = 0; r < rows; r++)
              for (int j = 0; j < nc; j++) c[(long)r * ldc + j] += acc[8 * r + j];
          }
        }
      }
    }
  }
}

// acc[j] += sum of rows 0..M-1 of x (N columns at stride ld): bias gradients.
EXPORT(col_sum_acc) void col_sum_acc(const float* x, int M, int N, int ld, float* acc) {
  int n4 = N / 4 * 4;
  for (int j = 0; j < n4; j += 4) {
    v128_t s = wasm_v128_load(acc + j);
    for (int m = 0; m < M; m++) s = wasm_f32x4_add(s, wasm_v128_load(x + (long)m * ld + j));
    wasm_v128_store(acc + j, s);
  }
  for (int j = n4; j < N; j++) {
    float s = 0.f;
    for (int m = 0; m < M; m++) s += x[(long)m * ld + j];
    acc[j] += s;
  }
}

// dst[i] += src[i] over `size` floats (a multiple of 4): summing the threads' gradients.
EXPORT(add_into) void add_into(float* dst, const float* src, long size) {
  for (long i = 0; i < size; i += 4)
    wasm_v128_store(dst + i, wasm_f32x4_add(wasm_v128_load(dst + i), wasm_v128_load(src + i)));
}

// One AdamW update (torch.optim.AdamW, non-foreach) of `size` floats (a multiple of 4), op
// for op in float32 as lib/train/optimizer.ts's TF.js step computes it, so that both paths
// give the same bits: w = w (1 - lr wd) - lr / (1 - beta1^t) m / (sqrt(v) / sqrt(1 -
// beta2^t) + eps), after m and v take the gradient g. hp: beta1, 1 - beta1, beta2,
// 1 - beta2, sqrt(1 - beta2^t), eps, lr / (1 - beta1^t), 1 - lr wd.
EXPORT(adamw) void adamw(float* w, const float* g, float* m, float* v, long size,
                         const float* hp) {
  v128_t b1 = wasm_f32x4_splat(hp[0]), c1 = wasm_f32x4_splat(hp[1]);
  v128_t b2 = wasm_f32x4_splat(hp[2]), c2 = wasm_f32x4_splat(hp[3]);
  v128_t bc2 = wasm_f32x4_splat(hp[4]), eps = wasm_f32x4_splat(hp[5]);
  v128_t step = wasm_f32x4_splat(hp[6]), decay = wasm_f32x4_splat(hp[7]);
  for (long i = 0; i < size; i += 4) {
    v128_t gv = wasm_v128_load(g + i);
    v128_t m1 = wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(m + i), b1), wasm_f32x4_mul(gv, c1));
    v128_t v1 = wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(v + i), b2),
                               wasm_f32x4_mul(wasm_f32x4_mul(gv, gv), c2));
    v128_t denom = wasm_f32x4_add(wasm_f32x4_div(wasm_f32x4_sqrt(v1), bc2), eps);
    v128_t update = wasm_f32x4_mul(wasm_f32x4_div(m1, denom), step);
    wasm_v128_store(m + i, m1);
    wasm_v128_store(v + i, v1);
    wasm_v128_store(w + i, wasm_f32x4_sub(wasm_f32x4_mul(wasm_v128_load(w + i), decay), update));
  }
}

// Zero `size` floats.
EXPORT(zero) void zero(float* dst, long size) { __builtin_memset(dst, 0, (unsigned long)size * 4); }

// The constants of exp4 and gelu_grad4, built from `one` as gelu_make does (V8 would
// rematerialize literal splats inside every loop).
typedef struct {
  v128_t hi, lo, log2e, ln2a, ln2b, e5, e4, e3, e2, e1, e0, one, mhalf, rsqrt2pi, magic;
} exp_consts;

static inline exp_consts exp_make(float one) {
  exp_consts k;
  k.hi = wasm_f32x4_splat(88.3f * one);
  k.lo = wasm_f32x4_splat(-87.3f * one);
  k.log2e = wasm_f32x4_splat(1.44269504088896341f * one);
  k.ln2a = wasm_f32x4_splat(0.693359375f * one);
  k.ln2b = wasm_f32x4_splat(-2.12194440e-4f * one);
  k.e5 = wasm_f32x4_splat(1.9875691500e-4f * one);
  k.e4 = wasm_f32x4_splat(1.3981999507e-3f * one);
  k.e3 = wasm_f32x4_splat(8.3334519073e-3f * one);
  k.e2 = wasm_f32x4_splat(4.1665795894e-2f * one);
  k.e1 = wasm_f32x4_splat(1.6666665459e-1f * one);
  k.e0 = wasm_f32x4_splat(5.0000001201e-1f * one);
  k.one = wasm_f32x4_splat(one);
  k.mhalf = wasm_f32x4_splat(-0.5f * one);
  k.rsqrt2pi = wasm_f32x4_splat(0.3989422804014327f * one);
  k.magic = wasm_f32x4_splat(12583039.f * one);  // 1.5 * 2^23 + 127
  return k;
}

// exp(x) for vectors, x clamped to [-87.3, 88.3]: Cephes' expf (range reduction by ln 2
// in two parts, a degree-6 polynomial, the power of two built in the exponent bits);
// within 2 ulp. For the GELU's derivative, exp(-x^2 / 2).
static inline v128_t exp4(v128_t x, const exp_consts* k) {
  x = wasm_f32x4_pmax(wasm_f32x4_pmin(x, k->hi), k->lo);
  v128_t n = wasm_f32x4_nearest(wasm_f32x4_mul(x, k->log2e));
  v128_t r = wasm_f32x4_sub(x, wasm_f32x4_mul(n, k->ln2a));
  r = wasm_f32x4_sub(r, wasm_f32x4_mul(n, k->ln2b));
  v128_t p = MADD(k->e5, r, k->e4);
  p = MADD(p, r, k->e3);
  p = MADD(p, r, k->e2);
  p = MADD(p, r, k->e1);
  p = MADD(p, r, k->e0);
  p = MADD(p, wasm_f32x4_mul(r, r), wasm_f32x4_add(r, k->one));
  // n is integral and within [-126, 127]: n + 127 + 1.5 * 2^23 holds n + 127 in its low
  // mantissa bits, which the shift moves into the exponent (V8 lowers a float-to-int
  // conversion to several instructions).
  v128_t e = wasm_i32x4_shl(wasm_f32x4_add(n, k->magic), 23);
  return wasm_f32x4_mul(p, e);
}

// erf(v / sqrt 2) with gelu4k's rational function (the same constants).
static inline v128_t erf_scaled4(v128_t v, const gelu_consts* k) {
  v128_t x = wasm_f32x4_mul(v, k->rsqrt2);
  x = wasm_f32x4_pmax(wasm_f32x4_pmin(x, k->lim), k->nlim);
  v128_t x2 = wasm_f32x4_mul(x, x);
  v128_t p = MADD(k->p13, x2, k->p11);
  p = MADD(p, x2, k->p9);
  p = MADD(p, x2, k->p7);
  p = MADD(p, x2, k->p5);
  p = MADD(p, x2, k->p3);
  p = MADD(p, x2, k->p1);
  p = wasm_f32x4_mul(p, x);
  v128_t q = MADD(k->q8, x2, k->q6);
  q = MADD(q, x2, k->q4);
  q = MADD(q, x2, k->q2);
  q = MADD(q, x2, k->q0);
  return wasm_f32x4_div(p, q);
}

// GELU and its derivative from one erf: gelu(v) = v Phi(v) and gelu'(v) = Phi(v) + v phi(v),
// Phi(v) = 0.5 (1 + erf(v / sqrt 2)), phi(v) = exp(-v^2 / 2) / sqrt(2 pi).
static inline void gelu_both4(v128_t v, const gelu_consts* g, const exp_consts* e,
                              v128_t* value, v128_t* grad) {
  v128_t cdf = MADD(g->half, erf_scaled4(v, g), g->half);
  v128_t pdf = wasm_f32x4_mul(exp4(wasm_f32x4_mul(wasm_f32x4_mul(v, v), e->mhalf), e), e->rsqrt2pi);
  *value = wasm_f32x4_mul(v, cdf);
  *grad = MADD(v, pdf, cdf);
}

// gt = gelu(h) and gp = gelu'(h) over `size` floats (a multiple of 4), in one pass.
static void gelu_both(const float* h, float* gt, float* gp, long size, float one) {
  const gelu_consts g = gelu_make(one);
  const exp_consts e = exp_make(one);
  for (long i = 0; i < size; i += 4) {
    v128_t value, grad;
    gelu_both4(wasm_v128_load(h + i), &g, &e, &value, &grad);
    wasm_v128_store(gt + i, value);
    wasm_v128_store(gp + i, grad);
  }
}

// dst = gelu(src) over `size` floats (a multiple of 4).
static void gelu_copy(const float* src, float* dst, long size, float one) {
  const gelu_consts k = gelu_make(one);
  for (long i = 0; i < size; i += 4) wasm_v128_store(dst + i, gelu4k(wasm_v128_load(src + i), k));
}

// d *= gp over M rows of N floats, and acc[j] += the column sums of the result: the hidden
// gradient and the first pointwise layer's bias gradient in one pass.
static void mul_col_sum(const float* gp, float* d, int M, int N, float* acc) {
  for (int j = 0; j < N; j += 4) {
    v128_t s = wasm_v128_load(acc + j);
    for (int m = 0; m < M; m++) {
      long i = (long)m * N + j;
      v128_t v = wasm_f32x4_mul(wasm_v128_load(d + i), wasm_v128_load(gp + i));
      wasm_v128_store(d + i, v);
      s = wasm_f32x4_add(s, v);
    }
    wasm_v128_store(acc + j, s);
  }
}

// For the tests: gt = gelu(h), d *= gelu'(h) (size a multiple of 4; `one` must be 1).
EXPORT(gelu_grad) void gelu_grad(const float* h, float* gt, float* d, long size, float one) {
  const gelu_consts g = gelu_make(one);
  const exp_consts e = exp_make(one);
  for (long i = 0; i < size; i += 4) {
    v128_t value, grad;
    gelu_both4(wasm_v128_load(h + i), &g, &e, &value, &grad);
    wasm_v128_store(gt + i, value);
    wasm_v128_store(d + i, wasm_f32x4_mul(wasm_v128_load(d + i), grad));
  }
}

static inline float hsum(v128_t s) {
  return wasm_f32x4_extract_lane(s, 0) + wasm_f32x4_extract_lane(s, 1) +
         wasm_f32x4_extract_lane(s, 2) + wasm_f32x4_extract_lane(s, 3);
}

// LayerNorm of M rows of C (a multiple of 4) with the affine, keeping each row's mean and
// 1 / sqrt(var + eps) in stats (2 floats per row) for the backward pass. Two passes per
// row (mean, then centered variance), as layer_norm and PyTorch.
EXPORT(ln_fwd) void ln_fwd(const float* x, int M, int C, float eps, const float* gamma,
                           const float* beta, float* out, float* stats) {
  for (int m = 0; m < M; m++) {
    const float* r = x + (long)m * C;
    float* o = out + (long)m * C;
    v128_t s = wasm_f32x4_splat(0.f);
    for (int c = 0; c < C; c += 4) s = wasm_f32x4_add(s, wasm_v128_load(r + c));
    float mean = hsum(s) / (float)C;
    v128_t mv = wasm_f32x4_splat(mean);
    v128_t q = wasm_f32x4_splat(0.f);
    for (int c = 0; c < C; c += 4) {
      v128_t d = wasm_f32x4_sub(wasm_v128_load(r + c), mv);
      q = MADD(d, d, q);
    }
    float var = hsum(q) / (float)C;
    v128_t inv = wasm_f32x4_div(wasm_f32x4_splat(1.f),
                                wasm_f32x4_sqrt(wasm_f32x4_splat(var + eps)));
    stats[2 * m] = mean;
    stats[2 * m + 1] = wasm_f32x4_extract_lane(inv, 0);
    for (int c = 0; c < C; c += 4) {
      v128_t v = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(r + c), mv), inv);
      wasm_v128_store(o + c, MADD(v, wasm_v128_load(gamma + c), wasm_v128_load(beta + c)));
    }
  }
}

// LayerNorm backward over M rows of C: with xh = (x - mean) rstd and g = dz gamma,
//   dx = rstd (g - mean(g) - xh mean(g xh)),  dgamma += dz xh,  dbeta += dz.
// dx may be dz (each row is read before it is written).
EXPORT(ln_bwd) void ln_bwd(const float* x, const float* stats, const float* dz, int M, int C,
                           const float* gamma, float* dx, float* dgamma, float* dbeta) {
  for (int m = 0; m < M; m++) {
    const float* r = x + (long)m * C;
    const float* d = dz + (long)m * C;
    float* o = dx + (long)m * C;
    v128_t mv = wasm_f32x4_splat(stats[2 * m]), rs = wasm_f32x4_splat(stats[2 * m + 1]);
    v128_t s1 = wasm_f32x4_splat(0.f), s2 = s1;
    for (int c = 0; c < C; c += 4) {
      v128_t xh = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(r + c), mv), rs);
      v128_t dv = wasm_v128_load(d + c);
      v128_t g = wasm_f32x4_mul(dv, wasm_v128_load(gamma + c));
      s1 = wasm_f32x4_add(s1, g);
      s2 = MADD(g, xh, s2);
      wasm_v128_store(dgamma + c, MADD(dv, xh, wasm_v128_load(dgamma + c)));
      wasm_v128_store(dbeta + c, wasm_f32x4_add(wasm_v128_load(dbeta + c), dv));
    }
    v128_t a = wasm_f32x4_splat(hsum(s1) / (float)C), b = wasm_f32x4_splat(hsum(s2) / (float)C);
    for (int c = 0; c < C; c += 4) {
      v128_t xh = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(r + c), mv), rs);
      v128_t g = wasm_f32x4_mul(wasm_v128_load(d + c), wasm_v128_load(gamma + c));
      v128_t t = wasm_f32x4_sub(wasm_f32x4_sub(g, a), wasm_f32x4_mul(xh, b));
      wasm_v128_store(o + c, wasm_f32x4_mul(t, rs));
    }
  }
}

// The gradient of a patchify's input from the gradient of its patches (the inverse
// permutation of patchify); pixels no patch covers (H or W not a multiple of s) get 0.
EXPORT(unpatchify) void unpatchify(const float* d, int n, int H, int W, int C, int s, float* dx) {
  int ph = H / s, pw = W / s;
  if (ph * s != H || pw * s != W) zero(dx, (long)n * H * W * C);
  long row = (long)s * s * C;
  for (int img = 0; img < n; img++)
    for (int py = 0; py < ph; py++)
      for (int px = 0; px < pw; px++) {
        const float* p = d + (((long)img * ph + py) * pw + px) * row;
        for (int ky = 0; ky < s; ky++) {
          float* o = dx + (((long)img * H + py * s + ky) * W + px * s) * C;
          const float* src = p + (long)ky * s * C;
          for (int i = 0; i < s * C; i++) o[i] = src[i];
        }
      }
}

// Global average pooling backward: every pixel of image i gets d[i] / pixels.
EXPORT(avg_pool_bwd) void avg_pool_bwd(const float* d, int n, int pixels, int C, float* dx) {
  for (int img = 0; img < n; img++)
    for (int p = 0; p < pixels; p++) {
      float* o = dx + ((long)img * pixels + p) * C;
      for (int c = 0; c < C; c++) o[c] = d[(long)img * C + c] / (float)pixels;
    }
}

// The depthwise kernel rotated by 180 degrees: the input gradient of a "same" depthwise
// conv is the same conv of the output gradient with this kernel.
EXPORT(dw_flip) void dw_flip(const float* w, int k, int C, float* out) {
  for (int ky = 0; ky < k; ky++)
    for (int kx = 0; kx < k; kx++)
      for (int c = 0; c < C; c++)
        out[((long)ky * k + kx) * C + c] = w[((long)(k - 1 - ky) * k + (k - 1 - kx)) * C + c];
}

// One output row's contribution to a k x k depthwise kernel's gradient: dfr (kernel row ky,
// k x C) += x row iy (shifted by kx - half) times dy row oy. Interior pixels go four at a
// time with the k accumulators of a 4-channel group in registers (k is a literal 7 at the
// call): per 4 pixels k + 3 input loads and 4 gradient loads for 4k fused multiply-adds.
// The few edge pixels, whose taps leave the map, go straight to memory.
static inline void dw_filter_row(const float* xr, const float* dyr, int W, int C, int k,
                                 float* dfr) {
  int half = (k - 1) / 2;
  int x1 = W - half > half ? W - half : half;  // interior pixels: half..x1-1
  int x4 = half + (x1 - half) / 4 * 4;         // those taken four at a time: half..x4-1
  for (int ox = 0; ox < W; ox++) {
    if (ox == half) ox = x4;
    if (ox >= W) break;
    for (int c = 0; c < C; c += 4) {
      v128_t d = wasm_v128_load(dyr + (long)ox * C + c);
      for (int kx = 0; kx < k; kx++) {
        int ix = ox + kx - half;
        if (ix < 0 || ix >= W) continue;
        float* f = dfr + (long)kx * C + c;
        wasm_v128_store(f, MADD(wasm_v128_load(xr + (long)ix * C + c), d, wasm_v128_load(f)));
      }
    }
  }
  if (x4 == half) return;
  for (int c = 0; c < C; c += 4) {
    v128_t acc[15];
    for (int kx = 0; kx < k; kx++) acc[kx] = wasm_v128_load(dfr + (long)kx * C + c);
    for (int ox = half; ox < x4; ox += 4) {
      const float* dp = dyr + (long)ox * C + c;
      v128_t d0 = wasm_v128_load(dp), d1 = wasm_v128_load(dp + C);
      v128_t d2 = wasm_v128_load(dp + 2 * C), d3 = wasm_v128_load(dp + 3 * C);
      const float* in = xr + (long)(ox - half) * C + c;
      // Input column i serves taps kx = i - j of the pixels j = 0..3.
      v128_t i0 = wasm_v128_load(in), i1 = wasm_v128_load(in + C), i2 = wasm_v128_load(in + 2 * C);
      for (int kx = 0; kx < k; kx++) {
        v128_t i3 = wasm_v128_load(in + (long)(kx + 3) * C);
        v128_t a = MADD(i0, d0, acc[kx]);
        a = MADD(i1, d1, a);
        a = MADD(i2, d2, a);
        acc[kx] = MADD(i3, d3, a);
        i0 = i1;
        i1 = i2;
        i2 = i3;
      }
    }
    for (int kx = 0; kx < k; kx++) wasm_v128_store(dfr + (long)kx * C + c, acc[kx]);
  }
}

static void dw_filter_map(const float* x, const float* dy, int H, int W, int C, int k,
                          float* df) {
  int half = (k - 1) / 2;
  for (int oy = 0; oy < H; oy++)
    for (int ky = 0; ky < k; ky++) {
      int iy = oy + ky - half;
      if (iy < 0 || iy >= H) continue;
      const float* xr = x + (long)iy * W * C;
      const float* dyr = dy + (long)oy * W * C;
      if (k == 7)
        dw_filter_row(xr, dyr, W, C, 7, df + (long)ky * 7 * C);
      else
        dw_filter_row(xr, dyr, W, C, k, df + (long)ky * k * C);
    }
}

// Gradient of a "same" k x k depthwise conv's kernel and bias (k odd, at most 15) over n
// maps: df[ky][kx][c] += sum of x[y + ky - half][x + kx - half][c] dy[y][x][c], db += sum dy.
EXPORT(dw_filter_grad) void dw_filter_grad(const float* x, const float* dy, int n, int H, int W,
                                           int C, int k, float* df, float* db) {
  long map = (long)H * W * C;
  for (int img = 0; img < n; img++) dw_filter_map(x + img * map, dy + img * map, H, W, C, k, df);
  col_sum_acc(dy, n * H * W, C, C, db);
}

// dx += the input gradient of a "same" depthwise conv: the conv of dy with the rotated
// kernel (dw_flip), row by row through rowbuf (W x C floats); zeros: C zero floats (the
// bias dw_rows adds).
EXPORT(dw_input_grad) void dw_input_grad(const float* dy, int n, int H, int W, int C, int k,
                                         const float* wflip, const float* zeros, float* rowbuf,
                                         float* dx) {
  int half = (k - 1) / 2;
  long map = (long)H * W * C;
  long row = (long)W * C;
  for (int img = 0; img < n; img++)
    for (int oy = 0; oy < H; oy++) {
      if (k == 7)
        dw_rows(dy + img * map, H, W, C, 7, half, wflip, zeros, rowbuf, oy, oy + 1);
      else
        dw_rows(dy + img * map, H, W, C, k, half, wflip, zeros, rowbuf, oy, oy + 1);
      add_into(dx + img * map + oy * row, rowbuf, row);
    }
}

// z = (x - mean) rstd gamma + beta over M rows, with the statistics ln_fwd kept.
static void ln_apply(const float* x, const float* stats, int M, int C, const float* gamma,
                     const float* beta, float* out) {
  for (int m = 0; m < M; m++) {
    v128_t mv = wasm_f32x4_splat(stats[2 * m]), rs = wasm_f32x4_splat(stats[2 * m + 1]);
    const float* r = x + (long)m * C;
    float* o = out + (long)m * C;
    for (int c = 0; c < C; c += 4) {
      v128_t v = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(r + c), mv), rs);
      wasm_v128_store(o + c, MADD(v, wasm_v128_load(gamma + c), wasm_v128_load(beta + c)));
    }
  }
}

// The block's output rows: out = x + s ls u, with s the drop-path factor of the row's
// image (scale[image], 0 or 1 / keep; scale = 0: no drop path) and ls the layer scale
// (0: none). Rows p0.. of the batch, hw pixels per image.
static void branch_out(const float* x, const float* u, int M, int C, const float* ls,
                       const float* scale, long p0, int hw, float* out) {
  for (int i = 0; i < M; i++) {
    v128_t s = wasm_f32x4_splat(scale ? scale[(p0 + i) / hw] : 1.f);
    const float* xr = x + (long)i * C;
    const float* ur = u + (long)i * C;
    float* o = out + (long)i * C;
    for (int c = 0; c < C; c += 4) {
      v128_t b = wasm_f32x4_mul(wasm_v128_load(ur + c), s);
      if (ls) b = wasm_f32x4_mul(b, wasm_v128_load(ls + c));
      wasm_v128_store(o + c, wasm_f32x4_add(wasm_v128_load(xr + c), b));
    }
  }
}

// The branch's gradient before layer scale: du = dout s ls; gls += dout s u (the layer
// scale's gradient), gb2 += du (the second pointwise layer's bias gradient).
static void branch_grad(const float* dout, const float* u, int M, int C, const float* ls,
                        const float* scale, long p0, int hw, float* du, float* gls,
                        float* gb2) {
  for (int i = 0; i < M; i++) {
    v128_t s = wasm_f32x4_splat(scale ? scale[(p0 + i) / hw] : 1.f);
    const float* d = dout + (long)i * C;
    float* o = du + (long)i * C;
    for (int c = 0; c < C; c += 4) {
      v128_t dv = wasm_f32x4_mul(wasm_v128_load(d + c), s);
      if (ls) {
        v128_t uv = wasm_v128_load(u + (long)i * C + c);
        wasm_v128_store(gls + c, MADD(dv, uv, wasm_v128_load(gls + c)));
        dv = wasm_f32x4_mul(dv, wasm_v128_load(ls + c));
      }
      wasm_v128_store(o + c, dv);
      wasm_v128_store(gb2 + c, wasm_f32x4_add(wasm_v128_load(gb2 + c), dv));
    }
  }
}

// Floats of the matmuls' packing buffer in the block training kernels.
static long train_pack(int C) {
  long a = gemm_scratch(4 * C), b = gemm_tn_scratch(4 * C);
  return a > b ? a : b;
}

// Floats of scratch block_fwd_train and block_bwd_train need for `tile` pixels of C
// channels on maps W wide: four tiles of C, three of 4C, the matmuls' packing buffer, a
// zero vector and a row of the map.
EXPORT(block_train_scratch) long block_train_scratch(int W, int C, int tile) {
  return 4L * tile * C + 12L * tile * C + train_pack(C) + C + (long)W * C + 64;
}

// A k x k depthwise conv ("same", stride 1) of one whole H x W x C map into y; k = 7, the
// ConvNeXt kernel, is a literal for the compiler.
static void dw_map(const float* x, int H, int W, int C, int k, const float* dww,
                   const float* dwb, float* y) {
  int half = (k - 1) / 2;
  if (k == 7)
    dw_rows(x, H, W, C, 7, half, dww, dwb, y, 0, H);
  else
    dw_rows(x, H, W, C, k, half, dww, dwb, y, 0, H);
}

// One ConvNeXt block's forward pass for training on n maps H x W x C, keeping what the
// backward pass needs: y (the depthwise conv's output), stats (LayerNorm's mean and rstd
// per pixel), h (the first pointwise layer's output, before the GELU) and, with layer
// scale, u (the branch before layer scale). Unfolded weights (their gradients are wanted):
// w1p, w2p packed by pack_b. out = x + s ls (W2 gelu(W1 LN(dwconv(x)) + b1) + b2), tile
// by tile across images (the weights stream once per tile, not once per image).
EXPORT(block_fwd_train) void block_fwd_train(const float* x, int n, int H, int W, int C, int k,
                                             const float* dww, const float* dwb, float eps,
                                             const float* gamma, const float* beta,
                                             const float* w1p, const float* b1,
                                             const float* w2p, const float* b2,
                                             const float* ls, const float* scale, int tile,
                                             float* scratch, float* y, float* stats, float* h,
                                             float* u, float* out) {
  int hidden = 4 * C, hw = H * W;
  long map = (long)hw * C;
  float* zt = scratch;
  float* gt = zt + (long)tile * C;
  float* ut = gt + (long)tile * hidden;
  float* pack = ut + (long)tile * C;
  float one = eps * 0.f + 1.f;
  // Runs of images whose branch is kept; a dropped image's output is its input (drop path
  // zeroes its branch), and nothing of it is needed for the backward pass.
  for (int i0 = 0; i0 < n;) {
    if (scale && scale[i0] == 0.f) {
      __builtin_memcpy(out + i0 * map, x + i0 * map, (unsigned long)map * 4);
      i0++;
      continue;
    }
    int i1 = i0 + 1;
    while (i1 < n && !(scale && scale[i1] == 0.f)) i1++;
    for (int img = i0; img < i1; img++) dw_map(x + img * map, H, W, C, k, dww, dwb, y + img * map);
    long end = (long)i1 * hw;
    for (long p0 = (long)i0 * hw; p0 < end; p0 += tile) {
      int m = end - p0 < tile ? (int)(end - p0) : tile;
      ln_fwd(y + p0 * C, m, C, eps, gamma, beta, zt, stats + 2 * p0);
      gemm(zt, C, m, C, w1p, hidden, b1, h + p0 * hidden, hidden, EPI_BIAS, 0, 0, pack);
      gelu_copy(h + p0 * hidden, gt, (long)m * hidden, one);
      float* uo = u ? u + p0 * C : ut;
      gemm(gt, hidden, m, hidden, w2p, C, b2, uo, C, EPI_BIAS, 0, 0, pack);
      branch_out(x + p0 * C, uo, m, C, ls, scale, p0, hw, out + p0 * C);
    }
    i0 = i1;
  }
}

// Pointers of a block's gradients (each accumulated: +=), in kernels.c's argument order.
typedef struct {
  float *dww, *dwb, *gamma, *beta, *w1, *b1, *w2, *b2, *ls;
} block_grads;

// The backward kernels' scratch (block_train_scratch floats), carved up: per tile du, zt
// (C floats per pixel), dz (2C), gt, gp, dt (4C each), the matmuls' packing buffer; then a
// zero vector of C floats and a row of the map (dw_input_grad's).
typedef struct {
  float *du, *zt, *dz, *gt, *gp, *dt, *pack, *zeros, *rowbuf;
} bwd_scratch;

static bwd_scratch bwd_layout(float* scratch, int tile, int C) {
  bwd_scratch s;
  long t = tile;
  s.du = scratch;
  s.zt = s.du + t * C;
  s.dz = s.zt + t * C;
  s.gt = s.dz + 2 * t * C;
  s.gp = s.gt + t * 4 * C;
  s.dt = s.gp + t * 4 * C;
  s.pack = s.dt + t * 4 * C;
  s.zeros = scratch + 4 * t * C + 12 * t * C + train_pack(C);
  s.rowbuf = s.zeros + C;
  return s;
}

// The first pointwise layer and LayerNorm backward on `m` rows from p0, from dt (the hidden
// gradient after the GELU) and gp (GELU's derivative): dt becomes the pre-activation
// gradient (b1's gradient accumulates), then W1's gradient, and dy (the gradient of the
// depthwise conv's output) with LayerNorm's.
static void first_layer_bwd(long p0, int m, int C, const float* gamma, const float* beta,
                            const float* w1tp, const float* y, const float* stats, float* dy,
                            const bwd_scratch* s, const block_grads* g) {
  int hidden = 4 * C;
  mul_col_sum(s->gp, s->dt, m, hidden, g->b1);
  ln_apply(y + p0 * C, stats + 2 * p0, m, C, gamma, beta, s->zt);
  gemm_tn(s->zt, C, s->dt, hidden, m, C, hidden, g->w1, hidden, s->pack);
  gemm(s->dt, hidden, m, hidden, w1tp, C, 0, s->dz, C, EPI_BIAS, 0, 0, s->pack);
  ln_bwd(y + p0 * C, stats + 2 * p0, s->dz, m, C, gamma, dy + p0 * C, g->gamma, g->beta);
}

// The pointwise half of a block's backward pass on `m` rows starting at row p0: from
// dout to dy (the gradient of the depthwise conv's output), accumulating the weight
// gradients of both pointwise layers, LayerNorm and layer scale.
static void block_bwd_tile(long p0, int m, int hw, int C, const float* gamma, const float* beta,
                           const float* w1tp, const float* w2tp, const float* ls,
                           const float* scale, const float* y, const float* stats,
                           const float* h, const float* u, const float* dout, float* dy,
                           const bwd_scratch* s, const block_grads* g, float one) {
  int hidden = 4 * C;
  branch_grad(dout + p0 * C, u ? u + p0 * C : 0, m, C, ls, scale, p0, hw, s->du, g->ls, g->b2);
  gelu_both(h + p0 * hidden, s->gt, s->gp, (long)m * hidden, one);
  gemm_tn(s->gt, hidden, s->du, C, m, hidden, C, g->w2, C, s->pack);
  gemm(s->du, C, m, C, w2tp, hidden, 0, s->dt, hidden, EPI_BIAS, 0, 0, s->pack);
  first_layer_bwd(p0, m, C, gamma, beta, w1tp, y, stats, dy, s, g);
}

// One ConvNeXt block's backward pass on n maps: dout (the gradient of the block's output)
// becomes the gradient of its input, in place; the weight gradients accumulate into
// `grads` (block_grads order: dw kernel, dw bias, LN gamma, LN beta, W1, b1, W2, b2, layer
// scale). Saved tensors as block_fwd_train left them; w1tp, w2tp the transposed weights
// packed by pack_bt, dwflip the rotated depthwise kernel (dw_flip); dy: n x H x W x C
// floats of scratch (the gradient of the depthwise conv's output, whole maps, because the
// conv's gradients read its neighbours). `one` must be 1 (see gelu_make).
EXPORT(block_bwd_train) void block_bwd_train(const float* x, int n, int H, int W, int C, int k,
                                             const float* dwflip, const float* gamma,
                                             const float* beta, const float* w1tp,
                                             const float* w2tp, const float* ls,
                                             const float* scale, const float* y,
                                             const float* stats, const float* h,
                                             const float* u, float* dout, float* dy, int tile,
                                             float* scratch, float* const* grads, float one) {
  const block_grads* g = (const block_grads*)grads;
  int hw = H * W;
  long map = (long)hw * C;
  bwd_scratch s = bwd_layout(scratch, tile, C);
  zero(s.zeros, C);
  // Runs of kept images (see block_fwd_train): a dropped image's gradient passes through
  // the residual unchanged (dout is already dx) and adds nothing to the weights'.
  for (int i0 = 0; i0 < n;) {
    if (scale && scale[i0] == 0.f) {
      i0++;
      continue;
    }
    int i1 = i0 + 1;
    while (i1 < n && !(scale && scale[i1] == 0.f)) i1++;
    long end = (long)i1 * hw;
    for (long p0 = (long)i0 * hw; p0 < end; p0 += tile) {
      int m = end - p0 < tile ? (int)(end - p0) : tile;
      block_bwd_tile(p0, m, hw, C, gamma, beta, w1tp, w2tp, ls, scale, y, stats, h, u, dout,
                     dy, &s, g, one);
    }
    dw_filter_grad(x + i0 * map, dy + i0 * map, i1 - i0, H, W, C, k, g->dww, g->dwb);
    dw_input_grad(dy + i0 * map, i1 - i0, H, W, C, k, dwflip, s.zeros, s.rowbuf,
                  dout + i0 * map);
    i0 = i1;
  }
}

// ---- ConvNeXt V2 blocks (GRN) at inference: two passes over the hidden map ----
//
// GRN scales each hidden unit of an image by gamma Nx + 1, where Nx comes from the L2 norm
// of that unit over all the image's pixels: the second pointwise layer can only start once
// the whole hidden map of the image is known. Pass 1 (grn_hidden) writes the hidden map and
// its per-channel sums of squares; the caller turns the sums into the scale; pass 2
// (grn_out) scales the hidden rows and runs the second matmul with the residual. GRN's beta
// is folded into the second layer's bias by the caller.

// Per-channel sums of squares of M rows of N floats (N a multiple of 4), added to acc: per
// column group a float sum over the rows, then added (the caller's rows are one tile).
static void sumsq_acc(const float* h, int M, int N, float* acc) {
  for (int c = 0; c < N; c += 4) {
    v128_t s = wasm_f32x4_splat(0.f);
    for (int m = 0; m < M; m++) {
      v128_t v = wasm_v128_load(h + (long)m * N + c);
      s = MADD(v, v, s);
    }
    wasm_v128_store(acc + c, wasm_f32x4_add(wasm_v128_load(acc + c), s));
  }
}

// Pass 1 of a GRN block on a slab laid out as block()'s (n images x rows x W x C, padTop /
// padBottom zero rows outside it; scratch of block_scratch floats, same layout): for every
// output pixel hidden = gelu(W1' norm(dwconv(x)) + b1'), into `hidden` (rows of 4C floats,
// rows + padTop + padBottom - (k - 1) rows of W pixels per image), and per image the
// per-channel sums of squares of its hidden rows into sums[img * 4C ...] (overwritten).
EXPORT(grn_hidden) void grn_hidden(const float* x, int n, int rows, int W, int C, int padTop,
                                   int padBottom, int k, const float* dww, const float* dwb,
                                   float eps, const float* w1p, const float* b1, int tile,
                                   float* scratch, float* hidden, float* sums) {
  int half = (k - 1) / 2;
  int orow = rows + padTop + padBottom - 2 * half;
  int hid = 4 * C;
  int group = tile / W > 0 ? tile / W : 1;
  float* y = scratch;
  float* pack = y + (long)group * W * C + (long)tile * hid;
  float one = eps * 0.f + 1.f;
  long map = (long)rows * W * C;
  for (int img = 0; img < n; img++) {
    float* s = sums + (long)img * hid;
    __builtin_memset(s, 0, (unsigned long)hid * 4);
    for (int r0 = 0; r0 < orow; r0 += group) {
      int r1 = r0 + group < orow ? r0 + group : orow;
      for (int r = r0; r < r1; r++) {
        float* yr = y + (long)(r - r0) * W * C;
        if (k == 7)
          dw_rows(x + img * map, rows, W, C, 7, padTop, dww, dwb, yr, r, r + 1);
        else
          dw_rows(x + img * map, rows, W, C, k, padTop, dww, dwb, yr, r, r + 1);
      }
      int pixels = (r1 - r0) * W;
      layer_norm(y, pixels, C, eps, 0, 0, y);
      float* h = hidden + ((long)img * orow + r0) * W * hid;
      for (int p0 = 0; p0 < pixels; p0 += tile) {
        int m = pixels - p0 < tile ? pixels - p0 : tile;
        float* hp = h + (long)p0 * hid;
        gemm(y + (long)p0 * C, C, m, C, w1p, hid, b1, hp, hid, EPI_BIAS, 0, 0, pack);
        gelu_run(hp, (long)m * hid, one);
        sumsq_acc(hp, m, hid, s);
      }
    }
  }
}

// Pass 2 of a GRN block: rows of n images of `pixels` pixels each (contiguous): the hidden
// rows (4C floats) are scaled in place by their image's scale[img * 4C ...], then
// out = res + hidden W2' + b2' (rows of C floats). Tiles of `tile` rows, across images.
// `pack`: gemm_scratch(4C) floats.
EXPORT(grn_out) void grn_out(float* hidden, int n, int pixels, int C, const float* scale,
                             const float* w2p, const float* b2, const float* res, int tile,
                             float* pack, float* out) {
  int hid = 4 * C;
  long total = (long)n * pixels;
  for (long p0 = 0; p0 < total; p0 += tile) {
    int m = total - p0 < tile ? (int)(total - p0) : tile;
    for (int r = 0; r < m; r++) {
      float* hr = hidden + (p0 + r) * hid;
      const float* sr = scale + ((p0 + r) / pixels) * hid;
      for (int c = 0; c < hid; c += 4)
        wasm_v128_store(hr + c, wasm_f32x4_mul(wasm_v128_load(hr + c), wasm_v128_load(sr + c)));
    }
    gemm(hidden + p0 * hid, hid, m, hid, w2p, C, b2, out + p0 * C, C, EPI_RESIDUAL,
         res + p0 * C, C, pack);
  }
}

// ---- ConvNeXt V2 blocks (GRN) in training ----
//
// y = g + gamma (g Nx) + beta on the GELU'd hidden map g of an image, Nx = Gx / (mean(Gx) +
// eps), Gx the per-channel L2 norms over the image's pixels (the GlobalResponseNorm layer).
// Nx needs the whole image's hidden map, so a GRN block runs image by image in two passes
// each way: forward, the hidden pre-activations and their GELU's sums of squares, then the
// statistics and the second pointwise layer; backward, the second layer's gradients and
// GRN's per-channel sums, then the rest of the block. What is kept beyond a V1 block's: Gx
// and Nx per image and hidden unit (the hidden map itself is recomputed from h).

// Per-image GRN statistics from the sums of squares ss (N floats): gx = sqrt(ss) (in place
// over ss) and nx = gx / (mean(gx) + eps), as the layer computes them.
static void grn_stats(float* gx, int N, float eps, float* nx) {
  float sum = 0.f;
  for (int j = 0; j < N; j++) {
    gx[j] = __builtin_sqrtf(gx[j]);
    sum += gx[j];
  }
  float d = sum / (float)N + eps;
  for (int j = 0; j < N; j++) nx[j] = gx[j] / d;
}

// out = (g nx) gamma + beta + g over M rows of N floats (the layer's order of operations).
static void grn_apply(const float* g, const float* nx, const float* gamma, const float* beta,
                      int M, int N, float* out) {
  for (int m = 0; m < M; m++) {
    const float* r = g + (long)m * N;
    float* o = out + (long)m * N;
    for (int c = 0; c < N; c += 4) {
      v128_t v = wasm_v128_load(r + c);
      v128_t s = wasm_f32x4_mul(wasm_f32x4_mul(v, wasm_v128_load(nx + c)), wasm_v128_load(gamma + c));
      wasm_v128_store(o + c, wasm_f32x4_add(wasm_f32x4_add(s, wasm_v128_load(beta + c)), v));
    }
  }
}

// Floats of scratch the GRN training kernels need: block_train_scratch's and three vectors
// of 4C (GRN's per-channel sums and factors).
EXPORT(block_train_scratch_grn) long block_train_scratch_grn(int W, int C, int tile) {
  return block_train_scratch(W, C, tile) + 12L * C;
}

// A GRN block's forward pass for training, image by image (see above): block_fwd_train's
// arguments, then GRN's gamma, beta and eps and `stat`: per image, Gx then Nx (2 x 4C
// floats), kept for the backward pass.
EXPORT(block_fwd_train_grn) void block_fwd_train_grn(
    const float* x, int n, int H, int W, int C, int k, const float* dww, const float* dwb,
    float eps, const float* gamma, const float* beta, const float* w1p, const float* b1,
    const float* w2p, const float* b2, const float* ls, const float* scale, int tile,
    float* scratch, float* y, float* stats, float* h, float* u, float* out,
    const float* ggamma, const float* gbeta, float geps, float* stat) {
  int hidden = 4 * C, hw = H * W;
  long map = (long)hw * C;
  float* zt = scratch;
  float* gt = zt + (long)tile * C;
  float* ut = gt + (long)tile * hidden;
  float* pack = ut + (long)tile * C;
  float one = eps * 0.f + 1.f;
  for (int img = 0; img < n; img++) {
    if (scale && scale[img] == 0.f) {
      __builtin_memcpy(out + img * map, x + img * map, (unsigned long)map * 4);
      continue;
    }
    float* gx = stat + (long)img * 2 * hidden;
    float* nx = gx + hidden;
    dw_map(x + img * map, H, W, C, k, dww, dwb, y + img * map);
    zero(gx, hidden);
    long p1 = (long)(img + 1) * hw;
    for (long p0 = (long)img * hw; p0 < p1; p0 += tile) {
      int m = p1 - p0 < tile ? (int)(p1 - p0) : tile;
      ln_fwd(y + p0 * C, m, C, eps, gamma, beta, zt, stats + 2 * p0);
      gemm(zt, C, m, C, w1p, hidden, b1, h + p0 * hidden, hidden, EPI_BIAS, 0, 0, pack);
      gelu_copy(h + p0 * hidden, gt, (long)m * hidden, one);
      sumsq_acc(gt, m, hidden, gx);
    }
    grn_stats(gx, hidden, geps, nx);
    for (long p0 = (long)img * hw; p0 < p1; p0 += tile) {
      int m = p1 - p0 < tile ? (int)(p1 - p0) : tile;
      gelu_copy(h + p0 * hidden, gt, (long)m * hidden, one);
      grn_apply(gt, nx, ggamma, gbeta, m, hidden, gt);
      float* uo = u ? u + p0 * C : ut;
      gemm(gt, hidden, m, hidden, w2p, C, b2, uo, C, EPI_BIAS, 0, 0, pack);
      branch_out(x + p0 * C, uo, m, C, ls, scale, p0, hw, out + p0 * C);
    }
  }
}

// Pointers of a GRN block's gradients: block_grads, then GRN's gamma and beta.
typedef struct {
  block_grads b;
  float *ggamma, *gbeta;
} block_grads_grn;

// dbeta += column sums of d; a += column sums of d * g (M rows of N floats).
static void grn_sums(const float* d, const float* g, int M, int N, float* dbeta, float* a) {
  for (int j = 0; j < N; j += 4) {
    v128_t sb = wasm_v128_load(dbeta + j), sa = wasm_v128_load(a + j);
    for (int m = 0; m < M; m++) {
      long i = (long)m * N + j;
      v128_t dv = wasm_v128_load(d + i);
      sb = wasm_f32x4_add(sb, dv);
      sa = MADD(dv, wasm_v128_load(g + i), sa);
    }
    wasm_v128_store(dbeta + j, sb);
    wasm_v128_store(a + j, sa);
  }
}

// GRN's backward factors of an image from a = sum over pixels of dy g (per channel): the
// gamma gradient, then coef = 1 + gamma nx (the direct path) and r = dGx / Gx (the path
// through the norms), so that dg = dy coef + r g. With D = mean(Gx) + eps:
// dNx = gamma a, dGx_j = dNx_j / D - sum_c dNx_c Gx_c / (N D^2).
static void grn_factors(const float* a, const float* gx, const float* nx, const float* gamma,
                        int N, float eps, float* ggamma, float* coef, float* r) {
  float sum = 0.f, s = 0.f;
  for (int j = 0; j < N; j++) sum += gx[j];
  float d = sum / (float)N + eps;
  for (int j = 0; j < N; j++) {
    ggamma[j] += a[j] * nx[j];
    s += gamma[j] * a[j] * gx[j];
  }
  float tail = s / ((float)N * d * d);
  for (int j = 0; j < N; j++) {
    float dgx = gamma[j] * a[j] / d - tail;
    r[j] = gx[j] > 0.f ? dgx / gx[j] : 0.f;
    coef[j] = 1.f + gamma[j] * nx[j];
  }
}

// dt = d coef + r g over M rows of N floats.
static void grn_input_grad(const float* d, const float* g, const float* coef, const float* r,
                           int M, int N, float* dt) {
  for (int m = 0; m < M; m++) {
    long o = (long)m * N;
    for (int c = 0; c < N; c += 4) {
      v128_t v = wasm_f32x4_mul(wasm_v128_load(d + o + c), wasm_v128_load(coef + c));
      wasm_v128_store(dt + o + c, MADD(wasm_v128_load(r + c), wasm_v128_load(g + o + c), v));
    }
  }
}

// A GRN block's backward pass, image by image: block_bwd_train's arguments (grads: the 11
// pointers of block_grads_grn), then GRN's gamma and eps, `stat` as block_fwd_train_grn
// left it, and dh: 4C floats per pixel of one image (the hidden gradient between the
// passes).
EXPORT(block_bwd_train_grn) void block_bwd_train_grn(
    const float* x, int n, int H, int W, int C, int k, const float* dwflip, const float* gamma,
    const float* beta, const float* w1tp, const float* w2tp, const float* ls, const float* scale,
    const float* y, const float* stats, const float* h, const float* u, float* dout, float* dy,
    int tile, float* scratch, float* const* grads, float one, const float* ggamma_w,
    const float* gbeta_w, float geps, const float* stat, float* dh) {
  const block_grads_grn* g = (const block_grads_grn*)grads;
  int hidden = 4 * C, hw = H * W;
  long map = (long)hw * C;
  bwd_scratch s = bwd_layout(scratch, tile, C);
  float* a = s.rowbuf + (long)W * C + 64;
  float* coef = a + hidden;
  float* r = coef + hidden;
  zero(s.zeros, C);
  for (int img = 0; img < n; img++) {
    if (scale && scale[img] == 0.f) continue;
    const float* gx = stat + (long)img * 2 * hidden;
    const float* nx = gx + hidden;
    long p1 = (long)(img + 1) * hw, pi = (long)img * hw;
    zero(a, hidden);
    for (long p0 = pi; p0 < p1; p0 += tile) {
      int m = p1 - p0 < tile ? (int)(p1 - p0) : tile;
      branch_grad(dout + p0 * C, u ? u + p0 * C : 0, m, C, ls, scale, p0, hw, s.du, g->b.ls,
                  g->b.b2);
      gelu_copy(h + p0 * hidden, s.gt, (long)m * hidden, one);
      grn_apply(s.gt, nx, ggamma_w, gbeta_w, m, hidden, s.gp);
      gemm_tn(s.gp, hidden, s.du, C, m, hidden, C, g->b.w2, C, s.pack);
      float* d = dh + (p0 - pi) * hidden;
      gemm(s.du, C, m, C, w2tp, hidden, 0, d, hidden, EPI_BIAS, 0, 0, s.pack);
      grn_sums(d, s.gt, m, hidden, g->gbeta, a);
    }
    grn_factors(a, gx, nx, ggamma_w, hidden, geps, g->ggamma, coef, r);
    for (long p0 = pi; p0 < p1; p0 += tile) {
      int m = p1 - p0 < tile ? (int)(p1 - p0) : tile;
      gelu_both(h + p0 * hidden, s.gt, s.gp, (long)m * hidden, one);
      grn_input_grad(dh + (p0 - pi) * hidden, s.gt, coef, r, m, hidden, s.dt);
      first_layer_bwd(p0, m, C, gamma, beta, w1tp, y, stats, dy, &s, &g->b);
    }
    dw_filter_grad(x + img * map, dy + img * map, 1, H, W, C, k, g->b.dww, g->b.dwb);
    dw_input_grad(dy + img * map, 1, H, W, C, k, dwflip, s.zeros, s.rowbuf, dout + img * map);
  }
}
