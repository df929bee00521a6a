/* imap.c — one IMAP session over libetpan.
 *
 * Debian's libetpan (GnuTLS build) verifies no certificate, so after every
 * TLS handshake we check the peer's chain and host name ourselves with
 * OpenSSL, before a single credential is sent.  We open the socket
 * ourselves (close-on-exec, keep-alive, bounded connect, fd < 1024 because
 * the library uses select()).  Every wait is bounded by the account's
 * timeout; any error tells the caller to drop the session and reconnect. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libetpan/libetpan.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mailfeed/imap.h"
#include "mailfeed/log.h"
#include "mailfeed/mutf7.h"
#include "mailfeed/secret.h"
#include "mailfeed/util.h"

/* A backlog is fetched in batches of FETCH_BATCH uids: one UID FETCH of
 * their sizes and dates, then their bodies in sub-batches of at most
 * BODY_BATCH_BYTES as the sizes claim.  Each command is a round trip with
 * the server idle in between: with batches of 100 and 2 MB, 10,000
 * messages took 200 of them, and the take-in about a tenth longer. */
#define FETCH_BATCH 1000
#define BODY_BATCH_BYTES (8 * 1024 * 1024)
/* What a server may send beyond max_message_size in one answer: the
 * envelope of a FETCH, untagged noise, a long SEARCH line. */
#define HEADROOM (256 * 1024)
/* Limits before the first imap_fetch() says max_message_size (greeting,
 * login, capabilities are small). */
#define DEFAULT_MAX_SIZE (25LL * 1024 * 1024)
/* A command may take the account's timeout plus the time to receive what
 * arrived at this rate: a server that drips a byte now and then runs out
 * of time, a slow but honest transfer does not. */
#define MIN_RATE (64 * 1024)
/* Wake-ups that bring no wait (an EXISTS with every answer, data already
 * buffered after IDLE) come at most this often, doubling up to the
 * longest pause while they go on. */
#define QUICK_WAKE_MIN_MS 1000
#define QUICK_WAKE_MAX_MS 60000

/* The byte guard between libetpan and the connection: every read is
 * counted against the current command's budget and deadline, and a
 * literal announced larger than the literal limit ends the command before
 * libetpan allocates room for it. */
struct guard {
	mailstream_low *inner;
	struct imap_session *s;
};

struct imap_session {
	mailimap *imap;
	const struct mf_account *acct;
	int has_idle, has_move, has_uidplus;
	char *folder;	      /* selected folder, for a reconnect */
	uint32_t uidvalidity; /* of the last SELECT */
	long long max_size;
	/* the current command */
	size_t budget, got;
	size_t literal_limit;
	double started;
	int overflow;			 /* the budget or literal limit was exceeded */
	int timed_out;			 /* the deadline passed */
	unsigned long long literal_seen; /* the largest literal announced */
	/* literal scanner state */
	int lit_state; /* 0 text, 1 in {digits, 2 after }, 3 after }\r */
	unsigned long long lit_value;
	unsigned long long lit_left; /* bytes of a literal still to pass */
	/* quick wake-ups */
	double last_wake;
	long quick_ms;
	uint32_t last_exists;
	int fixed_fd; /* opened on a given socket: no reconnect */
};

static __thread enum imap_failure last_failure;

enum imap_failure imap_last_failure(void) { return last_failure; }

