// The read core of tfds_bigarrays (see core.h): one implementation of the
// read plan, the reads and the checks, for every binding.
//
// A frame is cut into segments: the 12-byte length header, then runs of the
// record's bytes, then the 4-byte CRC. A segment goes either straight to its
// row of an output (a feature stored as raw bytes), or to the row's "junk":
// a small per-row buffer holding everything that is checked or decoded
// afterwards (header, constant Example bytes, varint features, CRC). One
// scatter read (preadv), or one copy per segment for frames in memory, puts
// every segment in place; the CRC of each record is then computed from where
// its pieces landed, while they are still in the CPU cache.
//
// Tuning constants are explained, with their measurements, in
// docs/design.md#tuning.

#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// GCC 12 warns about _mm512_undefined_epi32 inside its own AVX-512 headers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#include <nmmintrin.h>
#define TBR_X86 1
#endif

namespace {

constexpr int64_t kHeader = 12;  // uint64 length + masked CRC of it
constexpr int64_t kFooter = 4;   // masked CRC of the record
constexpr uint32_t kMaskDelta = 0xa282ead8u;
constexpr uint64_t kSeedMask = (1ull << 63) - 1;
constexpr int64_t kVarintWidth = 5;
// Outputs read straight into place, the largest first (docs/design.md#tuning).
constexpr size_t kMaxDirect = 128;
constexpr int kIovChunk = 1024;                   // IOV_MAX on Linux
constexpr int64_t kScatterBytes = 256 << 10;      // bytes per preadv (docs/design.md#tuning)
constexpr double kWarmBytesPerS = 2e9;            // docs/design.md#tuning
constexpr double kColdHintSeconds = 10e-6;        // docs/design.md#tuning
constexpr int kWarmProbeEvery = 8;                // docs/design.md#tuning
#ifdef MADV_POPULATE_READ
constexpr int kPopulateRead = MADV_POPULATE_READ;
#else
constexpr int kPopulateRead = 22;  // Linux 5.14; older kernels refuse it with EINVAL
#endif
#ifdef SYS_cachestat
constexpr long kCachestat = SYS_cachestat;
#else
constexpr long kCachestat = 451;  // Linux 6.5, the same number on every architecture
#endif
constexpr int64_t kPieceBytes = 2 << 20;          // x86-64's huge page: the unit of fill_pieces (docs/design.md#tuning)
constexpr double kColdFaultSeconds = 100e-6;      // a piece's first fault: warm 5-22 us, cold over 1 ms (docs/design.md#tuning)
constexpr int64_t kHugeOutputBytes = 4 << 20;     // outputs this big get huge pages (docs/design.md#tuning)
constexpr int64_t kMinThreadBytes = 4 << 20;      // least bytes of a group's part per thread (docs/design.md#tuning)
constexpr int64_t kMaxRows = int64_t{1} << 40;    // bounds that keep size products in int64
constexpr int64_t kMaxFrame = int64_t{1} << 31;

// ------------------------------------------------------------------ messages

struct Error {
  std::string message;
};

void Fill(char* err, size_t errlen, const std::string& message) {
  if (err == nullptr || errlen == 0) return;
  const size_t n = std::min(errlen - 1, message.size());
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

// Runs `body`; an exception (an allocation that fails, say) becomes a message
// in `err` and `fail`: nothing may unwind into C callers or TensorFlow.
template <class R, class F>
R Guarded(char* err, size_t errlen, R fail, F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    Fill(err, errlen, std::string("tfds_bigarrays read core: ") + e.what());
    return fail;
  }
}

std::string OpenError(const std::string& name, int e) {
  if (e == EMFILE || e == ENFILE) {
    return "Could not open shard " + name + ": too many open files (" + std::strerror(e) +
           "). Raise the limit (`ulimit -n`), or read fewer datasets at once.";
  }
  return "Shard " + name + " is missing or unreadable (" + std::strerror(e) +
         "). The dataset is incomplete: rebuild it, or restore the shard.";
}

std::string ChangedError(const std::string& name) {
  return "Shard " + name +
         " changed after the dataset was loaded (it was rebuilt, overwritten or replaced): "
         "load the dataset again.";
}

// ------------------------------------------------------------------ CRC32C

uint32_t g_table[8][256];

void InitTable() {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    g_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++) {
    for (int t = 1; t < 8; t++) {
      const uint32_t c = g_table[t - 1][i];
      g_table[t][i] = (c >> 8) ^ g_table[0][c & 0xFF];
    }
  }
}

// The raw CRC register (not inverted) extended by p[0..n), slicing-by-8.
uint32_t CrcTable(uint32_t reg, const uint8_t* p, size_t n) {
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    w ^= reg;  // little-endian: the library refuses other byte orders at load
    reg = g_table[7][w & 0xFF] ^ g_table[6][(w >> 8) & 0xFF] ^ g_table[5][(w >> 16) & 0xFF] ^
          g_table[4][(w >> 24) & 0xFF] ^ g_table[3][(w >> 32) & 0xFF] ^
          g_table[2][(w >> 40) & 0xFF] ^ g_table[1][(w >> 48) & 0xFF] ^ g_table[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) reg = (reg >> 8) ^ g_table[0][(reg ^ *p++) & 0xFF];
  return reg;
}

#ifdef TBR_X86
#define TBR_SSE42 __attribute__((target("sse4.2")))
#define TBR_FOLD __attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2")))
constexpr size_t kFoldMinBytes = 256;  // docs/design.md#tuning

TBR_SSE42 uint32_t CrcHw(uint32_t reg, const uint8_t* p, size_t n) {
  uint64_t c = reg;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
  }
  uint32_t d = static_cast<uint32_t>(c);
  for (; n; n--) d = _mm_crc32_u8(d, *p++);
  return d;
}

// Four records at once: the CRC32 instruction has a latency of three cycles
// and a throughput of one, so four independent streams keep it busy.
TBR_SSE42 void CrcHw4(uint32_t reg[4], const uint8_t* const p[4], size_t n) {
  uint64_t c0 = reg[0], c1 = reg[1], c2 = reg[2], c3 = reg[3];
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w0, w1, w2, w3;
    std::memcpy(&w0, p[0] + i, 8);
    std::memcpy(&w1, p[1] + i, 8);
    std::memcpy(&w2, p[2] + i, 8);
    std::memcpy(&w3, p[3] + i, 8);
    c0 = _mm_crc32_u64(c0, w0);
    c1 = _mm_crc32_u64(c1, w1);
    c2 = _mm_crc32_u64(c2, w2);
    c3 = _mm_crc32_u64(c3, w3);
  }
  uint32_t d[4] = {static_cast<uint32_t>(c0), static_cast<uint32_t>(c1),
                   static_cast<uint32_t>(c2), static_cast<uint32_t>(c3)};
  for (; i < n; i++) {
    for (int k = 0; k < 4; k++) d[k] = _mm_crc32_u8(d[k], p[k][i]);
  }
  std::memcpy(reg, d, sizeof d);
}

// Folding (Intel, "Fast CRC Computation for Generic Polynomials Using
// PCLMULQDQ"): a 128-bit lane moved D bytes further equals lane.lo *
// (x^(8D+32) mod P) + lane.hi * (x^(8D-32) mod P), bit-reflected, modulo P.
// The constants are for the CRC32C polynomial and D = 256, 64 and 16 bytes;
// tests compare the result with the table.
TBR_FOLD inline __m512i Fold512(__m512i x, __m512i k, __m512i next) {
  const __m512i a = _mm512_clmulepi64_epi128(x, k, 0x00);
  const __m512i b = _mm512_clmulepi64_epi128(x, k, 0x11);
  return _mm512_ternarylogic_epi64(a, b, next, 0x96);  // a ^ b ^ next
}

TBR_FOLD inline __m128i Fold128(__m128i x, __m128i k, __m128i next) {
  const __m128i a = _mm_clmulepi64_si128(x, k, 0x00);
  const __m128i b = _mm_clmulepi64_si128(x, k, 0x11);
  return _mm_ternarylogic_epi64(a, b, next, 0x96);
}

