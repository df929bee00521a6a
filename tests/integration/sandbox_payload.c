/* sandbox_payload.c — a stand-in for an exploit of the MIME parser, for
 * tests/integration/test_sandbox.py.  Loaded with LD_PRELOAD into mailfeed;
 * it acts only in the parse worker (`mailfeed parse-worker`), where it
 * stands between the parser and the message (GMime's memory stream, or
 * libetpan's mailmime_parse).  A message holding
 * "PAYLOAD:<attack>" makes it try that attack from inside the worker, after
 * the sandbox is set up, as code run by a heap overflow would:
 *   read-secret    open and read $PAYLOAD_SECRET
 *   write-file     create $PAYLOAD_DROP
 *   socket         connect to 127.0.0.1:$PAYLOAD_PORT
 *   signal-parent  SIGTERM to the daemon
 *   exec           run /bin/sh to create $PAYLOAD_DROP
 *   spin           burn CPU for $PAYLOAD_SPIN seconds (default 3600)
 *                  without a system call, as a parser stuck on crafted
 *                  input would
 * It says on stderr "payload ATTACK: blocked" when the call failed, or
 * "payload ATTACK: SUCCEEDED ..." when it did not; when blocked it gives up
 * (exit status 66), when not it lets the message be parsed.
 * Calls the sandbox does not allow kill the worker before it can say
 * anything.  Other messages go to the real parser. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct mailmime;
typedef int (*parse_fn)(const char *, size_t, size_t *, struct mailmime **);
typedef void *(*stream_fn)(const unsigned char *, size_t);

static parse_fn real_parse;
static stream_fn real_stream;
static int succeeded;
static int in_worker;
static pid_t daemon_pid;
static char secret[4096], drop[4096];
static int port;
static long spin_seconds = 3600;

__attribute__((constructor)) static void payload_init(int argc, char **argv)
{
	in_worker = argc > 1 && strcmp(argv[1], "parse-worker") == 0;
	real_parse = (parse_fn)dlsym(RTLD_NEXT, "mailmime_parse");
	real_stream = (stream_fn)dlsym(RTLD_NEXT, "g_mime_stream_mem_new_with_buffer");
	daemon_pid = getppid();
	const char *s = getenv("PAYLOAD_SECRET"), *d = getenv("PAYLOAD_DROP"),
		   *p = getenv("PAYLOAD_PORT");
	snprintf(secret, sizeof secret, "%s", s ? s : "");
	snprintf(drop, sizeof drop, "%s", d ? d : "");
	port = p ? atoi(p) : 0;
	if (getenv("PAYLOAD_SPIN"))
		spin_seconds = atol(getenv("PAYLOAD_SPIN"));
}

static void say(const char *attack, int ok, const char *what)
{
	char line[512];
	int n = snprintf(line, sizeof line, "payload %s: %s %s errno=%d\n", attack,
			 ok ? "SUCCEEDED" : "blocked", what, ok ? 0 : errno);
	succeeded |= ok;
	if (write(2, line, (size_t)n) < 0)
		_exit(1);
}

static void attack(const char *name)
{
	if (!strcmp(name, "read-secret")) {
		int fd = open(secret, O_RDONLY);
		char b[200] = "";
		if (fd >= 0 && read(fd, b, sizeof b - 1) >= 0)
			say(name, 1, b);
		else
			say(name, 0, "");
	} else if (!strcmp(name, "write-file")) {
		int fd = open(drop, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		say(name, fd >= 0 && write(fd, "pwned\n", 6) == 6, drop);
	} else if (!strcmp(name, "socket")) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		say(name, fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "");
	} else if (!strcmp(name, "signal-parent")) {
		say(name, kill(daemon_pid, SIGTERM) == 0, "");
	} else if (!strcmp(name, "spin")) {
		struct timespec t0, t;
		clock_gettime(CLOCK_MONOTONIC, &t0); /* the vDSO: no system call */
		do
			clock_gettime(CLOCK_MONOTONIC, &t);
		while (t.tv_sec - t0.tv_sec < spin_seconds);
		say(name, 0, "gave up");
	} else if (!strcmp(name, "exec")) {
		char cmd[4200];
		snprintf(cmd, sizeof cmd, "echo pwned > '%s'", drop);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		say(name, 0, "");
	}
}

/* The attack a message asks for, if any; gives up when it was blocked. */
static void maybe_attack(const char *message, size_t length)
{
	const char *p = in_worker ? memmem(message, length, "PAYLOAD:", 8) : NULL;
	if (!p)
		return;
	char name[32];
	size_t n = 0;
	for (p += 8; p < message + length && n + 1 < sizeof name &&
		     (*p == '-' || (*p >= 'a' && *p <= 'z'));
	     p++)
		name[n++] = *p;
	name[n] = 0;
	attack(name);
	if (!succeeded)
		_exit(66);
}

int mailmime_parse(const char *message, size_t length, size_t *indx, struct mailmime **result)
{
	maybe_attack(message, length);
	return real_parse(message, length, indx, result);
}

void *g_mime_stream_mem_new_with_buffer(const unsigned char *buffer, size_t len)
{
	maybe_attack((const char *)buffer, len);
	return real_stream(buffer, len);
}
