/* poolmon._hot: library-agnostic primitives of the shims' fast path, compiled.
 *
 * Why this exists: a shimmed library pool's whole borrow+return cycle costs 2.5 to 8 us, and
 * the standard's bars leave poolmon a small part of that (docs/overhead.md). A pure-Python
 * wrapper pays a frame per call before it does any work, so the cheapest Python wrapper pair
 * already spends the budget. The Python wrappers stay the reference implementation and the
 * fallback (POOLMON_PURE_PYTHON=1); this module only runs their *common* case.
 *
 * Nothing here knows a library. Every attribute name, argument position, ownership check and
 * default is a parameter a shim passes from Python (poolmon.core.compiled, poolmon.shims._runtime),
 * and a test greps this file for the shims' attribute names. A new shim adds no C.
 *
 *   - Borrowed: the lane's conn id -> borrow time table.
 *   - Lane: the ledger's lock-free hot lane (poolmon/core/lane.py states the protocol and its
 *     invariants); it counts each wait and use sample straight into fixed buckets (a bisect on C
 *     doubles): no allocation per sample, memory that never grows. The ledger drains the buckets
 *     under its lock.
 *   - Link: a named link record (lane, cid, key, items, table) that hooks read in one lookup.
 *   - HotMethod: a method descriptor of three generic kinds (BORROW, RELEASE, SKIP_IF_TRUTHY)
 *     that checks cheaply whether a call is the common case and, if not, hands it *unchanged* to
 *     the Python wrapper ("slow"). Once the original has been called, the rare outcomes (an
 *     exception, a connection poolmon has not linked yet) go to small Python callbacks, so every
 *     decision the Python wrapper makes is still made in Python, in one place.
 *   - LendTable: a dict subclass put in place of a pool's own dict of lent connections; its item
 *     assignment and deletion record the borrow and the return (no wrapper frame at all), the
 *     uncommon writes going to Python callbacks.
 *
 * Atomicity: every write below is one operation on this module's own table or bucket arrays;
 * no Python code runs between the lookup and the delete of a return, nor inside a bucket update
 * or a drain: under the GIL each is one indivisible step, exactly as atomic as the Python lane's
 * ``dict.pop`` and ``list.append`` (lane.py, invariant L1). Bookkeeping errors after the original
 * was called are passed to ``absorb`` (counted and logged once), never raised into the host.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

/* The hooks' helpers are inlined: a call per helper was measurable on a raw cycle (callgrind). */
#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

#if PY_VERSION_HEX >= 0x030D0000
#define LOOKUP_ATTR(obj, name, result) PyObject_GetOptionalAttr((obj), (name), (result))
static inline PyObject *
DICT_POP(PyObject *d, PyObject *key)
{
    PyObject *value = NULL;
    if (PyDict_Pop(d, key, &value) == 0) {
        PyErr_SetObject(PyExc_KeyError, key);
    }
    return value;
}
#else
#define LOOKUP_ATTR(obj, name, result) _PyObject_LookupAttr((obj), (name), (result))
#define DICT_POP(d, key) _PyDict_Pop((d), (key), NULL)
#endif

/* A type's GC slots from the X-macro list of its object fields: traverse and clear visit or
 * clear each field, then return ``base_traverse``/``base_clear`` (0, or the base type's slot);
 * dealloc untracks, clears each field, then runs ``tail``. */
#define VISIT_FIELD(field) Py_VISIT(self->field);
#define CLEAR_FIELD(field) Py_CLEAR(self->field);
#define GC_SLOTS(prefix, Type, FIELDS, base_traverse, base_clear, tail)                          \
    static int prefix##_traverse(Type *self, visitproc visit, void *arg)                         \
    {                                                                                            \
        FIELDS(VISIT_FIELD)                                                                      \
        return base_traverse;                                                                    \
    }                                                                                            \
    static int prefix##_clear(Type *self)                                                        \
    {                                                                                            \
        FIELDS(CLEAR_FIELD)                                                                      \
        return base_clear;                                                                       \
    }                                                                                            \
    static void prefix##_dealloc(Type *self)                                                     \
    {                                                                                            \
        PyObject_GC_UnTrack(self);                                                               \
        FIELDS(CLEAR_FIELD)                                                                      \
        tail;                                                                                    \
    }
#define TP_FREE Py_TYPE(self)->tp_free((PyObject *)self)
#define SET_FIELD(field) self->field = Py_XNewRef(field);

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
static ALWAYS_INLINE Py_ssize_t
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
static ALWAYS_INLINE int
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

static PyObject *
borrowed_new(PyTypeObject *Py_UNUSED(type), PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Borrowed() takes no arguments");
        return NULL;
    }
    return (PyObject *)borrowed_create();
}

#define BORROWED_FIELDS(X) X(others)
GC_SLOTS(borrowed, BorrowedObject, BORROWED_FIELDS, 0, 0,
         (PyMem_Free(self->slots), PyObject_GC_Del(self)))

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