// n >= kFoldMinBytes: four 512-bit accumulators folded 256 bytes at a time,
// then into one 128-bit lane, which the CRC32 instruction reduces.
TBR_FOLD uint32_t CrcFold(uint32_t reg, const uint8_t* p, size_t n) {
  const __m512i k256 = _mm512_broadcast_i32x4(_mm_set_epi64x(0xb9e02b86, 0xdcb17aa4));
  const __m512i k64 = _mm512_broadcast_i32x4(_mm_set_epi64x(0x9e4addf8, 0x740eef02));
  const __m128i k16 = _mm_set_epi64x(0x14cd00bd6, 0xf20c0dfe);
  __m512i x0 = _mm512_loadu_si512(p), x1 = _mm512_loadu_si512(p + 64),
          x2 = _mm512_loadu_si512(p + 128), x3 = _mm512_loadu_si512(p + 192);
  x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128(static_cast<int>(reg))));
  p += 256;
  n -= 256;
  for (; n >= 256; p += 256, n -= 256) {
    x0 = Fold512(x0, k256, _mm512_loadu_si512(p));
    x1 = Fold512(x1, k256, _mm512_loadu_si512(p + 64));
    x2 = Fold512(x2, k256, _mm512_loadu_si512(p + 128));
    x3 = Fold512(x3, k256, _mm512_loadu_si512(p + 192));
  }
  x1 = Fold512(x0, k64, x1);
  x2 = Fold512(x1, k64, x2);
  x3 = Fold512(x2, k64, x3);
  for (; n >= 64; p += 64, n -= 64) x3 = Fold512(x3, k64, _mm512_loadu_si512(p));
  __m128i lane = _mm512_extracti32x4_epi32(x3, 0);
  lane = Fold128(lane, k16, _mm512_extracti32x4_epi32(x3, 1));
  lane = Fold128(lane, k16, _mm512_extracti32x4_epi32(x3, 2));
  lane = Fold128(lane, k16, _mm512_extracti32x4_epi32(x3, 3));
  uint64_t c = _mm_crc32_u64(0, static_cast<uint64_t>(_mm_cvtsi128_si64(lane)));
  c = _mm_crc32_u64(c, static_cast<uint64_t>(_mm_extract_epi64(lane, 1)));
  return CrcHw(static_cast<uint32_t>(c), p, n);
}
#endif

int BestCrcLevel() {
#ifdef TBR_X86
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("sse4.2")) return 0;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("pclmul")) {
    return 2;
  }
  return 1;
#else
  return 0;
#endif
}

struct CrcInit {
  CrcInit() {
    InitTable();
    level.store(BestCrcLevel());
  }
  std::atomic<int> level{0};
};
CrcInit& Crc() {
  static CrcInit* init = new CrcInit;  // never destroyed: threads may read at exit
  return *init;
}

// The raw register extended by one piece, on the path of `level`.
uint32_t CrcExtend(int level, uint32_t reg, const uint8_t* p, size_t n) {
#ifdef TBR_X86
  if (level >= 2 && n >= kFoldMinBytes) return CrcFold(reg, p, n);
  if (level >= 1) return CrcHw(reg, p, n);
#endif
  (void)level;
  return CrcTable(reg, p, n);
}

uint32_t Unmask(uint32_t masked) {
  const uint32_t rot = masked - kMaskDelta;
  return (rot >> 17) | (rot << 15);
}

uint32_t Mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kMaskDelta; }

// ------------------------------------------------------------------ permutations

inline uint64_t Mix64(uint64_t x) {  // splitmix64's finalizer
  x *= 0x9E3779B97F4A7C15ull;
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

// A keyed bijection of [0, n): four Feistel rounds on the smallest even
// number of bits covering n, cycle-walking back into [0, n). The same
// function as _format/permutation.py (tests compare them).
class Feistel {
 public:
  Feistel(uint64_t n, uint64_t seed) : n_(n) {
    for (int r = 0; r < 4; r++) keys_[r] = Mix64(seed + static_cast<uint64_t>(r) + 1);
    int bits = 0;
    for (uint64_t m = n - 1; m; m >>= 1) bits++;
    half_ = std::max(1, (bits + 1) / 2);
  }
  uint64_t operator()(uint64_t v) const {
    const uint64_t mask = (1ull << half_) - 1;
    do {
      uint64_t left = v >> half_, right = v & mask;
      for (uint64_t key : keys_) {
        const uint64_t t = right;
        right = left ^ (Mix64(right ^ key) & mask);
        left = t;
      }
      v = (left << half_) | right;
    } while (v >= n_);
    return v;
  }

 private:
  uint64_t n_;
  std::array<uint64_t, 4> keys_{};
  int half_ = 1;
};

// Where row i of a group of n rows goes: a uniform permutation of [0, n)
// keyed by (seed, group) (Fisher-Yates on a splitmix64 stream).
void RowOrder(uint64_t seed, uint64_t group, int64_t n, int64_t* out) {
  uint64_t state = Mix64(Mix64(seed) ^ group);
  for (int64_t i = 0; i < n; i++) out[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    state += 0x9E3779B97F4A7C15ull;
    const uint64_t j = static_cast<uint64_t>(
        (static_cast<unsigned __int128>(Mix64(state)) * static_cast<uint64_t>(i + 1)) >> 64);
    std::swap(out[i], out[j]);
  }
}

// ------------------------------------------------------------------ files

// What identifies a file's content: a shard rewritten by rename is a new file.
using Identity = std::array<int64_t, 4>;  // device, inode, size, mtime in ns

Identity IdentityOf(const struct stat& st) {
  return {static_cast<int64_t>(st.st_dev), static_cast<int64_t>(st.st_ino),
          static_cast<int64_t>(st.st_size),
          static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

// Opens `name` and checks that it is the file `want` names.
bool OpenChecked(const std::string& name, const Identity& want, int* fd, Identity* got,
                 Error* error) {
  *fd = open(name.c_str(), O_RDONLY | O_CLOEXEC);
  if (*fd < 0) {
    error->message = OpenError(name, errno);
    return false;
  }
  struct stat st;
  if (fstat(*fd, &st) != 0) {
    error->message = OpenError(name, errno);
    close(*fd);
    return false;
  }
  *got = IdentityOf(st);
  if (*got != want) {
    error->message = ChangedError(name);
    close(*fd);
    return false;
  }
  return true;
}

// A process-wide cache's lock is held across fork() (PyTorch's and Grain's
// worker processes): a child forked while another thread held it would
// otherwise inherit it locked, and its first read would wait forever.
template <typename Cache>
void HoldAcrossFork() {
  pthread_atfork([] { Cache::Get().mutex().lock(); }, [] { Cache::Get().mutex().unlock(); },
                 [] { Cache::Get().mutex().unlock(); });
}

// The one `made` of a process-wide cache, as its Get() keeps it: never
// destroyed (threads may read at exit), its lock held across fork().
template <typename Cache>
Cache* ForProcess(Cache* made) {
  HoldAcrossFork<Cache>();
  return made;
}

// Open descriptors shared by every reader of the process, keyed by file
// identity, so that readers of one split share them and a reader never reads
// another version of a shard. A reader holds a descriptor only while a read
// uses it; idle ones are closed, least recently used first, past a bound
// derived from RLIMIT_NOFILE.
class Descriptors {
 public:
  static Descriptors& Get() {
    static Descriptors* cache = ForProcess(new Descriptors);
    return *cache;
  }

  bool Acquire(const std::string& name, const Identity& want, int* fd, Error* error) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = open_.find(want);
      if (it != open_.end()) {
        it->second.users++;
        lru_.splice(lru_.begin(), lru_, it->second.position);
        *fd = it->second.fd;
        return true;
      }
    }
    Identity got;
    if (!OpenChecked(name, want, fd, &got, error)) {
      if (error->message.find("too many open files") == std::string::npos) return false;
      CloseIdle(0);  // our idle descriptors first, then once more
      if (!OpenChecked(name, want, fd, &got, error)) return false;
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = open_.find(want);
    if (it != open_.end()) {  // another thread opened it meanwhile
      close(*fd);
      it->second.users++;
      *fd = it->second.fd;
      return true;
    }
    // Idle descriptors of an older file at this path (replaced since) go now:
    // they would hold its disk space while no new reader can use them.
    for (auto it2 = open_.begin(); it2 != open_.end();) {
      if (it2->second.users == 0 && it2->second.name == name) {
        close(it2->second.fd);
        lru_.erase(it2->second.position);
        it2 = open_.erase(it2);
      } else {
        ++it2;
      }
    }
    lru_.push_front(want);
    open_[want] = Entry{*fd, 1, lru_.begin(), name};
    EvictLocked(limit_);
    return true;
  }

  void Release(const Identity& id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = open_.find(id);
    if (it != open_.end()) it->second.users--;
    EvictLocked(limit_);
  }

  int64_t Count() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(open_.size());
  }
  std::mutex& mutex() { return mu_; }
  int64_t Limit() const { return limit_; }

 private:
  struct Entry {
    int fd;
    int users;
    std::list<Identity>::iterator position;
    std::string name;
  };

  Descriptors() {
    // A quarter of the process's descriptors at most: the rest are its own.
    struct rlimit rl;
    int64_t soft = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
      soft = static_cast<int64_t>(rl.rlim_cur);
    }
    limit_ = std::max<int64_t>(4, std::min<int64_t>(256, soft / 4));
  }

  void CloseIdle(int64_t keep) {
    std::lock_guard<std::mutex> lock(mu_);
    EvictLocked(keep);
  }

  void EvictLocked(int64_t keep) {
    for (auto k = lru_.end(); static_cast<int64_t>(open_.size()) > keep && k != lru_.begin();) {
      --k;
      auto it = open_.find(*k);
      if (it->second.users == 0) {
        close(it->second.fd);
        open_.erase(it);
        k = lru_.erase(k);
      }
    }
  }

  std::mutex mu_;
  std::map<Identity, Entry> open_;
  std::list<Identity> lru_;  // most recently used first
  int64_t limit_ = 64;
};

