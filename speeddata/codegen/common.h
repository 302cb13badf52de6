/* ---- speeddata C sender, common part (the same in every generated header) ----
 * Guarded so that several channels' headers can be included in one program.
 * No heap, no libc beyond memcpy; the POSIX transport below only with SPEEDDATA_POSIX.
 * The datagram buffers are on the stack of the send, or static with
 * SPEEDDATA_STATIC_BUFFER (for small task stacks; then one thread sends). */
#ifndef SPEEDDATA_COMMON_H
#define SPEEDDATA_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h> /* memcpy only */

/* A string field: UTF-8 bytes (not NUL-terminated), at most the field's maxLength. */
struct sd_text {
    const char *data;
    uint32_t len;
};

/* A bytes field: at most the field's maxLength. */
struct sd_bytes {
    const uint8_t *data;
    uint32_t len;
};

/* The network hook: send one datagram of len bytes; return 0 when the stack took it,
 * anything else when it refused it (counted as failed, never retried). The POSIX
 * transport below is one; an lwIP raw-API one is a few lines (see the README). */
typedef int (*sd_send_fn)(void *ctx, const uint8_t *data, size_t len);

/* The receive hook, for the relay's answers to the time probes: copy one datagram that
 * arrived (at most cap bytes) into buf and return its length, or -1 when none is
 * waiting. It must not block: the program calls sd_poll from its own loop. */
typedef int (*sd_recv_fn)(void *ctx, uint8_t *buf, size_t cap);

/* The clock hook: the source's own clock, ns since the Unix epoch (what the records'
 * time is on). Tests inject a wrong one; a board without a wall clock gives its count. */
typedef int64_t (*sd_clock_fn)(void *ctx);

@PROBE_TYPES@

/* One channel's sending state: where datagrams go and what was sent, for the loss
 * reports (the relay compares them with what arrived). */
struct sd_link {
    sd_send_fn send;
    void *ctx;
    int64_t epoch;           /* random per start: tells a restarted sender from the last */
    int64_t report_every_ns; /* 0: no reports */
    int64_t next_report_ns;
    int64_t sent;            /* datagrams the stack took */
    int64_t failed;          /* datagrams it refused */
    int64_t refused;         /* records that did not fit the schema (never sent) */
    bool reported;           /* a report has gone out: the first is due at once */
#ifndef SPEEDDATA_NO_PROBE
    struct sd_prober probe;  /* the time probes; none unless sd_link_probe was called */
#endif
};

/* Set up a link; report_every_ns 1000000000 sends a loss report once a second
 * (speeddata's Python sender does the same), 0 none. */
static inline void sd_link_init(struct sd_link *l, sd_send_fn send, void *ctx,
                                int64_t epoch, int64_t report_every_ns)
{
    l->send = send;
    l->ctx = ctx;
    l->epoch = epoch;
    l->report_every_ns = report_every_ns;
    l->next_report_ns = 0;
    l->sent = 0;
    l->failed = 0;
    l->refused = 0;
    l->reported = false;
#ifndef SPEEDDATA_NO_PROBE
    l->probe.every_ns = 0; /* no probes: sd_link_probe sets them up */
#endif
}

/* Avro's zig-zag varint of a long (an int is the same value widened). */
static inline uint8_t *sd_put_long(uint8_t *p, int64_t n)
{
    uint64_t u = (uint64_t)n;
    u = (u << 1) ^ (0u - (u >> 63));
    while (u > 0x7Fu) {
        *p++ = (uint8_t)((u & 0x7Fu) | 0x80u);
        u >>= 7;
    }
    *p++ = (uint8_t)u;
    return p;
}

/* IEEE 754 little-endian, whatever the CPU's byte order. */
static inline uint8_t *sd_put_float(uint8_t *p, float f)
{
    uint32_t u;
    int i;
    memcpy(&u, &f, 4);
    for (i = 0; i < 4; i++) {
        *p++ = (uint8_t)(u >> (8 * i));
    }
    return p;
}

static inline uint8_t *sd_put_double(uint8_t *p, double d)
{
    uint64_t u;
    int i;
    memcpy(&u, &d, 8);
    for (i = 0; i < 8; i++) {
        *p++ = (uint8_t)(u >> (8 * i));
    }
    return p;
}

static inline uint8_t *sd_put_bytes(uint8_t *p, const void *data, uint32_t len)
{
    p = sd_put_long(p, (int64_t)len);
    if (len > 0u) {
        memcpy(p, data, len);
    }
    return p + len;
}

@PROBE_FUNCTIONS@

/* The reserved SenderReport channels (speeddata/loss.py), v1 and v2 (v1 and the clock's
 * offset and uncertainty): their headers and the largest size of either. */
static const uint8_t SD_REPORT_HEADER[10] = {@REPORT_HEADER@};
static const uint8_t SD_REPORT2_HEADER[10] = {@REPORT2_HEADER@};
#define SD_REPORT_MAX_SIZE @REPORT_MAX_SIZE@

/* A SenderReport datagram of a channel's counts into buf (SD_REPORT_MAX_SIZE bytes),
 * a SenderReport2 with clock (the estimate to carry; NULL: none measured yet, v1);
 * its length. */
