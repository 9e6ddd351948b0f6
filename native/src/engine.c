/* engine.c - the AF_XDP receive engine: UMEM and rings, the poll thread.
 *
 * Set-up order matters: the socket exists and its fill ring is fully stocked before the engine
 * joins the interface's shared steering program (steering.c), so no matching frame is ever
 * redirected to a socket without frames to receive into. An engine killed with SIGKILL leaves
 * its flows in the shared maps; its socket leaves the XSKMAP as the kernel closes it (frames of
 * its flows then go to the kernel), and the next engine on the interface sweeps the flows.
 *
 * The poll thread is the only writer of the decoder's counters. Readers get a copy that the
 * thread publishes every few milliseconds (and whenever it goes idle) under a sequence lock, so a
 * reader never blocks the thread and the thread never waits for a reader.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <linux/types.h>
#include <net/if.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#include "fail.h"
#include "../bpf/steer_meta.h"
#include "caps.h"
#include "steering.h"
#include "reqsock.h"
#include "tickwire.h"

#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif

#define TW_PROG_NAME "tw_steer"
#define HUGEPAGE_SIZE (2u << 20)
#define PUBLISH_INTERVAL_NS 2000000ull   /* stats copy for readers at least every 2 ms */
/* Going idle publishes too (readers see final counts promptly), but not more often than this:
 * the copy is ~33 KB, and at high rates the ring empties between almost every pair of batches. */
#define IDLE_PUBLISH_NS 200000ull
#define IDLE_WAIT_MS 50                  /* poll() timeout in wait mode: bounds stop latency */
/* Holes age on time, not on traffic: while the ring is empty the decoder is ticked this often, so
 * a hole opened just before the feed went quiet still becomes a gap after the arbitration window.
 * In wait mode poll() then sleeps at most HOLE_WAIT_MS while a hole is pending. */
#define HOLE_TICK_NS 1000000ull
#define HOLE_WAIT_MS 1
#define BUSY_RETRY_NS 2000000000ull      /* EBUSY on socket create: the kernel frees an old one */
/* With no request outstanding the re-request socket is still drained this often: a late answer
 * is read and counted instead of waiting in the socket for the next gap. */
#define REPLY_DRAIN_NS 1000000ull

struct tw_engine {
	struct tw_engine_config cfg;
	struct tw_decoder *decoder;
	struct tw_books *books;             /* NULL unless books_enabled (book.c) */
	int ifindex;

	void *umem_area;
	size_t umem_size;
	struct xsk_umem *umem;
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp;
	struct xsk_ring_cons rx;
	struct xsk_ring_prod tx;
	struct xsk_socket *xsk;

	struct tw_steering *steering;       /* this engine's part of the interface's XDP program */

	pthread_t thread;
	int thread_started;
	atomic_int stop;

	int kick_when_idle;                 /* busy poll: recvfrom() on an empty ring drives NAPI */
	struct tw_reqsock reqsock;          /* MoldUDP64 re-requests (fd -1 when off) */
	uint64_t last_reply_drain;
	struct tw_loop_stats loop;          /* poll thread's own counters */
	/* Published copy for readers, guarded by `seq` (odd while the poll thread writes it). */
	atomic_uint_fast64_t seq;
	struct tw_stats published;
	struct tw_loop_stats published_loop;

	struct tw_engine_info info;
	/* The ring counters as the socket closed: what the run lost stays readable after stop. */
	struct tw_ring_stats final_ring;
	int have_final_ring;
};

