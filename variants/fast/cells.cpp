// Whole-sequence LSTM-variant and GRU kernels, forward and hand-written backward (CPU).
//
// The generic LSTM of Greff et al. 2017 (section II), one direction, driven by flag bits:
//   a_t = xw_t + S_{t-1} Rc^T          xw = W x + b for all steps (one GEMM, done by the caller)
//   S   = [y]  or, for FGR, [y, i, f, o] (so R and the nine R_ab are one GEMM, K = N or 4N)
//   i = s(a_i + p_i c'), f = s(a_f + p_f c') | 1 - i (CIFG) | 1, z = g(a_z), c = z i + c' f,
//   o = s(a_o + p_o c), y = h(c) o;  missing gates are 1, g/h are tanh or identity.
// Gate blocks are stored in PyTorch's order i, f, z, o restricted to the gates present.
// Per step: one GEMM against the recurrent matrix and one pass of vectorisable loops; the weight
// gradient of Rc is one GEMM over all steps after the backward loop.
//
// GRU (torch.nn.GRU form, reset after the product): h_t = (1-u) n + u h', with
//   [hr, hu, hn] = h' R^T + b_hh, r = s(xr + hr), u = s(xu + hu), n = tanh(xn + r hn).
//
// Exposed as torch.ops.odyssey_cells.{lstm_forward, lstm_backward, gru_forward, gru_backward}.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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
  kInputGate = 1, kForgetGate = 2, kOutputGate = 4, kTanhIn = 8, kTanhOut = 16,
  kPeepholes = 32, kCoupled = 64, kFullGateRecurrence = 128,
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

// Row-major C (m x n) = op(A) (m x k) op(W) (k x n) + beta C for a fixed W and many A: with MKL,
// W is packed once; otherwise a plain gemm per call.
template <typename T>
struct FixedRight {
  enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112, kBMatrix = 162, kPacked = 151 };
  const T* w;
  bool tw;
  int64_t m, n, k, ldw;
  std::vector<float> packed;
  FixedRight(const T* w_, bool tw_, int64_t m_, int64_t n_, int64_t k_, int64_t ldw_)
      : w(w_), tw(tw_), m(m_), n(n_), k(k_), ldw(ldw_) {
    if constexpr (std::is_same_v<T, float>) {
      if (cblas_sgemm_pack_get_size && cblas_sgemm_pack && cblas_sgemm_compute && m > 0) {
        packed.resize(cblas_sgemm_pack_get_size(kBMatrix, m, n, k) / sizeof(float) + 1);
        cblas_sgemm_pack(kRowMajor, kBMatrix, tw ? kTrans : kNoTrans, m, n, k, 1.0f, w, ldw,
                         packed.data());
      }
    }
  }
  void operator()(const T* a, int64_t lda, T beta, T* c, int64_t ldc) const {
    if constexpr (std::is_same_v<T, float>) {
      if (!packed.empty()) {
        cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, m, n, k, a, lda, packed.data(), 0,
                            beta, c, ldc);
        return;
      }
    }
    gemm<T>(false, tw, m, n, k, T(1), a, lda, w, ldw, beta, c, ldc);
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

struct Layout {
  int64_t n, g, k;                  // hidden size, gate blocks, state width (N or 4N)
  int64_t oi = -1, of = -1, oz = -1, oo = -1;  // column offsets of the gate blocks in G*N
  int64_t pi = -1, pf = -1, po = -1;            // peephole rows
  bool coupled, tanh_in, tanh_out, fgr;
  Layout(int64_t flags, int64_t n_) : n(n_) {
    int64_t col = 0, row = 0;
    const bool peep = flags & kPeepholes;
    coupled = flags & kCoupled;
    tanh_in = flags & kTanhIn;
    tanh_out = flags & kTanhOut;
    fgr = flags & kFullGateRecurrence;
    if (flags & kInputGate) { oi = col++ * n; if (peep) pi = row++; }
    if ((flags & kForgetGate) && !coupled) { of = col++ * n; if (peep) pf = row++; }
    oz = col++ * n;
    if (flags & kOutputGate) { oo = col++ * n; if (peep) po = row++; }
    g = col;
    k = fgr ? 4 * n : n;
  }
};

