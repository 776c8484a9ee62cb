// Group-wise int4 weights × per-token int8 activations, AVX2 (+FMA) with int32 accumulation.
//
// Weight format (see slimvl/precision/int4_math.py): row n of W (N, K) is s_row[n] * m[n, g] * (u - 8)
// with 4-bit codes u in [0, 15], one 4-bit multiplier m in [1, 15] per group of 32 along K and one fp32
// row scale. Codes are packed 16 bytes per group: byte j holds element j (low nibble) and element
// 16 + j (high nibble). Because every group scale is an integer multiple of the row scale, a whole row
// accumulates in int32: sum_g m_g * sum_{k in g} x_k * (u_k - 8), scaled once at the end.
//
// Activations: each row is quantized symmetrically to int8 (absmax / 127) and stored offset by 128 as
// uint8, the unsigned operand of vpmaddubsw; the offset's contribution, 128 * sum_k m_g (u_k - 8), is a
// per-row constant of the weight (`offsets`, computed at packing). Products and their pair sums stay
// far from int16 saturation (255 * 8 * 2 * 2 = 8160 per lane before the multiplier).
//
// Layout: groups come in blocks of 16 (512 weights); within a block, 32-byte "pair" j holds the codes of
// group j then of group 8 + j, so one 32-byte load serves two groups, and the 16 multipliers of the block,
// widened to int16, hold group j's in lane 0 and group 8 + j's in lane 1 at the same position: one
// in-lane byte shuffle broadcasts both. Activations are laid out to match the nibbles:
// [g_j 0..15 | g_8+j 0..15 | g_j 16..31 | g_8+j 16..31]. Groups after the last whole block keep their
// natural order and run in scalar code. The codes' −8 is applied once per row: `sums` holds each whole
// block group's sum of activation codes, and the row's dot loses 8 × sum_g m_g · sums_g (one vpmaddwd per
// block of 16 groups).

#include <torch/extension.h>
#include <ATen/Parallel.h>  // built with -fopenmp: at::parallel_for then uses PyTorch's thread pool
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kGroup = 32;
constexpr int64_t kRowTile = 4;     // activation rows sharing one unpacked weight pair
constexpr int64_t kColBlock = 32;   // weight rows kept hot in cache across the activation tiles

inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// 32 floats times `inv`, rounded to nearest even, as 32 int8 in order.
inline __m256i round_to_int8(const float* x, __m256 inv) {
  __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), inv));
  __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), inv));
  __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), inv));
  __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), inv));
  __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
  return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

inline float row_absmax(const float* x, int64_t k) {
  __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float best = 0.f;
  for (float v : lanes) best = std::max(best, v);
  for (; i < k; ++i) best = std::max(best, std::fabs(x[i]));
  return best;
}

constexpr int64_t kBlock = 16;  // groups per block

inline int32_t byte_sum(__m256i v) {  // the sum of 32 unsigned bytes
  __m256i quads = _mm256_sad_epu8(v, _mm256_setzero_si256());
  __m128i s = _mm_add_epi64(_mm256_castsi256_si128(quads), _mm256_extracti128_si256(quads, 1));
  return static_cast<int32_t>(_mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1));
}

// Row `x` (K floats) -> codes in the block layout (K bytes, uint8 = int8 + 128), each group's sum of
// codes (K / 32 int16, natural order, whole blocks only) and the row's scale.
float quantize_row(const float* x, int64_t k, uint8_t* out, int16_t* sums) {
  float absmax = row_absmax(x, k);
  __m256 inv = _mm256_set1_ps(absmax > 0.f ? 127.f / absmax : 0.f);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  int64_t groups = k / kGroup, blocks = groups / kBlock;
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * kBlock * kGroup;
    uint8_t* ob = out + b * kBlock * kGroup;
    for (int64_t j = 0; j < kBlock / 2; ++j) {
      __m256i g0 = _mm256_xor_si256(round_to_int8(xb + j * kGroup, inv), flip);
      __m256i g1 = _mm256_xor_si256(round_to_int8(xb + (j + kBlock / 2) * kGroup, inv), flip);
      __m256i first = _mm256_permute2x128_si256(g0, g1, 0x20);
      __m256i second = _mm256_permute2x128_si256(g0, g1, 0x31);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ob + j * 64), first);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ob + j * 64 + 32), second);
      sums[b * kBlock + j] = static_cast<int16_t>(byte_sum(g0));
      sums[b * kBlock + kBlock / 2 + j] = static_cast<int16_t>(byte_sum(g1));
    }
  }
  for (int64_t g = blocks * kBlock; g < groups; ++g) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + g * kGroup),
                        _mm256_xor_si256(round_to_int8(x + g * kGroup, inv), flip));
  }
  return absmax / 127.f;
}

