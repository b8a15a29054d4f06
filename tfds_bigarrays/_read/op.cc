// The TensorFlow binding of the read core (core.h): two thin kernels.
//
// TfdsBigarraysReadGroup: one group of a split's rows, read by the core
//   straight into the tensors TensorFlow allocates for them (the random and
//   mapped access paths).
// TfdsBigarraysDecodeFrames: blocks of whole frames that tf.data's file
//   readers produced, checked and decoded by the core (the sequential path,
//   also on tf.data service workers).
//
// The kernels translate attributes into the core's configuration, allocate
// the outputs and turn the core's errors into InvalidArgument. Built at
// install time against the pinned TensorFlow (see _read/build.py).

#include <map>
#include <string>
#include <vector>

#include "core.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfds_bigarrays {
namespace {

using ::tensorflow::DataType;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::PartialTensorShape;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

constexpr size_t kErrBytes = 4096;

// Not stateful: the outputs are a function of the inputs and of shards that
// do not change (a changed one fails the read), which is what lets tf.data
// checkpoint an iterator over these ops.
#define TBR_LAYOUT_ATTRS                \
  Attr("field_lengths: list(int)")                 \
      .Attr("field_outputs: list(int)")            \
      .Attr("constants: string")                   \
      .Attr("kinds: list(int)")                    \
      .Attr("names: list(string)")                 \
      .Attr("verify: bool")                        \
      .Attr("out_types: list(type)")               \
      .Attr("out_shapes: list(shape)")

Status ScalarInputs(::tensorflow::shape_inference::InferenceContext* c, int n) {
  ::tensorflow::shape_inference::ShapeHandle unused;
  for (int i = 0; i < n; i++) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 0, &unused));
  return ::tensorflow::OkStatus();
}

REGISTER_OP("TfdsBigarraysReadGroup")
    .Input("group: int64")
    .Input("epoch_seed: int64")
    .Output("values: out_types")
    .TBR_LAYOUT_ATTRS
    .Attr("filenames: list(string)")
    .Attr("skips: list(int)")
    .Attr("takes: list(int)")
    .Attr("identities: list(int)")
    .Attr("block_rows: int")
    .Attr("group_blocks: int")
    .Attr("window_groups: int = 1")
    .Attr("shuffle: bool")
    .Attr("lookahead: int")
    .Attr("read_threads: int = 1")
    .Attr("fill_pieces: bool = false")
    .Attr("mapped: bool")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      TF_RETURN_IF_ERROR(ScalarInputs(c, 2));
      return ::tensorflow::shape_inference::UnknownShape(c);
    })
    .Doc("One group of rows of a tfds_bigarrays split; see core.h.");

REGISTER_OP("TfdsBigarraysDecodeFrames")
    .Input("blocks: string")
    .Input("filenames: string")
    .Input("dest: int64")
    .Output("values: out_types")
    .TBR_LAYOUT_ATTRS
    // Local shards and their identity at load: a block of a shard replaced
    // since fails (tf.data's readers open files by name, after the load).
    .Attr("identity_names: list(string) = []")
    .Attr("identities: list(int) = []")
    .SetShapeFn(::tensorflow::shape_inference::UnknownShape)
    .Doc("Checks and decodes blocks of whole tfds_bigarrays frames; see core.h.");

// The layout attributes, read once, in the form the core's config points into.
struct LayoutAttrs {
  std::vector<int64_t> field_lengths;
  std::vector<int32_t> field_outputs, kinds;
  std::string constants;
  std::vector<std::string> names;
  std::vector<const char*> name_ptrs;
  bool verify = true;
  std::vector<DataType> types;
  std::vector<TensorShape> shapes;

  Status Read(OpKernelConstruction* c) {
    std::vector<int64_t> outputs, kinds64;
    std::vector<PartialTensorShape> partial;
    TF_RETURN_IF_ERROR(c->GetAttr("field_lengths", &field_lengths));
    TF_RETURN_IF_ERROR(c->GetAttr("field_outputs", &outputs));
    TF_RETURN_IF_ERROR(c->GetAttr("constants", &constants));
    TF_RETURN_IF_ERROR(c->GetAttr("kinds", &kinds64));
    TF_RETURN_IF_ERROR(c->GetAttr("names", &names));
    TF_RETURN_IF_ERROR(c->GetAttr("verify", &verify));
    TF_RETURN_IF_ERROR(c->GetAttr("out_types", &types));
    TF_RETURN_IF_ERROR(c->GetAttr("out_shapes", &partial));
    if (outputs.size() != field_lengths.size() || kinds64.size() != names.size() ||
        types.size() != names.size() || partial.size() != names.size()) {
      return errors::InvalidArgument("tfds_bigarrays ops: malformed layout attributes");
    }
    field_outputs.assign(outputs.begin(), outputs.end());
    kinds.assign(kinds64.begin(), kinds64.end());
    for (const auto& name : names) name_ptrs.push_back(name.c_str());
    for (const auto& p : partial) {
      TensorShape shape;
      if (!p.AsTensorShape(&shape)) {
        return errors::InvalidArgument("tfds_bigarrays ops: shapes must be fully known");
      }
      shapes.push_back(shape);
    }
    return ::tensorflow::OkStatus();
  }

