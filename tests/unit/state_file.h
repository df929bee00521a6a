/* state_file.h — a scratch state database for unit tests: a path of its
 * own under /tmp per test program and process, and its removal with the
 * SQLite side files (-wal, -shm). */
#ifndef MAILFEED_TEST_STATE_FILE_H
#define MAILFEED_TEST_STATE_FILE_H

#include <stdio.h>
#include <unistd.h>

/* Removes path and its -wal and -shm files. */
static inline void state_file_remove(const char *path)
{
	char side[300];
	unlink(path);
	snprintf(side, sizeof side, "%s-wal", path);
	unlink(side);
	snprintf(side, sizeof side, "%s-shm", path);
	unlink(side);
}

/* Writes /tmp/mf-test-NAME-PID.db into path and makes sure nothing is
 * there yet. */
static inline void state_file_new(char *path, size_t n, const char *name)
{
	snprintf(path, n, "/tmp/mf-test-%s-%d.db", name, (int)getpid());
	state_file_remove(path);
}

#endif
