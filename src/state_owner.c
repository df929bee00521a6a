/* state_owner.c — who may use a state database.
 *
 * One daemon per state: `mailfeed run` holds a write lock (fcntl) on
 * STATE.lock, which holds its pid; the kernel drops the lock when the
 * process ends in any way, so a crash never leaves a stale lock behind.
 * Other commands (status, dead, subscribe, ...) work beside it.
 *
 * A command started as root against the service's state runs as the
 * owner of that state (its file, or its directory before it exists):
 * groups, gid and uid are switched before anything is opened, so no file
 * the service cannot write is ever left behind.  When the switch is not
 * possible the command refuses with one line. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailfeed/log.h"
#include "mailfeed/state_owner.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

static int is_sqlite_path(const char *state) { return state && !is_pg_dsn(state); }

static char *lock_path(const char *state) { return xasprintf("%s.lock", state); }

int state_lock_take(const char *state, int *fd_out, char *err, size_t errlen)
{
	*fd_out = -1;
	if (!is_sqlite_path(state))
		return 0;
	char *path = lock_path(state);
	store_prepare_dir(state);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open the lock file %s: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	if (fcntl(fd, F_SETLK, &fl) < 0) {
		pid_t holder = 0;
		if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
			holder = fl.l_pid;
		if (holder > 0)
			snprintf(err, errlen,
				 "another mailfeed (pid %ld) is running on %s; stop it first "
				 "(systemctl stop mailfeed)",
				 (long)holder, state);
		else
			snprintf(err, errlen, "another mailfeed is running on %s (%s is locked)",
				 state, path);
		close(fd);
		free(path);
		return -1;
	}
	char pid[32];
	int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
		log_warn("state.lock path=%s note=\"cannot write the pid\"", path);
	free(path);
	*fd_out = fd;
	return 0;
}

long state_lock_holder(const char *state)
{
	if (!is_sqlite_path(state))
		return 0;
	char *path = lock_path(state);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	free(path);
	if (fd < 0)
		return 0;
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	long pid = 0;
	if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
		pid = fl.l_pid;
	close(fd);
	return pid;
}

/* The owner of the state: its file, else its directory.  0 or -1. */
static int state_owner(const char *state, struct stat *st)
{
	if (stat(state, st) == 0)
		return 0;
	char *copy = xstrdup(state);
	int rc = stat(dirname(copy), st);
	free(copy);
	return rc;
}

/* systemd's StateDirectory= makes this one when it starts the daemon */
#define SERVICE_STATE_DIR "/var/lib/mailfeed"

int state_dir_check(const char *state, char *err, size_t errlen)
{
	struct stat sb;
	if (!is_sqlite_path(state))
		return 0;
	const char *slash = strrchr(state, '/');
	char *dir =
	    slash ? xstrndup(state, slash == state ? 1 : (size_t)(slash - state)) : xstrdup(".");
	int rc = 0;
	if (strcmp(dir, SERVICE_STATE_DIR) != 0 && (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode))) {
		snprintf(err, errlen,
			 "state = %s: the directory %s does not exist; create it, owned by the "
			 "service user (the daemon creates the file, not its directory)",
			 state, dir);
		rc = -1;
	}
	free(dir);
	return rc;
}

int state_run_as_owner(const char *state, char *err, size_t errlen)
{
	struct stat st;
	if (geteuid() != 0 || !is_sqlite_path(state) || state_owner(state, &st) < 0 ||
	    st.st_uid == 0)
		return 0;
	struct passwd *pw = getpwuid(st.st_uid);
	const char *name = pw ? pw->pw_name : NULL;
	gid_t gid = pw ? pw->pw_gid : st.st_gid;
	int ok = (name ? initgroups(name, gid) : setgroups(1, &gid)) == 0 && setgid(gid) == 0 &&
		 setuid(st.st_uid) == 0;
	if (!ok || getuid() != st.st_uid || setuid(0) == 0) {
		if (name)
			snprintf(err, errlen,
				 "refusing to work as root on %s, which belongs to %s: run the "
				 "command as that user (sudo -u %s mailfeed ...)",
				 state, name, name);
		else
			snprintf(
			    err, errlen,
			    "refusing to work as root on %s, which belongs to uid %ld: run the "
			    "command as that user",
			    state, (long)st.st_uid);
		return -1;
	}
#if defined(__SANITIZE_ADDRESS__)
	/* the leak checker of sanitizer builds (tests) must be able to stop
	 * the process's threads, which a switched process forbids */
	prctl(PR_SET_DUMPABLE, 1);
#endif
	log_debug("state.owner user=%s uid=%ld", name ? name : "-", (long)st.st_uid);
	return 0;
}