// A whole shard, memory-mapped read-only.
struct Mapping {
  const uint8_t* base = nullptr;
  int64_t len = 0;
  ~Mapping() {
    if (base != nullptr) munmap(const_cast<uint8_t*>(base), static_cast<size_t>(len));
  }
};

// Mappings shared by every reader of the process and kept across epochs,
// keyed by file identity. Unused mappings are dropped, oldest first, past the
// largest total one reader asked for; one in use is never unmapped.
class Mappings {
 public:
  static Mappings& Get() {
    static Mappings* cache = ForProcess(new Mappings);
    return *cache;
  }

  void Reserve(int64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = std::max(limit_, bytes);
  }

  bool Acquire(const std::string& name, const Identity& want,
               std::shared_ptr<const Mapping>* out, Error* error) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = maps_.find(want);
      if (it != maps_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second.second);
        *out = it->second.first;
        return true;
      }
    }
    int fd;
    Identity got;
    if (!OpenChecked(name, want, &fd, &got, error)) return false;
    auto mapping = std::make_shared<Mapping>();
    if (got[2] > 0) {  // an empty shard maps to nothing: every read of it is short
      void* base = mmap(nullptr, static_cast<size_t>(got[2]), PROT_READ, MAP_SHARED, fd, 0);
      if (base == MAP_FAILED) {
        error->message = "Could not memory-map shard " + name + " (" + std::strerror(errno) +
                         "). Read it with read_options(access='random') instead, or raise the "
                         "limit on mappings.";
        close(fd);
        return false;
      }
      // Blocks are read in a shuffled order, announced ahead by WILLNEED. A
      // fault's read-around (the readahead window, 8 MiB on this machine)
      // reads rows nobody asked for yet, evicted before their turn when the
      // data is bigger than memory. docs/design.md#tuning
      madvise(base, static_cast<size_t>(got[2]), MADV_RANDOM);
      mapping->base = static_cast<const uint8_t*>(base);
      mapping->len = got[2];
    }
    close(fd);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = maps_.find(want);
    if (it != maps_.end()) {
      *out = it->second.first;
      return true;
    }
    lru_.push_front(want);
    maps_[want] = {mapping, lru_.begin()};
    total_ += mapping->len;
    for (auto k = lru_.end(); total_ > limit_ && k != lru_.begin();) {
      --k;
      auto m = maps_.find(*k);
      if (m->second.first.use_count() == 1 && m->second.first != mapping) {
        total_ -= m->second.first->len;
        maps_.erase(m);
        k = lru_.erase(k);
      }
    }
    *out = mapping;
    return true;
  }

  int64_t Bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return total_;
  }
  std::mutex& mutex() { return mu_; }

 private:
  std::mutex mu_;
  std::map<Identity, std::pair<std::shared_ptr<const Mapping>, std::list<Identity>::iterator>>
      maps_;
  std::list<Identity> lru_;
  int64_t total_ = 0, limit_ = 0;
};

}  // namespace

// ------------------------------------------------------------------ layout

struct Segment {
  int64_t length;
  int64_t target;  // the output it fills directly, or -1: the junk row
};

struct Output {
  int kind;
  int64_t field_bytes;  // bytes in the record
  int64_t row_bytes;    // bytes of an output row
  bool direct;          // read straight into place, else decoded from the junk row
  int64_t junk_at;      // where its bytes sit in the junk row, if not direct
  std::string name;
};

struct tbr_layout {
  std::vector<Segment> segments;  // a frame, front to back
  std::vector<Output> outputs;
  std::vector<int64_t> expected_at;  // positions in the junk row ...
  std::vector<uint8_t> expected;     // ... and the bytes every frame holds there
  int64_t record_bytes = 0, frame_bytes = 0, junk_bytes = 0, crc_at = 0;
  bool verify = true;
  int rows_per_call = 1;  // rows per scatter read

  std::string OutputName(int64_t i) const { return outputs[i].name; }
};

namespace {

bool BuildLayout(const tbr_layout_config& c, tbr_layout* out, Error* error) {
  if (c.n_fields < 0 || c.n_outputs < 1 || c.n_fields > 1 << 20 || c.n_outputs > 1 << 16) {
    error->message = "tfds_bigarrays read core: malformed layout (field or output counts)";
    return false;
  }
  out->verify = c.verify != 0;
  std::vector<int64_t> field_of(c.n_outputs, -1);
  int64_t record = 0;
  for (int64_t f = 0; f < c.n_fields; f++) {
    const int64_t len = c.field_length[f];
    const int32_t o = c.field_output[f];
    if (len < 0 || len > kMaxFrame || o < -1 || o >= c.n_outputs || (o >= 0 && field_of[o] >= 0)) {
      error->message = "tfds_bigarrays read core: malformed layout (field " + std::to_string(f) + ")";
      return false;
    }
    if (o >= 0) field_of[o] = f;
    record += len;
  }
  if (record > kMaxFrame) {
    error->message = "tfds_bigarrays read core: records this large are not read";
    return false;
  }
  int64_t constant_bytes = 0;
  for (int64_t f = 0; f < c.n_fields; f++) {
    if (c.field_output[f] < 0) constant_bytes += c.field_length[f];
  }
  if (constant_bytes != c.n_constants) {
    error->message = "tfds_bigarrays read core: malformed layout (" + std::to_string(c.n_constants) +
                     " constant bytes for fields of " + std::to_string(constant_bytes) + ")";
    return false;
  }
  out->record_bytes = record;
  out->frame_bytes = record + kHeader + kFooter;
  out->outputs.resize(c.n_outputs);
  std::vector<std::pair<int64_t, int64_t>> candidates;  // (bytes, output): direct if room
  for (int64_t o = 0; o < c.n_outputs; o++) {
    Output& output = out->outputs[o];
    output.kind = c.output_kind[o];
    output.name = c.output_names != nullptr && c.output_names[o] != nullptr ? c.output_names[o]
                                                                            : std::to_string(o);
    if (field_of[o] < 0 || output.kind < TBR_RAW || output.kind > TBR_UINT32_VARINT) {
      error->message = "tfds_bigarrays read core: output " + std::to_string(o) + " has no field";
      return false;
    }
    output.field_bytes = c.field_length[field_of[o]];
    output.row_bytes = output.field_bytes;
    if (output.kind == TBR_UINT32_VARINT) {
      if (output.field_bytes % kVarintWidth) {
        error->message = "tfds_bigarrays read core: varint field of " +
                         std::to_string(output.field_bytes) + " bytes";
        return false;
      }
      output.row_bytes = output.field_bytes / kVarintWidth * 4;
    } else if (output.field_bytes > 0) {
      candidates.push_back({-output.field_bytes, o});
    }
  }
  std::stable_sort(candidates.begin(), candidates.end());
  for (size_t i = 0; i < candidates.size() && i < kMaxDirect; i++) {
    out->outputs[candidates[i].second].direct = true;
  }
  // Segments; junk segments next to each other are merged into one.
  auto add = [&](int64_t len, int64_t target) {
    if (len == 0) return;
    if (target < 0 && !out->segments.empty() && out->segments.back().target < 0 &&
        out->segments.size() > 1) {
      out->segments.back().length += len;
    } else {
      out->segments.push_back({len, target});
    }
  };
  out->segments.push_back({kHeader, -1});  // the length header: outside the CRC
  int64_t junk = kHeader;
  uint8_t header[kHeader];
  const uint64_t length = static_cast<uint64_t>(record);
  std::memcpy(header, &length, 8);
  Crc();
  const uint32_t header_crc = Mask(CrcTable(0xFFFFFFFFu, header, 8) ^ 0xFFFFFFFFu);
  std::memcpy(header + 8, &header_crc, 4);
  for (int64_t i = 0; i < kHeader; i++) {
    out->expected_at.push_back(i);
    out->expected.push_back(header[i]);
  }
  const uint8_t* constant = c.constants;
  for (int64_t f = 0; f < c.n_fields; f++) {
    const int64_t len = c.field_length[f];
    const int32_t o = c.field_output[f];
    if (o >= 0 && out->outputs[o].direct) {
      add(len, o);
      continue;
    }
    if (o < 0) {
      for (int64_t i = 0; i < len; i++) {
        out->expected_at.push_back(junk + i);
        out->expected.push_back(constant[i]);
      }
      constant += len;
    } else {
      out->outputs[o].junk_at = junk;
    }
    add(len, -1);
    junk += len;
  }
  out->crc_at = junk;
  out->segments.push_back({kFooter, -1});  // the stored CRC: a segment of its own
  out->junk_bytes = junk + kFooter;
  // Rows per scatter read: what IOV_MAX allows, and about kScatterBytes, so
  // that the CRC pass after each read finds the rows still in the cache.
  const int64_t n_segs = static_cast<int64_t>(out->segments.size());
  int64_t rows = kIovChunk / n_segs;
  rows = std::min<int64_t>(rows, std::max<int64_t>(1, kScatterBytes / out->frame_bytes));
  out->rows_per_call = static_cast<int>(std::max<int64_t>(1, rows));
  return true;
}

// ------------------------------------------------------------------ reads

// One call's destination: where each segment of each row lands.
struct Job {
  const tbr_layout* layout;
  uint8_t* const* outs;
  const int64_t* dest;  // source row -> output row
  uint8_t* junk;        // source row r's junk at r * junk_bytes
  uint32_t* crcs;       // computed CRC per source row, or null

