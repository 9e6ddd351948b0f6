/* blast.c - the loader of the in-kernel feed generator (native/bpf/blast.bpf.c).
 *
 * A user-space sender tops out near 350k packets/s on a small VM: every packet pays a syscall's
 * share, an skb and the qdisc layer. BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES instead
 * runs an XDP program on `repeat` frames inside one call and sends each where the program
 * redirects it, here onto the exchange side of a veth pair, so a single core reaches millions of
 * frames per second. This program prepares the frames, loads the generator, paces the calls and
 * prints the ledger: what was sent, counted by the XDP program itself.
 *
 *   blast --iface IF --pool FILE --src-ip A --group G --port P --midnight-ns NS --packets N
 *         [--rate PPS] [--start-seq N] [--core N] [--idle-iface IF] [--burst N]
 *         [--kernel-batch N] [--bpf-object PATH] [--duration S]
 *
 * Pool file (bench/template.py, tickwire_feed.pool): repeated [uint16 little-endian length]
 * [MoldUDP64 payload]. Frame i of the run carries pool entry i % entries; the program writes the
 * sequence numbers (from --start-seq on) and stamps every ITCH message with CLOCK_REALTIME
 * nanoseconds since --midnight-ns, taken when the frame is built.
 *
 * Two traps (measured on kernel 6.x, see docs): (1) a test run with repeat > 1 swaps the program
 * into the kernel's XDP dispatcher and back, ~25 ms per call, unless the program is also attached
 * in native mode somewhere: --idle-iface names an interface that carries no traffic for that;
 * (2) veth drops redirected frames silently unless its peer has a native XDP program or GRO on.
 * The caller sets up (2); veth keeps no counter of those drops, so a second, tracepoint program
 * in the same object counts what the device refused ("refused" in the output), exactly.
 *
 * Output: one JSON object on stdout, the same keys bench/publisher.c prints.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_link.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include "blast.h"

#define MOLD_HEADER_LEN 20
#define MOLD_COUNT_OFFSET 18
#define MAX_PAYLOAD (BLAST_MAX_FRAME - BLAST_HEADERS_LEN)

struct pool {
	struct blast_entry *entries;
	uint32_t n;
	uint64_t (*by_type)[128];   /* per entry: messages of each type */
	uint64_t total_by_type[128];
};

struct options {
	const char *iface, *idle_iface, *pool_path, *src_ip, *group, *bpf_object;
	int port, src_port, core, burst, kernel_batch;
	double rate_pps, duration_s;
	uint64_t packets, start_seq;
	int64_t midnight_ns;
};

static volatile sig_atomic_t stopping;

static void on_stop(int sig) { (void)sig; stopping = 1; }

static void die(const char *what)
{
	fprintf(stderr, "blast: %s\n", what);
	exit(2);
}

