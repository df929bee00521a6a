/* health.h — liveness facts of the running daemon, for GET /healthz.
 *
 * Each part that must keep moving (a folder watcher, the processor that
 * parses and delivers the outbox) has a slot.  It beats whenever it makes
 * progress, saying by when it will beat again at the latest; before a
 * known wait (a reconnect backoff, an account refused at login, a failing
 * state database) it says why and until when instead.  A part that is past
 * its promise and not backing off makes the daemon unhealthy.  Thread-safe;
 * the times are monotonic seconds (now_monotonic()). */
#ifndef MAILFEED_HEALTH_H
#define MAILFEED_HEALTH_H

#include "mailfeed/util.h"

enum health_wait {
	HEALTH_BACKOFF,	     /* reconnecting or retrying after an error */
	HEALTH_AUTH_BACKOFF, /* the account was refused at login */
	HEALTH_STANDBY,	     /* another instance does this work now */
};

/* The longest one step may take without progress (one message fetched,
 * one batch processed): 600 s. */
double health_step(void);
/* A slot named e.g. "mailbox team" or "processor"; -1 when full. */
int health_register(const char *name);
/* Forgets a slot (a watcher stopped on reload). */
void health_unregister(int slot);
/* Progress now; the next beat comes within `within` seconds. */
void health_beat(int slot, double within);
/* A known wait of `seconds` for `reason` (copied); a beat ends it. */
void health_wait(int slot, enum health_wait kind, double seconds, const char *reason);
/* Makes slot the calling thread's own, for health_beat_current() deep in
 * a long step (one beat per message fetched, say). */
void health_bind(int slot);
void health_beat_current(double within);
/* Forgets every slot (the daemon's end, tests). */
void health_reset(void);

/* The state database cannot be reached, for reason (copied); NULL: it can
 * again.  While it cannot, the daemon reports unhealthy with the reason
 * and how long it has waited, though nothing is stuck: the work waits. */
void health_set_unavailable(const char *reason);
/* 1 while the state database is known unreachable. */
int health_unavailable(void);

/* 1 healthy, 0 not.  out (may be NULL) receives one line per slot that
 * is late or waiting, "ok" lines otherwise, each "NAME: what". */
int health_report(struct buf *out);

#endif
