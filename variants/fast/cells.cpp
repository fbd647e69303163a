// Whole-sequence LSTM-variant and GRU kernels, forward and hand-written backward (CPU), for a
// pack of K independent trials: every tensor has a leading trial dimension, trial k runs its own
// weights over its own `steps[k]` steps and `units[k]` units (the rest is padding, left at zero),
// on a compact copy of its own data (see "a trial's own, compact data" below), and the trials are
// independent loops (at::parallel_for over k), each keeping its recurrent matrix hot in cache for
// its whole sequence.
//
// The generic LSTM of Greff et al. 2017 (section II), one direction, driven by flag bits:
//   a_t = xw_t + y_{t-1} R^T (+ for FGR, on the i, f, o blocks: g_{t-1} Rg^T, g = [i, f, o])
//   xw = W x for all steps (one GEMM per trial; b is added in the step loop)
//   i = s(a_i + p_i c'), f = s(a_f + p_f c') | 1 - i (CIFG) | 1, z = g(a_z), c = z i + c' f,
//   o = s(a_o + p_o c), y = h(c) o;  missing gates are 1, g/h are tanh or identity.
// Gate blocks are stored in PyTorch's order i, f, z, o restricted to the gates present.
// Per step: one GEMM against the pre-packed recurrent matrix R (FGR: a second one against Rg, so
// 13 N^2 multiply-adds per row instead of a 4N x 4N matrix with a zero block) and one fused,
// vectorised loop over the units for all gates (specialised at compile time for the flag sets
// of the registry); the same in backward. The weight gradients of W, R and Rg are one GEMM each
// over all steps after the backward loop.
//
// GRU (torch.nn.GRU form, reset after the product): h_t = (1-u) n + u h', with
//   [hr, hu, hn] = h' R^T + b_hh, r = s(xr + hr), u = s(xu + hu), n = tanh(xn + r hn).
//
// The flag bits and the flag sets specialised at compile time come from `odyssey_flags.h`, which
// variants/fast/build.py writes from the one flag table (variants.spec.KERNEL_FLAGS) and the
// registry: nothing here knows the registry's numbers.
//
// Exposed as torch.ops.odyssey_cells.{lstm_forward, lstm_backward, gru_forward, gru_backward}.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "odyssey_flags.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

extern "C" {
// BLAS from the BLAS torch links (MKL or OpenBLAS); weak so that a torch without it still loads.
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
// MKL's packed GEMM: the recurrent matrix is packed once per sequence, not once per step
size_t cblas_sgemm_pack_get_size(int, int, int, int) __attribute__((weak));
void cblas_sgemm_pack(int, int, int, int, int, int, float, const float*, int, float*)
    __attribute__((weak));
void cblas_sgemm_compute(int, int, int, int, int, int, const float*, int, const float*, int, float,
                         float*, int) __attribute__((weak));
}

namespace {

enum Flags : int64_t {
  kInputGate = ODYSSEY_BIT_input_gate, kForgetGate = ODYSSEY_BIT_forget_gate,
  kOutputGate = ODYSSEY_BIT_output_gate, kTanhIn = ODYSSEY_BIT_input_activation,
  kTanhOut = ODYSSEY_BIT_output_activation, kPeepholes = ODYSSEY_BIT_peepholes,
  kCoupled = ODYSSEY_BIT_coupled_input_forget, kFullGateRecurrence = ODYSSEY_BIT_full_gate_recurrence,
};

// Denormal floats (saturated gates make products near 1e-38) cost ~100x per operation; flush
// them to zero while a kernel runs, as oneDNN does, and restore the caller's mode after.
struct FlushDenormals {
#if defined(__SSE__)
  unsigned int saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// ------------------------------------------------------------------------------ matrix products

// Row-major C (m x n) = alpha op(A) op(B) + beta C, with op(A) (m x k), op(B) (k x n).
template <typename T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  // column-major view: C^T = op(B)^T op(A)^T
  const char ca = tb ? 'T' : 'N', cb = ta ? 'T' : 'N';
  const int im = n, in = m, ik = k, ila = ldb, ilb = lda, ilc = ldc;
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm_) {
      sgemm_(&ca, &cb, &im, &in, &ik, &alpha, b, &ila, a, &ilb, &beta, c, &ilc);
      return;
    }
  } else {
    if (dgemm_) {
      dgemm_(&ca, &cb, &im, &in, &ik, &alpha, b, &ila, a, &ilb, &beta, c, &ilc);
      return;
    }
  }
  // fallback: ATen's matmul on views of the raw buffers
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto A = ta ? at::from_blob(const_cast<T*>(a), {k, m}, {lda, 1}, opts).t()
              : at::from_blob(const_cast<T*>(a), {m, k}, {lda, 1}, opts);
  auto B = tb ? at::from_blob(const_cast<T*>(b), {n, k}, {ldb, 1}, opts).t()
              : at::from_blob(const_cast<T*>(b), {k, n}, {ldb, 1}, opts);
  auto C = at::from_blob(c, {m, n}, {ldc, 1}, opts);
  if (beta == T(0)) C.zero_();
  C.mul_(beta).addmm_(A, B, 1, alpha);
}

// Row-major C (m x n) = op(A) (m x k) op(W) (k x n) + beta C for a fixed W and many A. With a
// few rows (the paper's batch-1 trials: a matrix-vector product per step) a plain vectorised
// loop, whose cost is the pass over W (hot in cache for a trial's whole sequence), not a BLAS
// call's overhead; otherwise MKL's packed GEMM (W packed once) or a plain gemm per call.
// A buffer of `n` elements at a 64-byte-aligned address (ATen's CPU allocator), zeroed: every
// array a trial computes on is one, so BLAS and the vectorised loops see the same alignment
// whatever tensor, pack or offset the trial's data came from.
template <typename T>
struct Aligned {
  at::Tensor t;
  T* p;
  explicit Aligned(int64_t n, bool zero = true)
      : t(zero ? at::zeros({std::max<int64_t>(n, 1)}, options()) : at::empty({std::max<int64_t>(n, 1)}, options())),
        p(t.data_ptr<T>()) {}
  static at::TensorOptions options() {
    return at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  }
};

// One dimension of a padded array: `blocks` blocks of `full` entries, of which the first `real`
// are the trial's (a dimension not made of units: one block, all real).
struct Dim {
  int64_t blocks, full, real;
};
inline Dim plain(int64_t size) { return {1, size, size}; }

