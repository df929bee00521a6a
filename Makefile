# mailfeed — build, test, install.
#   make            release build: ./mailfeed
#   make check      install missing packages, build with ASan+UBSan, run every test
#   make demo       install missing packages, build, run the whole flow on loopback
#   make bench      benchmarks (printed ratios, never fail on speed)
#   make fuzz       build libFuzzer targets and run each for FUZZ_SECONDS
#   make corpus     parse every tests/corpus/mime-* message; per corpus the pass rate
#   make install    PREFIX=/usr/local DESTDIR=
#   make deb        a Debian package (dpkg-buildpackage -us -uc -b), in ..
#
# The release build takes CC, CPPFLAGS, CFLAGS and LDFLAGS from the
# environment or the command line (as dpkg-buildflags sets them) and never
# turns warnings into errors; the sanitizer build that `make check` runs
# does (-Werror), and `make check` builds the release binary with it too.

PREFIX     ?= /usr/local
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR    ?= /lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
TMPFILESDIR ?= /usr/lib/tmpfiles.d
FUZZ_SECONDS ?= 60
VERSION    := 0.1.0

CC      ?= cc
PKGS    := jansson sqlite3 libsystemd inih gumbo libcurl openssl
PKGS    += libseccomp
PKGS    += libmicrohttpd
PKGS    += gmime-3.0
PKGS    += libpq
# libetpan's pkg-config adds Debian's no-PIE link specs; take only its cflags.
DEPCFLAGS := $(shell pkg-config --cflags $(PKGS) libetpan 2>/dev/null)
DEPLIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -letpan -lpthread -lm
WARN    := -Wall -Wextra -Wshadow -Wformat=2 -Wno-unused-parameter
WERROR  ?=
BASECFLAGS := -std=gnu11 -D_GNU_SOURCE -DMAILFEED_VERSION='"$(VERSION)"' -DMAILFEED_SYSCONFDIR='"$(SYSCONFDIR)"' -Iinclude $(DEPCFLAGS) $(WARN)
CFLAGS  ?= -O2 -g
CPPFLAGS ?=
LDFLAGS ?=
FORTIFY := $(if $(findstring _FORTIFY_SOURCE,$(CPPFLAGS) $(CFLAGS)),,-D_FORTIFY_SOURCE=2)
RELFLAGS := $(BASECFLAGS) $(WERROR) $(CPPFLAGS) $(FORTIFY) -fstack-protector-strong -fPIE $(CFLAGS)
RELLDFLAGS := -pie -Wl,-z,relro,-z,now $(LDFLAGS)
SANFLAGS := $(BASECFLAGS) -Werror $(CPPFLAGS) -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

