/* log.h — one event per line, key=value fields, with a priority: to the
 * journal (sd_journal_sendv, with MAILBOX, UID, ITEM, GROUP and ACCOUNT
 * fields taken from the text) when stderr is the journal, else to stderr as
 * text or JSON.
 *
 * Messages are printf-style; callers pass already key=value formatted text,
 * e.g. log_info("imap.connected account=%s host=%s", a, h), starting with
 * the event's name.  Values that come from mail or the network must go
 * through log_quote() first.  Priorities: error = a failure someone should
 * look at (journalctl -p err shows exactly these), warn = something went
 * wrong and is being retried or worked around, notice = a normal but
 * significant event (start, stop, reload), info = routine work, debug. */
#ifndef MAILFEED_LOG_H
#define MAILFEED_LOG_H

#include <stddef.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_NOTICE, LOG_LVL_WARN, LOG_LVL_ERROR };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

void log_set_level(enum log_level level);
int log_level_parse(const char *s, enum log_level *out);
/* How lines look when stderr is not the journal ([gateway] log_format). */
void log_set_format(enum log_format f);
int log_format_parse(const char *s, enum log_format *out);
/* Whether stderr is the journal's stream: 0 no, 1 events go through the
 * journal API, 2 its socket is missing, lines get "<N>" prefixes. */
int log_to_journal(void);
/* Decides again where events go (after stderr was redirected). */
void log_reopen(void);
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes s into buf as a log-safe value: quoted when it holds spaces or
 * quotes, control characters escaped, cut at buflen.  Returns buf. */
const char *log_quote(const char *s, char *buf, size_t buflen);
/* log_quote into a buffer of its own that lives as long as the block the
 * call is in, for a log argument:
 *   log_warn("imap.error mailbox=%s error=%s", key, LOG_Q(err));
 * Every value from outside (mail, a server, the system) goes through it;
 * a value is never written as \"%s\" by hand. */
#define LOG_QUOTE_MAX 1024
#define LOG_Q(s) log_quote((s), (char[LOG_QUOTE_MAX]){0}, LOG_QUOTE_MAX)

#endif
