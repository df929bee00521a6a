/* clean.c — separating what the sender wrote now from quoted history and
 * signatures.
 *
 * The text is cut into lines once; each line is classified by looking at
 * itself and at most a few lines after it, so the whole run is linear in the
 * input (no regular expressions, no unbounded rescans; very long lines are
 * never candidates for headers).  Rules, in order of confidence:
 *   - "> " quoted lines are history; unquoted lines between them (inline
 *     answers) are kept;
 *   - a quote header ("On … wrote:" in many languages, also wrapped over up
 *     to three lines) is history, with the quote under it; when what follows
 *     is not quoted, everything from the header on is history;
 *   - "-----Original Message-----" lines and Outlook "From:/Sent:/To:"
 *     header blocks (localised, with separators) start history to the end;
 *   - a forwarded message ("---------- Forwarded message ---------") is the
 *     sender's new text, kept whole;
 *   - signatures: the "-- " delimiter, mobile lines ("Sent from my iPhone"),
 *     a mailing-list footer, an "external sender" banner on top,
 *     confidentiality notices, a "-Name" last line, a contact block
 *     (address, phone, web site) after the closing formula — the formula
 *     ("Best regards,") and the name under it are the sender's and stay —
 *     or under a rule of dashes, and a short last paragraph of two or more
 *     lines holding the sender's name or address.
 * When a rule is unsure, the line is kept: losing new text is worse than
 * showing a quote.  Everything not kept goes to removed, in order. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/clean.h"
#include "mailfeed/util.h"

/* Lines longer than this are never quote headers or signature lines. */
#define CLEAN_MAX_HEADER_LINE 400
#define CLEAN_MAX_SIG_LINE 80

/* Why a line was removed: the rules below differ in what they may give
 * back when trimming would leave nothing or a kept answer needs its quote. */
enum cut_kind {
	CUT_NONE,
	CUT_QUOTE,  /* a "> " line, or a line of one its client wrapped */
	CUT_HEADER, /* an attribution ("On … wrote:") */
	CUT_REST,   /* history from a marker or header block to the end */
	CUT_SIG,    /* signature, mobile line, footer, legal or contact block */
	CUT_BLANK,  /* a blank line that goes with removed lines */
};

struct line {
	const char *s; /* not NUL-terminated; CR stripped */
	size_t len;
	int removed;
	int kind; /* enum cut_kind, when removed */
	int quoted;
	int blank;
	int evidence; /* holds a digit or an '@', as dated or addressed headers
		       * do: 1 or 0, -1 until needed */
};

/* --- small string helpers ---------------------------------------------- */

