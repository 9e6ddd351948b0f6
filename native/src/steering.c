/* steering.c - one XDP program per interface, shared by the engines on its queues.
 *
 * Why our own pinned program and not libxdp's dispatcher: the dispatcher fails on these kernels
 * ("Operation not permitted", docs/design.md), and chaining programs would cost every feed's
 * packets one more program per engine. One program with a map of every engine's flows costs the
 * same for one feed or forty.
 *
 * Layout in bpffs, one directory per (network namespace, interface):
 *
 *   <root>/n<netns cookie>-i<ifindex>/      the netns cookie is never reused, so two namespaces
 *       link  prog                          with an eth0 each never meet, and neither do an
 *       tw_flows tw_groups tw_xsks          interface and a later one with its name
 *       tw_owners tw_counters
 *       q<N>/                               exists while queue N has an owner
 *
 * The ownership rule:
 *   - Every change to an interface's pins and maps happens under an flock on <root> itself (a
 *     directory that is never removed, so no one waits on a lock another is deleting).
 *   - The owner of queue N holds an flock on q<N>/ for its whole life. The kernel drops it when
 *     the process dies, however it dies, so "can I take the flock on q<N>?" is the liveness test:
 *     no pids to trust across pid namespaces, no stale records to believe. tw_owners only names
 *     the owner (pid, start time) in messages.
 *   - Whoever holds the root lock sweeps queues whose flock is free: their flows, socket entry and
 *     directory go (the leftovers of an engine killed with SIGKILL).
 *   - The program is attached through a pinned BPF link, so it survives the engine that attached
 *     it. Engines joining or leaving only change map entries; the program is never detached while
 *     a queue has a live owner. The engine that leaves and finds no live owner detaches the link
 *     and removes the directory. After the last engine was killed, the next one reuses the program,
 *     or `tickwire-engine release` removes it (tw_steering_release).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <linux/types.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "fail.h"
#include "../bpf/steer_meta.h"
#include "caps.h"
#include "steering.h"
#include "tickwire.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

#define TW_PROG_NAME "tw_steer"
#define CONVENTIONAL_BPFFS "/sys/fs/bpf"
#define LOCK_WAIT_NS 10000000000ull   /* joins and leaves take milliseconds: 10 s means stuck */

static const char *const MAP_NAMES[] = { "tw_flows", "tw_groups", "tw_xsks", "tw_owners",
					 "tw_counters" };
enum { MAP_FLOWS, MAP_GROUPS, MAP_XSKS, MAP_OWNERS, MAP_COUNTERS, N_MAPS };

struct tw_steering {
	char root[256];
	char dir[320];
	int queue_lock_fd;   /* flock held on <dir>/q<queue> for the engine's life */
	/* Without a bpffs (none mounted, and no CAP_SYS_ADMIN to mount one) the program cannot be
	 * shared: this engine loads its own and holds it by an unpinned link, as a lone engine did
	 * before; any other engine on the interface is refused as "in use". */
	int private_program;
	struct bpf_object *obj;
	int link_fd;
	uint32_t queue;
};

