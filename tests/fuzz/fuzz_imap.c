/* fuzz_imap.c — the IMAP client (src/imap.c over libetpan's response
 * parser) on arbitrary server bytes.  The input is everything the server
 * says on one connection: a greeting, then answers.  The session runs
 * login, select, search, fetch, an after-action and one wait over a
 * socketpair; whatever arrives must be refused or read within the
 * limits, never crash, hang or grow memory past max_message_size. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mailfeed/config.h"
#include "mailfeed/imap.h"

struct feed {
	int fd;
	const uint8_t *data;
	size_t size;
};

/* Plays the server: sends the input, then reads and drops what the client
 * sends until it hangs up. */
static void *serve(void *arg)
{
	struct feed *f = arg;
	size_t off = 0;
	char sink[4096];
	while (off < f->size) {
		ssize_t n = send(f->fd, f->data + off, f->size - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (recv(f->fd, sink, sizeof sink, MSG_DONTWAIT) == 0)
			break;
		usleep(100);
	}
	shutdown(f->fd, SHUT_WR);
	while (recv(f->fd, sink, sizeof sink, 0) > 0)
		;
	return NULL;
}

static int take(const struct imap_fetched *m, void *arg)
{
	size_t *total = arg;
	if (m->raw)
		*total += m->raw_len;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char pwfile[64];
	if (!pwfile[0]) {
		snprintf(pwfile, sizeof pwfile, "/tmp/fuzz_imap_pw.%d", (int)getpid());
		FILE *f = fopen(pwfile, "w");
		if (!f)
			abort();
		fputs("secret\n", f);
		fclose(f);
	}
	struct mf_account acct = {.name = "fuzz",
				  .host = "127.0.0.1",
				  .port = 143,
				  .tls = TLS_NONE,
				  .username = "alice",
				  .password_file = pwfile,
				  .timeout = 1,
				  .poll_interval = 1,
				  .idle_restart = 60};
	int sv[2];
	char err[512];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	struct feed f = {.fd = sv[1], .data = data, .size = size};
	pthread_t t;
	if (pthread_create(&t, NULL, serve, &f) != 0) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	struct imap_session *s = imap_open_fd(&acct, sv[0], 65536, err, sizeof err);
	if (s) {
		struct imap_folder_info info;
		uint32_t *uids = NULL;
		size_t n = 0, total = 0;
		int ok = imap_select(s, "INBOX", &info, err, sizeof err) == 0 &&
			 imap_search_from(s, 1, &uids, &n, err, sizeof err) == 0 &&
			 imap_fetch(s, uids, n, 65536, take, &total, err, sizeof err) == 0;
		if (ok && n > 0)
			ok = imap_after(s, AFTER_MOVE, "Archive", uids, n, err, sizeof err) == 0;
		if (ok)
			imap_wait(s, -1, 0, err, sizeof err);
		free(uids);
		imap_abort(s);
	}
	pthread_join(t, NULL);
	close(sv[1]);
	return 0;
}
