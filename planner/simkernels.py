"""The simulators' event loops, compiled with numba: :mod:`planner.simulate`'s wrappers call these on arrays.

Each kernel is the loop :mod:`planner.simulate` ran in Python before (commit 36e3756), the same arithmetic in the same
order, so every latency is the same to the last bit (tests/test_simulate_kernels.py holds the Python loops and checks
both). Rules that keep it so:

* no ``fastmath`` (it would let LLVM reorder sums and fuse multiply-adds: numba 0.68.1 runs its fastmath pass,
  whose flags include ``contract``, only when asked; numba/core/cpu.py and cpu_options.py of the installed wheel);
* the bisections are CPython's ``bisect`` algorithm probe for probe (``mid = (lo + hi) // 2``, CPython 3.11.7
  Lib/bisect.py; the C module computes the same midpoint), so even an input the Python code would have bisected
  oddly is answered alike;
* a table index is ``int(u * length)`` as :meth:`planner.service.ServiceTime.draw` takes it;
* minima are taken as Python's ``min`` takes them (the first strictly smaller wins).

This module imports numba, which with the kernels' load costs 0.5-1 s of CPU: :mod:`planner.simulate` imports it
only once a process has simulated for ``INTERPRETED_BUDGET_S`` in the Python loops it keeps for one model, on the
first co-located simulation, or before it forks workers (which then inherit the compiled code); never at import, so
that ``planner --help`` and a point plan stay quick. The three kernels are compiled for one signature each (eagerly,
when this module is first imported; a call with other types is refused, not compiled again) and cached in
``planner/__pycache__`` (``cache=True``), keyed on this file's content (numba 0.68.1 numba/core/caching.py,
``get_source_stamp``: a sha256 of the source): a first run after the cache is cleared or this file changes compiles
them (seconds), later processes load them. The small helpers are compiled into the kernels, not cached apart.
``NUMBA_DISABLE_JIT=1`` runs everything as plain Python (slow; for a debugger or prints).
"""
from __future__ import annotations

import numpy as np
from numba import njit

INF = np.inf


@njit
def bisect_right(a, x, lo, hi):
    """CPython's bisect_right on ``a[lo:hi]``, probe for probe."""
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit
def bisect_left(a, x, lo, hi):
    """CPython's bisect_left on ``a[lo:hi]``, probe for probe."""
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit
def largest_preferred(preferred, lo, hi, m):
    """``max(p for p in preferred if p <= m)`` over ``preferred[lo:hi]`` (some p <= m exists: m >= the trigger)."""
    best = -1
    found = False
    for j in range(lo, hi):
        p = preferred[j]
        if p <= m and (not found or p > best):
            best = p
            found = True
    return best


ONE_INSTANCE_SIG = ("Tuple((int64, int64[::1], float64[::1], float64[::1], float64, float64))"
                    "(float64[::1], int64, int64[::1], int64, int64, float64, float64[:, ::1], int64[::1],"
                    " boolean, int64, int64, float64)")


