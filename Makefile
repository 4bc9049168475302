# Build and install tollgate: binaries, man pages, shell completions, systemd units, docs.
#
#   make                  release build
#   make install          into $(DESTDIR)$(PREFIX) (default /usr/local), units into
#                         $(DESTDIR)/etc/systemd/system with ExecStart paths under $(PREFIX)/bin
#   make uninstall        removes what install put there (never /etc/tollgate)
#   make deb              a Debian package in target/debian/ (cargo-deb; binaries in /usr/bin)
#
# PROFILE=debug installs the debug build instead (the tests do, to avoid a release build).

PREFIX  ?= /usr/local
DESTDIR ?=
PROFILE ?= release
CARGO   ?= cargo
UNITDIR ?= /etc/systemd/system

ifeq ($(PROFILE),release)
CARGO_PROFILE := --release
else
CARGO_PROFILE :=
endif
BIN     := target/$(PROFILE)
ASSETS  ?= target/assets/$(PROFILE)
BINS    := tollgate tollgate-shaper
UNITS   := tollgate-shaper.service tollgate-gateway.service

.PHONY: all build assets install uninstall deb clean-assets

all: build

build:
	$(CARGO) build $(CARGO_PROFILE) --locked -p tollgate -p tollgate-shaper

# man pages and completions come from the binaries' own clap definitions
assets: build
	rm -rf $(ASSETS)
	mkdir -p $(ASSETS)/man $(ASSETS)/completions $(ASSETS)/units
	for b in $(BINS); do \
	  $(BIN)/$$b generate man $(ASSETS)/man >/dev/null && \
	  $(BIN)/$$b generate completions $(ASSETS)/completions/$$b >/dev/null || exit 1; \
	done
	for u in $(UNITS); do \
	  sed 's#/usr/local/bin/#$(PREFIX)/bin/#g' dist/$$u > $(ASSETS)/units/$$u || exit 1; \
	done

install: assets
	for b in $(BINS); do install -Dm755 $(BIN)/$$b $(DESTDIR)$(PREFIX)/bin/$$b || exit 1; done
	install -d $(DESTDIR)$(PREFIX)/share/man/man8
	install -m644 $(ASSETS)/man/*.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	for b in $(BINS); do \
	  install -Dm644 $(ASSETS)/completions/$$b/$$b.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$b && \
	  install -Dm644 $(ASSETS)/completions/$$b/_$$b $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_$$b && \
	  install -Dm644 $(ASSETS)/completions/$$b/$$b.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/$$b.fish || exit 1; \
	done
	for u in $(UNITS); do install -Dm644 $(ASSETS)/units/$$u $(DESTDIR)$(UNITDIR)/$$u || exit 1; done
	install -d $(DESTDIR)$(PREFIX)/share/doc/tollgate/examples
	install -m644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/tollgate/
	install -m644 examples/*.toml $(DESTDIR)$(PREFIX)/share/doc/tollgate/examples/
	install -d -m755 $(DESTDIR)/etc/tollgate
	@echo "installed under $(DESTDIR)$(PREFIX); put your config in /etc/tollgate/tollgate.toml"

uninstall:
	for b in $(BINS); do \
	  rm -f $(DESTDIR)$(PREFIX)/bin/$$b $(DESTDIR)$(PREFIX)/share/man/man8/$$b*.8 \
	    $(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$b \
	    $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_$$b \
	    $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/$$b.fish; \
	done
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$u; done
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/tollgate

# cargo-deb packages target/<profile> and target/assets/<profile> (see [package.metadata.deb])
deb:
	$(MAKE) assets PREFIX=/usr PROFILE=$(PROFILE) ASSETS=target/assets/deb
	$(CARGO) deb -p tollgate --no-build $(if $(filter release,$(PROFILE)),,--profile dev)