static void append(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void append(char *buf, size_t len, const char *fmt, ...)
{
	size_t used = strlen(buf);
	va_list ap;

	if (used + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- bpffs, paths and locks ------------------------------------------------------------------ */

static int on_bpffs(const char *path)
{
	struct statfs st;

	return statfs(path, &st) == 0 && (uint32_t)st.f_type == BPF_FS_MAGIC;
}

static int mkdir_p(const char *path)
{
	char buf[256];

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

/* The root must be on a bpffs that every engine of the node sees. Under the conventional
 * /sys/fs/bpf, mount it when missing, as bpftool does (`ip netns exec` gives each process a fresh
 * /sys without one); anywhere else a missing bpffs is the caller's mistake. */
static int prepare_root(const char *root, char *err, size_t errlen)
{
	size_t conv = strlen(CONVENTIONAL_BPFFS);
	int ret;

	if (strncmp(root, CONVENTIONAL_BPFFS, conv) == 0 && (root[conv] == '/' || !root[conv]) &&
	    !on_bpffs(CONVENTIONAL_BPFFS) &&
	    mount("bpf", CONVENTIONAL_BPFFS, "bpf", 0, "mode=0700") != 0)
		return tw_fail(err, errlen, ENOMEDIUM, "no bpf filesystem at %s and mounting one failed: %s "
			    "(mount -t bpf bpf %s)", CONVENTIONAL_BPFFS, strerror(errno),
			    CONVENTIONAL_BPFFS);
	ret = mkdir_p(root);
	if (ret)
		return tw_fail(err, errlen, ret, "cannot create the pin directory %s: %s", root,
			    strerror(-ret));
	if (!on_bpffs(root))
		return tw_fail(err, errlen, ENOTSUP, "pin directory %s is not on a bpf filesystem "
			    "(mount -t bpf bpf DIR, or choose a directory under one)", root);
	return 0;
}

static int lock_dir(const char *path, char *err, size_t errlen)
{
	uint64_t deadline = mono_ns() + LOCK_WAIT_NS;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return tw_fail(err, errlen, errno, "cannot open %s: %s", path, strerror(errno));
	while (flock(fd, LOCK_EX | LOCK_NB)) {
		if (errno != EWOULDBLOCK || mono_ns() > deadline) {
			int code = errno == EWOULDBLOCK ? EBUSY : errno;

			close(fd);
			return tw_fail(err, errlen, code, "cannot lock %s: %s", path,
				    code == EBUSY ? "held for over 10 s by another engine" :
				    strerror(code));
		}
		usleep(2000);
	}
	return fd;
}

static void unlock_dir(int fd)
{
	if (fd >= 0)
		close(fd); /* closing the only descriptor drops the flock */
}

/* A cookie the kernel never hands out twice, unlike a namespace's inode number. */
static uint64_t netns_cookie(void)
{
	uint64_t cookie = 0;
	socklen_t len = sizeof(cookie);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct stat st;

	if (fd >= 0) {
		if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len))
			cookie = 0;
		close(fd);
	}
	if (!cookie && stat("/proc/self/ns/net", &st) == 0)
		cookie = (uint64_t)st.st_ino << 32; /* old kernels: the inode, kept apart from cookies */
	return cookie;
}

static int interface_dir(char *out, size_t len, const char *root, int ifindex)
{
	if (snprintf(out, len, "%s/n%llu-i%d", root, (unsigned long long)netns_cookie(), ifindex) >=
	    (int)len)
		return -ENAMETOOLONG;
	return 0;
}

static int pin_path(char *out, size_t len, const char *dir, const char *name)
{
	return snprintf(out, len, "%s/%s", dir, name) >= (int)len ? -ENAMETOOLONG : 0;
}

static int open_pinned(const char *dir, const char *name)
{
	char path[400];

	if (pin_path(path, sizeof(path), dir, name))
		return -ENAMETOOLONG;
	return bpf_obj_get(path);
}

/* ---- map entries ----------------------------------------------------------------------------- */

struct maps {
	int fd[N_MAPS];
};

static void maps_close(struct maps *m)
{
	for (int i = 0; i < N_MAPS; i++) {
		if (m->fd[i] >= 0)
			close(m->fd[i]);
		m->fd[i] = -1;
	}
}

static int maps_open(struct maps *m, const char *dir)
{
	for (int i = 0; i < N_MAPS; i++)
		m->fd[i] = -1;
	for (int i = 0; i < N_MAPS; i++) {
		m->fd[i] = open_pinned(dir, MAP_NAMES[i]);
		if (m->fd[i] < 0) {
			int ret = -errno;

			maps_close(m);
			return ret;
		}
	}
	return 0;
}

static uint32_t key_shape(const struct tw_flow_key *k)
{
	if (k->source && k->vlan)
		return TW_SHAPE_EXACT;
	if (k->vlan)
		return TW_SHAPE_ANY_SOURCE;
	if (k->source)
		return TW_SHAPE_ANY_VLAN;
	return TW_SHAPE_ANY;
}

/* tw_groups from tw_flows. Every group that has flows is written before the ones that lost
 * theirs are deleted, and a hash map update replaces an entry in one step: a live flow is never
 * without its group entry. */
static void rebuild_groups(const struct maps *m)
{
	static struct tw_group_key keys[TW_MAX_FLOWS], stale[TW_MAX_FLOWS];
	static struct tw_group values[TW_MAX_FLOWS];
	struct tw_flow_key key, next, *prev = NULL;
	struct tw_group_key gkey, gnext, *gprev = NULL;
	uint32_t n = 0, n_stale = 0;

	while (bpf_map_get_next_key(m->fd[MAP_FLOWS], prev, &next) == 0) {
		struct tw_group_key g = { .group = next.group, .port = next.port, .pad = 0 };
		struct tw_flow_target target;
		uint32_t i;

		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(m->fd[MAP_FLOWS], &next, &target))
			continue;
		for (i = 0; i < n; i++)
			if (keys[i].group == g.group && keys[i].port == g.port)
				break;
		if (i == n) {
			if (n == TW_MAX_FLOWS)
				continue;
			keys[n] = g;
			memset(&values[n], 0, sizeof(values[n]));
			n++;
		}
		values[i].shapes |= key_shape(&next);
		if (key_shape(&next) == TW_SHAPE_ANY)
			values[i].any = target;
	}
	for (uint32_t i = 0; i < n; i++)
		bpf_map_update_elem(m->fd[MAP_GROUPS], &keys[i], &values[i], BPF_ANY);
	while (bpf_map_get_next_key(m->fd[MAP_GROUPS], gprev, &gnext) == 0) {
		uint32_t i;

		gkey = gnext;
		gprev = &gkey;
		for (i = 0; i < n; i++)
			if (keys[i].group == gnext.group && keys[i].port == gnext.port)
				break;
		if (i == n && n_stale < TW_MAX_FLOWS)
			stale[n_stale++] = gnext;
	}
	for (uint32_t i = 0; i < n_stale; i++)
		bpf_map_delete_elem(m->fd[MAP_GROUPS], &stale[i]);
}

/* Remove every flow of `queue`, its socket entry and its owner record. */
static uint32_t clear_queue(const struct maps *m, uint32_t queue)
{
	struct tw_flow_key doomed[TW_MAX_FLOWS], key, next, *prev = NULL;
	struct tw_queue_owner nobody = { 0 };
	uint32_t n = 0;

	while (bpf_map_get_next_key(m->fd[MAP_FLOWS], prev, &next) == 0 && n < TW_MAX_FLOWS) {
		struct tw_flow_target target;

		if (bpf_map_lookup_elem(m->fd[MAP_FLOWS], &next, &target) == 0 && target.queue == queue)
			doomed[n++] = next;
		key = next;
		prev = &key;
	}
	for (uint32_t i = 0; i < n; i++)
		bpf_map_delete_elem(m->fd[MAP_FLOWS], &doomed[i]);
	rebuild_groups(m);
	bpf_map_delete_elem(m->fd[MAP_XSKS], &queue);
	if (queue < TW_MAX_QUEUES)
		bpf_map_update_elem(m->fd[MAP_OWNERS], &queue, &nobody, BPF_ANY);
	return n;
}

/* ---- queue owners ---------------------------------------------------------------------------- */

static uint64_t process_start_ticks(void)
{
	char buf[1024], *p;
	unsigned long long ticks = 0;
	FILE *f = fopen("/proc/self/stat", "re");

	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')'))) {
		/* after "pid (comm)": field 3 is state; starttime is field 22 */
		int field = 2;

		for (p++; *p && field < 21; p++)
			if (*p == ' ')
				field++;
		ticks = strtoull(p, NULL, 10);
	}
	fclose(f);
	return ticks;
}

