/* sandbox.h — what the parse worker gives up before it reads any mail.
 *
 * The parser (libetpan) has known memory-safety bugs on crafted input, so
 * the worker is assumed to be taken over by the next hostile message.  Once
 * it has loaded everything it needs, it keeps only its socket (0, 1) and
 * its log pipe (2) to the daemon, moves into new user, mount and network
 * namespaces where the system allows it, and installs a seccomp allow-list:
 * reading its socket, writing its socket and log, memory, clocks, futexes
 * and leaving.  Files cannot be opened (EACCES, so that a library probing
 * for an optional file fails softly); any other system call — a socket, a
 * signal, a new process — kills the worker, and its message is poison. */
#ifndef MAILFEED_SANDBOX_H
#define MAILFEED_SANDBOX_H

#include <stddef.h>

/* Loads what parsing would otherwise load lazily from files once the
 * sandbox is in place: the MIME library's set-up, the time zone,
 * charset converters, the crypto library's configuration. */
void sandbox_preload(void);

/* Enters the sandbox described above.  Namespaces are best effort (a
 * debug line says when they are not available); returns 0, or -1 with err
 * set when the seccomp filter could not be installed — the worker must not
 * parse then. */
int sandbox_enter(char *err, size_t errlen);

#endif