/* Skips leading spaces, tabs, zero-width spaces and no-break spaces. */
static void trim_view(const char **s, size_t *len)
{
	const unsigned char *p = (const unsigned char *)*s;
	size_t n = *len;
	for (;;) {
		if (n >= 1 && (p[0] == ' ' || p[0] == '\t')) {
			p++;
			n--;
		} else if (n >= 3 && p[0] == 0xE2 && p[1] == 0x80 && p[2] == 0x8B) {
			p += 3;
			n -= 3;
		} else if (n >= 2 && p[0] == 0xC2 && p[1] == 0xA0) {
			p += 2;
			n -= 2;
		} else {
			break;
		}
	}
	for (;;) {
		if (n >= 1 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		else if (n >= 3 && p[n - 3] == 0xE2 && p[n - 2] == 0x80 && p[n - 1] == 0x8B)
			n -= 3;
		else if (n >= 2 && p[n - 2] == 0xC2 && p[n - 1] == 0xA0)
			n -= 2;
		else
			break;
	}
	*s = (const char *)p;
	*len = n;
}

/* Case-insensitive comparison of n bytes that folds ASCII and the two-byte
 * letters of Latin-1, Latin Extended-A and Cyrillic ("ÄNDERUNG",
 * "Отправлено", "ŁÓDŹ"); longer sequences compare as bytes. */
static unsigned fold_cp(unsigned cp)
{
	if (cp < 0x80)
		return (unsigned)tolower((int)cp);
	if (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7)
		return cp + 0x20;
	if ((cp >= 0x100 && cp <= 0x137) || (cp >= 0x14A && cp <= 0x177))
		return cp | 1;
	if (((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E)) && (cp & 1))
		return cp + 1;
	if (cp >= 0x410 && cp <= 0x42F)
		return cp + 0x20;
	if (cp >= 0x400 && cp <= 0x40F)
		return cp + 0x50;
	return cp;
}

static size_t decode2(const unsigned char *p, size_t n, unsigned *cp)
{
	if (n >= 2 && p[0] >= 0xC2 && p[0] <= 0xDF && (p[1] & 0xC0) == 0x80) {
		*cp = ((unsigned)(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
		return 2;
	}
	*cp = p[0];
	return 1;
}

/* ASCII letters folded to lower case; other bytes as they are. */
static unsigned char ascii_lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 0x20 : c; }

static int fold_eq(const char *a, const char *b, size_t n)
{
	const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
	size_t i = 0;
	while (i < n) {
		unsigned ca, cb;
		/* fast path: two ASCII bytes (an ASCII byte never folds equal to
		 * a byte or sequence above 0x7F, so one of each is handled below) */
		if ((x[i] | y[i]) < 0x80) {
			if (x[i] != y[i] && ascii_lower(x[i]) != ascii_lower(y[i]))
				return 0;
			i++;
			continue;
		}
		size_t la = decode2(x + i, n - i, &ca), lb = decode2(y + i, n - i, &cb);
		if (la != lb || (la == 1 && ca >= 0x80 ? ca != cb : fold_cp(ca) != fold_cp(cb)))
			return 0;
		i += la;
	}
	return 1;
}

/* Whether the byte at s can open a match of needle: the first byte folded
 * when needle opens with an ASCII byte, any byte otherwise. */
static int may_open(const char *s, const char *needle)
{
	unsigned char c = (unsigned char)*s, f = (unsigned char)*needle;
	return f >= 0x80 || c == f || ascii_lower(c) == ascii_lower(f);
}

static int starts_ci(const char *s, size_t len, const char *prefix)
{
	if (*prefix && (len == 0 || !may_open(s, prefix)))
		return 0;
	size_t n = strlen(prefix);
	return len >= n && fold_eq(s, prefix, n);
}

static int ends_ci(const char *s, size_t len, const char *suffix)
{
	size_t n = strlen(suffix);
	/* an ASCII last byte must match the line's last byte */
	if (n > 0 && len > 0 && !may_open(s + len - 1, suffix + n - 1))
		return 0;
	return len >= n && fold_eq(s + len - n, suffix, n);
}

static int contains_ci(const char *s, size_t len, const char *needle)
{
	size_t n = strlen(needle);
	unsigned char f = (unsigned char)*needle;
	if (n > len)
		return 0;
	if ((f | 0x20) >= 'a' && (f | 0x20) <= 'z') {
		/* an ASCII letter first: a byte matches it when equal with bit 5 set */
		f |= 0x20;
		for (size_t i = 0; i + n <= len; i++)
			if (((unsigned char)s[i] | 0x20) == f && fold_eq(s + i, needle, n))
				return 1;
		return 0;
	}
	for (size_t i = 0; i + n <= len; i++)
		if (may_open(s + i, needle) && fold_eq(s + i, needle, n))
			return 1;
	return 0;
}

static int has_digit(const char *s, size_t len)
{
	size_t i = 0;
	/* eight bytes at a time: a byte b is a digit when b & 0x7F lies
	 * between '0' and '9' and its high bit is clear */
	for (; i + 8 <= len; i += 8) {
		const uint64_t ones = 0x0101010101010101u, low7 = 0x7F7F7F7F7F7F7F7Fu;
		uint64_t w, x;
		memcpy(&w, s + i, 8);
		x = w & low7;
		if ((((ones * (127 + ':')) - x) & ~w & (x + ones * (127 - '/')) & ~low7) != 0)
			return 1;
	}
	for (; i < len; i++)
		if ((unsigned char)(s[i] - '0') < 10)
			return 1;
	return 0;
}

static int is_word_byte(unsigned char c) { return isalnum(c) || c >= 0x80; }

/* Whether word occurs in s as a whole word (ASCII letters around it). */
static int has_word_ci(const char *s, size_t len, const char *word)
{
	size_t n = strlen(word);
	for (size_t i = 0; i + n <= len; i++) {
		if (!may_open(s + i, word) || !fold_eq(s + i, word, n))
			continue;
		if (i > 0 && isalpha((unsigned char)s[i - 1]))
			continue;
		if (i + n < len && isalpha((unsigned char)s[i + n]))
			continue;
		return 1;
	}
	return 0;
}

/* A "> " line.  Mail clients put the marker in the first column (a space
 * or two at most); a '>' after a tab or deeper indentation is code or a
 * prompt ("    >>> print(x)"), the writer's own text. */
static int line_is_quoted(const struct line *l)
{
	const char *s = l->s;
	size_t n = l->len, lead = 0;
	while (lead < n && lead < 4 && s[lead] == ' ')
		lead++;
	if (lead < n && (s[lead] == '\t' || lead >= 4))
		return 0;
	trim_view(&s, &n);
	return n > 0 && *s == '>';
}

/* --- quote headers ("On … wrote:") ------------------------------------ */

/* Verbs that end an attribution line, before the colon. */
static const char *const wrote_verbs[] = {
    "wrote",	  "writes",	 "a écrit",    "écrit",	     "escribió", "ha escrit",	"escrigué",
    "ha scritto", "scrisse",	 "schreef",    "schrieb",    "pisze",	 "napisał",	"napisała",
    "napisał(a)", "napisal",	 "kirjoitti",  "skrev",	     "escreveu", "написал",	"написала",
    "пише",	  "написав(ла)", "napsal(a)",  "написал(а)", "написав",	 "написала(а)", "пишет",
    "írta",	  "napsal",	 "napísal",    "έγραψε",     "yazdı",	 "kirjutas",	"rašė",
    "rakstīja",	  "napisao",	 "je napisal",
};
/* Scripts without spaces: the verb is matched without a word boundary. */
static const char *const wrote_verbs_cjk[] = {
    "写道", "寫道", "のメッセージ", "書きました", "작성", "님이 작성",
};
/* Verbs that may sit in the middle ("Am … schrieb Name <a@b>:"). */
static const char *const wrote_verbs_mid[] = {
    "schrieb",	 "schreef", "skrev",   "a écrit",  "escribió", "escreveu", "ha scritto", "wrote",
    "kirjoitti", "pisze",   "napisał", "napisała", "написал",  "написала", "írta",
};

/* Words that open an attribution line ("On …", "Le …", a date). */
static const char *const attribution_openers[] = {
    "On ", "Le ", "El ", "Il ", "Am ", "Op ", "W dniu ", "Den ", "Em ", "På ", "Dne ", "在",
};

static int starts_attribution(const char *s, size_t n)
{
	if (n > 0 && isdigit((unsigned char)*s))
		return 1;
	for (size_t i = 0; i < sizeof attribution_openers / sizeof *attribution_openers; i++)
		if (n >= strlen(attribution_openers[i]) &&
		    memcmp(s, attribution_openers[i], strlen(attribution_openers[i])) == 0)
			return 1;
	return 0;
}

/* Whether s (one or more joined lines, trimmed) is an attribution line. */
static int is_quote_header(const char *s, size_t len)
{
	size_t n = len;
	int evidence;
	if (len == 0 || len > 3 * CLEAN_MAX_HEADER_LINE)
		return 0;
	int colon = 0;
	/* decoration: Zimbra "- On … wrote:", Zoho "---- On … wrote ----", bold */
	while (n > 0 && (*s == '-' || *s == '*' || *s == ' ')) {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == '-' || s[n - 1] == '*' || s[n - 1] == ' '))
		n--;
	if (n >= 1 && s[n - 1] == ':') {
		n--;
		colon = 1;
	} else if (n >= 3 && memcmp(s + n - 3, "\xef\xbc\x9a", 3) == 0) {
		n -= 3;
		colon = 1;
	}
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '*'))
		n--;
	evidence = has_digit(s, n) || memchr(s, '@', n) != NULL;
	if (!evidence)
		return 0;
	/* without its colon only "On <date> … wrote" is trusted */
	if (!colon && !starts_attribution(s, n))
		return 0;
	for (size_t i = 0; i < sizeof wrote_verbs / sizeof *wrote_verbs; i++) {
		size_t v = strlen(wrote_verbs[i]);
		if (ends_ci(s, n, wrote_verbs[i]) && n > v && !isalpha((unsigned char)s[n - v - 1]))
			return 1;
	}
	if (!colon)
		return 0;
	for (size_t i = 0; i < sizeof wrote_verbs_cjk / sizeof *wrote_verbs_cjk; i++)
		if (ends_ci(s, n, wrote_verbs_cjk[i]))
			return 1;
	/* "2014-03-20 8:48 GMT+01:00 Name <a@b>:" — a date and an address */
	if (n > 0 && (s[n - 1] == '>' || s[n - 1] == ']') && memchr(s, '@', n) && has_digit(s, n))
		return 1;
	if (memchr(s, '@', n) || has_digit(s, n)) {
		for (size_t i = 0; i < sizeof wrote_verbs_mid / sizeof *wrote_verbs_mid; i++)
			if (has_word_ci(s, n, wrote_verbs_mid[i]) && has_digit(s, n))
				return 1;
	}
	return 0;
}

/* "On Monday Ann wrote:" carries no date or address; it counts only when
 * quoted lines follow it (checked by the caller). */
static int is_bare_quote_header(const char *s, size_t n)
{
	if (n < 2 || n > CLEAN_MAX_HEADER_LINE || s[n - 1] != ':')
		return 0;
	n--;
	while (n > 0 && s[n - 1] == ' ')
		n--;
	for (size_t i = 0; i < sizeof wrote_verbs / sizeof *wrote_verbs; i++) {
		size_t v = strlen(wrote_verbs[i]);
		if (ends_ci(s, n, wrote_verbs[i]) && n > v && s[n - v - 1] == ' ')
			return 1;
	}
	return 0;
}

static int ends_sentence(const char *s, size_t n)
{
	return n > 0 && (s[n - 1] == '.' || s[n - 1] == '!' || s[n - 1] == '?');
}

static int line_evidence(struct line *l)
{
	if (l->evidence < 0)
		l->evidence = memchr(l->s, '@', l->len) || has_digit(l->s, l->len);
	return l->evidence;
}