@njit(ONE_INSTANCE_SIG, cache=True)
def one_instance(a, n_req, preferred, trigger, big_b, delay, tables, pick, give_up, first, must_exceed, bound):
    """One model instance (``simulate._simulate_one_instance``). ``a``: the arrivals followed by ``max(trigger,
    big_b)`` infinite sentinels; ``pick[batch]``: each batch's index into its service table row ``tables[m]``.

    Returns (batches, sizes, started, done, busy, end), the arrays of ``batches`` entries each; ``batches`` is -1
    when the give-up rule fired (P99 after warm-up sure to exceed the bound)."""
    n_pref = len(preferred)
    sizes = np.empty(n_req, dtype=np.int64)
    started = np.empty(n_req, dtype=np.float64)
    done = np.empty(n_req, dtype=np.float64)
    head = 0
    free_at = 0.0
    busy = 0.0
    batch = 0
    above = 0
    while head < n_req:
        t = a[head] + delay
        if a[head + trigger - 1] < t:
            t = a[head + trigger - 1]
        if t < free_at:
            t = free_at
        if big_b == 1:
            m = 1
        else:
            m = bisect_right(a, t, head, head + big_b) - head
            if n_pref and m >= trigger:
                m = largest_preferred(preferred, 0, n_pref, m)
        if batch >= len(pick):
            raise IndexError("more batches than draws")
        s = tables[m, pick[batch]]
        started[batch] = t
        sizes[batch] = m
        batch += 1
        busy += s
        free_at = t + s
        done[batch - 1] = free_at
        if give_up and free_at - bound >= a[head]:
            lo = head if head > first else first
            if lo < head + m:
                above += bisect_right(a, free_at - bound, lo, head + m) - lo
                if above >= must_exceed:
                    return -1, sizes[:0], started[:0], done[:0], busy, free_at
        head += m
    return batch, sizes[:batch], started[:batch], done[:batch], busy, free_at


SHARED_SIG = ("Tuple((int64[::1], float64[::1], float64[::1], float64, float64))"
              "(float64[::1], int64[::1], int64, int64, float64, int64, float64[::1], float64[::1],"
              " float64[:, ::1], int64[::1])")


@njit(SHARED_SIG, cache=True)
def shared(a, preferred, trigger, big_b, delay, k, speed, u, tables, lengths):
    """``k`` instances sharing the GPU by processor sharing (``simulate._simulate_shared``); ``tables[m]`` the
    service table of a batch of ``m``, ``lengths[m]`` its length. Returns (sizes, started, done, busy, end)."""
    n_req = len(a)
    n_pref = len(preferred)
    sizes = np.empty(n_req, dtype=np.int64)
    started = np.empty(n_req, dtype=np.float64)
    done = np.empty(n_req, dtype=np.float64)
    remaining = np.empty(k + 1, dtype=np.float64)  # in flight, in the order sent: remaining solo work, slot
    slot = np.empty(k + 1, dtype=np.int64)
    n_fl = 0
    n_b = 0
    head = 0
    t = 0.0
    busy = 0.0
    rate = 0.0
    while head < n_req or n_fl:
        j_next = 0
        if n_fl:
            rate = speed[n_fl] / n_fl
            for j in range(1, n_fl):  # the first smallest, as min(range(n), key=...)
                if remaining[j] < remaining[j_next]:
                    j_next = j
            t_complete = t + remaining[j_next] / rate
        else:
            t_complete = INF
        if n_fl < k and head < n_req:
            last = head + trigger - 1
            t_trigger = a[last] if last < n_req else INF
            t_delay = a[head] + delay
            t_dispatch = t_delay if t_delay < t_trigger else t_trigger  # min(t_trigger, t_delay)
            if t_dispatch < t:
                t_dispatch = t
        else:
            t_dispatch = INF

        t_next = t_dispatch if t_dispatch <= t_complete else t_complete
        if n_fl:
            progressed = (t_next - t) * rate
            for j in range(n_fl):
                remaining[j] -= progressed
            busy += t_next - t
        t = t_next
        if t_dispatch <= t_complete:
            queued = bisect_right(a, t, head, n_req) - head
            m = queued if queued < big_b else big_b
            if n_pref and m >= trigger:
                m = largest_preferred(preferred, 0, n_pref, m)
            if n_b >= len(u):
                raise IndexError("more batches than draws")
            remaining[n_fl] = tables[m, int(u[n_b] * lengths[m])]
            slot[n_fl] = n_b
            n_fl += 1
            sizes[n_b] = m
            started[n_b] = t
            done[n_b] = 0.0
            n_b += 1
            head += m
        else:
            done[slot[j_next]] = t
            for j in range(j_next, n_fl - 1):  # list.pop(j): the rest keep their order
                remaining[j] = remaining[j + 1]
                slot[j] = slot[j + 1]
            n_fl -= 1
    return sizes[:n_b], started[:n_b], done[:n_b], busy, t