static int parse_queue_dir(const char *name, uint32_t *queue)
{
	char *end;
	unsigned long q;

	if (name[0] != 'q' || !name[1])
		return 0;
	q = strtoul(name + 1, &end, 10);
	if (*end || q >= TW_MAX_QUEUES)
		return 0;
	*queue = (uint32_t)q;
	return 1;
}

/* Sweep the queues whose owner died; returns how many live owners remain (other processes, and
 * this one's own queue too: its lock is on another open file). Appends what it removed. */
static int sweep_dead_owners(const struct maps *m, const char *dir, char *note, size_t notelen)
{
	DIR *d = opendir(dir);
	struct dirent *entry;
	int live = 0;

	if (!d)
		return 0;
	while ((entry = readdir(d))) {
		char path[400];
		uint32_t queue;
		int fd;

		if (!parse_queue_dir(entry->d_name, &queue) ||
		    pin_path(path, sizeof(path), dir, entry->d_name))
			continue;
		fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			uint32_t flows = m ? clear_queue(m, queue) : 0;

			rmdir(path);
			append(note, notelen, "%sremoved what a stopped engine left on queue %u "
			       "(%u flows)", note[0] ? "; " : "", queue, flows);
		} else {
			live++;
		}
		close(fd);
	}
	closedir(d);
	return live;
}

static void owner_of(const struct maps *m, uint32_t queue, char *out, size_t len)
{
	struct tw_queue_owner owner;

	if (queue < TW_MAX_QUEUES &&
	    bpf_map_lookup_elem(m->fd[MAP_OWNERS], &queue, &owner) == 0 && owner.pid)
		snprintf(out, len, "pid %u", owner.pid);
	else
		snprintf(out, len, "a running engine");
}

/* ---- the program ----------------------------------------------------------------------------- */

static int add_flows(const struct tw_steering_request *req, const struct maps *m, char *err,
		     size_t errlen);

