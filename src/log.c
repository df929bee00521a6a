/* log.c — one event per line, with a priority an operator can filter on.
 *
 * Where the line goes is decided once, at the first event:
 *  - stderr is the journal (systemd sets JOURNAL_STREAM to its device and
 *    inode): each event is sent with sd_journal_sendv as MESSAGE with its
 *    PRIORITY (err, warning, notice, info, debug) and the fields MAILBOX,
 *    UID, ITEM, GROUP, ACCOUNT and MAILFEED_EVENT taken from its key=value
 *    text, so `journalctl -u mailfeed -p err` shows the failures and
 *    `journalctl MAILBOX=fundraising` one mailbox.  When the journal's
 *    socket is missing or refuses, the line goes to stderr with a "<N>"
 *    priority prefix, which journald's stream reader understands.
 *  - otherwise [gateway] log_format: text ("level=info event k=v ...", with
 *    the time when stderr is a terminal) or json (one object a line).
 * Values from outside reach the message already escaped by log_quote; the
 * JSON writer escapes everything again as JSON. */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

#include "mailfeed/log.h"

#define LINE_MAX_LEN 4096
#define JOURNAL_SOCKET "/run/systemd/journal/socket"
#define FIELDS_MAX 8

static enum log_level min_level = LOG_LVL_INFO;
static enum log_format out_format = LOG_FORMAT_TEXT;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t sink_once = PTHREAD_ONCE_INIT;
static int to_journal; /* 1 the journal API, 2 stderr with "<N>" prefixes */
static int stderr_tty; /* stderr is a terminal: lines carry a time */

static const char *const level_names[] = {"debug", "info", "notice", "warn", "error"};
static const int level_priority[] = {7, 6, 5, 4, 3}; /* syslog(3) numbers */

/* Keys of the message text that become journal fields. */
static const struct {
	const char *key, *field;
} field_map[] = {
    {"mailbox", "MAILBOX"}, {"uid", "UID"},	{"item", "ITEM"},
    {"outbox_id", "ITEM"},  {"group", "GROUP"}, {"account", "ACCOUNT"},
};

void log_set_level(enum log_level level) { min_level = level; }

void log_set_format(enum log_format f) { out_format = f; }

int log_level_parse(const char *s, enum log_level *out)
{
	for (int i = 0; i < 5; i++)
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	return -1;
}

int log_format_parse(const char *s, enum log_format *out)
{
	if (strcmp(s, "text") == 0)
		*out = LOG_FORMAT_TEXT;
	else if (strcmp(s, "json") == 0)
		*out = LOG_FORMAT_JSON;
	else
		return -1;
	return 0;
}

static void sink_detect(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	stderr_tty = isatty(STDERR_FILENO);
	unsigned long long dev, ino;
	struct stat st;
	if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
	    (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
		/* libsystemd drops events silently when the socket is missing */
		to_journal = access(JOURNAL_SOCKET, W_OK) == 0 ? 1 : 2;
}

int log_to_journal(void)
{
	pthread_once(&sink_once, sink_detect);
	return to_journal;
}

void log_reopen(void)
{
	pthread_once(&sink_once, sink_detect);
	pthread_mutex_lock(&log_lock);
	to_journal = 0;
	sink_detect();
	pthread_mutex_unlock(&log_lock);
}

struct field {
	const char *name;
	char value[256];
};

/* The event name (first word without '=') and the mapped key=value pairs
 * of msg.  Quoted values lose their quotes and backslash escapes of quote
 * and backslash; other escapes stay as they are. */
static size_t fields_parse(const char *msg, char *event, size_t eventlen, struct field *f,
			   size_t max)
{
	size_t n = 0;
	const char *p = msg;

	event[0] = 0;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *tok = p, *eq = NULL;
		while (*p && *p != ' ' && *p != '=')
			p++;
		if (*p != '=') {
			if (tok == msg && p > tok)
				snprintf(event, eventlen, "%.*s", (int)(p - tok), tok);
			continue;
		}
		eq = p++;
		size_t keylen = (size_t)(eq - tok), o = 0;
		const char *field = NULL;
		for (size_t i = 0; i < sizeof field_map / sizeof field_map[0]; i++)
			if (strlen(field_map[i].key) == keylen &&
			    strncmp(field_map[i].key, tok, keylen) == 0)
				field = field_map[i].field;
		char value[256];
		if (*p == '"') {
			for (p++; *p && *p != '"'; p++) {
				if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
					p++;
				if (o + 1 < sizeof value)
					value[o++] = *p;
			}
			if (*p == '"')
				p++;
		} else {
			for (; *p && *p != ' '; p++)
				if (o + 1 < sizeof value)
					value[o++] = *p;
		}
		value[o] = 0;
		if (field && n < max) {
			int dup = 0;
			for (size_t i = 0; i < n; i++)
				dup |= strcmp(f[i].name, field) == 0;
			if (!dup) {
				f[n].name = field;
				snprintf(f[n].value, sizeof f[n].value, "%s", value);
				n++;
			}
		}
	}
	return n;
}

