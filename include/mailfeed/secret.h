/* secret.h — passwords, tokens and keys read from private files or from a
 * command's output.  The only place that opens a secret.
 *
 * A secret file must be a regular file no larger than SECRET_MAX bytes that
 * others cannot read (see secret.c for the exact rule).  A command is split
 * on spaces and tabs (no shell), runs with stdin from /dev/null and must
 * finish within SECRET_COMMAND_TIMEOUT seconds. */
#ifndef MAILFEED_SECRET_H
#define MAILFEED_SECRET_H

#include <stddef.h>
#include <sys/stat.h>

#define SECRET_MAX (64 * 1024)
#define SECRET_COMMAND_TIMEOUT 10
/* The gateway secret signs reply tokens: at least this many random bytes. */
#define GATEWAY_SECRET_MIN 32

/* Whether st (of file) is private enough for a secret, as Debian admins
 * keep them: writable only by its owner, never readable by others, and
 * readable by a group only when that group is the reading user's (0640
 * root:mailfeed).  When check-config judges for the service user, that user
 * must also be able to read it.  0, or -1 with the reason and the command
 * that fixes it in err. */
int secret_mode_check(const char *file, const struct stat *st, char *err, size_t errlen);
/* Judge secret files for user (its uid and groups) instead of the process's
 * own: check-config run as root.  Call before any thread starts.  0, or -1
 * when there is no such user. */
int secret_judge_for(const char *user, char *err, size_t errlen);

/* Reads a secret from a *_file (refused unless secret_mode_check accepts it) or runs a
 * *_command (argv split on spaces, no shell) and takes its stdout; trailing
 * newline removed.  Exactly one of file/command non-NULL.  Returns 0, or -1
 * with a message in err. */
int secret_read(const char *file, const char *command, char **out, char *err, size_t errlen);
/* Same for binary secrets (gateway secret): raw bytes, length in *len. */
int secret_read_raw(const char *file, unsigned char **out, size_t *len, char *err, size_t errlen);

#endif
