/* publisher.c - the benchmark's exchange: MoldUDP64/ITCH 5.0 packets onto a veth, rate-paced.
 *
 * The Python feed (tickwire-feed) tops out at a few hundred thousand packets per second, which
 * is below what the contenders can take, so the rate search needs this. It sends prepared
 * packets (a template file made by bench/template.py from tickwire_feed's market model) in a
 * loop, giving each a fresh MoldUDP64 sequence number and stamping every ITCH message with the
 * send time: CLOCK_REALTIME nanoseconds since the exchange's midnight, read once per batch just
 * before sendmmsg(). Receivers subtract that from their own CLOCK_REALTIME on arrival; same host,
 * same clock.
 *
 * Frames go out through an AF_PACKET socket with PACKET_QDISC_BYPASS: the Ethernet/IPv4/UDP
 * headers are built here, so the sender pays no UDP/IP stack and no qdisc, and the CPU it
 * shares with the veth's receive softirq is spent on the receive side. The UDP checksum is 0
 * (allowed for IPv4: "no checksum").
 *
 * Template file: repeated [uint16 little-endian length][MoldUDP64 payload]; the payload's
 * sequence number and ITCH timestamps are overwritten at send time.
 *
 * Output: one JSON object on stdout (packets, messages, by type, rate achieved, CPU time).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 256
#define MAX_TEMPLATE_PACKETS 65536
#define MAX_PAYLOAD 1400
#define MAX_MSGS_PER_PACKET 64
#define HEADERS_LEN (sizeof(struct ether_header) + sizeof(struct iphdr) + sizeof(struct udphdr))
#define MOLD_HEADER_LEN 20
#define MOLD_SEQ_OFFSET 10
#define MOLD_COUNT_OFFSET 18
#define ITCH_TIMESTAMP_OFFSET 5

struct template_packet {
    uint16_t len;
    uint16_t n_msgs;
    uint16_t msg_offsets[MAX_MSGS_PER_PACKET]; /* of each message's type byte in the payload */
    uint8_t payload[MAX_PAYLOAD];
};

struct options {
    const char *iface, *template_path, *src_ip, *group;
    int port, src_port, core, batch;
    double rate_pps, duration_s;
    uint64_t packets, start_seq;
    int64_t midnight_ns;
};

static void die(const char *what)
{
    fprintf(stderr, "publisher: %s\n", what);
    exit(2);
}

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void put_be48(uint8_t *p, uint64_t v)
{
    for (int i = 5; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint16_t ip_checksum(const void *data, size_t len)
{
    const uint16_t *w = data;
    uint32_t sum = 0;

    for (; len > 1; len -= 2)
        sum += *w++;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* Reads the template and checks every block, so a bad file fails here, not on the wire. */
static struct template_packet *load_template(const char *path, uint32_t *count)
{
    FILE *f = fopen(path, "rb");
    struct template_packet *t = calloc(MAX_TEMPLATE_PACKETS, sizeof(*t));
    uint8_t lenbuf[2];
    uint32_t n = 0;

    if (!f)
        die("cannot open the template file (make it with bench/template.py)");
    if (!t)
        die("out of memory");
    while (fread(lenbuf, 1, 2, f) == 2) {
        struct template_packet *p = &t[n];
        uint32_t off = MOLD_HEADER_LEN;

        if (n == MAX_TEMPLATE_PACKETS)
            die("template has more than 65536 packets");
        p->len = (uint16_t)(lenbuf[0] | lenbuf[1] << 8);
        if (p->len < MOLD_HEADER_LEN || p->len > MAX_PAYLOAD || fread(p->payload, 1, p->len, f) != p->len)
            die("template packet truncated or longer than 1400 bytes");
        p->n_msgs = (uint16_t)(p->payload[MOLD_COUNT_OFFSET] << 8 | p->payload[MOLD_COUNT_OFFSET + 1]);
        if (p->n_msgs == 0 || p->n_msgs > MAX_MSGS_PER_PACKET)
            die("template packet must carry 1..64 messages");
        for (uint32_t i = 0; i < p->n_msgs; i++) {
            uint32_t mlen;

            if (off + 2 > p->len)
                die("template message block runs past its packet");
            mlen = (uint32_t)p->payload[off] << 8 | p->payload[off + 1];
            if (mlen < ITCH_TIMESTAMP_OFFSET + 6 || off + 2 + mlen > p->len)
                die("template ITCH message too short or past its packet");
            p->msg_offsets[i] = (uint16_t)(off + 2);
            off += 2 + mlen;
        }
        n++;
    }
    fclose(f);
    if (n == 0)
        die("template file is empty");
    *count = n;
    return t;
}

static int open_socket(const struct options *o, struct sockaddr_ll *to, uint8_t mac[6])
{
    int fd = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: send only, never receive */
    int one = 1;
    struct ifreq ifr = {0};

    if (fd < 0)
        die("socket(AF_PACKET) failed: run as root (CAP_NET_RAW)");
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", o->iface);
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0)
        die("no such interface (--iface)");
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) < 0)
        perror("publisher: PACKET_QDISC_BYPASS refused, going through the qdisc");
    memset(to, 0, sizeof(*to));
    to->sll_family = AF_PACKET;
    to->sll_ifindex = (int)if_nametoindex(o->iface);
    to->sll_halen = 6;
    return fd;
}