/* Number of lines (1-3) of a quote header starting at line i, or 0. */
static size_t quote_header_len(struct line *ls, size_t nl, size_t i, int bare)
{
	struct buf joined;
	size_t found = 0;
	int evidence = 0;
	buf_init(&joined);
	for (size_t k = 0; k < 3 && i + k < nl; k++)
		evidence |= line_evidence(&ls[i + k]);
	/* without a digit or an '@' in reach, is_quote_header holds for none */
	for (size_t k = 0; evidence && k < 3 && i + k < nl; k++) {
		const char *s = ls[i + k].s;
		size_t n = ls[i + k].len;
		trim_view(&s, &n);
		if (n == 0 || n > CLEAN_MAX_HEADER_LINE)
			break;
		/* a wrapped "<a@b\n>:" looks quoted but ends the header */
		if (ls[i + k].quoted && !(k > 0 && n == 2 && memcmp(s, ">:", 2) == 0))
			break;
		if (k > 0 && ends_sentence(joined.data, joined.len))
			break;
		if (k > 0)
			buf_putc(&joined, ' ');
		buf_append(&joined, s, n);
		if (is_quote_header(joined.data, joined.len)) {
			found = k + 1;
			break;
		}
	}
	/* a header wrapped over lines opens like one ("On …", "Le …", a date),
	 * "Thanks,\nAlex\n26.06.2014, … <a@b>:" is only its last line */
	if (found > 1) {
		const char *s = ls[i].s;
		size_t n = ls[i].len;
		trim_view(&s, &n);
		while (n > 0 && (*s == '-' || *s == '*' || *s == ' ')) {
			s++;
			n--;
		}
		/* or with a weekday and a date: "pe 20. lokakuuta 2017 klo …" */
		if (!starts_attribution(s, n) && !has_digit(s, n < 12 ? n : 12))
			found = 0;
	}
	/* "Hello\n02.04.2012 … <\na@b> написал:": the header starts later */
	if (found > 1) {
		const char *s = ls[i].s;
		size_t skip = ls[i].len;
		trim_view(&s, &skip);
		if (joined.len > skip + 1) {
			const char *rest = joined.data + skip + 1;
			size_t rn = joined.len - skip - 1;
			if ((starts_attribution(rest, rn) || isdigit((unsigned char)*rest)) &&
			    is_quote_header(rest, rn))
				found = 0;
		}
	}
	buf_free(&joined);
	/* "Ann wrote:" above a quote, or above the next attribution */
	if (!found && bare && !ls[i].quoted) {
		const char *s = ls[i].s;
		size_t n = ls[i].len, k = i + 1;
		trim_view(&s, &n);
		while (k < nl && k <= i + 2 && ls[k].blank)
			k++;
		if (k < nl && is_bare_quote_header(s, n) &&
		    (ls[k].quoted || quote_header_len(ls, nl, k, 0)))
			found = 1;
	}
	return found;
}

/* --- "-----Original Message-----" and Outlook header blocks ------------ */

static const char *const original_markers[] = {
    "original message",
    "ursprüngliche nachricht",
    "message d'origine",
    "mensaje original",
    "messaggio originale",
    "oorspronkelijk bericht",
    "opprinnelig melding",
    "oprindelig meddelelse",
    "oprindelig besked",
    "ursprungligt meddelande",
    "alkuperäinen viesti",
    "oryginalna wiadomość",
    "исходное сообщение",
    "Исходное сообщение",
    "mensagem original",
    "původní zpráva",
    "eredeti üzenet",
    "原始邮件",
    "原始郵件",
    "reply message",
    "original-nachricht",
    "originalnachricht",
    "message original",
    "origineel bericht",
    "оригінальне повідомлення",
    "вихідне повідомлення",
    "元のメッセージ",
    "wiadomość oryginalna",
    "원본 메시지",
    "orijinal mesaj",
    "originalmeddelelse",
    "opprinnelig melding",
};

static const char *const forward_markers[] = {
    "forwarded message",	  "begin forwarded message",
    "weitergeleitete nachricht",  "message transféré",
    "début du message réexpédié", "mensaje reenviado",
    "messaggio inoltrato",	  "doorgestuurd bericht",
    "videresendt melding",	  "videresendt meddelelse",
    "vidarebefordrat meddelande", "välitetty viesti",
    "przekazana wiadomość",	  "пересылаемое сообщение",
    "mensagem encaminhada",	  "转发的邮件",
};

/* A line of decoration only ("-----", "_____", "=====") of at least min. */
static int is_rule(const char *s, size_t n, size_t min)
{
	if (n < min)
		return 0;
	/* em dashes and box-drawing lines ("———", "───") count per character */
	if (n >= 3 && (memcmp(s, "\xe2\x80\x94", 3) == 0 || memcmp(s, "\xe2\x94\x80", 3) == 0)) {
		if (n % 3 || n / 3 < min)
			return 0;
		for (size_t i = 3; i < n; i += 3)
			if (memcmp(s + i, s, 3) != 0)
				return 0;
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		if (s[i] != s[0] || (s[0] != '-' && s[0] != '_' && s[0] != '='))
			return 0;
	return 1;
}

/* "-----Original Message-----", "----- Mensaje original -----", … */
static int is_original_marker(const char *s, size_t n)
{
	const char *p = s;
	size_t m = n;
	if (n > 120)
		return 0;
	while (m > 0 && (*p == '-' || *p == '=' || *p == '_' || *p == ' ' || *p == '*')) {
		p++;
		m--;
	}
	while (m > 0 && (p[m - 1] == '-' || p[m - 1] == '=' || p[m - 1] == '_' || p[m - 1] == ' ' ||
			 p[m - 1] == '*' || p[m - 1] == ':'))
		m--;
	for (size_t i = 0; i < sizeof original_markers / sizeof *original_markers; i++)
		if (m > 0 && may_open(p, original_markers[i]) && m == strlen(original_markers[i]) &&
		    fold_eq(p, original_markers[i], m))
			return 1;
	return 0;
}

/* "---------- Forwarded message ---------", "Begin forwarded message:". */
static int is_forward_marker(const char *s, size_t n)
{
	if (n > 120)
		return 0;
	while (n > 0 && (*s == '-' || *s == '=' || *s == ' ' || *s == '*')) {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == '-' || s[n - 1] == '=' || s[n - 1] == ' ' || s[n - 1] == '*' ||
			 s[n - 1] == ':'))
		n--;
	for (size_t i = 0; i < sizeof forward_markers / sizeof *forward_markers; i++)
		if (n > 0 && may_open(s, forward_markers[i]) && n == strlen(forward_markers[i]) &&
		    fold_eq(s, forward_markers[i], n))
			return 1;
	return 0;
}

/* Header names of a quoted message header block, localised.  The first
 * group names the sender. */
static const char *const from_keys[] = {
    "from",   "de",	   "von",    "van",	 "da",	       "fra",
    "från",   "lähettäjä", "od",     "от",	 "expéditeur", "remitente",
    "От",     "发件人",	   "寄件者", "差出人",	 "보낸 사람",  "message du",
    "kimden", "feladó",	   "від",    "afzender", "absender",
};
static const char *const other_keys[] = {
    "sent",	  "date",	"to",	      "cc",	   "subject",	    "envoyé",
    "envoyé le",  "à",		"a",	      "objet",	   "sujet",	    "gesendet",
    "datum",	  "an",		"betreff",    "enviado",   "enviada",	    "fecha",
    "para",	  "asunto",	"assunto",    "data",	   "verzonden",	    "aan",
    "onderwerp",  "inviato",	"oggetto",    "sendt",	   "til",	    "emne",
    "skickat",	  "till",	"ämne",	      "lähetetty", "vastaanottaja", "aihe",
    "wysłano",	  "wysłane",	"do",	      "temat",	   "отправлено",    "дата",
    "кому",	  "тема",	"Отправлено", "Дата",	   "Кому",	    "Тема",
    "Копия",	  "发送时间",	"收件人",     "主题",	   "抄送",	    "日期",
    "寄件日期",	  "收件者",	"主旨",	      "送信日時",  "宛先",	    "件名",
    "reply-to",	  "kopie",	"copie",      "dato",	   "päivämäärä",    "kopio",
    "enviado el", "gönderildi", "kime",	      "konu",	   "bilgi",	    "tarih",
    "elküldve",	  "címzett",	"tárgy",      "másolat",   "dátum",	    "надіслано",
    "копія",	  "odesláno",	"komu",	      "předmět",   "받는 사람",	    "보낸 날짜",
    "참조",	  "제목",	"날짜",	      "cc/bcc",	   "inviato il",    "datum odeslání",
};

/* Length of "Key:" (with bold markers and spaces) when the line starts
 * with one of keys, else 0. */
