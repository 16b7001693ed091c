/* poolmon._hot: the shims' borrow/return fast path, compiled.
 *
 * Why this exists: a shimmed pool's whole borrow+return cycle costs 2.5 us (psycopg_pool) to
 * 6.5 us (redis-py), and the standard's bars leave poolmon a quarter to a tenth of that. A
 * pure-Python wrapper pays a frame per call before it does any work (~0.35 us each on the
 * reference machine), so the cheapest possible Python wrapper pair already spends the whole
 * budget. The Python wrappers (poolmon/shims/_*_sync.py, _urllib3_hooks.py) stay the reference
 * implementation and the fallback; this module only re-implements their *common* case:
 *
 *   - Lane: the ledger's lock-free hot lane (poolmon/core/lane.py documents its invariants);
 *     the same interface as the Python HotLane, readable here without attribute lookups, but
 *     it counts each wait and use sample straight into fixed buckets (a bisect on C doubles)
 *     instead of keeping a list of float objects for the ledger to fold: no allocation per
 *     sample, and memory that never grows. The ledger drains the buckets under its lock.
 *   - HotMethod: a method descriptor (bound like a Python function, called without a bound
 *     method object) that checks cheaply whether the call is the common case and, if not,
 *     hands the call *unchanged* to the Python wrapper ("slow"). Once the original has been
 *     called, the rare outcomes (an exception, a connection poolmon has not tagged yet, a
 *     closed lane) go to small Python callbacks, so every decision the Python wrapper makes
 *     is still made in Python, in one place.
 *
 * Atomicity: every write below is one operation on a builtin dict with int keys and float
 * values, or a bucket increment in this module's own C arrays; no Python code runs between the
 * dict lookup and the delete of a return (int hashing and comparison call none), nor inside a
 * bucket update or a drain: under the GIL each is one indivisible step, exactly as atomic as the
 * Python lane's ``dict.pop`` and ``list.append``. Bookkeeping errors after the original was called are passed to
 * ``absorb`` (counted and logged once), never raised into the host.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

#if PY_VERSION_HEX >= 0x030D0000
#define LOOKUP_ATTR(obj, name, result) PyObject_GetOptionalAttr((obj), (name), (result))
#else
#define LOOKUP_ATTR(obj, name, result) _PyObject_LookupAttr((obj), (name), (result))
#endif

/* -------------------------------------------------------------------------------- Borrowed */

/* The lane's live "used" state, conn id -> borrow time, as a small C hash table: the compiled
 * Lane's ``borrowed``. A dict did this job first; per borrow+return it ran CPython's generic
 * dict insert, lookup and delete and allocated a float, and on a real workload (a query between
 * borrow and return) those code paths are out of the first-level caches every time: measured
 * with callgrind's cache model, they were the largest part of poolmon's cost end to end.
 *
 * Open addressing with linear probing over int64 ids and C doubles; a deleted entry leaves a
 * tombstone that a later insert reuses (a pool borrows the same few ids over and over), and the
 * table is rebuilt (same or double size) when live entries plus tombstones pass 3/4 of it. Each
 * entry carries the sequence number of its insertion, so ``copy()`` gives a dict in borrow
 * order, as the dict did: the ledger's oldest borrow is the first item, and its leak scan stops
 * at the first young one. Assigning an id already present keeps its place, as a dict does.
 *
 * Connection ids are ints; any other key (a test's mock connection hands the Python wrappers a
 * mock for an id) goes to a plain dict on the side, ``others``, that keeps the same borrow order,
 * so the table takes whatever the dict took. An operation on an int key is one C call that runs
 * no Python code: under the GIL it is atomic, exactly as the dict's was. */

typedef struct {
    long long key;
    unsigned long long seq; /* 0: empty slot */
    double value;
    char dead; /* tombstone: deleted, reusable */
} BorrowEntry;

typedef struct {
    PyObject_HEAD
    BorrowEntry *slots;
    Py_ssize_t capacity; /* a power of two */
    Py_ssize_t used;     /* live entries */
    Py_ssize_t dead;     /* tombstones */
    unsigned long long next_seq;
    PyObject *others; /* NULL, or a dict: key that is not an int id -> (seq, value) */
} BorrowedObject;

static PyTypeObject BorrowedType;

#define BORROWED_MIN 8

static inline Py_ssize_t
borrowed_home(const BorrowedObject *t, long long key)
{
    unsigned long long h = (unsigned long long)key * 0x9E3779B97F4A7C15ULL;
    return (Py_ssize_t)(h >> 32) & (t->capacity - 1);
}

/* The slot holding key, or -1. */
static Py_ssize_t
borrowed_find(const BorrowedObject *t, long long key)
{
    Py_ssize_t mask = t->capacity - 1;
    for (Py_ssize_t i = borrowed_home(t, key);; i = (i + 1) & mask) {
        const BorrowEntry *e = &t->slots[i];
        if (e->seq == 0) {
            return -1;
        }
        if (!e->dead && e->key == key) {
            return i;
        }
    }
}

/* Rehash the live entries into a table of ``capacity`` slots (keeps their sequence numbers). */
static int
borrowed_resize(BorrowedObject *t, Py_ssize_t capacity)
{
    BorrowEntry *fresh = PyMem_Calloc((size_t)capacity, sizeof(BorrowEntry));
    if (fresh == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    BorrowEntry *old = t->slots;
    Py_ssize_t old_capacity = t->capacity;
    t->slots = fresh;
    t->capacity = capacity;
    t->dead = 0;
    for (Py_ssize_t j = 0; j < old_capacity; j++) {
        if (old[j].seq != 0 && !old[j].dead) {
            Py_ssize_t i = borrowed_home(t, old[j].key);
            while (fresh[i].seq != 0) {
                i = (i + 1) & (capacity - 1);
            }
            fresh[i] = old[j];
        }
    }
    PyMem_Free(old);
    return 0;
}

/* t[key] = value (a new key goes last in borrow order). 0, or -1 with an error (no memory). */
static int
borrowed_set(BorrowedObject *t, long long key, double value)
{
    Py_ssize_t mask = t->capacity - 1, reuse = -1, i;
    for (i = borrowed_home(t, key);; i = (i + 1) & mask) {
        BorrowEntry *e = &t->slots[i];
        if (e->seq == 0) {
            break;
        }
        if (e->dead) {
            if (reuse < 0) {
                reuse = i;
            }
        }
        else if (e->key == key) {
            e->value = value;
            return 0;
        }
    }
    if (reuse >= 0) {
        i = reuse;
        t->dead--;
    }
    else if ((t->used + t->dead + 1) * 4 > t->capacity * 3) {
        /* Rebuild: double when live entries need it, else just sweep the tombstones. */
        Py_ssize_t capacity = (t->used + 1) * 2 > t->capacity ? t->capacity * 2 : t->capacity;
        if (borrowed_resize(t, capacity) < 0) {
            return -1;
        }
        return borrowed_set(t, key, value);
    }
    BorrowEntry *e = &t->slots[i];
    e->key = key;
    e->value = value;
    e->seq = ++t->next_seq;
    e->dead = 0;
    t->used++;
    return 0;
}

/* Remove key: 1 and its value in *value when it was there, else 0. */
static int
borrowed_pop(BorrowedObject *t, long long key, double *value)
{
    Py_ssize_t i = borrowed_find(t, key);
    if (i < 0) {
        return 0;
    }
    *value = t->slots[i].value;
    t->slots[i].dead = 1;
    t->used--;
    t->dead++;
    return 1;
}

static BorrowedObject *
borrowed_create(void)
{
    BorrowedObject *t = PyObject_GC_New(BorrowedObject, &BorrowedType);
    if (t == NULL) {
        return NULL;
    }
    t->others = NULL;
    t->slots = PyMem_Calloc(BORROWED_MIN, sizeof(BorrowEntry));
    if (t->slots == NULL) {
        Py_DECREF(t);
        PyErr_NoMemory();
        return NULL;
    }
    t->capacity = BORROWED_MIN;
    t->used = t->dead = 0;
    t->next_seq = 0;
    PyObject_GC_Track(t);
    return t;
}

static int
borrowed_traverse(BorrowedObject *t, visitproc visit, void *arg)
{
    Py_VISIT(t->others);
    return 0;
}

static int
borrowed_clear_refs(BorrowedObject *t)
{
    Py_CLEAR(t->others);
    return 0;
}

static void
borrowed_dealloc(BorrowedObject *t)
{
    PyObject_GC_UnTrack(t);
    Py_CLEAR(t->others);
    PyMem_Free(t->slots);
    PyObject_GC_Del(t);
}

/* ``others``: a key that is not an int id. Its entry (seq, value), borrowed reference, or NULL
 * (an error set only when the lookup itself failed). */
static PyObject *
others_entry(BorrowedObject *t, PyObject *key)
{
    return t->others == NULL ? NULL : PyDict_GetItemWithError(t->others, key);
}

static int
others_set(BorrowedObject *t, PyObject *key, double value)
{
    if (t->others == NULL && (t->others = PyDict_New()) == NULL) {
        return -1;
    }
    PyObject *entry = others_entry(t, key);
    if (entry == NULL && PyErr_Occurred()) {
        return -1;
    }
    unsigned long long seq = entry != NULL
                                 ? PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(entry, 0))
                                 : ++t->next_seq; /* a new key goes last, an old one stays */
    PyObject *fresh = Py_BuildValue("(Kd)", seq, value);
    if (fresh == NULL) {
        return -1;
    }
    int rc = PyDict_SetItem(t->others, key, fresh);
    Py_DECREF(fresh);
    return rc;
}