/* Look ``obj`` up, int id or other key alike, and remove it when ``remove``: 1 with its borrow
 * time in *value, 0 when absent, -1 with an error. Every read or delete below goes through it. */
static int
borrowed_take(BorrowedObject *t, PyObject *obj, int remove, double *value)
{
    long long key;
    int ok = borrowed_key(obj, &key);
    if (ok < 0) {
        return -1;
    }
    if (!ok) {
        PyObject *entry = others_entry(t, obj);
        if (entry == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        *value = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(entry, 1));
        return remove && PyDict_DelItem(t->others, obj) < 0 ? -1 : 1;
    }
    if (remove) {
        return borrowed_pop(t, key, value);
    }
    Py_ssize_t i = borrowed_find(t, key);
    if (i < 0) {
        return 0;
    }
    *value = t->slots[i].value;
    return 1;
}

/* borrowed_take's answer as Python sees it: the time, ``fallback`` (new reference) when absent,
 * or KeyError when absent and there is no fallback. */
static PyObject *
taken(int found, double value, PyObject *obj, PyObject *fallback)
{
    if (found < 0) {
        return NULL;
    }
    if (found) {
        return PyFloat_FromDouble(value);
    }
    if (fallback == NULL) {
        PyErr_SetObject(PyExc_KeyError, obj);
        return NULL;
    }
    return Py_NewRef(fallback);
}

static PyObject *
borrowed_subscript(BorrowedObject *t, PyObject *obj)
{
    double value = 0.0;
    int found = borrowed_take(t, obj, 0, &value); /* before value is read: argument order */
    return taken(found, value, obj, NULL);
}

static int
borrowed_ass_subscript(BorrowedObject *t, PyObject *obj, PyObject *value)
{
    if (value == NULL) {
        double ignored;
        int found = borrowed_take(t, obj, 1, &ignored);
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
    long long key;
    int ok = borrowed_key(obj, &key);
    if (ok < 0) {
        return -1;
    }
    return ok ? borrowed_set(t, key, start) : others_set(t, obj, start);
}

static int
borrowed_contains(BorrowedObject *t, PyObject *obj)
{
    double ignored;
    return borrowed_take(t, obj, 0, &ignored);
}

/* pop(key[, default]) (remove) and get(key[, default]): ``fallback`` is the default default. */
static PyObject *
key_and_default(BorrowedObject *t, PyObject *const *args, Py_ssize_t nargs, int remove,
                PyObject *fallback)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError,
                        remove ? "pop(conn_id[, default])" : "get(conn_id[, default])");
        return NULL;
    }
    double value = 0.0;
    int found = borrowed_take(t, args[0], remove, &value);
    return taken(found, value, args[0], nargs == 2 ? args[1] : fallback);
}

static PyObject *
borrowed_pop_method(BorrowedObject *t, PyObject *const *args, Py_ssize_t nargs)
{
    return key_and_default(t, args, nargs, 1, NULL);
}

static PyObject *
borrowed_get(BorrowedObject *t, PyObject *const *args, Py_ssize_t nargs)
{
    return key_and_default(t, args, nargs, 0, Py_None);
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
    .tp_new = borrowed_new,
    .tp_traverse = (traverseproc)borrowed_traverse,
    .tp_clear = (inquiry)borrowed_clear,
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
static ALWAYS_INLINE int
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

/* A reading of the lane's clock as a C double. 0, or -1 with an error. */
static ALWAYS_INLINE int
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

#define LANE_FIELDS(X) X(now) X(borrowed)
GC_SLOTS(lane, LaneObject, LANE_FIELDS, 0, 0, TP_FREE)

/* A reading of the lane's clock as a float object. */
static PyObject *
lane_read_clock(LaneObject *self, PyObject *Py_UNUSED(ignored))
{
    double now;
    return lane_seconds(self, &now) < 0 ? NULL : PyFloat_FromDouble(now);
}

static PyObject *
lane_clear_samples(LaneObject *self, PyObject *Py_UNUSED(ignored))
{
    buckets_clear(&self->waits);
    buckets_clear(&self->uses);
    Py_RETURN_NONE;
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

static PyObject *lane_borrow_method(LaneObject *self, PyObject *const *args, Py_ssize_t nargs);
static PyObject *lane_release_method(LaneObject *self, PyObject *const *args, Py_ssize_t nargs);

static PyMethodDef lane_methods[] = {
    {"borrow", (PyCFunction)(void (*)(void))lane_borrow_method, METH_FASTCALL,
     "borrow(cid, now, waited) -> False: the lane protocol's borrow (poolmon.core.lane)."},
    {"release", (PyCFunction)(void (*)(void))lane_release_method, METH_FASTCALL,
     "release(cid, now) -> False: the lane protocol's return (poolmon.core.lane)."},
    {"read_clock", (PyCFunction)lane_read_clock, METH_NOARGS,
     "A reading of the lane's clock, as the fast path takes it (always a float)."},
    {"clear_samples", (PyCFunction)lane_clear_samples, METH_NOARGS,
     "Drop samples not drained yet (a forked child must not count its parent's)."},
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

/* ------------------------------------------------------------------------------------ Link */

/* A named link record: what a hook reads of a pool or a connection, in one attribute lookup.
 * The shims make them (poolmon.shims._runtime) and never change one in place: a new record
 * replaces the old with one setattr, so a reader sees the old or the new one whole.
 *
 *   lane   the ledger's Lane the hooks record into;
 *   cid    a connection link's ledger id (an int), None on a pool link;
 *   key    who made it (a tracker, a ledger), or the object a table entry is for;
 *   items  a pool link's idle container (its length and last item are what hooks read), or None;
 *   table  a pool link's id(obj) -> ledger id table (a Borrowed), for connections that take no
 *          attributes, or None.
 *
 * Python's fallback is poolmon.core.lane.Link (the same fields). */
typedef struct {
    PyObject_HEAD
    PyObject *lane;
    PyObject *cid;
    PyObject *key;
    PyObject *items;
    PyObject *table;
} LinkObject;

static PyTypeObject LinkType;

#define LINK_FIELDS(X) X(lane) X(cid) X(key) X(items) X(table)

static PyObject *
link_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"lane", "cid", "key", "items", "table", NULL};
    PyObject *lane, *cid = Py_None, *key = Py_None, *items = Py_None, *table = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOOO:Link", kwlist, &lane, &cid, &key, &items,
                                     &table)) {
        return NULL;
    }
    if (table != Py_None && Py_TYPE(table) != &BorrowedType) {
        PyErr_SetString(PyExc_TypeError, "Link: table must be a Borrowed or None");
        return NULL;
    }
    LinkObject *self = (LinkObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    LINK_FIELDS(SET_FIELD)
    return (PyObject *)self;
}

