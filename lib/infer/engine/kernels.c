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

// A 4x8 tile of A B: `ap` holds 4 rows of A interleaved (ap[4k + r]), `bk` a packed panel.
// One vector load of A per k, broadcast by shuffles: fewer loads means fewer of the bounds
// checks Deno's V8 puts on every access (4x8 tiles with four broadcast loads per k, and
// 5x8 or 6x8 tiles, ran 15-30% slower here).
static inline void tile4x8(const float* ap, const float* bk, int K,
                           float* C, int ldc, const float* bias, const float* R, int ldr,
                           float* acc) {
  v128_t c00 = wasm_f32x4_splat(0.f), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00;
  const float* end = bk + 8 * K;
  for (; bk < end; bk += 8, ap += 4) {
    v128_t a = wasm_v128_load(ap);
    v128_t b0 = wasm_v128_load(bk), b1 = wasm_v128_load(bk + 4);
    v128_t x;
    x = wasm_i32x4_shuffle(a, a, 0, 0, 0, 0);
    c00 = MADD(x, b0, c00);
    c01 = MADD(x, b1, c01);
    x = wasm_i32x4_shuffle(a, a, 1, 1, 1, 1);
    c10 = MADD(x, b0, c10);
    c11 = MADD(x, b1, c11);
    x = wasm_i32x4_shuffle(a, a, 2, 2, 2, 2);
    c20 = MADD(x, b0, c20);
    c21 = MADD(x, b1, c21);
    x = wasm_i32x4_shuffle(a, a, 3, 3, 3, 3);
    c30 = MADD(x, b0, c30);
    c31 = MADD(x, b1, c31);
  }
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