static size_t header_key(const char *s, size_t n, const char *const *keys, size_t nkeys)
{
	size_t off = 0;
	while (off < n && s[off] == '*')
		off++;
	for (size_t i = 0; i < nkeys; i++) {
		size_t k = strlen(keys[i]), p = off + k;
		if (n < p || !fold_eq(s + off, keys[i], k))
			continue;
		while (p < n && (s[p] == ' ' || s[p] == '*' ||
				 (p + 1 < n && (unsigned char)s[p] == 0xC2 &&
				  (unsigned char)s[p + 1] == 0xA0)))
			p += (unsigned char)s[p] == 0xC2 ? 2 : 1;
		if (p < n && s[p] == ':')
			return p + 1;
		if (p + 3 <= n && memcmp(s + p, "\xef\xbc\x9a", 3) == 0)
			return p + 3;
	}
	return 0;
}

static size_t any_key(const char *s, size_t n, int *is_from)
{
	*is_from = 0;
	/* every key ends in ':' or a full-width colon (EF BC 9A) */
	if (!memchr(s, ':', n) && !memchr(s, 0xEF, n))
		return 0;
	size_t k = header_key(s, n, from_keys, sizeof from_keys / sizeof *from_keys);
	*is_from = k > 0;
	if (!k)
		k = header_key(s, n, other_keys, sizeof other_keys / sizeof *other_keys);
	return k;
}

/* Whether line i starts a quoted message's header block: a header line
 * followed within a few lines by more, three or more in all, one of them
 * naming the sender ("From:", "De :", "Von:" …, in any order); or a lone
 * From: line whose value is an address in brackets. */
static int is_header_block(const struct line *ls, size_t nl, size_t i)
{
	const char *s = ls[i].s;
	size_t n = ls[i].len, k, keys = 1, seen = 0;
	int from, any_from;
	trim_view(&s, &n);
	if (n > CLEAN_MAX_HEADER_LINE)
		return 0;
	k = any_key(s, n, &from);
	if (!k)
		return 0;
	any_from = from;
	for (size_t j = i + 1; j < nl && j <= i + 12 && seen < 6; j++) {
		const char *t = ls[j].s;
		size_t m = ls[j].len;
		int f;
		trim_view(&t, &m);
		if (m == 0)
			continue;
		seen++;
		if (m <= CLEAN_MAX_HEADER_LINE && any_key(t, m, &f)) {
			keys++;
			any_from |= f;
		}
	}
	if (keys >= 3 && any_from)
		return 1;
	if (!from)
		return 0;
	while (n > 0 && s[n - 1] == '*')
		n--;
	return n > k && (s[n - 1] == '>' || s[n - 1] == ']') && memchr(s + k, '@', n - k) &&
	       memchr(s + k, '<', n - k);
}

/* --- signatures ---------------------------------------------------------- */

static const char *const mobile_prefixes[] = {
    "sent from ",
    "sent with ",
    "sent via ",
    "sent using ",
    "get outlook for ",
    "envoyé de mon ",
    "envoyé à partir de ",
    "envoyé depuis ",
    "envoyé avec ",
    "obtenir outlook pour ",
    "obtener outlook para ",
    "obter o outlook para ",
    "scarica outlook per ",
    "hämta outlook för ",
    "pobierz outlook dla ",
    "получите outlook для ",
    "holen sie sich outlook für ",
    "von meinem ",
    "gesendet von ",
    "gesendet mit ",
    "enviado desde mi ",
    "enviado desde ",
    "enviado do meu ",
    "enviado de meu ",
    "enviado de mi ",
    "enviado com ",
    "inviato da ",
    "inviato dal ",
    "inviato con ",
    "verzonden vanaf ",
    "verstuurd vanaf ",
    "verzonden met ",
    "verstuurd met ",
    "skickat från ",
    "sendt fra ",
    "lähetetty ",
    "wysłano z ",
    "wysłane z ",
    "wysłano ze ",
    "wysłane ze ",
    "odesláno z ",
    "odoslané z ",
    "poslano s ",
    "küldve ",
    "отправлено с ",
    "отправлено из ",
    "надіслано з ",
    "надіслано із ",
    "изпратено от ",
    "στάλθηκε από ",
    "发自我的",
    "发自",
    "從我的",
    "寄件者為",
};
/* Scripts that put the verb last: "iPhoneから送信", "나의 iPhone에서 보냄". */
static const char *const mobile_suffixes[] = {
    "から送信",
    "から送信しました",
    "에서 보냄",
    "에서 보냈습니다",
    "傳送",
    "发送",
    "'dan gönderildi",
    "’dan gönderildi",
    "'den gönderildi",
    "’den gönderildi",
    "umdan gönderildi",
    "imden gönderildi",
    " gesendet",
    " verzonden",
    " skickat",
};

static int is_mobile_signature(const char *s, size_t n)
{
	if (n == 0 || n > CLEAN_MAX_SIG_LINE || memchr(s, ',', n) || s[n - 1] == '?' ||
	    s[n - 1] == '!')
		return 0;
	for (size_t i = 0; i < sizeof mobile_prefixes / sizeof *mobile_prefixes; i++)
		if (may_open(s, mobile_prefixes[i]) && starts_ci(s, n, mobile_prefixes[i]))
			return 1;
	/* "iPhoneから送信", "Von meinem iPhone gesendet": a device name first */
	for (size_t i = 0; i < sizeof mobile_suffixes / sizeof *mobile_suffixes; i++)
		if (ends_ci(s, n, mobile_suffixes[i]) &&
		    (contains_ci(s, n, "iphone") || contains_ci(s, n, "ipad") ||
		     contains_ci(s, n, "android") || contains_ci(s, n, "mobile") ||
		     contains_ci(s, n, "outlook") || contains_ci(s, n, "galaxy") ||
		     contains_ci(s, n, "samsung") || contains_ci(s, n, "huawei") ||
		     contains_ci(s, n, "xiaomi") || contains_ci(s, n, "blackberry") ||
		     contains_ci(s, n, "携帯") || contains_ci(s, n, "手机")))
			return 1;
	return 0;
}

static int is_sig_delimiter(const char *raw, size_t rawlen)
{
	return (rawlen == 3 && memcmp(raw, "-- ", 3) == 0) ||
	       (rawlen == 2 && memcmp(raw, "--", 2) == 0);
}

static const char *const closings[] = {
    "regards",
    "best regards",
    "kind regards",
    "warm regards",
    "warmest regards",
    "with kind regards",
    "many regards",
    "best wishes",
    "mit freundlichen grüßen",
    "freundliche grüße",
    "viele grüße",
    "beste grüße",
    "cordialement",
    "bien cordialement",
    "salutations",
    "saludos",
    "saludos cordiales",
    "un saludo",
    "cordiali saluti",
    "distinti saluti",
    "met vriendelijke groet",
    "vriendelijke groet",
    "med vänlig hälsning",
    "vänliga hälsningar",
    "med venlig hilsen",
    "venlig hilsen",
    "med vennlig hilsen",
    "ystävällisin terveisin",
    "pozdrawiam",
    "z poważaniem",
    "atenciosamente",
    "cumprimentos",
    "с уважением",
    "з повагою",
    "cheers",
    "thanks",
    "thank you",
    "many thanks",
    "thanks again",
    "best",
    "all the best",
    "sincerely",
    "yours sincerely",
    "yours truly",
    "yours",
    "greetings",
    "grüße",
    "gruß",
    "liebe grüße",
    "lg",
    "vg",
    "mfg",
    "danke",
    "merci",
    "bonne journée",
    "a bientôt",
    "à bientôt",
    "gracias",
    "grazie",
    "saluti",
    "un saluto",
    "groeten",
    "groetjes",
    "hälsningar",
    "mvh",
    "hilsen",
    "terveisin",
    "pozdrowienia",
    "dziękuję",
    "obrigado",
    "obrigada",
    "abraços",
    "спасибо",
    "дякую",
    "s pozdravem",
    "üdvözlettel",
    "saygılarımla",
    "よろしくお願いします",
    "よろしくお願いいたします",
    "谢谢",
    "此致",
};

