# Makefile - the one entry point for building, testing and installing daemonproxy.
#
#   make            build the release binary (target/release/daemonproxy)
#   make run        build, then run the example configuration (Ctrl-C stops it)
#   make test       run every test (the cargo suites, the Python client's tests in a fresh
#                   venv after "pip install ./python", tests/python, tests/fleet, the image
#                   booted as PID 1, the panic and fatal-signal tests on a static build)
#   make venv       the Python venv with the real LCM library the LCM tests use
#   make golden     rewrite tests/golden/*.hex with the real LCM library
#   make static     daemonproxy and daemonproxy-poweroff statically linked (glibc crt-static,
#                   x86_64 Linux) in target/static/x86_64-unknown-linux-gnu/release/
#   make image      a root file system that boots daemonproxy as PID 1 (target/image/rootfs:
#                   the static binaries, busybox, image/daemonproxy.conf) and the Dockerfile
#                   that builds it into an image (target/image/Dockerfile)
#   make check      formatting, clippy, "make lint", unsafe only in sys/spawn/fatal, doc
#                   references, and the model test with more cases
#   make lint       man page and shell script lints only
#   make fuzz       every cargo-fuzz target for FUZZ_SECONDS (default 60) each; see fuzz/README.md
#   make bench      figures side by side with peers, and a 10-minute soak (about 25 minutes); see bench/README.md
#   make install    PREFIX=/usr/local DESTDIR= ; daemons to sbin/, user commands to bin/,
#                   controllers and the Python client module (daemonproxy.py, for jobs.py)
#                   to share/daemonproxy/controllers/, man pages to share/man/
#   make clean      remove build output

CARGO   ?= cargo
PREFIX  ?= /usr/local
DESTDIR ?=
SBINDIR ?= $(PREFIX)/sbin
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share/daemonproxy
INSTALL ?= install

