/* kernel_rx.c - the kernel-socket contender: the best a UDP socket can do, same decoder as the engine.
 *
 * What a performance engineer writes when told "no kernel bypass": a UDP socket joined to the
 * feed's group, drained with recvmmsg() in batches, a large receive buffer, the thread pinned to
 * its own core; either spinning on a non-blocking socket (the default) or blocking until a
 * datagram arrives (--wait 1). Each batch reads the clocks once and hands every datagram to
 * tw_decode_mold(), the engine's own MoldUDP64/ITCH decoder, so counts and the
 * exchange->receiver latency histogram are computed exactly as the engine computes them (ITCH
 * timestamp vs CLOCK_REALTIME at batch arrival).
 *
 * Every knob is an option so the benchmark can show what each one does (bench/README.md,
 * "kernel_c tunings"). SO_BUSY_POLL is off by default: on a veth it makes recvmmsg() poll the
 * veth's NAPI from the receiver's CPU, which takes the NAPI away from the sending CPU where the
 * veth's 256-entry ring is otherwise drained, and the ring overflows at 100k packets/s.
 *
 * Stats: on SIGUSR1 (and at exit, on SIGTERM/SIGINT) it replaces --stats-json atomically with
 * the same keys `tickwire-engine run` writes (packets, messages, messages_by_type, gaps, ...,
 * latency.exchange_to_engine.lines.A.buckets as [low_ns, high_ns, count]). Writing happens in
 * the receive loop between batches, only when asked, so an idle benchmark costs nothing.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tickwire.h"

#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif

#define MAX_BATCH 256
#define MAX_DATAGRAM 2048

static volatile sig_atomic_t want_snapshot, want_stop;

static void on_usr1(int sig) { (void)sig; want_snapshot = 1; }
static void on_stop(int sig) { (void)sig; want_stop = 1; }

static void die(const char *what)
{
    fprintf(stderr, "kernel_rx: %s\n", what);
    exit(2);
}

static struct tw_clock read_clocks(void)
{
    struct timespec m, r;

    clock_gettime(CLOCK_MONOTONIC, &m);
    clock_gettime(CLOCK_REALTIME, &r);
    return (struct tw_clock){.mono_ns = (uint64_t)m.tv_sec * 1000000000ull + (uint64_t)m.tv_nsec,
                             .real_ns = (int64_t)r.tv_sec * 1000000000ll + r.tv_nsec};
}

static void write_hist(FILE *f, const struct tw_hist *h)
{
    fprintf(f, "{\"count\": %llu, \"sum\": %llu, \"min\": %llu, \"max\": %llu, \"buckets\": [",
            (unsigned long long)h->count, (unsigned long long)h->sum,
            (unsigned long long)h->min, (unsigned long long)h->max);
    const char *sep = "";
    for (uint32_t i = 0; i < TW_HIST_BUCKETS; i++) {
        if (!h->buckets[i])
            continue;
        fprintf(f, "%s[%llu, %llu, %llu]", sep, (unsigned long long)tw_hist_bucket_low(i),
                (unsigned long long)tw_hist_bucket_high(i), (unsigned long long)h->buckets[i]);
        sep = ", ";
    }
    fprintf(f, "]}");
}

/* The subset of the engine's stats JSON that the benchmark reads, under the same names. */
static void write_stats(const char *path, const struct tw_stats *s, const char *extra)
{
    char tmp[4096];
    struct timespec now;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        perror("kernel_rx: cannot write --stats-json");
        return;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    fprintf(f, "{\"time\": %.6f, \"frames\": %llu, \"packets\": %llu, \"messages\": %llu, "
               "\"gaps\": %llu, \"missing\": %llu, \"duplicates\": %llu, \"malformed\": %llu, "
               "%s, \"messages_by_type\": {",
            now.tv_sec + now.tv_nsec / 1e9, (unsigned long long)s->frames,
            (unsigned long long)s->packets, (unsigned long long)s->messages,
            (unsigned long long)s->gaps, (unsigned long long)s->missing,
            (unsigned long long)s->duplicates, (unsigned long long)s->malformed, extra);
    const char *sep = "";
    for (int c = 0; c < 128; c++) {
        if (s->messages_by_type[c]) {
            fprintf(f, "%s\"%c\": %llu", sep, c, (unsigned long long)s->messages_by_type[c]);
            sep = ", ";
        }
    }
    fprintf(f, "}, \"latency\": {\"exchange_to_engine\": {\"lines\": {\"A\": ");
    write_hist(f, &s->hist[TW_STAGE_EXCHANGE_TO_ENGINE][0]);
    fprintf(f, "}}}}\n");
    if (fclose(f) == 0)
        rename(tmp, path);
}

struct options {
    const char *iface, *group, *stats_path;
    int port, core, batch, busy_poll_usec, rcvbuf, wait;
    int64_t midnight_ns;
};

static void usage(void)
{
    fprintf(stderr, "usage: kernel_rx --iface IF --group G --port P --midnight-ns NS --stats-json PATH\n"
                    "                 [--core N] [--batch N] [--busy-poll-usec N (0: off)]\n"
                    "                 [--rcvbuf BYTES (0: the system default)] [--wait 0|1]\n");
    exit(2);
}

