/* The read loop of tfds_bigarrays, shared by the Python extension
   (_native.c) and the TensorFlow op (_read_op.cc): plain C, no Python and no
   TensorFlow here, compiled as C11 there and as C++17 here.

   read_runs: scatter-read runs of fixed-size TFRecord frames straight into
     per-feature outputs (rows permuted as asked), and CRC32C each record
     from where its pieces landed.
   feistel_one / perm_keys: the keyed permutation of _permutation.py.
   row_order: the permutation of a group's rows (Fisher-Yates, keyed).
*/
#ifndef TFDS_BIGARRAYS_READCORE_H_
#define TFDS_BIGARRAYS_READCORE_H_

/* preadv is a BSD/GNU extension: ask for it, in case this header comes first
   (Python.h, and g++, define _GNU_SOURCE already). */
#if !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE 1
#endif

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define HAVE_SSE42_PATH 1
#endif

/* ------------------------------------------------------------- CRC32C */

static uint32_t crc_table[8][256];

static void init_crc_table(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    crc_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++) {
    for (int t = 1; t < 8; t++) {
      uint32_t c = crc_table[t - 1][i];
      crc_table[t][i] = (c >> 8) ^ crc_table[0][c & 0xFF];
    }
  }
}

/* Portable slicing-by-8, for machines without the CRC32 instruction:
   the CRC32C of the bytes hashed so far (`crc`) extended by p[0..n). */
static uint32_t crc32c_soft_extend(uint32_t crc, const uint8_t *p, size_t n) {
  uint32_t c = crc ^ 0xFFFFFFFFu;
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    w ^= c; /* little-endian only: checked in the module init */
    c = crc_table[7][w & 0xFF] ^ crc_table[6][(w >> 8) & 0xFF] ^
        crc_table[5][(w >> 16) & 0xFF] ^ crc_table[4][(w >> 24) & 0xFF] ^
        crc_table[3][(w >> 32) & 0xFF] ^ crc_table[2][(w >> 40) & 0xFF] ^
        crc_table[1][(w >> 48) & 0xFF] ^ crc_table[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xFF];
  return c ^ 0xFFFFFFFFu;
}


/* 0: the table-driven CRC; 1: the CRC32 instruction (SSE 4.2); 2: also
   carry-less multiplies on 512-bit registers (AVX-512 VPCLMULQDQ), for long
   pieces. */
static int use_hardware(void) {
#ifdef HAVE_SSE42_PATH
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("sse4.2")) return 0;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("pclmul"))
    return 2;
  return 1;
#else
  return 0;
#endif
}

#ifdef HAVE_SSE42_PATH
#include <immintrin.h>
#define FOLD_TARGET __attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2")))
#define FOLD_MIN_BYTES 256

/* Folding (Intel, "Fast CRC Computation for Generic Polynomials Using
   PCLMULQDQ"): a 128-bit lane of the message moved D bytes further equals
   lane.lo * (x^(8D+32) mod P) + lane.hi * (x^(8D-32) mod P), bit-reflected,
   modulo P. The constants (each reflected and shifted left by one) are for
   the CRC32C polynomial and D = 256, 64 and 16 bytes; tests compare the
   result with the table-driven CRC. */
FOLD_TARGET static inline __m512i fold512(__m512i x, __m512i k, __m512i next) {
  __m512i a = _mm512_clmulepi64_epi128(x, k, 0x00);
  __m512i b = _mm512_clmulepi64_epi128(x, k, 0x11);
  return _mm512_ternarylogic_epi64(a, b, next, 0x96); /* a ^ b ^ next */
}

FOLD_TARGET static inline __m128i fold128(__m128i x, __m128i k, __m128i next) {
  __m128i a = _mm_clmulepi64_si128(x, k, 0x00);
  __m128i b = _mm_clmulepi64_si128(x, k, 0x11);
  return _mm_ternarylogic_epi64(a, b, next, 0x96);
}

/* The raw CRC32C register `reg` (not inverted) extended by p[0..n) with the
   CRC32 instruction, one stream: for short pieces and the folds' tails. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw_extend(uint32_t reg,
                                                                   const uint8_t *p, size_t n) {
  uint64_t c = reg;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
  }
  uint32_t d = (uint32_t)c;
  for (; n; n--) d = _mm_crc32_u8(d, *p++);
  return d;
}

/* The raw CRC32C register `reg` (not inverted) extended by p[0..n), n >=
   FOLD_MIN_BYTES: four 512-bit accumulators (16 lanes) folded 256 bytes at a
   time, then folded into one 128-bit lane, whose 16 bytes the CRC32
   instruction finishes (it multiplies by x^32 and reduces: the Barrett step). */
