/* ---- speeddata C sender, time probes (speeddata/clocks.py): the part of every
 * generated header that measures the board's clock against the relay's. Its types
 * go before the link (which holds a prober), its functions after the varints. ---- */
/* ---- time probes (speeddata/clocks.py): the sender's clock minus the relay's ---- */
#define SD_PROBE_SIZE 42               /* C3 01, fingerprint, nonce, t0 t1 t2 (int64 LE) */
#define SD_PROBE_KEEP 8                /* the estimate: lowest round trip of the last 8 */
#define SD_PROBE_OUTSTANDING 8         /* probes awaiting an answer, at most */
#define SD_PROBE_BURST 4               /* probes a burst ... */
#define SD_PROBE_GAP_NS 20000000       /* ... 20 ms apart ... */
#define SD_PROBE_EVERY_NS 10000000000  /* ... every 10 s */
#define SD_ANSWER_WAIT_NS 1000000000   /* an unanswered probe is forgotten after 1 s */
#define SD_MAX_TURNAROUND_NS 1000000000  /* t2 - t1 taken from a relay, at most */
#define SD_MAX_ROUND_TRIP_NS 5000000000  /* a slower probe tells nothing useful */
#define SD_MAX_OFFSET_NS 1000000000000000000  /* what a report may carry (loss.py) */
static const uint8_t SD_PROBE_HEADER[10] = {@PROBE_HEADER@};

/* One measure: the offset (sender minus relay) within uncertainty_ns, half the round
 * trip; at_ns: t3 of the probe, on the sender's clock. */
struct sd_estimate {
    int64_t offset_ns;
    int64_t uncertainty_ns;
    int64_t round_trip_ns;
    int64_t at_ns;
};

/* The last SD_PROBE_KEEP measures, a ring: the best is the lowest round trip. */
struct sd_estimator {
    struct sd_estimate samples[SD_PROBE_KEEP];
    unsigned count;  /* how many of samples hold one */
    unsigned next;   /* where the next goes (the oldest when full) */
};

/* A probe sent and not yet answered. */
struct sd_probe_slot {
    uint8_t nonce[8];
    int64_t t0;
    bool used;
};

/* Refusals of answers, by reason (as speeddata.clocks.Prober counts them). */
enum { SD_PROBE_UNKNOWN_NONCE, SD_PROBE_NOT_AN_ANSWER, SD_PROBE_BAD_STAMPS, SD_PROBE_SLOW,
       SD_PROBE_GARBLED, SD_PROBE_REASONS };

/* The sender's half of the probes: off until sd_link_probe. */
struct sd_prober {
    sd_recv_fn recv;
    void *recv_ctx;
    sd_clock_fn clock;
    void *clock_ctx;
    int64_t every_ns;        /* between bursts; 0: no probes */
    int64_t next_ns;         /* the next probe is due then (the sender's clock) */
    bool started;            /* a probe has gone out: the first is due at once */
    unsigned in_burst;
    uint64_t rng;            /* the nonces' generator state (xorshift64*) */
    struct sd_probe_slot slots[SD_PROBE_OUTSTANDING];
    unsigned next_slot;
    struct sd_estimator estimator;
    int64_t sent, answered;
    int64_t refused[SD_PROBE_REASONS];
};

/* @@functions@@ */
/* Two nonces the same (memcmp is not among the libc the header may use). */
static inline bool sd_same8(const uint8_t *a, const uint8_t *b)
{
    int i;
    for (i = 0; i < 8; i++) {
        if (a[i] != b[i]) {
            return false;
        }
    }
    return true;
}

/* ---- the time probes' bytes and the estimate (no clock, no I/O: tested on literals) -- */

static inline void sd_put_u64le(uint8_t *p, uint64_t u)
{
    int i;
    for (i = 0; i < 8; i++) {
        p[i] = (uint8_t)(u >> (8 * i));
    }
}

static inline void sd_put_i64le(uint8_t *p, int64_t v)
{
    sd_put_u64le(p, (uint64_t)v);
}

static inline int64_t sd_get_i64le(const uint8_t *p)
{
    uint64_t u = 0;
    int i;
    for (i = 7; i >= 0; i--) {
        u = (u << 8) | p[i];
    }
    /* two's complement without relying on an out-of-range conversion */
    return u > (uint64_t)INT64_MAX ? -(int64_t)(~u) - 1 : (int64_t)u;
}

/* A probe datagram into buf (SD_PROBE_SIZE bytes): a request has t1 = t2 = 0. */
static inline size_t sd_probe_encode(uint8_t *buf, const uint8_t nonce[8], int64_t t0,
                                     int64_t t1, int64_t t2)
{
    memcpy(buf, SD_PROBE_HEADER, 10);
    memcpy(buf + 10, nonce, 8);
    sd_put_i64le(buf + 18, t0);
    sd_put_i64le(buf + 26, t1);
    sd_put_i64le(buf + 34, t2);
    return SD_PROBE_SIZE;
}

