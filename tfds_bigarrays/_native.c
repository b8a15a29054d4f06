/* The loops of the read path that Python cannot run fast enough.

   read_frames: scatter-read runs of fixed-size TFRecord frames straight
     into per-feature outputs (rows permuted as asked), and CRC32C each
     record from where its pieces landed.
   crc32c_rows: CRC32C of the same byte range of every row of a matrix
     (the sequential reader's and `verify`'s check).

   Both release the GIL for the whole loop, so several tf.data map threads
   read and check in parallel. Planning, layout checks and error messages
   stay in Python: see _rowread.py and _encoding.crc_errors.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
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

#ifdef HAVE_SSE42_PATH
/* Four rows at once: the crc32 instruction has a latency of three cycles
   but a throughput of one, so four independent streams keep it busy. */
__attribute__((target("sse4.2"))) static void crc_rows_sse42(const uint8_t *base,
                                                             Py_ssize_t rows,
                                                             Py_ssize_t stride,
                                                             Py_ssize_t length,
                                                             uint32_t *out) {
  Py_ssize_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const uint8_t *p0 = base + r * stride, *p1 = p0 + stride, *p2 = p1 + stride,
                  *p3 = p2 + stride;
    uint64_t c0 = 0xFFFFFFFFu, c1 = c0, c2 = c0, c3 = c0;
    Py_ssize_t i = 0;
    for (; i + 8 <= length; i += 8) {
      uint64_t w0, w1, w2, w3;
      memcpy(&w0, p0 + i, 8);
      memcpy(&w1, p1 + i, 8);
      memcpy(&w2, p2 + i, 8);
      memcpy(&w3, p3 + i, 8);
      c0 = _mm_crc32_u64(c0, w0);
      c1 = _mm_crc32_u64(c1, w1);
      c2 = _mm_crc32_u64(c2, w2);
      c3 = _mm_crc32_u64(c3, w3);
    }
    uint32_t d0 = (uint32_t)c0, d1 = (uint32_t)c1, d2 = (uint32_t)c2, d3 = (uint32_t)c3;
    for (; i < length; i++) {
      d0 = _mm_crc32_u8(d0, p0[i]);
      d1 = _mm_crc32_u8(d1, p1[i]);
      d2 = _mm_crc32_u8(d2, p2[i]);
      d3 = _mm_crc32_u8(d3, p3[i]);
    }
    out[r] = d0 ^ 0xFFFFFFFFu;
    out[r + 1] = d1 ^ 0xFFFFFFFFu;
    out[r + 2] = d2 ^ 0xFFFFFFFFu;
    out[r + 3] = d3 ^ 0xFFFFFFFFu;
  }
  for (; r < rows; r++) {
    const uint8_t *p = base + r * stride;
    uint64_t c = 0xFFFFFFFFu;
    Py_ssize_t i = 0;
    for (; i + 8 <= length; i += 8) {
      uint64_t w;
      memcpy(&w, p + i, 8);
      c = _mm_crc32_u64(c, w);
    }
    uint32_t d = (uint32_t)c;
    for (; i < length; i++) d = _mm_crc32_u8(d, p[i]);
    out[r] = d ^ 0xFFFFFFFFu;
  }
}
#endif

static int use_hardware(void) {
#ifdef HAVE_SSE42_PATH
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2") != 0;
#else
  return 0;
#endif
}

static PyObject *crc32c_rows(PyObject *self, PyObject *args, PyObject *kwargs) {
  static char *kwlist[] = {"data", "out", "stride", "start", "length", "software", NULL};
  Py_buffer data, out;
  Py_ssize_t stride, start, length;
  int software = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*w*nnn|p", kwlist, &data, &out, &stride,
                                   &start, &length, &software))
    return NULL;
  PyObject *result = NULL;
  Py_ssize_t rows = out.len / 4, end, span;
  if (stride <= 0 || start < 0 || length < 0 || __builtin_add_overflow(start, length, &end) ||
      end > stride || __builtin_mul_overflow(rows, stride, &span) || span > data.len ||
      out.len % 4) {
    PyErr_Format(PyExc_ValueError,
                 "crc32c_rows: %zd rows of stride %zd (bytes %zd..%zd) do not fit %zd bytes",
                 rows, stride, start, start + length, data.len);
    goto done;
  }
  const uint8_t *base = (const uint8_t *)data.buf + start;
  uint32_t *crcs = (uint32_t *)out.buf;
  int hw = !software && use_hardware();
  Py_BEGIN_ALLOW_THREADS;
