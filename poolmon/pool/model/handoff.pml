/* The hand-off of poolmon.Pool / AsyncPool (poolmon/pool/_base.py), with tenants, priority
 * classes with aging, burst capacity, create failures, timeouts and cancellation.
 * Checked by `spin` in tests/unit/pool/test_model.py; handoff.md maps each step to the code.
 * Built with -DBROKEN, a return parks its connection without looking at the waiters (the
 * lost wake-up the real _give_locked prevents): spin must find the violation.
 *
 * Scale: N callers, MAX normal connections, CEIL with burst, 2 tenants, 2 classes. Every
 * critical section of the pool (its lock; between awaits in AsyncPool) is one atomic block.
 * The model runs the strict hand-off (handoff_after = 0): a return hands its connection to
 * the best-ranked eligible waiter; bounded barging only delays that by handoff_after.
 */

#define N 3
#define MAX 1
#define CEIL 2
#define NONE 255
#define AGING 1        /* a waiter's class drops by one per AGING waiters served before it */
#define ROUNDS 1  /* 2: 7.5 M states, no error (checked by hand, ~1 GB); the suite runs 1 */

byte idle, lent, size;          /* _idle, _lent (lent part), _size */
byte used[2], holds[2];         /* Shares: connections lent / slots reserved, per tenant */
byte limit[2];
byte tenant[N], prio[N];
bool queued[N], handed[N], granted[N];
byte arrival[N];                /* queue position stamp: FIFO among equal ranks */
byte passes[N];                 /* waiters served while this one was queued (aging clock) */
byte stamp;
byte fails;                     /* create failures so far (bounded: the state space stays finite) */
#define FAILS 1

/* eligible(w): queued, not yet served, and its tenant below its quota (Shares.admits). */
#define eligible(w) (queued[w] && !handed[w] && !granted[w] && \
                     used[tenant[w]] + holds[tenant[w]] < limit[tenant[w]])
#define rank(w) (prio[w] > passes[w] / AGING -> prio[w] - passes[w] / AGING : 0)

/* _live_head_locked: the best-ranked eligible waiter (rank, then arrival), or NONE. */
inline pick(h) {
  h = NONE;
  byte i_;
  for (i_ : 0 .. N - 1) {
    if
    :: eligible(i_) && (h == NONE || rank(i_) < rank(h) ||
                        (rank(i_) == rank(h) && arrival[i_] < arrival[h])) -> h = i_
    :: else -> skip
    fi
  }
}

/* aging: every other waiter still queued was passed over once */
inline passed_over(h) {
  byte j_;
  for (j_ : 0 .. N - 1) {
    if
    :: queued[j_] && j_ != h && !handed[j_] && !granted[j_] -> passes[j_]++
    :: else -> skip
    fi
  }
}

/* _give_locked (strict mode) / _park_locked: hand a usable connection to the head, or park. */
inline give() {
  byte h_;
#ifdef BROKEN
  h_ = NONE;
#else
  pick(h_);
#endif
  if
  :: h_ != NONE ->
     queued[h_] = false; handed[h_] = true; lent++; used[tenant[h_]]++; passed_over(h_)
  :: else -> idle++
  fi
}

/* _offer_slots_locked: free slots (or burst slots while waits are measured) to the head. */
inline offer(burst) {
  byte g_;
  do
  :: size < MAX || (burst && size < CEIL && idle == 0) ->
     pick(g_);
     if
     :: g_ != NONE -> queued[g_] = false; granted[g_] = true; size++;
                     holds[tenant[g_]]++; passed_over(g_)
     :: else -> break
     fi
  :: else -> break
  od
}

proctype caller(byte c) {
  byte t = tenant[c];
  byte r = ROUNDS;
  byte h;
  bool mine;   /* holds a connection */
  bool slot;   /* holds a reserved slot to open a connection in */
  bool waiting; /* queued by this borrow (its own flag: a server clears queued[c]) */
  do
  :: r == 0 -> break
  :: r > 0 ->
     mine = false; slot = false;
borrow:
     waiting = false;
     atomic {  /* _getconn_shared / _next_entry under the lock */
       pick(h);
       if
       :: idle > 0 && h == NONE && used[t] + holds[t] < limit[t] ->
          idle--; lent++; used[t]++; mine = true              /* take idle (_may_take) */
       :: else ->
          if
          :: size < MAX && used[t] + holds[t] < limit[t] ->
             size++; holds[t]++; slot = true                  /* _reserve_locked */
          :: else ->
             queued[c] = true; stamp++; arrival[c] = stamp; passes[c] = 0;  /* enqueue */
             waiting = true
          fi
       fi
     }
     if
     :: waiting ->
        if
        :: atomic { handed[c] -> handed[c] = false; mine = true;   /* _served_locked */
                    assert(passes[c] <= prio[c] * AGING + N - 1) }  /* the aging bound */
        :: atomic { granted[c] -> granted[c] = false; slot = true;
                    assert(passes[c] <= prio[c] * AGING + N - 1) }
        /* timeout or cancellation (inv. 5): whatever it was given goes back */
        :: atomic { queued[c] -> queued[c] = false; r--; goto next }   /* left the queue */
        :: atomic { handed[c] -> handed[c] = false; lent--; used[t]--; give();  /* _put_back */
                    r--; goto next }
        :: atomic { granted[c] -> granted[c] = false; holds[t]--; size--; offer(false);
                    r--; goto next }                                   /* _free_slot */
        fi
     :: else -> skip
     fi;
     if
     :: slot ->
        if
        :: atomic { holds[t]--; lent++; used[t]++; mine = true; slot = false }  /* opened */
        :: atomic { fails < FAILS -> fails++;                         /* create failed */
                    holds[t]--; size--; slot = false; offer(false) }
           goto borrow
        fi
     :: else -> skip
     fi;
     assert(mine);
     atomic { lent--; used[t]--; give() }   /* putconn -> _settle_return_locked */
     r--;
next:
     skip
  od
}

/* The maintainer: a burst slot while callers wait, burst contraction when idle. */
active proctype maintainer() {
  do
  :: atomic { offer(true) }
  :: atomic { idle > 0 && size > MAX -> idle--; size-- }   /* burst_shrink */
  :: timeout -> break
  od
}

/* The invariants, checked in every reachable state. */
active proctype monitor() {
  byte w;
  do
  :: atomic {
       assert(lent + idle <= size && size <= CEIL);                      /* inv. 1, 2 */
       assert(used[0] + holds[0] <= limit[0] && used[1] + holds[1] <= limit[1]);
       for (w : 0 .. N - 1) {
         assert(!(idle > 0 && eligible(w)))                  /* no lost wake-up (inv. 3) */
       }
     }
  :: timeout -> break
  od
}

init {
  limit[0] = 1; limit[1] = 2;
  tenant[0] = 0; prio[0] = 1;
  tenant[1] = 1; prio[1] = 0;
  tenant[2] = 1; prio[2] = 1;
  atomic { run caller(0); run caller(1); run caller(2) }
}