  uint8_t* Piece(int64_t row, size_t segment, int64_t junk_offset) const {
    const Segment& s = layout->segments[segment];
    return s.target < 0 ? junk + row * layout->junk_bytes + junk_offset
                        : outs[s.target] + dest[row] * s.length;
  }
};

// The CRC32C of source rows [r0, r1), from where their pieces landed.
void CrcRows(const Job& job, int64_t r0, int64_t r1) {
  const auto& segs = job.layout->segments;
  const int level = Crc().level.load(std::memory_order_relaxed);
  const size_t last = segs.size() - 1;  // the stored CRC, outside the record
  int64_t r = r0;
#ifdef TBR_X86
  bool long_piece = false;
  for (size_t j = 1; j < last; j++) long_piece |= static_cast<size_t>(segs[j].length) >= kFoldMinBytes;
  if (level == 1 || (level >= 2 && !long_piece)) {
    for (; r + 4 <= r1; r += 4) {
      uint32_t reg[4] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
      int64_t junk_offset = segs[0].length;
      for (size_t j = 1; j < last; j++) {
        const uint8_t* p[4];
        for (int q = 0; q < 4; q++) p[q] = job.Piece(r + q, j, junk_offset);
        CrcHw4(reg, p, static_cast<size_t>(segs[j].length));
        if (segs[j].target < 0) junk_offset += segs[j].length;
      }
      for (int q = 0; q < 4; q++) job.crcs[r + q] = reg[q] ^ 0xFFFFFFFFu;
    }
  }
#endif
  for (; r < r1; r++) {
    uint32_t reg = 0xFFFFFFFFu;
    int64_t junk_offset = segs[0].length;
    for (size_t j = 1; j < last; j++) {
      reg = CrcExtend(level, reg, job.Piece(r, j, junk_offset), static_cast<size_t>(segs[j].length));
      if (segs[j].target < 0) junk_offset += segs[j].length;
    }
    job.crcs[r] = reg ^ 0xFFFFFFFFu;
  }
}

// Copies `count` whole frames at `from` into source rows row.. of the job.
void CopyFrames(const Job& job, const uint8_t* from, int64_t row, int64_t count) {
  const auto& segs = job.layout->segments;
  const int64_t step = job.layout->rows_per_call;
  for (int64_t done = 0; done < count; done += step) {
    const int64_t batch = std::min(step, count - done);
    for (int64_t r = row + done; r < row + done + batch; r++) {
      int64_t junk_offset = 0;
      for (size_t j = 0; j < segs.size(); j++) {
        std::memcpy(job.Piece(r, j, junk_offset), from, static_cast<size_t>(segs[j].length));
        if (segs[j].target < 0) junk_offset += segs[j].length;
        from += segs[j].length;
      }
    }
    if (job.crcs != nullptr) CrcRows(job, row + done, row + done + batch);
  }
}

// Reads `count` whole frames at byte `offset` of `fd` into source rows
// row.. of the job with scatter reads. Returns the bytes read before a short
// read (and sets *err to its errno, 0 for the end of the file), or -1.
int64_t ReadFrames(const Job& job, int fd, int64_t offset, int64_t row, int64_t count,
                   std::vector<struct iovec>* iov, int* err) {
  const auto& segs = job.layout->segments;
  const int64_t frame = job.layout->frame_bytes;
  const int64_t step = job.layout->rows_per_call;
  for (int64_t done = 0; done < count; done += step) {
    const int64_t batch = std::min(step, count - done);
    size_t n_iov = 0;
    for (int64_t r = row + done; r < row + done + batch; r++) {
      int64_t junk_offset = 0;
      for (size_t j = 0; j < segs.size(); j++) {
        (*iov)[n_iov].iov_base = job.Piece(r, j, junk_offset);
        (*iov)[n_iov].iov_len = static_cast<size_t>(segs[j].length);
        n_iov++;
        if (segs[j].target < 0) junk_offset += segs[j].length;
      }
    }
    // preadv may stop short (signals, the end of the file): go on from there.
    const size_t want = static_cast<size_t>(batch * frame);
    size_t have = 0, first = 0;
    while (have < want) {
      const ssize_t m = preadv(fd, iov->data() + first, static_cast<int>(n_iov - first),
                               static_cast<off_t>(offset + done * frame + static_cast<int64_t>(have)));
      if (m < 0 && errno == EINTR) continue;
      if (m <= 0) {
        *err = m < 0 ? errno : 0;
        return done * frame + static_cast<int64_t>(have);
      }
      have += static_cast<size_t>(m);
      size_t left = static_cast<size_t>(m);
      while (left > 0) {
        if (left >= (*iov)[first].iov_len) {
          left -= (*iov)[first].iov_len;
          first++;
        } else {
          (*iov)[first].iov_base = static_cast<uint8_t*>((*iov)[first].iov_base) + left;
          (*iov)[first].iov_len -= left;
          left = 0;
        }
      }
    }
    if (job.crcs != nullptr) CrcRows(job, row + done, row + done + batch);
  }
  return -1;
}

// A run of whole frames of one source: frames first.. of read `read`.
struct Run {
  int64_t read;   // index of the reader's read (or of the decoded buffer)
  int64_t frame;  // first frame, within its shard
  int64_t count;
};

// The shards of the flagged rows, sorted, comma-separated, and the first
// flagged row as "row R of NAME" (when rows are known).
std::string NamesOf(const std::vector<uint8_t>& bad, const std::vector<Run>& runs,
                    const std::vector<std::string>& names, bool rows_known, std::string* first) {
  std::vector<std::string> found;
  int64_t row = 0;
  first->clear();
  for (const Run& run : runs) {
    for (int64_t i = 0; i < run.count; i++) {
      if (bad[row + i]) {
        found.push_back(names[run.read]);
        if (first->empty() && rows_known) {
          *first = "row " + std::to_string(run.frame + i) + " of " + names[run.read];
        }
        break;
      }
    }
    row += run.count;
  }
  std::sort(found.begin(), found.end());
  found.erase(std::unique(found.begin(), found.end()), found.end());
  std::string out;
  for (const auto& name : found) out += (out.empty() ? "" : ", ") + name;
  return out;
}

// After the reads: the frame checks, then the outputs that need decoding.
bool Finish(const Job& job, int64_t n, const std::vector<Run>& runs,
            const std::vector<std::string>& names, bool rows_known, Error* error) {
  const tbr_layout& lay = *job.layout;
  std::vector<uint8_t> bad(static_cast<size_t>(n), 0);
  bool any = false;
  for (int64_t r = 0; r < n; r++) {
    const uint8_t* row = job.junk + r * lay.junk_bytes;
    for (size_t i = 0; i < lay.expected_at.size(); i++) {
      if (row[lay.expected_at[i]] != lay.expected[i]) {
        bad[r] = 1;
        any = true;
        break;
      }
    }
  }
  std::string first;
  auto where = [&]() { return first.empty() ? std::string() : " (the first at " + first + ")"; };
  if (any) {
    const std::string shards = NamesOf(bad, runs, names, rows_known, &first);
    error->message = "tfds_bigarrays: shard " + shards +
                     " holds a record that does not match the dataset's layout "
                     "(tfds_bigarrays.json)" + where() +
                     "; it is corrupt or from another dataset. Rebuild the dataset or restore "
                     "the shard.";
    return false;
  }
  if (job.crcs != nullptr) {
    for (int64_t r = 0; r < n; r++) {
      uint32_t stored;
      std::memcpy(&stored, job.junk + r * lay.junk_bytes + lay.crc_at, 4);
      if (Unmask(stored) != job.crcs[r]) bad[r] = any = true;
    }
    if (any) {
      const std::string shards = NamesOf(bad, runs, names, rows_known, &first);
      error->message = "tfds_bigarrays: shard " + shards +
                       " has records whose CRC32C does not match (bit rot or an altered "
                       "file)" + where() + ". Rebuild the dataset or restore the shard.";
      return false;
    }
  }
  for (size_t o = 0; o < lay.outputs.size(); o++) {
    const Output& out = lay.outputs[o];
    if (out.row_bytes == 0) continue;
    uint8_t* base = job.outs[o];
    if (out.kind == TBR_BOOL) {
      for (int64_t r = 0; r < n; r++) {
        uint8_t* to = base + job.dest[r] * out.row_bytes;
        const uint8_t* from = out.direct ? to : job.junk + r * lay.junk_bytes + out.junk_at;
        for (int64_t i = 0; i < out.row_bytes; i++) to[i] = from[i] != 0;
      }
    } else if (out.kind == TBR_RAW && !out.direct && out.row_bytes > 0) {
      for (int64_t r = 0; r < n; r++) {
        std::memcpy(base + job.dest[r] * out.row_bytes, job.junk + r * lay.junk_bytes + out.junk_at,
                    static_cast<size_t>(out.row_bytes));
      }
    } else if (out.kind == TBR_UINT32_VARINT) {
      const int64_t values = out.field_bytes / kVarintWidth;
      for (int64_t r = 0; r < n; r++) {
        const uint8_t* from = job.junk + r * lay.junk_bytes + out.junk_at;
        uint8_t* to = base + job.dest[r] * out.row_bytes;
        for (int64_t v = 0; v < values; v++, from += kVarintWidth) {
          // What the writer writes: continuation bits on the first four bytes and
          // at most four bits in the last. Anything else would wrap silently.
          uint32_t value = 0;
          bool ok = from[4] < 0x10;
          for (int i = 0; i < 4; i++) {
            ok &= (from[i] & 0x80) != 0;
            value |= static_cast<uint32_t>(from[i] & 0x7F) << (7 * i);
          }
          value |= static_cast<uint32_t>(from[4]) << 28;
          if (!ok) {
            bad[r] = any = true;
            break;
          }
          std::memcpy(to + 4 * v, &value, 4);
        }
      }
      if (any) {
        const std::string shards = NamesOf(bad, runs, names, rows_known, &first);
        error->message = "tfds_bigarrays: shard " + shards + ": Feature '" + out.name +
                         "': malformed fixed-width uint32 varints" + where() +
                         "; the record is corrupt or from another dataset.";
        return false;
      }
    }
  }
  return true;
}

// Whether fill_pieces works in this process: off for good once the kernel
// refused a huge-page fill.
std::atomic<bool>& FillWorks() {
  static std::atomic<bool>* works = new std::atomic<bool>(true);  // never destroyed
  return *works;
}

// The files whose pieces FillPieces found cached where it cannot ask the
// cache (see Cached): their runs are only announced. For the process, not a
// reader: every epoch makes new readers, and each would fault its
// look-ahead's pieces again.
class WarmFiles {
 public:
  static WarmFiles& Get() {
    static WarmFiles* files = ForProcess(new WarmFiles);
    return *files;
  }
  std::mutex& mutex() { return mu_; }
  bool Has(const Identity& file) {
    std::lock_guard<std::mutex> lock(mu_);
    return warm_.count(file) > 0;
  }
  void Set(const Identity& file, bool warm) {
    std::lock_guard<std::mutex> lock(mu_);
    if (warm) {
      warm_.insert(file);
    } else {
      warm_.erase(file);
    }
  }