  tbr_layout_config Config() const {
    return {static_cast<int64_t>(field_lengths.size()),
            field_lengths.data(),
            field_outputs.data(),
            reinterpret_cast<const uint8_t*>(constants.data()),
            static_cast<int64_t>(constants.size()),
            static_cast<int64_t>(names.size()),
            kinds.data(),
            name_ptrs.data(),
            verify ? 1 : 0};
  }

  // Every output's dtype and shape must hold exactly its rows' bytes.
  Status Check(const tbr_layout* layout) const {
    for (size_t t = 0; t < types.size(); t++) {
      if (!::tensorflow::DataTypeCanUseMemcpy(types[t]) ||
          shapes[t].num_elements() * ::tensorflow::DataTypeSize(types[t]) !=
              tbr_output_row_bytes(layout, static_cast<int64_t>(t))) {
        return errors::InvalidArgument("tfds_bigarrays ops: output ", t,
                                       " does not match its field");
      }
    }
    return ::tensorflow::OkStatus();
  }

  // Allocates the outputs for `n` rows; their addresses go to `outs`.
  Status Allocate(OpKernelContext* ctx, int64_t n, std::vector<uint8_t*>* outs) const {
    outs->resize(types.size());
    for (size_t t = 0; t < types.size(); t++) {
      TensorShape shape({n});
      shape.AppendShape(shapes[t]);
      Tensor* out = nullptr;
      TF_RETURN_IF_ERROR(ctx->allocate_output(static_cast<int>(t), shape, &out));
      (*outs)[t] = static_cast<uint8_t*>(const_cast<void*>(
          static_cast<const void*>(out->tensor_data().data())));
    }
    return ::tensorflow::OkStatus();
  }
};

class ReadGroupOp : public OpKernel {
 public:
  explicit ReadGroupOp(OpKernelConstruction* c) : OpKernel(c) {
    std::vector<std::string> names;
    std::vector<int64_t> skips, takes, identities, block_rows(1), group_blocks(1), window_groups(1),
        lookahead(1), read_threads(1);
    bool shuffle = false, mapped = false, fill_pieces = false;
    OP_REQUIRES_OK(c, layout_.Read(c));
    OP_REQUIRES_OK(c, c->GetAttr("filenames", &names));
    OP_REQUIRES_OK(c, c->GetAttr("skips", &skips));
    OP_REQUIRES_OK(c, c->GetAttr("takes", &takes));
    OP_REQUIRES_OK(c, c->GetAttr("identities", &identities));
    OP_REQUIRES_OK(c, c->GetAttr("block_rows", &block_rows[0]));
    OP_REQUIRES_OK(c, c->GetAttr("group_blocks", &group_blocks[0]));
    OP_REQUIRES_OK(c, c->GetAttr("window_groups", &window_groups[0]));
    OP_REQUIRES_OK(c, c->GetAttr("lookahead", &lookahead[0]));
    OP_REQUIRES_OK(c, c->GetAttr("read_threads", &read_threads[0]));
    OP_REQUIRES_OK(c, c->GetAttr("shuffle", &shuffle));
    OP_REQUIRES_OK(c, c->GetAttr("mapped", &mapped));
    OP_REQUIRES_OK(c, c->GetAttr("fill_pieces", &fill_pieces));
    OP_REQUIRES(c,
                skips.size() == names.size() && takes.size() == names.size() &&
                    identities.size() == 4 * names.size(),
                errors::InvalidArgument("TfdsBigarraysReadGroup: malformed reads"));
    std::vector<const char*> name_ptrs;
    for (const auto& name : names) name_ptrs.push_back(name.c_str());
    const tbr_reader_config config = {layout_.Config(),
                                      static_cast<int64_t>(names.size()),
                                      name_ptrs.data(),
                                      skips.data(),
                                      takes.data(),
                                      identities.data(),
                                      block_rows[0],
                                      group_blocks[0],
                                      window_groups[0],
                                      shuffle ? 1 : 0,
                                      lookahead[0],
                                      mapped ? 1 : 0,
                                      read_threads[0],
                                      fill_pieces ? 1 : 0};
    char err[kErrBytes];
    reader_ = tbr_reader_new(&config, err, sizeof err);
    OP_REQUIRES(c, reader_ != nullptr, errors::InvalidArgument(err));
    OP_REQUIRES_OK(c, layout_.Check(tbr_reader_layout(reader_)));
  }

  ~ReadGroupOp() override { tbr_reader_free(reader_); }