static void unpin_all(const char *dir)
{
	static const char *const pins[] = { "link", "prog", "tw_flows", "tw_groups", "tw_xsks",
					    "tw_owners", "tw_counters" };
	char path[400];

	for (size_t i = 0; i < sizeof(pins) / sizeof(pins[0]); i++)
		if (!pin_path(path, sizeof(path), dir, pins[i]))
			unlink(path);
}

/* Detach the program and remove the interface's directory (no live owner is left). */
static void remove_interface(const char *dir)
{
	int link = open_pinned(dir, "link");
	DIR *d;

	if (link >= 0) {
		bpf_link_detach(link); /* at once, whoever else still holds the link open */
		close(link);
	}
	unpin_all(dir);
	d = opendir(dir);
	if (d) {
		struct dirent *entry;
		char path[400];

		while ((entry = readdir(d)))
			if (entry->d_name[0] == 'q' && !pin_path(path, sizeof(path), dir, entry->d_name))
				rmdir(path);
		closedir(d);
	}
	rmdir(dir);
}

static int attached_program(int ifindex, uint32_t *prog_id, int *mode, char *name, size_t namelen)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	int ret = bpf_xdp_query(ifindex, 0, &q);

	*prog_id = 0;
	*mode = 0;
	if (name && namelen)
		name[0] = 0;
	if (ret)
		return ret;
	*prog_id = q.prog_id ? q.prog_id : (q.drv_prog_id ? q.drv_prog_id : q.skb_prog_id);
	*mode = q.attach_mode == XDP_ATTACHED_SKB ? TW_XDP_GENERIC :
		q.attach_mode == XDP_ATTACHED_DRV ? TW_XDP_NATIVE : 0;
	if (*prog_id && name && namelen) {
		struct bpf_prog_info info;
		__u32 len = sizeof(info);
		int fd = bpf_prog_get_fd_by_id(*prog_id);

		memset(&info, 0, sizeof(info));
		if (fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
			snprintf(name, namelen, "%s", info.name);
		if (fd >= 0)
			close(fd);
	}
	return 0;
}

/* The program our pinned link holds, if the link is still attached to this interface. */
static uint32_t pinned_link_program(const char *dir, int ifindex)
{
	struct bpf_link_info info;
	__u32 len = sizeof(info);
	int fd = open_pinned(dir, "link");
	uint32_t id = 0;

	if (fd < 0)
		return 0;
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == BPF_LINK_TYPE_XDP &&
	    (int)info.xdp.ifindex == ifindex)
		id = info.prog_id;
	close(fd);
	return id;
}

static int link_attach(int prog_fd, int ifindex, __u32 flags)
{
	LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = flags);
	int fd = bpf_link_create(prog_fd, ifindex, BPF_XDP, &opts);

	return fd < 0 ? -errno : fd;
}

/* An XDP program of tickwire's that nothing pins: an engine of an older version that attached
 * without a link, dead now. Replace it; a live one (link-attached) refuses the detach. */
static int clear_unpinned_program(const struct tw_steering_request *req, uint32_t id, int mode,
				  const char *name, char *note, size_t notelen, char *err,
				  size_t errlen)
{
	int ret;

	if (strcmp(name, TW_PROG_NAME) != 0)
		return tw_fail(err, errlen, EADDRINUSE,
			    "%s already has another XDP program attached ('%s', id %u); tickwire "
			    "shares an interface only with its own engines: detach it first "
			    "(ip link set dev %s xdp off)", req->ifname, name, id, req->ifname);
	ret = bpf_xdp_detach(req->ifindex, mode == TW_XDP_GENERIC ? XDP_FLAGS_SKB_MODE :
			     XDP_FLAGS_DRV_MODE, NULL);
	if (ret == -EBUSY)
		return tw_fail(err, errlen, EADDRINUSE,
			    "%s is in use by a tickwire engine whose pins are not under %s "
			    "(program id %u): another bpffs_root, or a bpffs this process does not "
			    "see", req->ifname, req->root, id);
	if (ret)
		return tw_fail(err, errlen, ret, "cannot detach stale tickwire program id %u from %s: %s",
			    id, req->ifname, strerror(-ret));
	append(note, notelen, "%sreplaced a stale tickwire XDP program", note[0] ? "; " : "");
	return 0;
}

