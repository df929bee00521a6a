/* test_mime.c — what the MIME layer makes of a raw message: charsets and
 * transfer encodings to UTF-8 (with a warning whenever it had to guess),
 * RFC 2047 headers, RFC 2231 parameters, format=flowed, the part chosen,
 * forwarded messages, attachments and their names, and header fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/convert.h"
#include "mailfeed/mime.h"

static struct mf_message *parse(const char *raw)
{
	char err[256] = "";
	struct mf_message *m = mime_parse(raw, strlen(raw), err, sizeof err);
	if (m)
		convert_message(m);
	if (!m)
		fail_msg("parse failed: %s", err);
	return m;
}

/* full_text without trailing whitespace, for exact comparisons. */
static const char *body(struct mf_message *m)
{
	size_t n = strlen(m->full_text);
	while (n && (m->full_text[n - 1] == '\n' || m->full_text[n - 1] == ' '))
		m->full_text[--n] = 0;
	return m->full_text;
}

static void test_charsets(void **state)
{
	static const struct {
		const char *cs, *b64, *want;
	} cases[] = {
	    {"windows-1252", "Q2Fm6SCTcXVvdGVklCCWIIA1", "Café “quoted” – €5"},
	    {"iso-8859-2", "WmG/87PmIGfqtmyx", "Zażółć gęślą"},
	    {"iso-8859-15", "UHJlaXMgNaQ=", "Preis 5€"},
	    {"koi8-r", "8NLJ18XUIM3J0g==", "Привет мир"},
	    {"gb2312", "xOO6w8rAvec=", "你好世界"},
	    {"gbk", "xOO6w8rAvec=", "你好世界"},
	    {"gb18030", "xOO6w8rAvec=", "你好世界"},
	    {"big5", "p0GmbqVArMk=", "你好世界"},
	    {"shift_jis", "grGC8YLJgr+CzZCiikU=", "こんにちは世界"},
	    {"euc-jp", "pLOk86TLpMGkz8Cks6Y=", "こんにちは世界"},
	    {"iso-2022-jp", "GyRCJDMkcyRLJEEkT0AkMyYbKEI=", "こんにちは世界"},
	    {"utf-16", "//5HAHIA/ADfAGUAIAAWTkx1", "Grüße 世界"},
	    {"utf-7", "R3IrQVB3QTN3LWUgK1RoWjFUQS0=", "Grüße 世界"},
	};
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *raw = xasprintf("From: a@example.org\nSubject: cs\nContent-Type: text/plain; "
				      "charset=\"%s\"\nContent-Transfer-Encoding: base64\n\n%s\n",
				      cases[i].cs, cases[i].b64);
		struct mf_message *m = parse(raw);
		assert_string_equal(body(m), cases[i].want);
		assert_null(m->warnings);
		message_free(m);
		free(raw);
	}
}

static void test_charset_fallbacks(void **state)
{
	(void)state;
	/* no label, UTF-8 bytes: used as they are, nothing to say */
	struct mf_message *m = parse("From: a@example.org\nSubject: x\n\nGr\xc3\xbc\xc3\x9f"
				     "e\n");
	assert_string_equal(body(m), "Grüße");
	assert_null(m->warnings);
	message_free(m);
	/* no label, latin-1 bytes: windows-1252, and said so */
	m = parse("From: a@example.org\nSubject: x\n\nGr\xfc\xdf"
		  "e \x80\n");
	assert_string_equal(body(m), "Grüße €");
	assert_non_null(m->warnings);
	assert_non_null(strstr(m->warnings, "windows-1252"));
	message_free(m);
	/* labelled latin-1 but really UTF-8: no mojibake */
	m = parse("From: a@example.org\nSubject: x\nContent-Type: text/plain; "
		  "charset=iso-8859-1\n\nGr\xc3\xbc\xc3\x9f"
		  "e\n");
	assert_string_equal(body(m), "Grüße");
	assert_non_null(strstr(m->warnings, "UTF-8"));
	message_free(m);
	/* an unknown label on 8-bit text */
	m = parse("From: a@example.org\nSubject: x\nContent-Type: text/plain; "
		  "charset=x-klingon\n\ncaf\xe9\n");
	assert_string_equal(body(m), "café");
	assert_non_null(strstr(m->warnings, "x-klingon"));
	message_free(m);
}