static void note_fallback(struct tw_engine *e, const char *what)
{
	size_t used = strlen(e->info.fallback);

	snprintf(e->info.fallback + used, sizeof(e->info.fallback) - used, "%s%s",
		 used ? "; " : "", what);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* ---- set-up ---------------------------------------------------------------------------------- */

static int alloc_umem_area(struct tw_engine *e)
{
	size_t size = (size_t)e->cfg.frame_count * e->cfg.frame_size;

	if (e->cfg.hugepages) {
		size_t huge = (size + HUGEPAGE_SIZE - 1) & ~(size_t)(HUGEPAGE_SIZE - 1);
		void *area = mmap(NULL, huge, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);

		if (area != MAP_FAILED) {
			e->umem_area = area;
			e->umem_size = huge;
			e->info.hugepages = 1;
			return 0;
		}
		note_fallback(e, "no free 2 MiB hugepages for the UMEM: using 4 KiB pages");
	}
	e->umem_area = mmap(NULL, size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (e->umem_area == MAP_FAILED) {
		e->umem_area = NULL;
		return -errno;
	}
	e->umem_size = size;
	return 0;
}

static int create_umem(struct tw_engine *e, char *err, size_t errlen)
{
	struct xsk_umem_config ucfg = {
		.fill_size = e->cfg.frame_count, /* room for every frame: all are stocked at once */
		.comp_size = e->cfg.ring_size,
		.frame_size = e->cfg.frame_size,
		.frame_headroom = 0,
		.flags = 0,
	};
	int ret = alloc_umem_area(e);

	if (ret)
		return tw_fail(err, errlen, ret, "UMEM: cannot map %u frames of %u bytes: %s",
			    e->cfg.frame_count, e->cfg.frame_size, strerror(-ret));
	ret = xsk_umem__create(&e->umem, e->umem_area, e->umem_size, &e->fill, &e->comp, &ucfg);
	if (ret) {
		/* EPERM: the AF_XDP socket the UMEM is registered on (socket() needs CAP_NET_RAW);
		 * ENOBUFS: the pages charged to RLIMIT_MEMLOCK, which CAP_IPC_LOCK exempts from. */
		static const int need[] = { CAP_NET_RAW, -1 };
		char why[400] = "";

		if (ret == -EPERM)
			tw_caps_explain(why, sizeof(why), need, "open an AF_XDP socket");
		else if (ret == -ENOBUFS)
			tw_memlock_explain(why, sizeof(why), e->umem_size);
		return tw_fail(err, errlen, ret, "UMEM: registration failed: %s%s", strerror(-ret), why);
	}
	e->info.umem_bytes = e->umem_size;
	return 0;
}

static int xsk_create_retrying(struct tw_engine *e, struct xsk_socket_config *xcfg)
{
	uint64_t deadline = mono_ns() + BUSY_RETRY_NS;
	int ret;

	for (;;) {
		ret = xsk_socket__create(&e->xsk, e->cfg.ifname, e->cfg.queue, e->umem,
					 &e->rx, &e->tx, xcfg);
		if (ret != -EBUSY || mono_ns() > deadline)
			return ret;
		usleep(20000);
	}
}

static int create_socket(struct tw_engine *e, char *err, size_t errlen)
{
	struct xsk_socket_config xcfg = {
		.rx_size = e->cfg.ring_size,
		.tx_size = e->cfg.ring_size,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.xdp_flags = 0,
		.bind_flags = XDP_USE_NEED_WAKEUP,
	};
	struct xdp_options opts;
	socklen_t optlen = sizeof(opts);
	int ret;

	if (e->cfg.zero_copy == TW_ZC_OFF) {
		xcfg.bind_flags |= XDP_COPY;
		ret = xsk_create_retrying(e, &xcfg);
	} else {
		xcfg.bind_flags |= XDP_ZEROCOPY;
		ret = xsk_create_retrying(e, &xcfg);
		if (ret && e->cfg.zero_copy == TW_ZC_AUTO) {
			char why[128];

			snprintf(why, sizeof(why), "zero-copy refused by %s (%s): copy mode",
				 e->cfg.ifname, strerror(-ret));
			note_fallback(e, why);
			xcfg.bind_flags = XDP_USE_NEED_WAKEUP | XDP_COPY;
			ret = xsk_create_retrying(e, &xcfg);
		} else if (ret) {
			return tw_fail(err, errlen, ret,
				    "zero-copy required but %s queue %u refused it: %s "
				    "(the driver lacks AF_XDP zero-copy; use --zero-copy auto or off)",
				    e->cfg.ifname, e->cfg.queue, strerror(-ret));
		}
	}
	if (ret) {
		static const int need[] = { CAP_NET_RAW, -1 };
		char why[200] = "";

		if (ret == -EINVAL)
			snprintf(why, sizeof(why), " (queue out of range?)");
		else if (ret == -EPERM)
			tw_caps_explain(why, sizeof(why), need, "open an AF_XDP socket");
		return tw_fail(err, errlen, ret, "AF_XDP socket on %s queue %u: %s%s", e->cfg.ifname,
			    e->cfg.queue, strerror(-ret), why);
	}

	if (getsockopt(xsk_socket__fd(e->xsk), SOL_XDP, XDP_OPTIONS, &opts, &optlen) == 0)
		e->info.zero_copy = !!(opts.flags & XDP_OPTIONS_ZEROCOPY);
	return 0;
}

/* Busy polling is a request: older kernels or unprivileged sockets may refuse some options. */
static void apply_busy_poll(struct tw_engine *e)
{
	int fd = xsk_socket__fd(e->xsk);
	int one = 1, ok = 1;

	if (!e->cfg.busy_poll)
		return;
	if (setsockopt(fd, SOL_SOCKET, SO_PREFER_BUSY_POLL, &one, sizeof(one)))
		ok = 0;
	if (e->cfg.busy_poll_usec > 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL, &e->cfg.busy_poll_usec, sizeof(int)))
		ok = 0;
	if (e->cfg.busy_poll_budget > 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL_BUDGET, &e->cfg.busy_poll_budget, sizeof(int)))
		ok = 0;
	e->info.busy_poll_applied = ok;
	if (!ok)
		note_fallback(e, "kernel refused some busy-poll socket options");
}