/* Load steer.bpf.o, pin its maps and program, attach it through a link and pin the link. */
static int load_and_attach(const struct tw_steering_request *req, const char *dir,
			   struct tw_steering_result *res, struct tw_steering *keep, char *err,
			   size_t errlen)
{
	struct bpf_object *obj = bpf_object__open_file(req->bpf_object, NULL);
	struct bpf_program *prog;
	char path[400];
	int ret, link = -1;

	ret = libbpf_get_error(obj);
	if (ret)
		return tw_fail(err, errlen, ret, "cannot open XDP object %s: %s", req->bpf_object,
			    strerror(-ret));
	ret = bpf_object__load(obj);
	if (ret) {
		/* EPERM: bpf() needs CAP_BPF; an XDP program and its XSKMAP need CAP_NET_ADMIN.
		 * EACCES: the verifier refused, and without CAP_PERFMON it refuses the program's
		 * packet-pointer arithmetic. */
		static const int load[] = { CAP_BPF, CAP_NET_ADMIN, -1 };
		static const int verify[] = { CAP_PERFMON, -1 };
		char why[200] = "";

		if (ret == -EPERM)
			tw_caps_explain(why, sizeof(why), load,
					"load the XDP steering program and create its maps");
		else if (ret == -EACCES && tw_lacks_cap(CAP_PERFMON))
			tw_caps_explain(why, sizeof(why), verify,
					"let the verifier accept the steering program's "
					"packet-pointer arithmetic");
		ret = tw_fail(err, errlen, ret, "cannot load XDP program: %s%s", strerror(-ret), why);
		goto out;
	}
	prog = bpf_object__find_program_by_name(obj, TW_PROG_NAME);
	if (!prog) {
		ret = tw_fail(err, errlen, EINVAL, "%s is not tickwire's steering program",
			   req->bpf_object);
		goto out;
	}
	if (keep)
		goto attach; /* a private program: nothing pinned */
	unpin_all(dir); /* a half-made set from an engine killed while it attached */
	for (int i = 0; i < N_MAPS; i++) {
		int fd = bpf_object__find_map_fd_by_name(obj, MAP_NAMES[i]);

		if (fd < 0 || pin_path(path, sizeof(path), dir, MAP_NAMES[i]) ||
		    bpf_obj_pin(fd, path)) {
			ret = tw_fail(err, errlen, fd < 0 ? EINVAL : errno, "cannot pin map %s in %s: %s",
				   MAP_NAMES[i], dir, fd < 0 ? "not in the object" : strerror(errno));
			goto out;
		}
	}
	if (!pin_path(path, sizeof(path), dir, "prog"))
		bpf_obj_pin(bpf_program__fd(prog), path); /* for bpftool and benchmarks only */
attach:
	if (keep) {
		/* The maps must hold the flows and socket before frames can match. */
		struct maps m;
		int i;

		for (i = 0; i < N_MAPS; i++)
			m.fd[i] = bpf_object__find_map_fd_by_name(obj, MAP_NAMES[i]);
		ret = add_flows(req, &m, err, errlen);
		if (!ret && bpf_map_update_elem(m.fd[MAP_XSKS], &req->queue, &req->xsk_fd, BPF_ANY))
			ret = tw_fail(err, errlen, errno, "cannot put the socket in the XSKMAP: %s",
				   strerror(errno));
		if (ret)
			goto out;
	}
	if (req->xdp_mode == TW_XDP_GENERIC) {
		link = link_attach(bpf_program__fd(prog), req->ifindex, XDP_FLAGS_SKB_MODE);
		res->xdp_mode = TW_XDP_GENERIC;
	} else {
		link = link_attach(bpf_program__fd(prog), req->ifindex, XDP_FLAGS_DRV_MODE);
		res->xdp_mode = TW_XDP_NATIVE;
		if (link < 0 && req->xdp_mode == TW_XDP_AUTO) {
			append(res->note, sizeof(res->note), "%snative XDP refused by %s (%s): generic "
			       "mode", res->note[0] ? "; " : "", req->ifname, strerror(-link));
			link = link_attach(bpf_program__fd(prog), req->ifindex, XDP_FLAGS_SKB_MODE);
			res->xdp_mode = TW_XDP_GENERIC;
		} else if (link < 0) {
			ret = tw_fail(err, errlen, link, "native XDP not supported on %s: %s (use --mode "
				   "generic or auto)", req->ifname, strerror(-link));
			goto out;
		}
	}
	if (link < 0) {
		static const int need[] = { CAP_NET_ADMIN, -1 };
		char why[200] = "";

		if (link == -EPERM)
			tw_caps_explain(why, sizeof(why), need, "attach an XDP program");
		ret = tw_fail(err, errlen, link, "cannot attach XDP to %s: %s%s", req->ifname,
			   strerror(-link), why);
		goto out;
	}
	if (keep) {
		struct bpf_prog_info info;
		__u32 len = sizeof(info);

		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) == 0)
			res->prog_id = info.id;
		keep->obj = obj;
		keep->link_fd = link;
		res->attached = 1;
		return 0;
	}
	if (pin_path(path, sizeof(path), dir, "link") || bpf_obj_pin(link, path)) {
		ret = tw_fail(err, errlen, errno, "cannot pin the XDP link in %s: %s", dir,
			   strerror(errno));
		goto out; /* closing the unpinned link detaches the program again */
	}
	res->attached = 1;
	ret = 0;