static void set_err(char *err, size_t errlen, const struct mf_account *a, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_err(char *err, size_t errlen, const struct mf_account *a, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(err, errlen, "account %s: ", a->name);
	if (n < 0 || (size_t)n >= errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

static const char *server_text(mailimap *imap)
{
	const char *r = imap && imap->imap_response ? imap->imap_response : "";
	return *r ? r : "no answer";
}

/* TCP connect with a deadline; returns an fd below 1024 or -1. */
static int tcp_connect(const struct mf_account *a, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
	char port[16];
	int fd = -1, gai, last_errno = 0;
	snprintf(port, sizeof port, "%d", a->port);
	gai = getaddrinfo(a->host, port, &hints, &res);
	if (gai != 0) {
		set_err(err, errlen, a, "cannot resolve %s: %s", a->host, gai_strerror(gai));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0) {
			last_errno = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
			last_errno = errno;
			close(fd);
			fd = -1;
			continue;
		}
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int pr = poll(&p, 1, (int)(a->timeout * 1000));
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		if (pr <= 0) {
			last_errno = pr == 0 ? ETIMEDOUT : errno;
		} else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
			last_errno = soerr ? soerr : errno;
		} else {
			break;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		set_err(err, errlen, a, "cannot connect to %s:%d: %s", a->host, a->port,
			strerror(last_errno ? last_errno : ECONNREFUSED));
		return -1;
	}
	int flags = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
	if (fd >= 1024) {
		/* libetpan waits with select(): an fd >= FD_SETSIZE aborts it.
		 * F_DUPFD_CLOEXEC takes the lowest free descriptor. */
		int low = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		close(fd);
		if (low < 0 || low >= 1024) {
			if (low >= 0)
				close(low);
			set_err(err, errlen, a,
				"no file descriptor below 1024 left for an IMAP connection "
				"(too many open files)");
			return -1;
		}
		fd = low;
	}
	/* libetpan also select()s on a pipe of its own (to cancel waits),
	 * made right after this: it needs two more descriptors below 1024 */
	int probe[2] = {-1, -1};
	int low_enough = pipe2(probe, O_CLOEXEC) == 0 && probe[1] < 1024;
	if (probe[0] >= 0) {
		close(probe[0]);
		close(probe[1]);
	}
	if (!low_enough) {
		close(fd);
		set_err(err, errlen, a,
			"no file descriptor below 1024 left for an IMAP connection "
			"(too many open files)");
		return -1;
	}
	return fd;
}

/* Starts a command: at most budget bytes, deadline from now. */
static void cmd_begin(struct imap_session *s, size_t budget, size_t literal_limit)
{
	s->budget = budget;
	s->literal_limit = literal_limit;
	s->got = 0;
	s->overflow = 0;
	s->timed_out = 0;
	s->literal_seen = 0;
	s->started = now_monotonic();
}

/* The usual limits: one answer up to max_message_size plus headroom. */
static void cmd_plain(struct imap_session *s)
{
	size_t lim = (size_t)s->max_size + HEADROOM;
	cmd_begin(s, lim, lim);
}

/* Passes over the bytes libetpan is about to see: follows literals and
 * notes the size of each one announced ("{N}" CRLF at a line's end).
 * Returns -1 when one is larger than the limit. */
static int guard_scan(struct imap_session *s, const unsigned char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		if (s->lit_left > 0) {
			size_t take =
			    s->lit_left < (unsigned long long)(n - i) ? (size_t)s->lit_left : n - i;
			s->lit_left -= take;
			i += take;
			continue;
		}
		unsigned char c = p[i++];
		switch (s->lit_state) {
		case 1:
			if (c >= '0' && c <= '9') {
				if (s->lit_value < (1ULL << 40))
					s->lit_value = s->lit_value * 10 + (unsigned)(c - '0');
				continue;
			}
			s->lit_state = c == '}' ? 2 : 0;
			break;
		case 2:
			s->lit_state = c == '\r' ? 3 : 0;
			break;
		case 3:
			s->lit_state = 0;
			if (c == '\n') {
				if (s->lit_value > s->literal_seen)
					s->literal_seen = s->lit_value;
				if (s->lit_value > s->literal_limit)
					return -1;
				s->lit_left = s->lit_value;
			}
			break;
		default:
			break;
		}
		if (c == '{') {
			s->lit_state = 1;
			s->lit_value = 0;
		}
	}
	return 0;
}

static ssize_t guard_read(mailstream_low *low, void *buf, size_t count)
{
	struct guard *g = low->data;
	struct imap_session *s = g->s;
	double allowed = (double)s->acct->timeout + (double)s->got / MIN_RATE;
	double left = s->started + allowed - now_monotonic();
	if (s->overflow || s->timed_out)
		return -1;
	if (left <= 0) {
		s->timed_out = 1;
		return -1;
	}
	/* the inner read waits at most what is left of the deadline */
	g->inner->timeout = (unsigned long)left + 1;
	if (count > s->budget - s->got + 1)
		count = s->budget - s->got + 1;
	ssize_t r = mailstream_low_read(g->inner, buf, count);
	if (r <= 0) {
		if (r < 0 && now_monotonic() >= s->started + allowed)
			s->timed_out = 1;
		return r;
	}
	s->got += (size_t)r;
	if (s->got > s->budget || guard_scan(s, buf, (size_t)r) < 0) {
		s->overflow = 1;
		return -1;
	}
	return r;
}

static ssize_t guard_write(mailstream_low *low, const void *buf, size_t count)
{
	struct guard *g = low->data;
	return mailstream_low_write(g->inner, buf, count);
}

static int guard_close(mailstream_low *low)
{
	struct guard *g = low->data;
	return mailstream_low_close(g->inner);
}

static int guard_get_fd(mailstream_low *low)
{
	struct guard *g = low->data;
	return mailstream_low_get_fd(g->inner);
}

static void guard_free(mailstream_low *low)
{
	struct guard *g = low->data;
	mailstream_low_free(g->inner);
	free(g);
	free(low);
}

static void guard_cancel(mailstream_low *low)
{
	struct guard *g = low->data;
	mailstream_low_cancel(g->inner);
}

static struct mailstream_cancel *guard_get_cancel(mailstream_low *low)
{
	struct guard *g = low->data;
	if (!g->inner->driver->mailstream_get_cancel)
		return NULL;
	return g->inner->driver->mailstream_get_cancel(g->inner);
}

static carray *guard_chain(mailstream_low *low)
{
	struct guard *g = low->data;
	if (!g->inner->driver->mailstream_get_certificate_chain)
		return NULL;
	return g->inner->driver->mailstream_get_certificate_chain(g->inner);
}

static mailstream_low_driver guard_driver = {
    .mailstream_read = guard_read,
    .mailstream_write = guard_write,
    .mailstream_close = guard_close,
    .mailstream_get_fd = guard_get_fd,
    .mailstream_free = guard_free,
    .mailstream_cancel = guard_cancel,
    .mailstream_get_cancel = guard_get_cancel,
    .mailstream_get_certificate_chain = guard_chain,
};

/* Puts the guard between the stream and its connection (again after
 * STARTTLS, which replaces the connection layer). */
static void guard_install(struct imap_session *s, mailstream *stream)
{
	mailstream_low *inner = mailstream_get_low(stream);
	if (!inner || inner->driver == &guard_driver)
		return;
	struct guard *g = xcalloc(1, sizeof *g);
	g->inner = inner;
	g->s = s;
	mailstream_low *low = mailstream_low_new(g, &guard_driver);
	if (!low) {
		free(g);
		return;
	}
	low->timeout = inner->timeout;
	mailstream_set_low(stream, low);
}

/* Words for a failed command: what the guard saw, else libetpan's code. */
static const char *failure_text(struct imap_session *s, int rc, char *buf, size_t len)
{
	if (s->overflow) {
		snprintf(buf, len,
			 "the server sent more than %zu bytes in one answer (max_message_size "
			 "plus headroom); connection dropped",
			 s->budget);
		return buf;
	}
	if (s->timed_out) {
		snprintf(buf, len, "the server did not finish its answer within %.0f s",
			 now_monotonic() - s->started);
		return buf;
	}
	if (rc == MAILIMAP_ERROR_STREAM)
		return "connection lost";
	return server_text(s->imap);
}

static void sni_callback(struct mailstream_ssl_context *ctx, void *data)
{
	const char *host = data;
	struct in_addr a4;
	struct in6_addr a6;
	/* SNI carries names only */
	if (inet_pton(AF_INET, host, &a4) != 1 && inet_pton(AF_INET6, host, &a6) != 1)
		mailstream_ssl_set_server_name(ctx, (char *)host);
}

/* Verifies the peer's chain against ca_file (or the system store) and its
 * name against the configured host. 0 or -1 with err. */
static int tls_check(mailstream *stream, const struct mf_account *a, char *err, size_t errlen)
{
	carray *chain = mailstream_get_certificate_chain(stream);
	X509_STORE *store = NULL;
	X509_STORE_CTX *vctx = NULL;
	STACK_OF(X509) *untrusted = NULL;
	X509 *leaf = NULL;
	int ok = -1;
	struct in_addr a4;
	struct in6_addr a6;

	if (!a->tls_verify) {
		log_warn("imap.tls_unverified account=%s host=%s note=\"tls_verify = no: the "
			 "server's certificate is NOT checked\"",
			 a->name, a->host);
		if (chain)
			mailstream_certificate_chain_free(chain);
		return 0;
	}
	if (!chain || carray_count(chain) == 0) {
		set_err(err, errlen, a, "server %s sent no certificate", a->host);
		goto out;
	}
	untrusted = sk_X509_new_null();
	for (unsigned i = 0; i < carray_count(chain); i++) {
		MMAPString *der = carray_get(chain, i);
		const unsigned char *p = (const unsigned char *)der->str;
		X509 *x = d2i_X509(NULL, &p, (long)der->len);
		if (!x)
			continue;
		if (!leaf)
			leaf = x;
		else
			sk_X509_push(untrusted, x);
	}
	if (!leaf) {
		set_err(err, errlen, a, "cannot read the certificate of %s", a->host);
		goto out;
	}
	store = X509_STORE_new();
	if (a->ca_file ? X509_STORE_load_file(store, a->ca_file) != 1
		       : X509_STORE_set_default_paths(store) != 1) {
		set_err(err, errlen, a, "cannot load CA certificates from %s",
			a->ca_file ? a->ca_file : "the system store");
		goto out;
	}
	vctx = X509_STORE_CTX_new();
	X509_STORE_CTX_init(vctx, store, leaf, untrusted);
	X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(vctx);
	X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
	if (inet_pton(AF_INET, a->host, &a4) == 1 || inet_pton(AF_INET6, a->host, &a6) == 1)
		X509_VERIFY_PARAM_set1_ip_asc(param, a->host);
	else
		X509_VERIFY_PARAM_set1_host(param, a->host, 0);
	if (X509_verify_cert(vctx) != 1) {
		int e = X509_STORE_CTX_get_error(vctx);
		if (e == X509_V_ERR_HOSTNAME_MISMATCH || e == X509_V_ERR_IP_ADDRESS_MISMATCH)
			set_err(err, errlen, a, "certificate does not match host name %s", a->host);
		else
			set_err(err, errlen, a, "certificate of %s not trusted: %s (set ca_file)",
				a->host, X509_verify_cert_error_string(e));
		goto out;
	}
	ok = 0;
out:
	if (vctx)
		X509_STORE_CTX_free(vctx);
	if (store)
		X509_STORE_free(store);
	if (leaf)
		X509_free(leaf);
	if (untrusted)
		sk_X509_pop_free(untrusted, X509_free);
	if (chain)
		mailstream_certificate_chain_free(chain);
	return ok;
}

static void drop(struct imap_session *s)
{
	if (s->imap && s->imap->imap_stream) {
		mailstream_close(s->imap->imap_stream);
		s->imap->imap_stream = NULL;
	}
}

static void read_caps(struct imap_session *s)
{
	s->has_idle = mailimap_has_idle(s->imap);
	s->has_move = mailimap_has_extension(s->imap, "MOVE");
	s->has_uidplus = mailimap_has_uidplus(s->imap);
}

/* CAPABILITY, refreshing libetpan's list (forgetting the old one first
 * when it is stale, after STARTTLS).  libetpan copies its stored list
 * after the tagged OK and crashes when a server sent none: an empty list
 * is put there first. */
static int capability_refresh(struct imap_session *s, int forget)
{
	struct mailimap_connection_info *ci = s->imap->imap_connection_info;
	struct mailimap_capability_data *cap = NULL;
	if (!ci)
		return MAILIMAP_ERROR_BAD_STATE;
	if (forget && ci->imap_capability) {
		mailimap_capability_data_free(ci->imap_capability);
		ci->imap_capability = NULL;
	}
	if (!ci->imap_capability) {
		clist *empty = clist_new();
		ci->imap_capability = empty ? mailimap_capability_data_new(empty) : NULL;
		if (!ci->imap_capability) {
			if (empty)
				clist_free(empty);
			return MAILIMAP_ERROR_MEMORY;
		}
	}
	int rc = mailimap_capability(s->imap, &cap);
	if (cap)
		mailimap_capability_data_free(cap);
	return rc;
}

/* Case-insensitive search for needle in the server's words. */
static int says(const char *text, const char *needle) { return strcasestr(text, needle) != NULL; }

/* Words for a refused login: a server that wants TLS first, or has too
 * many connections of this user, is not a wrong password. */
static void login_error(struct imap_session *s, int rc, int xoauth, char *err, size_t errlen)
{
	const struct mf_account *a = s->acct;
	const char *text = server_text(s->imap);
	const char *code = s->imap->imap_response_info && s->imap->imap_response_info->rsp_atom
			       ? s->imap->imap_response_info->rsp_atom
			       : "";
	if (rc == MAILIMAP_ERROR_STREAM) {
		set_err(err, errlen, a, "connection lost during login to %s", a->host);
	} else if (says(code, "PRIVACYREQUIRED") || says(text, "TLS") || says(text, "SSL") ||
		   says(text, "plaintext") || says(text, "secure")) {
		last_failure = IMAP_FAIL_TLS;
		set_err(err, errlen, a,
			"login refused: the server requires an encrypted connection (\"%s\"): set "
			"tls = implicit or starttls",
			text);
	} else if (says(code, "UNAVAILABLE") || says(code, "LIMIT") || says(text, "connections") ||
		   says(text, "too many")) {
		last_failure = IMAP_FAIL_NETWORK;
		set_err(err, errlen, a,
			"login refused: too many connections for %s (\"%s\"): close other clients "
			"of this account or raise the server's limit",
			a->username, text);
	} else if (says(code, "INUSE") || says(text, "try again") || says(text, "temporar")) {
		last_failure = IMAP_FAIL_NETWORK;
		set_err(err, errlen, a, "login refused for now by %s (\"%s\"): retrying later",
			a->host, text);
	} else {
		last_failure = IMAP_FAIL_AUTH;
		set_err(err, errlen, a, "login failed for %s: %s (check %s)", a->username, text,
			xoauth ? "the OAuth2 token" : "password_file");
	}
}
/* Whether the last imap_open() of this thread failed on refused
 * credentials (not on TLS, a connection limit or a busy server). */
int imap_login_refused(void) { return last_failure == IMAP_FAIL_AUTH; }

static int authenticate(struct imap_session *s, char *err, size_t errlen)
{
	const struct mf_account *a = s->acct;
	char *secret = NULL;
	char serr[256];
	int rc;
	cmd_begin(s, 64 * 1024, 64 * 1024);
	if (!s->imap->imap_connection_info || !s->imap->imap_connection_info->imap_capability) {
		/* no capabilities in the greeting: LOGINDISABLED must be known */
		capability_refresh(s, 0);
		cmd_begin(s, 64 * 1024, 64 * 1024);
	}
	int xoauth = a->auth == AUTH_XOAUTH2 ||
		     (a->auth == AUTH_AUTO && (a->oauth2_token_file || a->oauth2_token_command));
	if (xoauth) {
		if (secret_read(a->oauth2_token_file, a->oauth2_token_command, &secret, serr,
				sizeof serr) < 0) {
			set_err(err, errlen, a, "cannot read the OAuth2 token: %s", serr);
			return -1;
		}
		rc = mailimap_oauth2_authenticate(s->imap, a->username, secret);
	} else {
		if (secret_read(a->password_file, NULL, &secret, serr, sizeof serr) < 0) {
			set_err(err, errlen, a, "cannot read the password: %s", serr);
			return -1;
		}
		int disabled = mailimap_has_extension(s->imap, "LOGINDISABLED");
		int plain = a->auth == AUTH_PLAIN || (a->auth == AUTH_AUTO && disabled);
		if (!plain && disabled) {
			/* LOGIN would send the password where the server forbids it */
			explicit_bzero(secret, strlen(secret));
			free(secret);
			last_failure = IMAP_FAIL_TLS;
			set_err(err, errlen, a,
				"the server %s does not allow LOGIN on this connection "
				"(LOGINDISABLED): use tls = implicit or starttls, or auth = plain",
				a->host);
			return -1;
		}
		if (plain)
			rc = mailimap_authenticate(s->imap, "PLAIN", a->host, NULL, NULL,
						   a->username, a->username, secret, NULL);
		else
			rc = mailimap_login(s->imap, a->username, secret);
	}
	if (secret) {
		explicit_bzero(secret, strlen(secret));
		free(secret);
	}
	if (rc != MAILIMAP_NO_ERROR) {
		login_error(s, rc, xoauth, err, errlen);
		return -1;
	}
	/* Dovecot sends post-login capabilities with the OK; others may not */
	if (!mailimap_has_idle(s->imap)) {
		cmd_begin(s, 64 * 1024, 64 * 1024);
		capability_refresh(s, 0);
	}
	read_caps(s);
	return 0;
}

/* Connects (or takes the connected fd), checks TLS and logs in: s->imap
 * is a ready session or NULL. */
static int session_connect(struct imap_session *s, int fd, char *err, size_t errlen)
{
	const struct mf_account *acct = s->acct;
	mailstream *stream;
	int rc;
	s->lit_state = 0;
	s->lit_left = 0;
	last_failure = IMAP_FAIL_NETWORK;
	if (fd < 0)
		fd = tcp_connect(acct, err, errlen);
	if (fd < 0)
		return -1;
	s->imap = mailimap_new(0, NULL);
	mailimap_set_timeout(s->imap, acct->timeout);
	if (acct->tls == TLS_IMPLICIT)
		stream = mailstream_ssl_open_with_callback_timeout(fd, acct->timeout, sni_callback,
								   acct->host);
	else
		stream = mailstream_socket_open_timeout(fd, acct->timeout);
	if (!stream) {
		close(fd);
		set_err(err, errlen, acct, "TLS handshake with %s:%d failed", acct->host,
			acct->port);
		goto fail;
	}
	if (acct->tls == TLS_IMPLICIT && tls_check(stream, acct, err, errlen) < 0) {
		last_failure = IMAP_FAIL_TLS;
		mailstream_close(stream);
		goto fail;
	}
	guard_install(s, stream);
	cmd_begin(s, 64 * 1024, 64 * 1024);
	rc = mailimap_connect(s->imap, stream);
	if (rc != MAILIMAP_NO_ERROR_NON_AUTHENTICATED && rc != MAILIMAP_NO_ERROR_AUTHENTICATED) {
		char why[200];
		set_err(err, errlen, acct, "no IMAP greeting from %s:%d (%s)", acct->host,
			acct->port, failure_text(s, rc, why, sizeof why));
		goto fail;
	}
	if (acct->tls == TLS_STARTTLS) {
		cmd_begin(s, 64 * 1024, 64 * 1024);
		rc = mailimap_socket_starttls_with_callback(s->imap, sni_callback, acct->host);
		if (rc != MAILIMAP_NO_ERROR) {
			set_err(err, errlen, acct, "STARTTLS with %s failed (error %d)", acct->host,
				rc);
			goto fail;
		}
		if (tls_check(s->imap->imap_stream, acct, err, errlen) < 0) {
			last_failure = IMAP_FAIL_TLS;
			goto fail;
		}
		guard_install(s, s->imap->imap_stream);
		/* the pre-TLS capability list is stale */
		cmd_begin(s, 64 * 1024, 64 * 1024);
		if (capability_refresh(s, 1) != MAILIMAP_NO_ERROR) {
			set_err(err, errlen, acct, "CAPABILITY after STARTTLS failed");
			goto fail;
		}
	}
	if (authenticate(s, err, errlen) < 0)
		goto fail;
	last_failure = IMAP_FAIL_NONE;
	return 0;
fail:
	drop(s);
	mailimap_free(s->imap);
	s->imap = NULL;
	return -1;
}

struct imap_session *imap_open(const struct mf_account *acct, char *err, size_t errlen)
{
	struct imap_session *s = xcalloc(1, sizeof *s);
	s->acct = acct;
	s->max_size = DEFAULT_MAX_SIZE;
	if (session_connect(s, -1, err, errlen) < 0) {
		free(s);
		return NULL;
	}
	return s;
}

struct imap_session *imap_open_fd(const struct mf_account *acct, int fd, long long max_size,
				  char *err, size_t errlen)
{
	struct imap_session *s = xcalloc(1, sizeof *s);
	s->acct = acct;
	s->max_size = max_size;
	s->fixed_fd = 1;
	if (session_connect(s, fd, err, errlen) < 0) {
		free(s);
		return NULL;
	}
	return s;
}

/* After an answer the guard cut off: a new connection, the same folder
 * selected again.  Fails when the folder's UIDVALIDITY changed meanwhile,
 * since the UIDs in hand would then mean other messages. */
static int session_reopen(struct imap_session *s, char *err, size_t errlen)
{
	uint32_t uidvalidity = s->uidvalidity;
	drop(s);
	mailimap_free(s->imap);
	s->imap = NULL;
	if (s->fixed_fd) {
		set_err(err, errlen, s->acct, "connection dropped after an oversized answer");
		return -1;
	}
	if (session_connect(s, -1, err, errlen) < 0)
		return -1;
	if (!s->folder)
		return 0;
	char *wire = mutf7_encode(s->folder);
	if (!wire)
		return -1;
	cmd_plain(s);
	int rc = mailimap_select(s->imap, wire);
	free(wire);
	if (rc != MAILIMAP_NO_ERROR) {
		char why[200];
		set_err(err, errlen, s->acct, "cannot select folder %s again: %s", s->folder,
			failure_text(s, rc, why, sizeof why));
		return -1;
	}
	struct mailimap_selection_info *si = s->imap->imap_selection_info;
	if (!si || si->sel_uidvalidity != uidvalidity) {
		set_err(err, errlen, s->acct, "UIDVALIDITY of %s changed during a fetch",
			s->folder);
		return -1;
	}
	si->sel_has_exists = 0;
	return 0;
}

void imap_abort(struct imap_session *s)
{
	if (!s)
		return;
	drop(s);
	if (s->imap)
		mailimap_free(s->imap);
	free(s->folder);
	free(s);
}

void imap_close(struct imap_session *s)
{
	if (!s)
		return;
	if (s->imap && s->imap->imap_stream) {
		cmd_begin(s, 64 * 1024, 64 * 1024);
		mailimap_logout(s->imap);
	}
	imap_abort(s);
}

int imap_has_idle(struct imap_session *s) { return s->has_idle; }

int imap_select(struct imap_session *s, const char *folder, struct imap_folder_info *info,
		char *err, size_t errlen)
{
	char why[200];
	char *wire = mutf7_encode(folder);
	memset(info, 0, sizeof *info);
	if (!wire) {
		set_err(err, errlen, s->acct, "folder name %s is not valid UTF-8", folder);
		return -1;
	}
	cmd_plain(s);
	int rc = mailimap_select(s->imap, wire);
	free(wire);
	if (rc != MAILIMAP_NO_ERROR) {
		set_err(err, errlen, s->acct, "cannot select folder %s: %s", folder,
			failure_text(s, rc, why, sizeof why));
		return -1;
	}
	if (!s->folder || strcmp(s->folder, folder) != 0) {
		free(s->folder);
		s->folder = xstrdup(folder);
	}
	struct mailimap_selection_info *si = s->imap->imap_selection_info;
	if (si) {
		info->uidvalidity = si->sel_uidvalidity;
		info->uidnext = si->sel_uidnext;
		info->exists = si->sel_has_exists ? si->sel_exists : 0;
		s->uidvalidity = si->sel_uidvalidity;
		s->last_exists = info->exists;
		/* from now on, an EXISTS means mail arrived after this SELECT
		 * (imap_wait checks it) */
		si->sel_has_exists = 0;
	}
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* UIDs matching key that are >= min_uid, ascending.  Frees key. */
static int search_uids(struct imap_session *s, struct mailimap_search_key *key, uint32_t min_uid,
		       uint32_t **uids, size_t *n, char *err, size_t errlen)
{
	clist *result = NULL;
	clistiter *it;
	size_t cap = 0;
	*uids = NULL;
	*n = 0;
	cmd_plain(s);
	int rc = mailimap_uid_search(s->imap, NULL, key, &result);
	mailimap_search_key_free(key);
	if (rc != MAILIMAP_NO_ERROR) {
		char why[200];
		set_err(err, errlen, s->acct, "UID SEARCH failed: %s",
			failure_text(s, rc, why, sizeof why));
		return -1;
	}
	for (it = clist_begin(result); it; it = clist_next(it)) {
		uint32_t uid = *(uint32_t *)clist_content(it);
		if (uid < min_uid) /* "n:*" always matches the highest UID */
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 256;
			*uids = xrealloc(*uids, cap * sizeof **uids);
		}
		(*uids)[(*n)++] = uid;
	}
	mailimap_search_result_free(result);
	/* servers answer in ascending order, but nothing promises it, nor
	 * that a UID comes only once */
	if (*n > 1) {
		qsort(*uids, *n, sizeof **uids, cmp_u32);
		size_t k = 1;
		for (size_t i = 1; i < *n; i++)
			if ((*uids)[i] != (*uids)[k - 1])
				(*uids)[k++] = (*uids)[i];
		*n = k;
	}
	return 0;
}

int imap_search_from(struct imap_session *s, uint32_t from_uid, uint32_t **uids, size_t *n,
		     char *err, size_t errlen)
{
	if (from_uid == 0)
		from_uid = 1;
	return search_uids(s, mailimap_search_key_new_uid(mailimap_set_new_interval(from_uid, 0)),
			   from_uid, uids, n, err, errlen);
}

int imap_search_since(struct imap_session *s, time_t since, uint32_t **uids, size_t *n, char *err,
		      size_t errlen)
{
	struct tm tm;
	gmtime_r(&since, &tm);
	struct mailimap_date *d = mailimap_date_new(tm.tm_mday, tm.tm_mon + 1, tm.tm_year + 1900);
	return search_uids(s, mailimap_search_key_new_since(d), 1, uids, n, err, errlen);
}

static struct mailimap_set *set_of(const uint32_t *uids, size_t n)
{
	struct mailimap_set *set = mailimap_set_new_empty();
	size_t i = 0;
	while (i < n) {
		size_t j = i;
		while (j + 1 < n && uids[j + 1] == uids[j] + 1)
			j++;
		if (i == j)
			mailimap_set_add_single(set, uids[i]);
		else
			mailimap_set_add_interval(set, uids[i], uids[j]);
		i = j + 1;
	}
	return set;
}

static time_t imap_date_to_time(const struct mailimap_date_time *d)
{
	return d ? time_from_parts(d->dt_year, d->dt_month, d->dt_day, d->dt_hour, d->dt_min,
				   d->dt_sec, d->dt_zone)
		 : 0;
}

struct meta {
	uint32_t uid, size;
	time_t date;
	char *raw;
	size_t raw_len;
	int too_large; /* what arrived, or was announced, is over the limit */
};

static int by_uid(const void *a, const void *b)
{
	const struct meta *x = a, *y = b;
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

static uint32_t size_u32(unsigned long long v) { return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v; }

/* Fills the meta of one FETCH answer's message among m[0..n) (size and
 * date, or its body when want_body; a body larger than max_size is not
 * kept, whatever size the server claimed before).  Returns its index, or
 * -1 when it is none of them. */
static long take_one(const struct mailimap_msg_att *att, struct meta *m, size_t n, int want_body,
		     long long max_size)
{
	uint32_t uid = 0, size = 0;
	time_t date = 0;
	const char *body = NULL;
	size_t blen = 0;
	for (clistiter *j = clist_begin(att->att_list); j; j = clist_next(j)) {
		struct mailimap_msg_att_item *item = clist_content(j);
		if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
			continue;
		struct mailimap_msg_att_static *st = item->att_data.att_static;
		switch (st->att_type) {
		case MAILIMAP_MSG_ATT_UID:
			uid = st->att_data.att_uid;
			break;
		case MAILIMAP_MSG_ATT_RFC822_SIZE:
			size = st->att_data.att_rfc822_size;
			break;
		case MAILIMAP_MSG_ATT_INTERNALDATE:
			date = imap_date_to_time(st->att_data.att_internal_date);
			break;
		case MAILIMAP_MSG_ATT_BODY_SECTION:
			if (st->att_data.att_body_section &&
			    st->att_data.att_body_section->sec_body_part) {
				body = st->att_data.att_body_section->sec_body_part;
				blen = st->att_data.att_body_section->sec_length;
			}
			break;
		default:
			break;
		}
	}
	for (size_t k = 0; k < n; k++) {
		if (m[k].uid != uid)
			continue;
		if (!want_body) {
			m[k].size = size;
			m[k].date = date;
		} else if ((long long)blen > max_size) {
			m[k].too_large = 1;
			m[k].size = size_u32(blen);
		} else if (body && !m[k].raw && !m[k].too_large) {
			m[k].raw = xmalloc(blen + 1);
			memcpy(m[k].raw, body, blen);
			m[k].raw[blen] = 0;
			m[k].raw_len = blen;
			m[k].size = size_u32(blen);
		}
		return (long)k;
	}
	return -1;
}

/* Fills metas for the uids of set from a fetch result, as take_one. */
static void take_results(clist *res, struct meta *m, size_t n, int want_body, long long max_size)
{
	for (clistiter *it = clist_begin(res); it; it = clist_next(it))
		take_one(clist_content(it), m, n, want_body, max_size);
}

/* Bodies handed over while their answer is read: each message goes to cb as
 * soon as it and every message before it in UID order are in, so that the
 * caller works on them while the rest arrives, and an answer is never held
 * whole.  m[0..next) are handed over. */
struct stream {
	struct imap_session *s;
	struct meta *m;
	size_t mn, next;
	long long max_size;
	imap_fetch_cb cb;
	void *arg;
	int stopped; /* cb asked to stop: the rest of the answer is dropped */
};

/* m is expected in this answer and has not come yet. */
static int awaited(const struct meta *m, long long max_size)
{
	int gone = m->size == 0 && m->date == 0;
	return !gone && (long long)m->size <= max_size && !m->raw && !m->too_large;
}

/* Hands one message over to cb, freeing its body.  1 when cb asked to
 * stop. */
static int hand_one(struct meta *m, long long max_size, imap_fetch_cb cb, void *arg)
{
	if (m->size == 0 && m->date == 0)
		return 0; /* expunged meanwhile */
	if ((long long)m->size <= max_size && !m->raw && !m->too_large)
		return 0; /* vanished between the two fetches */
	if (m->too_large && (long long)m->size <= max_size)
		m->size = size_u32((unsigned long long)max_size + 1);
	struct imap_fetched f = {.uid = m->uid,
				 .size = m->size,
				 .internaldate = m->date,
				 .raw = m->raw,
				 .raw_len = m->raw_len,
				 .owner = &m->raw};
	int stop = cb(&f, arg);
	free(m->raw);
	m->raw = NULL;
	return stop;
}

/* Hands over m[next..) up to the first message still awaited, or to the
 * end when the answer is complete. */
static void stream_advance(struct stream *x, int complete)
{
	while (!x->stopped && x->next < x->mn &&
	       (complete || !awaited(&x->m[x->next], x->max_size)))
		x->stopped = hand_one(&x->m[x->next++], x->max_size, x->cb, x->arg);
}

/* libetpan's call for each FETCH answer as it is read.  The time cb takes
 * does not count against the command's deadline. */
static void stream_att(struct mailimap_msg_att *att, void *ctx)
{
	struct stream *x = ctx;
	if (x->stopped || take_one(att, x->m, x->mn, 1, x->max_size) < 0)
		return;
	double t0 = now_monotonic();
	stream_advance(x, 0);
	x->s->started += now_monotonic() - t0;
}

static void stream_items(size_t current, size_t maximum, void *ctx) {}

/* One UID FETCH BODY.PEEK[] of want into m.  0 done, -1 failed (err), 1
 * the guard cut the answer off: the session must be reopened; when a
 * single message was asked for, it is marked too large. */
static int fetch_bodies(struct imap_session *s, const uint32_t *want, size_t nw, size_t claimed,
			struct meta *m, size_t cnt, long long max_size, struct stream *x, char *err,
			size_t errlen)
{
	size_t one = (size_t)max_size + HEADROOM;
	size_t budget = nw == 1 ? one : claimed + HEADROOM + nw * 1024;
	if (budget < claimed) /* overflow */
		budget = one;
	struct mailimap_set *set = set_of(want, nw);
	struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
	clist *res = NULL;
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid());
	mailimap_fetch_type_new_fetch_att_list_add(
	    ft, mailimap_fetch_att_new_body_peek_section(mailimap_section_new(NULL)));
	cmd_begin(s, budget, one);
	if (x) {
		mailimap_set_msg_att_handler(s->imap, stream_att, x);
		mailimap_set_progress_callback(s->imap, NULL, stream_items, NULL);
	}
	int rc = mailimap_uid_fetch(s->imap, set, ft, &res);
	if (x) {
		mailimap_set_msg_att_handler(s->imap, NULL, NULL);
		mailimap_set_progress_callback(s->imap, NULL, NULL, NULL);
	}
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	if (rc != MAILIMAP_NO_ERROR) {
		if (s->overflow) {
			if (nw == 1) {
				for (size_t k = 0; k < cnt; k++) {
					if (m[k].uid != want[0])
						continue;
					m[k].too_large = 1;
					unsigned long long seen =
					    s->literal_seen > s->got ? s->literal_seen : s->got;
					if (seen > m[k].size)
						m[k].size = size_u32(seen);
					log_warn("imap.too_large account=%s folder=%s uid=%u "
						 "claimed_size=%u sent_at_least=%llu "
						 "note=\"the server sent more than it announced\"",
						 s->acct->name, s->folder ? s->folder : "", want[0],
						 m[k].size, seen);
				}
			}
			return 1;
		}
		char why[200];
		set_err(err, errlen, s->acct, "UID FETCH BODY.PEEK[] failed: %s",
			failure_text(s, rc, why, sizeof why));
		return -1;
	}
	take_results(res, m, cnt, 1, max_size);
	mailimap_fetch_list_free(res);
	return 0;
}

static void metas_free(struct meta *m, size_t cnt)
{
	for (size_t k = 0; k < cnt; k++)
		free(m[k].raw);
	free(m);
}

/* The sizes and dates of the cnt messages uids into m. 0, or -1 (err). */
static int fetch_meta(struct imap_session *s, const uint32_t *uids, size_t cnt, struct meta *m,
		      long long max_size, char *err, size_t errlen)
{
	clist *res = NULL;
	struct mailimap_set *set = set_of(uids, cnt);
	struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid());
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_rfc822_size());
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_internaldate());
	cmd_plain(s);
	int rc = mailimap_uid_fetch(s->imap, set, ft, &res);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	if (rc != MAILIMAP_NO_ERROR) {
		char why[200];
		set_err(err, errlen, s->acct, "UID FETCH failed: %s",
			failure_text(s, rc, why, sizeof why));
		return -1;
	}
	take_results(res, m, cnt, 0, max_size);
	mailimap_fetch_list_free(res);
	return 0;
}

