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

#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "_readcore.h"

/* The CRC path for a `software` argument: 0 the best this CPU has, 1 (True)
   the table, 2 the CRC32 instruction without folding (for tests). */
static int crc_level(int software) {
  int hw = use_hardware();
  if (software == 1) return 0;
  if (software == 2 && hw > 1) return 1;
  return hw;
}

#ifdef HAVE_SSE42_PATH
/* Four rows at once: the crc32 instruction has a latency of three cycles
   but a throughput of one, so four independent streams keep it busy. */
__attribute__((target("sse4.2"))) static void crc_rows_sse42(const uint8_t *base,
                                                             ptrdiff_t rows,
                                                             ptrdiff_t stride,
                                                             ptrdiff_t length,
                                                             uint32_t *out) {
  ptrdiff_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const uint8_t *p0 = base + r * stride, *p1 = p0 + stride, *p2 = p1 + stride,
                  *p3 = p2 + stride;
    uint64_t c0 = 0xFFFFFFFFu, c1 = c0, c2 = c0, c3 = c0;
    ptrdiff_t i = 0;
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
    ptrdiff_t i = 0;
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

static PyObject *crc32c_rows(PyObject *self, PyObject *args, PyObject *kwargs) {
  static char *kwlist[] = {"data", "out", "stride", "start", "length", "software", NULL};
  Py_buffer data, out;
  Py_ssize_t stride, start, length;
  int software = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*w*nnn|i", kwlist, &data, &out, &stride,
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
  int hw = crc_level(software);
  Py_BEGIN_ALLOW_THREADS;
#ifdef HAVE_SSE42_PATH
  if (hw >= 2 && length >= FOLD_MIN_BYTES) {
    for (Py_ssize_t r = 0; r < rows; r++)
      crcs[r] = crc32c_fold(0xFFFFFFFFu, base + r * stride, (size_t)length) ^ 0xFFFFFFFFu;
  } else if (hw) {
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
  if (!PyArg_ParseTuple(args, "OOOnOO!OOO|iO", &fds_o, &offsets_o, &counts_o, &frame_bytes,
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
  /* Raw views of the same buffers, for read_runs. */
  uint8_t **out_bufs = calloc(n_out ? n_out : 1, sizeof(uint8_t *));
  const uint8_t **map_bufs = calloc(n_maps ? n_maps : 1, sizeof(uint8_t *));
  int64_t *map_lens = calloc(n_maps ? n_maps : 1, sizeof(int64_t));
  struct iovec *iov = malloc(sizeof(struct iovec) * IOV_CHUNK);
  int64_t *idx = NULL;
  uint8_t *seen = NULL;
  PyObject *result = NULL;
  Py_ssize_t n_outs_got = 0;
  int have_crcs = crcs_o != Py_None;
  if (!outs || !maps || !out_bufs || !map_bufs || !map_lens || !iov) {
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
  for (Py_ssize_t i = 0; i < n_out; i++) out_bufs[i] = outs[i].buf;
  for (Py_ssize_t i = 0; i < n_maps; i++) {
    map_bufs[i] = maps[i].buf;
    map_lens[i] = maps[i].len;
  }

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
  int hw = crc_level(software);
#else
  int hw = 0;
  (void)software;
#endif
  CrcJob job = {seg, n_segs, out_bufs, dst, junk_base, junk_bytes,
                have_crcs ? (uint32_t *)crcs.buf : NULL, hw};
  Py_BEGIN_ALLOW_THREADS;
  ReadStatus st = read_runs(&job, frame_bytes, k, fd, off, cnt, mapped ? map_bufs : NULL,
                            mapped ? map_lens : NULL, iov);
  failed = st.failed;
  got = st.got;
  err = st.err;
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
  free(out_bufs);
  free(map_bufs);
  free(map_lens);
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

/* ------------------------------------------------------------- permutations */

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
  uint64_t *y = out.buf;
  for (Py_ssize_t i = 0; i < count; i++) {
    if (x[i] >= n) {
      PyErr_Format(PyExc_ValueError, "indices must be < n=%llu.", n);
      goto fdone;
    }
  }
  for (Py_ssize_t i = 0; i < count; i++) y[i] = feistel_one(x[i], n, half, k, rounds);
  result = Py_NewRef(Py_None);
fdone:
  PyBuffer_Release(&in);
  PyBuffer_Release(&out);
  PyBuffer_Release(&keys);
  return result;
}

static PyObject *py_row_order(PyObject *self, PyObject *args) {
  /* row_order(seed, group, out): out (int64) = the permutation of a group's
     rows, as the TensorFlow op computes it (see _readcore.h). */
  unsigned long long seed, group;
  Py_buffer out = {0};
  if (!PyArg_ParseTuple(args, "KKw*", &seed, &group, &out)) return NULL;
  if (out.len % 8) {
    PyBuffer_Release(&out);
    PyErr_SetString(PyExc_ValueError, "row_order: out must be an int64 array");
    return NULL;
  }
  row_order(seed, group, out.len / 8, out.buf);
  PyBuffer_Release(&out);
  Py_RETURN_NONE;
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
    {"row_order", py_row_order, METH_VARARGS,
     "row_order(seed, group, out)\n\n"
     "Writes into `out` (int64) the keyed permutation of a group's rows."},
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