/* Every UMEM frame goes into the fill ring before the program is attached: the first frames the
 * kernel redirects find somewhere to land. The poll thread gives each frame back as soon as it has
 * decoded it, so the fill ring (frame_count entries) can always take it back. */
static int fill_ring_stock(struct tw_engine *e, char *err, size_t errlen)
{
	uint32_t idx, n = e->cfg.frame_count;

	if (xsk_ring_prod__reserve(&e->fill, n, &idx) != n)
		return tw_fail(err, errlen, ENOSPC, "cannot stock the fill ring with %u frames", n);
	for (uint32_t i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&e->fill, idx + i) = (uint64_t)i * e->cfg.frame_size;
	xsk_ring_prod__submit(&e->fill, n);
	e->info.fill_stocked = n;
	return 0;
}

/* Frames in the fill ring right now. The consumer index is the kernel's, the producer the poll
 * thread's: read from another thread this is a moment's picture, which is all a gauge needs. */
static uint32_t fill_ring_stock_now(struct tw_engine *e)
{
	uint32_t prod = __atomic_load_n(e->fill.producer, __ATOMIC_ACQUIRE);
	uint32_t cons = __atomic_load_n(e->fill.consumer, __ATOMIC_ACQUIRE);

	return prod - cons;
}

/* What the engine asks of the interface's shared steering program (steering.c). */
static struct tw_steering_request steering_request(struct tw_engine *e)
{
	struct tw_steering_request req = {
		.root = e->cfg.bpffs_root,
		.ifname = e->cfg.ifname,
		.ifindex = e->ifindex,
		.queue = e->cfg.queue,
		.xdp_mode = e->cfg.xdp_mode,
		.bpf_object = e->cfg.bpf_object,
		.n_lines = e->cfg.decoder.n_lines,
		.xsk_fd = e->xsk ? xsk_socket__fd(e->xsk) : -1,
	};

	for (uint32_t i = 0; i < req.n_lines && i < 2; i++) {
		const struct tw_line_config *l = &e->cfg.decoder.lines[i];

		req.lines[i] = (struct tw_steering_line){ .group_be = l->group_be,
			.source_be = l->source_be, .port_be = l->port_be, .vlan = l->vlan };
	}
	return req;
}

/* The queue is ours before its socket is made: a live owner is "in use", not the kernel's EBUSY. */
static int claim_queue(struct tw_engine *e, char *err, size_t errlen)
{
	struct tw_steering_request req = steering_request(e);

	return tw_steering_claim(&req, &e->steering, err, errlen);
}