// Copies between a padded (rows x cols) array and its compact form, in either direction.
template <typename T>
void repack(T* padded, T* compact, Dim rows, Dim cols, bool to_compact) {
  const int64_t pw = cols.blocks * cols.full, cw = cols.blocks * cols.real;
  for (int64_t rb = 0; rb < rows.blocks; ++rb)
    for (int64_t r = 0; r < rows.real; ++r) {
      const int64_t pr = rb * rows.full + r, cr = rb * rows.real + r;
      for (int64_t cb = 0; cb < cols.blocks; ++cb) {
        T* pp = padded + pr * pw + cb * cols.full;
        T* cp = compact + cr * cw + cb * cols.real;
        if (to_compact) std::memcpy(cp, pp, cols.real * sizeof(T));
        else std::memcpy(pp, cp, cols.real * sizeof(T));
      }
    }
}

template <typename T>
struct FixedRight {
  enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112, kBMatrix = 162, kPacked = 151 };
  const T* w;
  bool tw;
  int64_t m, n, k, ldw;
  // a plain loop for one or two rows, or a few rows against a small matrix (cache-resident:
  // evaluation batches of small trials), where a BLAS call costs more than the product
  static constexpr int64_t kFewRows = 2, kSmallRows = 16, kSmallMatrix = 64 * 256;
  bool few;
  std::unique_ptr<Aligned<float>> packed;
  std::unique_ptr<Aligned<T>> wk;  // few rows: op(W) stored (k x n): products are runs of axpys
  std::unique_ptr<Aligned<T>> compact;  // BLAS, W given padded: its compact copy
  FixedRight(const T* w_, bool tw_, int64_t m_, int64_t n_, int64_t k_, int64_t ldw_)
      : w(w_), tw(tw_), m(m_), n(n_), k(k_), ldw(ldw_),
        few(m <= kFewRows || (m <= kSmallRows && n * k <= kSmallMatrix)) {
    if (few) {
      wk = std::make_unique<Aligned<T>>(k * n, false);
      T* out = wk->p;
      for (int64_t r = 0; r < k; ++r)
        for (int64_t j = 0; j < n; ++j) out[r * n + j] = tw ? w[j * ldw + r] : w[r * ldw + j];
      return;
    }
    pack_for_blas();
  }
  // The same for W given as a trial's real part of a padded array (`rows` x `cols` as `repack`
  // takes them): the few-rows copy reads it in place, BLAS gets a compact, aligned copy. Either
  // way the product is that of the compact W.
  FixedRight(const T* padded, Dim rows, Dim cols, bool tw_, int64_t m_)
      : w(nullptr), tw(tw_), m(m_),
        n(tw_ ? rows.blocks * rows.real : cols.blocks * cols.real),
        k(tw_ ? cols.blocks * cols.real : rows.blocks * rows.real),
        ldw(cols.blocks * cols.real),
        few(m <= kFewRows || (m <= kSmallRows && n * k <= kSmallMatrix)) {
    const int64_t wr = rows.blocks * rows.real, wc = cols.blocks * cols.real;
    if (few) {
      std::vector<int64_t> prow(wr), pcol(wc);  // compact row / column -> padded offset
      for (int64_t i = 0; i < wr; ++i)
        prow[i] = ((i / rows.real) * rows.full + i % rows.real) * cols.blocks * cols.full;
      for (int64_t c = 0; c < wc; ++c) pcol[c] = (c / cols.real) * cols.full + c % cols.real;
      wk = std::make_unique<Aligned<T>>(k * n, false);
      T* out = wk->p;
      for (int64_t r = 0; r < k; ++r)
        for (int64_t j = 0; j < n; ++j)
          out[r * n + j] = tw ? padded[prow[j] + pcol[r]] : padded[prow[r] + pcol[j]];
      return;
    }
    compact = std::make_unique<Aligned<T>>(wr * wc, false);
    repack(const_cast<T*>(padded), compact->p, rows, cols, true);
    w = compact->p;
    pack_for_blas();
  }
  void pack_for_blas() {
    if constexpr (std::is_same_v<T, float>) {
      if (cblas_sgemm_pack_get_size && cblas_sgemm_pack && cblas_sgemm_compute) {
        packed = std::make_unique<Aligned<float>>(
            cblas_sgemm_pack_get_size(kBMatrix, m, n, k) / sizeof(float) + 1, false);
        cblas_sgemm_pack(kRowMajor, kBMatrix, tw ? kTrans : kNoTrans, m, n, k, 1.0f, w, ldw,
                         packed->p);
      }
    }
  }
  void operator()(const T* a, int64_t lda, T beta, T* c, int64_t ldc) const {
    if (few) {
      few_rows(a, lda, beta, c, ldc);
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (packed) {
        cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, m, n, k, a, lda, packed->p, 0,
                            beta, c, ldc);
        return;
      }
    }
    gemm<T>(false, tw, m, n, k, T(1), a, lda, w, ldw, beta, c, ldc);
  }
  void few_rows(const T* a, int64_t lda, T beta, T* c, int64_t ldc) const {
    for (int64_t i = 0; i < m; ++i) {  // C[i, :] = beta C[i, :] + sum_r a_i[r] op(W)[r, :]
      const T* __restrict ai = a + i * lda;
      T* __restrict ci = c + i * ldc;
      if (beta == T(0)) std::fill(ci, ci + n, T(0));
      else if (beta != T(1)) for (int64_t j = 0; j < n; ++j) ci[j] *= beta;
      int64_t r = 0;
      for (; r + 4 <= k; r += 4) {  // four rows of W per pass over C: a quarter of its traffic
        const T a0 = ai[r], a1 = ai[r + 1], a2 = ai[r + 2], a3 = ai[r + 3];
        if (a0 == T(0) && a1 == T(0) && a2 == T(0) && a3 == T(0)) continue;  // padded units
        const T* __restrict w0 = wk->p + r * n;
        const T* __restrict w1 = w0 + n;
        const T* __restrict w2 = w1 + n;
        const T* __restrict w3 = w2 + n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) ci[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j];
      }
      for (; r < k; ++r) {
        const T ar = ai[r];
        if (ar == T(0)) continue;  // zero inputs add nothing (as reference BLAS skips them)
        const T* __restrict wr = wk->p + r * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) ci[j] += ar * wr[j];
      }
    }
  }
};

// ------------------------------------------------------------------- elementwise activations