/* The next sub-batch of bodies from m[i]: messages neither expunged nor
 * over max_size, at most BODY_BATCH_BYTES of them as claimed (one at
 * least).  Fills want, *nw and *bytes; returns the end of the sub-batch. */
static size_t bodies_pick(const struct meta *m, size_t i, size_t cnt, long long max_size,
			  uint32_t *want, size_t *nw, size_t *bytes)
{
	size_t j = i;
	*nw = *bytes = 0;
	for (; j < cnt && (*nw == 0 || *bytes + m[j].size <= BODY_BATCH_BYTES); j++) {
		if (m[j].size == 0 && m[j].date == 0)
			continue; /* expunged meanwhile */
		if ((long long)m[j].size > max_size)
			continue;
		want[(*nw)++] = m[j].uid;
		*bytes += m[j].size;
	}
	return j;
}

/* fetch_bodies of a sub-batch into x->m, streamed to x->cb.  When the
 * guard cut the answer off, one of them is larger than it said: the session
 * is reopened and those not in yet are asked one by one.  0, or -1 (err). */
static int bodies_fetch_guarded(struct imap_session *s, const uint32_t *want, size_t nw,
				size_t bytes, struct stream *x, char *err, size_t errlen)
{
	int r =
	    nw > 0 ? fetch_bodies(s, want, nw, bytes, x->m, x->mn, x->max_size, x, err, errlen) : 0;
	if (r == 1 && nw > 1) {
		if (session_reopen(s, err, errlen) < 0)
			r = -1;
		for (size_t k = x->next; r == 1 && !x->stopped && k < x->mn; k++) {
			if (!awaited(&x->m[k], x->max_size))
				continue;
			uint32_t uid = x->m[k].uid;
			int r1 = fetch_bodies(s, &uid, 1, x->m[k].size, x->m, x->mn, x->max_size, x,
					      err, errlen);
			if (r1 < 0 || (r1 == 1 && session_reopen(s, err, errlen) < 0))
				r = -1;
			stream_advance(x, 0);
		}
	} else if (r == 1 && session_reopen(s, err, errlen) < 0) {
		r = -1;
	}
	return r < 0 ? -1 : 0;
}