 private:
  std::mutex mu_;
  std::set<Identity> warm_;
};

// Whether bytes [from, to) of `fd` are all in the page cache (1), not (0), or
// not to be told (-1): cachestat arrived in Linux 6.5 and, like mincore,
// answers only for files the process owns or may write. A read that may not
// wait would not do: it starts a readahead of 4 KiB pages.
int Cached(int fd, int64_t from, int64_t to) {
  struct {
    uint64_t off, len;
  } range = {static_cast<uint64_t>(from), static_cast<uint64_t>(to - from)};
  struct {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
  } stat = {};
  if (syscall(kCachestat, fd, &range, &stat, 0) != 0) return -1;
  const int64_t page = sysconf(_SC_PAGESIZE);
  return static_cast<int64_t>(stat.nr_cache) >= (to - 1) / page - from / page + 1 ? 1 : 0;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

double SecondsPerRun(std::chrono::steady_clock::time_point start, size_t runs) {
  return Seconds(start) / static_cast<double>(std::max<size_t>(1, runs));
}

}  // namespace

// ------------------------------------------------------------------ reader

struct File {
  std::string name;
  Identity identity;
};

struct tbr_reader {
  tbr_layout layout;
  std::vector<File> files;
  std::vector<int64_t> file_of_read, skips, starts;  // starts: one longer than reads
  std::vector<std::string> read_names;
  int64_t block_rows = 1, group_blocks = 1, window_groups = 1, lookahead = 0, read_threads = 1;
  int64_t num_rows = 0, num_blocks = 0, num_groups = 0;
  bool shuffle = false, mapped = false, fill_pieces = false;
  // Whether the shards seem to be on disk rather than in the page cache (the
  // last read was slow, or announcing blocks took the kernel time): only then
  // is every group's look-ahead announced. Races only blur a hint.
  std::atomic<bool> cold{true}, slow_read{true};
  std::atomic<int> countdown{0};

  std::vector<int64_t> Blocks(int64_t group, uint64_t seed) const;
  std::vector<Run> Runs(const std::vector<int64_t>& blocks) const;
  std::vector<Run> RunsOfRows(const int64_t* sorted, int64_t n) const;
  std::vector<Run> Dealt(int64_t group, uint64_t seed, int64_t n, int64_t* dest) const;
  bool ReadRuns(const Run* runs, size_t n_runs, int64_t row, const Job& job, Error* error);
  double Advise(const std::vector<Run>& runs);
  double FillPieces(const std::vector<Run>& runs);
  bool Read(const std::vector<Run>& runs, int64_t n, const int64_t* dest, uint8_t* const* outs,
            Error* error);
};

// Position p of an epoch holds full block Feistel(p) (keyed by the epoch
// seed); the short last block, if any, stays last.
class BlockOrder {
 public:
  BlockOrder(const tbr_reader& r, uint64_t seed)
      : full_(r.num_rows / r.block_rows),
        shuffle_(r.shuffle && full_ >= 2),
        perm_(static_cast<uint64_t>(std::max<int64_t>(full_, 1)), seed) {}
  int64_t operator()(int64_t p) const {
    return shuffle_ && p < full_ ? static_cast<int64_t>(perm_(static_cast<uint64_t>(p))) : p;
  }

