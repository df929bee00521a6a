/* metrics.h — Prometheus text-format metrics, for node_exporter's textfile
 * collector ([gateway] metrics_file) or a loopback HTTP listener
 * ([gateway] metrics_listen). */
#ifndef MAILFEED_METRICS_H
#define MAILFEED_METRICS_H

#include "mailfeed/config.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

/* Renders the current metrics into b. */
void metrics_render(struct store *st, const struct mf_config *cfg, struct buf *b);
/* Writes metrics_file atomically when configured. */
void metrics_write(struct store *st, const struct mf_config *cfg);

/* The metrics_listen endpoint: a thread answering GET /metrics over
 * HTTP/1.0 with metrics_render() of its own connection to state_path.
 * addr is "127.0.0.1:9464", "[::1]:9464" or "localhost:9464"; other than
 * loopback addresses are refused.  Port 0 picks a free port (see
 * metrics_server_port).  Returns NULL with a message in err when the
 * address is refused or cannot be bound.  The caller owns the result and
 * ends it with metrics_server_stop(), which returns once the thread is
 * gone and frees everything. */
struct metrics_server;
struct metrics_server *metrics_server_start(const char *addr, const char *state_path, char *err,
					    size_t errlen);
/* The same, also serving the one-click unsubscribe (RFC 8058) under
 * /unsubscribe/TOKEN: tokens of token.h checked with secret (copied).  GET
 * answers a page whose button POSTs; POST ends the subscription
 * (idempotent); a forged token answers 404, an expired one 410, and
 * neither changes anything. */
struct metrics_server *metrics_server_start_unsubscribe(const char *addr, const char *state_path,
							const unsigned char *secret,
							size_t secretlen, char *err, size_t errlen);
int metrics_server_port(const struct metrics_server *ms);
void metrics_server_stop(struct metrics_server *ms);

#endif