char *imap_fetched_take(const struct imap_fetched *m)
{
	if (!m->raw)
		return NULL;
	if (!m->owner || *m->owner != m->raw) {
		char *copy = xmalloc(m->raw_len + 1);
		memcpy(copy, m->raw, m->raw_len);
		copy[m->raw_len] = 0;
		return copy;
	}
	char *raw = *m->owner;
	*m->owner = NULL;
	return raw;
}

/* One batch of at most FETCH_BATCH uids: their sizes and dates, then their
 * bodies in sub-batches bounded in bytes, each message handed over as soon
 * as it is in.  0, 1 when cb asked to stop, or -1 (err). */
static int fetch_batch(struct imap_session *s, const uint32_t *uids, size_t cnt, long long max_size,
		       imap_fetch_cb cb, void *arg, char *err, size_t errlen)
{
	struct meta *m = xcalloc(cnt, sizeof *m);
	for (size_t i = 0; i < cnt; i++)
		m[i].uid = uids[i];
	qsort(m, cnt, sizeof *m, by_uid);
	if (fetch_meta(s, uids, cnt, m, max_size, err, errlen) < 0) {
		free(m);
		return -1;
	}
	for (size_t i = 0, j; i < cnt; i = j) {
		uint32_t want[FETCH_BATCH];
		size_t nw, bytes;
		j = bodies_pick(m, i, cnt, max_size, want, &nw, &bytes);
		struct stream x = {
		    .s = s, .m = m + i, .mn = j - i, .max_size = max_size, .cb = cb, .arg = arg};
		int r = bodies_fetch_guarded(s, want, nw, bytes, &x, err, errlen);
		if (r == 0)
			stream_advance(&x, 1);
		if (r < 0 || x.stopped) {
			metas_free(m, cnt);
			return r < 0 ? -1 : 1;
		}
	}
	free(m);
	return 0;
}

