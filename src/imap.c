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
#include "mailfeed/secret.h"
#include "mailfeed/util.h"

#define FETCH_BATCH 100
#define BODY_BATCH_BYTES (2 * 1024 * 1024)

struct imap_session {
	mailimap *imap;
	const struct mf_account *acct;
	int has_idle, has_move, has_uidplus;
};

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

/* Per thread: whether the last imap_open() failed on refused credentials. */
static __thread int login_refused;

int imap_login_refused(void) { return login_refused; }

static int authenticate(struct imap_session *s, char *err, size_t errlen)
{
	const struct mf_account *a = s->acct;
	char *secret = NULL;
	char serr[256];
	int rc;
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
		int plain =
		    a->auth == AUTH_PLAIN ||
		    (a->auth == AUTH_AUTO && mailimap_has_extension(s->imap, "LOGINDISABLED"));
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
		if (rc == MAILIMAP_ERROR_STREAM)
			set_err(err, errlen, a, "connection lost during login to %s", a->host);
		else
			set_err(err, errlen, a, "login failed for %s: %s (check %s)", a->username,
				server_text(s->imap),
				xoauth ? "the OAuth2 token" : "password_file");
		/* the credentials were refused, unless the server only said it
		 * is busy or out of connections */
		login_refused = rc != MAILIMAP_ERROR_STREAM &&
				!strcasestr(server_text(s->imap), "UNAVAILABLE") &&
				!strcasestr(server_text(s->imap), "connections");
		return -1;
	}
	/* Dovecot sends post-login capabilities with the OK; others may not */
	if (!mailimap_has_idle(s->imap)) {
		struct mailimap_capability_data *cap = NULL;
		if (mailimap_capability(s->imap, &cap) == MAILIMAP_NO_ERROR && cap)
			mailimap_capability_data_free(cap);
	}
	read_caps(s);
	return 0;
}

struct imap_session *imap_open(const struct mf_account *acct, char *err, size_t errlen)
{
	struct imap_session *s = xcalloc(1, sizeof *s);
	mailstream *stream;
	int fd, rc;
	login_refused = 0;
	s->acct = acct;
	fd = tcp_connect(acct, err, errlen);
	if (fd < 0) {
		free(s);
		return NULL;
	}
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
		mailstream_close(stream);
		goto fail;
	}
	rc = mailimap_connect(s->imap, stream);
	if (rc != MAILIMAP_NO_ERROR_NON_AUTHENTICATED && rc != MAILIMAP_NO_ERROR_AUTHENTICATED) {
		set_err(err, errlen, acct, "no IMAP greeting from %s:%d (error %d)", acct->host,
			acct->port, rc);
		goto fail;
	}
	if (acct->tls == TLS_STARTTLS) {
		rc = mailimap_socket_starttls_with_callback(s->imap, sni_callback, acct->host);
		if (rc != MAILIMAP_NO_ERROR) {
			set_err(err, errlen, acct, "STARTTLS with %s failed (error %d)", acct->host,
				rc);
			goto fail;
		}
		if (tls_check(s->imap->imap_stream, acct, err, errlen) < 0)
			goto fail;
		/* the pre-TLS capability list is stale */
		struct mailimap_capability_data *cap = NULL;
		if (mailimap_capability(s->imap, &cap) != MAILIMAP_NO_ERROR) {
			set_err(err, errlen, acct, "CAPABILITY after STARTTLS failed");
			goto fail;
		}
		mailimap_capability_data_free(cap);
	}
	if (authenticate(s, err, errlen) < 0)
		goto fail;
	return s;
fail:
	drop(s);
	mailimap_free(s->imap);
	free(s);
	return NULL;
}

void imap_abort(struct imap_session *s)
{
	if (!s)
		return;
	drop(s);
	mailimap_free(s->imap);
	free(s);
}

