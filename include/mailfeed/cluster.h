/* cluster.h — several instances sharing one state database (db.h): who is
 * running and leases on named work (a mailbox to watch).  The same calls
 * on SQLite (instances on one host) and PostgreSQL (instances on several
 * hosts).  Claims on work items are kept by the tables they claim
 * (claims.h: the outbox, digest runs, queued notices).
 *
 * Time: lease expiries are in the database's clock
 * (db_now_ms), so hosts with different clocks agree on them.  Each
 * instance also keeps a local deadline on its monotonic clock, started
 * when it sent the request that got or renewed the lease: the lease is
 * held locally for 90% of its length from that moment, which ends before
 * the database lets another instance take it over.
 *
 * Lease rules:
 *   - one holder per name at a time; acquiring succeeds when the name is
 *     free, already ours, or its holder's expiry has passed (take-over);
 *   - the holder renews (cluster_heartbeat, every third of the lease) and
 *     must stop the work when cluster_lease_held() says 0: a renewal that
 *     failed (database away, process paused) ends the right to work when
 *     the local deadline passes, before any other instance may start;
 *   - each change of holder bumps the lease's epoch (a fencing number). */
#ifndef MAILFEED_CLUSTER_H
#define MAILFEED_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "mailfeed/db.h"

#define CLUSTER_LEASE_MS_DEFAULT 30000

struct cluster;

/* Migrates the cluster tables and registers this instance (host name,
 * pid, version).  lease_ms <= 0 takes CLUSTER_LEASE_MS_DEFAULT.  The db
 * stays the caller's and must outlive the cluster.  NULL with the reason
 * in err (db_unavailable(db) tells whether to retry). */
struct cluster *cluster_open(struct db *db, const char *version, int64_t lease_ms, char *err,
			     size_t errlen);
/* Releases this instance's leases and removes its row (best effort). */
void cluster_close(struct cluster *cl);
/* The same without freeing: the local checks stay safe to call from
 * threads that may still run (they answer "not held"). */
void cluster_leave(struct cluster *cl);
const char *cluster_instance_id(const struct cluster *cl);
int64_t cluster_lease_ms(const struct cluster *cl);

/* Updates this instance's heartbeat and renews every lease it holds.
 * Returns the number of leases lost (another holder, or expired), or -1
 * when the database could not be asked (the leases stay held until their
 * local deadlines). */
int cluster_heartbeat(struct cluster *cl);

/* 1 held (acquired, taken over, or already ours and renewed), 0 held by
 * another live instance, -1 error. *epoch (may be NULL) gets the epoch. */
int cluster_lease_acquire(struct cluster *cl, const char *name, int64_t *epoch);
/* 1 renewed, 0 lost, -1 error (still held until the local deadline). */
int cluster_lease_renew(struct cluster *cl, const char *name);
/* Gives the lease up at once, so another instance may take it now. */
int cluster_lease_release(struct cluster *cl, const char *name);
/* Local check, no database: 1 while the lease is ours and its local
 * deadline has not passed.  The local checks may be called from any
 * thread while one other thread asks the database through the cluster. */
int cluster_lease_held(const struct cluster *cl, const char *name);
/* Seconds left of the local deadline (0 when not held). */
double cluster_lease_left(const struct cluster *cl, const char *name);
/* Local: how many leases whose names start with prefix are held. */
int cluster_leases_held(const struct cluster *cl, const char *prefix);

/* What the database says of the leases whose names start with prefix. */
struct cluster_lease {
	const char *name, *holder;
	int64_t left_ms; /* until it expires, in the database's clock; 0: free */
	int64_t epoch;
	int mine; /* held by this instance in the database */
};
/* Calls fn for each, by name.  0 or -1. */
int cluster_leases(struct cluster *cl, const char *prefix,
		   void (*fn)(const struct cluster_lease *l, void *arg), void *arg);

/* --- instances --------------------------------------------------------- */

struct cluster_instance {
	const char *id, *host, *version;
	int64_t pid, started_ms, heartbeat_ms;
	const char *holds; /* lease names held and not expired, comma-separated ("" none) */
	int64_t now_ms;	   /* the database's clock when asked (heartbeat age) */
};

/* Calls fn for every registered instance, oldest first.  0 or -1.  An
 * instance that stopped without cluster_close (killed, host lost) stays
 * listed with its last heartbeat for a day. */
int cluster_instances(struct cluster *cl, void (*fn)(const struct cluster_instance *in, void *arg),
		      void *arg);
/* The same on a database, without joining (for `status`): 0 and no call
 * when no instance ever joined on it. */
int cluster_instances_db(struct db *db, void (*fn)(const struct cluster_instance *in, void *arg),
			 void *arg);
/* Instances whose heartbeat is younger than this instance's lease time
 * (this one included), or -1. */
int cluster_live_instances(struct cluster *cl);

#endif