#ifdef HAVE_SSE42_PATH
  if (hw) {
    crc_rows_sse42(base, rows, stride, length, crcs);
  } else
#endif
  {
    (void)hw;
    for (Py_ssize_t r = 0; r < rows; r++) crcs[r] = crc32c_soft_extend(0, base + r * stride, length);
  }
  Py_END_ALLOW_THREADS;
  result = Py_NewRef(Py_None);
done:
  PyBuffer_Release(&data);
  PyBuffer_Release(&out);
  return result;
}

/* ------------------------------------------------------------- read_frames */

#define MAX_SEGS 4096
#define IOV_CHUNK 1024

/* Four-stream CRC32C over the same pieces of four rows (see crc_rows_sse42). */
typedef struct {
  const uint8_t *ptr[4];
} Rows4;

#ifdef HAVE_SSE42_PATH
__attribute__((target("sse4.2"))) static void crc4_extend(uint32_t c[4], Rows4 rows,
                                                          Py_ssize_t length) {
  uint64_t c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
  Py_ssize_t i = 0;
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
  Py_ssize_t n_segs;
  const Py_buffer *outs;
  const int64_t *dst;
  const uint8_t *junk;
  Py_ssize_t junk_bytes;
  uint32_t *out_crc;
  int hw;
} CrcJob;

/* Where segment j of source row `src` lands: its row of an output, or at
   `j_off` in the row's junk (the junk segments before j, back to back). The
   reads write there and crc_records reads from there. */
static const uint8_t *piece(const CrcJob *job, Py_ssize_t src, Py_ssize_t j, Py_ssize_t j_off) {
  int64_t len = job->seg[3 * j + 1], t = job->seg[3 * j + 2];
  return t < 0 ? job->junk + src * job->junk_bytes + j_off
               : (const uint8_t *)job->outs[t].buf + job->dst[src] * len;
}