// float: a Cephes-style exp (about 1 ulp on [-87, 88]) written so that loops over it vectorise;
// double: the C library (double is for tests and gradchecks).
inline float exp_approx(float x) {
  // branch-free so that it vectorises (with -fno-trapping-math): clamp, round via 1.5 * 2^23
  x = std::max(x, -87.0f);
  x = std::min(x, 88.0f);
  float fx = x * 1.44269504088896341f;
  fx = (fx + 12582912.0f) - 12582912.0f;
  float g = x - fx * 0.693359375f + fx * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * g + 1.3981999507e-3f;
  y = y * g + 8.3334519073e-3f;
  y = y * g + 4.1665795894e-2f;
  y = y * g + 1.6666665459e-1f;
  y = y * g + 5.0000001201e-1f;
  y = y * g * g + g + 1.0f;
  int32_t bits = (static_cast<int32_t>(fx) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}
inline double exp_approx(double x) { return std::exp(x); }

template <typename T> inline T sigm(T x) { return T(1) / (T(1) + exp_approx(-x)); }
template <typename T> inline T tanh_(T x) {
  if constexpr (std::is_same_v<T, double>) return std::tanh(x);
  else {
    // tanh(x) = 1 - 2 / (exp(2x) + 1); exact to ~1e-7 absolute
    return T(1) - T(2) / (exp_approx(T(2) * x) + T(1));
  }
}

// --------------------------------------------------------------------------- LSTM variants

// The flag tests of the fused loops. `StaticFlags<F>` makes every test a compile-time constant, so
// that the per-step loop over the hidden units vectorises; the variants of the registry get one
// each (see `with_flags`). `DynamicFlags` is the same loop for any other flag set (correct, and
// only as fast as branchy scalar code).
template <int64_t F>
struct StaticFlags {
  static constexpr bool coupled = F & kCoupled;
  static constexpr bool i = F & kInputGate, f = (F & kForgetGate) && !coupled;
  static constexpr bool o = F & kOutputGate, tanh_in = F & kTanhIn, tanh_out = F & kTanhOut;
  static constexpr bool peep = F & kPeepholes, fgr = F & kFullGateRecurrence;
};
struct DynamicFlags {
  bool coupled, i, f, o, tanh_in, tanh_out, peep, fgr;
  explicit DynamicFlags(int64_t F)
      : coupled(F & kCoupled), i(F & kInputGate), f((F & kForgetGate) && !coupled),
        o(F & kOutputGate), tanh_in(F & kTanhIn), tanh_out(F & kTanhOut), peep(F & kPeepholes),
        fgr(F & kFullGateRecurrence) {}
};

// Calls fn(flags object): a StaticFlags for the flag sets of the registry's variants (listed by
// the generated ODYSSEY_STATIC_FLAG_SETS), a DynamicFlags for any other.
template <class Fn>
void with_flags(int64_t flags, Fn&& fn) {
#define ODYSSEY_CASE(F) \
  case F:               \
    fn(StaticFlags<F>{}); \
    return;
  switch (flags) {
    ODYSSEY_STATIC_FLAG_SETS(ODYSSEY_CASE)
    default: fn(DynamicFlags(flags)); return;
  }
#undef ODYSSEY_CASE
}

struct Layout {
  int64_t n, g;                                 // hidden size, gate blocks
  int64_t oi = 0, of = 0, oz = 0, oo = 0;       // column offsets of the gate blocks in G*N
  int64_t pi = -1, pf = -1, po = -1;            // peephole rows
  Layout(int64_t flags, int64_t n_) : n(n_) {
    int64_t col = 0, row = 0;
    const bool peep = flags & kPeepholes, coupled = flags & kCoupled;
    if (flags & kInputGate) { oi = col++ * n; if (peep) pi = row++; }
    if ((flags & kForgetGate) && !coupled) { of = col++ * n; if (peep) pf = row++; }
    oz = col++ * n;
    if (flags & kOutputGate) { oo = col++ * n; if (peep) po = row++; }
    g = col;
  }
  int64_t peepholes() const { return (pi >= 0) + (pf >= 0) + (po >= 0); }
};

// One forward step for all rows: pre-activations xw_t + q (q = y' R^T, and for FGR qg = g' Rg^T
// added to the i, f, o blocks), then the gates, cell and output in one loop over the units.
// Writes the activations i, f, z, o into act (for backward), c, h(c), y and for FGR g = [i, f, o].
template <typename T, class Fl>
void lstm_step_forward(const Fl fl, const Layout& L, int64_t batch, const T* xw, const T* bias,
                       const T* q, const T* qg, T* act, const T* cp, T* cn, T* hc, T* ys, T* gs,
                       const T* p) {
  const int64_t n = L.n, gn = L.g * n;
  const T* p_i = fl.peep && fl.i ? p + L.pi * n : nullptr;
  const T* p_f = fl.peep && fl.f ? p + L.pf * n : nullptr;
  const T* p_o = fl.peep && fl.o ? p + L.po * n : nullptr;
  for (int64_t b = 0; b < batch; ++b) {
    const T* __restrict x = xw + b * gn;
    const T* __restrict r = q + b * gn;
    const T* __restrict bb = bias;
    const T* __restrict rg = fl.fgr ? qg + b * 3 * n : nullptr;
    T* __restrict a = act + b * gn;
    const T* __restrict c0p = cp + b * n;
    T* __restrict c1p = cn + b * n;
    T* __restrict hp = hc + b * n;
    T* __restrict yp = ys + b * n;
    T* __restrict gp = fl.fgr ? gs + b * 3 * n : nullptr;
    const int64_t oi = L.oi, of = L.of, oz = L.oz, oo = L.oo;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const T c0 = c0p[j];
      T i = T(1), f = T(1), o = T(1);
      if (fl.i) {
        T v = x[oi + j] + bb[oi + j] + r[oi + j];
        if (fl.fgr) v += rg[j];
        if (fl.peep) v += p_i[j] * c0;
        i = sigm(v);
        a[oi + j] = i;
      }
      if (fl.f) {
        T v = x[of + j] + bb[of + j] + r[of + j];
        if (fl.fgr) v += rg[n + j];
        if (fl.peep) v += p_f[j] * c0;
        f = sigm(v);
        a[of + j] = f;
      } else if (fl.coupled) {
        f = T(1) - i;
      }
      T z = x[oz + j] + bb[oz + j] + r[oz + j];
      if (fl.tanh_in) z = tanh_(z);
      a[oz + j] = z;
      const T c = z * i + c0 * f;  // a missing gate is 1: the products are exact
      const T h = fl.tanh_out ? tanh_(c) : c;
      if (fl.o) {
        T v = x[oo + j] + bb[oo + j] + r[oo + j];
        if (fl.fgr) v += rg[2 * n + j];
        if (fl.peep) v += p_o[j] * c;
        o = sigm(v);
        a[oo + j] = o;
      }
      c1p[j] = c;
      hp[j] = h;
      yp[j] = h * o;
      if (fl.fgr) {
        gp[j] = i;
        gp[n + j] = f;
        gp[2 * n + j] = o;
      }
    }
  }
}