static void test_transfer_encodings(void **state)
{
	(void)state;
	struct mf_message *m =
	    parse("From: a@example.org\nSubject: qp\nContent-Type: text/plain; charset=utf-8\n"
		  "Content-Transfer-Encoding: quoted-printable\n\nA long line that is bro=\nken "
		  "here, caf=C3=A9 =3D ok\r\nline two\n");
	assert_string_equal(body(m), "A long line that is broken here, café = ok\nline two");
	message_free(m);

	/* Attachment bytes: base64 skips what is not in its alphabet and
	 * decodes a short last group; quoted-printable turns line ends (a lone
	 * CR too) into CRLF, drops soft breaks (also the '=' ending the part)
	 * and keeps an '=' without two hex digits as it is written. */
	m = parse("From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n"
		  "--b\nContent-Type: text/plain\n\nhi\n"
		  "--b\nContent-Type: application/octet-stream; name=a.bin\n"
		  "Content-Transfer-Encoding: base64\n\naGVsbG8g\r\nd2*9y=bGQ\n"
		  "--b\nContent-Type: application/octet-stream; name=b.bin\n"
		  "Content-Transfer-Encoding: base64\n\naA\n"
		  "--b\nContent-Type: application/octet-stream; name=c.bin\n"
		  "Content-Transfer-Encoding: quoted-printable\n\na=3Db=\r\nc\rd=G1e\nf=\n"
		  "--b--\n");
	assert_int_equal(m->n_attachments, 3);
	assert_int_equal(m->attachments[0].size, 11);
	assert_memory_equal(m->attachments[0].data, "hello world", 11);
	assert_int_equal(m->attachments[1].size, 1);
	assert_memory_equal(m->attachments[1].data, "h", 1);
	assert_int_equal(m->attachments[2].size, 14);
	assert_memory_equal(m->attachments[2].data, "a=bc\r\nd=G1e\r\nf", 14);
	message_free(m);
}

static void test_rfc2047(void **state)
{
	(void)state;
	char *s;
	/* adjacent words are joined, whitespace between them dropped */
	s = mime_decode_header(
	    "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= =?UTF-8?Q?_aus?=\r\n =?UTF-8?B?QmVybGlu?=");
	assert_string_equal(s, "Grüße ausBerlin");
	free(s);
	/* a character split across two base64 words */
	s = mime_decode_header("=?utf-8?B?w6k=?= =?utf-8?B?4oKs?=");
	assert_string_equal(s, "é€");
	free(s);
	s = mime_decode_header("=?utf-8?B?4g==?= =?utf-8?B?gqw=?=");
	assert_string_equal(s, "€");
	free(s);
	/* text around words is kept, with its spacing */
	s = mime_decode_header("Re: =?ISO-8859-1?Q?caf=E9?= and more");
	assert_string_equal(s, "Re: café and more");
	free(s);
	/* an unknown charset inside a word still gives readable text */
	s = mime_decode_header("=?x-unknown?Q?caf=C3=A9?=");
	assert_string_equal(s, "café");
	free(s);
	/* a badly folded word (space inside) and raw 8-bit latin-1 */
	s = mime_decode_header("=?utf-8?Q?hello_wo rld?= caf\xe9");
	assert_string_equal(s, "hello world café");
	free(s);
	/* CR/LF never survive */
	s = mime_decode_header("=?utf-8?Q?a=0D=0Ab?=");
	assert_null(strchr(s, '\n'));
	assert_null(strchr(s, '\r'));
	free(s);
	/* Korean in koi8/2022 style words */
	s = mime_decode_header("=?ISO-2022-JP?B?GyRCJDMkcyRLJEEkTxsoQg==?=");
	assert_string_equal(s, "こんにちは");
	free(s);
}