/* The probe in data (len bytes): 0 and its fields, or -1 when it is not exactly one. */
static inline int sd_probe_decode(const uint8_t *data, size_t len, uint8_t nonce[8],
                                  int64_t *t0, int64_t *t1, int64_t *t2)
{
    int i;
    if (len != SD_PROBE_SIZE) {
        return -1;
    }
    for (i = 0; i < 10; i++) {
        if (data[i] != SD_PROBE_HEADER[i]) {
            return -1;
        }
    }
    memcpy(nonce, data + 10, 8);
    *t0 = sd_get_i64le(data + 18);
    *t1 = sd_get_i64le(data + 26);
    *t2 = sd_get_i64le(data + 34);
    return 0;
}

/* One exchange's measure, as speeddata.clocks.measure: offset ((t0 - t1) + (t3 - t2)) / 2
 * rounded down, written (t0 - t1) + rt / 2 so that it cannot overflow; the caller has
 * checked 0 <= rt (the round trip) and the stamps. */
static inline struct sd_estimate sd_measure(int64_t t0, int64_t t1, int64_t t2, int64_t t3)
{
    struct sd_estimate e;
    e.round_trip_ns = (t3 - t0) - (t2 - t1);
    e.offset_ns = (t0 - t1) + e.round_trip_ns / 2;
    e.uncertainty_ns = (e.round_trip_ns + 1) / 2;
    e.at_ns = t3;
    return e;
}

static inline void sd_estimator_add(struct sd_estimator *e, const struct sd_estimate *s)
{
    e->samples[e->next] = *s;
    e->next = (e->next + 1u) % SD_PROBE_KEEP;
    if (e->count < SD_PROBE_KEEP) {
        e->count++;
    }
}

/* The best of the last SD_PROBE_KEEP: the lowest round trip, the oldest of equals (as
 * Python's min over its deque); false while there is none. */
static inline bool sd_estimator_best(const struct sd_estimator *e, struct sd_estimate *out)
{
    unsigned k, first = e->count < SD_PROBE_KEEP ? 0u : e->next;
    const struct sd_estimate *best = NULL;
    for (k = 0; k < e->count; k++) {
        const struct sd_estimate *s = &e->samples[(first + k) % SD_PROBE_KEEP];
        if (best == NULL || s->round_trip_ns < best->round_trip_ns) {
            best = s;
        }
    }
    if (best == NULL) {
        return false;
    }
    *out = *best;
    return true;
}

#ifndef SPEEDDATA_NO_PROBE /* (defined: no probes, no prober in the link) */
/* Turn the time probes on for l: answers come through recv (non-blocking), stamps from
 * clock, a burst of SD_PROBE_BURST every every_ns (SD_PROBE_EVERY_NS: six a minute);
 * seed makes the nonces (from a hardware RNG on a board; anything else guessable). */
static inline void sd_link_probe(struct sd_link *l, sd_recv_fn recv, void *recv_ctx,
                                 sd_clock_fn clock, void *clock_ctx, int64_t every_ns,
                                 uint64_t seed)
{
    struct sd_prober *p = &l->probe;
    int k;
    p->recv = recv;
    p->recv_ctx = recv_ctx;
    p->clock = clock;
    p->clock_ctx = clock_ctx;
    p->every_ns = every_ns;
    p->next_ns = 0;
    p->started = false;
    p->in_burst = 0;
    p->rng = seed != 0u ? seed : 0x9E3779B97F4A7C15u;
    for (k = 0; k < SD_PROBE_OUTSTANDING; k++) {
        p->slots[k].used = false;
    }
    p->next_slot = 0;
    p->estimator.count = 0;
    p->estimator.next = 0;
    p->sent = 0;
    p->answered = 0;
    for (k = 0; k < SD_PROBE_REASONS; k++) {
        p->refused[k] = 0;
    }
}

/* Check an answer that arrived at t3 against the outstanding probes (as
 * speeddata.clocks.Prober.take): 1 taken into the estimate, 0 refused and counted. */
