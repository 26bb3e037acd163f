#!/usr/bin/env bash
# Make sure what the browser end-to-end tests, the Prometheus tests and the speech tests
# need is present;
# called by `make test` as
#   bash scripts/ensure-test-deps.sh .venv/bin/python
# Idempotent and quick when everything is there. Chromium comes from Debian (Playwright's
# own browser downloads are never used); Python playwright comes from the dev extra;
# prometheus and promtool come from Debian's `prometheus` package.
set -u
PY="${1:-.venv/bin/python}"
CHROMIUM=/usr/bin/chromium
PROMETHEUS=/usr/bin/prometheus
PROMTOOL=/usr/bin/promtool
BROWSER_TESTS="The browser end-to-end tests (tests/e2e/test_browser_client.py) will be SKIPPED."
PROM_TESTS="The alert rule, dashboard and Prometheus scrape tests will be SKIPPED."

# warn MESSAGE [CONSEQUENCE]
warn() {
  echo "" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "!! WARNING: $1" >&2
  echo "!! ${2:-$BROWSER_TESTS}" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "" >&2
}

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-test-deps: installing Chromium from Debian (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq chromium; }; then
      warn "apt-get could not install chromium."
    fi
  else
    warn "$CHROMIUM is missing and cannot be installed here (needs root and apt-get): apt-get install chromium"
  fi
fi

if ! "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
  echo "ensure-test-deps: installing Python playwright (dev extra)..."
  "$PY" -m pip install --quiet 'playwright>=1.40' || warn "pip could not install playwright."
fi

if [ -x "$CHROMIUM" ] && "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
  echo "ensure-test-deps: browser tests ready ($("$CHROMIUM" --version 2>/dev/null | head -1))"
fi

if [ ! -x "$PROMETHEUS" ] || [ ! -x "$PROMTOOL" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-test-deps: installing Prometheus from Debian (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }; then
      warn "apt-get could not install prometheus." "$PROM_TESTS"
    fi
  else
    warn "$PROMETHEUS or $PROMTOOL is missing and cannot be installed here (needs root and apt-get): apt-get install prometheus" "$PROM_TESTS"
  fi
fi

if [ -x "$PROMETHEUS" ] && [ -x "$PROMTOOL" ]; then
  echo "ensure-test-deps: Prometheus tests ready ($("$PROMETHEUS" --version 2>&1 | head -1))"
fi

# Test speech with other voices than Piper's (the endpointer's espeak-ng cases).
SPEECH_TESTS="The espeak-ng speech tests (tests/unit/test_audio_endpointer.py) will be SKIPPED."
if ! command -v espeak-ng >/dev/null 2>&1 || ! command -v sox >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-test-deps: installing espeak-ng and sox from Debian (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends espeak-ng sox; }; then
      warn "apt-get could not install espeak-ng and sox." "$SPEECH_TESTS"
    fi
  else
    warn "espeak-ng or sox is missing and cannot be installed here: apt-get install espeak-ng sox" "$SPEECH_TESTS"
  fi
fi
exit 0