@njit
def _heap_less(finish, seq, i, j):
    """(finish, sequence) tuples compared as Python compares them."""
    return finish[i] < finish[j] or (finish[i] == finish[j] and seq[i] < seq[j])


@njit
def _heap_swap(finish, seq, model, batch, i, j):
    finish[i], finish[j] = finish[j], finish[i]
    seq[i], seq[j] = seq[j], seq[i]
    model[i], model[j] = model[j], model[i]
    batch[i], batch[j] = batch[j], batch[i]


@njit
def _heap_up(finish, seq, model, batch, pos):
    while pos > 0:
        parent = (pos - 1) >> 1
        if _heap_less(finish, seq, pos, parent):
            _heap_swap(finish, seq, model, batch, pos, parent)
            pos = parent
        else:
            break


@njit
def _heap_down(finish, seq, model, batch, n):
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and _heap_less(finish, seq, child + 1, child):
            child += 1
        if _heap_less(finish, seq, child, pos):
            _heap_swap(finish, seq, model, batch, pos, child)
            pos = child
        else:
            break


@njit
def _ready(a, base, head, n_i, delay, trigger):
    """When a model's batcher sends its next batch, were the clock there (it has a free instance and a queue)."""
    when = a[base + head] + delay
    last = head + trigger - 1
    if last < n_i and a[base + last] < when:
        when = a[base + last]
    return when


COLOCATED_SIG = ("Tuple((int64, int64[::1], int64[::1], float64[::1], float64[::1], float64, float64))"
                 "(float64[::1], int64[::1], float64[::1], int64[::1], float64[:, :, ::1], int64[:, ::1],"
                 " int64[::1], int64[::1], int64[::1], int64[::1], float64[::1], int64[::1], float64[::1],"
                 " boolean, boolean, float64[::1], int64[::1], float64[::1])")


