/* steering.h - the XDP steering program an interface's engines share (see steering.c). */
#ifndef TW_STEERING_H
#define TW_STEERING_H

#include <stddef.h>
#include <stdint.h>

struct tw_steering;

struct tw_steering_line {
	uint32_t group_be;
	uint32_t source_be;  /* 0: any source */
	uint16_t port_be;
	uint16_t vlan;       /* 0: any VLAN (or none) */
};

struct tw_steering_request {
	const char *root;        /* bpffs directory holding every interface's pins */
	const char *ifname;
	int ifindex;
	uint32_t queue;          /* the RX queue this engine owns */
	int xdp_mode;            /* TW_XDP_*: wanted (auto takes whatever the interface has) */
	const char *bpf_object;  /* steer.bpf.o, loaded only by the first engine on the interface */
	uint32_t n_lines;
	struct tw_steering_line lines[2];
	int xsk_fd;              /* the queue's AF_XDP socket, stocked and ready to receive */
};

struct tw_steering_result {
	int xdp_mode;            /* TW_XDP_NATIVE or TW_XDP_GENERIC: how the program is attached */
	uint32_t prog_id;
	int attached;            /* 1: this engine loaded and attached the program */
	char note[200];          /* what was cleaned up on the way (a killed engine's flows), or "" */
};

/* Take `queue` of the interface (before its AF_XDP socket is made, so that a queue another live
 * engine owns is reported as such, not as the kernel's EBUSY). 0, or a negative errno with a
 * message: -EADDRINUSE when a live engine owns the queue. */
int tw_steering_claim(const struct tw_steering_request *req, struct tw_steering **out, char *err,
		      size_t errlen);
/* Steer the lines to `req->xsk_fd` (stocked and ready to receive): loads, pins and attaches the
 * program if the interface has none of ours. 0, or a negative errno with a message: -EADDRINUSE
 * when a flow belongs to another live engine, a foreign XDP program sits on the interface, or
 * the shared program runs in another mode than the one asked for (no retry helps). On failure
 * the caller still calls tw_steering_leave(). */
int tw_steering_join(struct tw_steering *s, const struct tw_steering_request *req,
		     struct tw_steering_result *result, char *err, size_t errlen);
/* Remove this engine's flows and socket; the last engine out detaches and unpins everything.
 * Idempotent on NULL. */
void tw_steering_leave(struct tw_steering *s);

#endif