out:
	if (ret && !keep)
		unpin_all(dir);
	if (link >= 0)
		close(link);
	bpf_object__close(obj); /* the pins hold the program and maps now */
	return ret;
}

/* Make sure the interface carries our pinned program (loading it if needed); fill res. */
static int ensure_program(const struct tw_steering_request *req, const char *dir,
			  struct tw_steering_result *res, char *err, size_t errlen)
{
	uint32_t attached_id, ours = pinned_link_program(dir, req->ifindex);
	char name[32];
	int mode, ret = attached_program(req->ifindex, &attached_id, &mode, name, sizeof(name));

	if (ret)
		return tw_fail(err, errlen, ret, "cannot query XDP on %s: %s", req->ifname,
			    strerror(-ret));
	if (ours && attached_id == ours) {
		if (req->xdp_mode != TW_XDP_AUTO && req->xdp_mode != mode)
			return tw_fail(err, errlen, EADDRINUSE,
				    "%s's shared steering program is attached in %s mode by the "
				    "engines already on it; this engine asks for %s: use the same "
				    "mode (or auto) for every feed on an interface", req->ifname,
				    mode == TW_XDP_NATIVE ? "native" : "generic",
				    req->xdp_mode == TW_XDP_NATIVE ? "native" : "generic");
		res->xdp_mode = mode;
		res->prog_id = ours;
		return 0;
	}
	if (attached_id) {
		ret = clear_unpinned_program(req, attached_id, mode, name, res->note,
					     sizeof(res->note), err, errlen);
		if (ret)
			return ret;
	}
	ret = load_and_attach(req, dir, res, NULL, err, errlen);
	if (ret)
		return ret;
	res->prog_id = pinned_link_program(dir, req->ifindex);
	return 0;
}

/* ---- join, leave, release -------------------------------------------------------------------- */

static int add_flows(const struct tw_steering_request *req, const struct maps *m, char *err,
		     size_t errlen)
{
	for (uint32_t i = 0; i < req->n_lines; i++) {
		const struct tw_steering_line *l = &req->lines[i];
		struct tw_flow_key key = { .group = l->group_be, .source = l->source_be,
					   .port = l->port_be, .vlan = l->vlan };
		struct tw_flow_target target = { .queue = req->queue, .line = i }, held;

		if (bpf_map_lookup_elem(m->fd[MAP_FLOWS], &key, &held) == 0 &&
		    held.queue != req->queue) {
			struct in_addr group = { .s_addr = l->group_be };
			char owner[64], text[INET_ADDRSTRLEN];

			owner_of(m, held.queue, owner, sizeof(owner));
			inet_ntop(AF_INET, &group, text, sizeof(text));
			return tw_fail(err, errlen, EADDRINUSE, "flow %s:%u (vlan %u, 0 = any) is already "
				    "steered to queue %u of %s by %s: one flow, one engine", text,
				    (unsigned)ntohs(l->port_be), l->vlan, held.queue, req->ifname, owner);
		}
		if (bpf_map_update_elem(m->fd[MAP_FLOWS], &key, &target, BPF_ANY))
			return tw_fail(err, errlen, errno, "cannot add a flow to the steering map: %s",
				    strerror(errno));
	}
	rebuild_groups(m);
	return 0;
}