GC_SLOTS(link, LinkObject, LINK_FIELDS, 0, 0, TP_FREE)

static PyObject *
link_repr(LinkObject *self)
{
    return PyUnicode_FromFormat("Link(cid=%R)", self->cid);
}

static PyMemberDef link_members[] = {
    {"lane", T_OBJECT, offsetof(LinkObject, lane), READONLY, "The Lane hooks record into."},
    {"cid", T_OBJECT, offsetof(LinkObject, cid), READONLY, "A connection's ledger id, or None."},
    {"key", T_OBJECT, offsetof(LinkObject, key), READONLY, "Who made it, or whom it is for."},
    {"items", T_OBJECT, offsetof(LinkObject, items), READONLY, "A pool's idle container."},
    {"table", T_OBJECT, offsetof(LinkObject, table), READONLY, "id(obj) -> ledger id (a Borrowed), or None."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LinkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "poolmon._hot.Link",
    .tp_doc = PyDoc_STR("Link(lane, cid=None, key=None, items=None, table=None): what a hook "
                        "reads of a pool or a connection (poolmon.core.lane.Link)."),
    .tp_basicsize = sizeof(LinkObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = link_new,
    .tp_traverse = (traverseproc)link_traverse,
    .tp_clear = (inquiry)link_clear,
    .tp_dealloc = (destructor)link_dealloc,
    .tp_repr = (reprfunc)link_repr,
    .tp_members = link_members,
};

/* ------------------------------------------------------------------------------- HotMethod */

/* Three generic kinds; every library detail (which attribute holds which link, which argument
 * is the connection, which ownership check, which defaults make a call the common one) is a
 * parameter given from Python by the shim (poolmon.core.compiled.hot_borrow & co.). */
enum {
    BORROW = 1,     /* call the original, then record a borrow of the connection it returned */
    RELEASE,        /* record the return of args[1], then call the original (or answer for it) */
    SKIP_IF_TRUTHY, /* return None at once when self.<attr> is truthy; else the Python wrapper */
    KIND_MAX
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int kind;
    char need_items; /* BORROW: the pool link's items must be non-empty (no wait possible) */
    char timed;      /* BORROW: read t0 from the pool link's lane before the call */
    char match_key;  /* the connection link's key must be the pool link's key */
    PyObject *original;   /* the library's function */
    PyObject *slow;       /* poolmon's Python wrapper: takes every call this one does not */
    PyObject *failed;     /* (self, conn or None, t0 or None, exc) after the original raised */
    PyObject *adopt;      /* (self, conn, t0 or None): a connection lent without a live link */
    PyObject *absorb;     /* (exc,) a bookkeeping failure: counted, logged once */
    PyObject *exact_type; /* None, or the only type of self the fast path takes */
    PyObject *unless;     /* None, or an attribute of self that must be falsy */
    PyObject *pool_link;  /* None, or the attribute of self holding the pool's Link */
    PyObject *conn_link;  /* the attribute of the connection holding its Link */
    PyObject *owner_attr; /* RELEASE: None, or an attribute of the conn that must be self */
    PyObject *answer;     /* RELEASE: NULL (call the original), or what to return instead */
    PyObject *defaults;   /* a tuple: arguments after the fixed ones, when given, must be these */
    PyObject *attr;       /* SKIP_IF_TRUTHY: the attribute of self tested */
    PyObject *dict;
} HotMethodObject;

static PyTypeObject HotMethodType;

/* The object fields that hot_new takes as arguments, and all of them. */
#define HOT_ARGS(X)                                                                             \
    X(original) X(slow) X(failed) X(adopt) X(absorb) X(exact_type) X(unless) X(pool_link)      \
        X(conn_link) X(owner_attr) X(answer) X(defaults) X(attr)
#define HOT_FIELDS(X) HOT_ARGS(X) X(dict)

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
absorb_error(PyObject *absorb)
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
        PyObject *r = PyObject_CallOneArg(absorb, value);
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

/* Absorb a bookkeeping failure (rc < 0). -1 when absorbing re-raised (KeyboardInterrupt...). */
static ALWAYS_INLINE int
settle(PyObject *absorb, int rc)
{
    if (rc < 0) {
        absorb_error(absorb);
        if (PyErr_Occurred()) {
            return -1;
        }
    }
    return 0;
}

/* The original raised: let ``failed`` record it (it absorbs its own errors), re-raise as is. */
static void
report_failure(HotMethodObject *m, PyObject *self, PyObject *conn, const double *t0)
{
    if (m->failed == Py_None) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *t0_obj = t0 != NULL ? PyFloat_FromDouble(*t0) : Py_NewRef(Py_None);
    if (value != NULL && t0_obj != NULL) {
        if (tb != NULL) {
            PyException_SetTraceback(value, tb);
        }
        PyObject *cargs[4] = {self, conn, t0_obj, value};
        PyObject *r = PyObject_Vectorcall(m->failed, cargs, 4, NULL);
        Py_XDECREF(r);
    }
    PyErr_Clear();
    Py_XDECREF(t0_obj);
    PyErr_Restore(type, value, tb);
}

/* A connection id from a link: an exact int. 0, or -1 with an error. */
static ALWAYS_INLINE int
lane_key(PyObject *cid, long long *key)
{
    int ok = borrowed_key(cid, key);
    if (ok == 0) {
        PyErr_SetString(PyExc_TypeError, "poolmon: a connection id must be an int");
    }
    return ok > 0 ? 0 : -1;
}

/* The lane protocol's borrow (poolmon/core/lane.py): borrowed[key] = now, and the wait
 * (now - t0, or 0.0 without a t0) into its bucket. 0, or -1 with an error. */
static ALWAYS_INLINE int
lane_borrow(LaneObject *lane, long long key, const double *t0)
{
    double now;
    if (lane_seconds(lane, &now) < 0 || borrowed_set(lane->borrowed, key, now) < 0) {
        return -1;
    }
    if (t0 == NULL) {
        lane->waits.counts[0]++; /* no wait: 0.0 is in the first bucket whatever the bounds */
    }
    else {
        bucket_add(&lane->waits, now - *t0);
    }
    return 0;
}

/* The lane protocol's return: if key is borrowed, forget it and put the use (now - start) into
 * its bucket. 0 when it was not borrowed, 1 when it was, -1 with an error. */
static ALWAYS_INLINE int
lane_release(LaneObject *lane, long long key)
{
    double start, now;
    if (!borrowed_pop(lane->borrowed, key, &start)) {
        return 0;
    }
    if (lane_seconds(lane, &now) < 0) {
        return -1;
    }
    bucket_add(&lane->uses, now - start);
    return 1;
}

/* link as a Link whose lane is an open, current Lane (not retired: the tracker that made it is
 * still the one in use): the link itself, else NULL. Borrowed reference in, borrowed out. */
static ALWAYS_INLINE LinkObject *
live(PyObject *link)
{
    if (link == NULL || Py_TYPE(link) != &LinkType) {
        return NULL;
    }
    LinkObject *l = (LinkObject *)link;
    if (Py_TYPE(l->lane) != &LaneType) {
        return NULL;
    }
    LaneObject *lane = (LaneObject *)l->lane;
    return lane->open && !lane->retired ? l : NULL;
}

/* obj.<name> when it is a live Link (new reference), else NULL with no error set. */
static ALWAYS_INLINE LinkObject *
live_attr(PyObject *obj, PyObject *name)
{
    PyObject *link;
    if (LOOKUP_ATTR(obj, name, &link) <= 0) {
        PyErr_Clear();
        return NULL;
    }
    if (live(link) == NULL) {
        Py_DECREF(link);
        return NULL;
    }
    return (LinkObject *)link;
}

/* The live connection link of conn: conn.<conn_link>; with match_key, made by the pool link's
 * maker. New reference or NULL (no error). */
static ALWAYS_INLINE LinkObject *
conn_link_of(HotMethodObject *m, LinkObject *plink, PyObject *conn)
{
    LinkObject *link = live_attr(conn, m->conn_link);
    if (link != NULL && (!PyLong_CheckExact(link->cid) ||
                         (m->match_key && (plink == NULL || link->key != plink->key)))) {
        Py_CLEAR(link);
    }
    return link;
}

/* Whether a call is one the fast path takes: no keywords (when defaults are given) and the
 * positional arguments after the first ``fixed`` ones identical to ``defaults``. */
static ALWAYS_INLINE int
common_args(HotMethodObject *m, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
            Py_ssize_t fixed)
{
    if (nargs < fixed) {
        return 0;
    }
    if (m->defaults == Py_None) {
        return 1;
    }
    Py_ssize_t extra = nargs - fixed;
    if (kwnames != NULL || extra > PyTuple_GET_SIZE(m->defaults)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < extra; i++) {
        if (args[fixed + i] != PyTuple_GET_ITEM(m->defaults, i)) {
            return 0;
        }
    }
    return 1;
}

/* The checks on self every kind shares: its exact type, a must-be-falsy attribute. */
static ALWAYS_INLINE int
common_self(HotMethodObject *m, PyObject *self)
{
    if (m->exact_type != Py_None && (PyObject *)Py_TYPE(self) != m->exact_type) {
        return 0; /* a subclass may override what we hook: the Python wrapper decides */
    }
    if (m->unless != Py_None) {
        PyObject *value;
        if (LOOKUP_ATTR(self, m->unless, &value) <= 0) {
            PyErr_Clear();
            return 0;
        }
        int truth = PyObject_IsTrue(value);
        Py_DECREF(value);
        if (truth != 0) {
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

static int
call_adopt(HotMethodObject *m, PyObject *self, PyObject *conn, PyObject *extra)
{
    PyObject *cargs[3] = {self, conn, extra};
    PyObject *r = extra != NULL ? PyObject_Vectorcall(m->adopt, cargs, 3, NULL) : NULL;
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* BORROW: the original lends a connection. The common case: the checks on self hold, the pool
 * link (when asked for) is live and, with need_items, has an idle connection, so the call
 * cannot wait; losing a race for that connection only means its wait event goes unrecorded.
 * After the original returned, a connection with a live link is recorded here; any other goes
 * to ``adopt`` in Python. Every other call goes to the Python wrapper, unchanged. */
static PyObject *
hot_borrow(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!common_args(m, args, nargs, kwnames, 1) || !common_self(m, args[0])) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *self = args[0];
    LinkObject *plink = NULL;
    if (m->pool_link != Py_None) {
        plink = live_attr(self, m->pool_link);
        Py_ssize_t n_idle = plink == NULL || !m->need_items ? 1 : PyObject_Length(plink->items);
        if (n_idle <= 0) {
            PyErr_Clear();
            Py_XDECREF(plink);
            return to_slow(m, args, nargsf, kwnames);
        }
    }
    if (plink == NULL && (m->pool_link != Py_None || m->timed)) {
        return to_slow(m, args, nargsf, kwnames);
    }
    double t0 = 0.0;
    if (m->timed && lane_seconds((LaneObject *)plink->lane, &t0) < 0) {
        PyErr_Clear();
        Py_DECREF(plink);
        return to_slow(m, args, nargsf, kwnames);
    }
    Py_INCREF(self); /* the hooks below get it after the original ran */
    PyObject *conn = to_original(m, args, nargsf, kwnames);
    if (conn == NULL) {
        report_failure(m, self, Py_None, m->timed ? &t0 : NULL);
    }
    else {
        LinkObject *link = conn_link_of(m, plink, conn);
        int rc;
        if (link != NULL) {
            LaneObject *lane = (LaneObject *)link->lane;
            const double *since = m->timed ? &t0 : NULL;
            long long key;
            rc = lane_key(link->cid, &key) < 0 ? -1 : lane_borrow(lane, key, since);
            Py_DECREF(link);
        }
        else {
            PyObject *t0_obj = m->timed ? PyFloat_FromDouble(t0) : Py_NewRef(Py_None);
            rc = call_adopt(m, self, conn, t0_obj);
            Py_XDECREF(t0_obj);
        }
        if (settle(m->absorb, rc) < 0) {
            Py_CLEAR(conn);
        }
    }
    Py_DECREF(self);
    Py_XDECREF(plink); /* kept the tracker and the lane alive until here */
    return conn;
}

/* RELEASE: the caller gives args[1] back. The return is recorded before the original runs (it
 * may queue the connection for another thread at once, or close it: return, then evict). With
 * ``owner_attr`` the connection must name self as its pool (the library's own ownership check,
 * made here; when it fails the original refuses the call itself). With an ``answer`` the
 * original is known to do nothing more than that check: its frame is skipped and the answer
 * returned. Every other call goes to the Python wrapper, unchanged. */
static PyObject *
hot_release(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!common_args(m, args, nargs, kwnames, 2) || args[1] == Py_None ||
        !common_self(m, args[0])) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *self = args[0], *conn = args[1];
    if (m->owner_attr != Py_None) {
        PyObject *owner;
        if (LOOKUP_ATTR(conn, m->owner_attr, &owner) <= 0) {
            PyErr_Clear();
            return to_slow(m, args, nargsf, kwnames);
        }
        Py_DECREF(owner); /* only its identity is compared */
        if (owner != self) {
            return to_slow(m, args, nargsf, kwnames);
        }
    }
    LinkObject *plink = m->pool_link != Py_None ? live_attr(self, m->pool_link) : NULL;
    LinkObject *link = conn_link_of(m, plink, conn);
    Py_XDECREF(plink);
    if (link == NULL) {
        return to_slow(m, args, nargsf, kwnames);
    }
    LaneObject *lane = (LaneObject *)link->lane;
    long long key;
    int rc = lane_key(link->cid, &key) < 0 ? -1 : lane_release(lane, key);
    Py_DECREF(link);
    if (settle(m->absorb, rc) < 0) {
        return NULL;
    }
    return m->answer != NULL ? Py_NewRef(m->answer) : to_original(m, args, nargsf, kwnames);
}

/* SKIP_IF_TRUTHY: a method whose original, in every release the shim supports, begins with
 * ``if self.<attr>: return`` (a test checks that shape): then its result (None) is known, and
 * skipping its frame pays for the wrapper. Otherwise the Python wrapper runs. */
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
    (vectorcallfunc)hot_borrow,
    (vectorcallfunc)hot_release,
    (vectorcallfunc)skip_if_truthy,
};

/* None or a str: the attribute names the shims pass. */
static int
optional_name(PyObject *value, const char *what)
{
    if (value != Py_None && !PyUnicode_CheckExact(value)) {
        PyErr_Format(PyExc_TypeError, "HotMethod: %s must be a str or None", what);
        return -1;
    }
    return 0;
}

static PyObject *
hot_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "original", "slow", "absorb", "failed", "adopt",
                             "exact_type", "unless", "pool_link", "conn_link", "owner_attr",
                             "answer", "defaults", "attr", "need_items", "timed", "match_key",
                             NULL};
    int kind, need_items = 0, timed = 0, match_key = 0;
    PyObject *original, *slow, *absorb = NULL, *failed = Py_None, *adopt = Py_None,
                                        *exact_type = Py_None, *unless = Py_None,
                                        *pool_link = Py_None, *conn_link = Py_None,
                                        *owner_attr = Py_None, *answer = NULL,
                                        *defaults = Py_None, *attr = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOO|$OOOOOOOOOOOppp:HotMethod", kwlist, &kind,
                                     &original, &slow, &absorb, &failed, &adopt, &exact_type,
                                     &unless, &pool_link, &conn_link, &owner_attr, &answer,
                                     &defaults, &attr, &need_items, &timed, &match_key)) {
        return NULL;
    }
    if (kind <= 0 || kind >= KIND_MAX) {
        PyErr_Format(PyExc_ValueError, "HotMethod: kind must be in 1..%d, got %d", KIND_MAX - 1,
                     kind);
        return NULL;
    }
    if (absorb == NULL || !PyCallable_Check(original) || !PyCallable_Check(slow) ||
        !PyCallable_Check(absorb)) {
        PyErr_SetString(PyExc_TypeError, "HotMethod: original, slow and absorb must be callable");
        return NULL;
    }
    if (optional_name(unless, "unless") < 0 || optional_name(pool_link, "pool_link") < 0 ||
        optional_name(conn_link, "conn_link") < 0 || optional_name(owner_attr, "owner_attr") < 0 ||
        optional_name(attr, "attr") < 0) {
        return NULL;
    }
    static PyObject *no_defaults = NULL; /* RELEASE takes exactly (self, conn) unless told */
    if (kind == RELEASE && defaults == Py_None) {
        if (no_defaults == NULL && (no_defaults = PyTuple_New(0)) == NULL) {
            return NULL;
        }
        defaults = no_defaults;
    }
    if (defaults != Py_None && !PyTuple_CheckExact(defaults)) {
        PyErr_SetString(PyExc_TypeError, "HotMethod: defaults must be a tuple or None");
        return NULL;
    }
    if ((kind == SKIP_IF_TRUTHY && attr == Py_None) ||
        ((timed || need_items || match_key) && pool_link == Py_None) ||
        (kind != SKIP_IF_TRUTHY && conn_link == Py_None)) {
        PyErr_SetString(PyExc_ValueError,
                        "HotMethod: SKIP_IF_TRUTHY needs attr; timed, need_items and match_key "
                        "need pool_link; BORROW and RELEASE need conn_link");
        return NULL;
    }
    HotMethodObject *self = (HotMethodObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = kinds[kind];
    self->kind = kind;
    self->need_items = (char)need_items;
    self->timed = (char)timed;
    self->match_key = (char)match_key;
    HOT_ARGS(SET_FIELD)
    return (PyObject *)self;
}