@njit(COLOCATED_SIG, cache=True)
def colocated(a, a_off, u, u_off, tables, lengths, preferred, pref_off, triggers, big_bs, delays, instances, speed,
              turns, give_up, bounds, firsts, fatal):
    """Several models on one GPU (``simulate.simulate_colocated``). Model ``i``'s arrivals are
    ``a[a_off[i]:a_off[i + 1]]``, its uniforms ``u[u_off[i]:u_off[i + 1]]``, its preferred sizes (sorted)
    ``preferred[pref_off[i]:pref_off[i + 1]]``, its service table of a batch of ``m`` ``tables[i, m]`` (of
    ``lengths[i, m]`` entries). Batches in flight are a binary heap on (finish, sequence), the order of Python's
    heap of (finish, sequence, model, batch) tuples (sequences are unique, so the order is total).

    Returns (status, batches per model, sizes, started, done, busy, end): the per-batch arrays are laid out as the
    arrivals (model ``i``'s batches from ``a_off[i]``, ``batches[i]`` of them); status -1: a model's P99 is sure to
    exceed its bound (the give-up)."""
    models = len(triggers)
    total = a_off[models]
    # Zeros past each model's batches: the arrays returned are defined everywhere.
    sizes = np.zeros(total, dtype=np.int64)
    starts = np.zeros(total, dtype=np.int64)  # each batch's first request
    started = np.zeros(total, dtype=np.float64)
    done = np.zeros(total, dtype=np.float64)
    n_batches = np.zeros(models, dtype=np.int64)
    heads = np.zeros(models, dtype=np.int64)
    running = np.zeros(models, dtype=np.int64)
    over = np.zeros(models, dtype=np.int64)
    ready_at = np.empty(models, dtype=np.float64)
    most = 0
    for i in range(models):
        most += instances[i]
    h_finish = np.empty(most + 1, dtype=np.float64)
    h_seq = np.empty(most + 1, dtype=np.int64)
    h_model = np.empty(most + 1, dtype=np.int64)
    h_batch = np.empty(most + 1, dtype=np.int64)
    n_fl = 0
    t = 0.0
    busy = 0.0
    clock = 0.0
    gpu_free = 0.0
    rate = 0.0
    sent = 0
    undispatched = total
    for i in range(models):
        n_i = a_off[i + 1] - a_off[i]
        if running[i] >= instances[i] or n_i <= 0:
            ready_at[i] = INF
        else:
            ready_at[i] = _ready(a, a_off[i], 0, n_i, delays[i], triggers[i])

    while undispatched or n_fl:
        if not n_fl:
            t_complete = INF
        elif turns:
            t_complete = h_finish[0]
        else:
            rate = speed[n_fl] / n_fl
            t_complete = t + (h_finish[0] - clock) / rate
        t_dispatch = ready_at[0]  # min(ready_at): the first strictly smaller wins
        for i in range(1, models):
            if ready_at[i] < t_dispatch:
                t_dispatch = ready_at[i]
        if t_dispatch < t:
            t_dispatch = t
        dispatch = t_dispatch <= t_complete
        t_next = t_dispatch if dispatch else t_complete
        if n_fl:
            if not turns:
                clock += (t_next - t) * rate
            busy += t_next - t
        t = t_next
        if dispatch:
            i = 0
            while ready_at[i] > t:  # the first model whose batcher sends now
                i += 1
            base = a_off[i]
            n_i = a_off[i + 1] - base
            head = heads[i]
            trigger = triggers[i]
            big_b = big_bs[i]
            queued = bisect_right(a, t, base + head, base + n_i) - base - head
            m = queued if queued < big_b else big_b
            if pref_off[i + 1] > pref_off[i] and m >= trigger:
                m = largest_preferred(preferred, pref_off[i], pref_off[i + 1], m)
            batch = n_batches[i]
            if batch >= u_off[i + 1] - u_off[i]:
                raise IndexError("more batches than draws")
            work = tables[i, m, int(u[u_off[i] + batch] * lengths[i, m])]
            if turns:
                gpu_free = (gpu_free if gpu_free > t else t) + work
                h_finish[n_fl] = gpu_free
            else:
                h_finish[n_fl] = clock + work
            h_seq[n_fl] = sent
            h_model[n_fl] = i
            h_batch[n_fl] = batch
            _heap_up(h_finish, h_seq, h_model, h_batch, n_fl)
            n_fl += 1
            sent += 1
            sizes[base + batch] = m
            started[base + batch] = t
            done[base + batch] = 0.0
            starts[base + batch] = head
            n_batches[i] = batch + 1
            head += m
            heads[i] = head
            undispatched -= m
            r = running[i] + 1
            running[i] = r
            if r >= instances[i] or head >= n_i:
                ready_at[i] = INF
            else:
                ready_at[i] = _ready(a, base, head, n_i, delays[i], trigger)
        else:
            i = h_model[0]
            batch = h_batch[0]
            n_fl -= 1
            if n_fl:
                _heap_swap(h_finish, h_seq, h_model, h_batch, 0, n_fl)
                _heap_down(h_finish, h_seq, h_model, h_batch, n_fl)
            base = a_off[i]
            n_i = a_off[i + 1] - base
            done[base + batch] = t
            running[i] -= 1
            head = heads[i]
            if running[i] >= instances[i] or head >= n_i:
                ready_at[i] = INF
            else:
                ready_at[i] = _ready(a, base, head, n_i, delays[i], triggers[i])
            if give_up:
                first = starts[base + batch]
                lo = first if first > firsts[i] else firsts[i]
                hi = first + sizes[base + batch]
                if hi > lo:
                    over[i] += bisect_left(a, t - bounds[i], base + lo, base + hi) - base - lo
                    if over[i] >= fatal[i]:
                        return -1, n_batches, sizes, started, done, busy, t
    return 0, n_batches, sizes, started, done, busy, t