// int32 dot of `rows` activation rows (block layout, stride k; their group sums, stride k / 32) with one
// packed weight row, offset not yet removed.
template <int64_t Rows>
inline void dot_rows(const uint8_t* act, const int16_t* sums, int64_t k, const uint8_t* codes,
                     const uint8_t* mult, int32_t* out) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  __m256i acc[Rows], corr[Rows];
  for (int64_t r = 0; r < Rows; ++r) acc[r] = corr[r] = _mm256_setzero_si256();
  int64_t groups = k / kGroup, blocks = groups / kBlock;
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i mults = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mult + b * kBlock)));
    const uint8_t* cb = codes + b * kBlock * 16;
    for (int64_t r = 0; r < Rows; ++r) {
      __m256i group_sums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + r * (k / kGroup) + b * kBlock));
      corr[r] = _mm256_add_epi32(corr[r], _mm256_madd_epi16(group_sums, mults));
    }
#pragma GCC unroll 8
    for (int64_t j = 0; j < kBlock / 2; ++j) {
      __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cb + j * 32));
      __m256i lo = _mm256_and_si256(packed, low);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
      const char i0 = static_cast<char>(2 * j), i1 = static_cast<char>(2 * j + 1);
      __m256i pick = _mm256_setr_epi8(i0, i1, i0, i1, i0, i1, i0, i1, i0, i1, i0, i1, i0, i1, i0, i1,
                                      i0, i1, i0, i1, i0, i1, i0, i1, i0, i1, i0, i1, i0, i1, i0, i1);
      __m256i m = _mm256_shuffle_epi8(mults, pick);
      for (int64_t r = 0; r < Rows; ++r) {
        const uint8_t* a = act + r * k + b * kBlock * kGroup + j * 64;
        __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
        __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 32));
        __m256i s = _mm256_add_epi16(_mm256_maddubs_epi16(xa, lo), _mm256_maddubs_epi16(xb, hi));
        acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(s, m));
      }
    }
  }
  for (int64_t r = 0; r < Rows; ++r) out[r] = hsum_epi32(acc[r]) - 8 * hsum_epi32(corr[r]);
  for (int64_t g = blocks * kBlock; g < groups; ++g) {  // natural order after the last whole block
    const uint8_t* c = codes + g * 16;
    for (int64_t r = 0; r < Rows; ++r) {
      const uint8_t* a = act + r * k + g * kGroup;
      int32_t s = 0;
      for (int j = 0; j < 16; ++j) {
        s += static_cast<int32_t>(a[j]) * ((c[j] & 0x0F) - 8);
        s += static_cast<int32_t>(a[16 + j]) * ((c[j] >> 4) - 8);
      }
      out[r] += s * static_cast<int32_t>(mult[g]);
    }
  }
}

void check_weight(const torch::Tensor& codes, const torch::Tensor& mult, const torch::Tensor& offsets, int64_t k) {
  TORCH_CHECK(k % kGroup == 0, "int4: K must be a multiple of 32, got ", k);
  TORCH_CHECK(codes.dtype() == torch::kUInt8 && codes.is_contiguous() && codes.dim() == 2, "int4: codes must be contiguous uint8 (N, K/2)");
  TORCH_CHECK(codes.size(1) * 2 == k, "int4: codes hold K=", codes.size(1) * 2, ", activations K=", k);
  TORCH_CHECK(mult.dtype() == torch::kUInt8 && mult.is_contiguous() && mult.size(0) == codes.size(0) && mult.size(1) == k / kGroup,
              "int4: multipliers must be contiguous uint8 (N, K/32)");
  TORCH_CHECK(offsets.dtype() == torch::kInt32 && offsets.is_contiguous() && offsets.numel() == codes.size(0),
              "int4: offsets must be contiguous int32 (N,)");
}