GC_SLOTS(hot, HotMethodObject, HOT_FIELDS, 0, 0, TP_FREE)

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

static PyGetSetDef hot_getset[] = {
    {"__name__", (getter)hot_get_from_original, NULL, NULL, "__name__"},
    {"__qualname__", (getter)hot_get_from_original, NULL, NULL, "__qualname__"},
    {"__doc__", (getter)hot_get_from_original, NULL, NULL, "__doc__"},
    {"__module__", (getter)hot_get_from_original, NULL, NULL, "__module__"},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef hot_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(HotMethodObject, original), READONLY,
     "The library's original function."},
    {"slow", T_OBJECT, offsetof(HotMethodObject, slow), READONLY,
     "poolmon's Python wrapper for the uncommon calls."},
    {NULL, 0, 0, 0, NULL},
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
    .tp_members = hot_members,
    .tp_dictoffset = offsetof(HotMethodObject, dict),
    .tp_repr = (reprfunc)hot_repr,
};

/* ------------------------------------------------------------------------------- LendTable */

/* A dict that a library keeps of the objects it has lent (key -> connection), whose writes are
 * the lane protocol: ``table[key] = conn`` records a borrow of conn, ``del table[key]`` its
 * return. For a pool that lends and takes back in Python code of its own, this records both
 * with no wrapper around the pool's methods (a wrapper's frame cost more than the whole budget).
 * The shim replaces the library's dict with one of these, holding the same items.
 *
 *   link      the pool's Link: its lane, its ``items`` (the idle list: a return leaves the
 *             connection at its end when the pool keeps it) and its ``table`` (a Borrowed:
 *             id(conn) -> ledger id, kept by the shim for the connections it knows alive);
 *   lent      (conn,) a borrow this table did not record itself (lane closed or retired, or a
 *             connection poolmon has not recorded yet);
 *   returned  (conn,) a return it did not record (the same, or the pool let the connection go:
 *             the Python side decides why);
 *   absorb    (exc,) a bookkeeping failure.
 *
 * The dict operation runs first and whole (it raises exactly as a dict would); bookkeeping
 * after it never raises into the library. Only item assignment and deletion are hooked: the
 * other dict methods (update, pop, clear) stay silent, which is how the shim fills and empties
 * a table without recording anything. */