int imap_fetch(struct imap_session *s, const uint32_t *uids, size_t n, long long max_size,
	       imap_fetch_cb cb, void *arg, char *err, size_t errlen)
{
	s->max_size = max_size;
	for (size_t off = 0; off < n; off += FETCH_BATCH) {
		size_t cnt = n - off < FETCH_BATCH ? n - off : FETCH_BATCH;
		int r = fetch_batch(s, uids + off, cnt, max_size, cb, arg, err, errlen);
		if (r != 0)
			return r < 0 ? -1 : 0;
	}
	return 0;
}

static int store_flags(struct imap_session *s, struct mailimap_set *set, int seen)
{
	struct mailimap_flag_list *fl = mailimap_flag_list_new_empty();
	mailimap_flag_list_add(fl, seen ? mailimap_flag_new_seen() : mailimap_flag_new_deleted());
	struct mailimap_store_att_flags *sa = mailimap_store_att_flags_new_add_flags_silent(fl);
	cmd_plain(s);
	int rc = mailimap_uid_store(s->imap, set, sa);
	mailimap_store_att_flags_free(sa);
	return rc;
}

/* The server answered (NO or BAD), as opposed to a lost or cut-off
 * connection: the session is still good. */
static int refused(struct imap_session *s, int rc)
{
	return rc != MAILIMAP_NO_ERROR && rc != MAILIMAP_ERROR_STREAM &&
	       rc != MAILIMAP_ERROR_PARSE && rc != MAILIMAP_ERROR_MEMORY && !s->overflow &&
	       !s->timed_out && s->imap->imap_stream;
}