/* "Best regards," as a line of its own. */
static int is_closing(const char *s, size_t n)
{
	while (n > 0 && (s[n - 1] == ',' || s[n - 1] == '!' || s[n - 1] == '.'))
		n--;
	if (n == 0)
		return 0;
	/* the line's first byte, folded, against each closing's first byte */
	unsigned char c0 = ascii_lower((unsigned char)*s);
	for (size_t i = 0; i < sizeof closings / sizeof *closings; i++) {
		unsigned char f = (unsigned char)closings[i][0];
		if (f < 0x80 && ascii_lower(f) != c0)
			continue;
		if (n == strlen(closings[i]) && fold_eq(s, closings[i], n))
			return 1;
	}
	return 0;
}

/* Whether word (n bytes) occurs in s as a whole word, case-insensitively. */
static int has_name(const char *s, size_t len, const char *word, size_t n)
{
	if (n < 3)
		return 0;
	for (size_t i = 0; i + n <= len; i++) {
		if (!may_open(s + i, word) || !fold_eq(s + i, word, n))
			continue;
		if (i > 0 && is_word_byte((unsigned char)s[i - 1]))
			continue;
		if (i + n < len && is_word_byte((unsigned char)s[i + n]))
			continue;
		return 1;
	}
	return 0;
}

/* Whether a line holds the sender: full name, first name, address or the
 * address' local part. */
static int mentions_sender(const char *s, size_t n, const char *sender)
{
	const char *at, *sp;
	size_t len;
	if (!sender || !*sender)
		return 0;
	len = strlen(sender);
	if (has_name(s, n, sender, len))
		return 1;
	at = strchr(sender, '@');
	if (at)
		return has_name(s, n, sender, (size_t)(at - sender));
	sp = strchr(sender, ' ');
	return sp && has_name(s, n, sender, (size_t)(sp - sender));
}

/* A phone number, an address, a web site: what contact blocks hold. */
static int has_contact(const char *s, size_t n)
{
	size_t digits = 0;
	if (memchr(s, '@', n) || contains_ci(s, n, "http") || contains_ci(s, n, "www.") ||
	    contains_ci(s, n, "://"))
		return 1;
	for (size_t i = 0; i < n; i++)
		digits += (unsigned char)(s[i] - '0') < 10;
	return digits >= 7;
}

/* Words of confidentiality notices and disclaimers, in a few languages. */
static const char *const legal_words[] = {
    "confidential",    "intended recipient",
    "intended solely", "privileged",
    "disclaimer",      "prohibited",
    "unauthorized",    "unauthorised",
    "virus",	       "notify the sender",
    "legally",	       "vertraulich",
    "empfänger",       "confidentiel",
    "destinataire",    "confidencial",
    "destinatario",    "riservat",
    "vertrouwelijk",   "geadresseerde",
    "конфиденциальн",  "poufn",
    "scanned for",     "malware",
    "unlawful",	       "disclosure",
    "dissemination",
};

/* How many of legal_words the line holds.  One pass over the line: at each
 * byte only the words opening with that letter are compared; words opening
 * with a byte above 0x7F are searched on their own. */
static int legal_score(const char *s, size_t n)
{
	enum { NWORDS = sizeof legal_words / sizeof *legal_words };
	char found[NWORDS] = {0};
	size_t lens[NWORDS];
	int first[26], next[NWORDS], score = 0; /* words by first letter */
	for (size_t c = 0; c < 26; c++)
		first[c] = -1;
	for (size_t k = NWORDS; k-- > 0;) {
		unsigned char f = (unsigned char)legal_words[k][0];
		lens[k] = strlen(legal_words[k]);
		if (f >= 'a' && f <= 'z') {
			next[k] = first[f - 'a'];
			first[f - 'a'] = (int)k;
		} else {
			score += contains_ci(s, n, legal_words[k]);
		}
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i] | 0x20;
		if (c < 'a' || c > 'z')
			continue;
		for (int k = first[c - 'a']; k >= 0; k = next[k])
			if (!found[k] && i + lens[k] <= n &&
			    fold_eq(s + i, legal_words[k], lens[k])) {
				found[k] = 1;
				score++;
			}
	}
	return score;
}

/* "CAUTION: This email originated from outside …", "[EXTERNAL]": banners a
 * mail system puts above the text. */
static int is_banner(const char *s, size_t n)
{
	return starts_ci(s, n, "caution: this email originated") ||
	       starts_ci(s, n, "caution: this e-mail originated") ||
	       starts_ci(s, n, "caution: external") || starts_ci(s, n, "[external]") ||
	       starts_ci(s, n, "external email:") || starts_ci(s, n, "external sender") ||
	       starts_ci(s, n, "this email originated from outside") ||
	       starts_ci(s, n, "this message originated from outside");
}

static void cut_line(struct line *l, int kind)
{
	if (!l->removed) {
		l->removed = 1;
		l->kind = kind;
	}
}

/* A name under a closing: a few words, no digits, no address. */
static int is_name_line(const char *s, size_t n)
{
	size_t words = 1;
	if (n == 0 || n > 50 || has_digit(s, n) || memchr(s, '@', n) || ends_sentence(s, n))
		return 0;
	for (size_t i = 0; i < n; i++)
		words += s[i] == ' ';
	return words <= 4;
}

/* "Abhishek Kona": up to three words, each capitalised, letters only. */
static int is_capitalised_name(const char *s, size_t n)
{
	size_t words = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == ' ')
			continue;
		if (i == 0 || s[i - 1] == ' ') {
			if (!isupper(c) && c < 0x80)
				return 0;
			words++;
		} else if (!isalpha(c) && c < 0x80 && c != '\'' && c != '-') {
			return 0;
		}
	}
	return words >= 1 && words <= 3;
}

static int is_list_item(const struct line *l)
{
	const char *s = l->s;
	size_t n = l->len;
	trim_view(&s, &n);
	return n >= 2 && (s[0] == '-' || s[0] == '*') && s[1] == ' ';
}

/* Legal notices at the end of [first, last): paragraphs with two or more
 * of their words (or a "Disclaimer" title) and the rules between them.
 * Returns the new end. */
static size_t strip_legal_tail(struct line *ls, size_t first, size_t last)
{
	size_t end = last;
	for (;;) {
		size_t para = end, j;
		int score = 0, title = 0;
		while (para > first && (ls[para - 1].blank || ls[para - 1].removed))
			para--;
		end = para;
		while (para > first && !ls[para - 1].blank && !ls[para - 1].removed)
			para--;
		if (para <= first || para == end)
			break;
		for (j = para; j < end; j++) {
			const char *s = ls[j].s;
			size_t n = ls[j].len;
			trim_view(&s, &n);
			if (is_rule(s, n, 3))
				continue;
			score += legal_score(s, n);
			if (j == para && n < 40 &&
			    (starts_ci(s, n, "disclaimer") || starts_ci(s, n, "confidentiality") ||
			     starts_ci(s, n, "legal notice") ||
			     starts_ci(s, n, "haftungsausschluss")))
				title = 1;
		}
		/* a lone rule, a notice, or a notice's title just above one */
		int rules_only = 1;
		for (j = para; j < end; j++) {
			const char *s = ls[j].s;
			size_t n = ls[j].len;
			trim_view(&s, &n);
			rules_only &= is_rule(s, n, 3);
		}
		if (!(rules_only || score >= 2 || (title && end < last)))
			break;
		for (j = para; j < end; j++)
			cut_line(&ls[j], CUT_SIG);
		end = para;
	}
	while (end > first && (ls[end - 1].blank || ls[end - 1].removed))
		end--;
	return end;
}