void imap_close(struct imap_session *s)
{
	if (!s)
		return;
	if (s->imap->imap_stream)
		mailimap_logout(s->imap);
	imap_abort(s);
}

int imap_has_idle(struct imap_session *s) { return s->has_idle; }

int imap_select(struct imap_session *s, const char *folder, struct imap_folder_info *info,
		char *err, size_t errlen)
{
	int rc = mailimap_select(s->imap, folder);
	memset(info, 0, sizeof *info);
	if (rc != MAILIMAP_NO_ERROR) {
		set_err(err, errlen, s->acct, "cannot select folder %s: %s", folder,
			rc == MAILIMAP_ERROR_STREAM ? "connection lost" : server_text(s->imap));
		return -1;
	}
	struct mailimap_selection_info *si = s->imap->imap_selection_info;
	if (si) {
		info->uidvalidity = si->sel_uidvalidity;
		info->uidnext = si->sel_uidnext;
		info->exists = si->sel_has_exists ? si->sel_exists : 0;
		/* from now on, an EXISTS means mail arrived after this SELECT
		 * (imap_wait checks it) */
		si->sel_has_exists = 0;
	}
	return 0;
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
	int rc = mailimap_uid_search(s->imap, NULL, key, &result);
	mailimap_search_key_free(key);
	if (rc != MAILIMAP_NO_ERROR) {
		set_err(err, errlen, s->acct, "UID SEARCH failed: %s",
			rc == MAILIMAP_ERROR_STREAM ? "connection lost" : server_text(s->imap));
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
	/* servers answer in ascending order, but nothing promises it */
	for (size_t i = 1; i < *n; i++) {
		uint32_t v = (*uids)[i];
		size_t j = i;
		while (j > 0 && (*uids)[j - 1] > v) {
			(*uids)[j] = (*uids)[j - 1];
			j--;
		}
		(*uids)[j] = v;
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

int imap_search_since(struct imap_session *s, time_t since, uint32_t **uids, size_t *n,
		      char *err, size_t errlen)
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
	struct tm tm = {0};
	if (!d)
		return 0;
	tm.tm_year = d->dt_year - 1900;
	tm.tm_mon = d->dt_month - 1;
	tm.tm_mday = d->dt_day;
	tm.tm_hour = d->dt_hour;
	tm.tm_min = d->dt_min;
	tm.tm_sec = d->dt_sec;
	time_t t = timegm(&tm);
	int zone = d->dt_zone; /* +hhmm */
	int sign = zone < 0 ? -1 : 1;
	zone *= sign;
	return t - sign * ((zone / 100) * 3600 + (zone % 100) * 60);
}

struct meta {
	uint32_t uid, size;
	time_t date;
	char *raw;
	size_t raw_len;
};

static int by_uid(const void *a, const void *b)
{
	const struct meta *x = a, *y = b;
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* Fills metas for the uids of set from a fetch result (sizes/dates, or
 * bodies when want_body). */
static void take_results(clist *res, struct meta *m, size_t n, int want_body)
{
	for (clistiter *it = clist_begin(res); it; it = clist_next(it)) {
		struct mailimap_msg_att *att = clist_content(it);
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
				if (st->att_data.att_body_section) {
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
			if (want_body) {
				if (body && !m[k].raw) {
					m[k].raw = xmalloc(blen + 1);
					memcpy(m[k].raw, body, blen);
					m[k].raw[blen] = 0;
					m[k].raw_len = blen;
				}
			} else {
				m[k].size = size;
				m[k].date = date;
			}
			break;
		}
	}
}

int imap_fetch(struct imap_session *s, const uint32_t *uids, size_t n, long long max_size,
	       imap_fetch_cb cb, void *arg, char *err, size_t errlen)
{
	for (size_t off = 0; off < n; off += FETCH_BATCH) {
		size_t cnt = n - off < FETCH_BATCH ? n - off : FETCH_BATCH;
		struct meta *m = xcalloc(cnt, sizeof *m);
		clist *res = NULL;
		int rc;
		for (size_t i = 0; i < cnt; i++)
			m[i].uid = uids[off + i];

		struct mailimap_set *set = set_of(uids + off, cnt);
		struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
		mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid());
		mailimap_fetch_type_new_fetch_att_list_add(ft,
							   mailimap_fetch_att_new_rfc822_size());
		mailimap_fetch_type_new_fetch_att_list_add(ft,
							   mailimap_fetch_att_new_internaldate());
		rc = mailimap_uid_fetch(s->imap, set, ft, &res);
		mailimap_fetch_type_free(ft);
		mailimap_set_free(set);
		if (rc != MAILIMAP_NO_ERROR) {
			set_err(err, errlen, s->acct, "UID FETCH failed: %s",
				rc == MAILIMAP_ERROR_STREAM ? "connection lost"
							    : server_text(s->imap));
			free(m);
			return -1;
		}
		take_results(res, m, cnt, 0);
		mailimap_fetch_list_free(res);

		/* bodies in sub-batches bounded in bytes, so memory stays flat */
		size_t i = 0;
		while (i < cnt) {
			uint32_t want[FETCH_BATCH];
			size_t nw = 0, bytes = 0, j = i;
			for (; j < cnt && (nw == 0 || bytes + m[j].size <= BODY_BATCH_BYTES); j++) {
				if (m[j].size == 0 && m[j].date == 0)
					continue; /* expunged meanwhile */
				if ((long long)m[j].size > max_size)
					continue;
				want[nw++] = m[j].uid;
				bytes += m[j].size;
			}
			if (nw > 0) {
				set = set_of(want, nw);
				ft = mailimap_fetch_type_new_fetch_att_list_empty();
				mailimap_fetch_type_new_fetch_att_list_add(
				    ft, mailimap_fetch_att_new_uid());
				mailimap_fetch_type_new_fetch_att_list_add(
				    ft, mailimap_fetch_att_new_body_peek_section(
					    mailimap_section_new(NULL)));
				res = NULL;
				rc = mailimap_uid_fetch(s->imap, set, ft, &res);
				mailimap_fetch_type_free(ft);
				mailimap_set_free(set);
				if (rc != MAILIMAP_NO_ERROR) {
					set_err(err, errlen, s->acct,
						"UID FETCH BODY.PEEK[] failed: %s",
						rc == MAILIMAP_ERROR_STREAM ? "connection lost"
									    : server_text(s->imap));
					for (size_t k = 0; k < cnt; k++)
						free(m[k].raw);
					free(m);
					return -1;
				}
				take_results(res, m + i, j - i, 1);
				mailimap_fetch_list_free(res);
			}
			/* hand over this sub-batch in UID order, then free it */
			qsort(m + i, j - i, sizeof *m, by_uid);
			for (size_t k = i; k < j; k++) {
				int stop = 0;
				if (m[k].size == 0 && m[k].date == 0)
					continue;
				if ((long long)m[k].size <= max_size && !m[k].raw)
					continue; /* vanished between the two fetches */
				struct imap_fetched f = {.uid = m[k].uid,
							 .size = m[k].size,
							 .internaldate = m[k].date,
							 .raw = m[k].raw,
							 .raw_len = m[k].raw_len};
				stop = cb(&f, arg);
				free(m[k].raw);
				m[k].raw = NULL;
				if (stop) {
					for (size_t r = k + 1; r < cnt; r++)
						free(m[r].raw);
					free(m);
					return 0;
				}
			}
			i = j;
		}
		free(m);
	}
	return 0;
}

static int store_flags(struct imap_session *s, struct mailimap_set *set, int seen)
{
	struct mailimap_flag_list *fl = mailimap_flag_list_new_empty();
	mailimap_flag_list_add(fl, seen ? mailimap_flag_new_seen() : mailimap_flag_new_deleted());
	struct mailimap_store_att_flags *sa = mailimap_store_att_flags_new_add_flags_silent(fl);
	int rc = mailimap_uid_store(s->imap, set, sa);
	mailimap_store_att_flags_free(sa);
	return rc;
}

int imap_after(struct imap_session *s, enum after_action a, const char *folder,
	       const uint32_t *uids, size_t n, char *err, size_t errlen)
{
	struct mailimap_set *set;
	int rc = MAILIMAP_NO_ERROR;
	if (n == 0 || a == AFTER_KEEP)
		return 0;
	set = set_of(uids, n);
	switch (a) {
	case AFTER_SEEN:
		rc = store_flags(s, set, 1);
		break;
	case AFTER_MOVE:
		if (s->has_move) {
			rc = mailimap_uid_move(s->imap, set, folder);
			break;
		}
		rc = mailimap_uid_copy(s->imap, set, folder);
		if (rc != MAILIMAP_NO_ERROR)
			break;
		/* the copy is safe, now remove the original */
		__attribute__((fallthrough));
	case AFTER_DELETE:
		rc = store_flags(s, set, 0);
		if (rc != MAILIMAP_NO_ERROR)
			break;
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
	if (rc != MAILIMAP_NO_ERROR) {
		set_err(err, errlen, s->acct, "after-action %s failed: %s", after_action_name(a),
			rc == MAILIMAP_ERROR_STREAM ? "connection lost" : server_text(s->imap));
		return -1;
	}
	return 0;
}

int imap_noop(struct imap_session *s, char *err, size_t errlen)
{
	if (mailimap_noop(s->imap) != MAILIMAP_NO_ERROR) {
		set_err(err, errlen, s->acct, "NOOP failed: connection lost or server stalled");
		return -1;
	}
	return 0;
}

int imap_wait(struct imap_session *s, int wake_fd, long max_wait, char *err, size_t errlen)
{
	const struct mf_account *a = s->acct;
	if (!s->has_idle) {
		long wait = a->poll_interval < max_wait ? a->poll_interval : max_wait;
		struct pollfd p = {.fd = wake_fd, .events = POLLIN};
		poll(&p, wake_fd >= 0 ? 1 : 0, (int)(wait * 1000));
		return imap_noop(s, err, errlen) < 0 ? -1 : 1;
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
	if (si && si->sel_has_exists)
		return 1;
	if (mailimap_idle(s->imap) != MAILIMAP_NO_ERROR) {
		set_err(err, errlen, a, "IDLE failed: connection lost");
		return -1;
	}
	int news = 0;
	if (s->imap->imap_stream->read_buffer_len > 0) {
		news = 1; /* already in libetpan's buffer: poll() would not see it */
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
	if (mailimap_idle_done(s->imap) != MAILIMAP_NO_ERROR) {
		set_err(err, errlen, a,
			"IDLE ended with an error: connection lost or server stalled");
		return -1;
	}
	return news ? 1 : 0;
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
	int rc = mailimap_uid_store(s->imap, set, sa);
	mailimap_store_att_flags_free(sa);
	mailimap_set_free(set);
	if (rc != MAILIMAP_NO_ERROR) {
		set_err(err, errlen, s->acct, "setting the keyword %s failed: %s", keyword,
			rc == MAILIMAP_ERROR_STREAM ? "connection lost" : server_text(s->imap));
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
	int rc = mailimap_uid_fetch(s->imap, set, ft, &res);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	if (rc != MAILIMAP_NO_ERROR) {
		set_err(err, errlen, s->acct, "UID FETCH BODY.PEEK[HEADER] failed: %s",
			rc == MAILIMAP_ERROR_STREAM ? "connection lost" : server_text(s->imap));
		return -1;
	}
	struct meta m = {.uid = uid};
	take_results(res, &m, 1, 1);
	mailimap_fetch_list_free(res);
	*raw = m.raw;
	*len = m.raw_len;
	return 0;
}