/* Remove a key that is not an int id: 1 with *value, 0 when absent, -1 with an error. */
static int
others_pop(BorrowedObject *t, PyObject *key, double *value)
{
    PyObject *entry = others_entry(t, key);
    if (entry == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    *value = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(entry, 1));
    return PyDict_DelItem(t->others, key) < 0 ? -1 : 1;
}

static Py_ssize_t
others_size(const BorrowedObject *t)
{
    return t->others == NULL ? 0 : PyDict_GET_SIZE(t->others);
}

/* A Python key as an id: 1 with *key set, 0 when it cannot be an id (not an exact int, or out of
 * range), -1 with an error. Never runs Python code. */
static int
borrowed_key(PyObject *obj, long long *key)
{
    if (!PyLong_CheckExact(obj)) {
        return 0;
    }
    int overflow;
    *key = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (*key == -1 && PyErr_Occurred()) {
        return -1;
    }
    return overflow == 0;
}

static Py_ssize_t
borrowed_length(BorrowedObject *t)
{
    return t->used + others_size(t);
}

static PyObject *
borrowed_subscript(BorrowedObject *t, PyObject *obj)
{
    long long key;
    int ok = borrowed_key(obj, &key);
    if (ok < 0) {
        return NULL;
    }
    if (!ok) {
        PyObject *entry = others_entry(t, obj);
        if (entry != NULL) {
            return Py_NewRef(PyTuple_GET_ITEM(entry, 1));
        }
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, obj);
        }
        return NULL;
    }
    Py_ssize_t i = borrowed_find(t, key);
    if (i < 0) {
        PyErr_SetObject(PyExc_KeyError, obj);
        return NULL;
    }
    return PyFloat_FromDouble(t->slots[i].value);
}

static int
borrowed_ass_subscript(BorrowedObject *t, PyObject *obj, PyObject *value)
{
    long long key;
    int ok = borrowed_key(obj, &key);
    if (ok < 0) {
        return -1;
    }
    if (value == NULL) {
        double ignored;
        int found = ok ? borrowed_pop(t, key, &ignored) : others_pop(t, obj, &ignored);
        if (found == 0) {
            PyErr_SetObject(PyExc_KeyError, obj);
        }
        return found > 0 ? 0 : -1;
    }
    if (!PyFloat_Check(value) && !PyLong_CheckExact(value)) {
        PyErr_Format(PyExc_TypeError, "Borrowed: borrow times are floats, got %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    double start = PyFloat_AsDouble(value);
    if (start == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    return ok ? borrowed_set(t, key, start) : others_set(t, obj, start);
}

static int
borrowed_contains(BorrowedObject *t, PyObject *obj)
{
    long long key;
    int ok = borrowed_key(obj, &key);
    if (ok < 0) {
        return -1;
    }
    if (!ok) {
        return others_entry(t, obj) != NULL ? 1 : (PyErr_Occurred() ? -1 : 0);
    }
    return borrowed_find(t, key) >= 0;
}

static PyObject *
borrowed_pop_method(BorrowedObject *t, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "pop(conn_id[, default])");
        return NULL;
    }
    long long key;
    int ok = borrowed_key(args[0], &key);
    if (ok < 0) {
        return NULL;
    }
    double value;
    int found = ok ? borrowed_pop(t, key, &value) : others_pop(t, args[0], &value);
    if (found < 0) {
        return NULL;
    }
    if (found) {
        return PyFloat_FromDouble(value);
    }
    if (nargs == 2) {
        Py_INCREF(args[1]);
        return args[1];
    }
    PyErr_SetObject(PyExc_KeyError, args[0]);
    return NULL;
}

static PyObject *
borrowed_get(BorrowedObject *t, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(conn_id[, default])");
        return NULL;
    }
    long long key;
    int ok = borrowed_key(args[0], &key);
    if (ok < 0) {
        return NULL;
    }
    if (!ok) {
        PyObject *entry = others_entry(t, args[0]);
        if (entry != NULL) {
            return Py_NewRef(PyTuple_GET_ITEM(entry, 1));
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    Py_ssize_t i = ok ? borrowed_find(t, key) : -1;
    if (i >= 0) {
        return PyFloat_FromDouble(t->slots[i].value);
    }
    PyObject *fallback = nargs == 2 ? args[1] : Py_None;
    Py_INCREF(fallback);
    return fallback;
}


/* One entry of a copy: an int id from the table, or a key from ``others``. */
typedef struct {
    unsigned long long seq;
    long long key;
    PyObject *other_key; /* NULL for an int id; else borrowed from ``others`` */
    double value;
} CopyEntry;

static int
copy_by_seq(const void *a, const void *b)
{
    unsigned long long x = ((const CopyEntry *)a)->seq, y = ((const CopyEntry *)b)->seq;
    return x < y ? -1 : x > y;
}

/* A dict of the live entries in borrow order. With int ids only, no Python code runs until every
 * entry is read (the copy is one atomic step, like dict.copy()). */
static PyObject *
borrowed_copy(BorrowedObject *t, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t n = t->used + others_size(t);
    CopyEntry *entries = PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof(CopyEntry));
    if (entries == NULL) {
        return PyErr_NoMemory();
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t j = 0; j < t->capacity && k < t->used; j++) {
        const BorrowEntry *e = &t->slots[j];
        if (e->seq != 0 && !e->dead) {
            entries[k++] = (CopyEntry){e->seq, e->key, NULL, e->value};
        }
    }
    PyObject *other_key, *entry;
    Py_ssize_t pos = 0;
    while (t->others != NULL && k < n && PyDict_Next(t->others, &pos, &other_key, &entry)) {
        unsigned long long seq = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(entry, 0));
        entries[k++] = (CopyEntry){seq, 0, other_key, PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(entry, 1))};
    }
    /* Keys of ``others`` are borrowed from it: hold them while the dict is built. */
    for (Py_ssize_t j = 0; j < k; j++) {
        Py_XINCREF(entries[j].other_key);
    }
    qsort(entries, (size_t)k, sizeof(CopyEntry), copy_by_seq);
    PyObject *dict = PyDict_New();
    for (Py_ssize_t j = 0; dict != NULL && j < k; j++) {
        PyObject *key = entries[j].other_key != NULL ? Py_NewRef(entries[j].other_key)
                                                     : PyLong_FromLongLong(entries[j].key);
        PyObject *value = PyFloat_FromDouble(entries[j].value);
        if (key == NULL || value == NULL || PyDict_SetItem(dict, key, value) < 0) {
            Py_CLEAR(dict);
        }
        Py_XDECREF(key);
        Py_XDECREF(value);
    }
    for (Py_ssize_t j = 0; j < k; j++) {
        Py_XDECREF(entries[j].other_key);
    }
    PyMem_Free(entries);
    return dict;
}

