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
 *     same attributes as the Python HotLane, readable here without attribute lookups.
 *   - HotMethod: a method descriptor (bound like a Python function, called without a bound
 *     method object) that checks cheaply whether the call is the common case and, if not,
 *     hands the call *unchanged* to the Python wrapper ("slow"). Once the original has been
 *     called, the rare outcomes (an exception, a connection poolmon has not tagged yet, a
 *     closed lane) go to small Python callbacks, so every decision the Python wrapper makes
 *     is still made in Python, in one place.
 *
 * Atomicity: every write below is one operation on a builtin dict or list with int keys and
 * float values, and no Python code runs between the dict lookup and the delete of a return
 * (int hashing and comparison call none): under the GIL that is exactly as atomic as the Python
 * lane's ``dict.pop``. Bookkeeping errors after the original was called are passed to
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

/* A writer asks for a fold when the uses list grows past this (poolmon.core.lane.FOLD_AT). */
static Py_ssize_t fold_at = 512;

/* ------------------------------------------------------------------------------------ Lane */

typedef struct {
    PyObject_HEAD
    char open;
    char direct_clock; /* now is time.perf_counter and read_perf_counter() reads the same clock */
    PyObject *now;
    PyObject *borrowed;
    PyObject *waits;
    PyObject *uses;
    PyObject *note_wait;
    PyObject *note_use;
} LaneObject;

static PyTypeObject LaneType;

/* time.perf_counter, the system clock's monotonic reading (poolmon.core.clock.SystemClock). */
static PyObject *perf_counter;

/* On Linux, CPython's time.perf_counter reads clock_gettime(CLOCK_MONOTONIC) and converts the
 * nanoseconds exactly as below (_PyTime_AsSecondsDouble), so a lane can read that clock itself
 * and give the very same floats as the Python code of the ledger reading time.perf_counter:
 * durations mixing both stay exact. It saves the call through the builtin (~270 instructions a
 * reading, three readings a cycle). Elsewhere perf_counter may read another clock: no shortcut. */
#if defined(__linux__) && defined(CLOCK_MONOTONIC)
#define HAVE_DIRECT_CLOCK 1
static PyObject *
read_perf_counter(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    double seconds = ns % 1000000000LL == 0 ? (double)(ns / 1000000000LL) : (double)ns / 1e9;
    return PyFloat_FromDouble(seconds);
}
#else
#define HAVE_DIRECT_CLOCK 0
#endif