static void test_rfc2231(void **state)
{
	(void)state;
	char *s = mime_param_2231("attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf", "filename");
	assert_string_equal(s, "€ rates.pdf");
	free(s);
	s = mime_param_2231("attachment; filename*0*=iso-8859-1'de'Gr%FC; filename*1=\"sse \";"
			    " filename*2*=%FCber.txt",
			    "filename");
	assert_string_equal(s, "Grüsse über.txt");
	free(s);
	s = mime_param_2231("attachment; filename=\"=?UTF-8?B?w6ljb2xlLnR4dA==?=\"", "filename");
	assert_string_equal(s, "école.txt");
	free(s);
	s = mime_param_2231("text/plain; charset=\"utf-8\"; name=plain.txt", "name");
	assert_string_equal(s, "plain.txt");
	free(s);
	assert_null(mime_param_2231("text/plain; charset=utf-8", "name"));
}

static void test_flowed(void **state)
{
	(void)state;
	char *s = mime_unflow("This is a \nflowed line.\n> quoted \n> more\n\n-- \nsig\n", 0);
	assert_string_equal(s, "This is a flowed line.\n> quoted more\n\n-- \nsig\n");
	free(s);
	s = mime_unflow("Zusammen \ngeschrieben\n", 1);
	assert_string_equal(s, "Zusammengeschrieben\n");
	free(s);
	struct mf_message *m =
	    parse("From: a@example.org\nSubject: f\nContent-Type: text/plain; charset=utf-8; "
		  "format=flowed; delsp=yes\n\nAn ex \ntra long  \nword.\n");
	assert_string_equal(body(m), "An extra long word.");
	message_free(m);
}

static void test_part_choice(void **state)
{
	(void)state;
	struct mf_message *m = parse(
	    "From: a@example.org\nSubject: alt\nContent-Type: multipart/alternative; boundary=b\n\n"
	    "--b\nContent-Type: text/plain\n\nplain wins\n--b\nContent-Type: text/html\n\n"
	    "<p>html loses</p>\n--b--\n");
	assert_string_equal(m->part, "text/plain");
	assert_string_equal(body(m), "plain wins");
	message_free(m);
	/* an empty plain part gives way to HTML */
	m = parse(
	    "From: a@example.org\nSubject: alt\nContent-Type: multipart/alternative; "
	    "boundary=b\n\n--b\nContent-Type: text/plain\n\n  \n--b\nContent-Type: text/html; "
	    "charset=utf-8\n\n<p>only <b>here</b></p>\n--b--\n");
	assert_string_equal(m->part, "text/html");
	assert_string_equal(body(m), "only here");
	message_free(m);
	m = parse("From: a@example.org\nSubject: h\nContent-Type: text/html\n\n<div>Hi "
		  "<a href=\"https://x.org/a\">there</a></div>\n");
	assert_string_equal(m->part, "text/html");
	assert_string_equal(body(m), "Hi there (https://x.org/a)");
	message_free(m);
	m = parse("From: a@example.org\nSubject: none\nContent-Type: image/png\n\nxx\n");
	assert_string_equal(m->part, "none");
	assert_int_equal(m->n_attachments, 1);
	message_free(m);
}

static void test_nested_and_forwarded(void **state)
{
	(void)state;
	struct mf_message *m = parse(
	    "From: a@example.org\nSubject: Fwd: plan\nContent-Type: multipart/mixed; boundary=o\n\n"
	    "--o\nContent-Type: multipart/alternative; boundary=i\n\n--i\nContent-Type: "
	    "text/plain\n\nSee below.\n--i--\n--o\nContent-Type: message/rfc822\n\n"
	    "From: Bob <bob@example.org>\nDate: Mon, 2 Nov 2026 10:00:00 +0000\nSubject: plan\n\n"
	    "The plan is ready.\n--o--\n");
	assert_non_null(strstr(m->text, "See below."));
	const char *fw = strstr(m->text, "---------- Forwarded message ---------");
	assert_non_null(fw);
	assert_non_null(strstr(fw, "From: Bob <bob@example.org>"));
	assert_non_null(strstr(fw, "Subject: plan"));
	assert_non_null(strstr(fw, "\nThe plan is ready."));
	assert_null(strstr(fw, "> The plan"));
	message_free(m);
}

