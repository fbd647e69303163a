// Whole-sequence LSTM-variant and GRU kernels, forward and hand-written backward (CPU), for a
// pack of K independent trials: every tensor has a leading trial dimension, trial k runs its own
// weights over its own `steps[k]` steps (the rest of the time axis is padding, left at zero), and
// the trials are independent loops (at::parallel_for over k), each keeping its recurrent matrix
// hot in cache for its whole sequence.
//
// The generic LSTM of Greff et al. 2017 (section II), one direction, driven by flag bits:
//   a_t = xw_t + y_{t-1} R^T (+ for FGR, on the i, f, o blocks: g_{t-1} Rg^T, g = [i, f, o])
//   xw = W x for all steps (one GEMM, done by the caller; b is added in the step loop)
//   i = s(a_i + p_i c'), f = s(a_f + p_f c') | 1 - i (CIFG) | 1, z = g(a_z), c = z i + c' f,
//   o = s(a_o + p_o c), y = h(c) o;  missing gates are 1, g/h are tanh or identity.
// Gate blocks are stored in PyTorch's order i, f, z, o restricted to the gates present.
// Per step: one GEMM against the pre-packed recurrent matrix R (FGR: a second one against Rg, so
// 13 N^2 multiply-adds per row instead of a 4N x 4N matrix with a zero block) and one fused,
// vectorised loop over the units for all gates (specialised at compile time for the flag sets
// of the registry); the same in backward. The weight gradients of R and Rg are one GEMM each
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
  std::vector<float> packed;
  std::vector<T> wk;  // few rows: op(W) stored (k x n), so every product is a run of axpys
  FixedRight(const T* w_, bool tw_, int64_t m_, int64_t n_, int64_t k_, int64_t ldw_)
      : w(w_), tw(tw_), m(m_), n(n_), k(k_), ldw(ldw_),
        few(m <= kFewRows || (m <= kSmallRows && n * k <= kSmallMatrix)) {
    if (few) {
      wk.resize(k * n);
      for (int64_t r = 0; r < k; ++r)
        for (int64_t j = 0; j < n; ++j) wk[r * n + j] = tw ? w[j * ldw + r] : w[r * ldw + j];
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (cblas_sgemm_pack_get_size && cblas_sgemm_pack && cblas_sgemm_compute) {
        packed.resize(cblas_sgemm_pack_get_size(kBMatrix, m, n, k) / sizeof(float) + 1);
        cblas_sgemm_pack(kRowMajor, kBMatrix, tw ? kTrans : kNoTrans, m, n, k, 1.0f, w, ldw,
                         packed.data());
      }
    }
  }
  void operator()(const T* a, int64_t lda, T beta, T* c, int64_t ldc) const {
    if (few) {
      few_rows(a, lda, beta, c, ldc);
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (!packed.empty()) {
        cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, m, n, k, a, lda, packed.data(), 0,
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
        const T* __restrict w0 = wk.data() + r * n;
        const T* __restrict w1 = w0 + n;
        const T* __restrict w2 = w1 + n;
        const T* __restrict w3 = w2 + n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) ci[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j];
      }
      for (; r < k; ++r) {
        const T ar = ai[r];
        if (ar == T(0)) continue;  // zero inputs add nothing (as reference BLAS skips them)
        const T* __restrict wr = wk.data() + r * n;
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

// xw (K, T, B, G*N) = W x for all steps (one batched GEMM by the caller); bias b (K, G*N);
// r (K, G*N, N); rg (K, 3N, 3N) for FGR, else empty; p (K, P, N) or empty; steps (K,) int64.
// Returns y (K, T+1, B, N) and c (K, T+1, B, N) with y[:, 0] = c[:, 0] = 0, g (K, T+1, B, 3N) =
// [i, f, o] with g[:, 0] = 0 for FGR (else empty), act (K, T, B, G*N) gate activations and
// hc (K, T, B, N) = h(c); everything past a trial's steps is zero.
std::vector<at::Tensor> lstm_forward(const at::Tensor& xw_, const at::Tensor& b_,
                                     const at::Tensor& r_, const at::Tensor& rg_,
                                     const at::Tensor& p_, const at::Tensor& steps_,
                                     int64_t flags) {
  TORCH_CHECK(xw_.device().is_cpu(), "odyssey_cells: CPU tensors only");
  auto xw = xw_.contiguous();
  auto bias = b_.contiguous();
  auto rw = r_.contiguous();
  auto rg = rg_.contiguous();
  auto p = p_.contiguous();
  auto steps = steps_.to(at::kLong).contiguous();
  TORCH_CHECK(xw.dim() == 4 && rw.dim() == 3, "odyssey_cells: expected xw (K, T, B, G*N)");
  const int64_t trials = xw.size(0), t_len = xw.size(1), batch = xw.size(2), gn = xw.size(3),
                n = rw.size(2);
  const bool fgr = flags & kFullGateRecurrence;
  Layout L(flags, n);
  TORCH_CHECK(L.g * n == gn && rw.size(1) == gn && rw.size(0) == trials,
              "odyssey_cells: xw and r do not match the flags' gate count");
  TORCH_CHECK(bias.numel() == trials * gn, "odyssey_cells: bias size does not match xw");
  TORCH_CHECK(p.numel() == trials * L.peepholes() * n, "odyssey_cells: peephole shape");
  TORCH_CHECK(!fgr || (rg.dim() == 3 && rg.size(1) == 3 * n && rg.size(2) == 3 * n),
              "odyssey_cells: FGR needs rg of shape (K, 3N, 3N)");
  TORCH_CHECK(steps.numel() == trials, "odyssey_cells: steps must be (K,)");
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "lstm_forward", [&] {
    using T = scalar_t;
    auto y = at::zeros({trials, t_len + 1, batch, n}, xw.options());
    auto c = at::zeros({trials, t_len + 1, batch, n}, xw.options());
    auto g = fgr ? at::zeros({trials, t_len + 1, batch, 3 * n}, xw.options()) : xw.new_empty({0});
    auto act = at::zeros_like(xw);
    auto hc = at::zeros({trials, t_len, batch, n}, xw.options());
    const int64_t bn = batch * n, np = L.peepholes() * n;
    at::parallel_for(0, trials, 1, [&](int64_t k0, int64_t k1) {
      FlushDenormals ftz;
      std::vector<T> q_buf(batch * gn, T(0)), qg_buf(fgr ? batch * 3 * n : 1, T(0));
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t t_k = steps_of(steps, k, t_len);
        T* Y = y.data_ptr<T>() + k * (t_len + 1) * bn;
        T* C = c.data_ptr<T>() + k * (t_len + 1) * bn;
        T* G = fgr ? g.data_ptr<T>() + k * (t_len + 1) * 3 * bn : nullptr;
        T* A = act.data_ptr<T>() + k * t_len * batch * gn;
        T* H = hc.data_ptr<T>() + k * t_len * bn;
        T* Q = q_buf.data();
        T* QG = qg_buf.data();
        const T* X = xw.data_ptr<T>() + k * t_len * batch * gn;
        const T* BI = bias.data_ptr<T>() + k * gn;
        const T* P = np ? p.data_ptr<T>() + k * np : nullptr;
        const T* RW = rw.data_ptr<T>() + k * gn * n;
        FixedRight<T> rec(RW, true, batch, gn, n, n);  // q = y' R^T
        std::unique_ptr<FixedRight<T>> rec_g;
        if (fgr)
          rec_g = std::make_unique<FixedRight<T>>(rg.data_ptr<T>() + k * 9 * n * n, true, batch,
                                                  3 * n, 3 * n, 3 * n);  // qg = g' Rg^T
        std::fill(q_buf.begin(), q_buf.end(), T(0));
        std::fill(qg_buf.begin(), qg_buf.end(), T(0));
        with_flags(flags, [&](auto fl) {
          for (int64_t t = 0; t < t_k; ++t) {
            if (t > 0) {  // y[0] = g[0] = 0 contribute nothing: q, qg stay zero at t = 0
              rec(Y + t * bn, n, 0, Q, gn);
              if (fgr) (*rec_g)(G + t * 3 * bn, 3 * n, 0, QG, 3 * n);
            }
            lstm_step_forward<T>(fl, L, batch, X + t * batch * gn, BI, Q, QG, A + t * batch * gn,
                                 C + t * bn, C + (t + 1) * bn, H + t * bn, Y + (t + 1) * bn,
                                 G ? G + (t + 1) * 3 * bn : nullptr, P);
          }
        });
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
// zero): returns dxw (K, T, B, G*N), db (K, G*N), dr (K, G*N, N), drg (K, 3N, 3N) for FGR (else
// empty), dp (K, P, N). Steps past a trial's `steps` get zero gradients.
std::vector<at::Tensor> lstm_backward(const at::Tensor& dy_, const at::Tensor& dc_,
                                      const at::Tensor& r_, const at::Tensor& rg_,
                                      const at::Tensor& p_, const at::Tensor& y,
                                      const at::Tensor& g, const at::Tensor& c,
                                      const at::Tensor& act, const at::Tensor& hc,
                                      const at::Tensor& steps_, int64_t flags) {
  auto dye = dy_.numel() ? dy_.contiguous() : dy_;
  auto dce = dc_.numel() ? dc_.contiguous() : dc_;
  auto rw = r_.contiguous();
  auto rg = rg_.contiguous();
  auto p = p_.contiguous();
  auto steps = steps_.to(at::kLong).contiguous();
  const int64_t trials = act.size(0), t_len = act.size(1), batch = act.size(2),
                gn = act.size(3), n = hc.size(3);
  const bool fgr = flags & kFullGateRecurrence;
  Layout L(flags, n);
  TORCH_CHECK(L.g * n == gn, "odyssey_cells: act does not match the flags' gate count");
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "lstm_backward", [&] {
    using T = scalar_t;
    auto da = at::zeros_like(act);
    auto dga = fgr ? at::zeros({trials, t_len, batch, 3 * n}, act.options()) : act.new_empty({0});
    auto dp = at::zeros_like(p);
    auto dbias = at::zeros({trials, gn}, act.options());
    auto dr = at::zeros({trials, gn, n}, act.options());
    auto drg = fgr ? at::zeros({trials, 3 * n, 3 * n}, act.options()) : act.new_empty({0});
    auto zero = at::zeros({n}, act.options());  // stands in for an absent dy or dc
    const int64_t bn = batch * n, np = L.peepholes() * n;
    const int64_t sdy = dye.numel() ? n : 0, sdc = dce.numel() ? n : 0;
    at::parallel_for(0, trials, 1, [&](int64_t k0, int64_t k1) {
      FlushDenormals ftz;
      std::vector<T> dyn_buf(bn), dgn_buf(fgr ? 3 * bn : 1), carry_buf(bn);
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t t_k = steps_of(steps, k, t_len);
        std::fill(dyn_buf.begin(), dyn_buf.end(), T(0));  // dy_t from step t+1
        std::fill(dgn_buf.begin(), dgn_buf.end(), T(0));
        std::fill(carry_buf.begin(), carry_buf.end(), T(0));
        T* DYN = dyn_buf.data();
        T* DGN = dgn_buf.data();
        const T* DYE = sdy ? dye.data_ptr<T>() + k * t_len * bn : zero.data_ptr<T>();
        const T* DCE = sdc ? dce.data_ptr<T>() + k * t_len * bn : zero.data_ptr<T>();
        const T* P = np ? p.data_ptr<T>() + k * np : nullptr;
        T* DP = np ? dp.data_ptr<T>() + k * np : nullptr;
        const T* C = c.data_ptr<T>() + k * (t_len + 1) * bn;
        const T* A = act.data_ptr<T>() + k * t_len * batch * gn;
        const T* H = hc.data_ptr<T>() + k * t_len * bn;
        const T* Y = y.data_ptr<T>() + k * (t_len + 1) * bn;
        const T* G = fgr ? g.data_ptr<T>() + k * (t_len + 1) * 3 * bn : nullptr;
        T* DA = da.data_ptr<T>() + k * t_len * batch * gn;
        T* DGA = fgr ? dga.data_ptr<T>() + k * t_len * 3 * bn : nullptr;
        T* DB = dbias.data_ptr<T>() + k * gn;
        const T* RW = rw.data_ptr<T>() + k * gn * n;
        const T* RG = fgr ? rg.data_ptr<T>() + k * 9 * n * n : nullptr;
        FixedRight<T> rec(RW, false, batch, n, gn, n);  // dy' = da R
        std::unique_ptr<FixedRight<T>> rec_g;
        if (fgr)
          rec_g = std::make_unique<FixedRight<T>>(RG, false, batch, 3 * n, 3 * n,
                                                  3 * n);  // dg' = dga Rg
        with_flags(flags, [&](auto fl) {
          for (int64_t t = t_k - 1; t >= 0; --t) {
            lstm_step_backward<T>(fl, L, batch, A + t * batch * gn, C + t * bn, C + (t + 1) * bn,
                                  H + t * bn, DYE + t * batch * sdy, sdy, DCE + t * batch * sdc,
                                  sdc, DYN, DGN, carry_buf.data(), DA + t * batch * gn,
                                  DGA ? DGA + t * 3 * bn : nullptr, DB, P, DP);
            if (t > 0) {
              rec(DA + t * batch * gn, gn, 0, DYN, n);
              if (fgr) (*rec_g)(DGA + t * 3 * bn, 3 * n, 0, DGN, 3 * n);
            }
          }
        });
        // dR = sum_t da_t^T y_{t-1}, dRg = sum_t dga_t^T g_{t-1}: one GEMM each over all steps
        gemm<T>(true, false, gn, n, t_k * batch, 1, DA, gn, Y, n, 0,
                dr.data_ptr<T>() + k * gn * n, n);
        if (fgr)
          gemm<T>(true, false, 3 * n, 3 * n, t_k * batch, 1, DGA, 3 * n, G, 3 * n, 0,
                  drg.data_ptr<T>() + k * 9 * n * n, 3 * n);
      }
    });
    out = {da, dbias, dr, drg, dp};
  });
  return out;
}

// ------------------------------------------------------------------------------------ GRU

// xw (K, T, B, 3N) = W x + b_ih; r (K, 3N, N); b_hh (K, 3N); steps (K,). Returns h
// (K, T+1, B, N) with h[:, 0] = 0 and the saved activations act (K, T, B, 4N) = [r, u, n, hn];
// zero past a trial's steps.
std::vector<at::Tensor> gru_forward(const at::Tensor& xw_, const at::Tensor& r_,
                                    const at::Tensor& bhh_, const at::Tensor& steps_) {
  TORCH_CHECK(xw_.device().is_cpu(), "odyssey_cells: CPU tensors only");
  auto xw = xw_.contiguous();
  auto rw = r_.contiguous();
  auto bhh = bhh_.contiguous();
  auto steps = steps_.to(at::kLong).contiguous();
  TORCH_CHECK(xw.dim() == 4 && rw.dim() == 3, "odyssey_cells: expected xw (K, T, B, 3N)");
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "gru_forward", [&] {
    using T = scalar_t;
    const int64_t trials = xw.size(0), t_len = xw.size(1), batch = xw.size(2), n = rw.size(2);
    auto h = at::zeros({trials, t_len + 1, batch, n}, xw.options());
    auto act = at::zeros({trials, t_len, batch, 4 * n}, xw.options());
    at::parallel_for(0, trials, 1, [&](int64_t k0, int64_t k1) {
      FlushDenormals ftz;
      std::vector<T> hh_buf(batch * 3 * n);
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t t_k = steps_of(steps, k, t_len);
        T* Hs = h.data_ptr<T>() + k * (t_len + 1) * batch * n;
        T* Ac = act.data_ptr<T>() + k * t_len * batch * 4 * n;
        T* HH = hh_buf.data();
        const T* X = xw.data_ptr<T>() + k * t_len * batch * 3 * n;
        const T* R = rw.data_ptr<T>() + k * 3 * n * n;
        const T* BH = bhh.data_ptr<T>() + k * 3 * n;
        FixedRight<T> rec(R, true, batch, 3 * n, n, n);  // hh = h' R^T + b_hh
        for (int64_t t = 0; t < t_k; ++t) {
          for (int64_t b = 0; b < batch; ++b) std::memcpy(HH + b * 3 * n, BH, 3 * n * sizeof(T));
          if (t > 0) rec(Hs + t * batch * n, n, 1, HH, 3 * n);
          for (int64_t b = 0; b < batch; ++b) {
            const T* __restrict x = X + (t * batch + b) * 3 * n;
            const T* __restrict q = HH + b * 3 * n;
            const T* __restrict h0 = Hs + (t * batch + b) * n;
            T* __restrict h1 = Hs + ((t + 1) * batch + b) * n;
            T* __restrict a = Ac + (t * batch + b) * 4 * n;
            _Pragma("omp simd")  // (a #pragma cannot stand inside the dispatch macro)
            for (int64_t j = 0; j < n; ++j) {
              T r = sigm(x[j] + q[j]);
              T u = sigm(x[n + j] + q[n + j]);
              T hn = q[2 * n + j];
              T nn = tanh_(x[2 * n + j] + r * hn);
              a[j] = r;
              a[n + j] = u;
              a[2 * n + j] = nn;
              a[3 * n + j] = hn;
              h1[j] = (T(1) - u) * nn + u * h0[j];
            }
          }
        }
      }
    });
    out = {h, act};
  });
  return out;
}

// Gradients given dh (K, T, B, N): returns dxw (K, T, B, 3N), dr (K, 3N, N), dbhh (K, 3N).
std::vector<at::Tensor> gru_backward(const at::Tensor& dh_, const at::Tensor& r_,
                                     const at::Tensor& h, const at::Tensor& act,
                                     const at::Tensor& steps_) {
  auto dh = dh_.contiguous();
  auto rw = r_.contiguous();
  auto steps = steps_.to(at::kLong).contiguous();
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(dh.scalar_type(), "gru_backward", [&] {
    using T = scalar_t;
    const int64_t trials = act.size(0), t_len = act.size(1), batch = act.size(2),
                  n = rw.size(2);
    auto dx = at::zeros({trials, t_len, batch, 3 * n}, dh.options());
    auto dhh = at::zeros({trials, t_len, batch, 3 * n}, dh.options());
    auto dr = at::zeros({trials, 3 * n, n}, dh.options());
    at::parallel_for(0, trials, 1, [&](int64_t k0, int64_t k1) {
      FlushDenormals ftz;
      std::vector<T> carry(batch * n);
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t t_k = steps_of(steps, k, t_len);
        std::fill(carry.begin(), carry.end(), T(0));
        T* DX = dx.data_ptr<T>() + k * t_len * batch * 3 * n;
        T* DHH = dhh.data_ptr<T>() + k * t_len * batch * 3 * n;
        T* CA = carry.data();
        const T* DH = dh.data_ptr<T>() + k * t_len * batch * n;
        const T* Hs = h.data_ptr<T>() + k * (t_len + 1) * batch * n;
        const T* Ac = act.data_ptr<T>() + k * t_len * batch * 4 * n;
        const T* R = rw.data_ptr<T>() + k * 3 * n * n;
        FixedRight<T> rec(R, false, batch, n, 3 * n, n);  // carry += dhh R
        for (int64_t t = t_k - 1; t >= 0; --t) {
          for (int64_t b = 0; b < batch; ++b) {
            const T* __restrict a = Ac + (t * batch + b) * 4 * n;
            const T* __restrict h0 = Hs + (t * batch + b) * n;
            const T* __restrict dhe = DH + (t * batch + b) * n;
            T* __restrict cr = CA + b * n;
            T* __restrict dxr = DX + (t * batch + b) * 3 * n;
            T* __restrict dq = DHH + (t * batch + b) * 3 * n;
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
            rec(DHH + t * batch * 3 * n, 3 * n, 1, CA, n);
        }
        gemm<T>(true, false, 3 * n, n, t_k * batch, 1, DHH, 3 * n, Hs, n, 0,
                dr.data_ptr<T>() + k * 3 * n * n, n);
      }
    });
    out = {dx, dr, dhh.sum({1, 2})};
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(odyssey_cells, m) {
  m.def("lstm_forward(Tensor xw, Tensor b, Tensor r, Tensor rg, Tensor p, Tensor steps, "
        "int flags) -> Tensor[]", &lstm_forward);
  m.def("lstm_backward(Tensor dy, Tensor dc, Tensor r, Tensor rg, Tensor p, Tensor y, Tensor g, "
        "Tensor c, Tensor act, Tensor hc, Tensor steps, int flags) -> Tensor[]", &lstm_backward);
  m.def("gru_forward(Tensor xw, Tensor r, Tensor bhh, Tensor steps) -> Tensor[]", &gru_forward);
  m.def("gru_backward(Tensor dh, Tensor r, Tensor h, Tensor act, Tensor steps) -> Tensor[]",
        &gru_backward);
}