/* Ethernet + IPv4 + UDP headers for a payload of `len` bytes, written in front of it. */
static void build_headers(uint8_t *frame, const struct options *o, const uint8_t src_mac[6],
                          uint32_t len)
{
    struct ether_header *eth = (struct ether_header *)frame;
    struct iphdr *ip = (struct iphdr *)(eth + 1);
    struct udphdr *udp = (struct udphdr *)(ip + 1);
    uint32_t group = inet_addr(o->group), g = ntohl(group);

    /* IPv4 multicast MAC: 01:00:5e + the low 23 bits of the group. */
    uint8_t dst[6] = {0x01, 0x00, 0x5e, (uint8_t)((g >> 16) & 0x7f), (uint8_t)(g >> 8), (uint8_t)g};
    memcpy(eth->ether_dhost, dst, 6);
    memcpy(eth->ether_shost, src_mac, 6);
    eth->ether_type = htons(ETHERTYPE_IP);
    memset(ip, 0, sizeof(*ip));
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 16;
    ip->protocol = IPPROTO_UDP;
    ip->tot_len = htons((uint16_t)(sizeof(*ip) + sizeof(*udp) + len));
    ip->saddr = inet_addr(o->src_ip);
    ip->daddr = group;
    ip->check = ip_checksum(ip, sizeof(*ip));
    udp->source = htons((uint16_t)o->src_port);
    udp->dest = htons((uint16_t)o->port);
    udp->len = htons((uint16_t)(sizeof(*udp) + len));
    udp->check = 0;
}

static double cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: publisher --iface IF --src-ip A --group G --port P --template FILE\n"
            "                 --midnight-ns NS (--packets N | --duration S) [--rate PPS (0: flat out)]\n"
            "                 [--start-seq N] [--core N] [--batch N] [--src-port N]\n");
    exit(2);
}

static void parse(int argc, char **argv, struct options *o)
{
    *o = (struct options){.port = 0, .src_port = 40000, .core = -1, .batch = 32, .start_seq = 1,
                          .midnight_ns = -1};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (!v)
            usage();
        i++;
        if (!strcmp(k, "--iface")) o->iface = v;
        else if (!strcmp(k, "--src-ip")) o->src_ip = v;
        else if (!strcmp(k, "--group")) o->group = v;
        else if (!strcmp(k, "--port")) o->port = atoi(v);
        else if (!strcmp(k, "--src-port")) o->src_port = atoi(v);
        else if (!strcmp(k, "--template")) o->template_path = v;
        else if (!strcmp(k, "--rate")) o->rate_pps = atof(v);
        else if (!strcmp(k, "--packets")) o->packets = strtoull(v, NULL, 10);
        else if (!strcmp(k, "--duration")) o->duration_s = atof(v);
        else if (!strcmp(k, "--start-seq")) o->start_seq = strtoull(v, NULL, 10);
        else if (!strcmp(k, "--midnight-ns")) o->midnight_ns = strtoll(v, NULL, 10);
        else if (!strcmp(k, "--core")) o->core = atoi(v);
        else if (!strcmp(k, "--batch")) o->batch = atoi(v);
        else usage();
    }
    if (!o->iface || !o->src_ip || !o->group || !o->template_path || o->port <= 0 ||
        o->port > 65535 || o->midnight_ns < 0 || (!o->packets && o->duration_s <= 0))
        usage();
    if (o->batch < 1 || o->batch > MAX_BATCH)
        die("--batch must be 1..256");
    if (inet_addr(o->group) == INADDR_NONE || (ntohl(inet_addr(o->group)) >> 28) != 0xe)
        die("--group must be an IPv4 multicast address");
}