template <typename T>
void lstm_step_forward(const Layout& L, int64_t batch, T* act, const T* cp, T* cn, T* hc, T* s,
                       const T* p) {
  const int64_t n = L.n, gn = L.g * n;
  const T* p_i = L.pi >= 0 ? p + L.pi * n : nullptr;
  const T* p_f = L.pf >= 0 ? p + L.pf * n : nullptr;
  const T* p_o = L.po >= 0 ? p + L.po * n : nullptr;
  for (int64_t b = 0; b < batch; ++b) {
    T* a = act + b * gn;
    const T* c0 = cp + b * n;
    T* c1 = cn + b * n;
    T* h = hc + b * n;
    T* y = s + b * L.k;
    T* i = L.oi >= 0 ? a + L.oi : nullptr;
    T* f = L.of >= 0 ? a + L.of : nullptr;
    T* z = a + L.oz;
    T* o = L.oo >= 0 ? a + L.oo : nullptr;
    if (i) {
      if (p_i) for (int64_t j = 0; j < n; ++j) i[j] = sigm(i[j] + p_i[j] * c0[j]);
      else for (int64_t j = 0; j < n; ++j) i[j] = sigm(i[j]);
    }
    if (f) {
      if (p_f) for (int64_t j = 0; j < n; ++j) f[j] = sigm(f[j] + p_f[j] * c0[j]);
      else for (int64_t j = 0; j < n; ++j) f[j] = sigm(f[j]);
    }
    if (L.tanh_in) for (int64_t j = 0; j < n; ++j) z[j] = tanh_(z[j]);
    if (L.coupled) for (int64_t j = 0; j < n; ++j) c1[j] = z[j] * i[j] + c0[j] * (T(1) - i[j]);
    else if (i && f) for (int64_t j = 0; j < n; ++j) c1[j] = z[j] * i[j] + c0[j] * f[j];
    else if (i) for (int64_t j = 0; j < n; ++j) c1[j] = z[j] * i[j] + c0[j];
    else if (f) for (int64_t j = 0; j < n; ++j) c1[j] = z[j] + c0[j] * f[j];
    else for (int64_t j = 0; j < n; ++j) c1[j] = z[j] + c0[j];
    if (L.tanh_out) for (int64_t j = 0; j < n; ++j) h[j] = tanh_(c1[j]);
    else for (int64_t j = 0; j < n; ++j) h[j] = c1[j];
    if (o) {
      if (p_o) for (int64_t j = 0; j < n; ++j) o[j] = sigm(o[j] + p_o[j] * c1[j]);
      else for (int64_t j = 0; j < n; ++j) o[j] = sigm(o[j]);
      for (int64_t j = 0; j < n; ++j) y[j] = h[j] * o[j];
    } else {
      for (int64_t j = 0; j < n; ++j) y[j] = h[j];
    }
    if (L.fgr) {  // S = [y, i, f, o]
      std::memcpy(y + n, i, n * sizeof(T));
      std::memcpy(y + 2 * n, f, n * sizeof(T));
      std::memcpy(y + 3 * n, o, n * sizeof(T));
    }
  }
}

