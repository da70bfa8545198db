# The two commands a newcomer needs: `make setup` once, then `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# What the detection corpus (tests/detection/corpus) runs: the tools attackers use and the
# ones fleets use every day.
DETECTION_CORPUS_PACKAGES := make curl wget gnupg openssl zip sqlite3 xxd lsof gdb \
	netcat-openbsd socat dnsutils logrotate rsync iptables sudo iputils-ping net-tools \
	libcap2-bin e2fsprogs python3-pip python3-setuptools python3-wheel
APT_PACKAGES := clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config \
	redis-server rsyslog rsyslog-gnutls python3-venv python3-dev gcc git procps iproute2 \
	chromium chromium-driver openssl \
	$(DETECTION_CORPUS_PACKAGES)

.PHONY: setup system-packages venv build demo test lint bench clean

setup: system-packages venv

system-packages:
	@if command -v apt-get >/dev/null; then \
		missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
		if [ -n "$$missing" ]; then \
			echo "installing: $$missing"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
		fi; \
	else echo "not Debian: install the equivalents of: $(APT_PACKAGES)"; fi

venv:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel cython
	$(PY) -m pip install -q --no-build-isolation -e '.[hub,test]'

# The whole system on this machine: a hub, a local sensor and an attack-like sequence (root).
demo: setup
	$(VENV)/bin/threatseer demo

# Rebuild the BPF object and the Cython extension after editing native/.
build:
	$(PY) setup.py build_ext --inplace

test:
	$(PY) -m pytest -q tests

lint:
	$(VENV)/bin/ruff check common cli sensor hub native tests bench docs setup.py
	$(PY) tests/layering.py

bench:
	$(PY) bench/run_all.py

clean:
	rm -rf build native/gen native/*.so native/_bpf.c native/threatseer.bpf.o