/* The last line of ls[a..last) when it is a mobile signature ("Sent from
 * my phone") and not the only kept line: cut.  Returns the new end. */
static size_t strip_mobile_line(struct line *ls, size_t a, size_t first_kept, size_t last)
{
	const char *s = ls[last - 1].s;
	size_t n = ls[last - 1].len;
	trim_view(&s, &n);
	if (is_mobile_signature(s, n) && last - 1 > first_kept) {
		cut_line(&ls[last - 1], CUT_SIG);
		while (last > a && (ls[last - 1].blank || ls[last - 1].removed))
			last--;
	}
	return last;
}

/* A "-Name" line at the very end (not "-lm" or "-O2"): cut.  1 if so. */
static int strip_dash_name(struct line *ls, size_t first_kept, size_t last)
{
	const char *s = ls[last - 1].s;
	size_t n = ls[last - 1].len;
	trim_view(&s, &n);
	if (n >= 3 && n <= 40 && s[0] == '-' && is_capitalised_name(s + 1, n - 1) &&
	    last - 1 > first_kept && !is_list_item(&ls[last - 2])) {
		cut_line(&ls[last - 1], CUT_SIG);
		return 1;
	}
	return 0;
}

/* "Thanks," then a rule and a signature block with a contact in it: the
 * rule and the block are cut.  1 if so. */
static int strip_ruled_block(struct line *ls, size_t first_kept, size_t last)
{
	size_t count = 0;
	for (size_t i = last; i-- > first_kept + 1 && ++count <= 40;) {
		const char *s = ls[i].s, *t;
		size_t n = ls[i].len, m, j = i + 1, k;
		int contact = 0;
		trim_view(&s, &n);
		if (ls[i].blank || !is_closing(s, n))
			continue;
		while (j < last && ls[j].blank)
			j++;
		if (j >= last)
			break;
		t = ls[j].s;
		m = ls[j].len;
		trim_view(&t, &m);
		if (!is_rule(t, m, 3))
			break;
		for (k = j + 1; k < last && k <= j + 8; k++) {
			const char *u = ls[k].s;
			size_t un = ls[k].len;
			trim_view(&u, &un);
			contact |= has_contact(u, un);
		}
		if (contact) {
			for (k = j; k < last; k++)
				cut_line(&ls[k], CUT_SIG);
			return 1;
		}
		break;
	}
	return 0;
}

/* After the closing formula at i and the name under it: a block with a
 * contact (address, phone, web site) and no sentence is cut. */
static void strip_after_closing_at(struct line *ls, size_t i, size_t last)
{
	size_t j = i + 1, from;
	int sentence = 0, contact = 0;
	while (j < last && ls[j].blank)
		j++;
	if (j < last) {
		const char *t = ls[j].s;
		size_t m = ls[j].len;
		trim_view(&t, &m);
		if (is_name_line(t, m))
			j++;
	}
	from = j;
	for (; j < last; j++) {
		const char *t = ls[j].s;
		size_t m = ls[j].len;
		trim_view(&t, &m);
		if (ls[j].blank)
			continue;
		sentence |= (ends_sentence(t, m) && !has_contact(t, m)) || starts_ci(t, m, "p.s") ||
			    starts_ci(t, m, "ps:") || m > 80;
		contact |= has_contact(t, m) || is_rule(t, m, 2);
	}
	if (from < last && !sentence && contact)
		for (j = from; j < last; j++)
			cut_line(&ls[j], CUT_SIG);
}

/* A closing formula among the last short lines: it and the name under it
 * stay, a contact block after them goes.  1 when a closing was found (the
 * search for a signature ends there). */
static int strip_after_closing(struct line *ls, size_t first_kept, size_t last)
{
	size_t count = 0;
	for (size_t i = last; i-- > first_kept + 1;) {
		const char *s = ls[i].s;
		size_t n = ls[i].len;
		trim_view(&s, &n);
		if (ls[i].blank)
			continue;
		if (n > 60 || ++count > 8)
			break;
		if (!is_closing(s, n))
			continue;
		strip_after_closing_at(ls, i, last);
		return 1;
	}
	return 0;
}

/* A short last paragraph holding the sender's name or address: cut.  1 if
 * so. */
static int strip_sender_paragraph(struct line *ls, size_t first_kept, size_t last,
				  const char *sender)
{
	size_t para = last, count = 0;
	int found = 0;
	while (para > first_kept && !ls[para - 1].blank && !ls[para - 1].removed) {
		const char *s = ls[para - 1].s;
		size_t n = ls[para - 1].len;
		trim_view(&s, &n);
		if (n > CLEAN_MAX_SIG_LINE || ++count > 8)
			break;
		found |= mentions_sender(s, n, sender);
		para--;
	}
	if (found && para > first_kept && last - para >= 2 && count <= 8 &&
	    (para == first_kept || ls[para - 1].blank || ls[para - 1].removed) &&
	    ls[para].len <= CLEAN_MAX_SIG_LINE) {
		for (size_t i = para; i < last; i++)
			cut_line(&ls[i], CUT_SIG);
		return 1;
	}
	return 0;
}

/* A rule of dashes after a blank line, then a few short lines with a
 * contact or the sender's name: a signature block, cut.  Under a heading,
 * or with columns, the rule belongs to a table, a report or a form. */
static void strip_dash_rule_block(struct line *ls, size_t first_kept, size_t last,
				  const char *sender)
{
	for (size_t i = last; i-- > first_kept + 1 && last - i <= 24;) {
		const char *s = ls[i].s;
		size_t n = ls[i].len;
		trim_view(&s, &n);
		if (!ls[i].blank && n > CLEAN_MAX_SIG_LINE)
			break;
		if (!ls[i].blank && ends_sentence(s, n) && s[0] != '-' && !has_contact(s, n))
			break;
		if (!ls[i].blank && (memchr(s, '|', n) || memchr(s, '\t', n)))
			break;
		if (is_rule(s, n, 2) && s[0] == '-' && i + 1 < last && ls[i - 1].blank) {
			int signed_ = 0;
			for (size_t j = i + 1; j < last; j++) {
				const char *t = ls[j].s;
				size_t m = ls[j].len;
				trim_view(&t, &m);
				signed_ |= has_contact(t, m) || mentions_sender(t, m, sender);
			}
			if (!signed_)
				break;
			for (size_t j = i; j < last; j++)
				cut_line(&ls[j], CUT_SIG);
			return;
		}
	}
}

/* Marks the tail of the kept lines [a, b) that is a signature.  The
 * writer's sign-off ("Best regards," and a name) is their text and stays;
 * what follows it when it is a contact block goes. */
static void strip_tail_signature(struct line *ls, size_t a, size_t b, const char *sender)
{
	size_t last = b, first_kept = b;
	for (size_t i = a; i < b; i++)
		if (!ls[i].blank && !ls[i].removed) {
			first_kept = i;
			break;
		}
	while (last > a && (ls[last - 1].blank || ls[last - 1].removed))
		last--;
	if (last <= first_kept)
		return;
	last = strip_mobile_line(ls, a, first_kept, last);
	/* confidentiality notices */
	last = strip_legal_tail(ls, first_kept, last);
	if (last <= first_kept)
		return;
	/* the first of these that finds its kind of signature ends the search */
	if (strip_dash_name(ls, first_kept, last) || strip_ruled_block(ls, first_kept, last) ||
	    strip_after_closing(ls, first_kept, last) ||
	    strip_sender_paragraph(ls, first_kept, last, sender))
		return;
	strip_dash_rule_block(ls, first_kept, last, sender);
}