// xw (T, B, G*N) pre-activations without the recurrent part; rc (G*N, K); p (P, N) or empty.
// Returns s (T+1, B, K) with s[0] = 0, c (T+1, B, N) with c[0] = 0, act (T, B, G*N) gate
// activations, hc (T, B, N) = h(c).
std::vector<at::Tensor> lstm_forward(const at::Tensor& xw_, const at::Tensor& rc_,
                                     const at::Tensor& p_, int64_t flags) {
  TORCH_CHECK(xw_.device().is_cpu(), "odyssey_cells: CPU tensors only");
  auto xw = xw_.contiguous();
  auto rc = rc_.contiguous();
  auto p = p_.contiguous();
  const int64_t t_len = xw.size(0), batch = xw.size(1);
  const int64_t hidden = p.numel() ? p.size(1) : -1;
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "lstm_forward", [&] {
    FlushDenormals ftz;
    const int64_t gn = xw.size(2);
    const int64_t k = rc.size(1);
    const int64_t nh = (flags & kFullGateRecurrence) ? k / 4 : k;
    TORCH_CHECK(hidden < 0 || hidden == nh, "odyssey_cells: peephole size mismatch");
    Layout L(flags, nh);
    TORCH_CHECK(L.g * nh == gn && L.k == k, "odyssey_cells: weight shapes do not match flags");
    auto s = at::zeros({t_len + 1, batch, k}, xw.options());
    auto c = at::zeros({t_len + 1, batch, nh}, xw.options());
    auto act = xw.clone();
    auto hc = at::empty({t_len, batch, nh}, xw.options());
    scalar_t* S = s.data_ptr<scalar_t>();
    scalar_t* C = c.data_ptr<scalar_t>();
    scalar_t* A = act.data_ptr<scalar_t>();
    scalar_t* H = hc.data_ptr<scalar_t>();
    const scalar_t* R = rc.data_ptr<scalar_t>();
    const scalar_t* P = p.numel() ? p.data_ptr<scalar_t>() : nullptr;
    FixedRight<scalar_t> rec(R, true, batch, gn, k, k);  // a += S Rc^T
    for (int64_t t = 0; t < t_len; ++t) {
      scalar_t* a = A + t * batch * gn;
      if (t > 0)  // s[0] = 0 contributes nothing
        rec(S + t * batch * k, k, 1, a, gn);
      lstm_step_forward<scalar_t>(L, batch, a, C + t * batch * nh, C + (t + 1) * batch * nh,
                                  H + t * batch * nh, S + (t + 1) * batch * k, P);
    }
    out = {s, c, act, hc};
  });
  return out;
}

template <typename T>
void lstm_step_backward(const Layout& L, int64_t batch, const T* act, const T* cp, const T* cn,
                        const T* hc, const T* dy_ext, const T* dc_ext, const T* ds, T* dcarry,
                        T* da, const T* p, T* dp) {
  const int64_t n = L.n, gn = L.g * n;
  const T* p_i = L.pi >= 0 ? p + L.pi * n : nullptr;
  const T* p_f = L.pf >= 0 ? p + L.pf * n : nullptr;
  const T* p_o = L.po >= 0 ? p + L.po * n : nullptr;
  T* dp_i = L.pi >= 0 ? dp + L.pi * n : nullptr;
  T* dp_f = L.pf >= 0 ? dp + L.pf * n : nullptr;
  T* dp_o = L.po >= 0 ? dp + L.po * n : nullptr;
  for (int64_t b = 0; b < batch; ++b) {
    const T* a = act + b * gn;
    const T* i = L.oi >= 0 ? a + L.oi : nullptr;
    const T* f = L.of >= 0 ? a + L.of : nullptr;
    const T* z = a + L.oz;
    const T* o = L.oo >= 0 ? a + L.oo : nullptr;
    const T* c0 = cp + b * n;
    const T* c1 = cn + b * n;
    const T* h = hc + b * n;
    const T* dye = dy_ext + b * n;
    const T* dce = dc_ext ? dc_ext + b * n : nullptr;
    const T* dsr = ds ? ds + b * L.k : nullptr;  // gradient w.r.t. S_t from step t+1
    T* dcr = dcarry + b * n;
    T* d = da + b * gn;
    T* dai = i ? d + L.oi : nullptr;
    T* daf = f ? d + L.of : nullptr;
    T* daz = d + L.oz;
    T* dao = o ? d + L.oo : nullptr;
    for (int64_t j = 0; j < n; ++j) {
      T dy = dye[j] + (dsr ? dsr[j] : T(0));
      T dhc = dy;
      T dao_j = T(0);
      if (o) {
        T do_ = dy * h[j] + (L.fgr && dsr ? dsr[3 * n + j] : T(0));
        dao_j = do_ * o[j] * (T(1) - o[j]);
        dao[j] = dao_j;
        dhc = dy * o[j];
      }
      T dc = dcr[j] + (dce ? dce[j] : T(0)) +
             dhc * (L.tanh_out ? T(1) - h[j] * h[j] : T(1)) + (p_o ? dao_j * p_o[j] : T(0));
      const T ii = i ? i[j] : T(1);
      daz[j] = dc * ii * (L.tanh_in ? T(1) - z[j] * z[j] : T(1));
      T dai_j = T(0), daf_j = T(0), fe = T(1);
      if (i) {
        T di = dc * z[j] + (L.fgr && dsr ? dsr[n + j] : T(0));
        if (L.coupled) { di -= dc * c0[j]; fe = T(1) - ii; }
        dai_j = di * ii * (T(1) - ii);
        dai[j] = dai_j;
      }
      if (f) {
        T df = dc * c0[j] + (L.fgr && dsr ? dsr[2 * n + j] : T(0));
        daf_j = df * f[j] * (T(1) - f[j]);
        daf[j] = daf_j;
        fe = f[j];
      }
      dcr[j] = dc * fe + (p_i ? dai_j * p_i[j] : T(0)) + (p_f ? daf_j * p_f[j] : T(0));
      if (dp_i) dp_i[j] += dai_j * c0[j];
      if (dp_f) dp_f[j] += daf_j * c0[j];
      if (dp_o) dp_o[j] += dao_j * c1[j];
    }
  }
}

