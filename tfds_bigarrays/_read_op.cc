// TfdsBigarraysReadGroup: one group of a split's rows, read straight into
// the tensors TensorFlow allocates for them.
//
// The TensorFlow twin of `_rowread.GroupReader.read_group`, for the common
// case where every feature is stored as raw bytes. It plans the group
// (block permutation, runs, row order), reads it and checks it (frame
// layout, CRC32C) with no Python and no GIL, and with no copy but the read
// itself: a `tf.numpy_function` costs a Python call per group and a second
// copy of every output (TensorFlow 2.21 copies them, holding the GIL).
//
// Same plan, same bytes, same errors as GroupReader (tests compare them):
// the read loop and the permutations come from _readcore.h, shared with the
// Python extension.
//
// Built on first use by _tfop.py against the installed TensorFlow's headers.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

// Plain C with static functions only: no extern "C" needed (nor wanted
// around the system headers it includes).
#include "_readcore.h"

namespace tfds_bigarrays {
namespace {

using ::tensorflow::DataType;
using ::tensorflow::DataTypeSize;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::PartialTensorShape;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

constexpr uint64_t kSeedMask = (1ull << 63) - 1;
constexpr uint32_t kMaskDelta = 0xa282ead8u;
// As in _rowread.py: reads faster than this came from the page cache, and
// announcing a block that took longer meant the kernel had to start a read.
constexpr double kWarmBytesPerS = 2e9;
constexpr double kColdHintSeconds = 10e-6;
constexpr int kWarmProbeEvery = 8;
// Descriptors a kernel keeps open; past that, shards are opened per read.
constexpr int kMaxOpen = 128;

REGISTER_OP("TfdsBigarraysReadGroup")
    .Input("group: int64")
    .Input("epoch_seed: int64")
    .Output("values: out_types")
    .Attr("filenames: list(string)")
    .Attr("skips: list(int)")
    .Attr("starts: list(int)")
    .Attr("frame_bytes: int")
    .Attr("block_rows: int")
    .Attr("group_blocks: int")
    .Attr("shuffle: bool")
    .Attr("verify: bool")
    .Attr("lookahead: int")
    .Attr("segments: list(int)")
    .Attr("expected_at: list(int)")
    .Attr("expected: string")
    .Attr("crc_at: int")
    .Attr("out_types: list(type)")
    .Attr("out_shapes: list(shape)")
    .Attr("mapped: bool = false")
    .Attr("map_bytes: int = 0")
    // Not stateful: the outputs are a function of the inputs and of shards
    // that do not change (altered ones fail the layout or CRC checks), which is
    // what lets tf.data checkpoint an iterator over it.
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      ::tensorflow::shape_inference::ShapeHandle unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 0, &unused));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 0, &unused));
      return ::tensorflow::shape_inference::UnknownShape(c);
    })
    .Doc("One group of rows of a tfds_bigarrays split; see _read_op.cc.");

::tensorflow::Status OpenError(const std::string& name, int e) {
  if (e == EMFILE || e == ENFILE) {
    return errors::InvalidArgument("Could not open shard ", name, ": too many open files (",
                                   std::strerror(e),
                                   "). Raise the limit (`ulimit -n`), or read fewer datasets at "
                                   "once.");
  }
  return errors::InvalidArgument("Shard ", name, " is missing or unreadable (", std::strerror(e),
                                 "). The dataset is incomplete: rebuild it, or restore the shard.");
}

// A whole shard, memory-mapped read-only (`mapped=true`).
struct Mapping {
  const uint8_t* base = nullptr;
  int64_t len = 0;
  ~Mapping() {
    if (base != nullptr) munmap(const_cast<uint8_t*>(base), static_cast<size_t>(len));
  }
};

// Mappings shared by every kernel of the process and kept across epochs
// (a kernel lives for one iterator), keyed by file identity: a shard
// rewritten by rename gets a fresh mapping. Unused mappings are dropped,
// oldest first, past the largest total a reader asked for; one in use is
// never unmapped. The twin of _rowread.MAPS.
class MapCache {
 public:
  static MapCache& Get() {
    static MapCache* cache = new MapCache;  // never destroyed: threads may read at exit
    return *cache;
  }

  void Reserve(int64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = std::max(limit_, bytes);
  }