FOLD_TARGET static uint32_t crc32c_fold(uint32_t reg, const uint8_t *p, size_t n) {
  const __m512i k256 = _mm512_broadcast_i32x4(_mm_set_epi64x(0xb9e02b86, 0xdcb17aa4));
  const __m512i k64 = _mm512_broadcast_i32x4(_mm_set_epi64x(0x9e4addf8, 0x740eef02));
  const __m128i k16 = _mm_set_epi64x(0x14cd00bd6, 0xf20c0dfe);
  __m512i x0 = _mm512_loadu_si512(p), x1 = _mm512_loadu_si512(p + 64),
          x2 = _mm512_loadu_si512(p + 128), x3 = _mm512_loadu_si512(p + 192);
  /* The register enters as the message's first four bytes, XORed. */
  x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)reg)));
  p += 256;
  n -= 256;
  for (; n >= 256; p += 256, n -= 256) {
    x0 = fold512(x0, k256, _mm512_loadu_si512(p));
    x1 = fold512(x1, k256, _mm512_loadu_si512(p + 64));
    x2 = fold512(x2, k256, _mm512_loadu_si512(p + 128));
    x3 = fold512(x3, k256, _mm512_loadu_si512(p + 192));
  }
  x1 = fold512(x0, k64, x1);
  x2 = fold512(x1, k64, x2);
  x3 = fold512(x2, k64, x3);
  for (; n >= 64; p += 64, n -= 64) x3 = fold512(x3, k64, _mm512_loadu_si512(p));
  __m128i lane = _mm512_extracti32x4_epi32(x3, 0);
  lane = fold128(lane, k16, _mm512_extracti32x4_epi32(x3, 1));
  lane = fold128(lane, k16, _mm512_extracti32x4_epi32(x3, 2));
  lane = fold128(lane, k16, _mm512_extracti32x4_epi32(x3, 3));
  uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(lane));
  c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(lane, 1));
  return crc32c_hw_extend((uint32_t)c, p, n); /* the last n < 64 bytes */
}

/* The raw register extended by a piece: folded if long, else the CRC32
   instruction (one stream). */
FOLD_TARGET static uint32_t crc32c_extend_fold(uint32_t reg, const uint8_t *p, size_t n) {
  return n >= FOLD_MIN_BYTES ? crc32c_fold(reg, p, n) : crc32c_hw_extend(reg, p, n);
}
#endif

/* ------------------------------------------------------------- read_frames */

#define MAX_SEGS 4096
#define IOV_CHUNK 1024

/* Four-stream CRC32C over the same pieces of four rows (see crc_rows_sse42). */
typedef struct {
  const uint8_t *ptr[4];
} Rows4;

#ifdef HAVE_SSE42_PATH
__attribute__((target("sse4.2"))) static void crc4_extend(uint32_t c[4], Rows4 rows,
                                                          ptrdiff_t length) {
  uint64_t c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
  ptrdiff_t i = 0;
  for (; i + 8 <= length; i += 8) {
    uint64_t w0, w1, w2, w3;
    memcpy(&w0, rows.ptr[0] + i, 8);
    memcpy(&w1, rows.ptr[1] + i, 8);
    memcpy(&w2, rows.ptr[2] + i, 8);
    memcpy(&w3, rows.ptr[3] + i, 8);
    c0 = _mm_crc32_u64(c0, w0);
    c1 = _mm_crc32_u64(c1, w1);
    c2 = _mm_crc32_u64(c2, w2);
    c3 = _mm_crc32_u64(c3, w3);
  }
  uint32_t d[4] = {(uint32_t)c0, (uint32_t)c1, (uint32_t)c2, (uint32_t)c3};
  for (; i < length; i++)
    for (int k = 0; k < 4; k++) d[k] = _mm_crc32_u8(d[k], rows.ptr[k][i]);
  memcpy(c, d, sizeof d);
}
#endif

/* CRC32C of the records of source rows [r0, r1), from where their pieces
   landed (see read_frames). Called right after each read, while the rows are
   still in the cache. */
typedef struct {
  const int64_t *seg;
  ptrdiff_t n_segs;
  uint8_t *const *outs; /* each output's rows */
  const int64_t *dst;
  const uint8_t *junk;
  ptrdiff_t junk_bytes;
  uint32_t *out_crc;
  int hw;
} CrcJob;

/* Where segment j of source row `src` lands: its row of an output, or at
   `j_off` in the row's junk (the junk segments before j, back to back). The
   reads write there and crc_records reads from there. */
static const uint8_t *piece(const CrcJob *job, ptrdiff_t src, ptrdiff_t j, ptrdiff_t j_off) {
  int64_t len = job->seg[3 * j + 1], t = job->seg[3 * j + 2];
  return t < 0 ? job->junk + src * job->junk_bytes + j_off
               : job->outs[t] + job->dst[src] * len;
}