// Gradients of lstm_forward given dy (T, B, N) and dc (T, B, N) (dc may be empty):
// returns dxw (T, B, G*N), drc (G*N, K), dp (P, N).
std::vector<at::Tensor> lstm_backward(const at::Tensor& dy_, const at::Tensor& dc_,
                                      const at::Tensor& rc_, const at::Tensor& p_,
                                      const at::Tensor& s, const at::Tensor& c,
                                      const at::Tensor& act, const at::Tensor& hc, int64_t flags) {
  auto dy = dy_.contiguous();
  auto dce = dc_.numel() ? dc_.contiguous() : dc_;
  auto rc = rc_.contiguous();
  auto p = p_.contiguous();
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "lstm_backward", [&] {
    FlushDenormals ftz;
    const int64_t t_len = act.size(0), batch = act.size(1), gn = act.size(2), k = rc.size(1);
    const int64_t nh = hc.size(2);
    Layout L(flags, nh);
    auto da = at::empty_like(act);
    auto dp = at::zeros_like(p);
    auto ds = at::zeros({batch, k}, dy.options());
    auto dcarry = at::zeros({batch, nh}, dy.options());
    const scalar_t* R = rc.data_ptr<scalar_t>();
    const scalar_t* P = p.numel() ? p.data_ptr<scalar_t>() : nullptr;
    scalar_t* DP = p.numel() ? dp.data_ptr<scalar_t>() : nullptr;
    const scalar_t* S = s.data_ptr<scalar_t>();
    const scalar_t* C = c.data_ptr<scalar_t>();
    const scalar_t* A = act.data_ptr<scalar_t>();
    const scalar_t* H = hc.data_ptr<scalar_t>();
    const scalar_t* DY = dy.data_ptr<scalar_t>();
    const scalar_t* DC = dce.numel() ? dce.data_ptr<scalar_t>() : nullptr;
    scalar_t* DA = da.data_ptr<scalar_t>();
    scalar_t* DS = ds.data_ptr<scalar_t>();
    FixedRight<scalar_t> rec(R, false, batch, k, gn, k);  // dS = da Rc
    for (int64_t t = t_len - 1; t >= 0; --t) {
      lstm_step_backward<scalar_t>(
          L, batch, A + t * batch * gn, C + t * batch * nh, C + (t + 1) * batch * nh,
          H + t * batch * nh, DY + t * batch * nh, DC ? DC + t * batch * nh : nullptr,
          t == t_len - 1 ? nullptr : DS, dcarry.data_ptr<scalar_t>(), DA + t * batch * gn, P, DP);
      if (t > 0)  // dS_{t-1} = da_t Rc
        rec(DA + t * batch * gn, gn, 0, DS, k);
    }
    // dRc = sum_t da_t^T S_{t-1}: one GEMM over all steps
    auto drc = at::empty({gn, k}, dy.options());
    gemm<scalar_t>(true, false, gn, k, t_len * batch, 1, DA, gn, S, k, 0,
                   drc.data_ptr<scalar_t>(), k);
    out = {da, drc, dp};
  });
  return out;
}

// ------------------------------------------------------------------------------------ GRU