SRCS    := $(sort $(wildcard src/*.c))
LIBSRCS := $(filter-out src/main.c,$(SRCS))
HDRS    := $(wildcard include/mailfeed/*.h src/*.h)
UNITSRCS := $(sort $(wildcard tests/unit/test_*.c))

REL_OBJS := $(SRCS:src/%.c=build/rel/%.o)
SAN_OBJS := $(SRCS:src/%.c=build/asan/%.o)
SAN_LIBOBJS := $(LIBSRCS:src/%.c=build/asan/%.o)
UNITBINS := $(UNITSRCS:tests/unit/%.c=build/asan/tests/%)

.PHONY: all deps check source-checks unit integration demo bench fuzz corpus install clean format format-check format-list cppcheck deb

all: mailfeed

mailfeed: $(REL_OBJS)
	$(CC) $(CFLAGS) $(RELLDFLAGS) -o $@ $^ $(DEPLIBS)

# Each object depends on the headers it includes (-MMD -MP write build/*/*.d);
# an object built before there was a .d file depends on every header.
.SECONDEXPANSION:
build/rel/%.o: src/%.c $$(if $$(wildcard build/rel/$$*.d),,$$(HDRS)) | build/rel
	$(CC) $(RELFLAGS) -MMD -MP -c -o $@ $<

build/asan/%.o: src/%.c $$(if $$(wildcard build/asan/$$*.d),,$$(HDRS)) | build/asan
	$(CC) $(SANFLAGS) -MMD -MP -c -o $@ $<

-include $(wildcard build/rel/*.d build/asan/*.d)

build/asan/mailfeed: $(SAN_OBJS)
	$(CC) -fsanitize=address,undefined -o $@ $^ $(DEPLIBS)

# Unit tests link against an archive so that each pulls in only the modules it uses.
build/asan/libmailfeed.a: $(SAN_LIBOBJS)
	rm -f $@ && ar rcs $@ $^

build/asan/tests/%: tests/unit/%.c build/asan/libmailfeed.a $(HDRS) | build/asan/tests
	$(CC) $(SANFLAGS) -Itests/unit -o $@ $< build/asan/libmailfeed.a $(DEPLIBS) -lcmocka

# Drives one feed backend directly for tests/integration/test_{chatter,mattermost}.py.
build/asan/tests/feedprobe: tests/integration/feedprobe.c build/asan/libmailfeed.a $(HDRS) | build/asan/tests
	$(CC) $(SANFLAGS) -o $@ $< build/asan/libmailfeed.a $(DEPLIBS)

# Drives src/imap.c directly for tests/integration/test_imap.py.
build/asan/tests/imapprobe: tests/integration/imapprobe.c build/asan/libmailfeed.a $(HDRS) | build/asan/tests
	$(CC) $(SANFLAGS) -o $@ $< build/asan/libmailfeed.a $(DEPLIBS)

# Drives src/db.c and src/cluster.c for tests/integration/test_postgres.py.
build/asan/tests/dbprobe: tests/integration/dbprobe.c build/asan/libmailfeed.a $(HDRS) | build/asan/tests
	$(CC) $(SANFLAGS) -o $@ $< build/asan/libmailfeed.a $(DEPLIBS)

build/rel build/asan build/asan/tests:
	mkdir -p $@

deps:
	@scripts/install-deps.sh

# The include layers and the function length (scripts/check-layers.py,
# scripts/check-length.sh); quick, so `make check` runs them first.
source-checks:
	/usr/bin/python3 scripts/check-layers.py
	scripts/check-length.sh

# Everything under sanitizers; the last line printed is the summary.
check: deps
	$(MAKE) source-checks
	$(MAKE) -j$$(nproc) WERROR=-Werror build/asan/mailfeed $(UNITBINS) build/asan/tests/feedprobe build/asan/tests/imapprobe build/asan/tests/dbprobe mailfeed
	tests/run-tests.sh

unit: $(UNITBINS)
	tests/run-tests.sh --unit-only

demo: deps
	$(MAKE) mailfeed
	scripts/demo.sh

REL_LIBOBJS := $(LIBSRCS:src/%.c=build/rel/%.o)
build/rel/libmailfeed.a: $(REL_LIBOBJS)
	rm -f $@ && ar rcs $@ $^

build/rel/%: bench/%.c build/rel/libmailfeed.a $(HDRS)
	$(CC) $(RELFLAGS) $(RELLDFLAGS) -o $@ $< build/rel/libmailfeed.a $(DEPLIBS)

bench:
	@scripts/install-deps.sh --bench
	$(MAKE) mailfeed build/rel/parse_bench build/rel/takein_bench
	bench/run.sh

FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,build/fuzz/fuzz_%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZFLAGS := $(BASECFLAGS) -O1 -g -fsanitize=fuzzer,address,undefined -Wno-error
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIBSRCS) $(HDRS)
	@mkdir -p build/fuzz
	clang $(FUZZFLAGS) -o $@ $< $(LIBSRCS) $(DEPLIBS)

# Per MIME corpus: pass rate, cases with lost text, cases with raw MIME in the text.
corpus: build/asan/tests/test_mime_corpus
	build/asan/tests/test_mime_corpus

fuzz: deps $(FUZZ_TARGETS)
	tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

install: mailfeed
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(SYSCONFDIR)/mailfeed $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR)
	install -m 755 mailfeed $(DESTDIR)$(SBINDIR)/mailfeed
	install -m 644 man/mailfeed.8 $(DESTDIR)$(MANDIR)/man8/mailfeed.8
	install -m 644 man/mailfeed.conf.5 $(DESTDIR)$(MANDIR)/man5/mailfeed.conf.5
	install -m 644 conf/mailfeed.conf.example $(DESTDIR)$(SYSCONFDIR)/mailfeed/mailfeed.conf.example
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|/etc/mailfeed/|$(SYSCONFDIR)/mailfeed/|g' \
		systemd/mailfeed.service > $(DESTDIR)$(UNITDIR)/mailfeed.service
	chmod 644 $(DESTDIR)$(UNITDIR)/mailfeed.service
	install -m 644 systemd/mailfeed.sysusers $(DESTDIR)$(SYSUSERSDIR)/mailfeed.conf
	sed 's|/etc/mailfeed|$(SYSCONFDIR)/mailfeed|g' systemd/mailfeed.tmpfiles \
		> $(DESTDIR)$(TMPFILESDIR)/mailfeed.conf
	chmod 644 $(DESTDIR)$(TMPFILESDIR)/mailfeed.conf

# Reformats FILES (default: every C file; mind colleagues' open branches).
FILES ?= src/*.c include/mailfeed/*.h tests/unit/*.c
format:
	clang-format -i $(FILES)

# The files listed in .ci/format-clean must stay as clang-format writes them;
# `make format-list` drops those that no longer are and adds new clean ones.
format-check:
	clang-format --dry-run --Werror $$(grep -v '^#' .ci/format-clean)

format-list:
	{ grep '^#' .ci/format-clean; for f in src/*.c include/mailfeed/*.h tests/unit/*.[ch]; do \
		clang-format --dry-run --Werror "$$f" >/dev/null 2>&1 && echo "$$f"; done; true; } \
		> .ci/format-clean.new && mv .ci/format-clean.new .ci/format-clean

# embedded_boundary() tests p in its loop condition; cppcheck 2.10 misses it.
cppcheck:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
		--suppress=nullPointerArithmeticRedundantCheck:src/mime.c \
		--library=tests/cppcheck/jansson.cfg -Iinclude src

deb:
	dpkg-buildpackage -us -uc -b

clean:
	rm -rf build mailfeed