int imap_after(struct imap_session *s, enum after_action a, const char *folder,
	       const uint32_t *uids, size_t n, char *err, size_t errlen)
{
	struct mailimap_set *set;
	int rc = MAILIMAP_NO_ERROR;
	char *wire = NULL;
	if (n == 0 || a == AFTER_KEEP)
		return 0;
	if (a == AFTER_MOVE) {
		wire = mutf7_encode(folder);
		if (!wire) {
			set_err(err, errlen, s->acct, "folder name %s is not valid UTF-8", folder);
			return IMAP_REFUSED;
		}
	}
	set = set_of(uids, n);
	switch (a) {
	case AFTER_SEEN:
		rc = store_flags(s, set, 1);
		break;
	case AFTER_MOVE:
		cmd_plain(s);
		if (s->has_move) {
			rc = mailimap_uid_move(s->imap, set, wire);
			break;
		}
		rc = mailimap_uid_copy(s->imap, set, wire);
		if (rc != MAILIMAP_NO_ERROR)
			break;
		/* the copy is safe, now remove the original */
		__attribute__((fallthrough));
	case AFTER_DELETE:
		rc = store_flags(s, set, 0);
		if (rc != MAILIMAP_NO_ERROR)
			break;
		cmd_plain(s);
		if (s->has_uidplus)
			rc = mailimap_uid_expunge(s->imap, set);
		else
			log_warn("imap.no_uidplus account=%s note=\"messages marked \\\\Deleted "
				 "but not expunged: a plain EXPUNGE would remove other clients' "
				 "deleted messages too\"",
				 s->acct->name);
		break;
	case AFTER_KEEP:
		break;
	}
	mailimap_set_free(set);
	free(wire);
	if (rc != MAILIMAP_NO_ERROR) {
		char why[200];
		const char *text = failure_text(s, rc, why, sizeof why);
		if (refused(s, rc) && a == AFTER_MOVE && s->imap->imap_response_info &&
		    s->imap->imap_response_info->rsp_trycreate)
			set_err(err, errlen, s->acct,
				"after-action move:%s refused: the folder %s does not exist "
				"(server: \"%s\"); create it or change after",
				folder, folder, text);
		else
			set_err(err, errlen, s->acct, "after-action %s%s%s refused: %s",
				after_action_name(a), a == AFTER_MOVE ? ":" : "",
				a == AFTER_MOVE ? folder : "", text);
		if (!refused(s, rc))
			set_err(err, errlen, s->acct, "after-action %s failed: %s",
				after_action_name(a), text);
		return refused(s, rc) ? IMAP_REFUSED : -1;
	}
	return 0;
}

