// ConvNeXt inference kernels for WebAssembly SIMD (128-bit), compiled by
// tools/build_kernels.sh into kernels_wasm.ts. No libc: every buffer lives in the imported
// memory and is laid out by the TypeScript side (./engine.ts).
//
// Layout: activations are NHWC float32; a GEMM's right-hand matrix is packed by pack_b
// into panels of 8 columns (K rows x 8 floats each, the last panel zero-filled).
//
// Why 4x8 register tiles with broadcast loads: Deno runs WebAssembly without V8's trap
// handler, so every load carries an explicit bounds check; a 4x8 tile needs 6 loads per 8
// fused multiply-adds and leaves V8 enough of the 15 usable xmm registers not to spill
// (6x8 and 5x8 tiles spilled and ran 20% slower here).
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

// erf(x) as a rational function, |error| about 1e-7 on [-4, 4] (beyond, erf is +-1 in
// float32). The coefficients are those of XLA/Eigen's float erf.
static inline v128_t erf4(v128_t x) {
  x = wasm_f32x4_pmax(wasm_f32x4_pmin(x, wasm_f32x4_splat(4.f)), wasm_f32x4_splat(-4.f));
  v128_t x2 = wasm_f32x4_mul(x, x);
  v128_t p = wasm_f32x4_splat(-2.72614225801306e-10f);
  p = MADD(p, x2, wasm_f32x4_splat(2.77068142495902e-08f));
  p = MADD(p, x2, wasm_f32x4_splat(-2.10102402082508e-06f));
  p = MADD(p, x2, wasm_f32x4_splat(-5.69250639462346e-05f));
  p = MADD(p, x2, wasm_f32x4_splat(-7.34990630326855e-04f));
  p = MADD(p, x2, wasm_f32x4_splat(-2.95459980854025e-03f));
  p = MADD(p, x2, wasm_f32x4_splat(-1.60960333262415e-02f));
  p = wasm_f32x4_mul(p, x);
  v128_t q = wasm_f32x4_splat(-1.45660718464996e-05f);
  q = MADD(q, x2, wasm_f32x4_splat(-2.13374055278905e-04f));
  q = MADD(q, x2, wasm_f32x4_splat(-1.68282697438203e-03f));
  q = MADD(q, x2, wasm_f32x4_splat(-7.37332916720468e-03f));
  q = MADD(q, x2, wasm_f32x4_splat(-1.42647390514189e-02f));
  return wasm_f32x4_div(p, q);
}