  ::tensorflow::Status Acquire(const std::string& name, std::shared_ptr<const Mapping>* out) {
    const int fd = open(name.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return OpenError(name, errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
      const int e = errno;
      close(fd);
      return OpenError(name, e);
    }
    const Key key{st.st_dev, st.st_ino, st.st_size,
                  static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
    std::lock_guard<std::mutex> lock(mu_);
    auto it = maps_.find(key);
    if (it != maps_.end()) {
      close(fd);
      order_.remove(key);
      order_.push_front(key);
      *out = it->second;
      return ::tensorflow::OkStatus();
    }
    auto mapping = std::make_shared<Mapping>();
    if (st.st_size > 0) {  // an empty shard maps to nothing: every read of it is short
      void* base = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
      if (base == MAP_FAILED) {
        const int e = errno;
        close(fd);
        return errors::InvalidArgument("Could not memory-map shard ", name, " (",
                                       std::strerror(e),
                                       "). Read it with read_options(access='random') instead, or "
                                       "raise the limit on mappings.");
      }
      mapping->base = static_cast<const uint8_t*>(base);
      mapping->len = st.st_size;
    }
    close(fd);
    maps_[key] = mapping;
    order_.push_front(key);
    total_ += mapping->len;
    for (auto k = order_.end(); total_ > limit_ && k != order_.begin();) {
      --k;
      auto m = maps_.find(*k);
      if (m->second.use_count() == 1 && m->second != mapping) {
        total_ -= m->second->len;
        maps_.erase(m);
        k = order_.erase(k);
      }
    }
    *out = mapping;
    return ::tensorflow::OkStatus();
  }

 private:
  using Key = std::tuple<dev_t, ino_t, off_t, int64_t>;
  std::mutex mu_;
  std::map<Key, std::shared_ptr<Mapping>> maps_;
  std::list<Key> order_;  // most recently used first
  int64_t total_ = 0, limit_ = 0;
};

uint32_t Unmask(uint32_t masked) {
  uint32_t rot = masked - kMaskDelta;
  return (rot >> 17) | (rot << 15);
}

class ReadGroupOp : public OpKernel {
 public:
  explicit ReadGroupOp(OpKernelConstruction* c) : OpKernel(c) {
    std::vector<std::string> names;
    std::string expected;
    OP_REQUIRES_OK(c, c->GetAttr("filenames", &names));
    OP_REQUIRES_OK(c, c->GetAttr("skips", &skips_));
    OP_REQUIRES_OK(c, c->GetAttr("starts", &starts_));
    OP_REQUIRES_OK(c, c->GetAttr("frame_bytes", &frame_));
    OP_REQUIRES_OK(c, c->GetAttr("block_rows", &block_rows_));
    OP_REQUIRES_OK(c, c->GetAttr("group_blocks", &group_blocks_));
    OP_REQUIRES_OK(c, c->GetAttr("shuffle", &shuffle_));
    OP_REQUIRES_OK(c, c->GetAttr("verify", &verify_));
    OP_REQUIRES_OK(c, c->GetAttr("lookahead", &lookahead_));
    OP_REQUIRES_OK(c, c->GetAttr("segments", &segs_));
    OP_REQUIRES_OK(c, c->GetAttr("expected_at", &expected_at_));
    OP_REQUIRES_OK(c, c->GetAttr("expected", &expected));
    OP_REQUIRES_OK(c, c->GetAttr("crc_at", &crc_at_));
    OP_REQUIRES_OK(c, c->GetAttr("out_types", &types_));
    OP_REQUIRES_OK(c, c->GetAttr("mapped", &mapped_));
    std::vector<PartialTensorShape> shapes;
    OP_REQUIRES_OK(c, c->GetAttr("out_shapes", &shapes));
    expected_.assign(expected.begin(), expected.end());

    // Distinct files; each read points at its file.
    std::unordered_map<std::string, int> index;
    for (const auto& name : names) {
      auto it = index.emplace(name, static_cast<int>(files_.size())).first;
      if (it->second == static_cast<int>(files_.size())) files_.push_back(name);
      file_of_read_.push_back(it->second);
    }
    fds_.assign(files_.size(), -1);
    maps_.resize(files_.size());
    if (mapped_) {
      int64_t map_bytes = 0;  // the split's shards together, summed once in Python
      OP_REQUIRES_OK(c, c->GetAttr("map_bytes", &map_bytes));
      MapCache::Get().Reserve(map_bytes);
    }

    const int64_t n_segs = static_cast<int64_t>(segs_.size()) / 3;
    OP_REQUIRES(c,
                segs_.size() % 3 == 0 && n_segs >= 2 && n_segs <= IOV_CHUNK &&
                    starts_.size() == names.size() + 1 && skips_.size() == names.size() &&
                    types_.size() == shapes.size() && frame_ > 0 && block_rows_ > 0 &&
                    group_blocks_ > 0 && expected_at_.size() == expected_.size(),
                errors::InvalidArgument("TfdsBigarraysReadGroup: malformed attributes"));
    row_bytes_.assign(types_.size(), 0);
    int64_t pos = 0;
    for (int64_t j = 0; j < n_segs; j++) {
      int64_t start = segs_[3 * j], len = segs_[3 * j + 1], t = segs_[3 * j + 2];
      // Each output is filled by exactly one segment: its rows are that long.
      OP_REQUIRES(c,
                  start == pos && len > 0 && len <= (int64_t{1} << 40) && t >= -1 &&
                      t < static_cast<int64_t>(types_.size()) && (t < 0 || row_bytes_[t] == 0),
                  errors::InvalidArgument("TfdsBigarraysReadGroup: segment ", j, " does not fit"));
      if (t < 0) {
        junk_bytes_ += len;
      } else {
        row_bytes_[t] = len;
      }
      pos += len;
    }
    OP_REQUIRES(c, pos == frame_ && segs_[0] == 0 && segs_[1] == 12 && segs_[2] == -1 &&
                       segs_[3 * (n_segs - 1) + 1] == 4 && segs_[3 * (n_segs - 1) + 2] == -1 &&
                       crc_at_ + 4 == junk_bytes_,
                errors::InvalidArgument("TfdsBigarraysReadGroup: segments do not make a frame"));
    for (int64_t at : expected_at_) {
      OP_REQUIRES(c, at >= 0 && at < junk_bytes_,
                  errors::InvalidArgument("TfdsBigarraysReadGroup: expected_at out of range"));
    }
    for (size_t t = 0; t < types_.size(); t++) {
      TensorShape shape;
      OP_REQUIRES(c, shapes[t].AsTensorShape(&shape),
                  errors::InvalidArgument("TfdsBigarraysReadGroup: shapes must be fully known"));
      // Raw bytes of numbers only (bool must be normalized; strings are not rows).
      OP_REQUIRES(c, types_[t] != ::tensorflow::DT_BOOL && ::tensorflow::DataTypeCanUseMemcpy(types_[t]),
                  errors::InvalidArgument("TfdsBigarraysReadGroup: output ", t,
                                          " must be a plain numeric type"));
      OP_REQUIRES(c, shape.num_elements() * DataTypeSize(types_[t]) == row_bytes_[t],
                  errors::InvalidArgument("TfdsBigarraysReadGroup: output ", t,
                                          " does not match its segment"));
      row_shapes_.push_back(shape);
    }
    OP_REQUIRES(c, starts_.front() == 0,
                errors::InvalidArgument("TfdsBigarraysReadGroup: starts must begin at 0"));
    for (size_t r = 0; r < skips_.size(); r++) {
      OP_REQUIRES(c, skips_[r] >= 0 && starts_[r + 1] >= starts_[r] &&
                         skips_[r] <= (int64_t{1} << 40) && starts_[r + 1] <= (int64_t{1} << 40),
                  errors::InvalidArgument("TfdsBigarraysReadGroup: read ", r,
                                          " has a negative skip or size"));
    }
    // Bounds that keep every product below (group rows x frame bytes) in int64.
    OP_REQUIRES(c, frame_ <= (int64_t{1} << 30) && junk_bytes_ <= (int64_t{1} << 30) &&
                       block_rows_ <= (int64_t{1} << 31) && group_blocks_ <= (int64_t{1} << 31) &&
                       block_rows_ * group_blocks_ <= (int64_t{1} << 31),
                errors::InvalidArgument("TfdsBigarraysReadGroup: frames or groups this large "
                                        "are not read"));
    num_rows_ = starts_.back();
    num_blocks_ = (num_rows_ + block_rows_ - 1) / block_rows_;
    num_groups_ = (num_blocks_ + group_blocks_ - 1) / group_blocks_;
    hw_ = use_hardware();
    {
      static std::once_flag once;
      std::call_once(once, init_crc_table);
    }
  }

  ~ReadGroupOp() override {
    for (int fd : fds_) {
      if (fd >= 0) close(fd);
    }
  }

  void Compute(OpKernelContext* ctx) override {
    OP_REQUIRES(ctx,
                ::tensorflow::TensorShapeUtils::IsScalar(ctx->input(0).shape()) &&
                    ::tensorflow::TensorShapeUtils::IsScalar(ctx->input(1).shape()),
                errors::InvalidArgument("TfdsBigarraysReadGroup: group and epoch_seed must be "
                                        "scalars"));
    const int64_t group = ctx->input(0).scalar<int64_t>()();
    const uint64_t seed = static_cast<uint64_t>(ctx->input(1).scalar<int64_t>()()) & kSeedMask;
    OP_REQUIRES(ctx, group >= 0 && group < num_groups_,
                errors::InvalidArgument("group=", group, " is not in [0, ", num_groups_, ")."));

    if (lookahead_ > 0 && group + lookahead_ < num_groups_) {
      // While cold, announce every group's look-ahead; while warm, probe now
      // and then (see GroupReader.read_group).
      if (--countdown_ <= 0 || cold_.load()) {
        countdown_ = kWarmProbeEvery;
        const double per_block = Advise(Blocks(group + lookahead_, seed));
        cold_ = per_block > kColdHintSeconds || slow_read_.load();
      }
    }

    Runs runs;
    OP_REQUIRES_OK(ctx, Plan(Blocks(group, seed), &runs));
    const int64_t n = runs.total;
    std::vector<int64_t> dest(n);
    if (shuffle_) {
      row_order(seed, static_cast<uint64_t>(group), n, dest.data());
    } else {
      for (int64_t i = 0; i < n; i++) dest[i] = i;
    }

    std::vector<uint8_t*> outs(types_.size());
    for (size_t t = 0; t < types_.size(); t++) {
      TensorShape shape({n});
      shape.AppendShape(row_shapes_[t]);
      Tensor* out = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(static_cast<int>(t), shape, &out));
      outs[t] = static_cast<uint8_t*>(const_cast<void*>(
          static_cast<const void*>(out->tensor_data().data())));
    }
    std::vector<uint8_t> junk(static_cast<size_t>(n * junk_bytes_));
    std::vector<uint32_t> crcs(verify_ ? n : 0);

    // Per run: a descriptor, or (mapped) the index of its file's mapping.
    std::vector<int64_t> fds(runs.read.size());
    std::vector<int> temporary;  // closed on every way out
    struct CloseAll {
      std::vector<int>* fds;
      ~CloseAll() {
        for (int fd : *fds) close(fd);
      }
    } close_temporary{&temporary};
    std::vector<const uint8_t*> bases;
    std::vector<int64_t> lens;
    for (size_t i = 0; i < runs.read.size(); i++) {
      const int f = file_of_read_[runs.read[i]];
      if (mapped_) {
        const Mapping* m = nullptr;
        OP_REQUIRES_OK(ctx, Map(f, &m));
        fds[i] = static_cast<int64_t>(bases.size());
        bases.push_back(m->base);
        lens.push_back(m->len);
      } else {
        int fd = -1;
        OP_REQUIRES_OK(ctx, Acquire(f, &fd, &temporary));
        fds[i] = fd;
      }
    }
    CrcJob job = {segs_.data(), static_cast<ptrdiff_t>(segs_.size() / 3), outs.data(),
                  dest.data(),  junk.data(), junk_bytes_,
                  verify_ ? crcs.data() : nullptr, hw_};
    std::vector<struct iovec> iov(IOV_CHUNK);
    const auto start = std::chrono::steady_clock::now();
    ReadStatus st = read_runs(&job, frame_, static_cast<ptrdiff_t>(fds.size()), fds.data(),
                              runs.offset.data(), runs.count.data(),
                              mapped_ ? bases.data() : nullptr, mapped_ ? lens.data() : nullptr,
                              iov.data());
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    slow_read_ = elapsed * kWarmBytesPerS > static_cast<double>(n * frame_);
    if (st.failed >= 0) {
      const std::string why = st.err ? std::string(std::strerror(st.err))
                                     : "it ended " + std::to_string(st.got) + " bytes into a read";
      ctx->CtxFailure(errors::InvalidArgument(
          "Shard ", files_[file_of_read_[runs.read[st.failed]]], " could not be read at row ",
          runs.offset[st.failed] / frame_, " (", why,
          "): it was truncated or altered after the build. Rebuild the dataset, or restore the "
          "shard."));
      return;
    }
    std::vector<bool> bad(n, false);
    bool any = false;
    for (int64_t r = 0; r < n; r++) {
      const uint8_t* row = junk.data() + r * junk_bytes_;
      for (size_t i = 0; i < expected_at_.size(); i++) {
        if (row[expected_at_[i]] != expected_[i]) {
          bad[r] = any = true;
          break;
        }
      }
    }
    // Names the shards of the rows flagged in `bad`.
    auto fail = [&](const char* what) {
      ctx->CtxFailure(
          errors::InvalidArgument("tfds_bigarrays: shard ", Names(bad, runs), what));
    };
    if (any) {
      return fail(
          " holds a record that does not match the dataset's layout (tfds_bigarrays.json); it "
          "is corrupt or from another dataset. Rebuild the dataset or restore the shard.");
    }
    if (verify_) {
      for (int64_t r = 0; r < n; r++) {
        uint32_t stored;
        std::memcpy(&stored, junk.data() + r * junk_bytes_ + crc_at_, 4);
        if (Unmask(stored) != crcs[r]) bad[r] = any = true;
      }
      if (any) {
        return fail(
            " has records whose CRC32C does not match (bit rot or an altered file). Rebuild the "
            "dataset or restore the shard.");
      }
    }
  }

 private:
  struct Runs {
    std::vector<int64_t> read, offset, count;
    int64_t total = 0;
  };

  // The blocks of a group, in epoch order (GroupReader._blocks): position p
  // holds full block Permutation(p), the short last block staying last.
  std::vector<int64_t> Blocks(int64_t group, uint64_t seed) const {
    const int64_t first = group * group_blocks_;
    const int64_t last = std::min(first + group_blocks_, num_blocks_);
    std::vector<int64_t> blocks;
    blocks.reserve(last - first);
    const int64_t full = num_rows_ / block_rows_;
    uint64_t keys[PERM_ROUNDS];
    const int half = perm_keys(static_cast<uint64_t>(full > 0 ? full : 1), seed, keys);
    for (int64_t p = first; p < last; p++) {
      if (shuffle_ && full >= 2 && p < full) {
        blocks.push_back(static_cast<int64_t>(
            feistel_one(static_cast<uint64_t>(p), static_cast<uint64_t>(full), half, keys,
                        PERM_ROUNDS)));
      } else {
        blocks.push_back(p);
      }
    }
    return blocks;
  }

  // Runs of whole frames inside single reads (RowSpace.runs).
  ::tensorflow::Status Plan(const std::vector<int64_t>& blocks, Runs* runs) const {
    for (int64_t b : blocks) {
      int64_t lo = b * block_rows_;
      const int64_t hi = std::min(lo + block_rows_, num_rows_);
      if (hi <= lo) return errors::InvalidArgument("Block ", b, " is past the split's end.");
      while (lo < hi) {
        const int64_t r = std::upper_bound(starts_.begin(), starts_.end(), lo) - starts_.begin() - 1;
        const int64_t end = std::min(hi, starts_[r + 1]);
        if (end > lo) {
          runs->read.push_back(r);
          runs->offset.push_back((lo - starts_[r] + skips_[r]) * frame_);
          runs->count.push_back(end - lo);
          runs->total += end - lo;
        }
        lo = end;
      }
    }
    return ::tensorflow::OkStatus();
  }

  // Asks the kernel to start reading `blocks`; the seconds it took per block.
  double Advise(const std::vector<int64_t>& blocks) {
    Runs runs;
    if (!Plan(blocks, &runs).ok()) return 0;
    const auto start = std::chrono::steady_clock::now();
    std::vector<int> temporary;
    const int64_t page = sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < runs.read.size(); i++) {
      const int f = file_of_read_[runs.read[i]];
      if (mapped_) {
        const Mapping* m = nullptr;
        if (!Map(f, &m).ok() || m->base == nullptr) continue;
        const int64_t start = runs.offset[i] / page * page;
        const int64_t end = std::min(m->len, runs.offset[i] + runs.count[i] * frame_);
        if (end > start) {
          (void)madvise(const_cast<uint8_t*>(m->base) + start, end - start, MADV_WILLNEED);
        }
        continue;
      }
      int fd = -1;
      if (!Acquire(f, &fd, &temporary).ok()) continue;
#ifdef POSIX_FADV_WILLNEED
      (void)posix_fadvise(fd, runs.offset[i], runs.count[i] * frame_, POSIX_FADV_WILLNEED);
#endif
    }
    for (int fd : temporary) close(fd);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return s / std::max<size_t>(1, blocks.size());
  }

