/* caps.c - which capability a kernel refusal points at, so an error message names it.
 *
 * The kernel answers a missing capability with a bare EPERM (EACCES from the verifier, ENOBUFS for
 * a UMEM over RLIMIT_MEMLOCK). Each set-up step knows which capabilities it needs; this reads the
 * process's effective set so the message names the one actually missing, not every candidate.
 * The list of what the engine needs and why is tickwire_engine/capabilities.py, checked before the
 * engine starts; this only explains a refusal that gets past that check (or runs without it).
 */
#define _GNU_SOURCE
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "caps.h"

#define MIB (1024.0 * 1024.0)

static const char *cap_name(int cap)
{
	switch (cap) {
	case CAP_NET_ADMIN: return "CAP_NET_ADMIN";
	case CAP_NET_RAW: return "CAP_NET_RAW";
	case CAP_IPC_LOCK: return "CAP_IPC_LOCK";
	case CAP_SYS_ADMIN: return "CAP_SYS_ADMIN";
	case CAP_SYS_NICE: return "CAP_SYS_NICE";
	case CAP_PERFMON: return "CAP_PERFMON";
	case CAP_BPF: return "CAP_BPF";
	default: return "a capability";
	}
}

/* 1 if the effective set holds `cap`, 0 if not, -1 if the kernel would not say. */
static int has_cap(int cap)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &hdr, data))
		return -1;
	return !!(data[CAP_TO_INDEX(cap)].effective & CAP_TO_MASK(cap));
}

/* CAP_SYS_ADMIN still covers CAP_BPF and CAP_PERFMON, which Linux 5.8 split off it. */
int tw_lacks_cap(int cap)
{
	if (has_cap(cap) != 0)
		return 0;
	return !((cap == CAP_BPF || cap == CAP_PERFMON) && has_cap(CAP_SYS_ADMIN) == 1);
}

static void join_names(char *buf, size_t len, const int *caps, int want_missing)
{
	const char *sep = "";
	size_t used = strlen(buf);

	for (; *caps >= 0 && used < len; caps++) {
		if (tw_lacks_cap(*caps) != want_missing)
			continue;
		used += snprintf(buf + used, len - used, "%s%s", sep, cap_name(*caps));
		sep = " and ";
	}
}

const char *tw_caps_explain(char *buf, size_t len, const int *caps, const char *why)
{
	int any_missing = 0;

	for (const int *c = caps; *c >= 0; c++)
		any_missing |= tw_lacks_cap(*c);
	snprintf(buf, len, " (this process %s ", any_missing ? "lacks" : "has");
	join_names(buf, len, caps, any_missing);
	if (strlen(buf) < len) {
		size_t used = strlen(buf);

		if (any_missing)
			snprintf(buf + used, len - used, ", needed to %s)", why);
		else
			snprintf(buf + used, len - used,
				 ": a seccomp profile or security module refused?)");
	}
	return buf;
}

const char *tw_memlock_explain(char *buf, size_t len, size_t umem_bytes)
{
	struct rlimit lim;
	char limit[32] = "unknown";

	buf[0] = '\0';
	if (!tw_lacks_cap(CAP_IPC_LOCK))
		return buf;
	if (getrlimit(RLIMIT_MEMLOCK, &lim) == 0 && lim.rlim_cur == RLIM_INFINITY)
		snprintf(limit, sizeof(limit), "unlimited");
	else if (getrlimit(RLIMIT_MEMLOCK, &lim) == 0)
		snprintf(limit, sizeof(limit), "%g MiB", lim.rlim_cur / MIB);
	snprintf(buf, len, " (this process lacks CAP_IPC_LOCK, so the UMEM's %g MiB are charged to "
		 "RLIMIT_MEMLOCK, %s, shared by every process of this user: grant CAP_IPC_LOCK, or "
		 "raise the memlock limit (prlimit --memlock, systemd LimitMEMLOCK=))",
		 umem_bytes / MIB, limit);
	return buf;
}
