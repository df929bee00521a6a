/* cmd_run_keeper.h — the daemon's place among the instances sharing its
 * state (cluster.h): the lease keeper thread, and the checks the watcher
 * sessions and the processor make before they work.
 *
 * The keeper joins the cluster on a connection of its own, heartbeats
 * every third of the lease time (renewing every lease held) and deals the
 * work out:
 *   - each mapped folder under a lease "mailbox:NAME": an instance takes
 *     up to its fair share, ceil(folders / live instances) (live: a
 *     heartbeat younger than the lease time), and beyond it only what
 *     nobody else has held for a while; above its share (an instance
 *     joined) it gives the excess up between two fetches of the folder;
 *   - the parse stage under the lease "stage:process", one instance at a
 *     time.
 * A lease whose holder stopped renewing is taken as soon as it expires
 * (the keeper wakes at the expiry it saw).  The checks are local
 * (cluster_lease_held): a lease not renewed ends its work at its local
 * deadline, before another instance may start it.
 *
 * It also keeps the daemon's view of the state database: unreachable
 * (logged once as store.unavailable, /healthz 503, work paused) until
 * some thread reaches it again (store.resumed, with the time waited).
 *
 * Every call takes a NULL keeper (run --once, no cluster): the work is
 * then always ours. */
#ifndef MAILFEED_CMD_RUN_KEEPER_H
#define MAILFEED_CMD_RUN_KEEPER_H

#include <stddef.h>
#include <stdint.h>

struct keeper;

#define KEEPER_PROCESS_LEASE "stage:process"

/* Opens a connection of its own on state, joins the cluster (lease_ms)
 * and starts the thread.  proc_wake_fd is woken when the parse stage's
 * lease is taken.  NULL with the reason in err. */
struct keeper *keeper_start(const char *state, int64_t lease_ms, int proc_wake_fd, char *err,
			    size_t errlen);
/* Stops the thread, gives every lease up and leaves the cluster. */
void keeper_stop(struct keeper *k);
/* The same, but the keeper stays allocated (and its local checks answer
 * "not ours"): for when a session thread that could not be stopped may
 * still ask it. */
void keeper_leave(struct keeper *k);
const char *keeper_instance_id(const struct keeper *k);
int64_t keeper_lease_ms(const struct keeper *k);

/* The folders to lease (mapping names, copied), and the eventfds of the
 * sessions to wake when a lease is taken, lost or given up (NULL, 0 before
 * the sessions close them). */
void keeper_set_mailboxes(struct keeper *k, const char *const *names, size_t n);
void keeper_set_wakers(struct keeper *k, const int *fds, size_t n);

/* Local checks.  may_work: the folder's lease is held, not being given up,
 * and the state database is not known unreachable.  begin: the same, and
 * marks the folder busy (it is not given up) until keeper_end.  held: the
 * lease alone (the check before each store).  left: seconds until the local
 * deadline (a large number without a keeper). */
int keeper_may_work(struct keeper *k, const char *mailbox);
int keeper_begin(struct keeper *k, const char *mailbox);
void keeper_end(struct keeper *k, const char *mailbox);
int keeper_held(struct keeper *k, const char *mailbox);
double keeper_left(struct keeper *k, const char *mailbox);
/* Whether this instance runs the parse stage now. */
int keeper_process_held(struct keeper *k);

/* The state database could not be reached (reason), or was reached. */
void keeper_store_unavailable(struct keeper *k, const char *reason);
void keeper_store_available(struct keeper *k);
int keeper_store_away(void);

#endif