static void die_errno(const char *what, int err)
{
	fprintf(stderr, "blast: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(err == EPERM || -err == EPERM ? 2 : 3);
}

static uint64_t now_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
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

/* Ethernet (to the group's multicast MAC) + IPv4 + UDP headers in front of a payload. */
static void build_headers(uint8_t *frame, const struct options *o, const uint8_t src_mac[6], uint32_t len)
{
	struct ether_header *eth = (struct ether_header *)frame;
	struct iphdr *ip = (struct iphdr *)(eth + 1);
	struct udphdr *udp = (struct udphdr *)(ip + 1);
	uint32_t group = inet_addr(o->group), g = ntohl(group);
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
	udp->check = 0; /* IPv4 allows "no checksum"; the sequence numbers change in flight */
}

/* Reads the pool and checks every block, so a bad file fails here, not on the wire. */
static void load_pool(const struct options *o, const uint8_t mac[6], struct pool *pool)
{
	FILE *f = fopen(o->pool_path, "rb");
	uint8_t lenbuf[2], payload[MAX_PAYLOAD];

	if (!f)
		die("cannot open the --pool file");
	pool->entries = calloc(BLAST_POOL_MAX, sizeof(*pool->entries));
	pool->by_type = calloc(BLAST_POOL_MAX, sizeof(*pool->by_type));
	if (!pool->entries || !pool->by_type)
		die("out of memory");
	while (fread(lenbuf, 1, 2, f) == 2) {
		struct blast_entry *e = &pool->entries[pool->n];
		uint32_t len = (uint32_t)(lenbuf[0] | lenbuf[1] << 8), off = MOLD_HEADER_LEN;

		if (pool->n == BLAST_POOL_MAX)
			die("pool has more than 8192 packets");
		if (len < MOLD_HEADER_LEN || len > MAX_PAYLOAD || fread(payload, 1, len, f) != len)
			die("pool packet truncated or longer than 1472 bytes");
		e->n_msgs = (uint16_t)(payload[MOLD_COUNT_OFFSET] << 8 | payload[MOLD_COUNT_OFFSET + 1]);
		if (e->n_msgs == 0 || e->n_msgs > BLAST_MAX_MSGS)
			die("pool packet must carry 1..32 messages");
		for (uint32_t i = 0; i < e->n_msgs; i++) {
			uint32_t mlen;

			if (off + 2 > len)
				die("pool message block runs past its packet");
			mlen = (uint32_t)payload[off] << 8 | payload[off + 1];
			if (mlen < BLAST_ITCH_TIMESTAMP_OFFSET + 6 || off + 2 + mlen > len)
				die("pool ITCH message too short or past its packet");
			e->stamp_off[i] = (uint16_t)(BLAST_HEADERS_LEN + off + 2 + BLAST_ITCH_TIMESTAMP_OFFSET);
			pool->by_type[pool->n][payload[off + 2] & 0x7f]++;
			pool->total_by_type[payload[off + 2] & 0x7f]++;
			off += 2 + mlen;
		}
		build_headers(e->frame, o, mac, len);
		memcpy(e->frame + BLAST_HEADERS_LEN, payload, len);
		e->len = (uint16_t)(BLAST_HEADERS_LEN + len);
		pool->n++;
	}
	fclose(f);
	if (pool->n == 0)
		die("pool file is empty");
}

/* Messages by type in frames 0..frames-1: frame i carried entry i % n. */
static void ledger_by_type(const struct pool *pool, uint64_t frames, uint64_t out[128])
{
	uint64_t rounds = frames / pool->n, rest = frames % pool->n;

	for (int t = 0; t < 128; t++)
		out[t] = rounds * pool->total_by_type[t];
	for (uint64_t i = 0; i < rest; i++)
		for (int t = 0; t < 128; t++)
			out[t] += pool->by_type[i][t];
}

static void iface_mac(const char *name, uint8_t mac[6])
{
	struct ifreq ifr = {0};
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (fd < 0 || ioctl(fd, SIOCGIFHWADDR, &ifr) < 0)
		die("no such interface (--iface)");
	memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
	close(fd);
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
		"usage: blast --iface IF --pool FILE --src-ip A --group G --port P --midnight-ns NS\n"
		"             (--packets N | --duration S) [--rate PPS (0: flat out)] [--start-seq N]\n"
		"             [--core N] [--idle-iface IF] [--burst N] [--kernel-batch N]\n"
		"             [--src-port N] [--bpf-object PATH]\n");
	exit(2);
}

static void parse(int argc, char **argv, struct options *o)
{
	*o = (struct options){.src_port = 40000, .core = -1, .burst = 256, .kernel_batch = 64,
			      .start_seq = 1, .midnight_ns = -1, .bpf_object = "blast.bpf.o"};
	for (int i = 1; i < argc; i++) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			usage();
		i++;
		if (!strcmp(k, "--iface")) o->iface = v;
		else if (!strcmp(k, "--idle-iface")) o->idle_iface = v;
		else if (!strcmp(k, "--pool")) o->pool_path = v;
		else if (!strcmp(k, "--src-ip")) o->src_ip = v;
		else if (!strcmp(k, "--group")) o->group = v;
		else if (!strcmp(k, "--port")) o->port = atoi(v);
		else if (!strcmp(k, "--src-port")) o->src_port = atoi(v);
		else if (!strcmp(k, "--rate")) o->rate_pps = atof(v);
		else if (!strcmp(k, "--packets")) o->packets = strtoull(v, NULL, 10);
		else if (!strcmp(k, "--duration")) o->duration_s = atof(v);
		else if (!strcmp(k, "--start-seq")) o->start_seq = strtoull(v, NULL, 10);
		else if (!strcmp(k, "--midnight-ns")) o->midnight_ns = strtoll(v, NULL, 10);
		else if (!strcmp(k, "--core")) o->core = atoi(v);
		else if (!strcmp(k, "--burst")) o->burst = atoi(v);
		else if (!strcmp(k, "--kernel-batch")) o->kernel_batch = atoi(v);
		else if (!strcmp(k, "--bpf-object")) o->bpf_object = v;
		else usage();
	}
	if (!o->iface || !o->pool_path || !o->src_ip || !o->group || o->port <= 0 || o->port > 65535 ||
	    o->midnight_ns < 0 || (!o->packets && o->duration_s <= 0) || o->rate_pps < 0)
		usage();
	if (o->burst < 1 || o->burst > 1 << 20)
		die("--burst must be 1..1048576 frames per call");
	if (o->kernel_batch < 1 || o->kernel_batch > 256)
		die("--kernel-batch must be 1..256 (the kernel's limit for live frames)");
	if (inet_addr(o->group) == INADDR_NONE || (ntohl(inet_addr(o->group)) >> 28) != 0xe)
		die("--group must be an IPv4 multicast address");
	if (inet_addr(o->src_ip) == INADDR_NONE)
		die("--src-ip must be an IPv4 address");
}