static PyObject *
borrowed_clear_method(BorrowedObject *t, PyObject *Py_UNUSED(ignored))
{
    memset(t->slots, 0, (size_t)t->capacity * sizeof(BorrowEntry));
    t->used = t->dead = 0;
    Py_CLEAR(t->others);
    Py_RETURN_NONE;
}

static PyObject *
borrowed_iter(BorrowedObject *t)
{
    PyObject *copy = borrowed_copy(t, NULL);
    if (copy == NULL) {
        return NULL;
    }
    PyObject *it = PyObject_GetIter(copy);
    Py_DECREF(copy);
    return it;
}

static PyObject *
borrowed_repr(BorrowedObject *t)
{
    PyObject *copy = borrowed_copy(t, NULL);
    if (copy == NULL) {
        return NULL;
    }
    PyObject *r = PyUnicode_FromFormat("Borrowed(%R)", copy);
    Py_DECREF(copy);
    return r;
}

static PyMethodDef borrowed_methods[] = {
    {"pop", (PyCFunction)(void (*)(void))borrowed_pop_method, METH_FASTCALL,
     "pop(conn_id[, default]): remove an id and return its borrow time, as dict.pop."},
    {"get", (PyCFunction)(void (*)(void))borrowed_get, METH_FASTCALL,
     "get(conn_id[, default]): the borrow time of an id, as dict.get."},
    {"copy", (PyCFunction)borrowed_copy, METH_NOARGS,
     "A dict of conn id -> borrow time in borrow order (oldest first), taken atomically."},
    {"clear", (PyCFunction)borrowed_clear_method, METH_NOARGS, "Forget every borrow."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods borrowed_as_mapping = {
    .mp_length = (lenfunc)borrowed_length,
    .mp_subscript = (binaryfunc)borrowed_subscript,
    .mp_ass_subscript = (objobjargproc)borrowed_ass_subscript,
};

static PySequenceMethods borrowed_as_sequence = {
    .sq_contains = (objobjproc)borrowed_contains,
};

static PyTypeObject BorrowedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "poolmon._hot.Borrowed",
    .tp_doc = PyDoc_STR("conn id -> borrow time, the compiled lane's live used state: the "
                        "dict operations the ledger uses (set, pop, get, in, len, copy in "
                        "borrow order), int ids in a small C hash table."),
    .tp_basicsize = sizeof(BorrowedObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)borrowed_traverse,
    .tp_clear = (inquiry)borrowed_clear_refs,
    .tp_dealloc = (destructor)borrowed_dealloc,
    .tp_repr = (reprfunc)borrowed_repr,
    .tp_as_mapping = &borrowed_as_mapping,
    .tp_as_sequence = &borrowed_as_sequence,
    .tp_iter = (getiterfunc)borrowed_iter,
    .tp_methods = borrowed_methods,
};

/* ------------------------------------------------------------------------------------ Lane */

/* Bucket bounds per histogram: the standard's catalog has 20-odd; this is a generous ceiling. */
#define MAX_BOUNDS 64

/* One of the lane's two histograms (wait, use): the samples recorded since the last drain, in
 * buckets with ``le`` semantics (bucket i counts bounds[i-1] < x <= bounds[i], the last bucket
 * everything above), plus the sum of the positive samples. */
typedef struct {
    Py_ssize_t n_bounds;
    double bounds[MAX_BOUNDS];
    long long counts[MAX_BOUNDS + 1];
    double sum;
} Buckets;

typedef struct {
    PyObject_HEAD
    char open;
    char retired;      /* its tracker was dropped (uninstrument): tags naming it are stale */
    char direct_clock; /* now is time.perf_counter and direct_seconds() reads the same clock */
    PyObject *now;
    BorrowedObject *borrowed;
    Buckets waits;
    Buckets uses;
} LaneObject;

static PyTypeObject LaneType;

/* time.perf_counter, the system clock's monotonic reading (poolmon.core.clock.SystemClock). */
static PyObject *perf_counter;

/* On Linux, CPython's time.perf_counter reads clock_gettime(CLOCK_MONOTONIC) and converts the
 * nanoseconds exactly as below (_PyTime_AsSecondsDouble), so a lane can read that clock itself
 * and give the very same floats as the Python code of the ledger reading time.perf_counter:
 * durations mixing both stay exact. It saves the call through the builtin (~270 instructions a
 * reading). Elsewhere perf_counter may read another clock: no shortcut. */
#if defined(__linux__) && defined(CLOCK_MONOTONIC)
#define HAVE_DIRECT_CLOCK 1
static int
direct_seconds(double *out)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    *out = ns % 1000000000LL == 0 ? (double)(ns / 1000000000LL) : (double)ns / 1e9;
    return 0;
}
#else
#define HAVE_DIRECT_CLOCK 0
#endif

/* Add x to its bucket: bisect_left over the bounds, as the ledger's locked path does. */
static inline void
bucket_add(Buckets *b, double x)
{
    Py_ssize_t lo = 0, hi = b->n_bounds;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (b->bounds[mid] < x) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    b->counts[lo]++;
    if (x > 0.0) {
        b->sum += x; /* zero or negative durations (a clock that did not move) add nothing */
    }
}

static int
buckets_init(Buckets *b, PyObject *bounds, const char *what)
{
    PyObject *seq = PySequence_Fast(bounds, "Lane: bucket bounds must be a sequence of floats");
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_BOUNDS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "Lane: at most %d %s, got %zd", MAX_BOUNDS, what, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        double bound = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (bound == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (i > 0 && !(bound > b->bounds[i - 1])) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "Lane: %s must be strictly increasing", what);
            return -1;
        }
        b->bounds[i] = bound;
    }
    Py_DECREF(seq);
    b->n_bounds = n;
    return 0;
}

static void
buckets_clear(Buckets *b)
{
    memset(b->counts, 0, sizeof(b->counts));
    b->sum = 0.0;
}

/* Add the buckets into ``counts`` (a list of n_bounds + 1 ints) and empty them; the sum drained,
 * or NULL with an error (counts then unchanged). */
