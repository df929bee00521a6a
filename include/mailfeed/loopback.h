/* loopback.h — one answer to "is this host on this machine only?" for every
 * rule that allows something on loopback alone (plain IMAP or HTTP, SMTP
 * without STARTTLS, the metrics listener, the Host header it accepts). */
#ifndef MAILFEED_LOOPBACK_H
#define MAILFEED_LOOPBACK_H

#include <sys/socket.h>

/* 1 when host (an IP literal, "[::1]", or a name) stands for loopback
 * addresses only: a literal must lie in 127.0.0.0/8 or be ::1 (or
 * ::ffff:127.x.y.z); a name is resolved and every address it gives must.
 * A name that does not resolve, or "127.example.org", is not loopback. */
int host_loopback_only(const char *host);
/* 1 when sa is in 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104. */
int sockaddr_is_loopback(const struct sockaddr *sa);

#endif