int64_t steps_of(const at::Tensor& steps, int64_t k, int64_t t_len) {
  const int64_t v = steps.data_ptr<int64_t>()[k];
  TORCH_CHECK(v >= 0 && v <= t_len, "odyssey_cells: steps must lie in 0..T");
  return v;
}

int64_t units_of(const at::Tensor& units, int64_t k, int64_t n) {
  const int64_t v = units.data_ptr<int64_t>()[k];
  TORCH_CHECK(v >= 1 && v <= n, "odyssey_cells: units must lie in 1..N");
  return v;
}

// ----------------------------------------------------------------- a trial's own, compact data
//
// A pack's tensors are padded: trial k has `units[k]` real units out of the pack's N (a smaller
// trial's extra units have zero weights) and `steps[k]` real steps out of T. Every kernel below
// first copies trial k's real part into compact, 64-byte-aligned buffers laid out exactly as a
// pack of one trial of that size would hold them, computes on those alone, and copies the results
// back into the padded outputs (padding stays zero). So every sum over units or steps, every BLAS
// call (its shapes and alignment) and every vectorised loop of a trial is the same in any pack,
// with any neighbours: a trial's numbers are bitwise those it gets alone.

// A compact copy of trial data (aligned, zeroed, then filled from the padded array if given).
template <typename T>
struct Compact : Aligned<T> {
  explicit Compact(int64_t size, bool zero = true) : Aligned<T>(size, zero) {}
  Compact(const T* padded, Dim rows, Dim cols)
      : Aligned<T>(rows.blocks * rows.real * cols.blocks * cols.real, false) {
    repack(const_cast<T*>(padded), this->p, rows, cols, true);
  }
  void put(T* padded, Dim rows, Dim cols) const { repack(padded, this->p, rows, cols, false); }
};

// x (K, T, B, M) inputs; w (K, G*N, M) input weights; bias b (K, G*N); r (K, G*N, N); rg (K, 3N,
// 3N) for FGR, else empty; p (K, P, N) or empty; steps (K,) and units (K,) int64. The input
// projection W x of a trial is one GEMM over all its steps; b is added in the step loop.
// Returns y (K, T+1, B, N) and c (K, T+1, B, N) with y[:, 0] = c[:, 0] = 0, g (K, T+1, B, 3N) =
// [i, f, o] with g[:, 0] = 0 for FGR (else empty), act (K, T, B, G*N) gate activations and
// hc (K, T, B, N) = h(c); everything past a trial's steps and units is zero.
std::vector<at::Tensor> lstm_forward(const at::Tensor& x_, const at::Tensor& w_,
                                     const at::Tensor& b_, const at::Tensor& r_,
                                     const at::Tensor& rg_, const at::Tensor& p_,
                                     const at::Tensor& steps_, const at::Tensor& units_,
                                     int64_t flags) {
  TORCH_CHECK(x_.device().is_cpu(), "odyssey_cells: CPU tensors only");
  auto x = x_.contiguous();
  auto wx = w_.contiguous();
  auto bias = b_.contiguous();
  auto rw = r_.contiguous();
  auto rg = rg_.contiguous();
  auto p = p_.contiguous();
  auto steps = steps_.to(at::kLong).contiguous();
  auto units = units_.to(at::kLong).contiguous();
  TORCH_CHECK(x.dim() == 4 && wx.dim() == 3 && rw.dim() == 3,
              "odyssey_cells: expected x (K, T, B, M), w (K, G*N, M), r (K, G*N, N)");
  const int64_t trials = x.size(0), t_len = x.size(1), batch = x.size(2), m = x.size(3),
                gn_full = rw.size(1), n_full = rw.size(2);
  const bool fgr = flags & kFullGateRecurrence;
  const Layout LF(flags, n_full);
  const int64_t gates = LF.g, np = LF.peepholes();
  TORCH_CHECK(gates * n_full == gn_full && rw.size(0) == trials && wx.size(1) == gn_full &&
                  wx.size(2) == m && wx.size(0) == trials,
              "odyssey_cells: x, w and r do not match the flags' gate count");
  TORCH_CHECK(bias.numel() == trials * gn_full, "odyssey_cells: bias size does not match r");
  TORCH_CHECK(p.numel() == trials * np * n_full, "odyssey_cells: peephole shape");
  TORCH_CHECK(!fgr || (rg.dim() == 3 && rg.size(1) == 3 * n_full && rg.size(2) == 3 * n_full),
              "odyssey_cells: FGR needs rg of shape (K, 3N, 3N)");
  TORCH_CHECK(steps.numel() == trials && units.numel() == trials,
              "odyssey_cells: steps and units must be (K,)");
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_forward", [&] {
    using T = scalar_t;
    const int64_t N = n_full, B = batch, TT = t_len;
    auto y = at::zeros({trials, TT + 1, B, N}, x.options());
    auto c = at::zeros({trials, TT + 1, B, N}, x.options());
    auto g = fgr ? at::zeros({trials, TT + 1, B, 3 * N}, x.options()) : x.new_empty({0});
    auto act = at::zeros({trials, TT, B, gates * N}, x.options());
    auto hc = at::zeros({trials, TT, B, N}, x.options());
    at::parallel_for(0, trials, 1, [&](int64_t k0, int64_t k1) {
      FlushDenormals ftz;
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t t_k = steps_of(steps, k, TT), n = units_of(units, k, N);
        if (t_k == 0) continue;
        const Layout L(flags, n);
        const int64_t gn = gates * n, bn = B * n, rows = t_k * B;
        const Dim gate_units{gates, N, n}, hidden{1, N, n}, fgr_units{3, N, n};
        // the trial's own data
        Compact<T> X(x.data_ptr<T>() + k * TT * B * m, plain(rows), plain(m));
        Compact<T> W(wx.data_ptr<T>() + k * gn_full * m, gate_units, plain(m));
        Compact<T> BI(bias.data_ptr<T>() + k * gn_full, plain(1), gate_units);
        const T* RW = rw.data_ptr<T>() + k * gn_full * N;  // read by FixedRight
        const T* RG = fgr ? rg.data_ptr<T>() + k * 9 * N * N : nullptr;
        Compact<T> P = np ? Compact<T>(p.data_ptr<T>() + k * np * N, plain(np), hidden)
                          : Compact<T>(0);
        // its results
        Aligned<T> XW(rows * gn, false);  // written whole by the GEMM
        Compact<T> Y((t_k + 1) * bn), C((t_k + 1) * bn),
            G(fgr ? (t_k + 1) * 3 * bn : 0), A(rows * gn), H(rows * n), Q(B * gn),
            QG(fgr ? B * 3 * n : 0);
        gemm<T>(false, true, rows, gn, m, T(1), X.p, m, W.p, m, T(0), XW.p, gn);  // W x
        FixedRight<T> rec(RW, gate_units, hidden, true, B);  // q = y' R^T
        std::unique_ptr<FixedRight<T>> rec_g;
        if (fgr)
          rec_g = std::make_unique<FixedRight<T>>(RG, fgr_units, fgr_units, true, B);  // g' Rg^T
        with_flags(flags, [&](auto fl) {
          for (int64_t t = 0; t < t_k; ++t) {
            if (t > 0) {  // y[0] = g[0] = 0 contribute nothing: q, qg stay zero at t = 0
              rec(Y.p + t * bn, n, 0, Q.p, gn);
              if (fgr) (*rec_g)(G.p + t * 3 * bn, 3 * n, 0, QG.p, 3 * n);
            }
            lstm_step_forward<T>(fl, L, B, XW.p + t * B * gn, BI.p, Q.p, QG.p, A.p + t * B * gn,
                                 C.p + t * bn, C.p + (t + 1) * bn, H.p + t * bn,
                                 Y.p + (t + 1) * bn, fgr ? G.p + (t + 1) * 3 * bn : nullptr, P.p);
          }
        });
        Y.put(y.data_ptr<T>() + k * (TT + 1) * B * N, plain((t_k + 1) * B), hidden);
        C.put(c.data_ptr<T>() + k * (TT + 1) * B * N, plain((t_k + 1) * B), hidden);
        if (fgr) G.put(g.data_ptr<T>() + k * (TT + 1) * B * 3 * N, plain((t_k + 1) * B), fgr_units);
        A.put(act.data_ptr<T>() + k * TT * B * gates * N, plain(rows), gate_units);
        H.put(hc.data_ptr<T>() + k * TT * B * N, plain(rows), hidden);
      }
    });
    out = {y, g, c, act, hc};
  });
  return out;
}