static int journal_send(enum log_level lvl, const char *msg)
{
	struct field f[FIELDS_MAX];
	char event[128], *lines[FIELDS_MAX + 4];
	struct iovec iov[FIELDS_MAX + 4];
	size_t n = fields_parse(msg, event, sizeof event, f, FIELDS_MAX), k = 0;
	int rc;

	lines[k++] = NULL;
	if (asprintf(&lines[0], "MESSAGE=%s", msg) < 0)
		return -1;
	if (asprintf(&lines[k++], "PRIORITY=%d", level_priority[lvl]) < 0)
		lines[k - 1] = NULL;
	lines[k++] = strdup("SYSLOG_IDENTIFIER=mailfeed");
	if (*event && asprintf(&lines[k++], "MAILFEED_EVENT=%s", event) < 0)
		lines[k - 1] = NULL;
	for (size_t i = 0; i < n; i++)
		if (asprintf(&lines[k++], "%s=%s", f[i].name, f[i].value) < 0)
			lines[k - 1] = NULL;
	size_t m = 0;
	for (size_t i = 0; i < k; i++)
		if (lines[i]) {
			iov[m].iov_base = lines[i];
			iov[m].iov_len = strlen(lines[i]);
			m++;
		}
	rc = sd_journal_sendv(iov, (int)m);
	for (size_t i = 0; i < k; i++)
		free(lines[i]);
	return rc;
}

static void json_line(enum log_level lvl, const char *msg, char *out, size_t outlen)
{
	struct field f[FIELDS_MAX];
	char event[128], ts[32];
	size_t n = fields_parse(msg, event, sizeof event, f, FIELDS_MAX);
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_t *o = json_object();
	json_object_set_new(o, "ts", json_string(ts));
	json_object_set_new(o, "level", json_string(level_names[lvl]));
	json_object_set_new(o, "priority", json_integer(level_priority[lvl]));
	if (*event)
		json_object_set_new(o, "event", json_string(event));
	json_object_set_new(o, "msg", json_string(msg));
	for (size_t i = 0; i < n; i++)
		json_object_set_new(o, f[i].name, json_string(f[i].value));
	/* json_string refuses invalid UTF-8: keep the line, drop the value */
	char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	snprintf(out, outlen, "%s", s ? s : "{\"msg\":\"(not UTF-8)\"}");
	free(s);
	json_decref(o);
}

static void vlog(enum log_level lvl, const char *fmt, va_list ap)
{
	char msg[LINE_MAX_LEN], line[LINE_MAX_LEN + 128];

	if (lvl < min_level)
		return;
	vsnprintf(msg, sizeof msg, fmt, ap);
	/* one event per line, whatever the message held */
	for (char *p = msg; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	int journal = log_to_journal();
	if (journal) {
		if (journal == 1 && journal_send(lvl, msg) >= 0)
			return;
		snprintf(line, sizeof line, "<%d>level=%s %s", level_priority[lvl],
			 level_names[lvl], msg);
	} else if (out_format == LOG_FORMAT_JSON) {
		json_line(lvl, msg, line, sizeof line);
	} else if (stderr_tty) {
		char ts[32];
		time_t t = time(NULL);
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
		snprintf(line, sizeof line, "ts=%s level=%s %s", ts, level_names[lvl], msg);
	} else {
		snprintf(line, sizeof line, "level=%s %s", level_names[lvl], msg);
	}
	/* one write per line, whole lines from every thread; the caller's
	 * errno stays as it was */
	size_t n = strlen(line), off = 0;
	int saved = errno;
	line[n++] = '\n';
	pthread_mutex_lock(&log_lock);
	while (off < n) {
		ssize_t w = write(STDERR_FILENO, line + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	pthread_mutex_unlock(&log_lock);
	errno = saved;
}

#define DEFINE_LOG(fn, lvl)                                                                        \
	void fn(const char *fmt, ...)                                                              \
	{                                                                                          \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		vlog(lvl, fmt, ap);                                                                \
		va_end(ap);                                                                        \
	}
DEFINE_LOG(log_debug, LOG_LVL_DEBUG)
DEFINE_LOG(log_info, LOG_LVL_INFO)
DEFINE_LOG(log_notice, LOG_LVL_NOTICE)
DEFINE_LOG(log_warn, LOG_LVL_WARN)
DEFINE_LOG(log_error, LOG_LVL_ERROR)

const char *log_quote(const char *s, char *buf, size_t buflen)
{
	size_t o = 0;
	int need_quotes = 0;
	if (!s)
		s = "";
	if (buflen < 4) {
		if (buflen)
			buf[0] = 0;
		return buf;
	}
	if (!*s)
		need_quotes = 1;
	for (const char *p = s; *p; p++)
		if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20)
			need_quotes = 1;
	if (need_quotes)
		buf[o++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p && o + 5 < buflen; p++) {
		if (*p == '"' || *p == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)*p;
		} else if (*p < 0x20 || *p == 0x7f) {
			o += (size_t)snprintf(buf + o, buflen - o, "\\x%02x", *p);
		} else {
			buf[o++] = (char)*p;
		}
	}
	if (need_quotes)
		buf[o++] = '"';
	buf[o] = 0;
	return buf;
}