static PyObject *
buckets_drain(Buckets *b, PyObject *counts)
{
    if (!PyList_Check(counts) || PyList_GET_SIZE(counts) != b->n_bounds + 1) {
        PyErr_Format(PyExc_ValueError, "Lane.drain: need a list of %zd counts", b->n_bounds + 1);
        return NULL;
    }
    PyObject *sums[MAX_BOUNDS + 1] = {NULL};
    for (Py_ssize_t i = 0; i <= b->n_bounds; i++) {
        if (b->counts[i] == 0) {
            continue;
        }
        PyObject *inc = PyLong_FromLongLong(b->counts[i]);
        sums[i] = inc ? PyNumber_Add(PyList_GET_ITEM(counts, i), inc) : NULL;
        Py_XDECREF(inc);
        if (sums[i] == NULL) {
            for (Py_ssize_t j = 0; j < i; j++) {
                Py_XDECREF(sums[j]);
            }
            return NULL;
        }
    }
    /* Nothing below can fail or run Python code: the whole drain is one step under the GIL. */
    for (Py_ssize_t i = 0; i <= b->n_bounds; i++) {
        if (sums[i] != NULL) {
            PyList_SetItem(counts, i, sums[i]); /* steals sums[i], releases the old count */
        }
    }
    PyObject *sum = PyFloat_FromDouble(b->sum);
    if (sum != NULL) {
        buckets_clear(b);
    }
    return sum;
}

static PyObject *
lane_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"now", "wait_bounds", "use_bounds", NULL};
    PyObject *now, *wait_bounds = NULL, *use_bounds = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO:Lane", kwlist, &now, &wait_bounds,
                                     &use_bounds)) {
        return NULL;
    }
    if (!PyCallable_Check(now)) {
        PyErr_Format(PyExc_TypeError, "Lane(now): now must be callable, got %.100s",
                     Py_TYPE(now)->tp_name);
        return NULL;
    }
    LaneObject *self = (LaneObject *)type->tp_alloc(type, 0); /* zeroed: empty buckets */
    if (self == NULL) {
        return NULL;
    }
    self->open = 1;
#if HAVE_DIRECT_CLOCK
    self->direct_clock = now == perf_counter;
#endif
    Py_INCREF(now);
    self->now = now;
    self->borrowed = borrowed_create();
    if (self->borrowed == NULL ||
        (wait_bounds != NULL && buckets_init(&self->waits, wait_bounds, "wait_bounds") < 0) ||
        (use_bounds != NULL && buckets_init(&self->uses, use_bounds, "use_bounds") < 0)) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
lane_traverse(LaneObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->now);
    Py_VISIT(self->borrowed);
    return 0;
}

static int
lane_clear(LaneObject *self)
{
    Py_CLEAR(self->now);
    Py_CLEAR(self->borrowed);
    return 0;
}

static void
lane_dealloc(LaneObject *self)
{
    PyObject_GC_UnTrack(self);
    lane_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *lane_now(LaneObject *lane);

static PyObject *
lane_read_clock(LaneObject *self, PyObject *Py_UNUSED(ignored))
{
    return lane_now(self);
}

static PyObject *
lane_clear_samples(LaneObject *self, PyObject *Py_UNUSED(ignored))
{
    buckets_clear(&self->waits);
    buckets_clear(&self->uses);
    Py_RETURN_NONE;
}

static PyObject *
lane_note(Buckets *b, PyObject *sample)
{
    double x = PyFloat_AsDouble(sample);
    if (x == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    bucket_add(b, x);
    Py_RETURN_NONE;
}

static PyObject *
lane_note_wait(LaneObject *self, PyObject *sample)
{
    return lane_note(&self->waits, sample);
}

static PyObject *
lane_note_use(LaneObject *self, PyObject *sample)
{
    return lane_note(&self->uses, sample);
}

static PyObject *
lane_drain(LaneObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "drain(wait_counts, use_counts)");
        return NULL;
    }
    PyObject *wait_sum = buckets_drain(&self->waits, args[0]);
    if (wait_sum == NULL) {
        return NULL;
    }
    PyObject *use_sum = buckets_drain(&self->uses, args[1]);
    if (use_sum == NULL) {
        Py_DECREF(wait_sum);
        return NULL;
    }
    PyObject *sums = PyTuple_Pack(2, wait_sum, use_sum);
    Py_DECREF(wait_sum);
    Py_DECREF(use_sum);
    return sums;
}

/* Samples wait in buckets, not in lists: the lists a HotLane writer checks are always empty. */
static PyObject *
lane_no_samples(LaneObject *Py_UNUSED(self), void *Py_UNUSED(closure))
{
    return PyTuple_New(0);
}