static PyObject *
lane_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"now", NULL};
    PyObject *now;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Lane", kwlist, &now)) {
        return NULL;
    }
    if (!PyCallable_Check(now)) {
        PyErr_Format(PyExc_TypeError, "Lane(now): now must be callable, got %.100s",
                     Py_TYPE(now)->tp_name);
        return NULL;
    }
    LaneObject *self = (LaneObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->open = 1;
    self->direct_clock = HAVE_DIRECT_CLOCK && now == perf_counter;
    Py_INCREF(now);
    self->now = now;
    self->borrowed = PyDict_New();
    self->waits = PyList_New(0);
    self->uses = PyList_New(0);
    if (self->borrowed == NULL || self->waits == NULL || self->uses == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->note_wait = PyObject_GetAttrString(self->waits, "append");
    self->note_use = PyObject_GetAttrString(self->uses, "append");
    if (self->note_wait == NULL || self->note_use == NULL) {
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
    Py_VISIT(self->waits);
    Py_VISIT(self->uses);
    Py_VISIT(self->note_wait);
    Py_VISIT(self->note_use);
    return 0;
}

static int
lane_clear(LaneObject *self)
{
    Py_CLEAR(self->now);
    Py_CLEAR(self->borrowed);
    Py_CLEAR(self->waits);
    Py_CLEAR(self->uses);
    Py_CLEAR(self->note_wait);
    Py_CLEAR(self->note_use);
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
    if (PyList_SetSlice(self->waits, 0, PY_SSIZE_T_MAX, NULL) < 0 ||
        PyList_SetSlice(self->uses, 0, PY_SSIZE_T_MAX, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef lane_methods[] = {
    {"read_clock", (PyCFunction)lane_read_clock, METH_NOARGS,
     "A reading of the lane's clock, as the fast path takes it (always a float)."},
    {"clear_samples", (PyCFunction)lane_clear_samples, METH_NOARGS,
     "Drop samples not folded yet (a forked child must not count its parent's)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef lane_members[] = {
    {"open", T_BOOL, offsetof(LaneObject, open), 0,
     "True while borrow/return need nothing but the lane's container operations."},
    {"now", T_OBJECT, offsetof(LaneObject, now), READONLY, "The ledger's clock."},
    {"direct_clock", T_BOOL, offsetof(LaneObject, direct_clock), READONLY,
     "True when the clock is time.perf_counter and the lane reads it without calling it."},
    {"borrowed", T_OBJECT, offsetof(LaneObject, borrowed), READONLY,
     "conn id -> borrow time; the ledger's live used state (shared, not a copy)."},
    {"waits", T_OBJECT, offsetof(LaneObject, waits), READONLY, "Wait samples not folded yet."},
    {"uses", T_OBJECT, offsetof(LaneObject, uses), READONLY, "Use samples not folded yet."},
    {"note_wait", T_OBJECT, offsetof(LaneObject, note_wait), READONLY, "waits.append"},
    {"note_use", T_OBJECT, offsetof(LaneObject, note_use), READONLY, "uses.append"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "poolmon._hot.Lane",
    .tp_doc = PyDoc_STR("The ledger's lock-free hot lane (see poolmon.core.lane), compiled."),
    .tp_basicsize = sizeof(LaneObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = lane_new,
    .tp_traverse = (traverseproc)lane_traverse,
    .tp_clear = (inquiry)lane_clear,
    .tp_dealloc = (destructor)lane_dealloc,
    .tp_methods = lane_methods,
    .tp_members = lane_members,
};

/* ------------------------------------------------------------------------------- HotMethod */

enum {
    PSYCOPG_GETCONN = 1, /* psycopg_pool ConnectionPool.getconn */
    PSYCOPG_PUTCONN,     /* psycopg_pool ConnectionPool.putconn */
    REDIS_GET,           /* redis ConnectionPool.get_connection */
    REDIS_RELEASE,       /* redis ConnectionPool/BlockingConnectionPool.release */
    URLLIB3_GET,         /* urllib3 HTTPConnectionPool._get_conn (non-blocking pools) */
    URLLIB3_PUT,         /* urllib3 HTTPConnectionPool._put_conn */
    SKIP_IF_FALSY,       /* returns None at once when self.<attr> is falsy (see skip_when) */
    SKIP_IF_TRUTHY,      /* returns None at once when self.<attr> is truthy */
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
    PyObject *fold;     /* (holder,) when the uses list is long */
    PyObject *absorb;   /* (exc,) a bookkeeping failure: counted, logged once */
    PyObject *owner;    /* redis: the class the wrapper was installed on */
    PyObject *attr;     /* SKIP_IF_*: the attribute of self tested */
    PyObject *dict;
} HotMethodObject;

static PyTypeObject HotMethodType;

static PyObject *s_tracker, *s_lane, *s_pool, *s_conn_tag,
    *s_block, *s_link, *s_sock, *zero_float;

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

static PyObject *
lane_now(LaneObject *lane)
{
#if HAVE_DIRECT_CLOCK
    if (lane->direct_clock) {
        return read_perf_counter();
    }
#endif
    PyObject *now = PyObject_CallNoArgs(lane->now);
    if (now != NULL && !PyFloat_Check(now)) {
        /* An injected clock returning an int or a Fraction: the samples must still be floats. */
        double d = PyFloat_AsDouble(now);
        Py_DECREF(now);
        if (d == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        now = PyFloat_FromDouble(d);
    }
    return now;
}

/* borrowed[cid] = now; waits.append(now - t0) (or 0.0 when t0 is NULL). 0 or -1 with an error. */
static int
lane_borrow(LaneObject *lane, PyObject *cid, PyObject *t0)
{
    PyObject *now = lane_now(lane);
    if (now == NULL) {
        return -1;
    }
    int rc = PyDict_SetItem(lane->borrowed, cid, now);
    if (rc == 0) {
        if (t0 == NULL) {
            rc = PyList_Append(lane->waits, zero_float);
        }
        else {
            PyObject *wait = PyFloat_FromDouble(PyFloat_AS_DOUBLE(now) - PyFloat_AS_DOUBLE(t0));
            rc = wait == NULL ? -1 : PyList_Append(lane->waits, wait);
            Py_XDECREF(wait);
        }
    }
    Py_DECREF(now);
    return rc;
}

/* start = borrowed.pop(cid, None); if start: uses.append(now - start). 0 when cid was not
 * borrowed, 1 when it was, 2 when it was and the uses list wants a fold, -1 with an error. */
static int
lane_release(LaneObject *lane, PyObject *cid)
{
    PyObject *start = PyDict_GetItemWithError(lane->borrowed, cid); /* borrowed reference */
    if (start == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(start);
    /* No Python code ran since the lookup (int keys): the entry is still ours to delete. */
    if (PyDict_DelItem(lane->borrowed, cid) < 0) {
        Py_DECREF(start);
        return -1;
    }
    PyObject *now = lane_now(lane);
    if (now == NULL) {
        Py_DECREF(start);
        return -1;
    }
    double begun = PyFloat_AsDouble(start);
    Py_DECREF(start);
    if (begun == -1.0 && PyErr_Occurred()) {
        Py_DECREF(now);
        return -1;
    }
    PyObject *use = PyFloat_FromDouble(PyFloat_AS_DOUBLE(now) - begun);
    Py_DECREF(now);
    if (use == NULL) {
        return -1;
    }
    int rc = PyList_Append(lane->uses, use);
    Py_DECREF(use);
    if (rc < 0) {
        return -1;
    }
    return PyList_GET_SIZE(lane->uses) > fold_at ? 2 : 1;
}

/* holder.lane when it is an open Lane; NULL (no error set) otherwise. New reference. */
static LaneObject *
open_lane_of(PyObject *holder)
{
    PyObject *lane;
    if (LOOKUP_ATTR(holder, s_lane, &lane) <= 0) {
        PyErr_Clear();
        return NULL;
    }
    if (Py_TYPE(lane) != &LaneType || !((LaneObject *)lane)->open) {
        Py_DECREF(lane);
        return NULL;
    }
    return (LaneObject *)lane;
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
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *self = args[0];
    PyObject *tracker;
    if (LOOKUP_ATTR(self, s_tracker, &tracker) <= 0) {
        PyErr_Clear();
        return to_slow(m, args, nargsf, kwnames);
    }
    if (tracker == Py_None) {
        Py_DECREF(tracker);
        return to_original(m, args, nargsf, kwnames);
    }
    LaneObject *lane = open_lane_of(tracker);
    PyObject *idle = NULL;
    Py_ssize_t n_idle = -1;
    if (lane != NULL && LOOKUP_ATTR(self, s_pool, &idle) > 0) {
        n_idle = PyObject_Length(idle);
    }
    Py_XDECREF(idle);
    if (n_idle <= 0) {
        PyErr_Clear();
        Py_XDECREF(lane);
        Py_DECREF(tracker);
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *t0 = lane_now(lane);
    if (t0 == NULL) {
        PyErr_Clear();
        Py_DECREF(lane);
        Py_DECREF(tracker);
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *conn = to_original(m, args, nargsf, kwnames);
    if (conn == NULL) {
        report_failure(m, tracker, t0);
        goto done;
    }
    PyObject *cid = psycopg_cid(conn, tracker);
    int rc;
    if (cid != NULL && lane->open) {
        rc = lane_borrow(lane, cid, t0);
    }
    else {
        rc = call_hook(m->adopt, tracker, conn, t0);
    }
    Py_XDECREF(cid);
    conn = lent(m, rc, conn);
done:
    Py_DECREF(t0);
    Py_DECREF(lane);
    Py_DECREF(tracker);
    return conn;
}

/* psycopg_pool putconn(self, conn): the return is recorded before the original runs. */
static PyObject *
psycopg_putconn(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL) {
        return to_slow(m, args, nargsf, kwnames);
    }
    PyObject *self = args[0], *conn = args[1];
    PyObject *tracker;
    if (LOOKUP_ATTR(self, s_tracker, &tracker) <= 0) {
        PyErr_Clear();
        return to_slow(m, args, nargsf, kwnames);
    }
    if (tracker == Py_None) {
        Py_DECREF(tracker);
        return to_original(m, args, nargsf, kwnames);
    }
    LaneObject *lane = open_lane_of(tracker);
    /* A tag naming this pool's tracker means a connection of this pool (a connection of another
     * pool names another tracker; one returned twice finds no borrow to end, and the original
     * refuses it as it would anyway). */
    PyObject *cid = lane != NULL ? psycopg_cid(conn, tracker) : NULL;
    if (cid == NULL) {
        /* An untagged connection, a foreign object, a closed lane: the Python wrapper decides
         * (and the original refuses what it must). */
        Py_XDECREF(lane);
        Py_DECREF(tracker);
        return to_slow(m, args, nargsf, kwnames);
    }
    int rc = lane_release(lane, cid);
    if (rc == 2) {
        rc = call_hook(m->fold, tracker, NULL, NULL) < 0 ? -1 : 1;
    }
    /* A lost connection (psycopg_pool drops it without a close call) is evicted by the run_task
     * wrapper, when _return_connection finds it lost: nothing to check on every return. */
    Py_DECREF(cid);
    Py_DECREF(lane);
    Py_DECREF(tracker);
    return then_original(m, rc, args, nargsf, kwnames);
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
    if (rc == 2) {
        rc = call_hook(m->fold, PyTuple_GET_ITEM(link, 1), NULL, NULL);
    }
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
    if (rc == 2) {
        rc = call_hook(m->fold, PyTuple_GET_ITEM(link, 3), NULL, NULL);
    }
    Py_DECREF(link);
    return then_original(m, rc, args, nargsf, kwnames);
}

/* A method whose original, in every library release the shim supports, begins with
 * ``if <self.attr is falsy/truthy>: return`` (psycopg_pool 3.2/3.3 ``_check_connection``:
 * ``if not self._check: return``, called on every getconn; redis-py ``connect_check_health``:
 * ``if self._sock: return``, called on every get_connection). In that case the original is not
 * called at all: its result (None) is known, and skipping its frame is what makes this wrapper
 * cheaper than the method it wraps. Otherwise the Python wrapper runs. */
static PyObject *
skip_when(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames, int truthy)
{
    PyObject *value;
    if (PyVectorcall_NARGS(nargsf) < 1 || LOOKUP_ATTR(args[0], m->attr, &value) <= 0) {
        PyErr_Clear();
        return to_slow(m, args, nargsf, kwnames);
    }
    int is_true = PyObject_IsTrue(value);
    Py_DECREF(value);
    if (is_true < 0 || is_true != truthy) {
        PyErr_Clear();
        return to_slow(m, args, nargsf, kwnames);
    }
    Py_RETURN_NONE;
}

static PyObject *
skip_if_falsy(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return skip_when(m, args, nargsf, kwnames, 0);
}

static PyObject *
skip_if_truthy(HotMethodObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return skip_when(m, args, nargsf, kwnames, 1);
}

static vectorcallfunc kinds[KIND_MAX] = {
    NULL,
    (vectorcallfunc)psycopg_getconn,
    (vectorcallfunc)psycopg_putconn,
    (vectorcallfunc)redis_get,
    (vectorcallfunc)redis_release,
    (vectorcallfunc)urllib3_get,
    (vectorcallfunc)urllib3_put,
    (vectorcallfunc)skip_if_falsy,
    (vectorcallfunc)skip_if_truthy,
};

static PyObject *
hot_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "original", "slow", "failed", "adopt", "fold", "absorb",
                             "owner", "attr", NULL};
    int kind;
    PyObject *original, *slow, *failed = Py_None, *adopt = Py_None, *fold = Py_None,
                                *absorb = NULL, *owner = Py_None, *attr = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOO|$OOOOOO:HotMethod", kwlist, &kind,
                                     &original, &slow, &failed, &adopt, &fold, &absorb, &owner,
                                     &attr)) {
        return NULL;
    }
    if (kind <= 0 || kind >= KIND_MAX) {
        PyErr_Format(PyExc_ValueError, "HotMethod: kind must be in 1..%d, got %d", KIND_MAX - 1,
                     kind);
        return NULL;
    }
    if ((kind == SKIP_IF_FALSY || kind == SKIP_IF_TRUTHY) && !PyUnicode_CheckExact(attr)) {
        PyErr_SetString(PyExc_TypeError, "HotMethod: SKIP_IF_* kinds need attr: str");
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
    SET(fold);
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
    Py_VISIT(self->fold);
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
    Py_CLEAR(self->fold);
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

/* ---------------------------------------------------------------------------- fold_samples */

#define MAX_BOUNDS 64

/* fold_samples(counts, bounds, samples) -> float: poolmon.core.lane.fold_samples, compiled (a
 * bisect per sample in C costs less than sorting the batch in Python). Bucket i counts the
 * samples with bounds[i-1] < x <= bounds[i]; the last bucket the ones above every bound. Returns
 * the sum of the positive samples. ``samples`` is left as it was. Caller holds the ledger lock. */
static PyObject *
hot_fold_samples(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_Check(args[0]) || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "fold_samples(counts: list, bounds, samples: list)");
        return NULL;
    }
    PyObject *counts = args[0], *samples = args[2];
    PyObject *bounds = PySequence_Fast(args[1], "fold_samples: bounds must be a sequence");
    if (bounds == NULL) {
        return NULL;
    }
    Py_ssize_t nb = PySequence_Fast_GET_SIZE(bounds);
    if (nb > MAX_BOUNDS || PyList_GET_SIZE(counts) != nb + 1) {
        Py_DECREF(bounds);
        PyErr_Format(PyExc_ValueError,
                     "fold_samples: need len(counts) == len(bounds) + 1 and at most %d bounds",
                     MAX_BOUNDS);
        return NULL;
    }
    double bound[MAX_BOUNDS];
    Py_ssize_t added[MAX_BOUNDS + 1] = {0};
    for (Py_ssize_t i = 0; i < nb; i++) {
        bound[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(bounds, i));
        if (bound[i] == -1.0 && PyErr_Occurred()) {
            Py_DECREF(bounds);
            return NULL;
        }
    }
    Py_DECREF(bounds);
    double total = 0.0;
    Py_ssize_t n = PyList_GET_SIZE(samples);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PyList_GET_ITEM(samples, k);
        double x = PyFloat_CheckExact(item) ? PyFloat_AS_DOUBLE(item) : PyFloat_AsDouble(item);
        if (x == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        Py_ssize_t lo = 0, hi = nb; /* first bound >= x: bisect_left */
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (bound[mid] < x) {
                lo = mid + 1;
            }
            else {
                hi = mid;
            }
        }
        added[lo]++;
        if (x > 0.0) {
            total += x;
        }
    }
    for (Py_ssize_t i = 0; i <= nb; i++) {
        if (added[i] == 0) {
            continue;
        }
        PyObject *old = PyList_GET_ITEM(counts, i);
        PyObject *inc = PyLong_FromSsize_t(added[i]);
        PyObject *sum = inc ? PyNumber_Add(old, inc) : NULL;
        Py_XDECREF(inc);
        if (sum == NULL) {
            return NULL;
        }
        PyList_SetItem(counts, i, sum); /* steals sum, releases old */
    }
    return PyFloat_FromDouble(total);
}

static PyMethodDef hot_functions[] = {
    {"fold_samples", (PyCFunction)(void (*)(void))hot_fold_samples, METH_FASTCALL,
     "fold_samples(counts, bounds, samples) -> sum of the positive samples (see "
     "poolmon.core.lane.fold_samples)."},
    {NULL, NULL, 0, NULL},
};

/* ---------------------------------------------------------------------------------- module */

static int
hot_exec(PyObject *module)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    INTERN(s_tracker, "_poolmon_tracker");
    INTERN(s_lane, "lane");
    INTERN(s_pool, "_pool");
    INTERN(s_conn_tag, "_poolmon_conn");
    INTERN(s_sock, "_poolmon_sock");
    INTERN(s_block, "block");
    INTERN(s_link, "_poolmon_link");
#undef INTERN
    if ((zero_float = PyFloat_FromDouble(0.0)) == NULL) {
        return -1;
    }
    PyObject *time_module = PyImport_ImportModule("time");
    if (time_module == NULL) {
        return -1;
    }
    perf_counter = PyObject_GetAttrString(time_module, "perf_counter");
    Py_DECREF(time_module);
    if (perf_counter == NULL) {
        return -1;
    }
    if (PyType_Ready(&LaneType) < 0 || PyType_Ready(&HotMethodType) < 0) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "Lane", (PyObject *)&LaneType) < 0 ||
        PyModule_AddObjectRef(module, "HotMethod", (PyObject *)&HotMethodType) < 0 ||
        PyModule_AddIntConstant(module, "FOLD_AT", (long)fold_at) < 0) {
        return -1;
    }
#define KIND(name) if (PyModule_AddIntConstant(module, #name, name) < 0) return -1
    KIND(PSYCOPG_GETCONN);
    KIND(PSYCOPG_PUTCONN);
    KIND(REDIS_GET);
    KIND(REDIS_RELEASE);
    KIND(URLLIB3_GET);
    KIND(URLLIB3_PUT);
    KIND(SKIP_IF_FALSY);
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
    .m_methods = hot_functions,
    .m_slots = hot_slots,
};

PyMODINIT_FUNC
PyInit__hot(void)
{
    return PyModuleDef_Init(&hot_module);
}