static struct bpf_map *bss_map(struct bpf_object *obj)
{
	struct bpf_map *map;

	bpf_object__for_each_map(map, obj) {
		const char *name = bpf_map__name(map);
		size_t n = strlen(name);

		if (n >= 4 && !strcmp(name + n - 4, ".bss"))
			return map;
	}
	return NULL;
}

static void pin(int core)
{
	cpu_set_t set;

	if (core < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(core, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("cannot pin to --core");
}

/* Waits until `due_ns` (CLOCK_MONOTONIC): sleeps when it is far, spins the last 60 us. */
static void wait_until(uint64_t due_ns)
{
	for (;;) {
		uint64_t now = now_ns(CLOCK_MONOTONIC);

		if (now >= due_ns || stopping)
			return;
		if (due_ns - now > 150000) {
			uint64_t nap = due_ns - now - 60000;
			struct timespec ts = {.tv_sec = (time_t)(nap / 1000000000ull),
					      .tv_nsec = (long)(nap % 1000000000ull)};
			nanosleep(&ts, NULL);
		}
	}
}

int main(int argc, char **argv)
{
	struct options o;
	struct pool pool = {0};
	uint8_t mac[6];
	struct sigaction stop = {.sa_handler = on_stop};

	parse(argc, argv, &o);
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	iface_mac(o.iface, mac);
	load_pool(&o, mac, &pool);
	int target = (int)if_nametoindex(o.iface);
	if (!target)
		die("no such interface (--iface)");

	struct bpf_object *obj = bpf_object__open_file(o.bpf_object, NULL);
	if (!obj)
		die_errno("cannot open the XDP object (--bpf-object)", errno);
	int err = bpf_object__load(obj);
	if (err)
		die_errno("cannot load the generator (needs root: CAP_BPF, CAP_NET_ADMIN)", err);
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, "blast");
	struct bpf_map *pool_map = bpf_object__find_map_by_name(obj, "blast_pool"), *bss = bss_map(obj);
	for (const char **name = (const char *[]){"count_redirect_err", "count_xmit_drops", NULL}; *name; name++) {
		struct bpf_program *counter = bpf_object__find_program_by_name(obj, *name);

		if (!counter || !bpf_program__attach(counter))
			die_errno("cannot attach the counters of refused frames (raw tracepoints)", errno);
	}
	if (!prog || !pool_map || !bss || bpf_map__value_size(bss) < sizeof(struct blast_state))
		die("the XDP object lacks the blast program, its pool or its globals");
	/* The globals, shared with the program: libbpf maps them for skeletons only, so map them
	 * here (libbpf creates .bss with BPF_F_MMAPABLE). */
	struct blast_state *state = mmap(NULL, bpf_map__value_size(bss), PROT_READ | PROT_WRITE,
					 MAP_SHARED, bpf_map__fd(bss), 0);
	if (state == MAP_FAILED)
		die_errno("cannot mmap the generator's globals", errno);
	int prog_fd = bpf_program__fd(prog);
	for (uint32_t i = 0; i < pool.n; i++) {
		err = bpf_map_update_elem(bpf_map__fd(pool_map), &i, &pool.entries[i], BPF_ANY);
		if (err)
			die_errno("cannot fill the pool map", err);
	}

	/* Trap (1): attached in native mode, the program stays in the XDP dispatcher between calls.
	 * A link, not a plain attach: it goes away with this process, however it ends. */
	int link_fd = -1;
	if (o.idle_iface) {
		int idle = (int)if_nametoindex(o.idle_iface);
		LIBBPF_OPTS(bpf_link_create_opts, lo, .flags = XDP_FLAGS_DRV_MODE);

		if (!idle)
			die("no such interface (--idle-iface)");
		link_fd = bpf_link_create(prog_fd, idle, BPF_XDP, &lo);
		if (link_fd < 0)
			die_errno("cannot attach the generator in native mode to --idle-iface", errno);
	}

	pin(o.core);
	sigaction(SIGTERM, &stop, NULL);
	sigaction(SIGINT, &stop, NULL);

	/* CLOCK_REALTIME = bpf_ktime_get_ns() (CLOCK_MONOTONIC) + offset; read as a pair, bracketed. */
	uint64_t m0 = now_ns(CLOCK_MONOTONIC), r = now_ns(CLOCK_REALTIME), m1 = now_ns(CLOCK_MONOTONIC);
	state->stamp_offset_ns = (int64_t)r - (int64_t)(m0 + (m1 - m0) / 2) - o.midnight_ns;
	state->next_seq = o.start_seq;
	state->frames = state->messages = state->aborted = state->refused = 0;
	state->loader_tgid = (uint32_t)getpid();
	state->target_ifindex = (uint32_t)target;
	state->pool_size = pool.n;

	uint64_t calls = 0, interrupted = 0;
	double cpu0 = cpu_seconds();
	uint64_t start = now_ns(CLOCK_MONOTONIC), last = start;
	uint64_t end = o.duration_s > 0 ? start + (uint64_t)(o.duration_s * 1e9) : UINT64_MAX;
	uint64_t limit = o.packets ? o.packets : UINT64_MAX;

	while (state->frames < limit && !stopping) {
		uint64_t now = now_ns(CLOCK_MONOTONIC), sent = state->frames, due = limit - sent;

		if (now >= end)
			break;
		if (o.rate_pps > 0) {
			/* Frames owed by now on a steady schedule; wait for the next one if none is. */
			uint64_t owed = (uint64_t)((double)(now - start) * o.rate_pps / 1e9) + 1;
			if (owed <= sent) {
				wait_until(start + (uint64_t)((double)sent * 1e9 / o.rate_pps));
				continue;
			}
			due = owed - sent < due ? owed - sent : due;
		}
		uint32_t n = due < (uint64_t)o.burst ? (uint32_t)due : (uint32_t)o.burst;
		LIBBPF_OPTS(bpf_test_run_opts, run, .data_in = pool.entries[0].frame,
			    .data_size_in = pool.entries[0].len, .repeat = n,
			    .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = (uint32_t)o.kernel_batch);
		err = bpf_prog_test_run_opts(prog_fd, &run);
		calls++;
		if (err && errno == EINTR) {
			interrupted++;   /* a signal cut the call short: the counters say what went out */
		} else if (err) {
			die_errno("BPF_PROG_TEST_RUN (live frames needs kernel >= 5.18)", errno);
		}
		if (state->aborted)
			die("the generator aborted frames: the pool map and its globals disagree");
		last = now_ns(CLOCK_MONOTONIC);
	}

	uint64_t frames = state->frames, messages = state->messages, by_type[128];
	double elapsed = (double)(last - start) / 1e9;
	ledger_by_type(&pool, frames, by_type);
	printf("{\"packets\": %llu, \"messages\": %llu, \"next_seq\": %llu, \"elapsed_s\": %.6f, "
	       "\"target_pkts_per_s\": %.1f, \"pkts_per_s\": %.1f, \"msgs_per_s\": %.1f, "
	       "\"calls\": %llu, \"interrupted_calls\": %llu, \"refused\": %llu, "
	       "\"pool_packets\": %u, \"cpu_s\": %.4f, \"messages_by_type\": {",
	       (unsigned long long)frames, (unsigned long long)messages,
	       (unsigned long long)state->next_seq, elapsed, o.rate_pps,
	       elapsed > 0 ? frames / elapsed : 0.0, elapsed > 0 ? messages / elapsed : 0.0,
	       (unsigned long long)calls, (unsigned long long)interrupted,
	       (unsigned long long)state->refused, pool.n, cpu_seconds() - cpu0);
	const char *sep = "";
	for (int c = 0; c < 128; c++) {
		if (by_type[c]) {
			printf("%s\"%c\": %llu", sep, c, (unsigned long long)by_type[c]);
			sep = ", ";
		}
	}
	printf("}}\n");
	if (link_fd >= 0)
		close(link_fd);
	bpf_object__close(obj);
	return 0;
}
