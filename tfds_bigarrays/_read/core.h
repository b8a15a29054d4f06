/* The read core of tfds_bigarrays: the C interface of core.cc.

   Every record of a dataset is a TFRecord frame of the same length, so a
   split is an array of fixed-size frames spread over shard files. The core
   reads groups of blocks of those frames (a keyed permutation of blocks when
   shuffling, the rows of each group permuted too), straight into one output
   buffer per feature, and checks each frame: its header, the constant bytes
   of the Example around the features, and the CRC32C of the record. It
   names the shard at fault when a check fails.

   Two thin bindings call it: the TensorFlow ops of op.cc, and `core.py`
   (ctypes, numpy outputs, no TensorFlow). Nothing here knows Python or
   TensorFlow.

   Errors: functions that can fail return 0 on success, else -1 with a
   one-line message in `err` (always NUL-terminated). */
#ifndef TBR_CORE_H_
#define TBR_CORE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TBR_API __attribute__((visibility("default")))

/* How a feature's bytes in the record become its output row. */
enum {
  TBR_RAW = 0,           /* the row's bytes as they are */
  TBR_BOOL = 1,          /* one byte per value, any non-zero byte is 1 */
  TBR_UINT32_VARINT = 2, /* five-byte varints, each to a little-endian uint32 */
};

/* A record's layout: fields back to back from its first byte (after the
   frame's 12-byte header). A field is either constant bytes, which every
   record must hold (the Example framing around the features), or the bytes
   of one output. */
typedef struct {
  int64_t n_fields;
  const int64_t *field_length;  /* bytes */
  const int32_t *field_output;  /* -1: constant bytes, else the output it fills */
  const uint8_t *constants;     /* the constant fields' bytes, in field order */
  int64_t n_constants;          /* their number (checked against the fields) */
  int64_t n_outputs;
  const int32_t *output_kind;   /* TBR_RAW, TBR_BOOL or TBR_UINT32_VARINT */
  const char *const *output_names; /* for messages (NULL: numbers) */
  int verify;                   /* check every record's CRC32C */
} tbr_layout_config;

/* A split to read: read i is `takes[i]` frames from frame `skips[i]` of shard
   `names[i]`; the split's rows are the reads' rows in order. */
typedef struct {
  tbr_layout_config layout;
  int64_t n_reads;
  const char *const *names;
  const int64_t *skips;
  const int64_t *takes;
  /* Optional (NULL: not checked): per read, the identity its shard had when
     the dataset was loaded (device, inode, size, mtime in ns). A shard whose
     identity differs when opened fails the read: it was replaced. */
  const int64_t *identities;
  int64_t block_rows;   /* rows of a block: the unit of the epoch permutation */
  int64_t group_blocks; /* blocks read by one call */
  /* Shuffled reads: the rows of this many consecutive groups' blocks (a
     window) are dealt among those groups, so that rows stored side by side
     land in different groups. 1: a group reads whole blocks. */
  int64_t window_groups;
  int shuffle;          /* permute blocks and rows by the epoch seed */
  int64_t lookahead;    /* while reads wait for the disk, announce this many groups ahead */
  int mapped;           /* memory-map shards, kept across readers, instead of pread */
  int64_t read_threads; /* threads sharing one group's reads (the caller's among them) */
  /* While cold, read the aligned 2 MiB pieces holding the look-ahead's blocks
     into the page cache as huge pages instead of announcing the blocks alone
     (pread only): later epochs copy from such a cache about 1.4x faster. For
     splits that stay in memory: a piece's other rows are read before their turn. */
  int fill_pieces;
} tbr_reader_config;

typedef struct tbr_layout tbr_layout;
typedef struct tbr_reader tbr_reader;

TBR_API tbr_layout *tbr_layout_new(const tbr_layout_config *config, char *err, size_t errlen);
TBR_API void tbr_layout_free(tbr_layout *layout);
TBR_API int64_t tbr_frame_bytes(const tbr_layout *layout);
/* Bytes of one row of output `i`. */
TBR_API int64_t tbr_output_row_bytes(const tbr_layout *layout, int64_t i);

/* Checks and decodes frames held in memory: buffer i holds lens[i] bytes of
   whole frames of shard names[i], from its frame first_rows[i] (for
   messages; NULL: not known). Frame r of the buffers taken in order goes to
   row dest[r] of each output (NULL: row r). */
TBR_API int tbr_decode(const tbr_layout *layout, int64_t n_bufs, const uint8_t *const *bufs,
                       const int64_t *lens, const char *const *names, const int64_t *first_rows,
                       const int64_t *dest, uint8_t *const *outs, char *err, size_t errlen);
/* Frames in the buffers, or -1 with a message if one is not whole frames. */
TBR_API int64_t tbr_decode_rows(const tbr_layout *layout, int64_t n_bufs, const int64_t *lens,
                                const char *const *names, char *err, size_t errlen);

TBR_API tbr_reader *tbr_reader_new(const tbr_reader_config *config, char *err, size_t errlen);
TBR_API void tbr_reader_free(tbr_reader *reader);
TBR_API const tbr_layout *tbr_reader_layout(const tbr_reader *reader);
TBR_API int64_t tbr_num_rows(const tbr_reader *reader);
TBR_API int64_t tbr_num_groups(const tbr_reader *reader);
/* Rows of group `group` (0 if out of range). */
TBR_API int64_t tbr_group_rows(const tbr_reader *reader, int64_t group);
/* Group `group` of the epoch keyed by `seed`, into outputs of
   tbr_group_rows(group) rows. Stateless: any group of any epoch can be read
   again, with the same result. */
TBR_API int tbr_read_group(tbr_reader *reader, int64_t group, uint64_t seed,
                           uint8_t *const *outs, char *err, size_t errlen);
/* Split rows rows[0..n) (any order, repeats allowed) into output rows
   0..n; adjacent rows are read together. */
TBR_API int tbr_read_rows(tbr_reader *reader, int64_t n, const int64_t *rows,
                          uint8_t *const *outs, char *err, size_t errlen);

/* Checks that file `name` still has `identity` (device, inode, size, mtime in
   ns), as when the dataset was loaded: else -1, naming it as replaced. */
TBR_API int tbr_check_file(const char *name, const int64_t *identity, char *err, size_t errlen);

/* The permutations, for tests against the numpy twins. */
TBR_API void tbr_permute(uint64_t n, uint64_t seed, int64_t count, const int64_t *in,
                         int64_t *out);
TBR_API void tbr_row_order(uint64_t seed, uint64_t group, int64_t n, int64_t *out);
/* CRC32C of p[0..n): level 0 table, 1 CRC32 instruction, 2 folding, -1 best. */
TBR_API uint32_t tbr_crc32c(const uint8_t *p, size_t n, int level);
/* The CRC path reads use: 0 table, 1 CRC32 instruction, 2 AVX-512 folding. */
TBR_API int tbr_crc_level(void);
TBR_API void tbr_set_crc_level(int level); /* for benchmarks and tests */
/* Descriptors the shared cache holds open now, and its bound. */
TBR_API int64_t tbr_open_descriptors(void);
TBR_API int64_t tbr_descriptor_limit(void);
/* Bytes the shared cache keeps mapped now. */
TBR_API int64_t tbr_mapped_bytes(void);

#ifdef __cplusplus
}
#endif

#endif /* TBR_CORE_H_ */