int tw_steering_claim(const struct tw_steering_request *req, struct tw_steering **out, char *err,
		      size_t errlen)
{
	struct tw_steering *s;
	char qpath[400];
	int ret = 0, root_lock;

	*out = NULL;
	if (req->queue >= TW_MAX_QUEUES)
		return tw_fail(err, errlen, EINVAL, "queue %u: the steering program serves queues "
			    "0..%d", req->queue, TW_MAX_QUEUES - 1);
	s = calloc(1, sizeof(*s));
	if (!s)
		return tw_fail(err, errlen, ENOMEM, "out of memory");
	s->queue = req->queue;
	s->queue_lock_fd = -1;
	s->link_fd = -1;
	snprintf(s->root, sizeof(s->root), "%s", req->root);
	ret = prepare_root(s->root, err, errlen);
	if (ret == -ENOMEDIUM) {
		s->private_program = 1;
		*out = s;
		return 0;
	}
	if (ret)
		goto out_free;
	if (interface_dir(s->dir, sizeof(s->dir), s->root, req->ifindex) ||
	    snprintf(qpath, sizeof(qpath), "%s/q%u", s->dir, req->queue) >= (int)sizeof(qpath)) {
		ret = tw_fail(err, errlen, ENAMETOOLONG, "pin directory name too long under %s", s->root);
		goto out_free;
	}
	root_lock = lock_dir(s->root, err, errlen);
	if (root_lock < 0) {
		ret = root_lock;
		goto out_free;
	}
	if ((mkdir(s->dir, 0700) && errno != EEXIST) || (mkdir(qpath, 0700) && errno != EEXIST)) {
		ret = tw_fail(err, errlen, errno, "cannot create %s: %s", qpath, strerror(errno));
	} else {
		s->queue_lock_fd = open(qpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s->queue_lock_fd < 0) {
			ret = tw_fail(err, errlen, errno, "cannot open %s: %s", qpath, strerror(errno));
		} else if (flock(s->queue_lock_fd, LOCK_EX | LOCK_NB)) {
			char owner[64] = "a running engine";
			struct maps m;

			if (maps_open(&m, s->dir) == 0) {
				owner_of(&m, req->queue, owner, sizeof(owner));
				maps_close(&m);
			}
			ret = tw_fail(err, errlen, EADDRINUSE, "queue %u of %s is owned by %s: each "
				   "engine owns one RX queue", req->queue, req->ifname, owner);
			close(s->queue_lock_fd);
		}
	}
	unlock_dir(root_lock);
	if (!ret) {
		*out = s;
		return 0;
	}
out_free:
	free(s);
	return ret;
}

static int join_privately(struct tw_steering *s, const struct tw_steering_request *req,
			  struct tw_steering_result *res, char *err, size_t errlen)
{
	uint32_t attached_id;
	char name[32];
	int mode, ret = attached_program(req->ifindex, &attached_id, &mode, name, sizeof(name));

	if (ret)
		return tw_fail(err, errlen, ret, "cannot query XDP on %s: %s", req->ifname,
			    strerror(-ret));
	if (attached_id) {
		ret = clear_unpinned_program(req, attached_id, mode, name, res->note,
					     sizeof(res->note), err, errlen);
		if (ret)
			return ret;
	}
	ret = load_and_attach(req, NULL, res, s, err, errlen);
	if (ret)
		return ret;
	append(res->note, sizeof(res->note), "%sno bpf filesystem at %s (mounting one takes "
	       "CAP_SYS_ADMIN): the steering program is this engine's alone, another engine on %s "
	       "will be refused", res->note[0] ? "; " : "", CONVENTIONAL_BPFFS, req->ifname);
	return 0;
}

int tw_steering_join(struct tw_steering *s, const struct tw_steering_request *req,
		     struct tw_steering_result *res, char *err, size_t errlen)
{
	struct maps m = { { -1, -1, -1, -1, -1 } };
	struct tw_queue_owner me = { 0 };
	int ret, root_lock;
	uint32_t stale;

	memset(res, 0, sizeof(*res));
	if (s->private_program)
		return join_privately(s, req, res, err, errlen);
	root_lock = lock_dir(s->root, err, errlen);
	if (root_lock < 0)
		return root_lock;
	ret = ensure_program(req, s->dir, res, err, errlen);
	if (ret)
		goto out;
	ret = maps_open(&m, s->dir);
	if (ret) {
		ret = tw_fail(err, errlen, ret, "cannot open the steering maps in %s: %s", s->dir,
			   strerror(-ret));
		goto out;
	}
	/* Dead owners' flows go before ours are checked against them. This engine's own queue
	 * may have been left by a killed predecessor: clear it too. */
	sweep_dead_owners(&m, s->dir, res->note, sizeof(res->note));
	stale = clear_queue(&m, req->queue);
	if (stale)
		append(res->note, sizeof(res->note), "%sremoved what a stopped engine left on queue "
		       "%u (%u flows)", res->note[0] ? "; " : "", req->queue, stale);