static void crc_records(const CrcJob *job, Py_ssize_t r0, Py_ssize_t r1) {
  const int64_t *seg = job->seg;
  Py_ssize_t r = r0;
#ifdef HAVE_SSE42_PATH
  if (job->hw) {
    for (; r + 4 <= r1; r += 4) {
      uint32_t c[4] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
      Py_ssize_t j_off = seg[1]; /* the header is the first junk segment */
      for (Py_ssize_t j = 1; j + 1 < job->n_segs; j++) {
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
    Py_ssize_t j_off = seg[1];
    for (Py_ssize_t j = 1; j + 1 < job->n_segs; j++) {
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

static PyObject *read_frames(PyObject *self, PyObject *args) {
  /* read_frames(fds, offsets, counts, frame_bytes, segs, outputs, dest, junk, crcs)

     Reads runs of whole frames (counts[i] frames at offsets[i] of fds[i]),
     scattering each frame's byte segments straight to their destination:
     segment j (segs[j] = start, length, target) of source row r goes to
     row dest[r] of outputs[target] (a buffer of rows of `length` bytes),
     or, if target < 0, to row r of `junk` (all target<0 segments of a frame
     back to back). If `crcs` is not None, crcs[r] receives the CRC32C of
     the frame's record: every segment but the first (the 12-byte length
     header) and the last (the stored 4-byte CRC).
     If `maps` (a tuple of buffers, e.g. mmap objects of whole shards) is
     given, fds[i] is an index into it and the frames are copied from there
     instead of read: the same layout checks and CRCs, no system call. */
  PyObject *fds_o, *offsets_o, *counts_o, *segs_o, *outputs, *dest_o, *junk_o, *crcs_o;
  PyObject *maps_o = Py_None;
  Py_ssize_t frame_bytes;
  int software = 0;
  if (!PyArg_ParseTuple(args, "OOOnOO!OOO|pO", &fds_o, &offsets_o, &counts_o, &frame_bytes,
                        &segs_o, &PyTuple_Type, &outputs, &dest_o, &junk_o, &crcs_o, &software,
                        &maps_o))
    return NULL;
  if (maps_o != Py_None && !PyTuple_Check(maps_o)) {
    PyErr_SetString(PyExc_TypeError, "read_frames: maps must be a tuple of buffers or None");
    return NULL;
  }
  Py_buffer fds = {0}, offsets = {0}, counts = {0}, segs = {0}, dest = {0}, junk = {0},
            crcs = {0};
  Py_ssize_t n_out = PyTuple_GET_SIZE(outputs);
  int mapped = maps_o != Py_None;
  Py_ssize_t n_maps = mapped ? PyTuple_GET_SIZE(maps_o) : 0, n_maps_got = 0;
  Py_buffer *outs = calloc(n_out ? n_out : 1, sizeof(Py_buffer));
  Py_buffer *maps = calloc(n_maps ? n_maps : 1, sizeof(Py_buffer));
  struct iovec *iov = malloc(sizeof(struct iovec) * IOV_CHUNK);
  int64_t *idx = NULL;
  uint8_t *seen = NULL;
  PyObject *result = NULL;
  Py_ssize_t n_outs_got = 0;
  int have_crcs = crcs_o != Py_None;
  if (!outs || !maps || !iov) {
    PyErr_NoMemory();
    goto done;
  }
  if (PyObject_GetBuffer(fds_o, &fds, PyBUF_SIMPLE) < 0 ||
      PyObject_GetBuffer(offsets_o, &offsets, PyBUF_SIMPLE) < 0 ||
      PyObject_GetBuffer(counts_o, &counts, PyBUF_SIMPLE) < 0 ||
      PyObject_GetBuffer(segs_o, &segs, PyBUF_SIMPLE) < 0 ||
      PyObject_GetBuffer(dest_o, &dest, PyBUF_SIMPLE) < 0 ||
      PyObject_GetBuffer(junk_o, &junk, PyBUF_WRITABLE) < 0 ||
      (have_crcs && PyObject_GetBuffer(crcs_o, &crcs, PyBUF_WRITABLE) < 0))
    goto done;
  for (; n_outs_got < n_out; n_outs_got++)
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(outputs, n_outs_got), &outs[n_outs_got],
                           PyBUF_WRITABLE) < 0)
      goto done;
  for (; n_maps_got < n_maps; n_maps_got++)
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(maps_o, n_maps_got), &maps[n_maps_got],
                           PyBUF_SIMPLE) < 0)
      goto done;

  Py_ssize_t k = fds.len / 8, n_segs = segs.len / 24, rows = dest.len / 8;
  if (fds.len % 8 || offsets.len != fds.len || counts.len != fds.len || segs.len % 24 ||
      dest.len % 8 || n_segs < 2 || n_segs > MAX_SEGS || n_segs > IOV_CHUNK ||
      frame_bytes <= 0 || (have_crcs && crcs.len != rows * 4)) {
    PyErr_SetString(PyExc_ValueError, "read_frames: malformed arguments");
    goto done;
  }
  /* Private copies of the index arrays: the caller's could change while the
     GIL is released, after they were checked. */
  idx = malloc(sizeof(int64_t) * (size_t)(4 * k + 3 * n_segs + rows + 1));
  seen = calloc((size_t)rows + 1, 1);
  if (!idx || !seen) {
    PyErr_NoMemory();
    goto done;
  }
  int64_t *fd = idx, *off = fd + k, *cnt = off + k, *seg = cnt + k, *dst = seg + 3 * n_segs;
  memcpy(fd, fds.buf, (size_t)fds.len);
  memcpy(off, offsets.buf, (size_t)offsets.len);
  memcpy(cnt, counts.buf, (size_t)counts.len);
  memcpy(seg, segs.buf, (size_t)segs.len);
  memcpy(dst, dest.buf, (size_t)dest.len);

  int64_t total = 0, junk_bytes = 0, pos = 0, bytes;
  for (Py_ssize_t i = 0; i < k; i++) {
    if (cnt[i] < 0 || off[i] < 0 || fd[i] < 0 || fd[i] > (mapped ? n_maps - 1 : INT_MAX) ||
        __builtin_add_overflow(total, cnt[i], &total) ||
        __builtin_mul_overflow(cnt[i], (int64_t)frame_bytes, &bytes) ||
        __builtin_add_overflow(off[i], bytes, &bytes)) {
      PyErr_Format(PyExc_ValueError, "read_frames: read %zd is out of range", i);
      goto done;
    }
  }
  for (Py_ssize_t j = 0; j < n_segs; j++) {
    int64_t start = seg[3 * j], len = seg[3 * j + 1], t = seg[3 * j + 2];
    if (start != pos || len <= 0 || t >= n_out || t < -1 ||
        (t >= 0 && (__builtin_mul_overflow((int64_t)rows, len, &bytes) || outs[t].len != bytes)) ||
        __builtin_add_overflow(pos, len, &pos) || (t < 0 && __builtin_add_overflow(junk_bytes, len, &junk_bytes))) {
      PyErr_Format(PyExc_ValueError, "read_frames: segment %zd does not fit", j);
      goto done;
    }
  }
  /* The CRC covers the record: everything but the 12-byte length header
     (the first segment) and the 4-byte stored CRC (the last). */
  if (seg[0] != 0 || seg[1] != 12 || seg[2] != -1 || seg[3 * (n_segs - 1) + 1] != 4 ||
      seg[3 * (n_segs - 1) + 2] != -1) {
    PyErr_SetString(PyExc_ValueError,
                    "read_frames: the first segment must be the 12-byte header and the "
                    "last the 4-byte CRC, both to junk");
    goto done;
  }
  if (pos != frame_bytes || total != rows ||
      __builtin_mul_overflow((int64_t)rows, junk_bytes, &bytes) || junk.len != bytes) {
    PyErr_SetString(PyExc_ValueError, "read_frames: sizes do not add up");
    goto done;
  }
  for (Py_ssize_t r = 0; r < rows; r++) {
    if (dst[r] < 0 || dst[r] >= rows || seen[dst[r]]) {
      PyErr_SetString(PyExc_ValueError,
                      "read_frames: destination rows must be a permutation of the rows");
      goto done;
    }
    seen[dst[r]] = 1;
  }

  Py_ssize_t failed = -1, got = 0;
  int err = 0;
  uint8_t *junk_base = junk.buf;
#ifdef HAVE_SSE42_PATH
  int hw = !software && use_hardware();
#else
  int hw = 0;
  (void)software;
#endif
  CrcJob job = {seg, n_segs, outs, dst, junk_base, junk_bytes,
                have_crcs ? (uint32_t *)crcs.buf : NULL, hw};
  Py_BEGIN_ALLOW_THREADS;
  Py_ssize_t row = 0;
  /* Rows per preadv: what IOV_MAX allows, and at most ~256 KiB, so that the
     CRC pass after each read finds the rows still in the cache. */
  Py_ssize_t rows_per_call = IOV_CHUNK / n_segs;
  if (rows_per_call * frame_bytes > (256 << 10)) rows_per_call = (256 << 10) / frame_bytes;
  if (rows_per_call < 1) rows_per_call = 1;
  for (Py_ssize_t i = 0; i < k && failed < 0; i++) {
    int64_t done_rows = 0;
    if (mapped) {
      /* The frames are in memory (a mapped shard): copy each segment to its
         place, then check the CRCs of the same rows while still cached. */
      const uint8_t *base = maps[fd[i]].buf;
      int64_t avail = maps[fd[i]].len - off[i];
      if (avail < cnt[i] * (int64_t)frame_bytes) {
        failed = i;
        got = avail > 0 ? (Py_ssize_t)avail : 0;
        break;
      }
      while (done_rows < cnt[i]) {
        int64_t batch = cnt[i] - done_rows;
        if (batch > rows_per_call) batch = rows_per_call;
        for (int64_t r = 0; r < batch; r++) {
          Py_ssize_t src = row + done_rows + r;
          const uint8_t *from = base + off[i] + (done_rows + r) * (int64_t)frame_bytes;
          Py_ssize_t j_off = 0;
          for (Py_ssize_t j = 0; j < n_segs; j++) {
            int64_t len = seg[3 * j + 1];
            memcpy((uint8_t *)piece(&job, src, j, j_off), from, (size_t)len);
            if (seg[3 * j + 2] < 0) j_off += len;
            from += len;
          }
        }
        if (have_crcs) crc_records(&job, row + done_rows, row + done_rows + batch);
        done_rows += batch;
      }
      row += cnt[i];
      continue;
    }
    while (done_rows < cnt[i] && failed < 0) {
      int64_t batch = cnt[i] - done_rows;
      if (batch > rows_per_call) batch = rows_per_call;
      int n_iov = 0;
      for (int64_t r = 0; r < batch; r++) {
        Py_ssize_t src = row + done_rows + r;
        Py_ssize_t j_off = 0;
        for (Py_ssize_t j = 0; j < n_segs; j++) {
          int64_t len = seg[3 * j + 1];
          iov[n_iov].iov_base = (uint8_t *)piece(&job, src, j, j_off);
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
          failed = i;
          got = (Py_ssize_t)(done_rows * frame_bytes + (int64_t)have);
          err = m < 0 ? errno : 0;
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
      if (failed < 0 && have_crcs)
        crc_records(&job, row + done_rows, row + done_rows + batch);
      done_rows += batch;
    }
    row += cnt[i];
  }
  Py_END_ALLOW_THREADS;
  if (failed >= 0) {
    PyObject *info = Py_BuildValue("(nni)", failed, got, err);
    if (info) {
      PyErr_SetObject(PyExc_EOFError, info);
      Py_DECREF(info);
    }
    goto done;
  }
  result = Py_NewRef(Py_None);
done:
  for (Py_ssize_t i = 0; i < n_outs_got; i++) PyBuffer_Release(&outs[i]);
  for (Py_ssize_t i = 0; i < n_maps_got; i++) PyBuffer_Release(&maps[i]);
  free(outs);
  free(maps);
  free(iov);
  free(idx);
  free(seen);
  if (fds.obj) PyBuffer_Release(&fds);
  if (offsets.obj) PyBuffer_Release(&offsets);
  if (counts.obj) PyBuffer_Release(&counts);
  if (segs.obj) PyBuffer_Release(&segs);
  if (dest.obj) PyBuffer_Release(&dest);
  if (junk.obj) PyBuffer_Release(&junk);
  if (crcs.obj) PyBuffer_Release(&crcs);
  return result;
}

/* ------------------------------------------------------------- feistel */

static inline uint64_t mix64(uint64_t x) { /* splitmix64's finalizer */
  x *= 0x9E3779B97F4A7C15ull;
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

static PyObject *feistel(PyObject *self, PyObject *args) {
  /* feistel(indices, out, n, half_bits, keys): the C twin of
     _permutation.Permutation: four Feistel rounds on 2*half_bits bits,
     cycle-walking back into [0, n). */
  Py_buffer in = {0}, out = {0}, keys = {0};
  unsigned long long n;
  int half;
  if (!PyArg_ParseTuple(args, "y*w*Kiy*", &in, &out, &n, &half, &keys)) return NULL;
  PyObject *result = NULL;
  Py_ssize_t count = in.len / 8, rounds = keys.len / 8;
  if (in.len % 8 || out.len != in.len || keys.len % 8 || half < 1 || half > 31 ||
      n == 0 || n > (1ull << (2 * half))) {
    PyErr_SetString(PyExc_ValueError, "feistel: malformed arguments");
    goto fdone;
  }
  const uint64_t *x = in.buf, *k = keys.buf;
  uint64_t *y = out.buf, mask = (1ull << half) - 1;
  for (Py_ssize_t i = 0; i < count; i++) {
    if (x[i] >= n) {
      PyErr_Format(PyExc_ValueError, "indices must be < n=%llu.", n);
      goto fdone;
    }
  }
  for (Py_ssize_t i = 0; i < count; i++) {
    uint64_t v = x[i];
    do {
      uint64_t left = v >> half, right = v & mask;
      for (Py_ssize_t r = 0; r < rounds; r++) {
        uint64_t t = right;
        right = left ^ (mix64(right ^ k[r]) & mask);
        left = t;
      }
      v = (left << half) | right;
    } while (v >= n);
    y[i] = v;
  }
  result = Py_NewRef(Py_None);
fdone:
  PyBuffer_Release(&in);
  PyBuffer_Release(&out);
  PyBuffer_Release(&keys);
  return result;
}

/* ------------------------------------------------------------- advise */

static PyObject *advise(PyObject *self, PyObject *args) {
  /* advise(fds, offsets, lengths): posix_fadvise(WILLNEED) on each range, so
     that the kernel starts reading blocks that a later group will need: with
     shards on disk, random reads one at a time wait for each seek. Errors are
     ignored (it is only a hint). */
  Py_buffer fds = {0}, offsets = {0}, lengths = {0};
  if (!PyArg_ParseTuple(args, "y*y*y*", &fds, &offsets, &lengths)) return NULL;
  PyObject *result = NULL;
  Py_ssize_t k = fds.len / 8;
  int64_t *copy = NULL;
  if (fds.len % 8 || offsets.len != fds.len || lengths.len != fds.len) {
    PyErr_SetString(PyExc_ValueError, "advise: fds, offsets and lengths must be int64 arrays of one length");
    goto adone;
  }
  copy = malloc(sizeof(int64_t) * (size_t)(3 * k + 1));
  if (!copy) {
    PyErr_NoMemory();
    goto adone;
  }
  memcpy(copy, fds.buf, (size_t)fds.len);
  memcpy(copy + k, offsets.buf, (size_t)fds.len);
  memcpy(copy + 2 * k, lengths.buf, (size_t)fds.len);
  Py_BEGIN_ALLOW_THREADS;
  for (Py_ssize_t i = 0; i < k; i++) {
    int64_t fd = copy[i], off = copy[k + i], len = copy[2 * k + i];
#ifdef POSIX_FADV_WILLNEED /* not on macOS: there the hint is a no-op */
    if (fd >= 0 && fd <= INT_MAX && off >= 0 && len > 0)
      (void)posix_fadvise((int)fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
#else
    (void)fd, (void)off, (void)len;
#endif
  }
  Py_END_ALLOW_THREADS;
  result = Py_NewRef(Py_None);
adone:
  free(copy);
  PyBuffer_Release(&fds);
  PyBuffer_Release(&offsets);
  PyBuffer_Release(&lengths);
  return result;
}

static PyMethodDef methods[] = {
    {"crc32c_rows", (PyCFunction)(void (*)(void))crc32c_rows, METH_VARARGS | METH_KEYWORDS,
     "crc32c_rows(data, out, stride, start, length, software=False)\n\n"
     "Writes into `out` (uint32 per row) the CRC32C of bytes [start, start+length)\n"
     "of each row of `data`, rows `stride` bytes apart. Releases the GIL."},
    {"read_frames", read_frames, METH_VARARGS,
     "read_frames(fds, offsets, counts, frame_bytes, segs, outputs, dest, junk, crcs,\n"
     "            software=False, maps=None)\n\n"
     "Reads runs of fixed-size frames, scattering each frame's segments straight into\n"
     "per-feature outputs at permuted rows (see the C source). Releases the GIL."},
    {"advise", advise, METH_VARARGS,
     "advise(fds, offsets, lengths)\n\n"
     "posix_fadvise(POSIX_FADV_WILLNEED) on each range (int64 arrays); a hint, never fails."},
    {"feistel", feistel, METH_VARARGS,
     "feistel(indices, out, n, half_bits, keys)\n\n"
     "The keyed permutation of _permutation.Permutation, for uint64 indices < n."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native",
                                    "Read-path loops for tfds_bigarrays.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
  const uint16_t one = 1;
  if (*(const uint8_t *)&one != 1) {
    PyErr_SetString(PyExc_ImportError, "tfds_bigarrays._native needs a little-endian machine");
    return NULL;
  }
  init_crc_table();
  PyObject *m = PyModule_Create(&module);
  if (m && PyModule_AddIntConstant(m, "HARDWARE_CRC", use_hardware()) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