/* This engine's flows go to its socket, which is stocked and ready. */
static int join_steering(struct tw_engine *e, char *err, size_t errlen)
{
	struct tw_steering_request req = steering_request(e);
	struct tw_steering_result res;
	int ret = tw_steering_join(e->steering, &req, &res, err, errlen);

	if (ret)
		return ret;
	e->info.xdp_mode = res.xdp_mode;
	e->info.prog_id = res.prog_id;
	e->info.attached_program = res.attached;
	if (res.note[0])
		note_fallback(e, res.note);
	return 0;
}

/* ---- the poll thread ------------------------------------------------------------------------- */

static void publish(struct tw_engine *e)
{
	uint_fast64_t s = atomic_load_explicit(&e->seq, memory_order_relaxed);

	atomic_store_explicit(&e->seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	memcpy(&e->published, tw_decoder_stats(e->decoder), sizeof(e->published));
	if (e->books)
		e->published.books = *tw_books_stats(e->books);
	e->published_loop = e->loop;
	atomic_store_explicit(&e->seq, s + 2, memory_order_release);
}

static inline uint64_t frame_kernel_time(struct tw_engine *e, uint8_t *pkt, uint64_t addr)
{
	struct tw_xdp_meta *meta;
	uint64_t offset = addr % e->cfg.frame_size;

	if (offset < sizeof(*meta))
		return 0;
	meta = (struct tw_xdp_meta *)(pkt - sizeof(*meta));
	if (meta->magic != TW_XDP_META_MAGIC)
		return 0;
	meta->magic = 0; /* the frame will be reused: never read this stamp twice */
	return meta->rx_ns;
}

/* A spinning thread tells the CPU so: less power, and a sibling hyperthread keeps its share. */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static void kick_kernel(struct tw_engine *e)
{
	recvfrom(xsk_socket__fd(e->xsk), NULL, 0, MSG_DONTWAIT, NULL, NULL);
	e->loop.wakeups++;
}

/* Re-requests: every loop while some are outstanding, else now and then (late answers). */
static int service_requests(struct tw_engine *e, const struct tw_clock *now)
{
	if (e->reqsock.fd < 0)
		return 0;
	if (!tw_decoder_requests_outstanding(e->decoder) &&
	    now->mono_ns - e->last_reply_drain < REPLY_DRAIN_NS)
		return 0;
	e->last_reply_drain = now->mono_ns;
	return tw_reqsock_service(&e->reqsock, e->decoder, now, &e->loop.request_send_errors);
}

static void *poll_loop(void *arg)
{
	struct tw_engine *e = arg;
	struct pollfd pfd[2] = { { .fd = xsk_socket__fd(e->xsk), .events = POLLIN },
				 { .fd = e->reqsock.fd, .events = POLLIN } };
	uint32_t batch = e->cfg.batch_size;
	uint64_t last_publish = 0, last_tick = 0;
	int dirty = 0;
	struct tw_clock now;
	const struct tw_stats *stats = tw_decoder_stats(e->decoder);

	while (!atomic_load_explicit(&e->stop, memory_order_relaxed)) {
		uint32_t idx_rx = 0, idx_fill = 0;
		uint32_t n = xsk_ring_cons__peek(&e->rx, batch, &idx_rx);

		e->loop.polls++;
		if (n == 0) {
			e->loop.empty_polls++;
			now.mono_ns = mono_ns();
			if (now.mono_ns - last_tick >= HOLE_TICK_NS) {
				/* Idle: holes keep ageing into gaps (cheap when there are none). */
				uint64_t gaps = stats->gaps;

				now.real_ns = real_ns();
				tw_decoder_tick(e->decoder, &now);
				last_tick = now.mono_ns;
				if (stats->gaps != gaps)
					dirty = 1;
			}
			if (service_requests(e, &now))
				dirty = 1;
			if (dirty && now.mono_ns - last_publish >= IDLE_PUBLISH_NS) {
				/* Idle: show readers the final counts. */
				publish(e);
				last_publish = now.mono_ns;
				dirty = 0;
			}
			if (e->cfg.busy_poll) {
				/* recvfrom() busy-polls the socket's NAPI context; in generic mode the
				 * frames come from the sender's softirq and there is none to drive, so
				 * the thread just spins on the ring. */
				if (e->kick_when_idle || xsk_ring_prod__needs_wakeup(&e->fill))
					kick_kernel(e);
				else
					cpu_relax();
			} else {
				/* an answer wakes the thread as a frame does */
				int asking = e->reqsock.fd >= 0 &&
					     tw_decoder_requests_outstanding(e->decoder);

				e->loop.wakeups++;
				poll(pfd, asking ? 2 : 1,
				     asking || tw_decoder_pending(e->decoder) ? HOLE_WAIT_MS : IDLE_WAIT_MS);
			}
			continue;
		}

		now.mono_ns = mono_ns();
		now.real_ns = real_ns();
		/* Every frame taken goes straight back to the fill ring, which therefore always has
		 * room for it: the reserve cannot come up short. */
		while (xsk_ring_prod__reserve(&e->fill, n, &idx_fill) != n)
			;
		for (uint32_t i = 0; i < n; i++) {
			const struct xdp_desc *desc = xsk_ring_cons__rx_desc(&e->rx, idx_rx + i);
			uint64_t addr = xsk_umem__add_offset_to_addr(desc->addr);
			uint8_t *pkt = xsk_umem__get_data(e->umem_area, addr);
			uint64_t rx_ns = frame_kernel_time(e, pkt, addr);

			if (rx_ns)
				e->info.metadata = 1;
			tw_decode_frame(e->decoder, pkt, desc->len, rx_ns, &now);
			*xsk_ring_prod__fill_addr(&e->fill, idx_fill + i) =
				xsk_umem__extract_addr(desc->addr);
		}
		xsk_ring_prod__submit(&e->fill, n);
		xsk_ring_cons__release(&e->rx, n);
		tw_decoder_tick(e->decoder, &now);
		last_tick = now.mono_ns;
		service_requests(e, &now);
		e->loop.batches++;
		e->loop.descriptors += n;
		dirty = 1;
		if (now.mono_ns - last_publish >= PUBLISH_INTERVAL_NS) {
			publish(e);
			last_publish = now.mono_ns;
			dirty = 0;
		}
		if (!e->cfg.busy_poll && xsk_ring_prod__needs_wakeup(&e->fill))
			kick_kernel(e);
	}
	tw_decoder_flush(e->decoder);
	publish(e);
	return NULL;
}

/* ---- public API ------------------------------------------------------------------------------ */

int tw_engine_ring_stats(struct tw_engine *e, struct tw_ring_stats *out);

static int check_config(const struct tw_engine_config *c, char *err, size_t errlen)
{
	if (!c->ifname[0])
		return tw_fail(err, errlen, EINVAL, "no interface given");
	if (c->frame_size != 2048 && c->frame_size != 4096)
		return tw_fail(err, errlen, EINVAL, "frame_size must be 2048 or 4096, not %u",
			    c->frame_size);
	if (!c->ring_size || (c->ring_size & (c->ring_size - 1)))
		return tw_fail(err, errlen, EINVAL, "ring_size must be a power of two, not %u",
			    c->ring_size);
	if (c->frame_count & (c->frame_count - 1) || c->frame_count / 2 < c->ring_size)
		return tw_fail(err, errlen, EINVAL,
			    "frame_count (%u) must be a power of two and at least twice ring_size "
			    "(%u): every frame is stocked in the fill ring, which is at least twice "
			    "the RX ring", c->frame_count, c->ring_size);
	if (!c->batch_size || c->batch_size > c->ring_size)
		return tw_fail(err, errlen, EINVAL, "batch_size must be 1..ring_size, not %u",
			    c->batch_size);
	if (c->xdp_mode < TW_XDP_AUTO || c->xdp_mode > TW_XDP_GENERIC)
		return tw_fail(err, errlen, EINVAL, "unknown XDP mode %d", c->xdp_mode);
	if (c->rt_priority < 0 || c->rt_priority > 99)
		return tw_fail(err, errlen, EINVAL, "rt_priority must be 0 (off) or 1-99, not %d",
			    c->rt_priority);
	if (c->zero_copy < TW_ZC_AUTO || c->zero_copy > TW_ZC_OFF)
		return tw_fail(err, errlen, EINVAL, "unknown zero-copy setting %d", c->zero_copy);
	if (!c->bpffs_root[0] || c->bpffs_root[0] != '/')
		return tw_fail(err, errlen, EINVAL, "bpffs_root must be an absolute path, not '%s'",
			    c->bpffs_root);
	for (uint32_t i = 0; i < c->decoder.n_lines && i < TW_MAX_LINES; i++)
		if (c->decoder.lines[i].vlan > 4094)
			return tw_fail(err, errlen, EINVAL, "line %u: vlan %u is not 1..4094 (0: any)",
				    i, c->decoder.lines[i].vlan);
	if (c->decoder.rerequest.enabled && (!c->rerequest_addr_be || !c->rerequest_port_be))
		return tw_fail(err, errlen, EINVAL,
			    "re-request is on but no server is given (address and port)");
	return 0;
}

int tw_engine_create(const struct tw_engine_config *cfg, struct tw_engine **out, char *err,
		     size_t errlen)
{
	struct tw_engine *e;
	int ret = check_config(cfg, err, errlen);

	*out = NULL;
	if (ret)
		return ret;
	e = calloc(1, sizeof(*e));
	if (!e)
		return tw_fail(err, errlen, ENOMEM, "out of memory");
	e->cfg = *cfg;
	e->cfg.ifname[sizeof(e->cfg.ifname) - 1] = 0;
	e->cfg.bpf_object[sizeof(e->cfg.bpf_object) - 1] = 0;
	e->cfg.bpffs_root[sizeof(e->cfg.bpffs_root) - 1] = 0;
	e->reqsock.fd = -1;
	e->info.core = -1;
	e->info.rx_ring_size = e->cfg.ring_size;
	e->info.fill_ring_size = e->cfg.frame_count;
	e->ifindex = if_nametoindex(e->cfg.ifname);
	if (!e->ifindex) {
		free(e);
		return tw_fail(err, errlen, ENODEV, "unknown interface '%s'", cfg->ifname);
	}
	e->decoder = tw_decoder_new(&e->cfg.decoder, err, errlen);
	if (!e->decoder) {
		free(e);
		return -EINVAL;
	}
	if (e->cfg.books_enabled) {
		/* Books and their stream files are made here, before anything touches the NIC: a
		 * stream root the engine cannot write is a configuration error, not a kernel one. */
		e->books = tw_books_new(&e->cfg.books, err, errlen);
		if (!e->books) {
			tw_decoder_free(e->decoder);
			free(e);
			return -EINVAL;
		}
		tw_decoder_set_books(e->decoder, e->books);
	}
	*out = e;
	return 0;
}

static void pin_thread(struct tw_engine *e)
{
	cpu_set_t set;

	if (e->cfg.core < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(e->cfg.core, &set);
	if (pthread_setaffinity_np(e->thread, sizeof(set), &set) == 0) {
		e->info.core = e->cfg.core;
	} else {
		char why[96];

		snprintf(why, sizeof(why), "cannot pin the poll thread to CPU %d", e->cfg.core);
		note_fallback(e, why);
	}
}

/* A spinning poll thread under the normal scheduler shares its core with whatever else wakes up
 * there; SCHED_FIFO makes it the core's owner (the kernel's RT throttling still leaves others a
 * sliver). Needs CAP_SYS_NICE; without it the thread runs on, normally scheduled, and says so. */
static void make_realtime(struct tw_engine *e)
{
	struct sched_param param = { .sched_priority = e->cfg.rt_priority };
	char why[128];
	int ret;

	if (e->cfg.rt_priority <= 0)
		return;
	ret = pthread_setschedparam(e->thread, SCHED_FIFO, &param);
	if (ret == 0) {
		e->info.rt_priority = e->cfg.rt_priority;
		return;
	}
	snprintf(why, sizeof(why), "SCHED_FIFO %d refused (%s): normal scheduling",
		 e->cfg.rt_priority, strerror(ret));
	note_fallback(e, why);
}

int tw_engine_start(struct tw_engine *e, char *err, size_t errlen)
{
	int ret;

	if (e->thread_started || e->xsk || e->steering)
		return tw_fail(err, errlen, EALREADY, "engine already started");
	ret = claim_queue(e, err, errlen);
	if (!ret)
		ret = create_umem(e, err, errlen);
	if (!ret)
		ret = create_socket(e, err, errlen);
	if (!ret)
		ret = fill_ring_stock(e, err, errlen);
	if (!ret)
		ret = join_steering(e, err, errlen);
	if (!ret && e->cfg.decoder.rerequest.enabled)
		ret = tw_reqsock_open(&e->reqsock, e->cfg.rerequest_addr_be, e->cfg.rerequest_port_be,
				      err, errlen);
	if (ret) {
		tw_engine_stop(e);
		return ret;
	}
	apply_busy_poll(e);
	e->kick_when_idle = e->info.busy_poll_applied && e->info.xdp_mode == TW_XDP_NATIVE;

	atomic_store(&e->stop, 0);
	publish(e);
	ret = pthread_create(&e->thread, NULL, poll_loop, e);
	if (ret) {
		tw_engine_stop(e);
		return tw_fail(err, errlen, ret, "cannot start the poll thread: %s", strerror(ret));
	}
	e->thread_started = 1;
	pthread_setname_np(e->thread, "tw-poll");
	pin_thread(e);
	make_realtime(e);
	return 0;
}

void tw_engine_stop(struct tw_engine *e)
{
	if (!e)
		return;
	if (e->thread_started) {
		atomic_store(&e->stop, 1);
		pthread_join(e->thread, NULL);
		e->thread_started = 0;
	}
	if (e->books)
		tw_books_end_stream(e->books); /* readers learn the engine stopped */
	/* Flows out of the shared program before the socket closes; the last engine out detaches. */
	tw_steering_leave(e->steering);
	e->steering = NULL;
	tw_reqsock_close(&e->reqsock);
	if (e->xsk) {
		e->have_final_ring = tw_engine_ring_stats(e, &e->final_ring) == 0;
		xsk_socket__delete(e->xsk);
		e->xsk = NULL;
	}
	if (e->umem) {
		xsk_umem__delete(e->umem);
		e->umem = NULL;
	}
	if (e->umem_area) {
		munmap(e->umem_area, e->umem_size);
		e->umem_area = NULL;
	}
}

void tw_engine_destroy(struct tw_engine *e)
{
	if (!e)
		return;
	tw_engine_stop(e);
	tw_decoder_free(e->decoder);
	tw_books_free(e->books);
	free(e);
}

void tw_engine_get_info(struct tw_engine *e, struct tw_engine_info *out)
{
	*out = e->info;
}

int tw_engine_snapshot(struct tw_engine *e, struct tw_stats *stats, struct tw_loop_stats *loop)
{
	for (int attempt = 0; attempt < 100000; attempt++) {
		uint_fast64_t before = atomic_load_explicit(&e->seq, memory_order_acquire);

		if (before & 1) {
			sched_yield();
			continue;
		}
		if (stats)
			memcpy(stats, &e->published, sizeof(*stats));
		if (loop)
			*loop = e->published_loop;
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&e->seq, memory_order_relaxed) == before)
			return 0;
	}
	return -EAGAIN;
}

int tw_engine_ring_stats(struct tw_engine *e, struct tw_ring_stats *out)
{
	struct xdp_statistics s;
	socklen_t len = sizeof(s);

	memset(out, 0, sizeof(*out));
	if (!e->xsk && e->have_final_ring) {
		*out = e->final_ring;
		return 0;
	}
	if (!e->xsk)
		return -ENOTCONN;
	memset(&s, 0, sizeof(s));
	if (getsockopt(xsk_socket__fd(e->xsk), SOL_XDP, XDP_STATISTICS, &s, &len))
		return -errno;
	out->rx_dropped = s.rx_dropped;
	out->rx_invalid_descs = s.rx_invalid_descs;
	out->tx_invalid_descs = s.tx_invalid_descs;
	out->rx_ring_full = s.rx_ring_full;
	out->rx_fill_ring_empty_descs = s.rx_fill_ring_empty_descs;
	out->fill_ring_stock = fill_ring_stock_now(e);
	return 0;
}
