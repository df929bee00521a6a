/* loopback.c — "loopback only" as an address test, never as a string
 * prefix: literals are parsed, names resolved, and every address must be
 * in 127.0.0.0/8 or ::1. */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>

#include "mailfeed/loopback.h"

int sockaddr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in4 = (const struct sockaddr_in *)(const void *)sa;
		return (ntohl(in4->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		const unsigned char *b = in6->sin6_addr.s6_addr;
		if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			return 1;
		return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && b[12] == 127;
	}
	return 0;
}

int host_loopback_only(const char *host)
{
	char name[256];
	size_t n;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
	int any = 0, all = 1;

	if (!host || !*host)
		return 0;
	n = strlen(host);
	if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
		host++;
		n -= 2;
	}
	if (n >= sizeof name)
		return 0;
	memcpy(name, host, n);
	name[n] = '\0';
	hints.ai_flags = AI_NUMERICHOST;
	if (getaddrinfo(name, NULL, &hints, &res) != 0) {
		/* a name: what it resolves to now */
		hints.ai_flags = 0;
		res = NULL;
		if (getaddrinfo(name, NULL, &hints, &res) != 0)
			return 0;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		any = 1;
		if (!sockaddr_is_loopback(ai->ai_addr))
			all = 0;
	}
	freeaddrinfo(res);
	return any && all;
}