int imap_status(struct imap_session *s, const char *folder, struct imap_folder_info *info,
		char *err, size_t errlen)
{
	char why[200];
	struct mailimap_mailbox_data_status *res = NULL;
	memset(info, 0, sizeof *info);
	char *wire = mutf7_encode(folder);
	if (!wire) {
		set_err(err, errlen, s->acct, "folder name %s is not valid UTF-8", folder);
		return -1;
	}
	struct mailimap_status_att_list *atts = mailimap_status_att_list_new_empty();
	if (!atts || mailimap_status_att_list_add(atts, MAILIMAP_STATUS_ATT_UIDNEXT) != 0 ||
	    mailimap_status_att_list_add(atts, MAILIMAP_STATUS_ATT_UIDVALIDITY) != 0) {
		if (atts)
			mailimap_status_att_list_free(atts);
		free(wire);
		set_err(err, errlen, s->acct, "out of memory");
		return -1;
	}
	cmd_plain(s);
	int rc = mailimap_status(s->imap, wire, atts, &res);
	mailimap_status_att_list_free(atts);
	free(wire);
	if (rc != MAILIMAP_NO_ERROR) {
		set_err(err, errlen, s->acct, "STATUS of folder %s failed: %s", folder,
			failure_text(s, rc, why, sizeof why));
		return refused(s, rc) ? IMAP_REFUSED : -1;
	}
	if (res && res->st_info_list) {
		for (clistiter *it = clist_begin(res->st_info_list); it; it = clist_next(it)) {
			struct mailimap_status_info *si = clist_content(it);
			if (!si)
				continue;
			if (si->st_att == MAILIMAP_STATUS_ATT_UIDNEXT)
				info->uidnext = si->st_value;
			else if (si->st_att == MAILIMAP_STATUS_ATT_UIDVALIDITY)
				info->uidvalidity = si->st_value;
		}
	}
	if (res)
		mailimap_mailbox_data_status_free(res);
	return 0;
}