// One backward step for all rows. dye/dce: external gradients of y_t and c_t (row stride `sd`:
// n, or 0 for a shared zero row); dyn, dgn: gradients of y_t and g_t from step t+1 (zero at the
// last step); carry: gradient of c_t from step t+1, updated to that of c_{t-1}. Writes da (the
// pre-activation gradients, G*N per row), for FGR dga = [da_i, da_f, da_o], and adds to dp.
template <typename T, class Fl>
void lstm_step_backward(const Fl fl, const Layout& L, int64_t batch, const T* act, const T* cp,
                        const T* cn, const T* hc, const T* dye, int64_t sdy, const T* dce,
                        int64_t sdc, const T* dyn, const T* dgn, T* carry, T* da, T* dga,
                        T* dbias, const T* p, T* dp) {
  const int64_t n = L.n, gn = L.g * n;
  const T* p_i = fl.peep && fl.i ? p + L.pi * n : nullptr;
  const T* p_f = fl.peep && fl.f ? p + L.pf * n : nullptr;
  const T* p_o = fl.peep && fl.o ? p + L.po * n : nullptr;
  T* dp_i = fl.peep && fl.i ? dp + L.pi * n : nullptr;
  T* dp_f = fl.peep && fl.f ? dp + L.pf * n : nullptr;
  T* dp_o = fl.peep && fl.o ? dp + L.po * n : nullptr;
  const int64_t oi = L.oi, of = L.of, oz = L.oz, oo = L.oo;
  for (int64_t b = 0; b < batch; ++b) {
    const T* __restrict a = act + b * gn;
    const T* __restrict c0p = cp + b * n;
    const T* __restrict c1p = cn + b * n;
    const T* __restrict hp = hc + b * n;
    const T* __restrict dy1 = dye + b * sdy;
    const T* __restrict dc1 = dce + b * sdc;
    const T* __restrict dy2 = dyn + b * n;
    const T* __restrict dg2 = fl.fgr ? dgn + b * 3 * n : nullptr;
    T* __restrict cr = carry + b * n;
    T* __restrict d = da + b * gn;
    T* __restrict dg = fl.fgr ? dga + b * 3 * n : nullptr;
    T* __restrict db = dbias;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const T c0 = c0p[j], h = hp[j], z = a[oz + j];
      const T i = fl.i ? a[oi + j] : T(1);
      const T o = fl.o ? a[oo + j] : T(1);
      const T dy = dy1[j] + dy2[j];
      T dao = T(0);
      if (fl.o) {
        T do_ = dy * h;
        if (fl.fgr) do_ += dg2[2 * n + j];
        dao = do_ * o * (T(1) - o);
        d[oo + j] = dao;
        db[oo + j] += dao;
      }
      const T dhc = dy * o;
      T dc = cr[j] + dc1[j] + (fl.tanh_out ? dhc * (T(1) - h * h) : dhc);
      if (fl.peep && fl.o) dc += dao * p_o[j];
      const T daz = fl.tanh_in ? dc * i * (T(1) - z * z) : dc * i;
      d[oz + j] = daz;
      db[oz + j] += daz;
      T dai = T(0), daf = T(0), fe = T(1);
      if (fl.i) {
        T di = dc * z;
        if (fl.fgr) di += dg2[j];
        if (fl.coupled) {
          di -= dc * c0;
          fe = T(1) - i;
        }
        dai = di * i * (T(1) - i);
        d[oi + j] = dai;
        db[oi + j] += dai;
      }
      if (fl.f) {
        const T f = a[of + j];
        T df = dc * c0;
        if (fl.fgr) df += dg2[n + j];
        daf = df * f * (T(1) - f);
        d[of + j] = daf;
        db[of + j] += daf;
        fe = f;
      }
      T carry_j = dc * fe;
      if (fl.peep && fl.i) {
        carry_j += dai * p_i[j];
        dp_i[j] += dai * c0;
      }
      if (fl.peep && fl.f) {
        carry_j += daf * p_f[j];
        dp_f[j] += daf * c0;
      }
      if (fl.peep && fl.o) dp_o[j] += dao * c1p[j];
      cr[j] = carry_j;
      if (fl.fgr) {
        dg[j] = dai;
        dg[n + j] = daf;
        dg[2 * n + j] = dao;
      }
    }
  }
}