// For every activation row r and weight row j: store(r, j, sum_k x_q[r, k] * m[j, k / 32] * (u[j, k] - 8)).
template <typename Store>
void gemm(const uint8_t* a, const int16_t* sums, int64_t rows, int64_t k, const torch::Tensor& codes, const torch::Tensor& mult,
          const torch::Tensor& offsets, Store store) {
  int64_t n = codes.size(0), groups = k / kGroup;
  const uint8_t* c = codes.data_ptr<uint8_t>();
  const uint8_t* mu = mult.data_ptr<uint8_t>();
  const int32_t* off = offsets.data_ptr<int32_t>();
  at::parallel_for(0, (n + kColBlock - 1) / kColBlock, 1, [&](int64_t begin, int64_t end) {
    int32_t dots[kRowTile];
    for (int64_t block = begin; block < end; ++block) {
      int64_t j0 = block * kColBlock, j1 = std::min(n, j0 + kColBlock);
      for (int64_t r0 = 0; r0 < rows; r0 += kRowTile) {
        int64_t tile = std::min(kRowTile, rows - r0);
        const uint8_t* ar = a + r0 * k;
        const int16_t* sr = sums + r0 * (k / kGroup);
        for (int64_t j = j0; j < j1; ++j) {
          const uint8_t* cj = c + j * (k / 2);
          const uint8_t* mj = mu + j * groups;
          switch (tile) {
            case 4: dot_rows<4>(ar, sr, k, cj, mj, dots); break;
            case 3: dot_rows<3>(ar, sr, k, cj, mj, dots); break;
            case 2: dot_rows<2>(ar, sr, k, cj, mj, dots); break;
            default: dot_rows<1>(ar, sr, k, cj, mj, dots); break;
          }
          for (int64_t r = 0; r < tile; ++r) store(r0 + r, j, dots[r] - off[j]);
        }
      }
    }
  });
}

// The activations' codes (M, K) uint8 in pair layout and their scales (M,).
std::vector<torch::Tensor> quantize_activations(const torch::Tensor& x) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2, "int4: activations must be float32 (M, K)");
  auto xc = x.contiguous();
  int64_t rows = xc.size(0), k = xc.size(1);
  TORCH_CHECK(k % kGroup == 0, "int4: K must be a multiple of 32, got ", k);
  auto act = torch::empty({rows, k}, torch::kUInt8);
  auto scales = torch::empty({rows}, torch::kFloat32);
  auto sums = torch::empty({rows, k / kGroup}, torch::kInt16);
  int16_t* sm = sums.data_ptr<int16_t>();
  const float* xp = xc.data_ptr<float>();
  uint8_t* ap = act.data_ptr<uint8_t>();
  float* sp = scales.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) sp[r] = quantize_row(xp + r * k, k, ap + r * k, sm + r * (k / kGroup));
  });
  return {act, sums, scales};
}

// y (M, N) = x_scale[m] * row_scale[n] * int_dot[m, n] (+ bias[n]).
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& mult,
                     const torch::Tensor& offsets, const torch::Tensor& row_scale,
                     const c10::optional<torch::Tensor>& bias) {
  check_weight(codes, mult, offsets, x.size(1));
  TORCH_CHECK(row_scale.dtype() == torch::kFloat32 && row_scale.is_contiguous() && row_scale.numel() == codes.size(0),
              "int4: row scales must be contiguous float32 (N,)");
  auto quantized = quantize_activations(x);
  int64_t rows = x.size(0), n = codes.size(0), k = x.size(1);
  auto y = torch::empty({rows, n}, torch::kFloat32);
  const float* xs = quantized[2].data_ptr<float>();
  const float* ws = row_scale.data_ptr<float>();
  torch::Tensor bias_f;
  const float* b = nullptr;
  if (bias.has_value() && bias->defined()) {
    bias_f = bias->to(torch::kFloat32).contiguous();
    TORCH_CHECK(bias_f.numel() == n, "int4: bias must have N elements");
    b = bias_f.data_ptr<float>();
  }
  float* yp = y.data_ptr<float>();
  gemm(quantized[0].data_ptr<uint8_t>(), quantized[1].data_ptr<int16_t>(), rows, k, codes, mult, offsets, [&](int64_t r, int64_t j, int32_t dot) {
    float v = xs[r] * ws[j] * static_cast<float>(dot);
    yp[r * n + j] = b ? v + b[j] : v;
  });
  return y;
}