  void Compute(OpKernelContext* ctx) override {
    OP_REQUIRES(ctx,
                ::tensorflow::TensorShapeUtils::IsScalar(ctx->input(0).shape()) &&
                    ::tensorflow::TensorShapeUtils::IsScalar(ctx->input(1).shape()),
                errors::InvalidArgument("TfdsBigarraysReadGroup: group and epoch_seed must be "
                                        "scalars"));
    const int64_t group = ctx->input(0).scalar<int64_t>()();
    const uint64_t seed = static_cast<uint64_t>(ctx->input(1).scalar<int64_t>()());
    const int64_t groups = tbr_num_groups(reader_);
    OP_REQUIRES(ctx, group >= 0 && group < groups,
                errors::InvalidArgument("group=", group, " is not in [0, ", groups, ")."));
    std::vector<uint8_t*> outs;
    OP_REQUIRES_OK(ctx, layout_.Allocate(ctx, tbr_group_rows(reader_, group), &outs));
    char err[kErrBytes];
    OP_REQUIRES(ctx, tbr_read_group(reader_, group, seed, outs.data(), err, sizeof err) == 0,
                errors::InvalidArgument(err));
  }

 private:
  LayoutAttrs layout_;
  tbr_reader* reader_ = nullptr;
};

class DecodeFramesOp : public OpKernel {
 public:
  explicit DecodeFramesOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, layout_attrs_.Read(c));
    std::vector<std::string> names;
    std::vector<int64_t> identities;
    OP_REQUIRES_OK(c, c->GetAttr("identity_names", &names));
    OP_REQUIRES_OK(c, c->GetAttr("identities", &identities));
    OP_REQUIRES(c, identities.size() == 4 * names.size(),
                errors::InvalidArgument("TfdsBigarraysDecodeFrames: malformed identities"));
    for (size_t i = 0; i < names.size(); i++) {
      identity_[names[i]] = std::vector<int64_t>(identities.begin() + 4 * i,
                                                 identities.begin() + 4 * i + 4);
    }
    const tbr_layout_config config = layout_attrs_.Config();
    char err[kErrBytes];
    layout_ = tbr_layout_new(&config, err, sizeof err);
    OP_REQUIRES(c, layout_ != nullptr, errors::InvalidArgument(err));
    OP_REQUIRES_OK(c, layout_attrs_.Check(layout_));
  }

  ~DecodeFramesOp() override { tbr_layout_free(layout_); }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& blocks = ctx->input(0);
    const Tensor& filenames = ctx->input(1);
    const Tensor& dest = ctx->input(2);
    OP_REQUIRES(ctx,
                blocks.dims() == 1 && filenames.dims() == 1 && dest.dims() == 1 &&
                    blocks.NumElements() == filenames.NumElements(),
                errors::InvalidArgument("TfdsBigarraysDecodeFrames: blocks and filenames must "
                                        "be vectors of one length, dest a vector"));
    const auto b = blocks.vec<::tensorflow::tstring>();
    const auto f = filenames.vec<::tensorflow::tstring>();
    const int64_t m = blocks.NumElements();
    std::vector<const uint8_t*> bufs(m);
    std::vector<int64_t> lens(m);
    std::vector<std::string> names(m);
    std::vector<const char*> name_ptrs(m);
    for (int64_t i = 0; i < m; i++) {
      bufs[i] = reinterpret_cast<const uint8_t*>(b(i).data());
      lens[i] = static_cast<int64_t>(b(i).size());
      names[i] = std::string(f(i).data(), f(i).size());
      name_ptrs[i] = names[i].c_str();
    }
    char err[kErrBytes];
    for (int64_t i = 0; i < m; i++) {
      if (i > 0 && names[i] == names[i - 1]) continue;
      const auto it = identity_.find(names[i]);
      OP_REQUIRES(ctx,
                  it == identity_.end() ||
                      tbr_check_file(names[i].c_str(), it->second.data(), err, sizeof err) == 0,
                  errors::InvalidArgument(err));
    }
    const int64_t n = tbr_decode_rows(layout_, m, lens.data(), name_ptrs.data(), err, sizeof err);
    OP_REQUIRES(ctx, n >= 0, errors::InvalidArgument(err));
    OP_REQUIRES(ctx, dest.NumElements() == 0 || dest.NumElements() == n,
                errors::InvalidArgument("TfdsBigarraysDecodeFrames: dest has ", dest.NumElements(),
                                        " rows, the blocks ", n));
    std::vector<uint8_t*> outs;
    OP_REQUIRES_OK(ctx, layout_attrs_.Allocate(ctx, n, &outs));
    const int64_t* d = dest.NumElements() ? dest.vec<int64_t>().data() : nullptr;
    OP_REQUIRES(ctx,
                tbr_decode(layout_, m, bufs.data(), lens.data(), name_ptrs.data(), nullptr, d, outs.data(),
                           err, sizeof err) == 0,
                errors::InvalidArgument(err));
  }

 private:
  LayoutAttrs layout_attrs_;
  tbr_layout* layout_ = nullptr;
  std::map<std::string, std::vector<int64_t>> identity_;
};

REGISTER_KERNEL_BUILDER(Name("TfdsBigarraysReadGroup").Device(::tensorflow::DEVICE_CPU),
                        ReadGroupOp);
REGISTER_KERNEL_BUILDER(Name("TfdsBigarraysDecodeFrames").Device(::tensorflow::DEVICE_CPU),
                        DecodeFramesOp);

}  // namespace
}  // namespace tfds_bigarrays