// Gradients of lstm_forward given dy (K, T, B, N) and dc (K, T, B, N) (either may be empty:
// zero): returns dx (K, T, B, M) (empty unless `need_dx`), dw (K, G*N, M), db (K, G*N),
// dr (K, G*N, N), drg (K, 3N, 3N) for FGR (else empty), dp (K, P, N); each trial on its own
// compact data, as in lstm_forward.
std::vector<at::Tensor> lstm_backward(const at::Tensor& dy_, const at::Tensor& dc_,
                                      const at::Tensor& x_, const at::Tensor& w_,
                                      const at::Tensor& r_, const at::Tensor& rg_,
                                      const at::Tensor& p_, const at::Tensor& y,
                                      const at::Tensor& g, const at::Tensor& c,
                                      const at::Tensor& act, const at::Tensor& hc,
                                      const at::Tensor& steps_, const at::Tensor& units_,
                                      int64_t flags, bool need_dx) {
  auto dye = dy_.numel() ? dy_.contiguous() : dy_;
  auto dce = dc_.numel() ? dc_.contiguous() : dc_;
  auto x = x_.contiguous();
  auto wx = w_.contiguous();
  auto rw = r_.contiguous();
  auto rg = rg_.contiguous();
  auto p = p_.contiguous();
  auto steps = steps_.to(at::kLong).contiguous();
  auto units = units_.to(at::kLong).contiguous();
  const int64_t trials = act.size(0), t_len = act.size(1), batch = act.size(2),
                gn_full = act.size(3), n_full = hc.size(3), m = x.size(3);
  const bool fgr = flags & kFullGateRecurrence;
  const Layout LF(flags, n_full);
  const int64_t gates = LF.g, np = LF.peepholes();
  TORCH_CHECK(gates * n_full == gn_full, "odyssey_cells: act does not match the flags' gate count");
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "lstm_backward", [&] {
    using T = scalar_t;
    const int64_t N = n_full, B = batch, TT = t_len;
    auto dx = need_dx ? at::zeros_like(x) : x.new_empty({0});
    auto dw = at::zeros_like(wx);
    auto dp = at::zeros_like(p);
    auto dbias = at::zeros({trials, gn_full}, act.options());
    auto dr = at::zeros({trials, gn_full, N}, act.options());
    auto drg = fgr ? at::zeros({trials, 3 * N, 3 * N}, act.options()) : act.new_empty({0});
    at::parallel_for(0, trials, 1, [&](int64_t k0, int64_t k1) {
      FlushDenormals ftz;
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t t_k = steps_of(steps, k, TT), n = units_of(units, k, N);
        if (t_k == 0) continue;
        const Layout L(flags, n);
        const int64_t gn = gates * n, bn = B * n, rows = t_k * B;
        const Dim gate_units{gates, N, n}, hidden{1, N, n}, fgr_units{3, N, n};
        const int64_t sdy = dye.numel() ? n : 0, sdc = dce.numel() ? n : 0;
        // the trial's own data; an absent dy or dc is one zero row with stride 0
        Compact<T> DYE = sdy ? Compact<T>(dye.data_ptr<T>() + k * TT * B * N, plain(rows), hidden)
                             : Compact<T>(n);
        Compact<T> DCE = sdc ? Compact<T>(dce.data_ptr<T>() + k * TT * B * N, plain(rows), hidden)
                             : Compact<T>(n);
        Compact<T> X(x.data_ptr<T>() + k * TT * B * m, plain(rows), plain(m));
        Compact<T> W(wx.data_ptr<T>() + k * gn_full * m, gate_units, plain(m));
        const T* RW = rw.data_ptr<T>() + k * gn_full * N;  // read by FixedRight
        const T* RG = fgr ? rg.data_ptr<T>() + k * 9 * N * N : nullptr;
        Compact<T> P = np ? Compact<T>(p.data_ptr<T>() + k * np * N, plain(np), hidden)
                          : Compact<T>(0);
        Compact<T> C(c.data_ptr<T>() + k * (TT + 1) * B * N, plain((t_k + 1) * B), hidden);
        Compact<T> Y(y.data_ptr<T>() + k * (TT + 1) * B * N, plain((t_k + 1) * B), hidden);
        Compact<T> G = fgr ? Compact<T>(g.data_ptr<T>() + k * (TT + 1) * B * 3 * N,
                                        plain((t_k + 1) * B), fgr_units)
                           : Compact<T>(0);
        Compact<T> A(act.data_ptr<T>() + k * TT * B * gn_full, plain(rows), gate_units);
        Compact<T> H(hc.data_ptr<T>() + k * TT * B * N, plain(rows), hidden);
        // its gradients
        Compact<T> DGA(fgr ? rows * 3 * n : 0), DB(gn), DRG(fgr ? 9 * n * n : 0), DP(np * n),
            DYN(bn), DGN(fgr ? 3 * bn : 0), CARRY(bn);
        // written whole (every step's gate gradients; GEMMs with beta 0)
        Compact<T> DA(rows * gn, false), DR(gn * n, false), DW(gn * m, false),
            DX(need_dx ? rows * m : 0, false);
        FixedRight<T> rec(RW, gate_units, hidden, false, B);  // dy' = da R
        std::unique_ptr<FixedRight<T>> rec_g;
        if (fgr) rec_g = std::make_unique<FixedRight<T>>(RG, fgr_units, fgr_units, false, B);
        with_flags(flags, [&](auto fl) {
          for (int64_t t = t_k - 1; t >= 0; --t) {
            lstm_step_backward<T>(fl, L, B, A.p + t * B * gn, C.p + t * bn, C.p + (t + 1) * bn,
                                  H.p + t * bn, DYE.p + t * B * sdy, sdy, DCE.p + t * B * sdc, sdc,
                                  DYN.p, DGN.p, CARRY.p, DA.p + t * B * gn,
                                  fgr ? DGA.p + t * 3 * bn : nullptr, DB.p, P.p, DP.p);
            if (t > 0) {
              rec(DA.p + t * B * gn, gn, 0, DYN.p, n);
              if (fgr) (*rec_g)(DGA.p + t * 3 * bn, 3 * n, 0, DGN.p, 3 * n);
            }
          }
        });
        // dR = sum_t da_t^T y_{t-1}, dRg = sum_t dga_t^T g_{t-1}, dW = sum_t da_t^T x_t: one
        // GEMM each over all steps; dx = da W
        gemm<T>(true, false, gn, n, rows, 1, DA.p, gn, Y.p, n, 0, DR.p, n);
        if (fgr) gemm<T>(true, false, 3 * n, 3 * n, rows, 1, DGA.p, 3 * n, G.p, 3 * n, 0, DRG.p, 3 * n);
        gemm<T>(true, false, gn, m, rows, 1, DA.p, gn, X.p, m, 0, DW.p, m);
        if (need_dx) gemm<T>(false, false, rows, m, gn, 1, DA.p, gn, W.p, m, 0, DX.p, m);
        DW.put(dw.data_ptr<T>() + k * gn_full * m, gate_units, plain(m));
        DB.put(dbias.data_ptr<T>() + k * gn_full, plain(1), gate_units);
        DR.put(dr.data_ptr<T>() + k * gn_full * N, gate_units, hidden);
        if (fgr) DRG.put(drg.data_ptr<T>() + k * 9 * N * N, fgr_units, fgr_units);
        if (np) DP.put(dp.data_ptr<T>() + k * np * N, plain(np), hidden);
        if (need_dx) DX.put(dx.data_ptr<T>() + k * TT * B * m, plain(rows), plain(m));
      }
    });
    out = {dx, dw, dbias, dr, drg, dp};
  });
  return out;
}

