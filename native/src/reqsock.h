/* reqsock.h - the engine's re-request socket: MoldUDP64 requests out, the server's answers in.
 * Not part of the API. */
#ifndef TICKWIRE_REQSOCK_H
#define TICKWIRE_REQSOCK_H

#include <stddef.h>
#include <stdint.h>

#include "tickwire.h"

#define TW_REPLY_BATCH 16  /* answers taken per recvmmsg() */
#define TW_REPLY_MAX 2048  /* an answer larger than this is truncated: counted as malformed */

struct tw_reqsock {
    int fd;                /* -1: re-request is off */
    uint8_t buf[TW_REPLY_BATCH][TW_REPLY_MAX];
};

/* A non-blocking UDP socket on an ephemeral port, connected to the server (addr, port in network
 * order): the kernel then drops datagrams from any other source. 0, or a negative errno with a
 * message in err. */
int tw_reqsock_open(struct tw_reqsock *rs, uint32_t addr_be, uint16_t port_be, char *err,
                    size_t errlen);
void tw_reqsock_close(struct tw_reqsock *rs);

/* Send the requests the decoder wants now (the decoder's rate bounds them) and feed it the
 * answers waiting on the socket. Never blocks. Returns 1 if it did anything. */
int tw_reqsock_service(struct tw_reqsock *rs, struct tw_decoder *d, const struct tw_clock *now,
                       uint64_t *send_errors);

#endif