typedef struct {
    PyDictObject dict;
    PyObject *link;
    PyObject *lent;
    PyObject *returned;
    PyObject *absorb;
} LendTableObject;

static PyTypeObject LendTableType;
#define LEND_FIELDS(X) X(link) X(lent) X(returned) X(absorb)
static PyMappingMethods lend_mapping; /* dict's, with ass_subscript hooked (hot_exec) */

/* The bookkeeping of one write: recorded here in the common case (the pool link is live and
 * its id table knows conn: id(conn) -> ledger id), else by ``lent`` or ``returned`` in Python.
 * 0, or -1 with an error. */
static ALWAYS_INLINE int
lend_record(LendTableObject *t, PyObject *conn, int lend)
{
    LinkObject *plink = (LinkObject *)t->link; /* a Link on a Lane: checked by lend_init */
    LaneObject *lane = (LaneObject *)plink->lane;
    if (lane->open && !lane->retired && Py_TYPE(plink->table) == &BorrowedType) {
        BorrowedObject *ids = (BorrowedObject *)plink->table;
        Py_ssize_t i = borrowed_find(ids, (long long)(uintptr_t)conn);
        PyObject *idle = plink->items;
        if (i >= 0 && lend) {
            return lane_borrow(lane, (long long)ids->slots[i].value, NULL);
        }
        if (i >= 0 && PyList_CheckExact(idle) && PyList_GET_SIZE(idle) > 0 &&
            PyList_GET_ITEM(idle, PyList_GET_SIZE(idle) - 1) == conn) {
            /* kept: back at the idle end */
            return lane_release(lane, (long long)ids->slots[i].value) < 0 ? -1 : 0;
        }
    }
    PyObject *r = PyObject_CallOneArg(lend ? t->lent : t->returned, conn);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int
lend_ass_subscript(LendTableObject *t, PyObject *key, PyObject *value)
{
    PyObject *conn; /* a new reference */
    if (value != NULL) {
        if (PyDict_SetItem((PyObject *)t, key, value) < 0) {
            return -1;
        }
        conn = Py_NewRef(value);
    }
    else if ((conn = DICT_POP((PyObject *)t, key)) == NULL) { /* one lookup; KeyError if missing */
        return -1;
    }
    int rc = lend_record(t, conn, value != NULL);
    Py_DECREF(conn);
    return settle(t->absorb, rc);
}

static int
lend_init(LendTableObject *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"link", "lent", "returned", "absorb", NULL};
    PyObject *link, *lent, *returned, *absorb;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO:LendTable", kwlist, &link, &lent,
                                     &returned, &absorb)) {
        return -1;
    }
    if (!PyCallable_Check(lent) || !PyCallable_Check(returned) || !PyCallable_Check(absorb)) {
        PyErr_SetString(PyExc_TypeError, "LendTable: lent, returned and absorb must be callable");
        return -1;
    }
    if (Py_TYPE(link) != &LinkType || Py_TYPE(((LinkObject *)link)->lane) != &LaneType) {
        PyErr_SetString(PyExc_TypeError, "LendTable: link must be a Link on a Lane");
        return -1;
    }