static PyMethodDef lane_methods[] = {
    {"read_clock", (PyCFunction)lane_read_clock, METH_NOARGS,
     "A reading of the lane's clock, as the fast path takes it (always a float)."},
    {"clear_samples", (PyCFunction)lane_clear_samples, METH_NOARGS,
     "Drop samples not drained yet (a forked child must not count its parent's)."},
    {"note_wait", (PyCFunction)lane_note_wait, METH_O, "Record one wait sample (seconds)."},
    {"note_use", (PyCFunction)lane_note_use, METH_O, "Record one use sample (seconds)."},
    {"drain", (PyCFunction)(void (*)(void))lane_drain, METH_FASTCALL,
     "drain(wait_counts, use_counts) -> (wait_sum, use_sum): add the samples recorded since "
     "the last drain into the ledger's bucket counts and empty the lane. Ledger lock held."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef lane_members[] = {
    {"open", T_BOOL, offsetof(LaneObject, open), 0,
     "True while borrow/return need nothing but the lane's own operations."},
    {"retired", T_BOOL, offsetof(LaneObject, retired), 0,
     "True once the tracker owning it was dropped: links and tags naming it are stale."},
    {"now", T_OBJECT, offsetof(LaneObject, now), READONLY, "The ledger's clock."},
    {"direct_clock", T_BOOL, offsetof(LaneObject, direct_clock), READONLY,
     "True when the clock is time.perf_counter and the lane reads it without calling it."},
    {"borrowed", T_OBJECT, offsetof(LaneObject, borrowed), READONLY,
     "conn id -> borrow time (a Borrowed table); the ledger's live used state (shared)."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef lane_getset[] = {
    {"waits", (getter)lane_no_samples, NULL,
     "Always empty: wait samples go straight into the lane's buckets (see drain).", NULL},
    {"uses", (getter)lane_no_samples, NULL,
     "Always empty: use samples go straight into the lane's buckets (see drain).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "poolmon._hot.Lane",
    .tp_doc = PyDoc_STR("The ledger's lock-free hot lane (see poolmon.core.lane), compiled: "
                        "samples are counted into buckets as they come."),
    .tp_basicsize = sizeof(LaneObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = lane_new,
    .tp_traverse = (traverseproc)lane_traverse,
    .tp_clear = (inquiry)lane_clear,
    .tp_dealloc = (destructor)lane_dealloc,
    .tp_methods = lane_methods,
    .tp_members = lane_members,
    .tp_getset = lane_getset,
};

/* ------------------------------------------------------------------------------- HotMethod */

enum {
    PSYCOPG_GETCONN = 1, /* psycopg_pool ConnectionPool.getconn */
    PSYCOPG_RETURN,      /* psycopg_pool BasePool._check_pool_putconn (the return) */
    REDIS_GET,           /* redis ConnectionPool.get_connection */
    REDIS_RELEASE,       /* redis ConnectionPool/BlockingConnectionPool.release */
    URLLIB3_GET,         /* urllib3 HTTPConnectionPool._get_conn (non-blocking pools) */
    URLLIB3_PUT,         /* urllib3 HTTPConnectionPool._put_conn */
    PSYCOPG2_GET,        /* psycopg2.pool AbstractConnectionPool._getconn (and its alias) */
    PSYCOPG2_PUT,        /* psycopg2.pool AbstractConnectionPool._putconn (and its alias) */
    SKIP_IF_TRUTHY,      /* returns None at once when self.<attr> is truthy (skip_if_truthy) */
    KIND_MAX
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int kind;
    PyObject *original; /* the library's function */
    PyObject *slow;     /* poolmon's Python wrapper: takes every call this one does not */
    PyObject *failed;   /* (holder, t0, exc) after the original raised; may be None */
    PyObject *adopt;    /* (holder, conn, t0) for a borrow the fast path cannot record */
    PyObject *absorb;   /* (exc,) a bookkeeping failure: counted, logged once */
    PyObject *owner;    /* redis: the class the wrapper was installed on */
    PyObject *attr;     /* SKIP_IF_*: the attribute of self tested */
    PyObject *dict;
} HotMethodObject;

static PyTypeObject HotMethodType;

static PyObject *s_pool, *s_conn_tag,
    *s_block, *s_link, *s_sock;

/* Call the Python wrapper with the call exactly as received. */
static inline PyObject *
to_slow(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return PyObject_Vectorcall(m->slow, args, nargsf, kwnames);
}

static inline PyObject *
to_original(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return PyObject_Vectorcall(m->original, args, nargsf, kwnames);
}

/* A bookkeeping failure after the original ran: hand it to absorb, never to the host. */
static void
absorb_error(HotMethodObject *m)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(tb);
        return;
    }
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    if (PyErr_GivenExceptionMatches(value, PyExc_Exception)) {
        PyObject *r = PyObject_CallOneArg(m->absorb, value);
        if (r == NULL) {
            PyErr_Clear(); /* absorb itself failed: nothing more can be done without the host */
        }
        Py_XDECREF(r);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return;
    }
    /* KeyboardInterrupt and the like are not ours to swallow: re-raise them. */
    PyErr_Restore(type, value, tb);
}

/* A borrow was recorded with status ``rc``: a bookkeeping failure (rc < 0) is absorbed and the
 * caller gets ``conn``, unless absorbing re-raised (KeyboardInterrupt and the like: conn is
 * dropped). Steals ``conn``. */
static PyObject *
lent(HotMethodObject *m, int rc, PyObject *conn)
{
    if (rc < 0) {
        absorb_error(m);
        if (PyErr_Occurred()) {
            Py_CLEAR(conn);
        }
    }
    return conn;
}

/* A return was recorded with status ``rc``: absorb a bookkeeping failure, then run the original
 * (unless absorbing re-raised). */
static PyObject *
then_original(HotMethodObject *m, int rc, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (rc < 0) {
        absorb_error(m);
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    return to_original(m, args, nargsf, kwnames);
}

/* The original raised: let ``failed`` record it (it absorbs its own errors), re-raise as is. */
static void
report_failure(HotMethodObject *m, PyObject *holder, PyObject *t0)
{
    if (m->failed == Py_None) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL) {
        if (tb != NULL) {
            PyException_SetTraceback(value, tb);
        }
        PyObject *cargs[3] = {holder, t0 ? t0 : Py_None, value};
        PyObject *r = PyObject_Vectorcall(m->failed, cargs, 3, NULL);
        if (r == NULL) {
            PyErr_Clear();
        }
        Py_XDECREF(r);
    }
    PyErr_Restore(type, value, tb);
}

/* A reading of the lane's clock as a C double. 0, or -1 with an error. */
static int
lane_seconds(LaneObject *lane, double *out)
{
#if HAVE_DIRECT_CLOCK
    if (lane->direct_clock) {
        return direct_seconds(out);
    }
#endif
    PyObject *now = PyObject_CallNoArgs(lane->now);
    if (now == NULL) {
        return -1;
    }
    /* An injected clock may return an int or a Fraction: durations are still floats. */
    *out = PyFloat_AsDouble(now);
    Py_DECREF(now);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* A reading of the lane's clock as a float object (a borrow time, a t0). */
static PyObject *
lane_now(LaneObject *lane)
{
    double now;
    return lane_seconds(lane, &now) < 0 ? NULL : PyFloat_FromDouble(now);
}

/* A connection id from a shim's link or tag: an exact int. 0, or -1 with an error. */
static int
lane_key(PyObject *cid, long long *key)
{
    int ok = borrowed_key(cid, key);
    if (ok == 0) {
        PyErr_SetString(PyExc_TypeError, "poolmon: a connection id must be an int");
    }
    return ok > 0 ? 0 : -1;
}

/* borrowed[cid] = now, and the wait (now - t0, or 0.0 when there is no t0) into its bucket.
 * 0, or -1 with an error. */
static int
lane_borrow(LaneObject *lane, PyObject *cid, const double *t0)
{
    long long key;
    double now;
    if (lane_key(cid, &key) < 0 || lane_seconds(lane, &now) < 0 ||
        borrowed_set(lane->borrowed, key, now) < 0) {
        return -1;
    }
    bucket_add(&lane->waits, t0 == NULL ? 0.0 : now - *t0);
    return 0;
}

/* If cid is borrowed: forget it and put the use (now - start) into its bucket. 0 when cid was
 * not borrowed, 1 when it was, -1 with an error. */
static int
lane_release(LaneObject *lane, PyObject *cid)
{
    long long key;
    double start, now;
    if (lane_key(cid, &key) < 0) {
        return -1;
    }
    if (!borrowed_pop(lane->borrowed, key, &start)) {
        return 0;
    }
    if (lane_seconds(lane, &now) < 0) {
        return -1;
    }
    bucket_add(&lane->uses, now - start);
    return 1;
}

/* conn.<name> when it is a tuple of ``size`` items with a Lane at ``lane_at``; NULL (no error)
 * otherwise. New reference. The shims' per-connection links, read with one lookup. */
static PyObject *
lane_link(PyObject *conn, PyObject *name, Py_ssize_t size, Py_ssize_t lane_at)
{
    PyObject *link;
    if (LOOKUP_ATTR(conn, name, &link) <= 0) {
        PyErr_Clear();
        return NULL;
    }
    if (!PyTuple_CheckExact(link) || PyTuple_GET_SIZE(link) != size ||
        Py_TYPE(PyTuple_GET_ITEM(link, lane_at)) != &LaneType) {
        Py_DECREF(link);
        return NULL;
    }
    return link;
}

/* conn's psycopg tag (tracker, cid) when it names ``tracker``: cid, new reference; else NULL
 * with no error set. */
static PyObject *
psycopg_cid(PyObject *conn, PyObject *tracker)
{
    PyObject *tag;
    if (LOOKUP_ATTR(conn, s_conn_tag, &tag) <= 0) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *cid = NULL;
    if (PyTuple_CheckExact(tag) && PyTuple_GET_SIZE(tag) >= 2 && PyTuple_GET_ITEM(tag, 0) == tracker) {
        cid = PyTuple_GET_ITEM(tag, 1);
        Py_INCREF(cid);
    }
    Py_DECREF(tag);
    return cid;
}

/* obj.<name> when it is a link tuple (see lane_link) whose lane is open and current (not
 * retired: the tracker that made it is still the one in use); NULL (no error) otherwise. */
static PyObject *
open_link(PyObject *obj, PyObject *name, Py_ssize_t size, Py_ssize_t lane_at)
{
    PyObject *link = lane_link(obj, name, size, lane_at);
    if (link != NULL) {
        LaneObject *lane = (LaneObject *)PyTuple_GET_ITEM(link, lane_at);
        if (!lane->open || lane->retired) {
            Py_CLEAR(link);
        }
    }
    return link;
}

/* psycopg_pool: pool._poolmon_link, the (tracker, lane, idle deque) link of a tracked pool. One
 * lookup gives the fast path all it reads of the pool (the deque is made once, in
 * BasePool.__init__, and never replaced). New reference or NULL (no error). */
static PyObject *
psycopg_link(PyObject *pool)
{
    return open_link(pool, s_link, 3, 1);
}

/* psycopg_pool: conn._poolmon_conn, the (tracker, cid, lane) tag of a connection. New reference
 * or NULL (no error). */
static PyObject *
psycopg_tag(PyObject *conn)
{
    return open_link(conn, s_conn_tag, 3, 2);
}

static int
call_hook(PyObject *hook, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *cargs[3] = {a, b, c};
    Py_ssize_t n = c != NULL ? 3 : (b != NULL ? 2 : 1);
    PyObject *r = PyObject_Vectorcall(hook, cargs, n, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* psycopg_pool getconn(self, timeout=None). The fast path needs a tracked pool, an open lane and
 * an idle connection (a caller that will queue goes to the Python wrapper, which records the
 * wait; losing a race for the idle connection only means its wait event is not emitted). */
static PyObject *
psycopg_getconn(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) < 1) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *link = psycopg_link(args[0]);
    Py_ssize_t n_idle = link != NULL ? PyObject_Length(PyTuple_GET_ITEM(link, 2)) : -1;
    if (n_idle <= 0) {
        PyErr_Clear();
        Py_XDECREF(link);
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *tracker = PyTuple_GET_ITEM(link, 0);
    LaneObject *lane = (LaneObject *)PyTuple_GET_ITEM(link, 1);
    double t0;
    if (lane_seconds(lane, &t0) < 0) {
        PyErr_Clear();
        Py_DECREF(link);
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *conn = to_original(m, args, nargsf, kwnames);
    if (conn == NULL) {
        /* Rare: the hook takes t0 as a float object, made only now. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *t0_obj = PyFloat_FromDouble(t0);
        PyErr_Restore(type, value, tb);
        if (t0_obj != NULL) {
            report_failure(m, tracker, t0_obj);
            Py_DECREF(t0_obj);
        }
        Py_DECREF(link);
        return NULL;
    }
    PyObject *cid = psycopg_cid(conn, tracker);
    int rc;
    if (cid != NULL && lane->open) {
        rc = lane_borrow(lane, cid, &t0);
    }
    else {
        PyObject *t0_obj = PyFloat_FromDouble(t0);
        rc = t0_obj == NULL ? -1 : call_hook(m->adopt, tracker, conn, t0_obj);
        Py_XDECREF(t0_obj);
    }
    Py_XDECREF(cid);
    conn = lent(m, rc, conn);
    Py_DECREF(link); /* kept the tracker and the lane alive until here */
    return conn;
}

/* psycopg_pool BasePool._check_pool_putconn(self, conn): the first statement of putconn, sync and
 * async, in every release the shim supports (a test checks it), so the return is recorded here,
 * before the pool acts on the connection. The original only tests
 * ``getattr(conn, "_pool", None) is self`` and returns None; when that holds and the connection
 * carries this pool's tag, the return is recorded and the original's answer (None) given without
 * running its frame, which pays for the recording. Every other call (a connection of another pool,
 * which the original refuses; an untagged one; a closed lane) goes to the Python wrapper.
 * Hooking here rather than wrapping putconn spares a call from C back into the interpreter. */
static PyObject *
psycopg_return(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *self = args[0], *conn = args[1];
    PyObject *owner;
    if (LOOKUP_ATTR(conn, s_pool, &owner) <= 0) {
        PyErr_Clear();
        return to_slow(m, args, nargsf, kwnames);
    }
    int ours = owner == self;
    Py_DECREF(owner);
    /* The tag of a connection lent by this pool names the pool's tracker, unless that tracker was
     * dropped since (uninstrument, instrument again), which retires its lane. (One returned
     * twice finds no borrow to end, which changes nothing, as the library's own check lets it
     * through too.) */
    PyObject *tag = ours ? psycopg_tag(conn) : NULL;
    if (tag == NULL) {
        return to_slow(m, args, nargsf, kwnames);
    }
    int rc = lane_release((LaneObject *)PyTuple_GET_ITEM(tag, 2), PyTuple_GET_ITEM(tag, 1));
    /* A lost connection (psycopg_pool drops it without a close call) is evicted by the run_task
     * wrapper, when _return_connection finds it lost: nothing to check on every return. */
    Py_DECREF(tag);
    if (rc < 0) {
        absorb_error(m);
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* redis: conn._poolmon_sock, the (cid, ledger, lane) link of its current socket, when the lane
 * is open; NULL (no error) otherwise. New reference. It is all the hot path reads. */
static PyObject *
redis_sock(PyObject *conn)
{
    PyObject *link = lane_link(conn, s_sock, 3, 2);
    if (link != NULL && (!PyLong_CheckExact(PyTuple_GET_ITEM(link, 0)) ||
                         !((LaneObject *)PyTuple_GET_ITEM(link, 2))->open)) {
        Py_CLEAR(link);
    }
    return link;
}

/* redis ConnectionPool.get_connection(self, ...): never waits (it refuses when full). The
 * original runs first: a connection it lends has its socket link by then (connect() ran). One
 * without a link (a pool made before instrument(), a lane closed by a leak) goes to ``adopt``
 * with the pool, and a failure to ``failed`` with the pool: both find the ledger themselves. */
static PyObject *
redis_get(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) < 1 || (PyObject *)Py_TYPE(args[0]) != m->owner) {
        return to_slow(m, args, nargsf, kwnames); /* a subclass may override what we hook */
    }
    PyObject *pool = args[0];
    Py_INCREF(pool); /* the hooks below get it after the original ran */
    PyObject *conn = to_original(m, args, nargsf, kwnames);
    if (conn == NULL) {
        report_failure(m, pool, NULL);
        Py_DECREF(pool);
        return NULL;
    }
    PyObject *link = redis_sock(conn);
    int rc;
    if (link != NULL) {
        rc = lane_borrow((LaneObject *)PyTuple_GET_ITEM(link, 2), PyTuple_GET_ITEM(link, 0), NULL);
        Py_DECREF(link);
    }
    else {
        rc = call_hook(m->adopt, pool, conn, Py_None);
    }
    Py_DECREF(pool);
    conn = lent(m, rc, conn);
    return conn;
}

/* redis release(self, connection): the return is recorded before the original runs (it may
 * disconnect a connection marked for reconnect: return, then evict). */
static PyObject *
redis_release(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL ||
        (PyObject *)Py_TYPE(args[0]) != m->owner) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *link = redis_sock(args[1]);
    if (link == NULL) {
        return to_slow(m, args, nargsf, kwnames);
    }
    int rc = lane_release((LaneObject *)PyTuple_GET_ITEM(link, 2), PyTuple_GET_ITEM(link, 0));
    Py_DECREF(link);
    return then_original(m, rc, args, nargsf, kwnames);
}

/* urllib3's link tuple (borrow, release, cid, state, lane) of conn, or NULL (no error). */
static PyObject *
urllib3_link(PyObject *conn)
{
    return lane_link(conn, s_link, 5, 4);
}

/* urllib3 _get_conn(self, timeout=None) of a non-blocking pool: it never waits. */
static PyObject *
urllib3_get(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) < 1) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *self = args[0], *block;
    if (LOOKUP_ATTR(self, s_block, &block) <= 0) {
        PyErr_Clear();
        return to_slow(m, args, nargsf, kwnames);
    }
    int blocking = PyObject_IsTrue(block);
    Py_DECREF(block);
    if (blocking != 0) {
        PyErr_Clear();
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *conn = to_original(m, args, nargsf, kwnames);
    if (conn == NULL) {
        report_failure(m, self, NULL);
        return NULL;
    }
    PyObject *link = urllib3_link(conn);
    int rc;
    if (link != NULL && ((LaneObject *)PyTuple_GET_ITEM(link, 4))->open) {
        rc = lane_borrow((LaneObject *)PyTuple_GET_ITEM(link, 4), PyTuple_GET_ITEM(link, 2), NULL);
    }
    else {
        rc = call_hook(m->adopt, self, conn, Py_None);
    }
    Py_XDECREF(link);
    conn = lent(m, rc, conn);
    return conn;
}

/* urllib3 _put_conn(self, conn): the return is recorded before the connection is queued. */
static PyObject *
urllib3_put(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL || args[1] == Py_None) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *link = urllib3_link(args[1]);
    if (link == NULL || !((LaneObject *)PyTuple_GET_ITEM(link, 4))->open) {
        Py_XDECREF(link);
        return to_slow(m, args, nargsf, kwnames);
    }
    int rc = lane_release((LaneObject *)PyTuple_GET_ITEM(link, 4), PyTuple_GET_ITEM(link, 2));
    Py_DECREF(link);
    return then_original(m, rc, args, nargsf, kwnames);
}

/* psycopg2.pool: pool._poolmon_link, the (tracker, lane, idle list, conns) link of a tracked
 * pool, when its lane is open and current; NULL (no error) otherwise. New reference. psycopg2's
 * connections are a C type without a __dict__: ``conns`` maps id(conn) to (conn, cid) (see
 * poolmon.shims._psycopg_common.KeyedPoolTracker). The idle list is made once, in
 * AbstractConnectionPool.__init__, and never replaced. */
static PyObject *
psycopg2_link(PyObject *pool)
{
    PyObject *link = open_link(pool, s_link, 4, 1);
    if (link != NULL && (!PyList_CheckExact(PyTuple_GET_ITEM(link, 2)) ||
                         !PyDict_CheckExact(PyTuple_GET_ITEM(link, 3)))) {
        Py_CLEAR(link);
    }
    return link;
}

/* The cid of conn in a psycopg2 link's conns map (borrowed reference), or NULL (no error) when
 * poolmon does not know it. */
static PyObject *
psycopg2_cid(PyObject *link, PyObject *conn)
{
    PyObject *key = PyLong_FromVoidPtr(conn); /* == id(conn) */
    if (key == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *entry = PyDict_GetItemWithError(PyTuple_GET_ITEM(link, 3), key);
    Py_DECREF(key);
    if (entry == NULL || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2 ||
        PyTuple_GET_ITEM(entry, 0) != conn) {
        PyErr_Clear();
        return NULL; /* an entry for another object at a reused address is not this one */
    }
    return PyTuple_GET_ITEM(entry, 1);
}

/* The original raised: ``failed`` gets (pool, conn) as its holder, so that it can tell a
 * refused call from a reset that failed half way. */
static void
report_pair_failure(HotMethodObject *m, PyObject *pool, PyObject *conn)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *holder = PyTuple_Pack(2, pool, conn);
    PyErr_Restore(type, value, tb);
    if (holder != NULL) {
        report_failure(m, holder, NULL);
        Py_DECREF(holder);
    }
}

/* psycopg2 _getconn(self, key=None) without a key (getconn(), and ThreadedConnectionPool's
 * getconn passing key=None): psycopg2 never waits; a borrow with no wait. A key, a pool poolmon
 * has not linked, a closed lane: the Python wrapper. */
static PyObject *
psycopg2_get(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1 || nargs > 2 || kwnames != NULL || (nargs == 2 && args[1] != Py_None)) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *link = psycopg2_link(args[0]);
    if (link == NULL) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *conn = to_original(m, args, nargsf, kwnames);
    if (conn == NULL) {
        report_pair_failure(m, args[0], Py_None);
        Py_DECREF(link);
        return NULL;
    }
    PyObject *cid = psycopg2_cid(link, conn);
    int rc;
    if (cid != NULL) {
        rc = lane_borrow((LaneObject *)PyTuple_GET_ITEM(link, 1), cid, NULL);
    }
    else {
        rc = call_hook(m->adopt, args[0], conn, Py_None); /* made before instrument() */
    }
    Py_DECREF(link);
    return lent(m, rc, conn);
}

/* psycopg2 _putconn(self, conn, key=None, close=False) with no key and close False (putconn(c),
 * and ThreadedConnectionPool's putconn passing them on). The original runs first: it refuses
 * what it must (closed pool, unknown connection) and may roll back; afterwards, the connection
 * at the end of the idle list means kept (the return is recorded here), anything else means
 * psycopg2 let it go, which ``adopt`` (pool, conn, idle count before) sorts out in Python. */
static PyObject *
psycopg2_put(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2 || nargs > 4 || kwnames != NULL || (nargs >= 3 && args[2] != Py_None) ||
        (nargs == 4 && args[3] != Py_False)) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *pool = args[0], *conn = args[1];
    PyObject *link = psycopg2_link(pool);
    if (link == NULL) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *idle = PyTuple_GET_ITEM(link, 2);
    Py_ssize_t before = PyList_GET_SIZE(idle);
    Py_INCREF(conn); /* the hooks below get it after the original ran */
    PyObject *result = to_original(m, args, nargsf, kwnames);
    if (result == NULL) {
        report_pair_failure(m, pool, conn);
        goto done;
    }
    int rc;
    PyObject *cid = NULL;
    if (PyList_GET_SIZE(idle) == before + 1 && PyList_GET_ITEM(idle, before) == conn &&
        (cid = psycopg2_cid(link, conn)) != NULL) {
        rc = lane_release((LaneObject *)PyTuple_GET_ITEM(link, 1), cid);
    }
    else {
        PyObject *n = PyLong_FromSsize_t(before);
        rc = n == NULL ? -1 : call_hook(m->adopt, pool, conn, n);
        Py_XDECREF(n);
    }
    if (rc < 0) {
        absorb_error(m);
        if (PyErr_Occurred()) {
            Py_CLEAR(result);
        }
    }
done:
    Py_DECREF(conn);
    Py_DECREF(link);
    return result;
}

/* A method whose original, in every library release the shim supports, begins with
 * ``if self.<attr>: return`` (redis-py ``connect_check_health``: ``if self._sock: return``,
 * called on every get_connection). In that case the original is not called at all: its result
 * (None) is known, and skipping its frame pays for the wrapper. Otherwise the Python wrapper
 * runs. */
static PyObject *
skip_if_truthy(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *value;
    if (PyVectorcall_NARGS(nargsf) < 1 || LOOKUP_ATTR(args[0], m->attr, &value) <= 0) {
        PyErr_Clear();
        return to_slow(m, args, nargsf, kwnames);
    }
    int is_true = PyObject_IsTrue(value);
    Py_DECREF(value);
    if (is_true <= 0) {
        PyErr_Clear();
        return to_slow(m, args, nargsf, kwnames);
    }
    Py_RETURN_NONE;
}

static vectorcallfunc kinds[KIND_MAX] = {
    NULL,
    (vectorcallfunc)psycopg_getconn,
    (vectorcallfunc)psycopg_return,
    (vectorcallfunc)redis_get,
    (vectorcallfunc)redis_release,
    (vectorcallfunc)urllib3_get,
    (vectorcallfunc)urllib3_put,
    (vectorcallfunc)psycopg2_get,
    (vectorcallfunc)psycopg2_put,
    (vectorcallfunc)skip_if_truthy,
};

static PyObject *
hot_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "original", "slow", "failed", "adopt", "absorb",
                             "owner", "attr", NULL};
    int kind;
    PyObject *original, *slow, *failed = Py_None, *adopt = Py_None,
                                *absorb = NULL, *owner = Py_None, *attr = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOO|$OOOOO:HotMethod", kwlist, &kind,
                                     &original, &slow, &failed, &adopt, &absorb, &owner,
                                     &attr)) {
        return NULL;
    }
    if (kind <= 0 || kind >= KIND_MAX) {
        PyErr_Format(PyExc_ValueError, "HotMethod: kind must be in 1..%d, got %d", KIND_MAX - 1,
                     kind);
        return NULL;
    }
    if (kind == SKIP_IF_TRUTHY && !PyUnicode_CheckExact(attr)) {
        PyErr_SetString(PyExc_TypeError, "HotMethod: SKIP_IF_TRUTHY needs attr: str");
        return NULL;
    }
    if (absorb == NULL || !PyCallable_Check(original) || !PyCallable_Check(slow) ||
        !PyCallable_Check(absorb)) {
        PyErr_SetString(PyExc_TypeError, "HotMethod: original, slow and absorb must be callable");
        return NULL;
    }
    HotMethodObject *self = (HotMethodObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = kinds[kind];
    self->kind = kind;
#define SET(field) Py_INCREF(field); self->field = field
    SET(original);
    SET(slow);
    SET(failed);
    SET(adopt);
    SET(absorb);
    SET(owner);
    SET(attr);
#undef SET
    return (PyObject *)self;
}

