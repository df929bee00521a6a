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

#define SECRET_MAX (64 * 1024)
#define SECRET_COMMAND_TIMEOUT 10
/* The gateway secret signs reply tokens: at least this many random bytes. */
#define GATEWAY_SECRET_MIN 32

/* Reads a secret from a *_file (refused when group/world readable) or runs a
 * *_command (argv split on spaces, no shell) and takes its stdout; trailing
 * newline removed.  Exactly one of file/command non-NULL.  Returns 0, or -1
 * with a message in err. */
int secret_read(const char *file, const char *command, char **out, char *err, size_t errlen);
/* Same for binary secrets (gateway secret): raw bytes, length in *len. */
int secret_read_raw(const char *file, unsigned char **out, size_t *len, char *err, size_t errlen);

#endif