int main(int argc, char **argv)
{
    static uint8_t frames[MAX_BATCH][HEADERS_LEN + MAX_PAYLOAD];
    static struct mmsghdr msgs[MAX_BATCH];
    static struct iovec iov[MAX_BATCH];
    struct options o;
    struct sockaddr_ll to;
    uint8_t mac[6];
    uint32_t n_template, next_template = 0;
    uint64_t by_type[128] = {0}, sent = 0, messages = 0, send_errors = 0, seq;
    int fd;

    parse(argc, argv, &o);
    struct template_packet *t = load_template(o.template_path, &n_template);
    if (o.core >= 0) {
        cpu_set_t set;

        CPU_ZERO(&set);
        CPU_SET(o.core, &set);
        if (sched_setaffinity(0, sizeof(set), &set))
            die("cannot pin to --core");
    }
    fd = open_socket(&o, &to, mac);
    for (int i = 0; i < MAX_BATCH; i++) {
        iov[i].iov_base = frames[i];
        msgs[i].msg_hdr = (struct msghdr){.msg_name = &to, .msg_namelen = sizeof(to),
                                          .msg_iov = &iov[i], .msg_iovlen = 1};
    }

    double cpu0 = cpu_seconds();
    uint64_t start = now_ns(CLOCK_MONOTONIC);
    uint64_t end = o.duration_s > 0 ? start + (uint64_t)(o.duration_s * 1e9) : UINT64_MAX;
    uint64_t limit = o.packets ? o.packets : UINT64_MAX;
    uint64_t last = start;
    seq = o.start_seq;

    while (sent < limit) {
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        uint64_t due = limit - sent;

        if (now >= end)
            break;
        if (o.rate_pps > 0) {
            /* Packets owed by now on a steady schedule; spin until at least one is. */
            uint64_t owed = (uint64_t)((double)(now - start) * o.rate_pps / 1e9) + 1;
            if (owed <= sent)
                continue;
            due = owed - sent < due ? owed - sent : due;
        }
        uint32_t n = due < (uint64_t)o.batch ? (uint32_t)due : (uint32_t)o.batch;
        uint64_t stamp = now_ns(CLOCK_REALTIME) - (uint64_t)o.midnight_ns;

        for (uint32_t i = 0; i < n; i++) {
            const struct template_packet *p = &t[next_template];
            uint8_t *payload = frames[i] + HEADERS_LEN;

            next_template = next_template + 1 == n_template ? 0 : next_template + 1;
            build_headers(frames[i], &o, mac, p->len);
            memcpy(payload, p->payload, p->len);
            put_be64(payload + MOLD_SEQ_OFFSET, seq);
            for (uint32_t m = 0; m < p->n_msgs; m++) {
                put_be48(payload + p->msg_offsets[m] + ITCH_TIMESTAMP_OFFSET, stamp);
                by_type[payload[p->msg_offsets[m]] & 0x7f]++;
            }
            iov[i].iov_len = HEADERS_LEN + p->len;
            seq += p->n_msgs;
            messages += p->n_msgs;
        }
        /* Retry the rest of a partial batch: the numbers are taken, a gap would be our fault. */
        for (uint32_t done = 0; done < n;) {
            int r = sendmmsg(fd, msgs + done, n - done, 0);
            if (r > 0) {
                done += (uint32_t)r;
            } else if (errno == ENOBUFS || errno == EAGAIN || errno == EINTR) {
                send_errors++;
                sched_yield();
            } else {
                perror("publisher: sendmmsg");
                exit(3);
            }
        }
        sent += n;
        last = now_ns(CLOCK_MONOTONIC);
    }

    double elapsed = (double)(last - start) / 1e9;
    printf("{\"packets\": %llu, \"messages\": %llu, \"next_seq\": %llu, \"elapsed_s\": %.6f, "
           "\"target_pkts_per_s\": %.1f, \"pkts_per_s\": %.1f, \"msgs_per_s\": %.1f, "
           "\"send_retries\": %llu, \"cpu_s\": %.4f, \"messages_by_type\": {",
           (unsigned long long)sent, (unsigned long long)messages, (unsigned long long)seq,
           elapsed, o.rate_pps, elapsed > 0 ? sent / elapsed : 0.0,
           elapsed > 0 ? messages / elapsed : 0.0, (unsigned long long)send_errors,
           cpu_seconds() - cpu0);
    const char *sep = "";
    for (int c = 0; c < 128; c++) {
        if (by_type[c]) {
            printf("%s\"%c\": %llu", sep, c, (unsigned long long)by_type[c]);
            sep = ", ";
        }
    }
    printf("}}\n");
    close(fd);
    free(t);
    return 0;
}