static int
hot_traverse(HotMethodObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->original);
    Py_VISIT(self->slow);
    Py_VISIT(self->failed);
    Py_VISIT(self->adopt);
    Py_VISIT(self->absorb);
    Py_VISIT(self->owner);
    Py_VISIT(self->attr);
    Py_VISIT(self->dict);
    return 0;
}

static int
hot_clear(HotMethodObject *self)
{
    Py_CLEAR(self->original);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->adopt);
    Py_CLEAR(self->absorb);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->attr);
    Py_CLEAR(self->dict);
    return 0;
}

static void
hot_dealloc(HotMethodObject *self)
{
    PyObject_GC_UnTrack(self);
    hot_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
hot_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    return PyMethod_New(self, obj);
}

/* Introspection follows the original, as functools.wraps would make it. */
static PyObject *
hot_get_from_original(HotMethodObject *self, void *name)
{
    return PyObject_GetAttrString(self->original, (const char *)name);
}

static PyObject *
hot_get_wrapped(HotMethodObject *self, void *Py_UNUSED(closure))
{
    Py_INCREF(self->original);
    return self->original;
}

static PyObject *
hot_get_slow(HotMethodObject *self, void *Py_UNUSED(closure))
{
    Py_INCREF(self->slow);
    return self->slow;
}