static void test_safe_filename(void **state)
{
	(void)state;
	char *s = mime_safe_filename("../../etc/passwd");
	assert_string_equal(s, "passwd");
	free(s);
	s = mime_safe_filename("C:\\Users\\x\\report.pdf");
	assert_string_equal(s, "report.pdf");
	free(s);
	s = mime_safe_filename("bad\r\nname\x01.txt");
	assert_string_equal(s, "badname.txt");
	free(s);
	s = mime_safe_filename("..");
	assert_null(s);
	char longname[400];
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = 0;
	s = mime_safe_filename(longname);
	assert_int_equal(strlen(s), 200);
	free(s);
}

static void test_attachments(void **state)
{
	(void)state;
	struct mf_message *m = parse(
	    "From: a@example.org\nSubject: att\nContent-Type: multipart/mixed; boundary=b\n\n"
	    "--b\nContent-Type: text/plain\n\nsee attached\n"
	    "--b\nContent-Type: application/pdf\nContent-Disposition: attachment; "
	    "filename*=UTF-8''%E2%82%AC%2F..%2Fx.pdf\nContent-Transfer-Encoding: base64\n\n"
	    "aGVsbG8=\n"
	    "--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment\n\nzz\n"
	    "--b\nContent-Type: text/plain; name=\"notes.txt\"\n\nnot the body\n--b--\n");
	assert_string_equal(body(m), "see attached");
	assert_int_equal(m->n_attachments, 3);
	assert_string_equal(m->attachments[0].filename, "x.pdf");
	assert_int_equal(m->attachments[0].size, 5);
	assert_string_equal(m->attachments[0].sha256,
			    "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
	assert_memory_equal(m->attachments[0].data, "hello", 5);
	assert_string_equal(m->attachments[1].filename, "attachment-2.bin");
	assert_string_equal(m->attachments[2].filename, "notes.txt");
	message_free(m);
}

static void test_attachment_limits(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "From: a@example.org\nSubject: many\nContent-Type: multipart/mixed; "
		     "boundary=b\n\n--b\nContent-Type: text/plain\n\nx\n");
	for (int i = 0; i < 60; i++)
		buf_printf(&b, "--b\nContent-Type: application/pdf; name=f%d.pdf\n\n%d\n", i, i);
	buf_puts(&b, "--b--\n");
	struct mf_message *m = parse(b.data);
	assert_int_equal(m->n_attachments, MIME_MAX_ATTACHMENTS);
	assert_non_null(strstr(m->warnings, "more than 50 attachments"));
	message_free(m);
	char err[128];
	m = mime_parse_ex(b.data, b.len, 1, err, sizeof err);
	if (m)
		convert_message(m);
	assert_int_equal(m->attachments[0].size, 1);
	assert_non_null(m->attachments[0].data);
	assert_int_equal(m->attachments[10].size, 2);
	assert_null(m->attachments[10].data); /* over the size limit: listed only */
	message_free(m);
	buf_free(&b);
}

static void test_signature_images(void **state)
{
	(void)state;
	struct mf_message *m = parse(
	    "From: a@example.org\nSubject: logo\nContent-Type: multipart/related; boundary=b\n\n"
	    "--b\nContent-Type: text/html\n\n<p>Look at <img src=\"cid:shot\"></p><div "
	    "class=\"signature\">Bob<img src=\"cid:logo1\"></div>\n"
	    "--b\nContent-Type: image/png; name=\"screenshot.png\"\nContent-ID: <shot>\n\nAAAA\n"
	    "--b\nContent-Type: image/png; name=\"brand.png\"\nContent-ID: <logo1>\n\nAAAA\n"
	    "--b\nContent-Type: image/png; name=\"image001.png\"\nContent-Disposition: inline\n\n"
	    "AAAA\n--b--\n");
	/* the pasted screenshot stays; the signature logo and image001.png go */
	assert_int_equal(m->n_attachments, 1);
	assert_string_equal(m->attachments[0].filename, "screenshot.png");
	assert_true(m->attachments[0].is_inline);
	message_free(m);
}