// ------------------------------------------------------------------------------------ GRU

// x (K, T, B, M); w (K, 3N, M); b_ih (K, 3N); r (K, 3N, N); b_hh (K, 3N); steps, units (K,).
// Returns h (K, T+1, B, N) with h[:, 0] = 0 and the saved activations act (K, T, B, 4N) =
// [r, u, n, hn]; zero past a trial's steps and units. Each trial on its own compact data.
std::vector<at::Tensor> gru_forward(const at::Tensor& x_, const at::Tensor& w_,
                                    const at::Tensor& bih_, const at::Tensor& r_,
                                    const at::Tensor& bhh_, const at::Tensor& steps_,
                                    const at::Tensor& units_) {
  TORCH_CHECK(x_.device().is_cpu(), "odyssey_cells: CPU tensors only");
  auto x = x_.contiguous();
  auto wx = w_.contiguous();
  auto bih = bih_.contiguous();
  auto rw = r_.contiguous();
  auto bhh = bhh_.contiguous();
  auto steps = steps_.to(at::kLong).contiguous();
  auto units = units_.to(at::kLong).contiguous();
  TORCH_CHECK(x.dim() == 4 && wx.dim() == 3 && rw.dim() == 3,
              "odyssey_cells: expected x (K, T, B, M), w (K, 3N, M), r (K, 3N, N)");
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_forward", [&] {
    using T = scalar_t;
    const int64_t trials = x.size(0), TT = x.size(1), B = x.size(2), m = x.size(3),
                  N = rw.size(2);
    auto h = at::zeros({trials, TT + 1, B, N}, x.options());
    auto act = at::zeros({trials, TT, B, 4 * N}, x.options());
    at::parallel_for(0, trials, 1, [&](int64_t k0, int64_t k1) {
      FlushDenormals ftz;
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t t_k = steps_of(steps, k, TT), n = units_of(units, k, N);
        if (t_k == 0) continue;
        const int64_t rows = t_k * B;
        const Dim three{3, N, n}, hidden{1, N, n};
        Compact<T> X(x.data_ptr<T>() + k * TT * B * m, plain(rows), plain(m));
        Compact<T> W(wx.data_ptr<T>() + k * 3 * N * m, three, plain(m));
        Compact<T> BI(bih.data_ptr<T>() + k * 3 * N, plain(1), three);
        const T* R = rw.data_ptr<T>() + k * 3 * N * N;  // read by FixedRight
        Compact<T> BH(bhh.data_ptr<T>() + k * 3 * N, plain(1), three);
        Compact<T> XW(rows * 3 * n), Hs((t_k + 1) * B * n), Ac(rows * 4 * n), HH(B * 3 * n);
        for (int64_t i = 0; i < rows; ++i) std::memcpy(XW.p + i * 3 * n, BI.p, 3 * n * sizeof(T));
        gemm<T>(false, true, rows, 3 * n, m, T(1), X.p, m, W.p, m, T(1), XW.p, 3 * n);  // b + W x
        FixedRight<T> rec(R, three, hidden, true, B);  // hh = h' R^T + b_hh
        for (int64_t t = 0; t < t_k; ++t) {
          for (int64_t b = 0; b < B; ++b) std::memcpy(HH.p + b * 3 * n, BH.p, 3 * n * sizeof(T));
          if (t > 0) rec(Hs.p + t * B * n, n, 1, HH.p, 3 * n);
          for (int64_t b = 0; b < B; ++b) {
            const T* __restrict xr = XW.p + (t * B + b) * 3 * n;
            const T* __restrict q = HH.p + b * 3 * n;
            const T* __restrict h0 = Hs.p + (t * B + b) * n;
            T* __restrict h1 = Hs.p + ((t + 1) * B + b) * n;
            T* __restrict a = Ac.p + (t * B + b) * 4 * n;
            _Pragma("omp simd")  // (a #pragma cannot stand inside the dispatch macro)
            for (int64_t j = 0; j < n; ++j) {
              T r = sigm(xr[j] + q[j]);
              T u = sigm(xr[n + j] + q[n + j]);
              T hn = q[2 * n + j];
              T nn = tanh_(xr[2 * n + j] + r * hn);
              a[j] = r;
              a[n + j] = u;
              a[2 * n + j] = nn;
              a[3 * n + j] = hn;
              h1[j] = (T(1) - u) * nn + u * h0[j];
            }
          }
        }
        Hs.put(h.data_ptr<T>() + k * (TT + 1) * B * N, plain((t_k + 1) * B), hidden);
        Ac.put(act.data_ptr<T>() + k * TT * B * 4 * N, plain(rows), Dim{4, N, n});
      }
    });
    out = {h, act};
  });
  return out;
}