 private:
  int64_t full_;
  bool shuffle_;
  Feistel perm_;
};

std::vector<int64_t> tbr_reader::Blocks(int64_t group, uint64_t seed) const {
  const int64_t first = group * group_blocks;
  const int64_t last = std::min(first + group_blocks, num_blocks);
  std::vector<int64_t> blocks;
  blocks.reserve(static_cast<size_t>(std::max<int64_t>(0, last - first)));
  const BlockOrder order(*this, seed);
  for (int64_t p = first; p < last; p++) blocks.push_back(order(p));
  return blocks;
}

// Runs of whole frames inside single reads; a block across two reads is two runs.
std::vector<Run> tbr_reader::Runs(const std::vector<int64_t>& blocks) const {
  std::vector<Run> runs;
  for (int64_t b : blocks) {
    int64_t lo = b * block_rows;
    const int64_t hi = std::min(lo + block_rows, num_rows);
    while (lo < hi) {
      const int64_t r = std::upper_bound(starts.begin(), starts.end(), lo) - starts.begin() - 1;
      const int64_t end = std::min(hi, starts[r + 1]);
      if (end > lo) runs.push_back({r, lo - starts[r] + skips[r], end - lo});
      lo = end;
    }
  }
  return runs;
}

// Runs of split rows given in ascending order; adjacent rows of one read merge.
std::vector<Run> tbr_reader::RunsOfRows(const int64_t* sorted, int64_t n) const {
  std::vector<Run> runs;
  for (int64_t k = 0; k < n; k++) {
    const int64_t row = sorted[k];
    const int64_t r = std::upper_bound(starts.begin(), starts.end(), row) - starts.begin() - 1;
    const int64_t frame = row - starts[r] + skips[r];
    if (!runs.empty() && runs.back().read == r && runs.back().frame + runs.back().count == frame) {
      runs.back().count++;
    } else {
      runs.push_back({r, frame, 1});
    }
  }
  return runs;
}

// A shuffled group when windows deal rows: epoch positions are cut into
// windows of `window_groups` groups' rows; slot s of a window holds the
// window's position Feistel(s) (keyed by seed and window), position e holds
// row e % block_rows of the block at e / block_rows (as in Blocks), and a
// group takes its slots in order. Rows of one block are thus spread over the
// window's groups, while the disk still reads whole blocks (they are
// announced, a window ahead, by the look-ahead of Blocks).
std::vector<Run> tbr_reader::Dealt(int64_t group, uint64_t seed, int64_t n, int64_t* dest) const {
  const int64_t rows = block_rows * group_blocks;
  const int64_t window = group / window_groups;
  const int64_t first = window * window_groups * rows;
  const int64_t size = std::min(num_rows, first + window_groups * rows) - first;
  const Feistel deal(static_cast<uint64_t>(size), Mix64(Mix64(seed) ^ static_cast<uint64_t>(window + 1)));
  const BlockOrder blocks(*this, seed);
  const int64_t slot0 = group * rows - first;
  std::vector<std::pair<int64_t, int64_t>> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) {
    const int64_t e = first + static_cast<int64_t>(deal(static_cast<uint64_t>(slot0 + i)));
    order[i] = {blocks(e / block_rows) * block_rows + e % block_rows, i};
  }
  std::sort(order.begin(), order.end());
  std::vector<int64_t> sorted(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) {
    sorted[i] = order[i].first;
    dest[i] = order[i].second;
  }
  return RunsOfRows(sorted.data(), n);
}

// Reads runs[0, n_runs) into source rows row.. of the job.
bool tbr_reader::ReadRuns(const Run* runs, size_t n_runs, int64_t row, const Job& job,
                          Error* error) {
  std::vector<struct iovec> iov(kIovChunk);
  const int64_t frame = layout.frame_bytes;
  const int64_t row0 = row;
  const auto start = std::chrono::steady_clock::now();
  // The file of the previous run stays acquired while runs stay in it (dealt
  // rows come one run per row, sorted): one cache lookup per file, not per run.
  int64_t held = -1;
  int fd = -1;
  std::shared_ptr<const Mapping> m;
  const auto release = [&]() {
    if (held >= 0 && !mapped) Descriptors::Get().Release(files[held].identity);
    held = -1;
    m.reset();
  };
  for (size_t k = 0; k < n_runs; k++) {
    const Run& run = runs[k];
    const int64_t index = file_of_read[run.read];
    const File& file = files[index];
    if (index != held) {
      release();
      const bool ok = mapped ? Mappings::Get().Acquire(file.name, file.identity, &m, error)
                             : Descriptors::Get().Acquire(file.name, file.identity, &fd, error);
      if (!ok) return false;
      held = index;
    }
    const int64_t offset = run.frame * frame;
    int64_t got = -1;
    int err = 0;
    if (mapped) {
      const int64_t avail = offset <= m->len ? m->len - offset : -1;
      if (avail < run.count * frame) {
        got = std::max<int64_t>(0, avail);
      } else {
        CopyFrames(job, m->base + offset, row, run.count);
      }
    } else {
      got = ReadFrames(job, fd, offset, row, run.count, &iov, &err);
    }
    if (got >= 0) {
      release();
      const std::string why = err ? std::string(std::strerror(err))
                                  : "it ended " + std::to_string(got) + " bytes into a read";
      error->message = "Shard " + file.name + " could not be read at row " +
                       std::to_string(run.frame) + " (" + why +
                       "): it was truncated or altered after the build. Rebuild the dataset, or "
                       "restore the shard.";
      return false;
    }
    row += run.count;
  }
  release();
  slow_read = Seconds(start) * kWarmBytesPerS > static_cast<double>((row - row0) * frame);
  return true;
}

// Asks the kernel to start reading `runs` (or, with fill_pieces, reads the
// pieces that hold them); the seconds it took per run.
double tbr_reader::Advise(const std::vector<Run>& runs) {
  if (fill_pieces && !mapped && FillWorks().load()) return FillPieces(runs);
  const auto start = std::chrono::steady_clock::now();
  const int64_t frame = layout.frame_bytes;
  const int64_t page = sysconf(_SC_PAGESIZE);
  Error ignored;
  for (const Run& run : runs) {
    const File& file = files[file_of_read[run.read]];
    if (mapped) {
      std::shared_ptr<const Mapping> m;
      if (!Mappings::Get().Acquire(file.name, file.identity, &m, &ignored) || !m->base) continue;
      const int64_t from = run.frame * frame / page * page;
      const int64_t to = std::min(m->len, (run.frame + run.count) * frame);
      if (to > from) madvise(const_cast<uint8_t*>(m->base) + from, to - from, MADV_WILLNEED);
      continue;
    }
    int fd;
    if (!Descriptors::Get().Acquire(file.name, file.identity, &fd, &ignored)) continue;
    posix_fadvise(fd, run.frame * frame, run.count * frame, POSIX_FADV_WILLNEED);
    Descriptors::Get().Release(file.identity);
  }
  return SecondsPerRun(start, runs.size());
}

// Reads the aligned kPieceBytes pieces holding `runs` into the page cache,
// where a run's rows are not all there yet, through a short-lived
// mapping that asks for huge pages: the kernel then reads each piece as one
// huge folio. WILLNEED and random preads fill the cache with 4 KiB pages,
// which a pread later copies from at about two thirds of the speed
// (docs/page_cache_copy.md). The pieces are mapped only while the call runs
// (one run's pieces at a time: a block's, two at most for blocks up to
// 2 MiB), and it blocks the caller for the disk. The seconds it took per
// run, 0 if nothing had to be read.
//
// Where the cache cannot be asked (see Cached), the run's first page in each
// of its pieces is faulted alone: a huge-page fault on a page not cached reads the
// whole piece, one on a cached page (4 KiB or huge) only maps it. Their
// time tells which it was (docs/design.md#tuning), and the run is announced
// too, for pages of a piece cached only in part. Once a call's faults on a
// file were all fast, the process only announces its runs (a mapping costs
// about 30 us of CPU a run while other threads read), until announcing one
// takes the kernel time.
double tbr_reader::FillPieces(const std::vector<Run>& runs) {
  const auto start = std::chrono::steady_clock::now();
  const int64_t frame = layout.frame_bytes;
  const int64_t page = sysconf(_SC_PAGESIZE);
  bool filled = false;
  // Of the files that could not be asked about: whether a fault on each was
  // slow, and which took the kernel time to announce a run.
  std::map<int64_t, bool> probed;
  std::set<int64_t> evicted;
  Error ignored;
  for (const Run& run : runs) {
    const int64_t index = file_of_read[run.read];
    const File& file = files[index];
    const int64_t size = file.identity[2];
    const int64_t from = run.frame * frame;
    const int64_t to = std::min(size, from + run.count * frame);
    if (to <= from) continue;  // unknown size or past the end: the read reports it
    int fd;
    if (!Descriptors::Get().Acquire(file.name, file.identity, &fd, &ignored)) continue;
    const int cached = Cached(fd, from, to);
    if (cached == -1 && WarmFiles::Get().Has(file.identity)) {
      filled = true;  // announced alone, as Advise does
      const auto t = std::chrono::steady_clock::now();
      posix_fadvise(fd, from, to - from, POSIX_FADV_WILLNEED);
      if (Seconds(t) > kColdHintSeconds) evicted.insert(index);
    } else if (cached != 1) {
      bool done = false, announce = true;
      const int64_t p0 = from / kPieceBytes * kPieceBytes;
      const size_t len = static_cast<size_t>(
          std::min(size, (to + kPieceBytes - 1) / kPieceBytes * kPieceBytes) - p0);
      void* base = FillWorks().load() ? mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, p0)
                                      : MAP_FAILED;
      if (base != MAP_FAILED) {
        uint8_t* const at = static_cast<uint8_t*>(base);
        // MADV_RANDOM: a huge-page fault otherwise reads the next piece too.
        done = madvise(base, len, MADV_RANDOM) == 0 && madvise(base, len, MADV_HUGEPAGE) == 0;
        if (done && cached == 0) {
          done = madvise(base, len, kPopulateRead) == 0;
          announce = !done;
        }
        for (int64_t p = p0; done && cached != 0 && p < to; p += kPieceBytes) {
          const auto t = std::chrono::steady_clock::now();
          done = madvise(at + std::max(p, from) / page * page - p0, page, kPopulateRead) == 0;
          if (!done) break;  // errno is the fault's
          const bool cold_fault = Seconds(t) > kColdFaultSeconds;
          probed[index] = probed[index] || cold_fault;
          if (cold_fault) filled = true;
        }
        if (!done && errno == EINVAL) FillWorks() = false;  // before Linux 5.14, or no THP
        munmap(base, len);
      }
      if (cached == 0 || !done) filled = true;  // read, or announced alone as Advise does
      if (announce) posix_fadvise(fd, from, to - from, POSIX_FADV_WILLNEED);
    }
    Descriptors::Get().Release(file.identity);
  }
  // A file is warm once a call's faults on it were all fast, and cold again
  // once announcing one of its runs took the kernel time (pieces evicted).
  for (const auto& [index, cold_fault] : probed) WarmFiles::Get().Set(files[index].identity, !cold_fault);
  for (const int64_t index : evicted) WarmFiles::Get().Set(files[index].identity, false);
  return filled ? SecondsPerRun(start, runs.size()) : 0;
}