#define RESET_FIELD(field) Py_XSETREF(t->field, Py_NewRef(field));
    LEND_FIELDS(RESET_FIELD)
    return 0;
}

GC_SLOTS(lend, LendTableObject, LEND_FIELDS, PyDict_Type.tp_traverse((PyObject *)self, visit, arg),
         PyDict_Type.tp_clear((PyObject *)self), PyDict_Type.tp_dealloc((PyObject *)self))

static PyMemberDef lend_members[] = {
    {"link", T_OBJECT, offsetof(LendTableObject, link), READONLY, "The pool's Link."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LendTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "poolmon._hot.LendTable",
    .tp_doc = PyDoc_STR("LendTable(link, lent, returned, absorb): a dict of lent connections "
                        "whose item writes record borrows and returns (poolmon.core.lane)."),
    .tp_basicsize = sizeof(LendTableObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_as_mapping = &lend_mapping,
    .tp_init = (initproc)lend_init,
    .tp_traverse = (traverseproc)lend_traverse,
    .tp_clear = (inquiry)lend_clear,
    .tp_dealloc = (destructor)lend_dealloc,
    .tp_members = lend_members,
};

/* ------------------------------------------------------------------- the lane protocol, for Python */

/* Lane.borrow(cid, now, waited) / Lane.release(cid, now): the lane protocol's two writes as the
 * ledger's Python code calls them (poolmon.core.lane.HotLane has the same methods). They return
 * False: the compiled lane counts into buckets and never asks for a fold (lane.py, L2). */
static PyObject *
lane_borrow_method(LaneObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long key;
    double now, waited;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "borrow(cid, now, waited)");
        return NULL;
    }
    if (lane_key(args[0], &key) < 0 || ((now = PyFloat_AsDouble(args[1])) == -1.0 &&
                                        PyErr_Occurred()) ||
        ((waited = PyFloat_AsDouble(args[2])) == -1.0 && PyErr_Occurred()) ||
        borrowed_set(self->borrowed, key, now) < 0) {
        return NULL;
    }
    bucket_add(&self->waits, waited);
    Py_RETURN_FALSE;
}