static inline int sd_probe_take(struct sd_prober *p, const uint8_t *data, size_t len,
                                int64_t t3)
{
    uint8_t nonce[8];
    int64_t t0, t1, t2, rt;
    struct sd_estimate e;
    int k, found = -1;
    if (sd_probe_decode(data, len, nonce, &t0, &t1, &t2) != 0) {
        p->refused[SD_PROBE_GARBLED]++;
        return 0;
    }
    if (t1 == 0 && t2 == 0) {
        p->refused[SD_PROBE_NOT_AN_ANSWER]++;
        return 0;
    }
    for (k = 0; k < SD_PROBE_OUTSTANDING; k++) {
        if (p->slots[k].used && sd_same8(p->slots[k].nonce, nonce) && p->slots[k].t0 == t0) {
            found = k;
        }
    }
    if (found < 0) {
        p->refused[SD_PROBE_UNKNOWN_NONCE]++;
        return 0;
    }
    if (!(t1 > 0 && t1 <= t2 && t2 - t1 <= SD_MAX_TURNAROUND_NS)) {
        p->refused[SD_PROBE_BAD_STAMPS]++;
        return 0;
    }
    rt = (t3 - t0) - (t2 - t1);
    if (rt < 0 || rt > SD_MAX_ROUND_TRIP_NS) {
        p->refused[rt > 0 ? SD_PROBE_SLOW : SD_PROBE_BAD_STAMPS]++;
        return 0;
    }
    e = sd_measure(t0, t1, t2, t3);
    if (e.offset_ns > SD_MAX_OFFSET_NS || e.offset_ns < -SD_MAX_OFFSET_NS) {
        p->refused[SD_PROBE_BAD_STAMPS]++; /* no report could carry it */
        return 0;
    }
    p->slots[found].used = false; /* answered: a copy of the answer counts no more */
    p->answered++;
    sd_estimator_add(&p->estimator, &e);
    return 1;
}

/* A new probe request into buf (SD_PROBE_SIZE bytes), stamped t0, remembered until
 * answered (the oldest outstanding one is forgotten beyond SD_PROBE_OUTSTANDING). */
static inline size_t sd_probe_request(struct sd_prober *p, uint8_t *buf, int64_t t0)
{
    struct sd_probe_slot *s = &p->slots[p->next_slot];
    uint64_t x = p->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    p->rng = x;
    sd_put_u64le(s->nonce, x * 0x2545F4914F6CDD1Du);
    s->t0 = t0;
    s->used = true;
    p->next_slot = (p->next_slot + 1u) % SD_PROBE_OUTSTANDING;
    p->in_burst++;
    if (p->in_burst >= SD_PROBE_BURST) {
        p->in_burst = 0;
        p->next_ns = t0 + p->every_ns;
    } else {
        p->next_ns = t0 + SD_PROBE_GAP_NS;
    }
    p->started = true;
    p->sent++;
    return sd_probe_encode(buf, s->nonce, t0, 0, 0);
}

/* True while a probe sent within SD_ANSWER_WAIT_NS is unanswered (older ones are
 * forgotten here): only then is there an answer to read. */
static inline bool sd_probe_waiting(struct sd_prober *p, int64_t now_ns)
{
    bool waiting = false;
    int k;
    for (k = 0; k < SD_PROBE_OUTSTANDING; k++) {
        if (p->slots[k].used && (now_ns - p->slots[k].t0 > SD_ANSWER_WAIT_NS ||
                                 now_ns < p->slots[k].t0)) {
            p->slots[k].used = false;
        }
        waiting = waiting || p->slots[k].used;
    }
    return waiting;
}

/* Read the answers waiting (at most SD_PROBE_OUTSTANDING a call) and send a probe when
 * one is due: call it from the program's loop (a link's send calls it too). The number
 * of answers taken. Nothing is read while no probe waits for its answer. */
static inline int sd_poll(struct sd_link *l)
{
    struct sd_prober *p = &l->probe;
#ifdef SPEEDDATA_STATIC_BUFFER
    static uint8_t buf[SD_PROBE_SIZE + 1];
#else
    uint8_t buf[SD_PROBE_SIZE + 1]; /* one more: a longer datagram is not a probe */
#endif
    int n, k, taken = 0;
    int64_t now;
    if (p->every_ns <= 0) {
        return 0;
    }
    now = p->clock(p->clock_ctx);
    for (k = 0; k < SD_PROBE_OUTSTANDING && sd_probe_waiting(p, now); k++) {
        n = p->recv(p->recv_ctx, buf, sizeof buf);
        if (n < 0) {
            break;
        }
        now = p->clock(p->clock_ctx); /* t3: as soon as it is read */
        taken += sd_probe_take(p, buf, (size_t)n, now);
    }
    if (!p->started || now >= p->next_ns || now < p->next_ns - p->every_ns) {
        /* the last test: the clock went back */
        size_t len = sd_probe_request(p, buf, p->clock(p->clock_ctx));
        (void)l->send(l->ctx, buf, len); /* a lost probe is just not answered */
    }
    return taken;
}

/* The link's best clock estimate: true and *out, or false while none was measured. */
static inline bool sd_link_clock(const struct sd_link *l, struct sd_estimate *out)
{
    return l->probe.every_ns > 0 && sd_estimator_best(&l->probe.estimator, out);
}
#else
static inline int sd_poll(struct sd_link *l)
{
    (void)l;
    return 0;
}

static inline bool sd_link_clock(const struct sd_link *l, struct sd_estimate *out)
{
    (void)l;
    (void)out;
    return false;
}
#endif /* SPEEDDATA_NO_PROBE */