static PyGetSetDef hot_getset[] = {
    {"__name__", (getter)hot_get_from_original, NULL, NULL, "__name__"},
    {"__qualname__", (getter)hot_get_from_original, NULL, NULL, "__qualname__"},
    {"__doc__", (getter)hot_get_from_original, NULL, NULL, "__doc__"},
    {"__module__", (getter)hot_get_from_original, NULL, NULL, "__module__"},
    {"__wrapped__", (getter)hot_get_wrapped, NULL, "The library's original function.", NULL},
    {"slow", (getter)hot_get_slow, NULL, "poolmon's Python wrapper for the uncommon calls.", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
hot_repr(HotMethodObject *self)
{
    return PyUnicode_FromFormat("<poolmon fast wrapper of %R>", self->original);
}

static PyTypeObject HotMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "poolmon._hot.HotMethod",
    .tp_doc = PyDoc_STR("A shim's borrow or return wrapper: the common case compiled, every other "
                        "call handed unchanged to the Python wrapper."),
    .tp_basicsize = sizeof(HotMethodObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = hot_new,
    .tp_traverse = (traverseproc)hot_traverse,
    .tp_clear = (inquiry)hot_clear,
    .tp_dealloc = (destructor)hot_dealloc,
    .tp_vectorcall_offset = offsetof(HotMethodObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = hot_descr_get,
    .tp_getset = hot_getset,
    .tp_dictoffset = offsetof(HotMethodObject, dict),
    .tp_repr = (reprfunc)hot_repr,
};

/* ---------------------------------------------------------------------------------- module */

static int
hot_exec(PyObject *module)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    INTERN(s_pool, "_pool");
    INTERN(s_conn_tag, "_poolmon_conn");
    INTERN(s_sock, "_poolmon_sock");
    INTERN(s_block, "block");
    INTERN(s_link, "_poolmon_link"); /* urllib3 connections and psycopg_pool pools */
#undef INTERN
    PyObject *time_module = PyImport_ImportModule("time");
    if (time_module == NULL) {
        return -1;
    }
    perf_counter = PyObject_GetAttrString(time_module, "perf_counter");
    Py_DECREF(time_module);
    if (perf_counter == NULL) {
        return -1;
    }
    if (PyType_Ready(&BorrowedType) < 0 || PyType_Ready(&LaneType) < 0 ||
        PyType_Ready(&HotMethodType) < 0) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "Borrowed", (PyObject *)&BorrowedType) < 0 ||
        PyModule_AddObjectRef(module, "Lane", (PyObject *)&LaneType) < 0 ||
        PyModule_AddObjectRef(module, "HotMethod", (PyObject *)&HotMethodType) < 0) {
        return -1;
    }
#define KIND(name) if (PyModule_AddIntConstant(module, #name, name) < 0) return -1
    KIND(PSYCOPG_GETCONN);
    KIND(PSYCOPG_RETURN);
    KIND(REDIS_GET);
    KIND(REDIS_RELEASE);
    KIND(URLLIB3_GET);
    KIND(URLLIB3_PUT);
    KIND(PSYCOPG2_GET);
    KIND(PSYCOPG2_PUT);
    KIND(SKIP_IF_TRUTHY);
#undef KIND
    return 0;
}

static PyModuleDef_Slot hot_slots[] = {
    {Py_mod_exec, hot_exec},
    {0, NULL},
};

static struct PyModuleDef hot_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "poolmon._hot",
    .m_doc = "The shims' borrow/return fast path, compiled (see poolmon/_hot.c).",
    .m_size = 0,
    .m_slots = hot_slots,
};

PyMODINIT_FUNC
PyInit__hot(void)
{
    return PyModuleDef_Init(&hot_module);
}
