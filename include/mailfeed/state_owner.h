/* state_owner.h — one daemon per state database, and commands started as
 * root running as the state's owner.  A PostgreSQL state is left alone
 * (its server does the locking and owns its files). */
#ifndef MAILFEED_STATE_OWNER_H
#define MAILFEED_STATE_OWNER_H

#include <stddef.h>

/* Takes the daemon lock of state (STATE.lock, fcntl write lock, pid
 * inside), kept until the process ends; *fd is the lock's descriptor (-1
 * when there is none to hold).  Returns 0, or -1 with one line in err that
 * names the running daemon's pid. */
int state_lock_take(const char *state, int *fd, char *err, size_t errlen);
/* The pid of the daemon holding the lock of state, or 0. */
long state_lock_holder(const char *state);
/* check-config: the directory of a SQLite state must exist (the service's
 * own /var/lib/mailfeed is made by systemd).  0, or -1 with err. */
int state_dir_check(const char *state, char *err, size_t errlen);
/* When running as root and the state (or its directory) belongs to another
 * user, becomes that user (groups, gid, uid).  Returns 0 (switched, or
 * nothing to do), or -1 with a refusal in err. */
int state_run_as_owner(const char *state, char *err, size_t errlen);

#endif
