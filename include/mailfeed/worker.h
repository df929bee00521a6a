/* worker.h — the sandboxed MIME parse worker.
 *
 * A parser fed hostile mail is where crashes and quadratic paths are met,
 * so mail is parsed in a child process (`mailfeed parse-worker`) with resource
 * limits.  A message that kills, hangs or exhausts the child is "poison":
 * it is reported with a reason and the child is restarted for the next
 * message, so one bad mail never stops the gateway. */
#ifndef MAILFEED_WORKER_H
#define MAILFEED_WORKER_H

#include <stddef.h>

#include "mailfeed/config.h"
#include "mailfeed/message.h"

struct parse_worker;

/* Spawns the worker (lazily re-spawned after a failure).  gw's limits are
 * copied (parse_timeout, parse_memory, and max_message_size for the size
 * check before a message is handed over).
 * Never NULL; a spawn failure shows up as -1 from worker_parse. */
struct parse_worker *worker_new(const struct mf_gateway *gw);
/* Parses raw (len bytes) in the worker.  Returns 0 with *out owned by the
 * caller; 1 when the message is poison (reason says why: "parser crashed
 * (signal 11)", "parser timed out after 20 s", ...); -1 on an internal
 * error (reason says what), in which case the message is not to blame. */
int worker_parse(struct parse_worker *w, const char *raw, size_t len, struct mf_message **out,
		 char *reason, size_t reasonlen);
/* One message of a batch: raw and len in; msg, rc and reason out, with
 * the meaning worker_parse gives them. */
struct worker_job {
	const char *raw;
	size_t len;
	struct mf_message *msg; /* owned by the caller when rc is 0, else NULL */
	int rc;
	char reason[256];
};
/* Parses n messages in order, writing each to the worker while it parses
 * the one before.  A message that kills or hangs the worker is poison and
 * the ones after it go to a fresh worker, as with worker_parse. */
void worker_parse_batch(struct parse_worker *w, struct worker_job *jobs, size_t n);

/* Where worker_parse_stream takes messages from and gives outcomes to. */
struct worker_feed {
	/* The next message (raw and len set), or NULL when there is none.  The
	 * job stays the caller's and must live, raw included, until done has
	 * been called with it. */
	struct worker_job *(*next)(void *ctx);
	/* The outcome of a job (msg, rc, reason), in the order of next —
	 * except that a message over the parse limits (parse_limits.h) is
	 * poison as soon as it is taken, before those ahead of it. */
	void (*done)(void *ctx, struct worker_job *job);
	void *ctx;
};
/* As worker_parse_batch, for messages that come one by one: the next ones
 * are taken (a few ahead) while the worker parses, so that fetching them
 * and parsing them overlap. */
void worker_parse_stream(struct parse_worker *w, const struct worker_feed *feed);
/* tick(arg) is called at least every 100 ms while a stream or batch is
 * parsed, however long one message takes: the daemon feeds the systemd
 * watchdog there.  NULL for none (the default). */
void worker_set_tick(struct parse_worker *w, void (*tick)(void *arg), void *arg);
/* The tick worker_set_tick gave (NULL for none): a caller that waits while
 * another thread streams through the worker sets none for that thread and
 * calls it itself. */
void worker_get_tick(const struct parse_worker *w, void (**tick)(void *arg), void **arg);
/* Stops the child and frees w.  NULL is allowed. */
void worker_free(struct parse_worker *w);

#endif