  // The mapping of file `f`, held for the kernel's life.
  ::tensorflow::Status Map(int f, const Mapping** out) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (maps_[f]) {
        *out = maps_[f].get();
        return ::tensorflow::OkStatus();
      }
    }
    std::shared_ptr<const Mapping> mapping;
    TF_RETURN_IF_ERROR(MapCache::Get().Acquire(files_[f], &mapping));
    std::lock_guard<std::mutex> lock(mu_);
    if (!maps_[f]) maps_[f] = std::move(mapping);
    *out = maps_[f].get();
    return ::tensorflow::OkStatus();
  }

  // A descriptor of file `f`: kept open for the kernel's life (up to
  // kMaxOpen files), else opened for this call and listed in `temporary`.
  ::tensorflow::Status Acquire(int f, int* fd, std::vector<int>* temporary) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (fds_[f] >= 0) {
        *fd = fds_[f];
        return ::tensorflow::OkStatus();
      }
    }
    const int opened = open(files_[f].c_str(), O_RDONLY | O_CLOEXEC);
    if (opened < 0) return OpenError(files_[f], errno);
    std::lock_guard<std::mutex> lock(mu_);
    if (fds_[f] >= 0) {  // another thread opened it meanwhile
      close(opened);
      *fd = fds_[f];
    } else if (open_count_ < kMaxOpen) {
      fds_[f] = *fd = opened;
      open_count_++;
    } else {
      temporary->push_back(opened);
      *fd = opened;
    }
    return ::tensorflow::OkStatus();
  }

  // The shards holding the rows flagged in `bad`, sorted, comma-separated.
  std::string Names(const std::vector<bool>& bad, const Runs& runs) const {
    std::vector<std::string> names;
    int64_t row = 0;
    for (size_t i = 0; i < runs.read.size(); i++) {
      for (int64_t r = 0; r < runs.count[i]; r++, row++) {
        if (bad[row]) {
          names.push_back(files_[file_of_read_[runs.read[i]]]);
          row += runs.count[i] - r;
          break;
        }
      }
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    std::string out;
    for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
    return out;
  }

  std::vector<std::string> files_;
  std::vector<int> file_of_read_;
  std::vector<int64_t> skips_, starts_, segs_, expected_at_, row_bytes_;
  std::vector<uint8_t> expected_;
  std::vector<DataType> types_;
  std::vector<TensorShape> row_shapes_;
  int64_t frame_ = 0, block_rows_ = 0, group_blocks_ = 0, lookahead_ = 0, crc_at_ = 0;
  int64_t junk_bytes_ = 0, num_rows_ = 0, num_blocks_ = 0, num_groups_ = 0;
  bool shuffle_ = false, verify_ = true;
  int hw_ = 0;

  std::mutex mu_;  // guards fds_, open_count_ and maps_
  std::vector<int> fds_;
  std::vector<std::shared_ptr<const Mapping>> maps_;
  bool mapped_ = false;
  int open_count_ = 0;
  // The cold/warm guess of GroupReader; races between threads only blur a hint.
  std::atomic<bool> cold_{true}, slow_read_{true};
  std::atomic<int> countdown_{0};
};

REGISTER_KERNEL_BUILDER(Name("TfdsBigarraysReadGroup").Device(::tensorflow::DEVICE_CPU),
                        ReadGroupOp);

}  // namespace
}  // namespace tfds_bigarrays