// 0.5 v (1 + erf(v / sqrt 2)): the exact GELU of PyTorch's nn.GELU().
static inline v128_t gelu4(v128_t v) {
  v128_t e = erf4(wasm_f32x4_mul(v, wasm_f32x4_splat(0.70710678118654752f)));
  v128_t h = wasm_f32x4_mul(v, wasm_f32x4_splat(0.5f));
  return MADD(h, e, h);
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

// Rows of A per packing chunk, and the longest K the packing buffer takes (ConvNeXt's
// widest matmul input is 4 x 2048 hidden units, xlarge).
#define MC 32
#define MAX_K 8192
static float apack[MC * MAX_K];

// A 4x8 tile of A B: `ap` holds 4 rows of A interleaved (ap[4k + r]), `bk` a packed panel.
// One vector load of A per k, broadcast by shuffles: fewer loads means fewer of the bounds
// checks Deno's V8 puts on every access (4x8 tiles with four broadcast loads per k, and
// 5x8 or 6x8 tiles, ran 15-30% slower here).
static inline void tile4x8(const float* ap, const float* bk, int K,
                                              float* out) {
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
  wasm_v128_store(out, c00);
  wasm_v128_store(out + 4, c01);
  wasm_v128_store(out + 8, c10);
  wasm_v128_store(out + 12, c11);
  wasm_v128_store(out + 16, c20);
  wasm_v128_store(out + 20, c21);
  wasm_v128_store(out + 24, c30);
  wasm_v128_store(out + 28, c31);
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

// Largest K gemm takes.
EXPORT(gemm_max_k) int gemm_max_k(void) { return MAX_K; }

// C[M x N] = epilogue(A[M x K] B + bias): A rows at stride lda, B packed by pack_b, C rows
// at stride ldc; mode EPI_RESIDUAL adds R (rows at stride ldr). K <= MAX_K.
// Rows go in chunks of MC, packed four by four; each B panel then serves the whole chunk
// from cache.
EXPORT(gemm) void gemm(const float* A, int lda, int M, int K, const float* Bp, int N,
                       const float* bias, float* C, int ldc, int mode, const float* R,
                       int ldr) {
  int panels = (N + 7) / 8;
  float acc[32];
  for (int i0 = 0; i0 < M; i0 += MC) {
    int mc = M - i0 < MC ? M - i0 : MC;
    int groups = (mc + 3) / 4;
    // Pack: group g holds rows i0 + 4g .. +3 interleaved; missing rows are zeros.
    for (int g = 0; g < groups; g++) {
      float* dst = apack + (long)g * 4 * K;
      for (int r = 0; r < 4; r++) {
        int row = i0 + 4 * g + r;
        if (row < M) {
          const float* src = A + (long)row * lda;
          for (int k = 0; k < K; k++) dst[4 * k + r] = src[k];
        } else {
          for (int k = 0; k < K; k++) dst[4 * k + r] = 0.f;
        }
      }
    }
    for (int p = 0; p < panels; p++) {
      int j0 = p * 8;
      int nc = N - j0 < 8 ? N - j0 : 8;
      const float* b = Bp + (long)p * K * 8;
      for (int g = 0; g < groups; g++) {
        int row = i0 + 4 * g;
        int rows = M - row < 4 ? M - row : 4;
        tile4x8(apack + (long)g * 4 * K, b, K, acc);
        finish_tile(acc, rows, bias ? bias + j0 : 0, nc, C + (long)row * ldc + j0, ldc, mode,
                    R ? R + (long)row * ldr + j0 : 0, ldr);
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

// Floats of scratch block() needs: a group of depthwise rows and a tile of hidden units.
EXPORT(block_scratch) long block_scratch(int rows, int W, int C, int k, int tile) {
  int group = tile / W > 0 ? tile / W : 1;
  return (long)group * W * C + (long)tile * 4 * C + 64;
}

// One ConvNeXt block with folded weights on a slab of n images x rows x W x C:
//   out = x + W2' gelu(W1' norm(dwconv(x)) + b1') + b2'
// padTop/padBottom zero rows lie outside the slab (a full map: both (k-1)/2; a band of a
// map split over threads: fewer, the slab then carries neighbour rows instead). out has
// rows + padTop + padBottom - (k - 1) rows per image. Works tile by tile (`tile` pixels),
// so the hidden activations stay in cache.
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
  for (int img = 0; img < n; img++) {
    const float* xi = x + (long)img * rows * W * C;
    float* oi = out + (long)img * orow * W * C;
    for (int oy0 = 0; oy0 < orow; oy0 += group) {
      int oy1 = oy0 + group < orow ? oy0 + group : orow;
      if (k == 7)
        dw_rows(xi, rows, W, C, 7, padTop, dww, dwb, y, oy0, oy1);
      else
        dw_rows(xi, rows, W, C, k, padTop, dww, dwb, y, oy0, oy1);
      int pixels = (oy1 - oy0) * W;
      layer_norm(y, pixels, C, eps, 0, 0, y);
      // The residual row of output row oy is slab row oy + half - padTop.
      const float* res = xi + (long)(oy0 + half - padTop) * W * C;
      float* o = oi + (long)oy0 * W * C;
      for (int p0 = 0; p0 < pixels; p0 += tile) {
        int m = pixels - p0 < tile ? pixels - p0 : tile;
        gemm(y + (long)p0 * C, C, m, C, w1p, hidden, b1, h, hidden, EPI_GELU, 0, 0);
        gemm(h, hidden, m, hidden, w2p, C, b2, o + (long)p0 * C, C, EPI_RESIDUAL,
             res + (long)p0 * C, C);
      }
    }
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

// GELU in place (a dense layer with a GELU activation outside a block).
EXPORT(gelu) void gelu(float* x, long size) {
  long i = 0;
  for (; i + 4 <= size; i += 4) wasm_v128_store(x + i, gelu4(wasm_v128_load(x + i)));
  for (; i < size; i++) {
    float t[4] = {x[i], 0, 0, 0};
    wasm_v128_store(t, gelu4(wasm_v128_load(t)));
    x[i] = t[0];
  }
}