/* "____" then a short mailing-list footer to the end. */
static int is_list_footer(const struct line *ls, size_t nl, size_t i)
{
	const char *s = ls[i].s;
	size_t n = ls[i].len, lines = 0;
	int listy = 0;
	trim_view(&s, &n);
	if (!is_rule(s, n, 10))
		return 0;
	for (size_t j = i + 1; j < nl; j++) {
		const char *t = ls[j].s;
		size_t m = ls[j].len;
		if (ls[j].blank)
			continue;
		if (++lines > 6 || m > 120)
			return 0;
		listy |= contains_ci(t, m, "mailing list") || contains_ci(t, m, "listinfo") ||
			 contains_ci(t, m, "unsubscribe");
	}
	return listy;
}

/* --- driver ---------------------------------------------------------------- */

static struct line *split_lines(const char *text, size_t *nl)
{
	size_t cap = 64, n = 0;
	struct line *ls = xmalloc(cap * sizeof *ls);
	const char *p = text;
	for (;;) {
		size_t len = strcspn(p, "\r\n");
		const char *e = p + len;
		if (n == cap) {
			cap *= 2;
			ls = xrealloc(ls, cap * sizeof *ls);
		}
		ls[n] = (struct line){.s = p, .len = len};
		{
			const char *s = p;
			size_t m = len;
			trim_view(&s, &m);
			ls[n].blank = m == 0;
		}
		ls[n].quoted = line_is_quoted(&ls[n]);
		ls[n].evidence = -1;
		n++;
		if (!*e)
			break;
		p = e + (e[0] == '\r' && e[1] == '\n' ? 2 : 1);
		if (!*p)
			break;
	}
	*nl = n;
	return ls;
}

static void mark_from(struct line *ls, size_t nl, size_t i, int kind)
{
	for (; i < nl; i++)
		cut_line(&ls[i], kind);
}

/* A long rule right above a "From:" line (in any language): Outlook's
 * separator, even when its header block is cut short. */
static int rule_opens_header(const struct line *ls, size_t nl, size_t i)
{
	size_t j = i + 1;
	int from;
	while (j < nl && j <= i + 2 && ls[j].blank)
		j++;
	if (j >= nl || ls[j].len > CLEAN_MAX_HEADER_LINE)
		return 0;
	{
		const char *s = ls[j].s;
		size_t n = ls[j].len;
		trim_view(&s, &n);
		return any_key(s, n, &from) && from;
	}
}

/* Where the history starts when line i is a header block: a rule or an
 * "Original Message" line just above it belongs to it. */
static size_t block_start(const struct line *ls, size_t i)
{
	size_t j = i;
	while (j > 0 && ls[j - 1].blank)
		j--;
	if (j > 0) {
		const char *s = ls[j - 1].s;
		size_t n = ls[j - 1].len;
		trim_view(&s, &n);
		if (is_rule(s, n, 3) || is_original_marker(s, n))
			return j - 1;
	}
	return i;
}

/* The marker, rule and "Key: value" lines that open history at line i are
 * headers, not text that trimming may give back. */
static void mark_header_lines(struct line *ls, size_t nl, size_t i)
{
	for (; i < nl; i++) {
		const char *s = ls[i].s;
		size_t n = ls[i].len;
		int from;
		trim_view(&s, &n);
		if (n == 0)
			continue;
		if (!is_rule(s, n, 3) && !is_original_marker(s, n) &&
		    (n > CLEAN_MAX_HEADER_LINE || !any_key(s, n, &from)))
			break;
		ls[i].kind = CUT_HEADER;
	}
}

static int kept_before(const struct line *ls, size_t i)
{
	while (i-- > 0)
		if (!ls[i].removed && !ls[i].blank)
			return 1;
	return 0;
}

/* Lines under the quote that are only a name and a contact: the writer's
 * signature block that their client put below the history ("Ann Lee | ACME",
 * "Phone: +1 555 …"), not an answer to it. */
static int is_contact_block(const struct line *ls, size_t a, size_t b)
{
	size_t lines = 0;
	int contact = 0, named = 0;
	for (size_t i = a; i < b; i++) {
		const char *s = ls[i].s;
		size_t n = ls[i].len;
		if (ls[i].removed || ls[i].blank)
			continue;
		trim_view(&s, &n);
		if (++lines > 6 || n > CLEAN_MAX_SIG_LINE)
			return 0;
		if (has_contact(s, n))
			contact = 1;
		else if (ends_sentence(s, n) || n > 50)
			return 0;
		else
			named = 1;
	}
	/* a link or an address alone is an answer */
	return contact && named && lines >= 2;
}

/* Blank lines go with what is above them: kept after kept text, removed
 * after removed lines and at the top. */
static void settle_blanks(struct line *ls, size_t nl)
{
	for (size_t i = 0; i < nl;) {
		size_t j = i;
		int gone;
		if (!ls[i].blank) {
			i++;
			continue;
		}
		while (j < nl && ls[j].blank)
			j++;
		gone = i > 0 ? ls[i - 1].removed : (j == nl || ls[j].removed);
		for (size_t k = i; k < j; k++) {
			ls[k].removed = gone;
			ls[k].kind = gone ? CUT_BLANK : CUT_NONE;
		}
		i = j;
	}
}

/* Whether a quoted line (markers stripped) carries prose of the quoted
 * message, rather than its signature or its list's footer. */
static int quoted_prose(const char *s, size_t n)
{
	size_t letters = 0;
	while (n > 0 && (*s == '>' || *s == ' ')) {
		s++;
		n--;
	}
	for (size_t i = 0; i < n; i++)
		letters += isalpha((unsigned char)s[i]) || (unsigned char)s[i] >= 0x80;
	return letters >= 15 && !has_contact(s, n) && !contains_ci(s, n, "mailing list") &&
	       !contains_ci(s, n, "unsubscribe");
}

/* A greeting above a bottom-posted answer ("Hi,", "Hello Ann"). */
static int is_greeting_run(const struct line *ls, size_t from, size_t to)
{
	size_t lines = 0;
	for (size_t i = from; i < to; i++) {
		const char *s = ls[i].s;
		size_t n = ls[i].len;
		if (ls[i].blank || ls[i].removed)
			continue;
		trim_view(&s, &n);
		if (++lines > 1 || n > 30 || ends_sentence(s, n))
			return 0;
	}
	return 1;
}

/* Answers between quotes: a quote block that the writer answers below it
 * stays (as quote lines) when the writer answered inline; the history that
 * nothing answers stays removed.  A plain bottom-post (a greeting at most,
 * the quote, then the answer, then nothing quoted that is worth keeping)
 * keeps only the answer, as a top-post does. */
static void keep_answered_quotes(struct line *ls, size_t nl)
{
	size_t starts[64], ends[64], nb = 0, answered = 0, first = 0, i = 0;
	int trailing_prose = 0;
	while (i < nl && nb < 64) {
		size_t j;
		if (!(ls[i].removed && ls[i].kind == CUT_QUOTE)) {
			i++;
			continue;
		}
		j = i;
		while (j < nl && ls[j].removed && (ls[j].kind == CUT_QUOTE || ls[j].blank))
			j++;
		while (j > i && ls[j - 1].blank)
			j--;
		starts[nb] = i;
		ends[nb] = j;
		nb++;
		i = j;
	}
	for (size_t b = 0; b < nb; b++) {
		size_t k = ends[b];
		while (k < nl && ls[k].blank)
			k++;
		if (k < nl && !ls[k].removed) {
			if (!answered++)
				first = b;
		} else if (answered) {
			for (size_t q = starts[b]; q < ends[b]; q++)
				if (!trailing_prose)
					trailing_prose = quoted_prose(ls[q].s, ls[q].len);
		}
	}
	if (!answered)
		return;
	if (answered == 1 && !trailing_prose && is_greeting_run(ls, 0, starts[first]))
		return;
	for (size_t b = 0; b < nb; b++) {
		size_t k = ends[b];
		while (k < nl && ls[k].blank)
			k++;
		if (k < nl && !ls[k].removed)
			for (size_t q = starts[b]; q < ends[b]; q++) {
				ls[q].removed = 0;
				ls[q].kind = CUT_NONE;
			}
	}
	settle_blanks(ls, nl);
}