static PyObject *
lane_release_method(LaneObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long key;
    double start, now;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "release(cid, now)");
        return NULL;
    }
    if (lane_key(args[0], &key) < 0 ||
        ((now = PyFloat_AsDouble(args[1])) == -1.0 && PyErr_Occurred())) {
        return NULL;
    }
    if (borrowed_pop(self->borrowed, key, &start)) {
        bucket_add(&self->uses, now - start);
    }
    Py_RETURN_FALSE;
}

/* ---------------------------------------------------------------------------------- module */

static int
hot_exec(PyObject *module)
{
    PyObject *time_module = PyImport_ImportModule("time");
    if (time_module == NULL) {
        return -1;
    }
    perf_counter = PyObject_GetAttrString(time_module, "perf_counter");
    Py_DECREF(time_module);
    if (perf_counter == NULL) {
        return -1;
    }
    /* LendTable: a dict whose item assignment is hooked, every other slot inherited. */
    lend_mapping.mp_ass_subscript = (objobjargproc)lend_ass_subscript;
    LendTableType.tp_base = &PyDict_Type;
    if (PyType_Ready(&BorrowedType) < 0 || PyType_Ready(&LaneType) < 0 ||
        PyType_Ready(&LinkType) < 0 || PyType_Ready(&HotMethodType) < 0 ||
        PyType_Ready(&LendTableType) < 0) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "Borrowed", (PyObject *)&BorrowedType) < 0 ||
        PyModule_AddObjectRef(module, "Lane", (PyObject *)&LaneType) < 0 ||
        PyModule_AddObjectRef(module, "Link", (PyObject *)&LinkType) < 0 ||
        PyModule_AddObjectRef(module, "HotMethod", (PyObject *)&HotMethodType) < 0 ||
        PyModule_AddObjectRef(module, "LendTable", (PyObject *)&LendTableType) < 0) {
        return -1;
    }
#define KIND(name) if (PyModule_AddIntConstant(module, #name, name) < 0) return -1
    KIND(BORROW);
    KIND(RELEASE);
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
    .m_doc = "Library-agnostic primitives of the shims' fast path (see poolmon/_hot.c).",
    .m_size = 0,
    .m_slots = hot_slots,
};

PyMODINIT_FUNC
PyInit__hot(void)
{
    return PyModuleDef_Init(&hot_module);
}