int imap_noop(struct imap_session *s, char *err, size_t errlen)
{
	cmd_plain(s);
	int rc = mailimap_noop(s->imap);
	if (rc != MAILIMAP_NO_ERROR) {
		char why[200];
		set_err(err, errlen, s->acct, "NOOP failed: %s",
			s->overflow || s->timed_out ? failure_text(s, rc, why, sizeof why)
						    : "connection lost or server stalled");
		return -1;
	}
	return 0;
}

/* Sleeps until wake_fd is readable or ms pass. */
static void pause_ms(int wake_fd, long ms)
{
	struct pollfd p = {.fd = wake_fd, .events = POLLIN};
	if (ms > 0)
		poll(&p, wake_fd >= 0 ? 1 : 0, (int)ms);
}

/* Returns "maybe news" for a wake-up that cost no wait (an EXISTS that
 * came with an answer, data already buffered).  A server that says so
 * with every answer would otherwise keep the watcher busy: such wake-ups
 * in a row are spaced, from QUICK_WAKE_MIN_MS doubling up to
 * QUICK_WAKE_MAX_MS. */
static int quick_news(struct imap_session *s, int wake_fd)
{
	double now = now_monotonic();
	if (s->last_wake > 0 && (now - s->last_wake) * 1000 < QUICK_WAKE_MIN_MS) {
		s->quick_ms = s->quick_ms ? s->quick_ms * 2 : QUICK_WAKE_MIN_MS;
		if (s->quick_ms > QUICK_WAKE_MAX_MS)
			s->quick_ms = QUICK_WAKE_MAX_MS;
		pause_ms(wake_fd, s->quick_ms);
	}
	s->last_wake = now_monotonic();
	return 1;
}

void imap_news_taken(struct imap_session *s)
{
	s->last_wake = 0;
	s->quick_ms = 0;
}

/* Notes when a wait ended; a wait that really waited resets the spacing. */
static int waited(struct imap_session *s, int r)
{
	s->last_wake = now_monotonic();
	s->quick_ms = 0;
	return r;
}

int imap_wait(struct imap_session *s, int wake_fd, long max_wait, char *err, size_t errlen)
{
	const struct mf_account *a = s->acct;
	/* no folder selected (the last SELECT was refused): nothing to IDLE
	 * on, and libetpan's IDLE needs a selection */
	if (!s->has_idle || !s->imap->imap_selection_info) {
		long wait = a->poll_interval < max_wait ? a->poll_interval : max_wait;
		pause_ms(wake_fd, wait * 1000);
		return imap_noop(s, err, errlen) < 0 ? -1 : waited(s, 1);
	}
	if (max_wait > a->idle_restart)
		max_wait = a->idle_restart;
	/* libetpan 1.9.4 fails IDLE when untagged data precedes "+ idling";
	 * a NOOP first collects whatever is pending */
	if (imap_noop(s, err, errlen) < 0)
		return -1;
	/* An EXISTS that came with the answer to any command since the last
	 * SELECT (fetch, after-action, this NOOP) announced mail IDLE would
	 * not report again: sync first. */
	struct mailimap_selection_info *si = s->imap->imap_selection_info;
	if (si && si->sel_has_exists) {
		si->sel_has_exists = 0;
		return quick_news(s, wake_fd);
	}
	cmd_plain(s);
	if (mailimap_idle(s->imap) != MAILIMAP_NO_ERROR) {
		char why[200];
		set_err(err, errlen, a, "IDLE failed: %s",
			failure_text(s, MAILIMAP_ERROR_STREAM, why, sizeof why));
		return -1;
	}
	int news = 0, quick = 0;
	if (s->imap->imap_stream->read_buffer_len > 0) {
		/* already in libetpan's buffer: poll() would not see it */
		news = quick = 1;
	} else {
		struct pollfd p[2] = {{.fd = mailimap_idle_get_fd(s->imap), .events = POLLIN},
				      {.fd = wake_fd, .events = POLLIN}};
		int r = poll(p, wake_fd >= 0 ? 2 : 1, (int)(max_wait * 1000));
		if (r < 0 && errno != EINTR) {
			set_err(err, errlen, a, "poll failed: %s", strerror(errno));
			return -1;
		}
		news = r > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR));
	}
	cmd_plain(s);
	if (mailimap_idle_done(s->imap) != MAILIMAP_NO_ERROR) {
		char why[200];
		set_err(err, errlen, a, "IDLE ended with an error: %s",
			s->overflow || s->timed_out
			    ? failure_text(s, MAILIMAP_ERROR_STREAM, why, sizeof why)
			    : "connection lost or server stalled");
		return -1;
	}
	if (quick)
		return quick_news(s, wake_fd);
	return waited(s, news ? 1 : 0);
}

int imap_keyword(struct imap_session *s, const char *keyword, int add, const uint32_t *uids,
		 size_t n, char *err, size_t errlen)
{
	if (n == 0)
		return 0;
	struct mailimap_set *set = set_of(uids, n);
	struct mailimap_flag_list *fl = mailimap_flag_list_new_empty();
	mailimap_flag_list_add(fl, mailimap_flag_new_flag_keyword(xstrdup(keyword)));
	struct mailimap_store_att_flags *sa =
	    add ? mailimap_store_att_flags_new_add_flags_silent(fl)
		: mailimap_store_att_flags_new_remove_flags_silent(fl);
	cmd_plain(s);
	int rc = mailimap_uid_store(s->imap, set, sa);
	mailimap_store_att_flags_free(sa);
	mailimap_set_free(set);
	if (rc != MAILIMAP_NO_ERROR) {
		char why[200];
		set_err(err, errlen, s->acct, "setting the keyword %s failed: %s", keyword,
			failure_text(s, rc, why, sizeof why));
		return -1;
	}
	return 0;
}

int imap_fetch_header(struct imap_session *s, uint32_t uid, char **raw, size_t *len, char *err,
		      size_t errlen)
{
	struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
	struct mailimap_set *set = mailimap_set_new_single(uid);
	clist *res = NULL;
	*raw = NULL;
	*len = 0;
	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid());
	mailimap_fetch_type_new_fetch_att_list_add(
	    ft, mailimap_fetch_att_new_body_peek_section_partial(mailimap_section_new_header(), 0,
								 IMAP_HEADER_MAX));
	cmd_begin(s, IMAP_HEADER_MAX + HEADROOM, IMAP_HEADER_MAX + HEADROOM);
	int rc = mailimap_uid_fetch(s->imap, set, ft, &res);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	if (rc != MAILIMAP_NO_ERROR) {
		char why[200];
		set_err(err, errlen, s->acct, "UID FETCH BODY.PEEK[HEADER] failed: %s",
			failure_text(s, rc, why, sizeof why));
		return -1;
	}
	struct meta m = {.uid = uid};
	take_results(res, &m, 1, 1, IMAP_HEADER_MAX);
	mailimap_fetch_list_free(res);
	*raw = m.raw;
	*len = m.raw_len;
	return 0;
}