	ret = add_flows(req, &m, err, errlen);
	if (!ret && bpf_map_update_elem(m.fd[MAP_XSKS], &req->queue, &req->xsk_fd, BPF_ANY))
		ret = tw_fail(err, errlen, errno, "cannot put the socket in the XSKMAP: %s",
			   strerror(errno));
	if (ret) {
		clear_queue(&m, req->queue); /* tw_steering_leave() removes the rest */
		goto out;
	}
	me.pid = (uint32_t)getpid();
	me.lines = req->n_lines;
	me.start_ticks = process_start_ticks();
	bpf_map_update_elem(m.fd[MAP_OWNERS], &req->queue, &me, BPF_ANY);
out:
	maps_close(&m);
	unlock_dir(root_lock);
	return ret;
}

void tw_steering_leave(struct tw_steering *s)
{
	struct maps m;
	char note[200] = "";
	int root_lock, live;

	if (!s)
		return;
	if (s->private_program) {
		if (s->link_fd >= 0)
			close(s->link_fd); /* the only reference: the kernel detaches the program */
		if (s->obj)
			bpf_object__close(s->obj);
		free(s);
		return;
	}
	root_lock = lock_dir(s->root, NULL, 0);
	if (maps_open(&m, s->dir) == 0) {
		clear_queue(&m, s->queue);
		close(s->queue_lock_fd);
		live = sweep_dead_owners(&m, s->dir, note, sizeof(note));
		maps_close(&m);
	} else {
		close(s->queue_lock_fd);
		live = sweep_dead_owners(NULL, s->dir, note, sizeof(note));
	}
	if (!live)
		remove_interface(s->dir);
	if (root_lock >= 0)
		unlock_dir(root_lock);
	free(s);
}

/* Directories of interfaces that are gone (the link is defunct, or was never pinned): sweep. */
static void sweep_gone_interfaces(const char *root, char *report, size_t len)
{
	DIR *d = opendir(root);
	struct dirent *entry;

	if (!d)
		return;
	while ((entry = readdir(d))) {
		char dir[400];
		int ifindex, link;
		unsigned long long cookie;
		struct bpf_link_info info;
		__u32 ilen = sizeof(info);

		if (sscanf(entry->d_name, "n%llu-i%d", &cookie, &ifindex) != 2 ||
		    pin_path(dir, sizeof(dir), root, entry->d_name))
			continue;
		link = open_pinned(dir, "link");
		memset(&info, 0, sizeof(info));
		if (link >= 0 && bpf_obj_get_info_by_fd(link, &info, &ilen) == 0 && info.xdp.ifindex) {
			close(link);
			continue; /* attached somewhere: not ours to judge from here */
		}
		if (link >= 0)
			close(link);
		if (sweep_dead_owners(NULL, dir, report, len) == 0) {
			remove_interface(dir);
			append(report, len, "%sremoved %s (its interface is gone)", report[0] ? "; " : "",
			       entry->d_name);
		}
	}
	closedir(d);
}

int tw_steering_release(const char *root, const char *ifname, int32_t queue, char *report,
			size_t len)
{
	char dir[320];
	struct maps m;
	int ifindex, root_lock, live, ret = 0;

	report[0] = 0;
	if (!on_bpffs(root)) {
		append(report, len, "nothing pinned: %s is not on a bpf filesystem", root);
		return 0;
	}
	root_lock = lock_dir(root, report, len);
	if (root_lock < 0)
		return root_lock;
	sweep_gone_interfaces(root, report, len);
	ifindex = ifname && ifname[0] ? (int)if_nametoindex(ifname) : 0;
	if (!ifindex || interface_dir(dir, sizeof(dir), root, ifindex) ||
	    access(dir, F_OK) != 0) {
		append(report, len, "%snothing pinned for %s in this network namespace",
		       report[0] ? "; " : "", ifname && ifname[0] ? ifname : "(no interface)");
		goto out;
	}
	if (queue >= 0) {
		char qpath[400];
		int fd;

		snprintf(qpath, sizeof(qpath), "%s/q%d", dir, queue);
		fd = open(qpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
			close(fd);
			ret = tw_fail(report, len, EADDRINUSE, "queue %d of %s is owned by a running "
				   "engine: stop it instead", queue, ifname);
			goto out;
		}
		if (fd >= 0)
			close(fd);
	}
	if (maps_open(&m, dir) == 0) {
		live = sweep_dead_owners(&m, dir, report, len);
		maps_close(&m);
	} else {
		live = sweep_dead_owners(NULL, dir, report, len);
	}
	if (!live) {
		remove_interface(dir);
		append(report, len, "%sdetached the steering program from %s and removed its pins",
		       report[0] ? "; " : "", ifname);
	} else {
		append(report, len, "%s%d live engine(s) keep the steering program on %s",
		       report[0] ? "; " : "", live, ifname);
	}
out:
	unlock_dir(root_lock);
	return ret;
}