bool tbr_reader::Read(const std::vector<Run>& runs, int64_t n, const int64_t* dest,
                      uint8_t* const* outs, Error* error) {
  std::vector<uint8_t> junk(static_cast<size_t>(n * layout.junk_bytes));
  std::vector<uint32_t> crcs(layout.verify ? static_cast<size_t>(n) : 0);
  const Job job{&layout, outs, dest, junk.data(), layout.verify ? crcs.data() : nullptr};
  // Big outputs are usually fresh mappings (allocations past malloc's mmap
  // threshold), first touched here: huge pages fault them in 2 MiB at a time
  // instead of 4 KiB (docs/design.md#tuning). Pages already faulted stay as
  // they are; the flag stays on memory the allocator hands out again.
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  for (size_t i = 0; i < layout.outputs.size(); i++) {
    const int64_t bytes = n * layout.outputs[i].row_bytes;
    if (bytes < kHugeOutputBytes) continue;
    // Whole pages around the output: the kernel uses a huge page wherever an
    // aligned 2 MiB range of the mapping has the flag.
    const uintptr_t from = reinterpret_cast<uintptr_t>(outs[i]) & ~(page - 1);
    const uintptr_t to = (reinterpret_cast<uintptr_t>(outs[i]) + static_cast<uintptr_t>(bytes) + page - 1) & ~(page - 1);
    madvise(reinterpret_cast<void*>(from), to - from, MADV_HUGEPAGE);
  }
  // A big group is cut into `read_threads` parts of about equal rows, each
  // read (copied, CRC'd) by its own thread: one group can use every core
  // when the budget allows only one group in flight.
  const int64_t parts =
      std::min<int64_t>(read_threads, n * layout.frame_bytes / kMinThreadBytes);
  if (parts <= 1) {
    return ReadRuns(runs.data(), runs.size(), 0, job, error) &&
           Finish(job, n, runs, read_names, true, error);
  }
  std::vector<size_t> cut{0};
  std::vector<int64_t> first_row{0};
  int64_t row = 0;
  for (size_t k = 0; k < runs.size(); k++) {
    row += runs[k].count;
    if (row * parts >= n * static_cast<int64_t>(cut.size()) && cut.size() < static_cast<size_t>(parts) &&
        k + 1 < runs.size()) {
      cut.push_back(k + 1);
      first_row.push_back(row);
    }
  }
  cut.push_back(runs.size());
  std::vector<Error> errors(cut.size() - 1);
  std::vector<char> ok(cut.size() - 1, 0);
  // Nothing may unwind out of a part (a helper would terminate the process),
  // and a part whose thread cannot start is read by this one.
  const auto part = [&](size_t i) {
    try {
      ok[i] = ReadRuns(runs.data() + cut[i], cut[i + 1] - cut[i], first_row[i], job, &errors[i]);
    } catch (const std::exception& e) {
      errors[i].message = std::string("tfds_bigarrays read core: ") + e.what();
    }
  };
  std::vector<std::thread> helpers;
  std::vector<size_t> inline_parts{0};
  for (size_t i = 1; i + 1 < cut.size(); i++) {
    try {
      helpers.emplace_back(part, i);
    } catch (const std::exception&) {
      inline_parts.push_back(i);
    }
  }
  for (size_t i : inline_parts) part(i);
  for (auto& t : helpers) t.join();
  for (size_t i = 0; i < ok.size(); i++) {
    if (!ok[i]) {
      *error = errors[i];
      return false;
    }
  }
  return Finish(job, n, runs, read_names, true, error);
}

// ------------------------------------------------------------------ C API