// Gradients given dh (K, T, B, N): returns dx (K, T, B, M) (empty unless `need_dx`),
// dw (K, 3N, M), db_ih (K, 3N), dr (K, 3N, N), db_hh (K, 3N).
std::vector<at::Tensor> gru_backward(const at::Tensor& dh_, const at::Tensor& x_,
                                     const at::Tensor& w_, const at::Tensor& r_,
                                     const at::Tensor& h, const at::Tensor& act,
                                     const at::Tensor& steps_, const at::Tensor& units_,
                                     bool need_dx) {
  auto dh = dh_.contiguous();
  auto x = x_.contiguous();
  auto wx = w_.contiguous();
  auto rw = r_.contiguous();
  auto steps = steps_.to(at::kLong).contiguous();
  auto units = units_.to(at::kLong).contiguous();
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(dh.scalar_type(), "gru_backward", [&] {
    using T = scalar_t;
    const int64_t trials = act.size(0), TT = act.size(1), B = act.size(2), N = rw.size(2),
                  m = x.size(3);
    auto dx = need_dx ? at::zeros_like(x) : x.new_empty({0});
    auto dw = at::zeros_like(wx);
    auto dbih = at::zeros({trials, 3 * N}, dh.options());
    auto dr = at::zeros({trials, 3 * N, N}, dh.options());
    auto dbhh = at::zeros({trials, 3 * N}, dh.options());
    at::parallel_for(0, trials, 1, [&](int64_t k0, int64_t k1) {
      FlushDenormals ftz;
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t t_k = steps_of(steps, k, TT), n = units_of(units, k, N);
        if (t_k == 0) continue;
        const int64_t rows = t_k * B;
        const Dim three{3, N, n}, hidden{1, N, n};
        Compact<T> DH(dh.data_ptr<T>() + k * TT * B * N, plain(rows), hidden);
        Compact<T> X(x.data_ptr<T>() + k * TT * B * m, plain(rows), plain(m));
        Compact<T> W(wx.data_ptr<T>() + k * 3 * N * m, three, plain(m));
        const T* R = rw.data_ptr<T>() + k * 3 * N * N;  // read by FixedRight
        Compact<T> Hs(h.data_ptr<T>() + k * (TT + 1) * B * N, plain((t_k + 1) * B), hidden);
        Compact<T> Ac(act.data_ptr<T>() + k * TT * B * 4 * N, plain(rows), Dim{4, N, n});
        Compact<T> DXW(rows * 3 * n), DHH(rows * 3 * n), CA(B * n), DR(3 * n * n),
            DBI(3 * n), DBH(3 * n), DW(3 * n * m), DX(need_dx ? rows * m : 0);
        FixedRight<T> rec(R, three, hidden, false, B);  // carry += dhh R
        for (int64_t t = t_k - 1; t >= 0; --t) {
          for (int64_t b = 0; b < B; ++b) {
            const T* __restrict a = Ac.p + (t * B + b) * 4 * n;
            const T* __restrict h0 = Hs.p + (t * B + b) * n;
            const T* __restrict dhe = DH.p + (t * B + b) * n;
            T* __restrict cr = CA.p + b * n;
            T* __restrict dxr = DXW.p + (t * B + b) * 3 * n;
            T* __restrict dq = DHH.p + (t * B + b) * 3 * n;
            _Pragma("omp simd")
            for (int64_t j = 0; j < n; ++j) {
              const T r = a[j], u = a[n + j], nn = a[2 * n + j], hn = a[3 * n + j];
              const T d = dhe[j] + cr[j];
              const T dan = d * (T(1) - u) * (T(1) - nn * nn);
              const T dau = d * (h0[j] - nn) * u * (T(1) - u);
              const T dar = dan * hn * r * (T(1) - r);
              dxr[j] = dar;
              dxr[n + j] = dau;
              dxr[2 * n + j] = dan;
              dq[j] = dar;
              dq[n + j] = dau;
              dq[2 * n + j] = dan * r;
              cr[j] = d * u;
            }
          }
          if (t > 0)  // carry += dhh_t R
            rec(DHH.p + t * B * 3 * n, 3 * n, 1, CA.p, n);
        }
        gemm<T>(true, false, 3 * n, n, rows, 1, DHH.p, 3 * n, Hs.p, n, 0, DR.p, n);
        gemm<T>(true, false, 3 * n, m, rows, 1, DXW.p, 3 * n, X.p, m, 0, DW.p, m);
        if (need_dx) gemm<T>(false, false, rows, m, 3 * n, 1, DXW.p, 3 * n, W.p, m, 0, DX.p, m);
        for (int64_t i = 0; i < rows; ++i) {  // the biases' gradients: sums over the steps
          const T* __restrict dxr = DXW.p + i * 3 * n;
          const T* __restrict dq = DHH.p + i * 3 * n;
          _Pragma("omp simd")
          for (int64_t j = 0; j < 3 * n; ++j) {
            DBI.p[j] += dxr[j];
            DBH.p[j] += dq[j];
          }
        }
        DW.put(dw.data_ptr<T>() + k * 3 * N * m, three, plain(m));
        DBI.put(dbih.data_ptr<T>() + k * 3 * N, plain(1), three);
        DR.put(dr.data_ptr<T>() + k * 3 * N * N, three, hidden);
        DBH.put(dbhh.data_ptr<T>() + k * 3 * N, plain(1), three);
        if (need_dx) DX.put(dx.data_ptr<T>() + k * TT * B * m, plain(rows), plain(m));
      }
    });
    out = {dx, dw, dbih, dr, dbhh};
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(odyssey_cells, m) {
  m.def("lstm_forward(Tensor x, Tensor w, Tensor b, Tensor r, Tensor rg, Tensor p, Tensor steps, "
        "Tensor units, int flags) -> Tensor[]", &lstm_forward);
  m.def("lstm_backward(Tensor dy, Tensor dc, Tensor x, Tensor w, Tensor r, Tensor rg, Tensor p, "
        "Tensor y, Tensor g, Tensor c, Tensor act, Tensor hc, Tensor steps, Tensor units, "
        "int flags, bool need_dx) -> Tensor[]", &lstm_backward);
  m.def("gru_forward(Tensor x, Tensor w, Tensor bih, Tensor r, Tensor bhh, Tensor steps, "
        "Tensor units) -> Tensor[]", &gru_forward);
  m.def("gru_backward(Tensor dh, Tensor x, Tensor w, Tensor r, Tensor h, Tensor act, "
        "Tensor steps, Tensor units, bool need_dx) -> Tensor[]", &gru_backward);
}