// xw (T, B, 3N) = W x + b_ih; r (3N, N); b_hh (3N). Returns h (T+1, B, N) with h[0] = 0 and the
// saved activations act (T, B, 4N) = [r, u, n, hn].
std::vector<at::Tensor> gru_forward(const at::Tensor& xw_, const at::Tensor& r_,
                                    const at::Tensor& bhh_) {
  TORCH_CHECK(xw_.device().is_cpu(), "odyssey_cells: CPU tensors only");
  auto xw = xw_.contiguous();
  auto rw = r_.contiguous();
  auto bhh = bhh_.contiguous();
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "gru_forward", [&] {
    FlushDenormals ftz;
    using T = scalar_t;
    const int64_t t_len = xw.size(0), batch = xw.size(1), n = rw.size(1);
    auto h = at::zeros({t_len + 1, batch, n}, xw.options());
    auto act = at::empty({t_len, batch, 4 * n}, xw.options());
    auto hh = at::empty({batch, 3 * n}, xw.options());
    T* Hs = h.data_ptr<T>();
    T* Ac = act.data_ptr<T>();
    T* HH = hh.data_ptr<T>();
    const T* X = xw.data_ptr<T>();
    const T* R = rw.data_ptr<T>();
    const T* BH = bhh.data_ptr<T>();
    FixedRight<T> rec(R, true, batch, 3 * n, n, n);  // hh = h' R^T + b_hh
    for (int64_t t = 0; t < t_len; ++t) {
      for (int64_t b = 0; b < batch; ++b) std::memcpy(HH + b * 3 * n, BH, 3 * n * sizeof(T));
      if (t > 0) rec(Hs + t * batch * n, n, 1, HH, 3 * n);
      for (int64_t b = 0; b < batch; ++b) {
        const T* x = X + (t * batch + b) * 3 * n;
        const T* q = HH + b * 3 * n;
        const T* h0 = Hs + (t * batch + b) * n;
        T* h1 = Hs + ((t + 1) * batch + b) * n;
        T* a = Ac + (t * batch + b) * 4 * n;
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
    out = {h, act};
  });
  return out;
}

// Gradients given dh (T, B, N): returns dxw (T, B, 3N), dr (3N, N), dbhh (3N).
std::vector<at::Tensor> gru_backward(const at::Tensor& dh_, const at::Tensor& r_,
                                     const at::Tensor& h, const at::Tensor& act) {
  auto dh = dh_.contiguous();
  auto rw = r_.contiguous();
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(dh.scalar_type(), "gru_backward", [&] {
    FlushDenormals ftz;
    using T = scalar_t;
    const int64_t t_len = act.size(0), batch = act.size(1), n = rw.size(1);
    auto dx = at::empty({t_len, batch, 3 * n}, dh.options());
    auto dhh = at::empty({t_len, batch, 3 * n}, dh.options());
    auto carry = at::zeros({batch, n}, dh.options());
    T* DX = dx.data_ptr<T>();
    T* DHH = dhh.data_ptr<T>();
    T* CA = carry.data_ptr<T>();
    const T* DH = dh.data_ptr<T>();
    const T* Hs = h.data_ptr<T>();
    const T* Ac = act.data_ptr<T>();
    const T* R = rw.data_ptr<T>();
    FixedRight<T> rec(R, false, batch, n, 3 * n, n);  // carry += dhh R
    for (int64_t t = t_len - 1; t >= 0; --t) {
      for (int64_t b = 0; b < batch; ++b) {
        const T* a = Ac + (t * batch + b) * 4 * n;
        const T* h0 = Hs + (t * batch + b) * n;
        const T* dhe = DH + (t * batch + b) * n;
        T* cr = CA + b * n;
        T* dxr = DX + (t * batch + b) * 3 * n;
        T* dq = DHH + (t * batch + b) * 3 * n;
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
    auto dr = at::empty({3 * n, n}, dh.options());
    gemm<T>(true, false, 3 * n, n, t_len * batch, 1, DHH, 3 * n, Hs, n, 0, dr.data_ptr<T>(), n);
    out = {dx, dr, dhh.sum({0, 1})};
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(odyssey_cells, m) {
  m.def("lstm_forward(Tensor xw, Tensor rc, Tensor p, int flags) -> Tensor[]", &lstm_forward);
  m.def("lstm_backward(Tensor dy, Tensor dc, Tensor rc, Tensor p, Tensor s, Tensor c, "
        "Tensor act, Tensor hc, int flags) -> Tensor[]", &lstm_backward);
  m.def("gru_forward(Tensor xw, Tensor r, Tensor bhh) -> Tensor[]", &gru_forward);
  m.def("gru_backward(Tensor dh, Tensor r, Tensor h, Tensor act) -> Tensor[]", &gru_backward);
}