# System daemons and helpers go to $(SBINDIR) (section 8), user commands
# to $(BINDIR) (section 1, on a normal user's PATH).
SBINS    = daemonproxy daemonproxy-poweroff daemonproxy-bridge
UBINS    = daemonproxy-sheriff daemonproxy-ctl
CONTROLLERS = $(wildcard controllers/*.sh controllers/*.py controllers/*.conf)
RELEASE  = target/release
MANPAGES = $(wildcard man/*.[1-9])
SCRIPTS  = $(wildcard controllers/*.sh)
# The Python client: a package of one file (python/daemonproxy/__init__.py).
PYCLIENT = python/daemonproxy/__init__.py

# The real LCM library (liblcm, its Python binding, lcm-gen) from PyPI, in a
# project-local venv; the LCM tests find it through DAEMONPROXY_LCM_VENV and
# fail, saying so, without it. The web page's tests use the same venv:
# selenium drives Debian's chromium (tests/fleet/test_sheriff_browser.py)
# and prometheus_client's parser reads /metrics
# (tests/fleet/test_sheriff_http.py).
VENV        = .venv
LCM_VERSION = 1.5.3
WEB_TEST_PACKAGES = selenium prometheus_client
VENV_STAMP  = $(VENV)/.lcm-$(LCM_VERSION)-web

# The Python client as its users get it: a throw-away venv made anew by
# every "make test", "pip install ./python" into it (pip fetches the build
# backend, flit_core, from PyPI: one small download), then the client's
# tests, python/tests, with that venv's interpreter.
PYCLIENT_VENV = target/pyclient-venv

.PHONY: all run test check lint unsafe-check bench fuzz install uninstall clean venv golden \
	static static-fault image image-test static-test

all:
	$(CARGO) build --release

# The last line is a plain command, so make runs it without a shell in
# between. --setpgid gives every service a process group of its own, so a
# terminal's Ctrl-C reaches daemonproxy only (it counts it and starts the
# shutdown controller, which stops the services, the logger last), and
# make waits for it to finish. RUN_BIN: the binary to run.
# RUN_SOCKET: the control socket daemonproxy-ctl talks to, from another
# shell: target/release/daemonproxy-ctl -S daemonproxy.sock status
RUN_BIN ?= ./$(RELEASE)/daemonproxy
RUN_SOCKET ?= daemonproxy.sock
run: all
	$(RUN_BIN) --setpgid -S $(RUN_SOCKET) -c controllers/example.conf

# The Rust suites first (they build target/debug/daemonproxy), then the
# Python client's suite, installed, and the controllers' suite against that
# binary. DAEMONPROXY_CLIENT=installed makes the client's tests check that
# they test the copy pip installed; DAEMONPROXY_CLIENT_VENV lets the README
# test run the README's Python controller with the installed client too.
# mypy goes into that venv too, for the client's `mypy --strict` test (a
# test tool, not a dependency of the package).
# Last, the static build's two steps (below): the image booted as PID 1,
# and the panic and fatal-signal tests against a static binary (about half
# a minute more, most of it the two static builds).
test: $(VENV_STAMP)
	DAEMONPROXY_LCM_VENV=$(CURDIR)/$(VENV) $(CARGO) test --all-targets --no-fail-fast
	rm -rf $(PYCLIENT_VENV)
	python3 -m venv $(PYCLIENT_VENV)
	$(PYCLIENT_VENV)/bin/pip install --quiet --disable-pip-version-check ./python mypy
	DAEMONPROXY=target/debug/daemonproxy DAEMONPROXY_CLIENT=installed \
		$(PYCLIENT_VENV)/bin/python -m unittest discover -s python/tests
	DAEMONPROXY=target/debug/daemonproxy DAEMONPROXY_CLIENT_VENV=$(CURDIR)/$(PYCLIENT_VENV) \
		python3 -m unittest discover -s tests/python
	$(VENV)/bin/python -m unittest discover -s tests/fleet
	$(MAKE) image-test static-test

# The static build: glibc's crt-static with the installed stable toolchain
# (no other target or toolchain to download). --target keeps RUSTFLAGS off
# the build scripts; --no-default-features leaves the fleet crates out (the
# PID-1 binary never needs them). Names of users and groups still go
# through glibc's NSS, which a static binary can only use with the NSS
# libraries of the same glibc at run time: in an image without them, give
# --socket-group a number (man/daemonproxy.8, "A static build").
STATIC_TARGET = x86_64-unknown-linux-gnu
STATIC_BINS   = daemonproxy daemonproxy-poweroff
STATIC_CARGO  = RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release \
	--no-default-features --target $(STATIC_TARGET) $(addprefix --bin ,$(STATIC_BINS))
STATIC_DIR    = target/static/$(STATIC_TARGET)/release
# The same with the debug.panic command, for the panic tests only.
STATIC_FAULT_DIR = target/static-fault/$(STATIC_TARGET)/release

static:
	$(STATIC_CARGO) --target-dir target/static
	@for b in $(STATIC_BINS); do \
		ldd $(STATIC_DIR)/$$b 2>&1 | grep -qE 'not a dynamic executable|statically linked' || \
			{ echo "$(STATIC_DIR)/$$b is not statically linked"; ldd $(STATIC_DIR)/$$b; exit 1; }; \
		echo "$(STATIC_DIR)/$$b: statically linked"; \
	done

static-fault:
	$(STATIC_CARGO) --features fault-injection --target-dir target/static-fault

# The image: a root file system with the static binaries in /sbin, Debian's
# busybox-static as /bin/busybox with the applets the services and
# controllers/container-stop.sh use, image/daemonproxy.conf as
# /etc/daemonproxy.conf, and empty /proc, /dev, /tmp for the mounts a
# container engine or the kernel provide. image/Dockerfile, copied beside
# it, builds the same tree into an image: docker build target/image
IMAGE   = target/image
ROOTFS  = $(IMAGE)/rootfs
BUSYBOX ?= /bin/busybox
BUSYBOX_APPLETS = sh env sleep cat echo printf sed sort tail tr true kill ls ps
image: static
	@test -x $(BUSYBOX) || { echo "$(BUSYBOX) not found: apt-get install busybox-static"; exit 1; }
	@ldd $(BUSYBOX) 2>&1 | grep -qE 'not a dynamic executable|statically linked' || \
		{ echo "$(BUSYBOX) is not statically linked: apt-get install busybox-static"; exit 1; }
	rm -rf $(IMAGE)
	mkdir -p $(ROOTFS)/sbin $(ROOTFS)/bin $(ROOTFS)/etc/daemonproxy $(ROOTFS)/proc $(ROOTFS)/dev $(ROOTFS)/tmp
	$(INSTALL) -m 755 $(addprefix $(STATIC_DIR)/,$(STATIC_BINS)) $(ROOTFS)/sbin/
	$(INSTALL) -m 755 $(BUSYBOX) $(ROOTFS)/bin/busybox
	for a in $(BUSYBOX_APPLETS); do ln -s busybox $(ROOTFS)/bin/$$a || exit 1; done
	$(INSTALL) -m 644 image/daemonproxy.conf $(ROOTFS)/etc/daemonproxy.conf
	$(INSTALL) -m 755 controllers/container-stop.sh $(ROOTFS)/etc/daemonproxy/container-stop.sh
	$(INSTALL) -m 644 image/Dockerfile $(IMAGE)/Dockerfile

# The image booted as PID 1 in new PID, mount, UTS and IPC namespaces
# (tests/image/test_boot.py; needs root).
image-test: image
	DAEMONPROXY_ROOTFS=$(CURDIR)/$(ROOTFS) python3 -m unittest discover -s tests/image

# The panic and fatal-signal tests of tests/signals.rs and tests/pid1.rs
# against the static build with debug.panic.
STATIC_TESTS = panic_exits_4_with_its_message fatal_signal_exits_4 \
	pid1_panic_execs_the_exit_program_or_goes_on pid1_fatal_signal_execs_the_exit_program
static-test: static-fault
	DAEMONPROXY=$(CURDIR)/$(STATIC_FAULT_DIR)/daemonproxy $(CARGO) test --test signals --test pid1 -- \
		--exact $(STATIC_TESTS)

# The last line proves the PID-1 binary builds without the fleet crates;
# before it, the model test runs many more cases than in "make test".
MODEL_CASES ?= 10000
check: lint unsafe-check
	tools/check-doc-refs
	@# the LCM type tables describe and use nothing: codec, fingerprint and
	@# value use them (no circle of imports, src/procman/schema.rs)
	@if grep -nE '^ *use +(super|crate)::' src/procman/schema.rs; then \
		echo "src/procman/schema.rs must not import from the crate"; exit 1; fi
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	(cd fuzz && $(CARGO) fmt --check)
	DAEMONPROXY_MODEL_CASES=$(MODEL_CASES) $(CARGO) test --test model
	$(CARGO) check --no-default-features --bin daemonproxy

venv: $(VENV_STAMP)

$(VENV_STAMP):
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check lcm==$(LCM_VERSION) $(WEB_TEST_PACKAGES)
	touch $@

golden: $(VENV_STAMP)
	$(VENV)/bin/python tests/lcm_py/golden.py

# unsafe lives in three rooms only: the syscall layer, the forked child and
# the async-signal-safe fatal path. Lists the files holding it; any other
# file fails the check.
UNSAFE_ALLOWED = src/sys.rs src/spawn.rs src/fatal.rs
unsafe-check:
	@files=$$(grep -rlE 'unsafe *(\{|fn |impl |extern)' src | sort); \
	echo "files with unsafe: $$files"; \
	bad=; for f in $$files; do \
		case " $(UNSAFE_ALLOWED) " in *" $$f "*) ;; *) bad="$$bad $$f" ;; esac; \
	done; \
	if [ -n "$$bad" ]; then echo "unsafe outside $(UNSAFE_ALLOWED):$$bad"; exit 1; fi

# The non-Rust half of "check": man pages and shell scripts.
lint:
	@set -e; \
	for f in $(MANPAGES); do \
		if command -v mandoc >/dev/null 2>&1; then \
			echo "mandoc -Tlint -W warning $$f"; \
			mandoc -Tlint -W warning "$$f"; \
		else \
			echo "groff -man -ww -z $$f"; \
			out=$$(groff -man -ww -z "$$f" 2>&1); \
			if [ -n "$$out" ]; then printf '%s\n' "$$out"; exit 1; fi; \
		fi; \
	done
	@set -e; \
	for f in $(SCRIPTS); do echo "sh -n $$f"; sh -n "$$f"; done; \
	for f in .ci/run bench/run; do echo "bash -n $$f"; bash -n "$$f"; done; \
	if command -v shellcheck >/dev/null 2>&1; then \
		echo "shellcheck $(SCRIPTS) .ci/run bench/run"; \
		shellcheck $(SCRIPTS) .ci/run bench/run; \
	else \
		echo "shellcheck not found; skipped"; \
	fi

# Each target runs for FUZZ_SECONDS on the stable toolchain without a
# sanitizer; the first crash, hang (FUZZ_TIMEOUT s on one input) or
# excessive memory stops make with an error and leaves the input in
# fuzz/artifacts/TARGET/. New inputs go to fuzz/target/corpus/ (ignored by
# git); the committed seeds in fuzz/corpus/ are only read.
FUZZ_SECONDS ?= 60
FUZZ_TIMEOUT ?= 10
FUZZ_FLAGS   ?=
FUZZ_TARGETS  = framing command arguments fd_flags lcm_decode lcm_datagram lcm_frame pma1 bridge_orders
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo-fuzz not found: cargo install cargo-fuzz"; exit 1; }
	cd fuzz && $(CARGO) fuzz build -s none
	@set -e; cd fuzz; for t in $(FUZZ_TARGETS); do \
		case $$t in lcm_*|pma1) d=dict/lcm.dict ;; bridge_*) d=dict/bridge.dict ;; *) d=dict/command.dict ;; esac; \
		mkdir -p target/corpus/$$t corpus/$$t; \
		echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
		if $(CARGO) fuzz run -s none $$t target/corpus/$$t corpus/$$t -- \
			-dict=$$d -max_total_time=$(FUZZ_SECONDS) -timeout=$(FUZZ_TIMEOUT) -rss_limit_mb=2048 \
			-print_final_stats=1 $(FUZZ_FLAGS) >target/fuzz-$$t.log 2>&1; then \
			grep -E '^(Done|stat::peak_rss_mb)' target/fuzz-$$t.log; \
		else \
			grep -v '^WARNING' target/fuzz-$$t.log | tail -40; \
			echo "fuzz $$t FAILED; the input is in fuzz/artifacts/$$t/"; exit 1; \
		fi; \
	done

# Each script ends by itself and stops what it started. The PID-1 and gap
# benches need root (PID namespaces); peer-bench is the shared harness that
# measures daemonproxy and its peers alike, if it is beside this checkout.
PEER_BENCH ?= ../shared/peer-bench/run
bench: all $(VENV_STAMP)
	bench/run --bin $(RELEASE)/daemonproxy
	bench/scale --bin $(RELEASE)/daemonproxy
	bench/gap --bin $(RELEASE)/daemonproxy
	bench/pid1 --bin $(RELEASE)/daemonproxy
	bench/memory $(if $(C_DAEMONPROXY),--bin c=$(C_DAEMONPROXY)) --bin ours=$(RELEASE)/daemonproxy
	bench/soak --bin $(RELEASE)/daemonproxy
	$(VENV)/bin/python bench/bridge --bin $(RELEASE)
	$(VENV)/bin/python bench/sheriff --bin $(RELEASE)
	$(VENV)/bin/python bench/sheriff-http --bin $(RELEASE)
	@if [ -x "$(PEER_BENCH)" ]; then \
		echo "$(PEER_BENCH) --dp $(RELEASE)/daemonproxy"; \
		"$(PEER_BENCH)" --dp $(RELEASE)/daemonproxy; \
	else \
		echo "peer-bench not found at $(PEER_BENCH); skipped"; \
	fi

install: all
	$(INSTALL) -d "$(DESTDIR)$(SBINDIR)" "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(DATADIR)/controllers"
	for b in $(SBINS); do \
		$(INSTALL) -m 755 "$(RELEASE)/$$b" "$(DESTDIR)$(SBINDIR)/$$b" || exit 1; \
	done
	for b in $(UBINS); do \
		$(INSTALL) -m 755 "$(RELEASE)/$$b" "$(DESTDIR)$(BINDIR)/$$b" || exit 1; \
	done
	for f in $(CONTROLLERS); do \
		case $$f in *.conf) m=644 ;; *) m=755 ;; esac; \
		$(INSTALL) -m $$m "$$f" "$(DESTDIR)$(DATADIR)/controllers/" || exit 1; \
	done
	$(INSTALL) -m 644 $(PYCLIENT) "$(DESTDIR)$(DATADIR)/controllers/daemonproxy.py"
	for f in $(MANPAGES); do \
		s=$${f##*.}; \
		$(INSTALL) -d "$(DESTDIR)$(MANDIR)/man$$s" && \
		$(INSTALL) -m 644 "$$f" "$(DESTDIR)$(MANDIR)/man$$s/" || exit 1; \
	done

uninstall:
	for b in $(SBINS); do rm -f "$(DESTDIR)$(SBINDIR)/$$b"; done
	for b in $(UBINS); do rm -f "$(DESTDIR)$(BINDIR)/$$b"; done
	rm -rf "$(DESTDIR)$(DATADIR)/controllers"
	for f in $(MANPAGES); do \
		s=$${f##*.}; rm -f "$(DESTDIR)$(MANDIR)/man$$s/$${f##*/}"; \
	done

clean:
	$(CARGO) clean