extern "C" {

tbr_layout* tbr_layout_new(const tbr_layout_config* config, char* err, size_t errlen) {
  return Guarded<tbr_layout*>(err, errlen, nullptr, [&]() -> tbr_layout* {
    auto layout = std::make_unique<tbr_layout>();
    Error error;
    if (!BuildLayout(*config, layout.get(), &error)) {
      Fill(err, errlen, error.message);
      return nullptr;
    }
    return layout.release();
  });
}

void tbr_layout_free(tbr_layout* layout) { delete layout; }

int64_t tbr_frame_bytes(const tbr_layout* layout) { return layout->frame_bytes; }

int64_t tbr_output_row_bytes(const tbr_layout* layout, int64_t i) {
  return i >= 0 && i < static_cast<int64_t>(layout->outputs.size()) ? layout->outputs[i].row_bytes
                                                                    : -1;
}

int64_t tbr_decode_rows(const tbr_layout* layout, int64_t n_bufs, const int64_t* lens,
                        const char* const* names, char* err, size_t errlen) {
  return Guarded<int64_t>(err, errlen, -1, [&]() -> int64_t {
    int64_t rows = 0;
    for (int64_t i = 0; i < n_bufs; i++) {
      if (lens[i] < 0 || lens[i] % layout->frame_bytes) {
        Fill(err, errlen,
             "Shard " + std::string(names[i]) + " gave a block of " + std::to_string(lens[i]) +
                 " bytes, not whole records of " + std::to_string(layout->frame_bytes) +
                 " bytes: it was truncated or altered after the build. Rebuild the dataset, or "
                 "restore the shard.");
        return -1;
      }
      rows += lens[i] / layout->frame_bytes;
    }
    return rows;
  });
}

int tbr_decode(const tbr_layout* layout, int64_t n_bufs, const uint8_t* const* bufs,
               const int64_t* lens, const char* const* names, const int64_t* first_rows,
               const int64_t* dest, uint8_t* const* outs, char* err, size_t errlen) {
  return Guarded<int>(err, errlen, -1, [&]() -> int {
    const int64_t n = tbr_decode_rows(layout, n_bufs, lens, names, err, errlen);
    if (n < 0) return -1;
    std::vector<int64_t> identity;
    if (dest == nullptr) {
      identity.resize(static_cast<size_t>(n));
      for (int64_t r = 0; r < n; r++) identity[r] = r;
      dest = identity.data();
    } else {
      std::vector<uint8_t> seen(static_cast<size_t>(n), 0);
      for (int64_t r = 0; r < n; r++) {
        if (dest[r] < 0 || dest[r] >= n || seen[dest[r]]) {
          Fill(err, errlen, "tfds_bigarrays read core: dest is not a permutation of the rows");
          return -1;
        }
        seen[dest[r]] = 1;
      }
    }
    std::vector<uint8_t> junk(static_cast<size_t>(n * layout->junk_bytes));
    std::vector<uint32_t> crcs(layout->verify ? static_cast<size_t>(n) : 0);
    const Job job{layout, outs, dest, junk.data(), layout->verify ? crcs.data() : nullptr};
    std::vector<Run> runs;
    std::vector<std::string> buf_names;
    int64_t row = 0;
    for (int64_t i = 0; i < n_bufs; i++) {
      const int64_t count = lens[i] / layout->frame_bytes;
      CopyFrames(job, bufs[i], row, count);
      runs.push_back({i, first_rows != nullptr ? first_rows[i] : 0, count});
      buf_names.emplace_back(names[i]);
      row += count;
    }
    Error error;
    if (!Finish(job, n, runs, buf_names, first_rows != nullptr, &error)) {
      Fill(err, errlen, error.message);
      return -1;
    }
    return 0;
  });
}

tbr_reader* tbr_reader_new(const tbr_reader_config* c, char* err, size_t errlen) {
  return Guarded<tbr_reader*>(err, errlen, nullptr, [&]() -> tbr_reader* {
    auto reader = std::make_unique<tbr_reader>();
    Error error;
    if (!BuildLayout(c->layout, &reader->layout, &error)) {
      Fill(err, errlen, error.message);
      return nullptr;
    }
    if (c->n_reads < 0 || c->block_rows < 1 || c->group_blocks < 1 || c->lookahead < 0 ||
        c->block_rows > kMaxRows || c->group_blocks > (int64_t{1} << 31) / c->block_rows ||
        c->window_groups < 1 || c->window_groups > kMaxRows / (c->block_rows * c->group_blocks) ||
        c->read_threads < 1 || c->read_threads > 64) {
      Fill(err, errlen, "tfds_bigarrays read core: malformed reader (blocks, groups, windows or threads)");
      return nullptr;
    }
    reader->block_rows = c->block_rows;
    reader->group_blocks = c->group_blocks;
    reader->window_groups = c->window_groups;
    reader->read_threads = c->read_threads;
    reader->lookahead = c->lookahead;
    reader->shuffle = c->shuffle != 0;
    reader->mapped = c->mapped != 0;
    reader->fill_pieces = c->fill_pieces != 0;
    reader->starts.push_back(0);
    std::map<std::string, int64_t> file_index;
    int64_t mapped_bytes = 0;
    for (int64_t i = 0; i < c->n_reads; i++) {
      // Every byte offset of a read fits int64 (frame_bytes <= 2^31, rows <= 2^40).
      if (c->skips[i] < 0 || c->takes[i] < 0 || c->skips[i] > kMaxRows || c->takes[i] > kMaxRows ||
          reader->starts.back() + c->takes[i] > kMaxRows ||
          c->skips[i] + c->takes[i] > (int64_t{1} << 62) / reader->layout.frame_bytes) {
        Fill(err, errlen, "tfds_bigarrays read core: read " + std::to_string(i) +
                              " has a negative or huge skip or size");
        return nullptr;
      }
      const std::string name = c->names[i];
      auto it = file_index.find(name);
      if (it == file_index.end()) {
        File file{name, {-1, -1, -1, -1}};
        if (c->identities != nullptr) {
          std::copy(c->identities + 4 * i, c->identities + 4 * i + 4, file.identity.begin());
        } else {
          struct stat st;
          if (stat(name.c_str(), &st) == 0) file.identity = IdentityOf(st);
        }
        mapped_bytes += std::max<int64_t>(0, file.identity[2]);
        it = file_index.emplace(name, static_cast<int64_t>(reader->files.size())).first;
        reader->files.push_back(file);
      }
      reader->file_of_read.push_back(it->second);
      reader->read_names.push_back(name);
      reader->skips.push_back(c->skips[i]);
      reader->starts.push_back(reader->starts.back() + c->takes[i]);
    }
    reader->num_rows = reader->starts.back();
    reader->num_blocks = (reader->num_rows + reader->block_rows - 1) / reader->block_rows;
    reader->num_groups = (reader->num_blocks + reader->group_blocks - 1) / reader->group_blocks;
    if (reader->mapped) Mappings::Get().Reserve(mapped_bytes);
    return reader.release();
  });
}

void tbr_reader_free(tbr_reader* reader) { delete reader; }

const tbr_layout* tbr_reader_layout(const tbr_reader* reader) { return &reader->layout; }
int64_t tbr_num_rows(const tbr_reader* reader) { return reader->num_rows; }
int64_t tbr_num_groups(const tbr_reader* reader) { return reader->num_groups; }

int64_t tbr_group_rows(const tbr_reader* reader, int64_t group) {
  if (group < 0 || group >= reader->num_groups) return 0;
  const int64_t rows = reader->block_rows * reader->group_blocks;
  return std::min(reader->num_rows, (group + 1) * rows) - group * rows;
}

int tbr_read_group(tbr_reader* reader, int64_t group, uint64_t seed, uint8_t* const* outs,
                   char* err, size_t errlen) {
  return Guarded<int>(err, errlen, -1, [&]() -> int {
    if (group < 0 || group >= reader->num_groups) {
      Fill(err, errlen, "group=" + std::to_string(group) + " is not in [0, " +
                            std::to_string(reader->num_groups) + ").");
      return -1;
    }
    seed &= kSeedMask;
    const int64_t ahead = group + reader->lookahead;
    const int64_t window = reader->window_groups;
    if (window > 1 && group % window == 0 && group < reader->lookahead && reader->cold.load()) {
      // The groups below the look-ahead are announced by no earlier group:
      // announce their blocks as their window starts (its rows come from all of them).
      for (int64_t g = group; g < std::min({group + window, reader->lookahead, reader->num_groups}); g++) {
        reader->Advise(reader->Runs(reader->Blocks(g, seed)));
      }
    }
    if (reader->lookahead > 0 && ahead < reader->num_groups) {
      // While cold, announce every group's look-ahead; while warm, probe now and then.
      if (--reader->countdown <= 0 || reader->cold.load()) {
        reader->countdown = kWarmProbeEvery;
        const double per_run = reader->Advise(reader->Runs(reader->Blocks(ahead, seed)));
        reader->cold = per_run > kColdHintSeconds || reader->slow_read.load();
      }
    }
    const int64_t n = tbr_group_rows(reader, group);
    std::vector<int64_t> dest(static_cast<size_t>(n));
    std::vector<Run> runs;
    if (reader->shuffle && reader->window_groups > 1) {
      runs = reader->Dealt(group, seed, n, dest.data());
    } else {
      runs = reader->Runs(reader->Blocks(group, seed));
      if (reader->shuffle) {
        RowOrder(seed, static_cast<uint64_t>(group), n, dest.data());
      } else {
        for (int64_t i = 0; i < n; i++) dest[i] = i;
      }
    }
    Error error;
    if (!reader->Read(runs, n, dest.data(), outs, &error)) {
      Fill(err, errlen, error.message);
      return -1;
    }
    return 0;
  });
}

int tbr_read_rows(tbr_reader* reader, int64_t n, const int64_t* rows, uint8_t* const* outs,
                  char* err, size_t errlen) {
  return Guarded<int>(err, errlen, -1, [&]() -> int {
    if (n < 0 || n > (int64_t{1} << 31)) {
      Fill(err, errlen, "tfds_bigarrays read core: " + std::to_string(n) + " rows asked for");
      return -1;
    }
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++) {
      if (rows[i] < 0 || rows[i] >= reader->num_rows) {
        Fill(err, errlen, "index " + std::to_string(rows[i]) + " is out of range for a split of " +
                              std::to_string(reader->num_rows) + " examples.");
        return -1;
      }
      order[i] = i;
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return rows[a] < rows[b]; });
    std::vector<int64_t> sorted(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; k++) sorted[k] = rows[order[k]];
    const std::vector<Run> runs = reader->RunsOfRows(sorted.data(), n);
    const std::vector<int64_t>& dest = order;
    Error error;
    if (!reader->Read(runs, n, dest.data(), outs, &error)) {
      Fill(err, errlen, error.message);
      return -1;
    }
    return 0;
  });
}

int tbr_check_file(const char* name, const int64_t* identity, char* err, size_t errlen) {
  return Guarded<int>(err, errlen, -1, [&]() -> int {
    struct stat st;
    Identity want;
    std::copy(identity, identity + 4, want.begin());
    if (stat(name, &st) != 0) {
      Fill(err, errlen, OpenError(name, errno));
      return -1;
    }
    if (IdentityOf(st) != want) {
      Fill(err, errlen, ChangedError(name));
      return -1;
    }
    return 0;
  });
}

void tbr_permute(uint64_t n, uint64_t seed, int64_t count, const int64_t* in, int64_t* out) {
  const Feistel perm(n, seed);
  for (int64_t i = 0; i < count; i++) out[i] = static_cast<int64_t>(perm(static_cast<uint64_t>(in[i])));
}

void tbr_row_order(uint64_t seed, uint64_t group, int64_t n, int64_t* out) {
  RowOrder(seed, group, n, out);
}

uint32_t tbr_crc32c(const uint8_t* p, size_t n, int level) {
  Crc();
  if (level < 0) level = BestCrcLevel();
  return CrcExtend(std::min(level, BestCrcLevel()), 0xFFFFFFFFu, p, n) ^ 0xFFFFFFFFu;
}

int tbr_crc_level(void) { return Crc().level.load(); }

void tbr_set_crc_level(int level) {
  Crc().level.store(std::max(0, std::min(level, BestCrcLevel())));
}

int64_t tbr_open_descriptors(void) { return Descriptors::Get().Count(); }
int64_t tbr_descriptor_limit(void) { return Descriptors::Get().Limit(); }
int64_t tbr_mapped_bytes(void) { return Mappings::Get().Bytes(); }

}  // extern "C"
