#!/usr/bin/env bash
# Debian's Chromium for the web-bundle tests (tests/test_web_bundle.py), installed when it is
# missing and this shell may install packages; otherwise those tests skip, saying why. Never fails.
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
        >/dev/null 2>&1 || echo "setup_browser: apt-get could not install chromium; the browser tests will skip"
else
    echo "setup_browser: no /usr/bin/chromium and no root apt-get; the browser tests will skip (apt-get install chromium)"
fi
exit 0