static void crc_records(const CrcJob *job, ptrdiff_t r0, ptrdiff_t r1) {
  const int64_t *seg = job->seg;
  ptrdiff_t r = r0;
#ifdef HAVE_SSE42_PATH
  int long_piece = 0;
  for (ptrdiff_t j = 1; j + 1 < job->n_segs; j++) long_piece |= seg[3 * j + 1] >= FOLD_MIN_BYTES;
  if (job->hw >= 2 && long_piece) {
    /* Rows with a long piece: one row at a time, the long pieces folded
       (about twice the speed of four CRC32 streams on 16 KiB rows). */
    for (; r < r1; r++) {
      uint32_t reg = 0xFFFFFFFFu;
      ptrdiff_t j_off = seg[1];
      for (ptrdiff_t j = 1; j + 1 < job->n_segs; j++) {
        reg = crc32c_extend_fold(reg, piece(job, r, j, j_off), (size_t)seg[3 * j + 1]);
        if (seg[3 * j + 2] < 0) j_off += seg[3 * j + 1];
      }
      job->out_crc[r] = reg ^ 0xFFFFFFFFu;
    }
    return;
  }
  if (job->hw) {
    for (; r + 4 <= r1; r += 4) {
      uint32_t c[4] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
      ptrdiff_t j_off = seg[1]; /* the header is the first junk segment */
      for (ptrdiff_t j = 1; j + 1 < job->n_segs; j++) {
        Rows4 p;
        for (int q = 0; q < 4; q++) p.ptr[q] = piece(job, r + q, j, j_off);
        crc4_extend(c, p, seg[3 * j + 1]);
        if (seg[3 * j + 2] < 0) j_off += seg[3 * j + 1];
      }
      for (int q = 0; q < 4; q++) job->out_crc[r + q] = c[q] ^ 0xFFFFFFFFu;
    }
  }
#endif
  for (; r < r1; r++) {
    uint32_t c = 0;
    ptrdiff_t j_off = seg[1];
    for (ptrdiff_t j = 1; j + 1 < job->n_segs; j++) {
      const uint8_t *p = piece(job, r, j, j_off);
      int64_t len = seg[3 * j + 1];
#ifdef HAVE_SSE42_PATH
      if (job->hw) {
        Rows4 same = {{p, p, p, p}};
        uint32_t c4[4];
        c4[0] = c4[1] = c4[2] = c4[3] = c ^ 0xFFFFFFFFu;
        crc4_extend(c4, same, len);
        c = c4[0] ^ 0xFFFFFFFFu;
      } else
#endif
        c = crc32c_soft_extend(c, p, (size_t)len);
      if (seg[3 * j + 2] < 0) j_off += len;
    }
    job->out_crc[r] = c;
  }
}


/* How a read failed: run `failed` (-1: none) got `got` bytes, errno `err`
   (0: the file ended early). */
typedef struct {
  ptrdiff_t failed, got;
  int err;
} ReadStatus;

/* Reads k runs of whole frames (cnt[i] frames at byte off[i] of fd[i]),
   scattering each frame's segments to where piece() says (see CrcJob), and
   with job->out_crc the CRC32C of each record. With `maps` (whole shards in
   memory, map_lens[i] bytes each), fd[i] indexes them and frames are copied
   instead of read. `iov` is scratch room for IOV_CHUNK iovecs. Arguments
   are trusted: callers check them (rows, segments, destinations). */