// The weight rows [begin, end) as int8 m · (u − 8) (natural order): exact, since |m · (u − 8)| <= 120.
// A 16-entry table per multiplier turns codes into values with one byte shuffle.
void expand_rows(const uint8_t* codes, const uint8_t* mult, int64_t k, int64_t begin, int64_t end, int8_t* out) {
  alignas(16) static int8_t tables[16][16];
  static bool ready = [] {
    for (int m = 0; m < 16; ++m)
      for (int u = 0; u < 16; ++u) tables[m][u] = static_cast<int8_t>(m * (u - 8));
    return true;
  }();
  (void)ready;
  const __m128i low = _mm_set1_epi8(0x0F);
  int64_t groups = k / kGroup, blocks = groups / kBlock;
  at::parallel_for(begin, end, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* c = codes + r * (k / 2);
      const uint8_t* mu = mult + r * groups;
      int8_t* o = out + (r - begin) * k;
      for (int64_t g = 0; g < groups; ++g) {
        // stored position of group g (see `pack_codes`)
        int64_t slot = g;
        if (g < blocks * kBlock) {
          int64_t within = g % kBlock;
          slot = g - within + (within < kBlock / 2 ? 2 * within : 2 * (within - kBlock / 2) + 1);
        }
        __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + slot * 16));
        __m128i table = _mm_load_si128(reinterpret_cast<const __m128i*>(tables[mu[g]]));
        __m128i lo = _mm_shuffle_epi8(table, _mm_and_si128(packed, low));
        __m128i hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(packed, 4), low));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + g * kGroup), lo);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + g * kGroup + 16), hi);
      }
    }
  });
}

// The same linear map through `at::_int_mm` (oneDNN) on weight chunks expanded to int8: on CPUs with
// VNNI its int8 GEMM is far faster than the AVX2 loop at prefill sizes (on CPUs without VNNI it is a
// scalar loop: the kernel race decides). Activations are the same per-token int8 codes.
torch::Tensor linear_expanded(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& mult,
                              const torch::Tensor& offsets, const torch::Tensor& row_scale,
                              const c10::optional<torch::Tensor>& bias, int64_t chunk_rows) {
  check_weight(codes, mult, offsets, x.size(1));
  TORCH_CHECK(chunk_rows > 0 && chunk_rows % 8 == 0, "int4: chunk_rows must be a positive multiple of 8");
  auto xc = x.contiguous();
  int64_t rows = xc.size(0), k = xc.size(1), n = codes.size(0);
  auto xq = torch::empty({rows, k}, torch::kInt8);
  auto xs = torch::empty({rows}, torch::kFloat32);
  const float* xp = xc.data_ptr<float>();
  int8_t* qp = xq.data_ptr<int8_t>();
  float* sp = xs.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float absmax = row_absmax(xp + r * k, k);
      __m256 inv = _mm256_set1_ps(absmax > 0.f ? 127.f / absmax : 0.f);
      for (int64_t g = 0; g < k / kGroup; ++g)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qp + r * k + g * kGroup), round_to_int8(xp + r * k + g * kGroup, inv));
      sp[r] = absmax / 127.f;
    }
  });
  auto y = torch::empty({rows, n}, torch::kFloat32);
  auto w8 = torch::empty({std::min(chunk_rows, n), k}, torch::kInt8);
  const float* ws = row_scale.data_ptr<float>();
  torch::Tensor bias_f;
  const float* b = nullptr;
  if (bias.has_value() && bias->defined()) {
    bias_f = bias->to(torch::kFloat32).contiguous();
    b = bias_f.data_ptr<float>();
  }
  float* yp = y.data_ptr<float>();
  for (int64_t j0 = 0; j0 < n; j0 += chunk_rows) {
    int64_t j1 = std::min(n, j0 + chunk_rows), width = j1 - j0;
    expand_rows(codes.data_ptr<uint8_t>(), mult.data_ptr<uint8_t>(), k, j0, j1, w8.data_ptr<int8_t>());
    auto dots = at::_int_mm(xq, w8.narrow(0, 0, width).t());
    const int32_t* d = dots.data_ptr<int32_t>();
    at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t j = 0; j < width; ++j) {
          float v = sp[r] * ws[j0 + j] * static_cast<float>(d[r * width + j]);
          yp[r * n + j0 + j] = b ? v + b[j0 + j] : v;
        }
    });
  }
  return y;
}

// (M, N) int32: the exact integer dots the float result is scaled from (for tests).
torch::Tensor gemm_int(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& mult,
                       const torch::Tensor& offsets) {
  check_weight(codes, mult, offsets, x.size(1));
  auto quantized = quantize_activations(x);
  int64_t n = codes.size(0);
  auto out = torch::empty({x.size(0), n}, torch::kInt32);
  int32_t* o = out.data_ptr<int32_t>();
  gemm(quantized[0].data_ptr<uint8_t>(), quantized[1].data_ptr<int16_t>(), x.size(0), x.size(1), codes, mult,
       offsets, [&](int64_t r, int64_t j, int32_t dot) { o[r * n + j] = dot; });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear", &linear, "int4 weights x int8 per-token activations -> float32");
    m.def("linear_expanded", &linear_expanded, "the same through at::_int_mm on int8-expanded weight chunks");
  m.def("gemm_int", &gemm_int, "int32 dots of per-token int8 activations with packed int4 rows");
}