/* Trimming never leaves nothing: text that is not quoted comes back (not
 * the attribution lines), and a message of quotes only keeps its quote. */
static void never_empty(struct line *ls, size_t nl)
{
	int has_text = 0;
	for (size_t i = 0; i < nl; i++) {
		if (ls[i].blank)
			continue;
		if (!ls[i].removed)
			return;
		has_text |= !ls[i].quoted && ls[i].kind != CUT_HEADER && ls[i].kind != CUT_QUOTE;
	}
	for (size_t i = 0; i < nl; i++) {
		if (!ls[i].removed || ls[i].blank)
			continue;
		if (has_text ? (ls[i].kind == CUT_REST || ls[i].kind == CUT_SIG)
			     : (ls[i].quoted || ls[i].kind == CUT_QUOTE)) {
			ls[i].removed = 0;
			ls[i].kind = CUT_NONE;
		}
	}
	settle_blanks(ls, nl);
}

/* An "external sender" banner above the text: cut. */
static void cut_banner(struct line *ls, size_t nl)
{
	size_t i;
	for (i = 0; i < nl && ls[i].blank; i++)
		;
	if (i < nl) {
		const char *s = ls[i].s;
		size_t n = ls[i].len;
		trim_view(&s, &n);
		if (is_banner(s, n))
			for (; i < nl && !ls[i].blank; i++)
				cut_line(&ls[i], CUT_SIG);
	}
}

/* Line i (s, n trimmed) is a quoted line the sender's client wrapped:
 * "> … Nullam d\nignissim\n>", or the last one of a quote: a long quoted
 * line stopping mid-sentence, then a few lower-case words and the end of
 * the paragraph. */
static int is_wrapped_quote(const struct line *ls, size_t nl, size_t i, const char *s, size_t n)
{
	if (i == 0 || !ls[i - 1].quoted || !islower((unsigned char)*s))
		return 0;
	if (i + 1 < nl && ls[i + 1].quoted)
		return 1;
	const struct line *q = &ls[i - 1];
	return q->len >= 65 && n <= 40 && (i + 1 >= nl || ls[i + 1].blank) &&
	       !ends_sentence(q->s, q->len) && q->s[q->len - 1] != ':' && q->s[q->len - 1] != ',';
}

/* Line i starts what is not the reply: a mobile client's line, a
 * signature delimiter, an original-message marker or header block, a rule
 * opening headers, a list footer.  It and what follows are cut: 1. */
static int cut_at_marker(struct line *ls, size_t nl, size_t i, const char *s, size_t n)
{
	/* mobile clients put their line between the reply and the quote */
	if (((i == 0 || ls[i - 1].blank) && is_mobile_signature(s, n)) ||
	    is_sig_delimiter(ls[i].s, ls[i].len)) {
		mark_from(ls, nl, i, CUT_SIG);
		return 1;
	}
	if (is_original_marker(s, n) || is_header_block(ls, nl, i)) {
		mark_from(ls, nl, block_start(ls, i), CUT_REST);
		mark_header_lines(ls, nl, block_start(ls, i));
		return 1;
	}
	if (is_rule(s, n, 10) && rule_opens_header(ls, nl, i)) {
		mark_from(ls, nl, i, CUT_REST);
		mark_header_lines(ls, nl, i);
		return 1;
	}
	if (is_list_footer(ls, nl, i)) {
		mark_from(ls, nl, i, CUT_SIG);
		return 1;
	}
	return 0;
}

/* A quote header ("On … wrote:") at *i: cut.  When a quote follows, the
 * scan goes on after it (*i moved to its last line, 0); otherwise the rest
 * is cut (1).  -1 when there is none. */
static int cut_quote_header(struct line *ls, size_t nl, size_t *i)
{
	size_t h = quote_header_len(ls, nl, *i, 1);
	if (!h)
		return -1;
	size_t j = *i + h;
	while (j < nl && ls[j].blank)
		j++;
	for (size_t k = *i; k < *i + h; k++)
		cut_line(&ls[k], CUT_HEADER);
	if (j < nl && ls[j].quoted) {
		*i += h - 1;
		return 0;
	}
	mark_from(ls, nl, *i + h, CUT_REST);
	return 1;
}

/* Cuts quotes, quote headers and what follows the reply.  Returns 1 when
 * a forward marker was met (what follows it is the forwarded text). */
static int cut_quotes(struct line *ls, size_t nl)
{
	int in_forward = 0;
	for (size_t i = 0; i < nl; i++) {
		const char *s = ls[i].s;
		size_t n = ls[i].len;
		trim_view(&s, &n);
		if (in_forward || ls[i].blank || ls[i].removed)
			continue;
		if (ls[i].quoted) {
			cut_line(&ls[i], CUT_QUOTE);
			continue;
		}
		if (is_forward_marker(s, n)) {
			in_forward = 1;
			continue;
		}
		if (is_wrapped_quote(ls, nl, i, s, n)) {
			cut_line(&ls[i], CUT_QUOTE);
			continue;
		}
		if (cut_at_marker(ls, nl, i, s, n) || cut_quote_header(ls, nl, &i) == 1)
			break;
	}
	return in_forward;
}

/* Signatures at the end of the last run of kept lines (of the reply above
 * the quote when top-posting, of the last answer otherwise). */
static void cut_last_signature(struct line *ls, size_t nl, const char *sender_name)
{
	size_t end = nl, start;
	while (end > 0 && (ls[end - 1].removed || ls[end - 1].blank))
		end--;
	start = end;
	while (start > 0 && !ls[start - 1].removed)
		start--;
	if (end > start)
		strip_tail_signature(ls, start, end, sender_name);
	if (end > start && start > 0 && kept_before(ls, start) && is_contact_block(ls, start, end))
		for (size_t i = start; i < end; i++)
			cut_line(&ls[i], CUT_SIG);
	settle_blanks(ls, nl);
}

/* The kept lines into out->text and the removed ones into out->removed,
 * without blank lines at the start and the end. */
static void result_build(const struct line *ls, size_t nl, struct clean_result *out)
{
	struct buf keep, gone;
	buf_init(&keep);
	buf_init(&gone);
	for (size_t i = 0; i < nl; i++) {
		struct buf *b = ls[i].removed ? &gone : &keep;
		if (!ls[i].removed && ls[i].blank && keep.len == 0)
			continue;
		buf_append(b, ls[i].s, ls[i].len);
		buf_putc(b, '\n');
	}
	while (keep.len > 0 && (keep.data[keep.len - 1] == '\n' || keep.data[keep.len - 1] == ' ' ||
				keep.data[keep.len - 1] == '\t'))
		keep.data[--keep.len] = 0;
	while (gone.len > 0 && gone.data[gone.len - 1] == '\n')
		gone.data[--gone.len] = 0;
	out->text = buf_steal(&keep);
	out->removed = buf_steal(&gone);
	if (!out->text)
		out->text = xstrdup("");
	if (!out->removed)
		out->removed = xstrdup("");
}

void clean_reply(const char *text, const char *sender_name, struct clean_result *out)
{
	size_t nl;
	struct line *ls = split_lines(text ? text : "", &nl);
	cut_banner(ls, nl);
	int in_forward = cut_quotes(ls, nl);
	settle_blanks(ls, nl);
	if (!in_forward)
		cut_last_signature(ls, nl, sender_name);
	keep_answered_quotes(ls, nl);
	never_empty(ls, nl);
	result_build(ls, nl, out);
	free(ls);
}

void clean_result_free(struct clean_result *r)
{
	free(r->text);
	free(r->removed);
	r->text = r->removed = NULL;
}