static ReadStatus read_runs(const CrcJob *job, int64_t frame_bytes, ptrdiff_t k,
                            const int64_t *fd, const int64_t *off, const int64_t *cnt,
                            const uint8_t *const *maps, const int64_t *map_lens,
                            struct iovec *iov) {
  ReadStatus st = {-1, 0, 0};
  const int64_t *seg = job->seg;
  ptrdiff_t n_segs = job->n_segs;
  ptrdiff_t row = 0;
  /* Rows per preadv: what IOV_MAX allows, and at most ~256 KiB, so that the
     CRC pass after each read finds the rows still in the cache. */
  ptrdiff_t rows_per_call = IOV_CHUNK / n_segs;
  if (rows_per_call * frame_bytes > (256 << 10)) rows_per_call = (256 << 10) / frame_bytes;
  if (rows_per_call < 1) rows_per_call = 1;
  for (ptrdiff_t i = 0; i < k && st.failed < 0; i++) {
    int64_t done_rows = 0;
    if (off[i] < 0 || cnt[i] < 0) { /* checked by callers; never read before a file */
      st.failed = i;
      st.err = EINVAL;
      break;
    }
    if (maps) {
      /* The frames are in memory (a mapped shard): copy each segment to its
         place, then check the CRCs of the same rows while still cached. */
      const uint8_t *base = maps[fd[i]];
      int64_t avail = map_lens[fd[i]] - off[i];
      if (avail < cnt[i] * (int64_t)frame_bytes) {
        st.failed = i;
        st.got = avail > 0 ? (ptrdiff_t)avail : 0;
        break;
      }
      while (done_rows < cnt[i]) {
        int64_t batch = cnt[i] - done_rows;
        if (batch > rows_per_call) batch = rows_per_call;
        for (int64_t r = 0; r < batch; r++) {
          ptrdiff_t src = row + done_rows + r;
          const uint8_t *from = base + off[i] + (done_rows + r) * (int64_t)frame_bytes;
          ptrdiff_t j_off = 0;
          for (ptrdiff_t j = 0; j < n_segs; j++) {
            int64_t len = seg[3 * j + 1];
            memcpy((uint8_t *)piece(job, src, j, j_off), from, (size_t)len);
            if (seg[3 * j + 2] < 0) j_off += len;
            from += len;
          }
        }
        if (job->out_crc) crc_records(job, row + done_rows, row + done_rows + batch);
        done_rows += batch;
      }
      row += cnt[i];
      continue;
    }
    while (done_rows < cnt[i] && st.failed < 0) {
      int64_t batch = cnt[i] - done_rows;
      if (batch > rows_per_call) batch = rows_per_call;
      int n_iov = 0;
      for (int64_t r = 0; r < batch; r++) {
        ptrdiff_t src = row + done_rows + r;
        ptrdiff_t j_off = 0;
        for (ptrdiff_t j = 0; j < n_segs; j++) {
          int64_t len = seg[3 * j + 1];
          iov[n_iov].iov_base = (uint8_t *)piece(job, src, j, j_off);
          iov[n_iov].iov_len = (size_t)len;
          n_iov++;
          if (seg[3 * j + 2] < 0) j_off += len;
        }
      }
      /* preadv may stop short (signals, EOF): finish byte by byte. */
      size_t want = (size_t)(batch * frame_bytes), have = 0;
      int first = 0;
      while (have < want) {
        ssize_t m = preadv((int)fd[i], iov + first, n_iov - first,
                           (off_t)(off[i] + (done_rows * frame_bytes) + (int64_t)have));
        if (m < 0 && errno == EINTR) continue;
        if (m <= 0) {
          st.failed = i;
          st.got = (ptrdiff_t)(done_rows * frame_bytes + (int64_t)have);
          st.err = m < 0 ? errno : 0;
          break;
        }
        have += (size_t)m;
        while (m > 0) {
          if ((size_t)m >= iov[first].iov_len) {
            m -= (ssize_t)iov[first].iov_len;
            first++;
          } else {
            iov[first].iov_base = (uint8_t *)iov[first].iov_base + m;
            iov[first].iov_len -= (size_t)m;
            m = 0;
          }
        }
      }
      if (st.failed < 0 && job->out_crc)
        crc_records(job, row + done_rows, row + done_rows + batch);
      done_rows += batch;
    }
    row += cnt[i];
  }
  return st;
}

/* ------------------------------------------------------------- permutations */

static inline uint64_t mix64(uint64_t x) { /* splitmix64's finalizer */
  x *= 0x9E3779B97F4A7C15ull;
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

#define PERM_ROUNDS 4

/* The round keys and half width of _permutation.Permutation(n, seed). */
static inline int perm_keys(uint64_t n, uint64_t seed, uint64_t keys[PERM_ROUNDS]) {
  for (int r = 0; r < PERM_ROUNDS; r++) keys[r] = mix64(seed + (uint64_t)r + 1);
  int bits = 0;
  for (uint64_t m = n - 1; m; m >>= 1) bits++;
  int half = (bits + 1) / 2;
  return half < 1 ? 1 : half;
}

/* Index v < n through the Feistel rounds, cycle-walking back into [0, n). */
static inline uint64_t feistel_one(uint64_t v, uint64_t n, int half, const uint64_t *k,
                                   ptrdiff_t rounds) {
  uint64_t mask = (1ull << half) - 1;
  do {
    uint64_t left = v >> half, right = v & mask;
    for (ptrdiff_t r = 0; r < rounds; r++) {
      uint64_t t = right;
      right = left ^ (mix64(right ^ k[r]) & mask);
      left = t;
    }
    v = (left << half) | right;
  } while (v >= n);
  return v;
}

/* out[i] = where row i of group `group` of the epoch keyed by `seed` goes:
   a uniform permutation of [0, n) (Fisher-Yates on a splitmix64 stream). */
static void row_order(uint64_t seed, uint64_t group, int64_t n, int64_t *out) {
  uint64_t state = mix64(mix64(seed) ^ group);
  for (int64_t i = 0; i < n; i++) out[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    state += 0x9E3779B97F4A7C15ull;
    uint64_t j = (uint64_t)(((unsigned __int128)mix64(state) * (uint64_t)(i + 1)) >> 64);
    int64_t t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
}

#endif /* TFDS_BIGARRAYS_READCORE_H_ */