static void parse(int argc, char **argv, struct options *o)
{
    *o = (struct options){.core = -1, .batch = 64, .busy_poll_usec = 0, .rcvbuf = 8 << 20,
                          .midnight_ns = -1};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (!v)
            usage();
        i++;
        if (!strcmp(k, "--iface")) o->iface = v;
        else if (!strcmp(k, "--group")) o->group = v;
        else if (!strcmp(k, "--port")) o->port = atoi(v);
        else if (!strcmp(k, "--stats-json")) o->stats_path = v;
        else if (!strcmp(k, "--midnight-ns")) o->midnight_ns = strtoll(v, NULL, 10);
        else if (!strcmp(k, "--core")) o->core = atoi(v);
        else if (!strcmp(k, "--batch")) o->batch = atoi(v);
        else if (!strcmp(k, "--busy-poll-usec")) o->busy_poll_usec = atoi(v);
        else if (!strcmp(k, "--rcvbuf")) o->rcvbuf = atoi(v);
        else if (!strcmp(k, "--wait")) o->wait = atoi(v);
        else usage();
    }
    if (!o->iface || !o->group || !o->stats_path || o->port <= 0 || o->port > 65535 ||
        o->midnight_ns < 0)
        usage();
    if (o->batch < 1 || o->batch > MAX_BATCH)
        die("--batch must be 1..256");
}

/* Joins the group on the interface; returns what the kernel granted as a JSON fragment. */
static int open_socket(const struct options *o, char *granted, size_t len)
{
    int fd = socket(AF_INET, SOCK_DGRAM | (o->wait ? 0 : SOCK_NONBLOCK), 0), one = 1, got = 0;
    socklen_t gl = sizeof(got);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    struct ip_mreqn mreq = {0};

    if (fd < 0)
        die("socket() failed");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* Bound to the group, not INADDR_ANY: only this group's datagrams reach the socket. */
    if (inet_pton(AF_INET, o->group, &addr.sin_addr) != 1)
        die("--group is not an IPv4 address");
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)))
        die("bind() to the group and port failed");
    mreq.imr_multiaddr = addr.sin_addr;
    mreq.imr_ifindex = (int)if_nametoindex(o->iface);
    if (!mreq.imr_ifindex)
        die("no such interface (--iface)");
    if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof(mreq)))
        die("IP_ADD_MEMBERSHIP failed");
    /* FORCE bypasses net.core.rmem_max (we run as root); fall back to the capped request. */
    if (o->rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &o->rcvbuf, sizeof(int)))
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o->rcvbuf, sizeof(int));
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &gl);
    int busy_ok = o->busy_poll_usec <= 0 ||
                  (!setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL, &o->busy_poll_usec, sizeof(int)) &&
                   !setsockopt(fd, SOL_SOCKET, SO_PREFER_BUSY_POLL, &one, sizeof(one)));
    snprintf(granted, len, "\"rcvbuf_bytes\": %d, \"busy_poll_usec\": %d, \"busy_poll_applied\": %s, "
                           "\"core\": %d, \"batch\": %d, \"waits\": \"%s\"",
             got, o->busy_poll_usec, busy_ok ? "true" : "false", o->core, o->batch,
             o->wait ? "blocking" : "spinning");
    return fd;
}

int main(int argc, char **argv)
{
    static uint8_t bufs[MAX_BATCH][MAX_DATAGRAM];
    static struct mmsghdr msgs[MAX_BATCH];
    static struct iovec iov[MAX_BATCH];
    struct options o;
    char err[256], granted[512];
    struct tw_decoder_config cfg = {.n_lines = 1};
    struct sigaction usr1 = {.sa_handler = on_usr1}, stop = {.sa_handler = on_stop};

    parse(argc, argv, &o);
    if (o.core >= 0) {
        cpu_set_t set;

        CPU_ZERO(&set);
        CPU_SET(o.core, &set);
        if (sched_setaffinity(0, sizeof(set), &set))
            die("cannot pin to --core");
    }
    inet_pton(AF_INET, o.group, &cfg.lines[0].group_be);
    cfg.lines[0].port_be = htons((uint16_t)o.port);
    cfg.exchange_midnight_realtime_ns = o.midnight_ns;
    struct tw_decoder *d = tw_decoder_new(&cfg, err, sizeof(err));
    if (!d)
        die(err);
    int fd = open_socket(&o, granted, sizeof(granted));
    sigaction(SIGUSR1, &usr1, NULL);
    sigaction(SIGTERM, &stop, NULL);
    sigaction(SIGINT, &stop, NULL);
    for (int i = 0; i < MAX_BATCH; i++) {
        iov[i] = (struct iovec){.iov_base = bufs[i], .iov_len = MAX_DATAGRAM};
        msgs[i].msg_hdr = (struct msghdr){.msg_iov = &iov[i], .msg_iovlen = 1};
    }
    write_stats(o.stats_path, tw_decoder_stats(d), granted); /* "ready" */

    while (!want_stop) {
        /* Spinning: never wait. Blocking: sleep until one datagram is there, then take what
         * else is queued (MSG_WAITFORONE); SIGUSR1 interrupts the wait (no SA_RESTART). */
        int n = recvmmsg(fd, msgs, (unsigned)o.batch, o.wait ? MSG_WAITFORONE : MSG_DONTWAIT, NULL);

        if (n > 0) {
            struct tw_clock now = read_clocks();
            for (int i = 0; i < n; i++)
                tw_decode_mold(d, 0, bufs[i], msgs[i].msg_len, 0, &now);
            tw_decoder_tick(d, &now);
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            perror("kernel_rx: recvmmsg");
            return 3;
        }
        if (want_snapshot) {
            want_snapshot = 0;
            write_stats(o.stats_path, tw_decoder_stats(d), granted);
        }
    }
    tw_decoder_flush(d);
    write_stats(o.stats_path, tw_decoder_stats(d), granted);
    tw_decoder_free(d);
    close(fd);
    return 0;
}