static void test_headers(void **state)
{
	(void)state;
	struct mf_message *m = parse(
	    "From: =?utf-8?Q?J=C3=BCrgen?= \"Meyer\" <Juergen.Meyer@Example.COM>\n"
	    "Reply-To: list <list@example.org>\nTo: a@example.org, \"B, C\" <bc@example.org>\n"
	    "Cc: undisclosed-recipients:;\nDelivered-To: team+tok@example.org\n"
	    "Message-ID: <id-1@example.org>\nIn-Reply-To: junk <p1@example.org> (comment)\n"
	    "References: <r0@x> garbage <r1@x>\n  <r2@x> <r1@x>\nDate: Tue, 3 Nov 2026 09:30:00 "
	    "-0500\nSubject: hi\nList-Id: Team list <team.example.org>\n\nbody\n");
	assert_string_equal(m->from_name, "Jürgen Meyer");
	assert_string_equal(m->from_email, "juergen.meyer@example.com");
	assert_string_equal(m->reply_to, "list@example.org");
	assert_int_equal(m->to.n, 2);
	assert_string_equal(m->to.v[1], "bc@example.org");
	assert_int_equal(m->cc.n, 0);
	assert_string_equal(m->recipients_hint.v[0], "team+tok@example.org");
	assert_string_equal(m->message_id, "id-1@example.org");
	assert_string_equal(m->in_reply_to, "p1@example.org");
	assert_int_equal(m->references.n, 3);
	assert_string_equal(m->references.v[2], "r2@x");
	assert_int_equal((long long)m->date, 1793716200LL);
	assert_string_equal(m->list_id, "team.example.org");
	assert_int_equal(m->bulk, 0);
	message_free(m);
	m = parse("From: a@example.org\nDate: not a date\nSubject: x\n\nb\n");
	assert_int_equal(m->date, 0);
	message_free(m);
}

static void test_hostile_nesting(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "From: a@example.org\nSubject: deep\nContent-Type: multipart/mixed; "
		     "boundary=b0\n\n");
	for (int i = 1; i < 2000; i++)
		buf_printf(&b, "--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n", i - 1, i);
	char err[128] = "";
	struct mf_message *m = mime_parse(b.data, b.len, err, sizeof err);
	if (m)
		convert_message(m);
	assert_null(m);
	assert_non_null(strstr(err, "unparseable"));
	buf_free(&b);
	/* 60 levels: still parsed (libetpan stops splitting on its own) */
	buf_init(&b);
	buf_puts(&b, "From: a@example.org\nSubject: deep\nContent-Type: multipart/mixed; "
		     "boundary=b0\n\n");
	for (int i = 1; i < 60; i++)
		buf_printf(&b, "--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n", i - 1, i);
	buf_puts(&b, "--b59\nContent-Type: text/plain\n\ndeep text\n");
	m = mime_parse(b.data, b.len, err, sizeof err);
	if (m)
		convert_message(m);
	assert_non_null(m);
	assert_string_equal(m->part, "text/plain");
	message_free(m);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_charsets),
	    cmocka_unit_test(test_charset_fallbacks),
	    cmocka_unit_test(test_transfer_encodings),
	    cmocka_unit_test(test_rfc2047),
	    cmocka_unit_test(test_rfc2231),
	    cmocka_unit_test(test_flowed),
	    cmocka_unit_test(test_part_choice),
	    cmocka_unit_test(test_nested_and_forwarded),
	    cmocka_unit_test(test_safe_filename),
	    cmocka_unit_test(test_attachments),
	    cmocka_unit_test(test_attachment_limits),
	    cmocka_unit_test(test_signature_images),
	    cmocka_unit_test(test_headers),
	    cmocka_unit_test(test_hostile_nesting),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