static inline size_t sd_report2_encode(uint8_t *buf, int64_t now_ns, int64_t epoch,
                                       const uint8_t fingerprint[8], int64_t sent,
                                       int64_t failed, const struct sd_estimate *clock)
{
    uint8_t *p = buf;
    memcpy(p, clock == NULL ? SD_REPORT_HEADER : SD_REPORT2_HEADER, 10);
    p += 10;
    p = sd_put_long(p, now_ns);
    p = sd_put_long(p, epoch);
    memcpy(p, fingerprint, 8);
    p += 8;
    p = sd_put_long(p, sent);
    p = sd_put_long(p, failed);
    if (clock != NULL) {
        p = sd_put_long(p, clock->offset_ns);
        p = sd_put_long(p, clock->uncertainty_ns);
    }
    return (size_t)(p - buf);
}

/* The v1 report (no clock): as before probes. */
static inline size_t sd_report_encode(uint8_t *buf, int64_t now_ns, int64_t epoch,
                                      const uint8_t fingerprint[8], int64_t sent,
                                      int64_t failed)
{
    return sd_report2_encode(buf, now_ns, epoch, fingerprint, sent, failed, NULL);
}

/* Send the link's loss report now (a sender sends one as it stops, too). */
static inline void sd_report(struct sd_link *l, const uint8_t fingerprint[8], int64_t now_ns)
{
#ifdef SPEEDDATA_STATIC_BUFFER
    static uint8_t buf[SD_REPORT_MAX_SIZE];
#else
    uint8_t buf[SD_REPORT_MAX_SIZE];
#endif
    struct sd_estimate clock;
    size_t len = sd_report2_encode(buf, now_ns, l->epoch, fingerprint, l->sent, l->failed,
                                   sd_link_clock(l, &clock) ? &clock : NULL);
    (void)l->send(l->ctx, buf, len);
    l->reported = true;
    l->next_report_ns = now_ns + l->report_every_ns;
}

/* Send one encoded datagram (len 0: a record refused by the encoder), the report first
 * when one is due: 0 sent, 1 the stack refused it, -1 the record was refused. */
static inline int sd_link_send(struct sd_link *l, const uint8_t fingerprint[8],
                               const uint8_t *buf, size_t len, int64_t now_ns)
{
    if (l->report_every_ns > 0 && (!l->reported || now_ns >= l->next_report_ns ||
                                   now_ns < l->next_report_ns - l->report_every_ns)) {
        sd_report(l, fingerprint, now_ns); /* the last test: the clock went back */
    }
    (void)sd_poll(l); /* the time probes: answers read, one sent when due */
    if (len == 0u) {
        l->refused++;
        return -1;
    }
    if (l->send(l->ctx, buf, len) != 0) {
        l->failed++;
        return 1;
    }
    l->sent++;
    return 0;
}

#ifdef SPEEDDATA_POSIX
/* The POSIX transport: a connected UDP socket. Define SPEEDDATA_POSIX (and
 * _POSIX_C_SOURCE 200112L or more under -std=c99) before the first #include. */
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

struct sd_posix {
    int fd;
};

/* Open a UDP socket to host:port (a name or an address, IPv4 or IPv6); 0, or -1. */
static inline int sd_posix_open(struct sd_posix *t, const char *host, const char *port)
{
    struct addrinfo hints, *found, *a;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    t->fd = -1;
    if (getaddrinfo(host, port, &hints, &found) != 0) {
        return -1;
    }
    for (a = found; a != NULL; a = a->ai_next) {
        t->fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (t->fd < 0) {
            continue;
        }
        if (connect(t->fd, a->ai_addr, a->ai_addrlen) == 0) {
            break;
        }
        close(t->fd);
        t->fd = -1;
    }
    freeaddrinfo(found);
    return t->fd < 0 ? -1 : 0;
}

/* An sd_send_fn: ctx is a struct sd_posix. */
static inline int sd_posix_send(void *ctx, const uint8_t *data, size_t len)
{
    const struct sd_posix *t = (const struct sd_posix *)ctx;
    return send(t->fd, data, len, 0) == (ssize_t)len ? 0 : 1;
}

static inline void sd_posix_close(struct sd_posix *t)
{
    if (t->fd >= 0) {
        close(t->fd);
    }
    t->fd = -1;
}

/* The wall clock in ns since the Unix epoch, for the time field. */
static inline int64_t sd_posix_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + (int64_t)ts.tv_nsec;
}

/* An sd_clock_fn of the wall clock (ctx unused). */
static inline int64_t sd_posix_clock(void *ctx)
{
    (void)ctx;
    return sd_posix_now_ns();
}

/* An sd_recv_fn: a datagram waiting on the socket (the connected socket takes only the
 * relay's), or -1 at once when none is. ctx is a struct sd_posix. */
static inline int sd_posix_recv(void *ctx, uint8_t *buf, size_t cap)
{
    const struct sd_posix *t = (const struct sd_posix *)ctx;
    struct pollfd ready;
    ssize_t n;
    int tries;
    for (tries = 0; tries < 4; tries++) { /* past the errors of earlier sends (ICMP) */
        ready.fd = t->fd;
        ready.events = POLLIN;
        ready.revents = 0;
        if (poll(&ready, 1, 0) <= 0) {
            return -1;
        }
#ifdef MSG_DONTWAIT
        n = recv(t->fd, buf, cap, MSG_DONTWAIT);
#else
        n = recv(t->fd, buf, cap, 0);
#endif
        if (n >= 0) {
            return (int)n;
        }
    }
    return -1;
}
#endif /* SPEEDDATA_POSIX */
#endif /* SPEEDDATA_COMMON_H */
